//! Pre-vote (etcd's PreVote, which openraft 0.9 lacks): a member cut off from its peers stands
//! for election again and again, raising its term each time, and once the link heals its higher
//! term deposes a leader that was fine (S6: "B causes no disruption after the heal"). So in a
//! cluster with a witness a member keeps openraft's elections off until a majority of voters
//! says, in a pre-vote round that changes nothing, that it would vote for it: a voter grants
//! only if it has not heard from a leader within its leader lease (and does not lead itself
//! with a quorum), and the candidate's log is at least as up to date as its own.
//!
//! [`grant`] is the voter's decision (pure, tabled); [`stand_after_prevote`] is the candidate's
//! side: a task that runs rounds while no leader is heard from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;

use crate::member::Member;
use crate::network::{self, ForwardRequest, ForwardResponse};
use crate::types::{LogId, Types};

/// How often the candidate's side looks, and how often it may run a round.
const TICK: Duration = Duration::from_millis(50);
const ROUND_EVERY: Duration = Duration::from_millis(100);

/// When this member last took a leader's AppendEntries (heartbeats included), and when a
/// leader last asked it to stand for election (a move of leadership).
#[derive(Debug)]
pub struct Contact {
    since: tokio::time::Instant,
    last_ms: AtomicU64,
    /// 0: never asked.
    asked_ms: AtomicU64,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            since: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            asked_ms: AtomicU64::new(0),
        }
    }
}

impl Contact {
    pub fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    pub fn note(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// A leader asks this member to stand for election now.
    pub fn note_asked(&self) {
        self.asked_ms
            .fetch_max(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// How long ago a leader last asked this member to stand (`None`: never).
    pub fn asked_ago_ms(&self) -> Option<u64> {
        match self.asked_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(self.now_ms().saturating_sub(t)),
        }
    }

    /// How long since a leader was last heard from.
    pub fn silent_ms(&self) -> u64 {
        self.now_ms().saturating_sub(self.last_ms())
    }
}

/// What a voter weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub now_ms: u64,
    /// When the voter last heard from a leader.
    pub heard_ms: u64,
    pub lease_ms: u64,
    /// The voter leads and has heard from a quorum within an election timeout.
    pub leads_with_quorum: bool,
    pub voter_last: Option<LogId>,
    pub candidate_last: Option<LogId>,
}

/// Whether a voter would vote for the candidate now.
pub fn grant(a: &Ask) -> bool {
    let leader_alive = a.leads_with_quorum || a.now_ms.saturating_sub(a.heard_ms) < a.lease_ms;
    !leader_alive && a.candidate_last >= a.voter_last
}

/// Keeps `member`'s elections off while a leader is heard from (within `patience_ms`), and
/// turns them on once a pre-vote round wins a majority of the voters.
pub async fn stand_after_prevote<C: Types>(
    member: Arc<Member<C>>,
    contact: Arc<Contact>,
    last_log: impl Fn() -> Option<LogId> + Send + 'static,
    patience_ms: u64,
) {
    let raft = member.raft.clone();
    let metrics = raft.metrics();
    let mut tick = tokio::time::interval(TICK);
    let mut standing = false;
    let mut last_round = None::<tokio::time::Instant>;
    loop {
        tick.tick().await;
        if metrics.has_changed().is_err() {
            return;
        }
        let (leading, voters, nodes) = {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<_> = membership.voter_ids().collect();
            let nodes: Vec<_> = voters
                .iter()
                .filter(|v| **v != member.member_id)
                .filter_map(|v| membership.get_node(v).cloned())
                .collect();
            (m.state == ServerState::Leader, voters.len(), nodes)
        };
        if leading {
            contact.note();
        }
        let silent = contact.now_ms().saturating_sub(contact.last_ms()) >= patience_ms;
        if !silent {
            if standing {
                raft.runtime_config().elect(false);
                standing = false;
            }
            continue;
        }
        if standing || last_round.is_some_and(|t| t.elapsed() < ROUND_EVERY) {
            continue;
        }
        last_round = Some(tokio::time::Instant::now());
        let req = ForwardRequest::PreVote(last_log());
        let mut granted = 1;
        for node in &nodes {
            let Some(channel) = member.channels.to(node) else {
                continue;
            };
            let answer = network::forward::<C::R>(
                channel,
                member.cluster_id,
                &member.incarnations,
                &req,
                ROUND_EVERY,
            )
            .await;
            if matches!(answer, Ok(ForwardResponse::PreVote { granted: true })) {
                granted += 1;
            }
        }
        if granted * 2 > voters {
            tracing::info!(granted, voters, "pre-vote won: standing for election");
            raft.runtime_config().elect(true);
            standing = true;
        } else {
            tracing::debug!(granted, voters, "pre-vote lost: not standing");
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn a_voter_grants_only_without_a_live_leader_and_to_an_up_to_date_log() {
        let base = Ask {
            now_ms: 10_000,
            heard_ms: 9_000,
            lease_ms: 500,
            leads_with_quorum: false,
            voter_last: id(3, 50),
            candidate_last: id(3, 50),
        };
        let rows = [
            (base, true),
            (
                Ask {
                    heard_ms: 9_600,
                    ..base
                },
                false,
            ),
            (
                Ask {
                    leads_with_quorum: true,
                    ..base
                },
                false,
            ),
            (
                Ask {
                    candidate_last: id(3, 49),
                    ..base
                },
                false,
            ),
            (
                Ask {
                    candidate_last: id(2, 60),
                    ..base
                },
                false,
            ),
            (
                Ask {
                    candidate_last: id(4, 10),
                    ..base
                },
                true,
            ),
        ];
        for (i, (ask, want)) in rows.iter().enumerate() {
            assert_eq!(grant(ask), *want, "row {i}: {ask:?}");
        }
    }
}
