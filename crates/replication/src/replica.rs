//! One data node of the replicated store: opens the keyspace and the log, starts raft, bootstraps
//! a new cluster, and offers the three things the server needs: propose a mutation, wait for a
//! linearizable read point, and report status. What any member does (routing to the leader,
//! forwarding, ReadIndex rounds) is the raft layer's `Member`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mvcc::{Command, Store};
use openraft::{Config, ServerState, SnapshotPolicy};
use raft::engagement;
use raft::log_store::LogStore;
use raft::member::{
    bootstrap_if_new, join_round, members_of, publish, read_barriers, status_of, LeaderReads,
    ReadWaiter,
};
use raft::network::{PeerService, PreVoter, Wiring};
use raft::{Member, ReplicaError, ReplicaStatus};

use crate::state_machine::{ApplyListener, StateMachine};
use crate::types::{Batch, CommandResult, MemberNode, NodeId, Raft, TypeConfig};

/// Proposals waiting for the proposer; beyond this, proposing waits (back-pressure).
const PROPOSAL_QUEUE_MAX: usize = 16_384;
/// The most commands one log entry carries.
const BATCH_COMMANDS_MAX: usize = 1_024;
/// The most key and value bytes one log entry carries (a single larger command still goes alone).
const BATCH_BYTES_MAX: usize = 4 << 20;
/// How often the status is looked at again when nothing changes (a silent leader).
const STATUS_TICK: Duration = Duration::from_millis(100);
/// Read barriers waiting for the next round; beyond this, asking waits.
const READ_QUEUE_MAX: usize = 16_384;

