//! Membership changes on the leader (etcd's MemberAdd/Remove/Update/Promote): the facts the
//! checks need (`crate::policy::membership`), then openraft's change, and the membership
//! afterwards. Also what keeps a change from being left half done: a leader that finds a joint
//! configuration (its predecessor crashed between the two steps) finishes it.

use std::collections::BTreeMap;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use crate::flushes::PeerFlushes;
use crate::member::{members_in, not_leader, ReplicaError};
use crate::policy::membership::{plan, Facts, MemberChange, HEALTH_INTERVAL};
use crate::types::{MemberNode, Membership, NodeId, Types};

/// The members and whether each is a learner.
pub type Members = Vec<(NodeId, MemberNode, bool)>;

/// Carries out `change` on this member, which must lead, and returns the membership once the
/// change is committed.
pub async fn change<C: Types>(
    raft: &openraft::Raft<C>,
    answers: &PeerFlushes,
    change: MemberChange,
) -> Result<Members, ReplicaError> {
    let m = raft.metrics().borrow().clone();
    if m.state != ServerState::Leader {
        return Err(not_leader(m.current_leader));
    }
    let mut membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        // A change left half done (its leader crashed after the first step): finish it first.
        membership = finish_joint(raft, &membership).await?;
    }
    let mut matched: BTreeMap<NodeId, u64> = m
        .replication
        .iter()
        .flatten()
        .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
        .collect();
    matched.insert(m.id, m.last_log_index.unwrap_or(0));
    let facts = Facts {
        membership: &membership,
        leader: m.id,
        connected: answers.active_for(HEALTH_INTERVAL),
        matched,
    };
    let planned = plan(&change, &facts).map_err(ReplicaError::Membership)?;
    tracing::info!(?change, "changing the membership");
    let r = raft
        .change_membership(planned, false)
        .await
        .map_err(write_error)?;
    let after = r.membership.unwrap_or_else(|| {
        raft.metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    });
    tracing::info!(members = ?members_in(&after).iter().map(|(id, n, l)| format!("{id:x}={n}{}", if *l { " learner" } else { "" })).collect::<Vec<_>>(), "membership changed");
    Ok(members_in(&after))
}

/// Moves a joint configuration on to its new half.
async fn finish_joint<C: Types>(
    raft: &openraft::Raft<C>,
    joint: &Membership,
) -> Result<Membership, ReplicaError> {
    let goal = joint.get_joint_config().last().cloned().unwrap_or_default();
    tracing::info!(voters = ?goal, "finishing a membership change left half done");
    let r = raft
        .change_membership(openraft::ChangeMembers::ReplaceAllVoters(goal), false)
        .await
        .map_err(write_error)?;
    Ok(r.membership.unwrap_or_else(|| joint.clone()))
}

/// While this member leads, finishes any joint configuration it finds (S11: exactly one
/// configuration in effect after a crash during a change). A change under way on this leader
/// takes its second step at once; one found still joint `settle` later was left half done.
pub async fn finish_changes<C: Types>(raft: openraft::Raft<C>, settle: std::time::Duration) {
    let mut metrics = raft.metrics();
    let joint_of = |m: &crate::types::Metrics| {
        let membership = m.membership_config.membership();
        let log_id = *m.membership_config.log_id();
        let committed = crate::member::membership_applied_at(m).is_some();
        (m.state == ServerState::Leader && committed && membership.get_joint_config().len() > 1)
            .then(|| (log_id, membership.clone()))
    };
    loop {
        let found = joint_of(&metrics.borrow_and_update());
        if let Some((log_id, _)) = found {
            tokio::time::sleep(settle).await;
            let still = joint_of(&raft.metrics().borrow());
            if let Some((_, joint)) = still.filter(|(again, _)| *again == log_id) {
                if let Err(e) = finish_joint(&raft, &joint).await {
                    tracing::debug!(error = %e, "finishing a joint configuration; will retry");
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The error for a membership change (or a proposal) raft refused.
pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>,
) -> ReplicaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_id),
        // Another change is under way: the client may retry.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            tracing::info!(error = %e, "membership change refused by raft");
            ReplicaError::LeaderChanged
        }
        RaftError::Fatal(_) => ReplicaError::Stopped,
    }
}

