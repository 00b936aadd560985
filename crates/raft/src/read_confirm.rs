//! A read index confirmed by one data member instead of a heartbeat round to every voter
//! (`crate::policy::read_quorum` says when that is enough): the state each side reads, inside
//! openraft's core, and the question a leader asks its partner.
//!
//! Both sides read their state with `Raft::with_raft_state`, which runs between the core's
//! other work: a vote this member has granted to another candidate is seen (openraft answers a
//! vote request only after updating its state), where the metrics may still show the old one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::incarnation::Incarnations;
use crate::network::{self, Channels, ForwardRequest, ForwardResponse};
use crate::policy::read_quorum;
use crate::types::{MemberNode, NodeId, Types};

/// How long a partner that failed to answer, or was slow to, is not asked again (the leader runs
/// openraft's rounds meanwhile).
const REST: Duration = Duration::from_secs(1);

/// A leadership: the term and the member voted for in it (openraft's `LeaderId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elected {
    pub term: u64,
    pub leader: NodeId,
}

/// A leader's state at one instant.
pub struct LeaderView {
    pub elected: Elected,
    /// Its read index: the larger of its commit index and its last log index as its metrics
    /// showed it once the state was read (a write acknowledged before was appended, and shown,
    /// long before; a leader restored at start-up may not yet know what was committed, see
    /// `crate::member::ReadPolicy`; the first entry of this leadership is in it).
    pub read_index: u64,
    /// The voters of each configuration in force.
    pub configs: Vec<BTreeSet<NodeId>>,
    /// The data member that confirms this leader's own reads, when one can.
    pub partner: Option<MemberNode>,
}

/// This member's state, if it leads (its vote committed, no membership change in flight).
pub async fn leader_view<C: Types>(raft: &Raft<C>, me: NodeId) -> Option<LeaderView> {
    let view = raft.with_raft_state(move |st| {
        let vote = st.vote_ref();
        let ms = &st.membership_state;
        if st.server_state != ServerState::Leader
            || !vote.is_committed()
            || ms.effective().log_id() != ms.committed().log_id()
        {
            return None;
        }
        let membership = ms.effective().membership();
        let configs = membership.get_joint_config().clone();
        let witnesses: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(_, n)| n.witness)
            .map(|(id, _)| *id)
            .collect();
        let partner = read_quorum::partner(&configs, me, &witnesses)
            .and_then(|p| membership.get_node(&p).cloned());
        Some(LeaderView {
            elected: elected(vote),
            read_index: st.committed.map_or(0, |l| l.index),
            configs,
            partner,
        })
    });
    let mut view = view.await.ok().flatten()?;
    let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
    view.read_index = view.read_index.max(last);
    Some(view)
}

/// The leadership this member's vote names now (`None`: it has stopped).
pub async fn elected_of<C: Types>(raft: &Raft<C>) -> Option<Elected> {
    raft.with_raft_state(|st| elected(st.vote_ref())).await.ok()
}

fn elected(vote: &crate::types::Vote) -> Elected {
    let l = vote.leader_id();
    Elected {
        term: l.term,
        leader: l.node_id,
    }
}

/// What a leader asks its partner with.
pub struct Confirmer {
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub channels: Arc<Channels>,
    pub incarnations: Arc<Incarnations>,
    /// How long the partner may take to answer.
    pub timeout: Duration,
    /// Until when the partner is not asked (it failed to answer).
    resting_until: Mutex<Option<tokio::time::Instant>>,
}

impl Confirmer {
    pub fn new(
        member_id: NodeId,
        cluster_id: u64,
        channels: Arc<Channels>,
        incarnations: Arc<Incarnations>,
        election_timeout_ms: u64,
    ) -> Self {
        Confirmer {
            member_id,
            cluster_id,
            channels,
            incarnations,
            // Half an election timeout: a partner that slow is raced by a round long before.
            timeout: Duration::from_millis(election_timeout_ms / 2),
            resting_until: Mutex::new(None),
        }
    }

    /// This leader's read index, confirmed by its partner still following it after the call;
    /// `None` when this member does not lead, has no partner, or the partner did not confirm
    /// (the caller then runs openraft's round).
    pub async fn confirm<C: Types>(&self, raft: &Raft<C>) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.resting().is_some_and(|until| now < until) {
            return None;
        }
        let view = leader_view(raft, self.member_id).await?;
        let channel = self.channels.to(&view.partner?)?;
        let asked = network::forward::<C::R>(
            channel,
            self.cluster_id,
            &self.incarnations,
            &ForwardRequest::VoteOf,
            self.timeout,
        )
        .await;
        match asked {
            Ok(ForwardResponse::Vote(e)) if e == view.elected => Some(view.read_index),
            // It follows another leadership: openraft's round finds out what this member is.
            Ok(ForwardResponse::Vote(_)) => None,
            other => {
                let failed = other.is_err();
                tracing::debug!(
                    failed,
                    "a read's partner did not answer; rounds for a while"
                );
                self.rest();
                None
            }
        }
    }

    /// The partner is not asked for a while (it failed to answer, or was slow to): the leader
    /// runs openraft's rounds meanwhile.
    pub fn rest(&self) {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now() + REST);
    }

    fn resting(&self) -> Option<tokio::time::Instant> {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::member::ReplicaError;

    /// The messages' bytes: variants appended after every earlier one (an older release reads
    /// every request it knew, and refuses these), postcard's varints.
    #[test]
    fn the_read_messages_are_appended_variants() {
        assert_eq!(
            codec::encode(&ForwardRequest::ReadIndexOf {
                reads: 1,
                in_flight: 300
            }),
            [2, 11, 1, 0xac, 0x02]
        );
        assert_eq!(codec::encode(&ForwardRequest::VoteOf), [2, 12]);
        let elected = Elected { term: 3, leader: 5 };
        let answer: Result<ForwardResponse<()>, ReplicaError> =
            Ok(ForwardResponse::ReadIndexIf { index: 7, elected });
        assert_eq!(codec::encode(&answer), [2, 0, 11, 7, 3, 5]);
        let answer: Result<ForwardResponse<()>, ReplicaError> = Ok(ForwardResponse::Vote(elected));
        assert_eq!(codec::encode(&answer), [2, 0, 12, 3, 5]);
        let back: Result<ForwardResponse<()>, ReplicaError> =
            codec::decode(&codec::encode(&answer)).expect("decodes");
        assert!(matches!(back, Ok(ForwardResponse::Vote(e)) if e == elected));
    }
}
