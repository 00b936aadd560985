//! One member of the replicated store: opens the keyspace and the log, starts raft, bootstraps a
//! new cluster, and offers the three things the server needs: propose a mutation, wait for a
//! linearizable read point, and report status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mvcc::{Command, Store};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};

use crate::log_store::LogStore;
use crate::network::{Network, PeerService};
use crate::state_machine::{ApplyListener, StateMachine};
use crate::types::{Batch, CommandResult, MemberNode, NodeId, Raft};

/// Proposals waiting for the proposer; beyond this, proposing waits (back-pressure).
const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// The most commands one log entry carries.
const BATCH_COMMANDS_MAX: usize = 1_024;
/// The most key and value bytes one log entry carries (a single larger command still goes alone).
const BATCH_BYTES_MAX: usize = 4 << 20;

/// Read barriers waiting for the next round; beyond this, asking waits.
const READ_QUEUE_MAX: usize = 16_384;

type ReadWaiter = tokio::sync::oneshot::Sender<Result<(), ReplicaError>>;

/// Batched ReadIndex: every read waiting when a round starts is served by that round's single
/// `ensure_linearizable`. A read joins only a round that starts after it was asked, so the round's
/// read index covers every write that completed before the read began.
async fn read_barriers(raft: Raft, mut rx: tokio::sync::mpsc::Receiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => match f.leader_id {
                Some(l) => Err(ReplicaError::NotLeader(Some(l))),
                None => Err(ReplicaError::NoLeader),
            },
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(ReplicaError::Timeout)
            }
            Err(RaftError::Fatal(_)) => Err(ReplicaError::Stopped),
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// One command waiting to be proposed, and where its result goes.
struct Proposal {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<Result<CommandResult, ReplicaError>>,
}

/// Proposes everything queued while the previous proposal was being replicated as one log entry:
/// openraft 0.9 makes each entry durable before taking the next, so batching here is what turns
/// many concurrent writes into one log fsync (group commit).
async fn proposer(raft: Raft, mut rx: tokio::sync::mpsc::Receiver<Proposal>) {
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
        match raft.client_write(Batch(cmds)).await {
            Ok(r) => {
                assert_eq!(
                    r.data.0.len(),
                    replies.len(),
                    "one result per proposed command"
                );
                for (reply, result) in replies.into_iter().zip(r.data.0) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                let err = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        match f.leader_id {
                            Some(l) => ReplicaError::NotLeader(Some(l)),
                            None => ReplicaError::NoLeader,
                        }
                    }
                    RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => {
                        ReplicaError::LeaderChanged
                    }
                    RaftError::Fatal(_) => ReplicaError::Stopped,
                };
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
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
    /// The voters of a new cluster (`--initial-cluster`).
    pub initial_members: BTreeMap<NodeId, MemberNode>,
    /// `--initial-cluster-state=new`: bootstrap if this member has no state yet.
    pub bootstrap: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Applied entries between two snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
}

/// Why a request could not be replicated. Each maps to one etcd error at the gRPC edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        let log = LogStore::open(&dir.join("wal"))?;
        let log_stats = log.stats();
        let sm = StateMachine::new(Arc::clone(&store), listener)?;
        let raft_config = Config {
            cluster_name: format!("{:x}", config.cluster_id),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: 5_000,
            ..Default::default()
        }
        .validate()?;
        let network = Network {
            cluster_id: config.cluster_id,
        };
        let raft = Raft::new(config.member_id, Arc::new(raft_config), network, log, sm).await?;
        if config.bootstrap && !raft.is_initialized().await? {
            tracing::info!(
                members = config.initial_members.len(),
                "bootstrapping a new cluster"
            );
            raft.initialize(config.initial_members.clone()).await?;
        }
        let (proposals, rx) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(proposer(raft.clone(), rx));
        let (reads, rx) = tokio::sync::mpsc::channel(READ_QUEUE_MAX);
        tokio::spawn(read_barriers(raft.clone(), rx));
        Ok(Self {
            raft,
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
        rx.await.map_err(|_| ReplicaError::Stopped)?
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
        status_of(&self.raft.metrics().borrow())
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
            && m.last_applied
                .is_some_and(|a| a.leader_id.term == m.current_term)
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
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let status = status_of(&metrics.borrow());
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

fn status_of(m: &openraft::RaftMetrics<NodeId, MemberNode>) -> ReplicaStatus {
    ReplicaStatus {
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        is_leader: m.state == ServerState::Leader,
        is_learner: m.state == ServerState::Learner,
    }
}
