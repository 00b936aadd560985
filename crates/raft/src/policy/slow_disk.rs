//! A leader whose disk is slow hands leadership to a follower whose disk is not (two-node
//! design, S14: "slow fsync on the leader: leadership moves to the healthy node"). Every write
//! waits for the leader's log flush, so a leader with a slow disk slows the whole cluster while
//! a follower could commit at its own speed.
//!
//! Each member measures its own log flushes ([`FlushWindow`]: the average of those completed
//! in the last window, and at least the age of one still in flight, so a hung flush counts)
//! and reports the figure in every answer to AppendEntries. The leader ([`SlowDisk`]) moves
//! its leadership when, for `patience_ms` without a break, its own figure is at least
//! `slow_micros` and `ratio` times that of a follower that reports one; it picks the fastest
//! such follower. It never acts in its first `patience_ms` as leader (too few samples), and
//! after asking once waits `cooldown_ms`, so two slow disks never pass leadership back and
//! forth: the ratio alone already forbids that while both are equally slow.

use std::collections::VecDeque;

use crate::types::NodeId;

/// Recent log flushes of one member.
#[derive(Debug, Default, Clone)]
pub struct FlushWindow {
    /// (time ms, flushes so far, µs spent so far), oldest first.
    samples: VecDeque<(u64, u64, u64)>,
}

impl FlushWindow {
    /// Records the counters at `now_ms` and returns the recent flush time in µs: the average
    /// over the flushes completed within the last `window_ms`, at least `inflight_micros` (how
    /// long the flush under way has taken so far; 0 if none). 0: no flush seen lately.
    pub fn sample(
        &mut self,
        now_ms: u64,
        window_ms: u64,
        flushes: u64,
        micros: u64,
        inflight_micros: u64,
    ) -> u64 {
        self.samples.push_back((now_ms, flushes, micros));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _, _)| now_ms.saturating_sub(*t) >= window_ms)
        {
            self.samples.pop_front();
        }
        let (_, f0, m0) = self.samples[0];
        let done = flushes.saturating_sub(f0);
        let average = micros.saturating_sub(m0).checked_div(done).unwrap_or(0);
        average.max(inflight_micros)
    }
}

/// One look at the leader and its followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    pub leading: bool,
    /// This member's recent flush time (µs).
    pub own_micros: u64,
    /// Each data follower and the recent flush time it reported (0: none reported).
    pub followers: Vec<(NodeId, u64)>,
}

#[derive(Debug, Clone)]
pub struct SlowDisk {
    slow_micros: u64,
    ratio: u64,
    patience_ms: u64,
    cooldown_ms: u64,
    leading_since: Option<u64>,
    slow_since: Option<u64>,
    last_move: Option<u64>,
}

impl SlowDisk {
    pub fn new(slow_micros: u64, ratio: u64, patience_ms: u64, cooldown_ms: u64) -> Self {
        SlowDisk {
            slow_micros,
            ratio,
            patience_ms,
            cooldown_ms,
            leading_since: None,
            slow_since: None,
            last_move: None,
        }
    }

