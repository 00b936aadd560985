//! What every member shares, data node or witness: the raft handle and the way to the leader.
//! Routing a request to the leader (waiting out elections), forwarding, the ReadIndex round
//! (batched), publishing the member's own attributes, and its status. Nothing here knows what a
//! payload means.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::network::{
    self, serve_forward, Channels, ForwardFailure, ForwardRequest, ForwardResponse,
};
use crate::policy::leader_loss::lost_quorum;
use crate::types::{MemberNode, NodeId, Payload, Types};

/// How often a member retries publishing its attributes while that fails.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// How often a request waiting for a leader looks again when nothing changed.
const ROUTE_RECHECK: Duration = Duration::from_millis(100);
/// The pause before a ReadIndex round that missed its quorum is tried again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(50);
/// How long a leader waits for its read partner's answer before it starts openraft's round too.
const PARTNER_HEDGE: Duration = Duration::from_millis(50);

/// A read waiting for a ReadIndex round (see [`read_barriers`]), answered with the round's read
/// index; the read then waits until its member has applied that index.
pub type ReadWaiter = Ask<u64>;

/// An ask to join the next ReadIndex round: how many reads it stands for (a member's batch
/// counts as its reads: rounds are paced by load, `crate::policy::read_rounds`), how many reads
/// the asking member had in flight (0: not known), and where the round's result goes.
pub struct Ask<T> {
    pub reads: usize,
    pub in_flight: usize,
    pub answer: tokio::sync::oneshot::Sender<Result<T, ReplicaError>>,
}

/// What every task of a member shares: raft, and the way to the leader.
pub struct Member<C: Types> {
    pub raft: openraft::Raft<C>,
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub channels: Arc<Channels>,
    /// How long a forwarded request may take.
    pub forward_timeout: Duration,
    pub election_timeout_ms: u64,
    pub incarnations: Arc<crate::incarnation::Incarnations>,
    /// With pre-vote: when this member last heard from a leader (a follower silent for an
    /// election timeout has no leader, see [`status_of`]).
    pub contact: Option<Arc<crate::prevote::Contact>>,
    /// Snapshots sent and received (`crate::transfers`).
    pub transfers: Arc<crate::transfers::Transfers>,
    /// A leadership move under way (`crate::leadership`).
    pub leadership: Arc<crate::leadership::Leadership>,
    /// When each peer last answered, and its flush times (`crate::flushes`).
    pub peer_flushes: Arc<crate::flushes::PeerFlushes>,
    /// This member's ReadIndex rounds while it leads, shared by its own reads and those its
    /// followers forward ([`LeaderReads`]).
    pub leader_reads: LeaderReads,
}

