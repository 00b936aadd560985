//! When the witness may stand for election. Leadership belongs on a data node, so the witness
//! keeps its own elections off while it hears from a leader, and turns them on only after
//! `patience` without one: then no data node has been able to win (after a double failure, the
//! witness may be the only member with the entries a returning data node lacks, W4). Its
//! election timeouts can then be as short as a data node's, so that its leader lease — how long
//! it refuses a candidate after its leader's last message — does not hold up a data node's
//! election after a leader's crash.

/// The decision, fed with observations; a pure state machine.
#[derive(Debug, Clone)]
pub struct Candidacy {
    patience_ms: u64,
    /// When the witness last heard from a leader (or led), in ms.
    last_heard_ms: u64,
    standing: bool,
}

impl Candidacy {
    pub fn new(patience_ms: u64, now_ms: u64) -> Self {
        Candidacy {
            patience_ms,
            last_heard_ms: now_ms,
            standing: false,
        }
    }

    /// Whether elections should be on, given when a leader was last heard from (`heard_ms`,
    /// a leader's AppendEntries, heartbeats included) and whether the witness leads.
    pub fn observe(&mut self, now_ms: u64, heard_ms: u64, leading: bool) -> bool {
        if leading {
            self.last_heard_ms = now_ms;
        } else {
            self.last_heard_ms = self.last_heard_ms.max(heard_ms);
        }
        let silent = now_ms.saturating_sub(self.last_heard_ms) >= self.patience_ms;
        if silent != self.standing {
            if silent {
                tracing::info!(
                    silent_ms = now_ms.saturating_sub(self.last_heard_ms),
                    "no leader heard from: the witness may stand for election"
                );
            }
            self.standing = silent;
        }
        self.standing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_witness_stands_only_after_its_patience_without_a_leader() {
        let mut c = Candidacy::new(2000, 0);
        let rows = [
            // (now, last heard, leading, standing)
            (100, 100, false, false),
            (1000, 900, false, false),
            (2800, 900, false, false),
            (2900, 900, false, true),
            (3500, 900, false, true),
            // A leader is heard again: off.
            (3600, 3550, false, false),
            // It leads itself (after standing): never off for want of hearing from itself.
            (9000, 3550, true, false),
            (9100, 3550, false, false),
            (11_100, 3550, false, true),
        ];
        for (i, (now, heard, leading, want)) in rows.iter().enumerate() {
            assert_eq!(c.observe(*now, *heard, *leading), *want, "row {i}");
        }
    }
}
