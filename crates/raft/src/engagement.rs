//! Witness engagement (two-node design, W3): while both data nodes are healthy a write commits
//! on the two of them and the witness sees little more than heartbeats; the witness is engaged
//! (its acknowledgement counts) only while a data node falls behind, and disengaged once that
//! node keeps up again. Were the witness always counted, it would run ahead of a slightly slower
//! data node, refuse that node's vote, and a plain leader crash would stall the cluster.
//!
//! The leader enforces it in its transport to the witness: not engaged, the witness is sent only
//! entries every data node already holds and that are committed (the *data floor*), as ids
//! without payloads, so its acknowledgements never complete a quorum the data nodes have not;
//! engaged, it is sent everything, payloads included above the floor, so it can hand them to a
//! data node that missed them (W4).
//!
//! [`Policy`] is the decision, a pure state machine (observations in, state out) tested by
//! tables; [`drive`] feeds it from the leader's raft metrics; [`Handle::shape`] applies it to
//! one AppendEntries request.

use std::time::Duration;

use openraft::ServerState;

use crate::types::{Entry, LogId, Metrics, NodeId, Types};

/// How often the driver looks at the leader's replication progress.
pub const TICK: Duration = Duration::from_millis(20);
/// Consecutive prompt catch-ups of the data followers before the witness is disengaged.
const PROMPT_STREAK_MIN: u32 = 3;
/// A leadership that began this soon after a leader asked this member to stand was asked for
/// (a move asks again every second until the target leads).
const ASKED_WITHIN_MS: u64 = 2_000;

/// What the leader tells its transport to the witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// The witness's acknowledgements count: it is sent every entry.
    pub engaged: bool,
    /// Every entry at or below this index is held by every data node and committed.
    pub data_floor: u64,
}

/// One look at the leader's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    /// This member leads (only a leader replicates).
    pub leading: bool,
    /// The membership has a witness (without one there is nothing to engage).
    pub with_witness: bool,
    pub last_index: u64,
    /// The leader's applied index (everything at or below it is committed).
    pub applied: u64,
    /// The lowest index every data follower is known to hold; `None` when there is none (a
    /// single data node with a witness: the witness always counts).
    pub data_matched: Option<u64>,
    /// Every data follower has answered this leader at least once (a new leader's peer that
    /// has not, when no leader asked this one to take over, is most likely the leader it
    /// replaced, lost).
    pub data_answered: bool,
    /// How long ago a leader asked this member to stand for election (`None`: never).
    pub asked_to_stand_ms: Option<u64>,
}

/// The engagement decision.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long a data follower may leave an entry unacknowledged before the witness counts.
    engage_after_ms: u64,
    /// How long a new leader waits for its data followers' first answer before the witness
    /// counts: a live follower answers within a round trip, and a leader elected after its
    /// data peer fell silent (the usual failover: the peer was the leader, and is gone) should
    /// not also wait `engage_after_ms` before its first write commits on itself and the witness.
    /// Not when the old leader asked it to take over (a move: the old leader is alive, maybe
    /// slow, S14, and the usual delay applies).
    first_answer_ms: u64,
    /// When this member was first seen leading, and whether it took over unasked.
    leading_since: Option<(u64, bool)>,
    /// The entry the data followers are waiting to acknowledge, and since when.
    pending: Option<(u64, u64)>,
    engaged: bool,
    prompt_streak: u32,
}

impl Policy {
    pub fn new(engage_after: Duration, first_answer: Duration) -> Self {
        Policy {
            engage_after_ms: engage_after.as_millis() as u64,
            first_answer_ms: first_answer.as_millis() as u64,
            leading_since: None,
            pending: None,
            engaged: false,
            prompt_streak: 0,
        }
    }

    pub fn observe(&mut self, o: Observation) -> State {
        if !o.leading || !o.with_witness {
            // Everything but the settings belongs to one leadership.
            self.leading_since = None;
            self.pending = None;
            self.engaged = false;
            self.prompt_streak = 0;
            return State::default();
        }
        let (since, unasked) = *self.leading_since.get_or_insert((
            o.now_ms,
            o.asked_to_stand_ms.is_none_or(|ago| ago > ASKED_WITHIN_MS),
        ));
        let Some(matched) = o.data_matched else {
            self.engaged = true;
            return State {
                engaged: true,
                data_floor: 0,
            };
        };
        if let Some((index, since)) = self.pending {
            if matched >= index {
                // Acknowledged: promptly (within half the engagement delay) or not.
                let prompt = o.now_ms.saturating_sub(since) * 2 <= self.engage_after_ms;
                self.prompt_streak = if prompt { self.prompt_streak + 1 } else { 0 };
                self.pending = None;
            }
        }
        if matched >= o.last_index {
            self.pending = None;
        } else if self.pending.is_none() {
            self.pending = Some((o.last_index, o.now_ms));
        }
        let unanswered =
            unasked && !o.data_answered && o.now_ms.saturating_sub(since) >= self.first_answer_ms;
        if let Some((_, pending_since)) = self.pending {
            if unanswered || o.now_ms.saturating_sub(pending_since) >= self.engage_after_ms {
                if !self.engaged {
                    tracing::info!(
                        behind_index = matched,
                        last_index = o.last_index,
                        answered = o.data_answered,
                        "a data follower is not keeping up; the witness is engaged"
                    );
                }
                self.engaged = true;
                self.prompt_streak = 0;
            }
        }
        let caught_up = matched >= o.last_index || self.prompt_streak >= PROMPT_STREAK_MIN;
        if self.engaged && caught_up {
            tracing::info!(
                matched,
                "the data followers keep up again; the witness is disengaged"
            );
            self.engaged = false;
            self.prompt_streak = 0;
        }
        State {
            engaged: self.engaged,
            data_floor: matched.min(o.applied),
        }
    }
}