impl<C: Types> Member<C> {
    /// Where a request that needs the leader goes: `None` when this member leads, else the
    /// leader and the channel to it. While no leader is known (an election), or the leader is
    /// `unreachable` (a connection to it just failed), waits for another, until `deadline`. A
    /// leader that has lost its quorum refuses (see [`lost_quorum`]).
    pub async fn route(
        &self,
        for_proposal: bool,
        unreachable: Option<NodeId>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(NodeId, tonic::transport::Channel)>, ReplicaError> {
        let mut metrics = self.raft.metrics();
        loop {
            if self.leadership.moving_to().is_some() {
                // This leader is moving its leadership away: the request waits for the move to
                // end (bounded), then goes to whoever leads.
                let _ = tokio::time::timeout(self.forward_timeout, self.leadership.settled()).await;
                metrics.mark_changed();
            }
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    if lost_quorum(&m, self.election_timeout_ms) {
                        return Err(ReplicaError::NoLeader);
                    }
                    return Ok(None);
                }
                // A witness that leads takes no proposals: they wait for it to hand over.
                let membership = m.membership_config.membership();
                let witness = |l: &NodeId| membership.get_node(l).is_some_and(|n| n.witness);
                let silent = self
                    .contact
                    .as_ref()
                    .is_some_and(|c| c.silent_ms() > self.election_timeout_ms);
                let leader = m.current_leader.filter(|l| {
                    !silent
                        && *l != self.member_id
                        && Some(*l) != unreachable
                        && !(for_proposal && witness(l))
                });
                if let Some(l) = leader {
                    let node = membership.get_node(&l).cloned();
                    let channel = node.and_then(|n| self.channels.to(&n));
                    return channel.map(|c| Some((l, c))).ok_or(ReplicaError::NoLeader);
                }
            }
            // Silence ends without a metrics change (the same leader is heard again): look
            // again now and then.
            let look_again = (tokio::time::Instant::now() + ROUTE_RECHECK).min(deadline);
            match tokio::time::timeout_at(look_again, metrics.changed()).await {
                Err(_) if look_again >= deadline => return Err(ReplicaError::NoLeader),
                Err(_) | Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ReplicaError::Stopped),
            }
        }
    }

    /// Sends `req` to the leader, or gives it back (`Err(req)`) when this member leads. Waits
    /// for an election to end (at most two election timeouts), and when the leader cannot be
    /// connected to (it died; nothing was sent), for the next one (within the forward timeout).
    pub async fn forward_or_here(
        &self,
        mut req: ForwardRequest,
    ) -> Result<Result<ForwardResponse<C::R>, ForwardRequest>, ReplicaError> {
        let start = tokio::time::Instant::now();
        let mut deadline = start + Duration::from_millis(2 * self.election_timeout_ms);
        let mut unreachable = None;
        loop {
            let for_proposal = matches!(req, ForwardRequest::Propose(_));
            let Some((leader, channel)) = self.route(for_proposal, unreachable, deadline).await?
            else {
                return Ok(Err(req));
            };
            let timeout = (start + self.forward_timeout)
                .saturating_duration_since(tokio::time::Instant::now());
            let sent = tokio::select! {
                r = network::forward(channel, self.cluster_id, &self.incarnations, &req, timeout) => Some(r),
                () = leader_moved(&self.raft, leader) => None,
            };
            let Some(sent) = sent else {
                // Another member leads now: the request to the old leader (paused, or cut off)
                // would hang until its timeout and hold up every proposal behind it. A read or
                // a node record is asked again of the new leader; a proposal may have been
                // appended by the old leader, so it is not sent twice: its clients are told
                // the leader changed (an indeterminate outcome, as a timeout is).
                tracing::debug!(from = %format!("{leader:x}"), "leader changed during a forwarded request");
                if let ForwardRequest::Propose(_) = req {
                    return Err(ReplicaError::LeaderChanged);
                }
                continue;
            };
            match sent {
                Ok(r) => return Ok(Ok(r)),
                // The leader is moving its leadership away and took nothing: wait for the next.
                Err(ForwardFailure::Failed(ReplicaError::NotLeader(Some(to)))) if to != leader => {
                    tracing::debug!(from = %format!("{leader:x}"), to = %format!("{to:x}"), "leadership moving; waiting for the next leader");
                    unreachable = Some(leader);
                    deadline = start + self.forward_timeout;
                }
                Err(ForwardFailure::Failed(e)) => return Err(e),
                // A leader of an older release: a read index is asked for as it knows it.
                Err(ForwardFailure::NotUnderstood) => match req {
                    ForwardRequest::ReadIndexOf { reads, .. } => {
                        req = ForwardRequest::ReadIndex { reads };
                    }
                    _ => return Err(ReplicaError::Timeout),
                },
                Err(ForwardFailure::NotSent) => {
                    tracing::debug!(leader = %format!("{leader:x}"), "leader unreachable; waiting for the next");
                    unreachable = Some(leader);
                    deadline = start + self.forward_timeout;
                }
            }
        }
    }

    /// Waits until this member has applied the entry at `index`.
    pub async fn applied(&self, index: u64) -> Result<(), ReplicaError> {
        let mut data = self.raft.data_metrics();
        data.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index))
            .await
            .map(|_| ())
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Replicates `payload` as one entry: through raft here when this member leads, otherwise
    /// through the leader. Returns the entry's index when it was forwarded (this member has
    /// not necessarily applied it yet) and what applying it returned.
    pub async fn replicate(&self, payload: Payload) -> Result<(Option<u64>, C::R), ReplicaError> {
        match self
            .forward_or_here(ForwardRequest::Propose(payload))
            .await?
        {
            Ok(ForwardResponse::Proposed { index, applied }) => Ok((Some(index), applied)),
            Ok(other) => Err(unexpected_answer(other)),
            Err(ForwardRequest::Propose(payload)) => {
                let r = self.raft.client_write(payload).await.map_err(|e| match e {
                    // Deposed between the check and the write, or a membership change in the
                    // way: the client may retry.
                    RaftError::APIError(_) => ReplicaError::LeaderChanged,
                    RaftError::Fatal(_) => ReplicaError::Stopped,
                })?;
                Ok((None, r.data))
            }
            Err(_) => unreachable!("forward_or_here gives back the request it was given"),
        }
    }

    /// Carries out a forwarded request on this member (it leads).
    pub async fn serve_here(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse<C::R>, ReplicaError> {
        serve_forward(self, None, req).await
    }

    /// etcd's MemberAdd/Remove/Update/Promote: carried out by the leader; returns the
    /// membership once the change is committed.
    pub async fn change_members(
        &self,
        change: crate::policy::membership::MemberChange,
    ) -> Result<crate::membership::Members, ReplicaError> {
        match self
            .forward_or_here(ForwardRequest::ChangeMembers(change))
            .await?
        {
            Ok(ForwardResponse::MembersChanged(members)) => Ok(members),
            Ok(other) => Err(unexpected_answer(other)),
            Err(ForwardRequest::ChangeMembers(change)) => {
                crate::membership::change(&self.raft, &self.peer_flushes, change).await
            }
            Err(_) => unreachable!("forward_or_here gives back the request it was given"),
        }
    }

    /// One ReadIndex round: the index this member must have applied to hold everything
    /// committed before the round began (the reads wait for it themselves, so that a round
    /// never waits for an apply: a write that cannot commit holds up only the reads that need
    /// it, not the next round).
    /// `reads`: how many reads the round serves; `in_flight`: how many this member has in flight.
    ///
    /// A follower that makes a quorum with the leader needs no round: the leader answers with
    /// its read index and leadership, and the read index holds if this member's vote, read
    /// after that answer, still names the same leadership (`crate::policy::read_quorum`).
    pub async fn read_index(&self, reads: usize, in_flight: usize) -> Result<u64, ReplicaError> {
        let reads32 = reads.try_into().unwrap_or(u32::MAX);
        let req = ForwardRequest::ReadIndexOf {
            reads: reads32,
            in_flight: in_flight.try_into().unwrap_or(u32::MAX),
        };
        let answer = match self.forward_or_here(req).await? {
            Ok(ForwardResponse::ReadIndexIf { index, elected }) => {
                if crate::read_confirm::elected_of(&self.raft).await == Some(elected) {
                    return Ok(index);
                }
                // This member's vote has moved on since: a round decides.
                self.forward_or_here(ForwardRequest::ReadIndex { reads: reads32 })
                    .await?
            }
            other => other,
        };
        match answer {
            Ok(ForwardResponse::ReadIndex { index }) => Ok(index),
            Ok(other) => Err(unexpected_answer(other)),
            Err(_) => self.leader_reads.read_index(reads, in_flight).await,
        }
    }
}

