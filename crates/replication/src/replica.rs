//! One member of the replicated store: opens the keyspace and the log, starts raft, bootstraps a
//! new cluster, and offers the three things the server needs: propose a mutation, wait for a
//! linearizable read point, and report status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mvcc::{Command, Store};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::log_store::LogStore;
use crate::network::{
    self, serve_forward, Channels, ForwardFailure, ForwardRequest, ForwardResponse, Network,
    PeerService,
};
use crate::state_machine::{ApplyListener, StateMachine};
use crate::types::{Applied, Batch, CommandResult, MemberNode, NodeId, Raft};

/// Proposals waiting for the proposer; beyond this, proposing waits (back-pressure).
const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// The most commands one log entry carries.
const BATCH_COMMANDS_MAX: usize = 1_024;
/// The most key and value bytes one log entry carries (a single larger command still goes alone).
const BATCH_BYTES_MAX: usize = 4 << 20;

/// Read barriers waiting for the next round; beyond this, asking waits.
const READ_QUEUE_MAX: usize = 16_384;
/// How often a member retries publishing its attributes while that fails.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// The pause before a ReadIndex round that missed its quorum is tried again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(50);

type ReadWaiter = tokio::sync::oneshot::Sender<Result<(), ReplicaError>>;

/// What every task of a member shares: raft, and the way to the leader.
struct Shared {
    raft: Raft,
    member_id: NodeId,
    cluster_id: u64,
    channels: Arc<Channels>,
    /// How long a forwarded request may take.
    forward_timeout: Duration,
    election_timeout_ms: u64,
}

