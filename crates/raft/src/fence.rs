//! Fencing, the driver (`crate::policy::fence` decides): two data members, no witness. Each asks
//! its peer for the membership every heartbeat (a cheap answer any member gives), which both
//! arms it and tells it when it last heard the peer. On a loss it has the operator's fence
//! command run (the caller's `fence`); once that reports success it continues alone:
//!
//! 1. it writes the membership it continues with (itself the only voter, the fenced peer a
//!    learner) durably to a marker file, [`MARKER`], and returns, so that the node stops;
//! 2. started again, before raft opens its log, [`apply_marker`] appends that membership as the
//!    next entry of the log, in a new term, with this member's own vote for that term: raft
//!    starts as the leader of a one-voter cluster and commits everything its log holds. No
//!    entry is dropped (unlike etcd's `--force-new-cluster`): in the two-voter membership every
//!    committed entry was on both members, and the entries above are committed now too;
//! 3. the fenced peer, powered on again, is sent the log as a learner and, once it has caught
//!    up, promoted back to a voter ([`promote_returning`]).
//!
//! A crash anywhere in between is safe: before the marker is durable nothing changed (the peer
//! is fenced, this member restarts unarmed and stays a member that has no quorum); after it,
//! the next start applies it (again, harmlessly, if it already had).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload, ServerState};

use crate::member::Member;
use crate::network::{self, ForwardRequest, ForwardResponse};
use crate::policy::fence::{Arming, Fencer, Observation, PeerView, Settings, Step};
use crate::types::{Entry, LogId, MemberNode, Membership, NodeId, Types, Vote};

/// The membership a fenced-off member continues with, in its `member` directory.
pub const MARKER: &str = "fenced";

/// How often a member waiting for a returning peer tries to promote it.
const PROMOTE_EVERY: Duration = Duration::from_millis(500);

/// Asks the peer, watches for its loss and fences it; returns once a fence succeeded and the
/// membership to continue with is in `dir`'s marker. `fence` runs the operator's command for
/// the peer and says whether it reported success.
pub async fn drive<C, F, Fut>(
    member: Arc<Member<C>>,
    settings: Settings,
    heartbeat: Duration,
    dir: std::path::PathBuf,
    armed: Arc<std::sync::atomic::AtomicBool>,
    fence: F,
) -> anyhow::Result<NodeId>
where
    C: Types,
    F: Fn(MemberNode) -> Fut,
    Fut: Future<Output = bool>,
{
    let me = member.member_id;
    let started = tokio::time::Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut arming = Arming::default();
    let mut fencer = Fencer::new(settings);
    let mut heard_ms = 0;
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ask_timeout = Duration::from_millis((settings.loss_ms / 2).max(1));
    loop {
        tick.tick().await;
        let (voters, leading, membership) = {
            let m = member.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership().clone();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            (voters, m.state == ServerState::Leader, membership)
        };
        let peer = voters
            .iter()
            .copied()
            .find(|v| *v != me && voters.len() == 2);
        let node = peer.and_then(|p| membership.get_node(&p).cloned());
        let answer = match &node {
            Some(n) => ask(&member, n, ask_timeout).await,
            None => None,
        };
        if answer.is_some() {
            heard_ms = now_ms();
        }
        let was_armed = arming.armed();
        let armed_against = arming.observe(me, &voters, answer.as_ref());
        armed.store(arming.armed(), std::sync::atomic::Ordering::Relaxed);
        if arming.armed() != was_armed {
            tracing::info!(
                armed = arming.armed(),
                "fencing {}",
                if arming.armed() {
                    "armed: the peer confirmed the two-voter membership"
                } else {
                    "disarmed"
                }
            );
        }
        let o = Observation {
            now_ms: now_ms(),
            armed_against,
            heard_ms,
            leading,
        };
        let mut step = fencer.observe(&o);
        if let (Step::Fence(peer), Some(node)) = (step, &node) {
            tracing::warn!(peer = %node.name, silent_ms = o.now_ms - heard_ms, "peer lost: fencing it");
            let ok = fence(node.clone()).await;
            step = fencer.fenced(peer, ok, now_ms());
        }
        if let Step::Alone(peer) = step {
            let alone = alone_membership(&membership, me);
            write_marker(&dir, &alone)?;
            tracing::warn!(peer = %format!("{peer:x}"), "peer fenced: continuing alone with every entry of the log (restarting to take the one-voter membership)");
            return Ok(peer);
        }
    }
}

/// The peer's view of the membership in effect, if it answers within `timeout`.
async fn ask<C: Types>(
    member: &Member<C>,
    peer: &MemberNode,
    timeout: Duration,
) -> Option<PeerView> {
    let channel = member.channels.to(peer)?;
    let asked = network::forward::<C::R>(
        channel,
        member.cluster_id,
        &member.incarnations,
        &ForwardRequest::Members,
        timeout,
    )
    .await;
    let Ok(ForwardResponse::Members(a)) = asked else {
        return None;
    };
    Some(PeerView {
        voters: a
            .members
            .iter()
            .filter(|(_, _, learner)| !learner)
            .map(|(id, _, _)| *id)
            .collect(),
        committed: a.committed_at.is_some(),
    })
}