/// Resolves once this member knows a leader other than `from` (itself included).
async fn leader_moved<C: Types>(raft: &openraft::Raft<C>, from: NodeId) {
    let mut metrics = raft.metrics();
    loop {
        if metrics
            .borrow_and_update()
            .current_leader
            .is_some_and(|l| l != from)
        {
            return;
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How a leader confirms a read index: see [`ReadPolicy::leader_read_index`].
#[derive(Clone, Copy, Debug)]
pub struct ReadPolicy {
    /// How long a read may wait for a confirmed round (the request timeout).
    pub timeout: Duration,
    pub election_timeout_ms: u64,
}

impl ReadPolicy {
    /// The leader's read index, confirmed by a quorum. openraft confirms with one heartbeat
    /// round whose every AppendEntries is bounded by one heartbeat interval, which a loaded
    /// follower misses now and then; a round that missed its quorum is tried again until
    /// `timeout`, as etcd retries a ReadIndex round until its request times out. A leader that
    /// has heard from no quorum for an election timeout answers "no leader" at once (see
    /// [`lost_quorum`]).
    ///
    /// openraft's read index is the larger of its commit index and the first entry of this
    /// leadership; a leader restored at start-up (openraft 0.9 restarts a leader whose vote was
    /// committed) knows neither until a new entry commits, so the index is at least every entry
    /// in its log when the round started. This holds for the leader's own reads and for those
    /// followers forward to it: before, only the former had it, and after all members lost
    /// power a follower served linearizable reads from before writes that had completed
    /// (found by the robustness suite's power cuts).
    pub async fn leader_read_index<C: Types>(
        &self,
        raft: &openraft::Raft<C>,
        partner: &crate::read_confirm::Confirmer,
    ) -> Result<u64, ReplicaError> {
        // Confirmed by one data member when that is a quorum with this one
        // (`crate::policy::read_quorum`), which keeps the witness out of read rounds. A partner
        // slow to answer is raced by openraft's round.
        let quick = partner.confirm(raft);
        tokio::pin!(quick);
        tokio::select! {
            confirmed = &mut quick => {
                if let Some(index) = confirmed {
                    return Ok(index);
                }
                return self.round(raft).await;
            }
            () = tokio::time::sleep(PARTNER_HEDGE) => {
                // Slow (or paused): asked again only after a while, so that rounds do not each
                // wait for it first.
                partner.rest();
            }
        }
        let round = self.round(raft);
        tokio::pin!(round);
        tokio::select! {
            Some(index) = &mut quick => Ok(index),
            r = &mut round => r,
        }
    }

    /// openraft's round: a heartbeat to every voter, confirmed by a quorum.
    async fn round<C: Types>(&self, raft: &openraft::Raft<C>) -> Result<u64, ReplicaError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
        loop {
            match raft.get_read_log_id().await {
                Ok((read, _)) => return Ok(read.map_or(0, |l| l.index).max(last)),
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))
                    if tokio::time::Instant::now() + READ_INDEX_RETRY < deadline =>
                {
                    if lost_quorum(&raft.metrics().borrow(), self.election_timeout_ms) {
                        return Err(ReplicaError::NoLeader);
                    }
                    tracing::debug!("a ReadIndex round missed its quorum; trying again");
                    tokio::time::sleep(READ_INDEX_RETRY).await;
                }
                Err(e) => return Err(read_error(e)),
            }
        }
    }
}

