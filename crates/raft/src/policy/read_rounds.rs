//! Pacing of batched ReadIndex rounds. Every read waiting when a round starts is served by that
//! round, so rounds run one after another. Unpaced, a loaded member starts the next round the
//! moment one ends, and the rounds themselves (a heartbeat to every peer, or a request forwarded
//! to the leader: a few gRPC calls of some tens of microseconds of CPU on each end) take a
//! sizeable share of the CPU. A round that served many reads shows load: the next then starts
//! no sooner than [`MIN_BUSY_SPACING`] after it began, so more reads share it. A lone read on an
//! idle member never waits (its round starts at once), and a round that starts later is still
//! one that starts after the read was asked, which is all linearizability needs.
//!
//! How far apart under heavy load: a wait before the round is latency added to every read it
//! serves, and what that costs depends on how long reads take anyway. By Little's law a member's
//! reads take, on average, the reads it has in flight over the rate they arrive at. The
//! [`Pacer`] measures both over windows of [`WINDOW`] and spaces rounds by a fifth of that
//! latency (a read waits half of it on average: a tenth of its time on the member) when that is
//! more than [`MIN_BUSY_SPACING`], up to [`MAX_BUSY_SPACING`], small rounds included (under
//! load, reads arrive in bursts, and the stragglers behind a burst made most rounds): a member
//! whose reads queue behind a busy CPU spends the CPU on reads instead of rounds, one whose reads
//! are quick keeps them quick.
//!
//! Measured on two data members and a witness sharing 2 vCPUs, the load generator on the same
//! machine, fixed spacings, 5 interleaved rounds of 8 s (medians): range at 1,000 clients
//! (reads take ~30-40 ms as the clients see them), 1 ms: 22.1k reads/s, p99 156 ms, the witness
//! 0.6 s of CPU per 8 s; 3 ms: 26.8k, p99 114 ms, 0.28 s. But at 100 clients (~5 ms), 3 ms cut
//! the rate from 20k to 12k reads/s and took p50 from 4.8 to 8.1 ms. Paced by the latency
//! instead: 1,000 clients 27.1k (3 rounds), the members' reads taking 4-15 ms in a window and
//! spaced 1-3 ms; 100 clients 20.2-20.3k, p50 4.7 ms, as with 1 ms (reads take ~0.5 ms on the
//! member: no heavy spacing); 10 and 1 client unchanged.

use std::time::Duration;

/// A round that served at least this many reads shows load.
pub const BUSY_BATCH: usize = 16;
/// Under load, rounds begin at most this often.
pub const MIN_BUSY_SPACING: Duration = Duration::from_millis(1);
/// Under heavy load, the next round may begin at the latest this long after the last one began.
pub const MAX_BUSY_SPACING: Duration = Duration::from_millis(3);
/// The spacing under heavy load is the reads' expected latency over this: a read waits half
/// the spacing on average, a tenth of its time on the member.
pub const LATENCY_SHARE: u32 = 5;
/// How long the pacer measures the load before it judges it again.
pub const WINDOW: Duration = Duration::from_millis(20);

/// What a member knows of a round when it paces the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// How many reads it served.
    pub reads: usize,
    /// The most reads the member had in flight, as its asks said (0: not known).
    pub in_flight: usize,
    /// How long after the round before it this one began (zero for the first).
    pub since_previous: Duration,
}

/// Paces a member's rounds: fed every round, it says how long after that round began the next
/// may begin.
#[derive(Clone, Debug, Default)]
pub struct Pacer {
    /// The current window: reads served, time covered, and the in-flight count integrated over
    /// that time (read-seconds, in microseconds).
    reads: u64,
    time: Duration,
    in_flight_us: u128,
    /// The spacing the last complete window called for under heavy load (zero: not heavy).
    heavy: Duration,
}

impl Pacer {
    pub fn next(&mut self, round: Round) -> Duration {
        self.reads += round.reads as u64;
        self.time += round.since_previous;
        self.in_flight_us += round.since_previous.as_micros() * round.in_flight as u128;
        if self.time >= WINDOW {
            *self = Pacer {
                heavy: heavy_spacing(self.reads, self.in_flight_us),
                ..Pacer::default()
            };
        }
        if self.heavy > MIN_BUSY_SPACING {
            self.heavy
        } else if round.reads >= BUSY_BATCH {
            MIN_BUSY_SPACING
        } else {
            Duration::ZERO
        }
    }
}

/// A fifth of the reads' latency over a window (Little's law: the time-averaged reads in flight
/// over their rate), at most [`MAX_BUSY_SPACING`].
fn heavy_spacing(reads: u64, in_flight_us: u128) -> Duration {
    if reads == 0 {
        return Duration::ZERO;
    }
    // Average in flight = in_flight_us / time; rate = reads / time; latency = their quotient.
    let latency_us = in_flight_us / reads as u128;
    let spacing_us = latency_us / LATENCY_SHARE as u128;
    Duration::from_micros(u64::try_from(spacing_us).unwrap_or(u64::MAX)).min(MAX_BUSY_SPACING)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn round(reads: usize, in_flight: usize, since_previous: Duration) -> Round {
        Round {
            reads,
            in_flight,
            since_previous,
        }
    }

    /// Feeds `rounds` to a fresh pacer and returns what it said to the last one.
    fn pace(rounds: &[Round]) -> Duration {
        let mut p = Pacer::default();
        rounds.iter().map(|r| p.next(*r)).last().unwrap()
    }

    #[test]
    fn a_light_load_is_not_spaced_and_a_loaded_member_by_at_least_the_minimum() {
        for (rounds, expected) in [
            (vec![round(1, 1, Duration::ZERO)], Duration::ZERO),
            (vec![round(BUSY_BATCH - 1, 500, ms(5))], Duration::ZERO),
            (vec![round(BUSY_BATCH, 0, ms(1))], MIN_BUSY_SPACING),
            // A whole window of quick reads: 100 a millisecond, 100 in flight (1 ms each).
            (vec![round(100, 100, ms(1)); 25], MIN_BUSY_SPACING),
            (
                [vec![round(100, 100, ms(1)); 25], vec![round(3, 100, ms(1))]].concat(),
                Duration::ZERO,
            ),
        ] {
            assert_eq!(pace(&rounds), expected, "{rounds:?}");
        }
    }

    #[test]
    fn under_heavy_load_a_fifth_of_the_latency_for_every_round_of_the_next_window() {
        // 30 reads every 2 ms (15k/s) with 150 in flight: 10 ms each, spaced 2 ms, but only
        // once a window has been measured.
        let busy = vec![round(30, 150, ms(2)); 10];
        assert_eq!(pace(&busy[..9]), MIN_BUSY_SPACING, "before a whole window");
        assert_eq!(pace(&busy), ms(2));
        // Small rounds between the bursts are spaced as well.
        assert_eq!(
            pace(&[busy.clone(), vec![round(2, 150, ms(1))]].concat()),
            ms(2)
        );
        // Reads queueing for 125 ms: the longest spacing.
        assert_eq!(
            pace(&[round(56, 500, ms(14)), round(56, 500, ms(14))]),
            MAX_BUSY_SPACING
        );
        // The load goes: the next window says so.
        let after = [busy.clone(), vec![round(1, 1, ms(1)); 21]].concat();
        assert_eq!(pace(&after), Duration::ZERO);
    }
}