/// `membership` with `me` its only voter and every other member a learner.
pub fn alone_membership(membership: &Membership, me: NodeId) -> Membership {
    let nodes = membership
        .nodes()
        .map(|(id, n)| (*id, n.clone()))
        .collect::<std::collections::BTreeMap<_, _>>();
    Membership::new(vec![BTreeSet::from([me])], nodes)
}

/// Stores `membership` in `dir`'s marker, durably: the next start appends it to the log
/// ([`apply_marker`]).
pub fn write_marker(dir: &Path, membership: &Membership) -> anyhow::Result<()> {
    crate::disk::write_durably(dir, MARKER, &crate::codec::encode(membership))?;
    Ok(())
}

/// Before raft opens the log in `wal_dir`: when `dir` holds a fence marker, appends its
/// membership as the next entry, in a new term voted for by `me`, and removes the marker.
/// Whether there was one.
pub fn apply_marker<C: Types>(dir: &Path, wal_dir: &Path, me: NodeId) -> anyhow::Result<bool> {
    let path = dir.join(MARKER);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let membership: Membership = crate::codec::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a fence marker: {e}", path.display()))?;
    let mut wal = crate::wal::Wal::open(wal_dir)?;
    let last = wal.last_log_id();
    let vote = wal.state().vote;
    let (entry, vote) = alone_entry::<C>(membership, me, last, vote);
    wal.append(&entry)?;
    wal.save_vote(vote)?;
    wal.sync()?;
    drop(wal);
    std::fs::remove_file(&path)?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::warn!(
        index = entry.log_id.index,
        term = vote.leader_id.term,
        "took the one-voter membership after fencing the peer"
    );
    Ok(true)
}

/// What an unsafe recovery (S7: the member is the only one left and no fence can prove the
/// others gone) would do to the log in `wal_dir`: where it ends, what this member knows to be
/// committed (the log's committed hint, or what the state machine applied, `applied_to`), and
/// the membership in effect (the last in the log, else `applied`, the one the state machine
/// holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub last: Option<LogId>,
    pub committed: Option<LogId>,
    pub membership: Membership,
}

impl RecoveryPlan {
    /// The index the log ends at (0: empty).
    pub fn last_index(&self) -> u64 {
        self.last.map_or(0, |l| l.index)
    }

    /// The index up to which entries are known committed (0: none).
    pub fn committed_index(&self) -> u64 {
        self.committed.map_or(0, |l| l.index)
    }

    /// Entries this member holds above what it knows to be committed: they are kept (committed
    /// by the recovery), though no client may have been told they were.
    pub fn uncommitted(&self) -> u64 {
        self.last_index().saturating_sub(self.committed_index())
    }
}

pub fn recovery_plan<C: Types>(
    wal_dir: &Path,
    applied: &Membership,
    applied_to: Option<LogId>,
) -> anyhow::Result<RecoveryPlan> {
    let wal = crate::wal::Wal::open(wal_dir)?;
    let mut membership = None;
    for loc in wal.locs().iter().rev() {
        if let EntryPayload::Membership(m) = loc.read::<C>()?.payload {
            membership = Some(m);
            break;
        }
    }
    Ok(RecoveryPlan {
        last: wal.last_log_id(),
        committed: wal.state().committed.max(applied_to),
        membership: membership.unwrap_or_else(|| applied.clone()),
    })
}

/// The membership an unsafe recovery continues with: `me` its only member (every other member
/// removed, as etcd's `--force-new-cluster` does; they are added again with MemberAdd).
pub fn sole_membership(membership: &Membership, me: NodeId) -> Option<Membership> {
    let node = membership.get_node(&me)?.clone();
    Some(Membership::new(
        vec![BTreeSet::from([me])],
        std::collections::BTreeMap::from([(me, node)]),
    ))
}

/// The membership entry after `last` and the vote that makes `me` its leader, in a term above
/// any this member has seen.
fn alone_entry<C: Types>(
    membership: Membership,
    me: NodeId,
    last: Option<LogId>,
    vote: Option<Vote>,
) -> (Entry<C>, Vote) {
    let term = vote
        .map(|v| v.leader_id.term)
        .max(last.map(|l| l.leader_id.term))
        .unwrap_or(0)
        + 1;
    let index = last.map_or(0, |l| l.index + 1);
    let entry = Entry::<C> {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(membership),
    };
    (entry, Vote::new_committed(term, me))
}

