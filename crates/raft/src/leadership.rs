//! Moving leadership (etcd's MoveLeader) on real tasks: the decisions are
//! `crate::policy::transfer`'s; this holds the state the member's request paths and transport
//! look at (while a move is under way requests wait; once silent, no AppendEntries leaves) and
//! drives a move from start to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::ServerState;

use crate::member::Member;
use crate::network::{self, ForwardRequest, ForwardResponse};
use crate::policy::transfer::{Observation, Step, Transfer};
use crate::types::{NodeId, Types};

/// How often a move looks at raft's progress.
const TICK: Duration = Duration::from_millis(10);

/// Where this member is moving its leadership, while it does, and whether it has fallen silent.
pub struct Leadership {
    moving: tokio::sync::watch::Sender<Option<NodeId>>,
    silent: AtomicBool,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            moving: tokio::sync::watch::Sender::new(None),
            silent: AtomicBool::new(false),
        }
    }
}

/// Why a move failed (also the answer of a member a move was handed to).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MoveError {
    /// This member does not lead (etcd: "not leader").
    NotLeader,
    /// The target is not a voter with data: unknown, a learner, or the witness (etcd: "bad
    /// leader transferee").
    BadTransferee,
    /// The deadline passed (etcd: "request timed out, leader transfer took too long").
    TimedOut,
    Stopped,
}

impl Leadership {
    /// The transport sends no AppendEntries and no snapshot chunk while this holds.
    pub fn silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// Where leadership is moving, while a move is under way.
    pub fn moving_to(&self) -> Option<NodeId> {
        *self.moving.borrow()
    }

    /// Resolves once no move is under way: a request that needs the leader waits here, so the
    /// old leader appends nothing the transferee lacks, and then goes to whoever leads.
    pub async fn settled(&self) {
        let mut rx = self.moving.subscribe();
        let _ = rx.wait_for(Option::is_none).await;
    }

    fn begin(&self, target: NodeId) -> bool {
        self.moving.send_if_modified(|m| {
            if m.is_some() {
                return false;
            }
            *m = Some(target);
            true
        })
    }

    fn end(&self) {
        self.silent.store(false, Ordering::Relaxed);
        self.moving.send_replace(None);
    }
}

/// Ends the move however `move_leader` returns (a cancelled request included).
struct Ending<'a>(&'a Leadership);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// How long a move waits for the transferee's campaign before asking again: a third of an
/// election timeout, so two more campaigns fit before the other followers' own timers (their
/// lease and half an election timeout after the silence) fire; never under three heartbeats, so
/// a vote round on a slow machine is not cut short by the next.
fn campaign_retry_ms(election_timeout_ms: u64, heartbeat_ms: u64) -> u64 {
    (election_timeout_ms / 3).max(3 * heartbeat_ms)
}