fn unexpected_answer<R: std::fmt::Debug>(r: ForwardResponse<R>) -> ReplicaError {
    tracing::error!(answer = ?r, "the leader answered a forwarded request with another kind");
    ReplicaError::Timeout
}

/// The error for "another member leads (or none does)".
pub fn not_leader(leader: Option<NodeId>) -> ReplicaError {
    match leader {
        Some(l) => ReplicaError::NotLeader(Some(l)),
        None => ReplicaError::NoLeader,
    }
}

/// The error for a failed ReadIndex round.
pub fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>) -> ReplicaError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => not_leader(f.leader_id),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => ReplicaError::Timeout,
        RaftError::Fatal(_) => ReplicaError::Stopped,
    }
}

/// Batched ReadIndex: every read waiting when a round starts is served by that round's single
/// ReadIndex question (to raft here, or to the leader). A read joins only a round that starts
/// after it was asked, so the round's read index covers every write that completed before the
/// read began.
pub async fn read_barriers<C: Types>(shared: Arc<Member<C>>, rx: Rounds<u64>) {
    run_rounds(rx, |reads, in_flight| shared.read_index(reads, in_flight)).await
}

/// Where reads ask to join the next round; each is answered with the round's result.
pub type Rounds<T> = tokio::sync::mpsc::Receiver<Ask<T>>;

