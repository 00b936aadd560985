//! Pacing of batched ReadIndex rounds. Every read waiting when a round starts is served by that
//! round, so rounds run one after another. Unpaced, a loaded member starts the next round the
//! moment one ends, and the rounds themselves (a heartbeat to every peer, or a request forwarded
//! to the leader) take a sizeable share of the CPU. A round that served many reads shows load:
//! the next then starts no sooner than [`BUSY_SPACING`] after it began, so more reads share it.
//! A lone read never waits (its round starts at once), and a round that starts later is still
//! one that starts after the read was asked, which is all linearizability needs.

use std::time::Duration;

/// A round that served at least this many reads shows load.
pub const BUSY_BATCH: usize = 16;
/// Under load, rounds begin at most this often (against reads that already wait tens of
/// milliseconds for the CPU).
pub const BUSY_SPACING: Duration = Duration::from_millis(1);

/// How long after the previous round began the next may begin, given how many reads the
/// previous one served.
pub fn spacing(previous_batch: usize) -> Duration {
    if previous_batch >= BUSY_BATCH {
        BUSY_SPACING
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loaded_member_spaces_its_rounds() {
        for (batch, expected) in [
            (0, Duration::ZERO),
            (1, Duration::ZERO),
            (BUSY_BATCH - 1, Duration::ZERO),
            (BUSY_BATCH, BUSY_SPACING),
            (1000, BUSY_SPACING),
        ] {
            assert_eq!(spacing(batch), expected, "batch of {batch}");
        }
    }
}