impl<C: Types> Member<C> {
    /// Moves leadership from this member to `target` within `timeout`, as `etcdctl move-leader`
    /// asks. Moving to itself succeeds at once, as etcd's does.
    pub async fn move_leader(&self, target: NodeId, timeout: Duration) -> Result<(), MoveError> {
        let mut metrics = self.raft.metrics();
        {
            let m = metrics.borrow_and_update();
            if m.state != ServerState::Leader {
                return Err(MoveError::NotLeader);
            }
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == target);
            let witness = membership.get_node(&target).is_some_and(|n| n.witness);
            if !voter || witness {
                return Err(MoveError::BadTransferee);
            }
        }
        if target == self.member_id {
            return Ok(());
        }
        let leadership = &self.leadership;
        if !leadership.begin(target) {
            // Another move is under way: wait for it as etcd waits for the leader to change.
            let moved = tokio::time::timeout(
                timeout,
                metrics.wait_for(|m| m.current_leader == Some(target)),
            )
            .await;
            return match moved {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(MoveError::Stopped),
                Err(_) => Err(MoveError::TimedOut),
            };
        }
        let _ending = Ending(leadership);
        let config = self.raft.config();
        let started = tokio::time::Instant::now();
        let mut policy = Transfer::new(
            target,
            0,
            timeout.as_millis() as u64,
            config.election_timeout_max,
            config.heartbeat_interval,
            campaign_retry_ms(self.election_timeout_ms, config.heartbeat_interval),
        );
        tracing::info!(to = %format!("{target:x}"), "leadership transfer starting");
        loop {
            let (o, channel, term) = {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target))
                    .and_then(|l| l.map(|l| l.index))
                    .unwrap_or(0);
                let o = Observation {
                    now_ms: started.elapsed().as_millis() as u64,
                    leading: m.state == ServerState::Leader,
                    current_leader: m.current_leader,
                    last_index: m.last_log_index.unwrap_or(0),
                    target_matched: matched,
                };
                let node = m.membership_config.membership().get_node(&target).cloned();
                (o, node.and_then(|n| self.channels.to(&n)), m.current_term)
            };
            match policy.observe(&o) {
                Step::Wait => {}
                Step::FallSilent => leadership.silent.store(true, Ordering::Relaxed),
                Step::Campaign => {
                    let Some(channel) = channel else { continue };
                    let asked = network::forward::<C::R>(
                        channel,
                        self.cluster_id,
                        &self.incarnations,
                        &ForwardRequest::CampaignFor { term },
                        Duration::from_millis(self.election_timeout_ms),
                    )
                    .await;
                    if !matches!(asked, Ok(ForwardResponse::Campaigning)) {
                        tracing::debug!(error = ?asked.err(), "asking the transferee to stand");
                    }
                }
                Step::Overtaken(leader) => {
                    // Another member won an election meanwhile: it moves its leadership on.
                    let left = timeout.saturating_sub(started.elapsed());
                    let node = metrics
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&leader)
                        .cloned();
                    let Some(channel) = node.and_then(|n| self.channels.to(&n)) else {
                        continue;
                    };
                    tracing::info!(leader = %format!("{leader:x}"), "another member won an election during the move; handing the move to it");
                    let asked = network::forward::<C::R>(
                        channel,
                        self.cluster_id,
                        &self.incarnations,
                        &ForwardRequest::MoveLeader {
                            target,
                            timeout_ms: left.as_millis() as u64,
                        },
                        left,
                    )
                    .await;
                    match asked {
                        Ok(ForwardResponse::LeadershipMoved(Ok(()))) => {
                            tracing::info!(
                                to = %format!("{target:x}"),
                                took_ms = started.elapsed().as_millis() as u64,
                                "leadership transfer finished by the member that overtook this one"
                            );
                            return Ok(());
                        }
                        Ok(ForwardResponse::LeadershipMoved(Err(e))) => {
                            tracing::warn!(error = ?e, "the member that overtook this one could not move its leadership");
                        }
                        other => tracing::warn!(error = ?other.err(), "handing the move on failed"),
                    }
                }
                Step::Moved => {
                    tracing::info!(
                        to = %format!("{target:x}"),
                        took_ms = started.elapsed().as_millis() as u64,
                        "leadership transfer finished"
                    );
                    return Ok(());
                }
                Step::TimedOut => {
                    tracing::warn!(to = %format!("{target:x}"), "leadership transfer took too long");
                    return Err(MoveError::TimedOut);
                }
            }
            if let Ok(Err(_)) = tokio::time::timeout(TICK, metrics.changed()).await {
                return Err(MoveError::Stopped);
            }
        }
    }
}

/// Whether a member still asks `target` to stand for election, as asked in `term`: it leads in
/// that term, and it is moving its leadership there or it is a witness (which hands over to
/// whichever data node is caught up).
pub fn still_asks(
    leading: bool,
    current_term: u64,
    term: u64,
    moving_to: Option<NodeId>,
    target: NodeId,
    witness: bool,
) -> bool {
    leading && current_term == term && (moving_to == Some(target) || witness)
}

/// This member was asked by `asker`, leading in `term`, to stand for election (a move of its
/// leadership here, or a witness handing over). It stands once the asker confirms it still
/// asks: a request that waited in the socket of a member that was stopped (SIGSTOP, a stalled
/// VM) while another member won an election must not start an election against that leader.
/// Unconfirmed, such requests deposed the new leader for seconds and a move overtaken that
/// way ran out of time (move_leader.rs under load). `asked` runs before the election starts.
pub async fn campaign_if_still_asked<C: Types>(
    member: &Member<C>,
    asker: NodeId,
    term: u64,
    asked: impl FnOnce(),
) -> Result<network::ForwardResponse<C::R>, crate::member::ReplicaError> {
    use network::ForwardResponse;
    let (leading, current_term, node) = {
        let m = member.raft.metrics();
        let m = m.borrow();
        (
            m.state == ServerState::Leader,
            m.current_term,
            m.membership_config.membership().get_node(&asker).cloned(),
        )
    };
    if leading {
        return Ok(ForwardResponse::Campaigning);
    }
    let confirmed = match node.and_then(|n| member.channels.to(&n)) {
        Some(channel) if current_term <= term => network::forward::<C::R>(
            channel,
            member.cluster_id,
            &member.incarnations,
            &ForwardRequest::StillAsking {
                target: member.member_id,
                term,
            },
            Duration::from_millis(member.election_timeout_ms),
        )
        .await
        .is_ok_and(|a| matches!(a, ForwardResponse::StillAsking(true))),
        _ => false,
    };
    if !confirmed {
        tracing::info!(asker = %format!("{asker:x}"), term, current_term,
            "declining to stand for election: the member that asked no longer asks");
        return Ok(ForwardResponse::CampaignDeclined);
    }
    asked();
    stand(member).await
}