/// Runs `round` once for every batch of the asks waiting on `rx` when it starts, paced under
/// load (`crate::policy::read_rounds`), and answers each ask of the batch with its result.
async fn run_rounds<T, F, Fut>(mut rx: Rounds<T>, mut round: F)
where
    T: Clone,
    F: FnMut(usize, usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, ReplicaError>>,
{
    let mut next = tokio::time::Instant::now();
    let mut previous: Option<tokio::time::Instant> = None;
    let mut pacer = crate::policy::read_rounds::Pacer::default();
    while let Some(first) = rx.recv().await {
        // (A sleep that is already over still waits for the timer's next tick: skipped.)
        if next > tokio::time::Instant::now() {
            tokio::time::sleep_until(next).await;
        }
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let reads = waiters.iter().map(|w| w.reads).sum();
        let in_flight = waiters.iter().map(|w| w.in_flight).max().unwrap_or(0);
        let began = tokio::time::Instant::now();
        let since_previous = previous.map_or(Duration::ZERO, |p| began - p);
        previous = Some(began);
        next = began
            + pacer.next(crate::policy::read_rounds::Round {
                reads,
                in_flight,
                since_previous,
            });
        let result = round(reads, in_flight).await;
        for w in waiters {
            let _ = w.answer.send(result.clone());
        }
    }
}

/// The leader's ReadIndex rounds, batched: every read index asked for while no round is under
/// way — by this member's own reads (already batched by [`read_barriers`]) or forwarded by a
/// follower (each forwarded request is a follower's batch) — is answered by the next round's
/// single quorum confirmation, instead of a heartbeat round each. A request joins only a round
/// that starts after it was asked, so the index covers every write that completed before it.
#[derive(Clone)]
pub struct LeaderReads {
    asks: tokio::sync::mpsc::Sender<Ask<u64>>,
}

impl LeaderReads {
    /// Starts the task that runs the rounds on `raft` (it ends with the last handle); a round
    /// that missed its quorum is retried until `timeout` ([`ReadPolicy`]).
    pub fn spawn<C: Types>(
        raft: openraft::Raft<C>,
        timeout: Duration,
        election_timeout_ms: u64,
        partner: crate::read_confirm::Confirmer,
    ) -> Self {
        let policy = ReadPolicy {
            timeout,
            election_timeout_ms,
        };
        let (asks, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(async move {
            run_rounds(rx, |_, _| policy.leader_read_index(&raft, &partner)).await
        });
        LeaderReads { asks }
    }

    /// This leader's read index, confirmed by a quorum in a round that started after the call,
    /// for `reads` reads, asked by a member with `in_flight` reads in flight (0: not known).
    pub async fn read_index(&self, reads: usize, in_flight: usize) -> Result<u64, ReplicaError> {
        join_round(&self.asks, reads, in_flight).await
    }
}

/// Asks to join the next round of the task reading `rounds`, for `reads` reads of a member with
/// `in_flight` reads in flight (0: not known), and waits for that round's result.
pub async fn join_round<T>(
    rounds: &tokio::sync::mpsc::Sender<Ask<T>>,
    reads: usize,
    in_flight: usize,
) -> Result<T, ReplicaError> {
    let (answer, rx) = tokio::sync::oneshot::channel();
    rounds
        .send(Ask {
            reads,
            in_flight,
            answer,
        })
        .await
        .map_err(|_| ReplicaError::Stopped)?;
    rx.await.map_err(|_| ReplicaError::Stopped)?
}

/// Records this member's attributes (name, peer and client URLs) in the membership once a leader
/// is known, as etcd's members publish theirs: a new cluster starts knowing only peer URLs, the
/// same on every member. Retries until it succeeds or the member stops.
pub async fn publish<C: Types>(shared: Arc<Member<C>>, me: MemberNode) {
    let mut metrics = shared.raft.metrics();
    // Members of a new cluster publish at once and refuse each other's concurrent change
    // ("already undergoing a configuration change"); an offset of their own keeps their
    // retries from meeting again and again.
    let offset = Duration::from_millis(shared.member_id % PUBLISH_RETRY.as_millis() as u64);
    let mut retry = tokio::time::interval(PUBLISH_RETRY + offset);
    loop {
        let (leader, current, known) = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            let current = membership.get_node(&shared.member_id).cloned();
            let known = membership.nodes().next().is_some();
            (m.current_leader, current, known)
        };
        match current {
            // Not (or no longer) a member of a known membership: nothing to publish.
            None if known => return,
            // Already recorded.
            Some(n) if n == me => return,
            Some(_) if leader.is_some() => {
                let req = ForwardRequest::SetNode(shared.member_id, me.clone());
                let result = match shared.forward_or_here(req).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(req)) => shared.serve_here(req).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(member = %me, "published this member's attributes");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "publishing attributes; will retry"),
                }
                retry.tick().await;
            }
            // No leader yet, or the membership is not loaded yet.
            _ => {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Why a request could not be replicated. Each maps to one etcd error at the gRPC edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReplicaError {
    #[error("no leader")]
    NoLeader,
    /// Another member leads; the request must go there.
    #[error("not leader (leader is {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("leader changed")]
    LeaderChanged,
    #[error("server stopped")]
    Stopped,
    /// The leader does not know the member that forwarded the request: it was removed.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    #[error("request timed out")]
    Timeout,
    /// A membership change refused as etcd refuses it.
    #[error("{0}")]
    Membership(crate::policy::membership::MembershipError),
}

/// Raft-level facts for `Status` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
    pub is_learner: bool,
}

/// This member's status as its raft metrics `m` show it; a leader that lost its quorum reports
/// no leader.
///
/// `silent_ms` is how long this member has not heard from a leader, when it tracks that (with
/// pre-vote): a follower that has heard nothing for an election timeout reports no leader, as
/// etcd's does once its election timer fires (openraft keeps naming the old leader until a new
/// vote, and with pre-vote a cut-off follower casts none).
pub fn status_of(
    m: &crate::types::Metrics,
    election_timeout_ms: u64,
    silent_ms: Option<u64>,
) -> ReplicaStatus {
    let follower_lost =
        m.state != ServerState::Leader && silent_ms.is_some_and(|s| s > election_timeout_ms);
    let leader = if lost_quorum(m, election_timeout_ms) || follower_lost {
        None
    } else {
        m.current_leader
    };
    ReplicaStatus {
        leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        is_leader: m.state == ServerState::Leader,
        is_learner: m.state == ServerState::Learner,
    }
}

/// Bootstraps a new cluster with `members` when `bootstrap` (`--initial-cluster-state=new`) and
/// this member has no raft state yet; `role` names the member in the log line.
pub async fn bootstrap_if_new<C: Types>(
    raft: &openraft::Raft<C>,
    bootstrap: bool,
    members: &std::collections::BTreeMap<NodeId, MemberNode>,
    role: &str,
) -> anyhow::Result<()> {
    if bootstrap && !raft.is_initialized().await? {
        tracing::info!(members = members.len(), role, "bootstrapping a new cluster");
        raft.initialize(members.clone()).await?;
    }
    Ok(())
}

/// The members of `m`'s membership, voters and learners, with whether each is a learner.
pub fn members_of(m: &crate::types::Metrics) -> Vec<(NodeId, MemberNode, bool)> {
    members_in(m.membership_config.membership())
}

/// The log index of the membership in `m`, once this member has applied it (so it is
/// committed).
pub fn membership_applied_at(m: &crate::types::Metrics) -> Option<u64> {
    m.membership_config
        .log_id()
        .filter(|l| m.last_applied.is_some_and(|a| a.index >= l.index))
        .map(|l| l.index)
}

/// The members of `membership`, voters and learners, with whether each is a learner.
pub fn members_in(membership: &crate::types::Membership) -> Vec<(NodeId, MemberNode, bool)> {
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Waits for `done`, yielding, for at most 5 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    /// A read asked while a round is under way is answered by the next round, never by the one
    /// it missed the start of (its index could predate a write that completed before the read).
    #[tokio::test]
    async fn a_read_asked_during_a_round_waits_for_the_next() {
        let (asks, rx) = tokio::sync::mpsc::channel(16);
        let started = Arc::new(AtomicU64::new(0));
        let (release, released) = tokio::sync::watch::channel(0u64);
        let rounds = Arc::clone(&started);
        tokio::spawn(run_rounds(rx, move |_, _| {
            let round = rounds.fetch_add(1, Ordering::SeqCst) + 1;
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r >= round).await;
                Ok::<u64, ReplicaError>(round)
            }
        }));
        let ask = |asks: tokio::sync::mpsc::Sender<Ask<u64>>| {
            tokio::spawn(async move { join_round(&asks, 1, 0).await })
        };
        let first = ask(asks.clone());
        until("the first round starts", || {
            started.load(Ordering::SeqCst) == 1
        })
        .await;
        let second = ask(asks.clone());
        until("the second read is queued during round 1", || {
            asks.capacity() < asks.max_capacity()
        })
        .await;
        release.send_replace(1);
        assert_eq!(first.await.unwrap(), Ok(1));
        release.send_replace(2);
        assert_eq!(second.await.unwrap(), Ok(2));
    }
}