/// What to send the witness of one AppendEntries request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// How many of the request's entries to send (a prefix).
    pub keep: usize,
    pub data_floor: u64,
    /// Some entries were held back: the witness's success is a partial one.
    pub held_back: bool,
}

/// The prefix of `indexes` the witness may be sent in `state`.
pub fn shape_now(state: State, indexes: impl Iterator<Item = u64>) -> usize {
    if state.engaged {
        return indexes.count();
    }
    indexes.take_while(|i| *i <= state.data_floor).count()
}

/// How far one follower of the leader is behind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowerLag {
    pub member: NodeId,
    /// Entries the leader has and the follower is not known to hold.
    pub entries: u64,
    /// How long the oldest of them has been in the leader's log (0 when caught up).
    pub seconds: f64,
}

/// The most samples of the leader's last index kept for [`FollowerLag::seconds`] (a minute).
const LAG_SAMPLES_MAX: usize = 3_000;

/// When the leader's log reached each index, sampled every tick.
#[derive(Debug, Default)]
struct Arrivals {
    samples: std::collections::VecDeque<(u64, u64)>,
}

impl Arrivals {
    fn note(&mut self, last_index: u64, now_ms: u64) {
        if self.samples.back().is_none_or(|(i, _)| *i < last_index) {
            self.samples.push_back((last_index, now_ms));
        }
        while self.samples.len() > LAG_SAMPLES_MAX {
            self.samples.pop_front();
        }
    }

    /// How long ago the first entry after `matched` arrived (at most the oldest sample's age).
    fn age_after(&self, matched: u64, now_ms: u64) -> u64 {
        self.samples
            .iter()
            .find(|(i, _)| *i > matched)
            .map_or(0, |(_, t)| now_ms.saturating_sub(*t))
    }
}

/// The transport's view of the engagement (one per member; cheap to clone).
#[derive(Debug, Clone)]
pub struct Handle {
    rx: tokio::sync::watch::Receiver<State>,
    lags: std::sync::Arc<std::sync::Mutex<Vec<FollowerLag>>>,
}

/// The driver's side of a [`Handle`].
pub struct Publisher {
    tx: tokio::sync::watch::Sender<State>,
    lags: std::sync::Arc<std::sync::Mutex<Vec<FollowerLag>>>,
}

/// A handle and its publisher, starting disengaged with nothing known.
pub fn channel() -> (Publisher, Handle) {
    let (tx, rx) = tokio::sync::watch::channel(State::default());
    let lags = std::sync::Arc::default();
    (
        Publisher {
            tx,
            lags: std::sync::Arc::clone(&lags),
        },
        Handle { rx, lags },
    )
}

impl Handle {
    pub fn state(&self) -> State {
        *self.rx.borrow()
    }