/// Stands for election, as asked by the leader (the witness hands over, or etcd's MoveLeader);
/// asked again after winning (the asker had not heard yet), it does not: a new election would
/// only depose this member.
pub async fn stand<C: Types>(
    member: &Member<C>,
) -> Result<network::ForwardResponse<C::R>, crate::member::ReplicaError> {
    if member.raft.metrics().borrow().state == ServerState::Leader {
        return Ok(network::ForwardResponse::Campaigning);
    }
    tracing::info!(
        "asked by the leader to stand for election (the witness hands over, or etcd's MoveLeader)"
    );
    member
        .raft
        .trigger()
        .elect()
        .await
        .map_err(|_| crate::member::ReplicaError::Stopped)?;
    Ok(network::ForwardResponse::Campaigning)
}

/// A leader's log flushes this slow (µs, averaged over `flushes::WINDOW_MS`)…
const SLOW_FLUSH_MICROS: u64 = 200_000;
/// …and this many times slower than a follower's…
const SLOW_FLUSH_RATIO: u64 = 4;
/// …for this long without a break hand leadership to that follower (S14).
const SLOW_FLUSH_PATIENCE_MS: u64 = 3000;
/// After such a move, the next one waits this long.
const SLOW_FLUSH_COOLDOWN_MS: u64 = 30_000;
/// How often the leader compares.
const SLOW_FLUSH_TICK: Duration = Duration::from_millis(250);

/// While this member leads, hands its leadership to a data follower whose disk is far faster
/// (`crate::policy::slow_disk`, S14). Runs until raft stops.
pub async fn hand_over_from_a_slow_disk<C: Types>(
    member: std::sync::Arc<Member<C>>,
    clock: std::sync::Arc<crate::flushes::FlushClock>,
    peers: std::sync::Arc<crate::flushes::PeerFlushes>,
) {
    use crate::policy::slow_disk::{Observation, SlowDisk};
    let started = tokio::time::Instant::now();
    let mut policy = SlowDisk::new(
        SLOW_FLUSH_MICROS,
        SLOW_FLUSH_RATIO,
        SLOW_FLUSH_PATIENCE_MS,
        SLOW_FLUSH_COOLDOWN_MS,
    );
    let metrics = member.raft.metrics();
    let mut tick = tokio::time::interval(SLOW_FLUSH_TICK);
    loop {
        tick.tick().await;
        if metrics.has_changed().is_err() {
            return;
        }
        let o = {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let followers = membership
                .voter_ids()
                .filter(|id| *id != member.member_id)
                .filter(|id| membership.get_node(id).is_some_and(|n| !n.witness))
                .map(|id| (id, peers.of(id)))
                .collect();
            Observation {
                now_ms: started.elapsed().as_millis() as u64,
                leading: m.state == ServerState::Leader,
                own_micros: clock.recent_micros(),
                followers,
            }
        };
        let Some(target) = policy.observe(&o) else {
            continue;
        };
        tracing::warn!(
            flush_ms = o.own_micros / 1000,
            to = %format!("{target:x}"),
            "this leader's log flushes are slow; handing leadership to a follower with a faster disk"
        );
        if let Err(e) = member.move_leader(target, member.forward_timeout).await {
            tracing::warn!(error = ?e, "handing leadership over from a slow disk failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::still_asks;

    /// Each row: leading, current term, the term asked in, where a move goes, the target,
    /// witness; whether the asker still asks.
    #[test]
    fn a_request_to_stand_stands_while_its_asker_leads_in_its_term_and_still_moves_there() {
        let rows = [
            (true, 4, 4, Some(2), 2, false, true),
            (true, 4, 4, None, 2, true, true),
            (false, 4, 4, Some(2), 2, false, false),
            (true, 5, 4, Some(2), 2, false, false),
            (true, 4, 4, Some(3), 2, false, false),
            (true, 4, 4, None, 2, false, false),
            (false, 5, 4, None, 2, true, false),
        ];
        for (leading, current, term, moving, target, witness, expected) in rows {
            assert_eq!(
                still_asks(leading, current, term, moving, target, witness),
                expected,
                "leading {leading}, term {current} (asked in {term}), moving to {moving:?}, target {target}, witness {witness}"
            );
        }
    }
}
