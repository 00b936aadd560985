//! Leadership hand-off (two-node design, W4): leadership belongs on a data node. A witness that
//! wins an election (after a double failure it may be the only member with the entries a
//! returning data node lacks) ships its log to the data node and, once that node holds all of
//! it, asks it to stand for election.
//!
//! openraft 0.9 grants a vote to a candidate with a log at least as long only once the leader
//! lease of the voter has passed (its `election_timeout_max` after it became leader), so the
//! witness asks no sooner, and again every `retry` until leadership has moved.

use crate::types::NodeId;

/// One look at the witness's progress as a leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    pub leading: bool,
    pub last_index: u64,
    /// Each data node and the last index it is known to hold.
    pub data_matched: Vec<(NodeId, u64)>,
}

#[derive(Debug, Clone)]
pub struct Handoff {
    lease_ms: u64,
    retry_ms: u64,
    leading_since: Option<u64>,
    last_ask: Option<u64>,
}

impl Handoff {
    pub fn new(lease_ms: u64, retry_ms: u64) -> Self {
        Handoff {
            lease_ms,
            retry_ms,
            leading_since: None,
            last_ask: None,
        }
    }

    /// The data node to ask to stand for election now, if any.
    pub fn observe(&mut self, o: &Observation) -> Option<NodeId> {
        if !o.leading {
            self.leading_since = None;
            self.last_ask = None;
            return None;
        }
        let since = *self.leading_since.get_or_insert(o.now_ms);
        let target = o
            .data_matched
            .iter()
            .find(|(_, matched)| *matched >= o.last_index)
            .map(|(id, _)| *id)?;
        if o.now_ms.saturating_sub(since) < self.lease_ms {
            return None;
        }
        if self
            .last_ask
            .is_some_and(|t| o.now_ms.saturating_sub(t) < self.retry_ms)
        {
            return None;
        }
        self.last_ask = Some(o.now_ms);
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(now_ms: u64, leading: bool, last_index: u64, b: u64) -> Observation {
        Observation {
            now_ms,
            leading,
            last_index,
            data_matched: vec![(2, b)],
        }
    }

    #[test]
    fn the_witness_hands_over_to_a_caught_up_data_node_after_its_lease() {
        let mut h = Handoff::new(1500, 500);
        let rows = [
            (obs(0, false, 10, 0), None),
            // Elected: the data node lacks entries.
            (obs(100, true, 11, 5), None),
            // Caught up, but the lease has not passed: its vote request would be refused.
            (obs(900, true, 11, 11), None),
            (obs(1600, true, 11, 11), Some(2)),
            // Asked; not again before the retry interval.
            (obs(1700, true, 11, 11), None),
            (obs(2100, true, 11, 11), Some(2)),
            // Leadership moved.
            (obs(2200, false, 12, 12), None),
            // Elected again later: a fresh lease.
            (obs(5000, true, 13, 13), None),
            (obs(6500, true, 13, 13), Some(2)),
        ];
        for (i, (o, want)) in rows.iter().enumerate() {
            assert_eq!(h.observe(o), *want, "row {i}: {o:?}");
        }
    }

    #[test]
    fn a_data_node_still_behind_is_never_asked() {
        let mut h = Handoff::new(0, 0);
        assert_eq!(h.observe(&obs(0, true, 20, 19)), None);
        assert_eq!(h.observe(&obs(10_000, true, 20, 19)), None);
        assert_eq!(h.observe(&obs(10_001, true, 20, 20)), Some(2));
    }
}