/// Resolves once this member's applied membership no longer holds it (etcd: "the member has
/// been permanently removed from the cluster"); the member then stops, as etcd's does.
///
/// A removed member seldom learns the final configuration: openraft's leader stops sending to
/// it once it appends that entry. What it may learn is the joint configuration whose new half
/// leaves it out; the change only moves forward from there (`finish_changes`), so `grace`
/// after applying that one it stops too. And when it hears no leader for `grace` it asks the
/// members it knows (as etcd's peers answer a removed member with 410 Gone): one whose
/// committed membership is later than the last that held this member and leaves it out means
/// it was removed. The removal was checked to leave a quorum without it.
pub async fn removed<C: Types>(
    raft: openraft::Raft<C>,
    me: NodeId,
    cluster_id: u64,
    grace: std::time::Duration,
    contact: Option<std::sync::Arc<crate::prevote::Contact>>,
) {
    let mut metrics = raft.metrics();
    // A member joining replays memberships from before it was added: only one that held it
    // and then one that does not mean it was removed. Whether an applied membership held it,
    // and the log index of the last membership in its log that held it (a member restarted
    // may not know that its last one was committed: nobody tells it any more).
    let mut held_applied = false;
    let mut held_at: Option<u64> = None;
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(grace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (leaving, peers) = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            let applied_at = crate::member::membership_applied_at(&m);
            let joint = membership.get_joint_config();
            let holds_me = membership.get_node(&me).is_some();
            if holds_me {
                held_applied |= applied_at.is_some();
                held_at = held_at.max(m.membership_config.log_id().map(|l| l.index));
            }
            if held_applied && applied_at.is_some() && !holds_me {
                tracing::warn!(
                    member_id = %format!("{me:x}"),
                    "the member has been permanently removed from the cluster; stopping"
                );
                return;
            }
            // With pre-votes a member that hears no leader does not stand (nor forget the
            // leader it knew) until a pre-vote wins: its silence says it.
            let silent = m.state != ServerState::Leader
                && contact
                    .as_ref()
                    .is_some_and(|c| c.silent_ms() > grace.as_millis() as u64);
            leaderless_since = match (m.current_leader, silent, leaderless_since) {
                (Some(_), false, _) => None,
                (_, _, since) => since.or_else(|| Some(tokio::time::Instant::now())),
            };
            let peers: Vec<String> = membership
                .nodes()
                .filter(|(id, _)| **id != me)
                .flat_map(|(_, n)| n.peer_urls.iter().cloned())
                .collect();
            let leaving = held_applied
                && applied_at.is_some()
                && joint.len() > 1
                && joint.last().is_some_and(|new| !new.contains(&me));
            (leaving, peers)
        };
        if leaving {
            tokio::time::sleep(grace).await;
            let m = raft.metrics().borrow().clone();
            let joint = m.membership_config.membership().get_joint_config().clone();
            let still_out = joint.last().is_some_and(|new| !new.contains(&me));
            if still_out && m.state != openraft::ServerState::Leader {
                tracing::warn!(
                    member_id = %format!("{me:x}"),
                    "the member has been permanently removed from the cluster (the change that \
                     removes it is under way); stopping"
                );
                return;
            }
        }
        let ask = held_at
            .zip(leaderless_since)
            .and_then(|(held_at, since)| (since.elapsed() >= grace).then_some(held_at));
        if let Some(held_at) = ask {
            for url in &peers {
                let Ok(answer) = crate::network::ask_members_of(url, grace).await else {
                    continue;
                };
                let ids: Vec<NodeId> = answer.members.iter().map(|(id, _, _)| *id).collect();
                let seen = crate::policy::membership::Seen {
                    cluster_id: answer.cluster_id,
                    members: &ids,
                    committed_at: answer.committed_at,
                };
                if crate::policy::membership::removed_by(me, cluster_id, held_at, &seen) {
                    tracing::warn!(
                        member_id = %format!("{me:x}"),
                        peer = %url,
                        "the member has been permanently removed from the cluster (a member's \
                         committed membership leaves it out); stopping"
                    );
                    return;
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = tick.tick() => {}
        }
    }
}