/// On a member that continues alone after fencing: promotes each returning learner once it has
/// caught up (the promotion's own checks refuse one that has not; it is asked again).
pub async fn promote_returning<C: Types>(member: Arc<Member<C>>) {
    let me = member.member_id;
    let mut tick = tokio::time::interval(PROMOTE_EVERY);
    loop {
        tick.tick().await;
        let learners: Vec<NodeId> = {
            let metrics = member.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let alone = voters.len() == 1 && voters.contains(&me);
            if m.state != ServerState::Leader || !alone {
                continue;
            }
            membership
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| !voters.contains(id))
                .collect()
        };
        for id in learners {
            match member
                .change_members(crate::policy::membership::MemberChange::Promote { id })
                .await
            {
                Ok(_) => {
                    tracing::info!(member = %format!("{id:x}"), "the fenced peer is back and caught up: promoted to a voter")
                }
                Err(e) => {
                    tracing::debug!(member = %format!("{id:x}"), error = %e, "the returning peer is not promoted yet")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_types::Test;

    fn node(name: &str) -> MemberNode {
        MemberNode {
            name: name.into(),
            peer_urls: vec![format!("http://{name}:2380")],
            ..Default::default()
        }
    }

    fn two() -> Membership {
        Membership::new(
            vec![BTreeSet::from([1, 2])],
            std::collections::BTreeMap::from([(1, node("a")), (2, node("b"))]),
        )
    }

    #[test]
    fn the_membership_to_continue_with_keeps_the_peer_as_a_learner() {
        let alone = alone_membership(&two(), 1);
        assert_eq!(alone.voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(alone.learner_ids().collect::<Vec<_>>(), vec![2]);
        assert_eq!(alone.get_node(&2), Some(&node("b")));
    }

    #[test]
    fn the_marker_is_appended_after_every_entry_in_a_new_term_and_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let wal_dir = dir.path().join("wal");
        let entry = |term: u64, index: u64| Entry::<Test> {
            log_id: LogId::new(CommittedLeaderId::new(term, 2), index),
            payload: EntryPayload::Normal(crate::types::Payload::Data(vec![index as u8])),
        };
        {
            let mut wal = crate::wal::Wal::open(&wal_dir).expect("wal");
            for i in 1..=5 {
                wal.append(&entry(3, i)).expect("append");
            }
            wal.save_vote(Vote::new(4, 2)).expect("vote");
            wal.sync().expect("sync");
        }
        assert!(!apply_marker::<Test>(dir.path(), &wal_dir, 1).expect("no marker"));
        write_marker(dir.path(), &alone_membership(&two(), 1)).expect("marker");
        assert!(apply_marker::<Test>(dir.path(), &wal_dir, 1).expect("applied"));
        assert!(!dir.path().join(MARKER).exists(), "the marker is removed");

        let wal = crate::wal::Wal::open(&wal_dir).expect("wal");
        assert_eq!(
            wal.state().vote,
            Some(Vote::new_committed(5, 1)),
            "a term above the vote's, voted for by this member and committed"
        );
        let locs: Vec<_> = wal.locs().iter().cloned().collect();
        assert_eq!(locs.len(), 6, "every entry kept, one added");
        for (i, loc) in locs[..5].iter().enumerate() {
            assert_eq!(loc.read::<Test>().expect("read"), entry(3, i as u64 + 1));
        }
        let last = locs[5].read::<Test>().expect("read");
        assert_eq!(last.log_id, LogId::new(CommittedLeaderId::new(5, 1), 6));
        let EntryPayload::Membership(m) = last.payload else {
            panic!("not a membership entry: {last:?}");
        };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_recovery_plan_reads_where_the_log_ends_what_is_committed_and_the_membership() {
        let dir = tempfile::tempdir().expect("tmp");
        let wal_dir = dir.path().join("wal");
        let three = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            std::collections::BTreeMap::from([(1, node("a")), (2, node("b")), (3, node("w"))]),
        );
        {
            let mut wal = crate::wal::Wal::open(&wal_dir).expect("wal");
            wal.append(&Entry::<Test> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Membership(three.clone()),
            })
            .expect("append");
            for i in 2..=9 {
                wal.append(&Entry::<Test> {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                    payload: EntryPayload::Blank,
                })
                .expect("append");
            }
            wal.note_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 4)));
            wal.save_vote(Vote::new_committed(1, 1)).expect("vote");
            wal.sync().expect("sync");
        }
        let applied_to = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        let plan = recovery_plan::<Test>(&wal_dir, &two(), applied_to(2)).expect("plan");
        assert_eq!(
            plan.membership, three,
            "the log's membership, not the applied one"
        );
        assert_eq!(plan.last.map(|l| l.index), Some(9));
        assert_eq!(plan.committed.map(|l| l.index), Some(4));
        assert_eq!(plan.uncommitted(), 5);
        // The state machine applied further than the hint says: that is committed too.
        let plan = recovery_plan::<Test>(&wal_dir, &two(), applied_to(7)).expect("plan");
        assert_eq!(plan.uncommitted(), 2);

        let sole = sole_membership(&plan.membership, 1).expect("a member");
        assert_eq!(sole.voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(sole.nodes().count(), 1, "every other member removed");
        assert_eq!(sole_membership(&plan.membership, 7), None, "not a member");
    }
}