    /// The follower to move leadership to now, if any.
    pub fn observe(&mut self, o: &Observation) -> Option<NodeId> {
        if !o.leading {
            self.leading_since = None;
            self.slow_since = None;
            return None;
        }
        let since = *self.leading_since.get_or_insert(o.now_ms);
        let healthier = o
            .followers
            .iter()
            .filter(|(_, f)| *f > 0 && o.own_micros >= f.saturating_mul(self.ratio))
            .min_by_key(|(_, f)| *f)
            .map(|(id, _)| *id);
        let Some(target) = healthier.filter(|_| o.own_micros >= self.slow_micros) else {
            self.slow_since = None;
            return None;
        };
        let slow_since = *self.slow_since.get_or_insert(o.now_ms);
        let settled = o.now_ms >= since + self.patience_ms;
        let sustained = o.now_ms >= slow_since + self.patience_ms;
        let cooled = self
            .last_move
            .is_none_or(|t| o.now_ms >= t + self.cooldown_ms);
        if !(settled && sustained && cooled) {
            return None;
        }
        self.last_move = Some(o.now_ms);
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (now ms, flushes, µs, in flight µs).
    type Sample = (u64, u64, u64, u64);
    type Case<E, W> = (&'static str, E, W);

    #[test]
    fn the_flush_window_averages_recent_flushes_and_counts_one_in_flight() {
        // (now, flushes, micros, in flight) -> recent figure; window 1000 ms.
        let table: &[Case<&[Sample], u64>] = &[
            ("nothing yet", &[(0, 0, 0, 0)], 0),
            (
                "two flushes of 2 ms and 4 ms",
                &[(0, 0, 0, 0), (500, 2, 6000, 0)],
                3000,
            ),
            (
                "old flushes leave the window",
                &[
                    (0, 0, 0, 0),
                    (100, 10, 1_000_000, 0),
                    (1200, 12, 1_002_000, 0),
                ],
                1000,
            ),
            (
                "a hung flush counts for its age",
                &[(0, 0, 0, 0), (500, 2, 4000, 700_000)],
                700_000,
            ),
            (
                "idle: no flush within the window",
                &[(0, 5, 5000, 0), (2000, 5, 5000, 0), (2100, 5, 5000, 0)],
                0,
            ),
        ];
        for (what, samples, want) in table {
            let mut w = FlushWindow::default();
            let got = samples
                .iter()
                .map(|&(t, f, m, i)| w.sample(t, 1000, f, m, i))
                .last()
                .unwrap();
            assert_eq!(got, *want, "{what}");
        }
    }

    const B: NodeId = 2;
    const C: NodeId = 3;

    fn obs(now_ms: u64, leading: bool, own: u64, followers: &[(NodeId, u64)]) -> Observation {
        Observation {
            now_ms,
            leading,
            own_micros: own,
            followers: followers.to_vec(),
        }
    }

    /// slow at 100 ms, ratio 4, patience 1000 ms, cooldown 10 s.
    fn run(events: &[Observation]) -> Vec<Option<NodeId>> {
        let mut p = SlowDisk::new(100_000, 4, 1000, 10_000);
        events.iter().map(|o| p.observe(o)).collect()
    }

    #[test]
    fn a_leader_with_a_slow_disk_hands_over_to_the_fastest_healthy_follower() {
        let slow = 300_000;
        let table: &[Case<Vec<Observation>, Vec<Option<NodeId>>>] = &[
            (
                "slow for the whole patience: moves, to the fastest follower",
                vec![
                    obs(0, true, slow, &[(B, 2000), (C, 1000)]),
                    obs(999, true, slow, &[(B, 2000), (C, 1000)]),
                    obs(1000, true, slow, &[(B, 2000), (C, 1000)]),
                ],
                vec![None, None, Some(C)],
            ),
            (
                "a break in the slowness starts the patience again",
                vec![
                    obs(0, true, slow, &[(B, 2000)]),
                    obs(600, true, 3000, &[(B, 2000)]),
                    obs(700, true, slow, &[(B, 2000)]),
                    obs(1600, true, slow, &[(B, 2000)]),
                    obs(1700, true, slow, &[(B, 2000)]),
                ],
                vec![None, None, None, None, Some(B)],
            ),
            (
                "slow, but the follower as slow: nobody is healthier",
                vec![
                    obs(0, true, slow, &[(B, 200_000)]),
                    obs(5000, true, slow, &[(B, 200_000)]),
                ],
                vec![None, None],
            ),
            (
                "below the slow mark: no move even if the follower is far faster",
                vec![
                    obs(0, true, 90_000, &[(B, 1000)]),
                    obs(5000, true, 90_000, &[(B, 1000)]),
                ],
                vec![None, None],
            ),
            (
                "a follower that reported nothing is not a candidate",
                vec![
                    obs(0, true, slow, &[(B, 0)]),
                    obs(5000, true, slow, &[(B, 0)]),
                ],
                vec![None, None],
            ),
            (
                "a new leader waits out its patience; after a move, the cooldown",
                vec![
                    obs(0, false, slow, &[]),
                    obs(100, true, slow, &[(B, 1000)]),
                    obs(1099, true, slow, &[(B, 1000)]),
                    obs(1100, true, slow, &[(B, 1000)]),
                    obs(5000, true, slow, &[(B, 1000)]),
                    obs(11_100, true, slow, &[(B, 1000)]),
                ],
                vec![None, None, None, Some(B), None, Some(B)],
            ),
            (
                "not leading: nothing, and the patience starts again as leader",
                vec![
                    obs(0, true, slow, &[(B, 1000)]),
                    obs(900, false, slow, &[(B, 1000)]),
                    obs(1000, true, slow, &[(B, 1000)]),
                    obs(1999, true, slow, &[(B, 1000)]),
                    obs(2000, true, slow, &[(B, 1000)]),
                ],
                vec![None, None, None, None, Some(B)],
            ),
        ];
        for (what, events, want) in table {
            assert_eq!(&run(events), want, "{what}");
        }
    }
}