    /// How far each follower is behind (empty unless this member leads).
    pub fn lags(&self) -> Vec<FollowerLag> {
        self.lags.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How much of a request with these entries the witness is sent. When none of them may go
    /// yet, waits (at most `max_wait`) for the data floor to reach them or for the witness to be
    /// engaged, so the witness's replication stream is paced by the data followers' instead of
    /// spinning; then sends what it may (possibly nothing: a heartbeat).
    pub async fn shape<C: Types>(
        &self,
        entries: &[Entry<C>],
        _prev: Option<LogId>,
        max_wait: Duration,
    ) -> Shape {
        let mut rx = self.rx.clone();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let state = *rx.borrow_and_update();
            let keep = shape_now(state, entries.iter().map(|e| e.log_id.index));
            let give_up = keep > 0 || entries.is_empty() || tokio::time::Instant::now() >= deadline;
            if give_up {
                return Shape {
                    keep,
                    data_floor: state.data_floor,
                    held_back: keep < entries.len(),
                };
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                // The driver stopped (the member is shutting down): send what may go.
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// The lowest index every data follower of the leader whose metrics are `m` is known to hold
/// (`None` when it has no data follower), and whether every data follower has answered it.
pub fn data_progress(m: &Metrics) -> (Option<u64>, bool) {
    let membership = m.membership_config.membership();
    let replication = m.replication.as_ref();
    let mut lowest = None;
    let mut answered = true;
    for id in membership.voter_ids().filter(|v| *v != m.id) {
        if membership.get_node(&id).is_some_and(|n| n.witness) {
            continue;
        }
        let matched = replication
            .and_then(|r| r.get(&id))
            .and_then(|l| l.map(|l| l.index));
        answered &= matched.is_some();
        let matched = matched.unwrap_or(0);
        lowest = Some(lowest.map_or(matched, |l: u64| l.min(matched)));
    }
    (lowest, answered)
}

/// Feeds the policy from `raft`'s metrics (and `contact`: when a leader asked this member to
/// stand) every [`TICK`] until the member stops.
pub async fn drive<C: Types>(
    raft: openraft::Raft<C>,
    mut policy: Policy,
    publisher: Publisher,
    contact: Option<std::sync::Arc<crate::prevote::Contact>>,
) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = raft.metrics();
    let mut arrivals = Arrivals::default();
    loop {
        tick.tick().await;
        let o = {
            let m = metrics.borrow();
            let now_ms = started.elapsed().as_millis() as u64;
            let last_index = m.last_log_index.unwrap_or(0);
            arrivals.note(last_index, now_ms);
            let lags: Vec<FollowerLag> = m
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, l)| {
                    let matched = l.map_or(0, |l| l.index);
                    FollowerLag {
                        member: *id,
                        entries: last_index.saturating_sub(matched),
                        seconds: arrivals.age_after(matched, now_ms) as f64 / 1000.0,
                    }
                })
                .collect();
            *publisher.lags.lock().unwrap_or_else(|e| e.into_inner()) = lags;
            let (data_matched, data_answered) = data_progress(&m);
            Observation {
                now_ms,
                leading: m.state == ServerState::Leader,
                with_witness: !witnesses(&m).is_empty(),
                last_index,
                applied: m.last_applied.map_or(0, |l| l.index),
                data_matched,
                data_answered,
                asked_to_stand_ms: contact.as_ref().and_then(|c| c.asked_ago_ms()),
            }
        };
        let state = policy.observe(o);
        publisher.tx.send_if_modified(|cur| {
            let changed = *cur != state;
            *cur = state;
            changed
        });
        if publisher.tx.is_closed() || metrics.has_changed().is_err() {
            return;
        }
    }
}

/// Which member ids of `m`'s membership are witnesses.
pub fn witnesses(m: &Metrics) -> Vec<NodeId> {
    m.membership_config
        .membership()
        .nodes()
        .filter(|(_, n)| n.witness)
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGAGE_AFTER: Duration = Duration::from_millis(300);
    const FIRST_ANSWER: Duration = Duration::from_millis(100);

    fn obs(now_ms: u64, last_index: u64, matched: u64) -> Observation {
        Observation {
            now_ms,
            leading: true,
            with_witness: true,
            last_index,
            applied: last_index,
            data_matched: Some(matched),
            data_answered: true,
            asked_to_stand_ms: None,
        }
    }

    /// Runs the policy over a table of (observation, expected engaged, expected floor).
    fn table(rows: &[(Observation, bool, u64)]) {
        let mut p = Policy::new(ENGAGE_AFTER, FIRST_ANSWER);
        for (i, (o, engaged, floor)) in rows.iter().enumerate() {
            let s = p.observe(*o);
            assert_eq!(
                (s.engaged, s.data_floor),
                (*engaged, *floor),
                "row {i}: {o:?}"
            );
        }
    }

    #[test]
    fn a_healthy_follower_never_engages_the_witness() {
        table(&[
            (obs(0, 10, 10), false, 10),
            (obs(20, 12, 10), false, 10),
            (obs(40, 15, 12), false, 12),
            (obs(60, 18, 15), false, 15),
            (obs(400, 30, 29), false, 29),
            (obs(420, 30, 30), false, 30),
        ]);
    }

    #[test]
    fn a_silent_follower_engages_the_witness_after_the_delay() {
        table(&[
            (obs(0, 10, 10), false, 10),
            (obs(20, 11, 10), false, 10),
            (obs(200, 14, 10), false, 10),
            (obs(319, 20, 10), false, 10),
            (obs(320, 20, 10), true, 10),
            (obs(2000, 500, 10), true, 10),
        ]);
    }

    /// A new leader's look before its data follower has answered it (`asked_ms`: how long ago a
    /// leader asked it to stand).
    fn unanswered(now_ms: u64, last_index: u64, asked_ms: Option<u64>) -> Observation {
        Observation {
            data_answered: false,
            asked_to_stand_ms: asked_ms,
            ..obs(now_ms, last_index, 0)
        }
    }

    #[test]
    fn a_new_leader_whose_data_peer_never_answers_engages_the_witness_at_once() {
        let silent = |now_ms, last_index| unanswered(now_ms, last_index, None);
        table(&[
            (silent(1000, 21), false, 0),
            (silent(1060, 21), false, 0),
            // One first-answer window into the leadership, not the whole engagement delay.
            (silent(1100, 22), true, 0),
            (silent(1500, 40), true, 0),
        ]);
    }

    #[test]
    fn without_a_witness_nothing_is_engaged() {
        // A cluster of data members only (three, or two that fence each other), or one member
        // alone: the metric of engagement stays 0 whatever the followers do.
        let alone = |o: Observation| Observation {
            with_witness: false,
            ..o
        };
        table(&[
            (alone(unanswered(1000, 21, None)), false, 0),
            (alone(unanswered(1500, 40, None)), false, 0),
            (alone(obs(2000, 50, 10)), false, 0),
            (
                alone(Observation {
                    data_matched: None,
                    ..obs(3000, 60, 0)
                }),
                false,
                0,
            ),
        ]);
    }

    #[test]
    fn a_leader_asked_to_take_over_waits_the_usual_delay() {
        // The old leader moved its leadership here a moment ago: it is alive, only slow.
        let asked = |now_ms, last_index| unanswered(now_ms, last_index, Some(150));
        table(&[
            (asked(1000, 21), false, 0),
            (asked(1100, 22), false, 0),
            (asked(1299, 22), false, 0),
            (asked(1300, 22), true, 0),
        ]);
    }

    #[test]
    fn a_new_leader_whose_data_peer_answers_keeps_the_witness_out() {
        table(&[
            (unanswered(1000, 21, None), false, 0),
            (obs(1020, 21, 20), false, 20),
            // Answered, but behind: the usual engagement delay applies.
            (obs(1200, 22, 21), false, 21),
            (obs(1400, 22, 22), false, 22),
        ]);
    }

    #[test]
    fn the_witness_disengages_once_the_follower_catches_up() {
        table(&[
            (obs(0, 11, 10), false, 10),
            (obs(400, 20, 10), true, 10),
            // Catching up slowly keeps it engaged.
            (obs(600, 30, 20), true, 20),
            (obs(800, 40, 30), true, 30),
            // All caught up: disengaged.
            (obs(820, 40, 40), false, 40),
        ]);
    }

    #[test]
    fn under_steady_load_prompt_acknowledgements_disengage_it() {
        table(&[
            (obs(0, 11, 10), false, 10),
            (obs(400, 20, 10), true, 10),
            (obs(420, 22, 20), true, 20),
            (obs(440, 24, 22), true, 22),
            (obs(460, 26, 24), true, 24),
            // Third prompt catch-up in a row, still one entry behind: disengaged.
            (obs(480, 28, 26), false, 26),
        ]);
    }

    #[test]
    fn the_floor_never_passes_what_is_committed() {
        let mut o = obs(0, 20, 20);
        o.applied = 15;
        table(&[(o, false, 15)]);
    }

    #[test]
    fn without_a_data_follower_the_witness_always_counts() {
        let mut o = obs(0, 20, 0);
        o.data_matched = None;
        table(&[(o, true, 0)]);
    }

    #[test]
    fn a_member_that_does_not_lead_forgets_everything() {
        let mut follower = obs(500, 20, 10);
        follower.leading = false;
        table(&[
            (obs(0, 11, 10), false, 10),
            (obs(400, 20, 10), true, 10),
            (follower, false, 0),
            (obs(520, 21, 10), false, 10),
        ]);
    }

    #[test]
    fn a_follower_lags_by_the_age_of_the_oldest_entry_it_lacks() {
        let mut a = Arrivals::default();
        a.note(10, 0);
        a.note(10, 20);
        a.note(15, 40);
        a.note(20, 60);
        assert_eq!(a.age_after(20, 100), 0, "caught up");
        assert_eq!(
            a.age_after(12, 100),
            60,
            "lacks 13..: arrived by the sample at 40 ms"
        );
        assert_eq!(a.age_after(5, 100), 100);
    }

    #[test]
    fn disengaged_the_witness_gets_only_what_every_data_node_holds() {
        let off = State {
            engaged: false,
            data_floor: 12,
        };
        assert_eq!(shape_now(off, 10..=15), 3);
        assert_eq!(shape_now(off, 13..=15), 0);
        let on = State {
            engaged: true,
            data_floor: 12,
        };
        assert_eq!(shape_now(on, 13..=15), 3);
    }
}