impl Shared {
    /// Where a request that needs the leader goes: `None` when this member leads, else the
    /// leader and the channel to it. While no leader is known (an election), or the leader is
    /// `unreachable` (a connection to it just failed), waits for another, until `deadline`. A
    /// leader that has lost its quorum refuses (see [`lost_quorum`]).
    async fn route(
        &self,
        unreachable: Option<NodeId>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(NodeId, tonic::transport::Channel)>, ReplicaError> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    if lost_quorum(&m, self.election_timeout_ms) {
                        return Err(ReplicaError::NoLeader);
                    }
                    return Ok(None);
                }
                let leader = m
                    .current_leader
                    .filter(|l| *l != self.member_id && Some(*l) != unreachable);
                if let Some(l) = leader {
                    let node = m.membership_config.membership().get_node(&l).cloned();
                    let channel = node.and_then(|n| self.channels.to(&n));
                    return channel.map(|c| Some((l, c))).ok_or(ReplicaError::NoLeader);
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Err(ReplicaError::NoLeader),
                Ok(Err(_)) => return Err(ReplicaError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Sends `req` to the leader, or gives it back (`Err(req)`) when this member leads. Waits
    /// for an election to end (at most two election timeouts), and when the leader cannot be
    /// connected to (it died; nothing was sent), for the next one (within the forward timeout).
    async fn forward_or_here(
        &self,
        req: ForwardRequest,
    ) -> Result<Result<ForwardResponse, ForwardRequest>, ReplicaError> {
        let start = tokio::time::Instant::now();
        let mut deadline = start + Duration::from_millis(2 * self.election_timeout_ms);
        let mut unreachable = None;
        loop {
            let Some((leader, channel)) = self.route(unreachable, deadline).await? else {
                return Ok(Err(req));
            };
            let timeout = (start + self.forward_timeout)
                .saturating_duration_since(tokio::time::Instant::now());
            let sent = tokio::select! {
                r = network::forward(channel, self.cluster_id, &req, timeout) => Some(r),
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
                Err(ForwardFailure::Failed(e)) => return Err(e),
                Err(ForwardFailure::NotSent) => {
                    tracing::debug!(leader = %format!("{leader:x}"), "leader unreachable; waiting for the next");
                    unreachable = Some(leader);
                    deadline = start + self.forward_timeout;
                }
            }
        }
    }

    fn read_policy(&self) -> ReadPolicy {
        ReadPolicy {
            timeout: self.forward_timeout,
            election_timeout_ms: self.election_timeout_ms,
        }
    }

    /// Waits until this member has applied the entry at `index`.
    async fn applied(&self, index: u64) -> Result<(), ReplicaError> {
        let mut data = self.raft.data_metrics();
        data.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index))
            .await
            .map(|_| ())
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Replicates `batch` as one entry: through raft here when this member leads, otherwise
    /// through the leader. Returns the entry's index when it was forwarded (this member has
    /// not necessarily applied it yet) and what applying it returned.
    async fn replicate(&self, batch: Batch) -> Result<(Option<u64>, Applied), ReplicaError> {
        match self.forward_or_here(ForwardRequest::Propose(batch)).await? {
            Ok(ForwardResponse::Proposed { index, applied }) => Ok((Some(index), applied)),
            Ok(other) => Err(unexpected_answer(other)),
            Err(ForwardRequest::Propose(batch)) => {
                let r = self.raft.client_write(batch).await.map_err(|e| match e {
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

    /// One ReadIndex round: returns once this member has applied everything committed before
    /// the round began.
    async fn read_index(&self) -> Result<(), ReplicaError> {
        match self.forward_or_here(ForwardRequest::ReadIndex).await? {
            Ok(ForwardResponse::ReadIndex { index }) => self.applied(index).await,
            Ok(other) => Err(unexpected_answer(other)),
            Err(_) => {
                let read = self.read_policy().leader_read_index(&self.raft).await?;
                self.applied(read).await
            }
        }
    }
}

/// Resolves once this member knows a leader other than `from` (itself included).
async fn leader_moved(raft: &Raft, from: NodeId) {
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
    pub(crate) async fn leader_read_index(&self, raft: &Raft) -> Result<u64, ReplicaError> {
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

fn unexpected_answer(r: ForwardResponse) -> ReplicaError {
    tracing::error!(answer = ?r, "the leader answered a forwarded request with another kind");
    ReplicaError::Timeout
}

/// The error for "another member leads (or none does)".
pub(crate) fn not_leader(leader: Option<NodeId>) -> ReplicaError {
    match leader {
        Some(l) => ReplicaError::NotLeader(Some(l)),
        None => ReplicaError::NoLeader,
    }
}

/// The error for a failed ReadIndex round.
pub(crate) fn read_error(
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>,
) -> ReplicaError {
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
async fn read_barriers(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = shared.read_index().await;
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// What a proposer hands back: the entry's index when it was forwarded, and the command's result.
type ProposalResult = Result<(Option<u64>, CommandResult), ReplicaError>;

/// One command waiting to be proposed, and where its result goes.
struct Proposal {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<ProposalResult>,
}

/// Proposes everything queued while the previous proposal was being replicated as one log entry:
/// openraft 0.9 makes each entry durable before taking the next, so batching here is what turns
/// many concurrent writes into one log fsync (group commit). A member that does not lead sends
/// the batch to the leader as one request, so batching holds there too.
async fn proposer(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<Proposal>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.cmd.approx_bytes();
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.cmd.approx_bytes();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        match shared.replicate(Batch(cmds)).await {
            Ok((index, applied)) => {
                assert_eq!(
                    applied.0.len(),
                    replies.len(),
                    "one result per proposed command"
                );
                for (reply, result) in replies.into_iter().zip(applied.0) {
                    let _ = reply.send(Ok((index, result)));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// A leader restored at start-up (openraft 0.9 restarts as leader when its vote was committed)
/// has forgotten how far its log was committed and applies nothing until a new entry commits:
/// it proposes an empty batch at once, so that everything acknowledged before the restart is
/// applied again before reads wait on it for long.
async fn commit_on_restore(raft: Raft, me: NodeId) {
    let known = raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some(), "a leader is known")
        .await;
    if known.is_ok_and(|m| m.current_leader == Some(me) && m.state == ServerState::Leader) {
        if let Err(e) = raft.client_write(Batch(Vec::new())).await {
            tracing::debug!(error = %e, "the start-up entry was not committed");
        }
    }
}

/// Records this member's attributes (name, peer and client URLs) in the membership once a leader
/// is known, as etcd's members publish theirs: a new cluster starts knowing only peer URLs, the
/// same on every member. Retries until it succeeds or the member stops.
async fn publish(shared: Arc<Shared>, me: MemberNode) {
    let mut metrics = shared.raft.metrics();
    let mut retry = tokio::time::interval(PUBLISH_RETRY);
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
                    Ok(Err(req)) => serve_forward(&shared.raft, shared.read_policy(), req)
                        .await
                        .map(|_| ()),
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

/// How a member is set up; the server fills it from etcd's flags.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub data_dir: PathBuf,
    pub member_id: NodeId,
    pub cluster_id: u64,
    /// The voters of a new cluster (`--initial-cluster`), as every member of it knows them
    /// (the same on each: names and peer URLs).
    pub initial_members: BTreeMap<NodeId, MemberNode>,
    /// This member as it describes itself (adds its client URLs), published once a leader is
    /// known.
    pub self_node: MemberNode,
    /// `--initial-cluster-state=new`: bootstrap if this member has no state yet.
    pub bootstrap: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Applied entries between two snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot for a slow follower (`--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// How long a request forwarded to the leader may take.
    pub forward_timeout: Duration,
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
    #[error("request timed out")]
    Timeout,
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

/// A running member.
pub struct Replica {
    raft: Raft,
    shared: Arc<Shared>,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    reads: tokio::sync::mpsc::Sender<ReadWaiter>,
    log_stats: Arc<crate::log_store::LogStats>,
    store: Arc<Store>,
    config: ReplicaConfig,
}

impl Replica {
    /// Opens the keyspace of the member whose data directory is `data_dir`.
    pub fn open_store(data_dir: &std::path::Path) -> anyhow::Result<Arc<Store>> {
        let dir = data_dir.join("member");
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Store::open(dir.join("tandem.db"))?))
    }

    /// Starts raft over the keyspace from [`Replica::open_store`] and the log beside it.
    pub async fn open(
        config: ReplicaConfig,
        store: Arc<Store>,
        listener: Arc<dyn ApplyListener>,
    ) -> anyhow::Result<Self> {
        let dir = config.data_dir.join("member");
        anyhow::ensure!(
            !dir.join("raft.db").exists(),
            "{} holds a raft log in the pre-release redb format (member/raft.db), which this \
             version no longer reads; move the data away and start from an empty data dir",
            config.data_dir.display()
        );
        let disk_full = Arc::<crate::disk::DiskFull>::default();
        let log = LogStore::open(&dir.join("wal"), Arc::clone(&disk_full))?;
        let log_stats = log.stats();
        let sm = StateMachine::new(Arc::clone(&store), listener, disk_full)?;
        let raft_config = Config {
            cluster_name: format!("{:x}", config.cluster_id),
            heartbeat_interval: config.heartbeat_interval_ms,
            // openraft waits `election_timeout_max` (its leader lease) plus a random timeout in
            // [min, max) before electing: with [E/2, E) a follower stands for election 1.5–2
            // election timeouts after the last heartbeat, as etcd's followers do after 1–2
            // (plus a pre-vote round). `max` is also how long a follower ignores candidates
            // while it has a leader (etcd's CheckQuorum lease is one election timeout).
            election_timeout_min: (config.election_timeout_ms / 2)
                .max(config.heartbeat_interval_ms + 1),
            election_timeout_max: config.election_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
            ..Default::default()
        }
        .validate()?;
        let channels = Arc::new(Channels::default());
        let network = Network {
            cluster_id: config.cluster_id,
            channels: Arc::clone(&channels),
        };
        let raft = Raft::new(config.member_id, Arc::new(raft_config), network, log, sm).await?;
        if config.bootstrap && !raft.is_initialized().await? {
            tracing::info!(
                members = config.initial_members.len(),
                "bootstrapping a new cluster"
            );
            raft.initialize(config.initial_members.clone()).await?;
        }
        let shared = Arc::new(Shared {
            raft: raft.clone(),
            member_id: config.member_id,
            cluster_id: config.cluster_id,
            channels,
            forward_timeout: config.forward_timeout,
            election_timeout_ms: config.election_timeout_ms,
        });
        let (proposals, rx) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(proposer(Arc::clone(&shared), rx));
        let (reads, rx) = tokio::sync::mpsc::channel(READ_QUEUE_MAX);
        tokio::spawn(read_barriers(Arc::clone(&shared), rx));
        tokio::spawn(publish(Arc::clone(&shared), config.self_node.clone()));
        tokio::spawn(commit_on_restore(raft.clone(), config.member_id));
        Ok(Self {
            raft,
            shared,
            proposals,
            reads,
            log_stats,
            store,
            config,
        })
    }

    /// How much the raft log's durable commits have covered so far (group commit).
    pub fn log_stats(&self) -> &crate::log_store::LogStats {
        &self.log_stats
    }

    /// Whether a write of this member failed because its disk is full (the raft core has
    /// stopped; the server raises NOSPACE for it).
    pub fn disk_full(&self) -> bool {
        self.log_stats.disk_full.is_full()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn member_id(&self) -> NodeId {
        self.config.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.config.cluster_id
    }

    /// The peer-facing gRPC service of this member.
    pub fn peer_service(&self) -> PeerService {
        PeerService {
            raft: self.raft.clone(),
            cluster_id: self.config.cluster_id,
            read_policy: self.shared.read_policy(),
        }
    }

    /// Replicates `cmd` (batched with whatever else is being proposed), waits until it is applied
    /// here, and returns what applying it returned.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ReplicaError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.proposals
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| ReplicaError::Stopped)?;
        let (forwarded, result) = rx.await.map_err(|_| ReplicaError::Stopped)??;
        if let Some(index) = forwarded {
            // The leader applied it; answer once this member has too, so that a read here
            // after the write sees it.
            self.shared.applied(index).await?;
        }
        Ok(result)
    }

    /// Where a request only the leader answers (a lease renewal) goes: `None` when this member
    /// leads, else the channel to the leader. Waits for an election to end (bounded).
    pub async fn leader_route(&self) -> Result<Option<tonic::transport::Channel>, ReplicaError> {
        let wait = Duration::from_millis(2 * self.config.election_timeout_ms);
        let route = self
            .shared
            .route(None, tokio::time::Instant::now() + wait)
            .await?;
        Ok(route.map(|(_, channel)| channel))
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex,
    /// shared with the other reads waiting for the same round).
    pub async fn read_barrier(&self) -> Result<(), ReplicaError> {
        if self.sole_voter_caught_up() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reads
            .send(tx)
            .await
            .map_err(|_| ReplicaError::Stopped)?;
        rx.await.map_err(|_| ReplicaError::Stopped)?
    }

    pub fn status(&self) -> ReplicaStatus {
        status_of(
            &self.raft.metrics().borrow(),
            self.config.election_timeout_ms,
        )
    }

    /// Whether every write that completed before now is already applied here, so that a read
    /// needs no ReadIndex round. True when this member leads and is the only voter, with no
    /// membership change in flight (no other member can lead or commit), and has applied an
    /// entry of its own term (so everything committed before it took office is applied too);
    /// a write completes only once it is applied on the leader. etcd's raft answers ReadIndex
    /// at once in the same case (a single-voter configuration).
    fn sole_voter_caught_up(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let me = self.config.member_id;
        m.state == ServerState::Leader
            && m.current_leader == Some(me)
            && membership.get_joint_config().len() == 1
            && membership.voter_ids().eq([me])
            && m.last_applied.is_some_and(|a| {
                a.leader_id.term == m.current_term && Some(a.index) >= m.last_log_index
            })
    }

    /// The current members, voters and learners, with whether each is a learner.
    pub fn members(&self) -> Vec<(NodeId, MemberNode, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
    }

    /// A receiver of this member's raft status, updated whenever it changes.
    pub fn watch_status(&self) -> tokio::sync::watch::Receiver<ReplicaStatus> {
        let (tx, rx) = tokio::sync::watch::channel(self.status());
        let mut metrics = self.raft.metrics();
        let election_timeout_ms = self.config.election_timeout_ms;
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let status = status_of(&metrics.borrow(), election_timeout_ms);
                tx.send_if_modified(|cur| {
                    let changed = *cur != status;
                    *cur = status;
                    changed
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        rx
    }

    /// Stops raft and makes the keyspace durable.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.store.sync()?;
        Ok(())
    }
}

/// Whether this member leads but has not heard from a quorum for an election timeout. etcd's raft
/// (CheckQuorum) steps down then; openraft 0.9 stays leader, so tandem reports no leader (and
/// refuses proposals) instead, which is what a client of etcd sees.
fn lost_quorum(m: &openraft::RaftMetrics<NodeId, MemberNode>, election_timeout_ms: u64) -> bool {
    let membership = m.membership_config.membership();
    let others = membership.voter_ids().any(|v| v != m.id);
    m.state == ServerState::Leader
        && others
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms > election_timeout_ms)
}

fn status_of(
    m: &openraft::RaftMetrics<NodeId, MemberNode>,
    election_timeout_ms: u64,
) -> ReplicaStatus {
    let leader = if lost_quorum(m, election_timeout_ms) {
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