type Shared = Member<TypeConfig>;

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
        match shared.replicate(Batch(cmds).encode()).await {
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

/// Runs the keyspace's idle commits (`state_machine::commit_when_idle`); if one fails, stops
/// raft as a failed apply does (etcd exits on a failed backend commit): the member's clients get
/// "server stopped" from then on, and no write is acknowledged over a keyspace that failed to
/// reach the disk. Only a restart, which checks the file and replays the log, brings it back.
async fn stop_if_idle_commit_fails(
    raft: Raft,
    store: std::sync::Weak<mvcc::Store>,
    commits: crate::state_machine::SharedCommits,
) {
    if let Err(error) = crate::state_machine::commit_when_idle(store, commits).await {
        tracing::error!(%error, "making the keyspace durable failed; the member stops");
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
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
        if let Err(e) = raft.client_write(Batch(Vec::new()).encode()).await {
            tracing::debug!(error = %e, "the start-up entry was not committed");
        }
    }
}

/// openraft's election timeouts for this data member, `[min, max)` in ms. openraft waits
/// `max` (its leader lease) plus a random timeout in `[min, max)` before electing. With
/// [E/2, E) a follower stands for election 1.5–2 election timeouts after the last heartbeat, as
/// etcd's followers do after 1–2 (plus a pre-vote round); `max` is also how long a follower
/// ignores candidates while it has a leader (etcd's CheckQuorum lease is one election timeout).
/// Beside a witness: `raft::policy::timeouts_beside_witness`.
fn election_timeouts(config: &ReplicaConfig) -> (u64, u64) {
    let (e, heartbeat) = (config.election_timeout_ms, config.heartbeat_interval_ms);
    if config.initial_members.values().any(|m| m.witness) {
        raft::policy::timeouts_beside_witness(e, heartbeat)
    } else {
        ((e / 2).max(heartbeat + 1), e)
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
    /// The incarnation of this member's data dir (W5, `raft::incarnation`).
    pub incarnation: u64,
    /// Two data members that fence each other (`--fence-command`, `raft::fence`).
    pub fencing: bool,
}

/// A running member.
pub struct Replica {
    raft: Raft,
    shared: Arc<Shared>,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    reads: tokio::sync::mpsc::Sender<ReadWaiter>,
    log_stats: Arc<raft::log_store::LogStats>,
    store: Arc<Store>,
    config: ReplicaConfig,
    engagement: engagement::Handle,
    prevote: Option<PreVoter>,
    flush: Arc<raft::flushes::FlushClock>,
    /// The keyspace's durable commits (see `state_machine::DurableCommits`).
    commits: crate::state_machine::SharedCommits,
}

impl Replica {
    /// Opens the keyspace of the member whose data directory is `data_dir`.
    pub fn open_store(data_dir: &std::path::Path) -> anyhow::Result<Arc<Store>> {
        Self::open_store_with_cache(data_dir, mvcc::DEFAULT_CACHE_BYTES)
    }

    /// [`Replica::open_store`] with a page cache of `cache_bytes`.
    pub fn open_store_with_cache(
        data_dir: &std::path::Path,
        cache_bytes: usize,
    ) -> anyhow::Result<Arc<Store>> {
        let dir = data_dir.join("member");
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Store::open_with_cache(
            dir.join("tandem.db"),
            cache_bytes,
        )?))
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
        // The peer was fenced before this start: continue alone (`raft::fence`). Applied
        // whatever the flags say now: a marker left for a later start would be stale.
        raft::fence::apply_marker::<TypeConfig>(&dir, &dir.join("wal"), config.member_id)?;
        let disk_full = Arc::<raft::disk::DiskFull>::default();
        let log = LogStore::<TypeConfig>::open(&dir.join("wal"), Arc::clone(&disk_full))?;
        let log_reader = log.clone();
        let log_stats = log.stats();
        let sm = StateMachine::new(Arc::clone(&store), listener, disk_full)?;
        let commits = sm.durable_commits();
        let (election_timeout_min, election_timeout_max) = election_timeouts(&config);
        let raft_config = Config {
            cluster_name: format!("{:x}", config.cluster_id),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
            install_snapshot_timeout: raft::transfers::SNAPSHOT_CHUNK_TIMEOUT_MS,
            ..Default::default()
        }
        .validate()?;
        let Wiring {
            network,
            channels,
            incarnations,
            engagement,
            publisher: engagement_publisher,
            transfers,
            leadership,
            peer_flushes,
            vote_backoff,
        } = Wiring::open(
            &dir,
            config.cluster_id,
            config.member_id,
            config.incarnation,
            false,
        )?;
        let raft = Raft::new(config.member_id, Arc::new(raft_config), network, log, sm).await?;
        // Beside a witness, elections wait for a won pre-vote (`raft::prevote`): a data member
        // cut off from its peers must not raise its term and depose a healthy leader on return.
        // With fencing too: a fenced member that is back must not depose the one that went on.
        // The flags name the witness of the cluster as it was bootstrapped; one added later
        // (`tandem-ctl member add-witness`) is in the membership the log holds.
        let flagged = config.initial_members.values().any(|m| m.witness);
        let held = raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(_, n)| n.witness);
        if held && !flagged {
            tracing::warn!(
                "the cluster has a witness but this member's flags name none: start it with \
                 --initial-cluster-witness (TANDEM_INITIAL_CLUSTER_WITNESS) for the election \
                 timeouts beside a witness"
            );
        }
        let with_witness = flagged || held;
        let prevote = (with_witness || config.fencing).then(|| PreVoter {
            contact: Arc::default(),
            lease_ms: election_timeout_max,
            election_timeout_ms: config.election_timeout_ms,
            last_log: Arc::new(move || log_reader.last_log_id()),
        });
        if prevote.is_some() {
            raft.runtime_config().elect(false);
        } else {
            // openraft's timer starts this member's elections: its backoff after a vote lost
            // to a greater log, without openraft 0.9's stickiness (`raft::vote_backoff`).
            tokio::spawn(raft::vote_backoff::drive(
                raft.clone(),
                vote_backoff,
                Duration::from_millis(2 * election_timeout_max),
            ));
        }
        let engage_after = Duration::from_millis(config.election_timeout_ms / 3);
        tokio::spawn(engagement::drive(
            raft.clone(),
            engagement::Policy::new(
                engage_after,
                Duration::from_millis(config.heartbeat_interval_ms),
            ),
            engagement_publisher,
            prevote.as_ref().map(|p| Arc::clone(&p.contact)),
        ));
        bootstrap_if_new(&raft, config.bootstrap, &config.initial_members, "data").await?;
        let shared = Arc::new(Shared {
            raft: raft.clone(),
            member_id: config.member_id,
            cluster_id: config.cluster_id,
            channels: Arc::clone(&channels),
            forward_timeout: config.forward_timeout,
            election_timeout_ms: config.election_timeout_ms,
            incarnations: Arc::clone(&incarnations),
            contact: prevote.as_ref().map(|p| Arc::clone(&p.contact)),
            transfers,
            leadership,
            peer_flushes: Arc::clone(&peer_flushes),
            leader_reads: LeaderReads::spawn(
                raft.clone(),
                config.forward_timeout,
                config.election_timeout_ms,
                raft::read_confirm::Confirmer::new(
                    config.member_id,
                    config.cluster_id,
                    Arc::clone(&channels),
                    Arc::clone(&incarnations),
                    config.election_timeout_ms,
                ),
            ),
        });
        let (proposals, rx) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(proposer(Arc::clone(&shared), rx));
        let (reads, rx) = tokio::sync::mpsc::channel(READ_QUEUE_MAX);
        tokio::spawn(read_barriers(Arc::clone(&shared), rx));
        tokio::spawn(publish(Arc::clone(&shared), config.self_node.clone()));
        if let Some(p) = &prevote {
            let last_log = Arc::clone(&p.last_log);
            tokio::spawn(raft::prevote::stand_after_prevote(
                Arc::clone(&shared),
                Arc::clone(&p.contact),
                move || last_log(),
                p.lease_ms,
            ));
        }
        tokio::spawn(commit_on_restore(raft.clone(), config.member_id));
        tokio::spawn(stop_if_idle_commit_fails(
            raft.clone(),
            Arc::downgrade(&store),
            commits.clone(),
        ));
        if config.fencing {
            tokio::spawn(raft::fence::promote_returning(Arc::clone(&shared)));
        }
        tokio::spawn(raft::membership::finish_changes(
            raft.clone(),
            Duration::from_millis(config.election_timeout_ms),
        ));
        let flush = Arc::new(raft::flushes::FlushClock::new(Arc::clone(&log_stats)));
        tokio::spawn(raft::leadership::hand_over_from_a_slow_disk(
            Arc::clone(&shared),
            Arc::clone(&flush),
            peer_flushes,
        ));
        Ok(Self {
            raft,
            shared,
            proposals,
            reads,
            log_stats,
            store,
            config,
            engagement,
            prevote,
            flush,
            commits,
        })
    }

    /// How much the raft log's durable commits have covered so far (group commit).
    pub fn log_stats(&self) -> &raft::log_store::LogStats {
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
    pub fn peer_service(&self) -> PeerService<TypeConfig> {
        PeerService {
            raft: self.raft.clone(),
            cluster_id: self.config.cluster_id,
            on_data_floor: None,
            witness: false,
            incarnations: Arc::clone(&self.shared.incarnations),
            prevote: self.prevote.clone(),
            transfers: Arc::clone(&self.shared.transfers),
            flush: Some(Arc::clone(&self.flush)),
            held: None,
            member: Arc::clone(&self.shared),
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
            .route(false, None, tokio::time::Instant::now() + wait)
            .await?;
        Ok(route.map(|(_, channel)| channel))
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex,
    /// shared with the other reads waiting for the same round). `in_flight`: how many reads the
    /// member is serving now (this one included), which paces the rounds under load
    /// (`raft::policy::read_rounds`).
    pub async fn read_barrier(&self, in_flight: usize) -> Result<(), ReplicaError> {
        if self.sole_voter_caught_up() {
            return Ok(());
        }
        let index = join_round(&self.reads, 1, in_flight).await?;
        self.shared.applied(index).await
    }

    /// Whether the witness counts now (this member leads and a data follower is behind).
    pub fn witness_engaged(&self) -> bool {
        self.engagement.state().engaged
    }

    /// Moves leadership from this member to `target` (etcd's MoveLeader, `raft::leadership`).
    pub async fn move_leader(
        &self,
        target: raft::types::NodeId,
        timeout: Duration,
    ) -> Result<(), raft::leadership::MoveError> {
        self.shared.move_leader(target, timeout).await
    }

    /// Resolves once this member has been removed from the cluster (`raft::membership`).
    pub fn removed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        raft::membership::removed(
            self.raft.clone(),
            self.config.member_id,
            self.config.cluster_id,
            Duration::from_millis(2 * self.config.election_timeout_ms),
            self.prevote.as_ref().map(|p| Arc::clone(&p.contact)),
        )
    }

    /// With fencing: watches the peer and fences it when lost (`raft::fence`); resolves once a
    /// fence succeeded and this member must restart to continue alone.
    pub fn fence<F, Fut>(
        &self,
        settings: raft::policy::fence::Settings,
        armed: Arc<std::sync::atomic::AtomicBool>,
        fence: F,
    ) -> impl std::future::Future<Output = anyhow::Result<raft::types::NodeId>> + Send + 'static
    where
        F: Fn(raft::types::MemberNode) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        raft::fence::drive(
            Arc::clone(&self.shared),
            settings,
            Duration::from_millis(self.config.heartbeat_interval_ms),
            self.config.data_dir.join("member"),
            armed,
            fence,
        )
    }

    /// etcd's MemberAdd/Remove/Update/Promote, carried out by the leader
    /// (`raft::membership`); the membership afterwards.
    pub async fn change_members(
        &self,
        change: raft::policy::membership::MemberChange,
    ) -> Result<raft::membership::Members, ReplicaError> {
        self.shared.change_members(change).await
    }

    /// Snapshots sent to (`Send`) or received from (`Receive`) each peer.
    pub fn snapshot_transfers(
        &self,
        direction: raft::transfers::Direction,
    ) -> Vec<(raft::types::NodeId, raft::transfers::Counts)> {
        self.shared.transfers.counts(direction)
    }

    /// How far each follower is behind this member (empty unless it leads).
    pub fn follower_lags(&self) -> Vec<engagement::FollowerLag> {
        self.engagement.lags()
    }

    pub fn status(&self) -> ReplicaStatus {
        status_of(
            &self.raft.metrics().borrow(),
            self.config.election_timeout_ms,
            self.prevote.as_ref().map(|p| p.contact.silent_ms()),
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
        members_of(&self.raft.metrics().borrow())
    }

    /// A receiver of this member's raft status, updated whenever it changes.
    pub fn watch_status(&self) -> tokio::sync::watch::Receiver<ReplicaStatus> {
        let (tx, rx) = tokio::sync::watch::channel(self.status());
        let mut metrics = self.raft.metrics();
        let election_timeout_ms = self.config.election_timeout_ms;
        let contact = self.prevote.as_ref().map(|p| Arc::clone(&p.contact));
        // With pre-vote, a follower loses its leader by silence alone (no metrics change).
        let mut tick = tokio::time::interval(STATUS_TICK);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { break },
                    _ = tick.tick(), if contact.is_some() => {}
                }
                let silent = contact.as_ref().map(|c| c.silent_ms());
                let status = status_of(&metrics.borrow(), election_timeout_ms, silent);
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
        self.commits.made_durable();
        Ok(())
    }
}
