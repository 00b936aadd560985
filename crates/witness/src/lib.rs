//! The witness: the third voter of two data nodes (`../shared/docs/two-node-design.md`). It
//! votes, and persists the id of every entry it acknowledges (fdatasynced before it answers,
//! W1) through the same log store as the data nodes; it applies nothing and holds no key-value
//! data (W2); the data leader sends it payloads only while a data node falls behind (W3, see
//! `raft::engagement`), and it keeps those until every data node holds them, so that after a
//! double failure it can lead briefly, ship them to the returning data node and hand
//! leadership over (W4, `raft::policy::handoff`).
//!
//! Architecture invariant: this crate links neither `mvcc` nor `etcd-api` (a tidy test checks
//! the dependency graph transitively).

// openraft's traits fix the error type (`StorageError`, 224 bytes); helpers return it as is.
#![allow(clippy::result_large_err)]

pub mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, ServerState, SnapshotPolicy};
use raft::log_store::LogStore;
use raft::member::LeaderReads;
use raft::member::{bootstrap_if_new, members_of, publish, status_of};
use raft::network::{self as net, ForwardRequest, PeerService, PreVoter, Wiring};
use raft::policy::handoff::{self, Handoff};
use raft::types::{MemberNode, NodeId};
use raft::{Member, ReplicaStatus};

use crate::state_machine::WitnessStateMachine;
use crate::types::{Raft, WitnessConfig};

/// How often the witness looks at its leadership (hand-off) and its log (purging).
const TICK: Duration = Duration::from_millis(50);
/// How often a caught-up data node is asked again to stand for election.
const HANDOFF_RETRY: Duration = Duration::from_millis(500);
/// Election timeouts without a leader before the witness may stand itself.
const CANDIDACY_PATIENCE_TIMEOUTS: u64 = 2;
/// Entries the data floor must pass the last purge by before the log is purged again.
const PURGE_EVERY_ENTRIES: u64 = 1_000;

/// The witness keeps few entries in memory (it applies nothing and rarely replicates) and
/// small segment files: its log is mostly ids, and payloads only while a data node is behind.
const LOG_LIMITS: raft::log_store::Limits = raft::log_store::Limits {
    cache_entries: 64,
    cache_bytes: 256 << 10,
    segment_bytes: 8 << 20,
};

/// How a witness is set up; the server fills it from etcd's flags.
#[derive(Debug, Clone)]
pub struct WitnessOptions {
    pub data_dir: PathBuf,
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub initial_members: BTreeMap<NodeId, MemberNode>,
    pub self_node: MemberNode,
    pub bootstrap: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub forward_timeout: Duration,
    /// The incarnation of this member's data dir (W5, `raft::incarnation`).
    pub incarnation: u64,
    /// The most entry payload bytes it holds while a data node is behind (W4).
    pub max_payload_bytes: u64,
}

/// A running witness.
pub struct Witness {
    raft: Raft,
    member: Arc<Member<WitnessConfig>>,
    data_floor: Arc<AtomicU64>,
    held: Arc<raft::held::HeldPayloads>,
    prevote: PreVoter,
    options: WitnessOptions,
}

impl Witness {
    pub async fn open(options: WitnessOptions) -> anyhow::Result<Self> {
        let dir = options.data_dir.join("member");
        std::fs::create_dir_all(&dir)?;
        if raft::mutants::on("witness-forgets") {
            // W1 broken: the witness starts with no log, no vote and no snapshot (its identity
            // kept, so its peers take it back).
            let _ = std::fs::remove_dir_all(dir.join("wal"));
            let _ = std::fs::remove_file(dir.join("witness-snapshot"));
        }
        let log =
            LogStore::<WitnessConfig>::open_with(&dir.join("wal"), Arc::default(), LOG_LIMITS)?;
        let log_reader = log.clone();
        let sm = WitnessStateMachine::open(&dir)?;
        let e = options.election_timeout_ms;
        let (min, lease) = raft::policy::timeouts_beside_witness(e, options.heartbeat_interval_ms);
        let raft_config = Config {
            cluster_name: format!("{:x}", options.cluster_id),
            heartbeat_interval: options.heartbeat_interval_ms,
            // As the data nodes' beside a witness: its leader lease (`max`) is how long it
            // refuses a candidate after its leader's last message, which must not hold up a
            // data node's election. It stands only when `raft::policy::candidacy` allows.
            election_timeout_min: min,
            election_timeout_max: lease,
            // Snapshots and purges follow the data floor only (see `purge`): an entry a data
            // node lacks must stay in the log, payload and all.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            install_snapshot_timeout: raft::transfers::SNAPSHOT_CHUNK_TIMEOUT_MS,
            ..Default::default()
        }
        .validate()?;
        // The witness never replicates to a witness: its engagement stays idle.
        let Wiring {
            network,
            channels,
            incarnations,
            transfers,
            leadership,
            peer_flushes,
            ..
        } = Wiring::open(
            &dir,
            options.cluster_id,
            options.member_id,
            options.incarnation,
            true,
        )?;
        let raft = Raft::new(options.member_id, Arc::new(raft_config), network, log, sm).await?;
        // Leadership belongs on a data node: no elections until no leader has been heard of
        // for a while and a pre-vote is won (see below).
        raft.runtime_config().elect(false);
        bootstrap_if_new(
            &raft,
            options.bootstrap,
            &options.initial_members,
            "witness",
        )
        .await?;
        let member = Arc::new(Member {
            raft: raft.clone(),
            member_id: options.member_id,
            cluster_id: options.cluster_id,
            channels: Arc::clone(&channels),
            forward_timeout: options.forward_timeout,
            election_timeout_ms: options.election_timeout_ms,
            incarnations: Arc::clone(&incarnations),
            contact: None,
            transfers,
            leadership,
            peer_flushes,
            leader_reads: LeaderReads::spawn(
                raft.clone(),
                options.forward_timeout,
                options.election_timeout_ms,
                raft::read_confirm::Confirmer::new(
                    options.member_id,
                    options.cluster_id,
                    Arc::clone(&channels),
                    Arc::clone(&incarnations),
                    options.election_timeout_ms,
                ),
            ),
        });
        let data_floor = Arc::new(AtomicU64::new(0));
        let prevote = PreVoter {
            contact: Arc::default(),
            lease_ms: lease,
            election_timeout_ms: e,
            last_log: Arc::new(move || log_reader.last_log_id()),
        };
        tokio::spawn(publish(Arc::clone(&member), options.self_node.clone()));
        tokio::spawn(hand_off(
            Arc::clone(&member),
            Handoff::new(lease, HANDOFF_RETRY.as_millis() as u64),
        ));
        // The witness stands only after two election timeouts without a leader (no data member
        // could win), and then only after a won pre-vote, as the data members do.
        let last_log = Arc::clone(&prevote.last_log);
        tokio::spawn(raft::prevote::stand_after_prevote(
            Arc::clone(&member),
            Arc::clone(&prevote.contact),
            move || last_log(),
            CANDIDACY_PATIENCE_TIMEOUTS * e,
        ));
        tokio::spawn(purge(raft.clone(), Arc::clone(&data_floor)));
        tokio::spawn(raft::membership::finish_changes(
            raft.clone(),
            std::time::Duration::from_millis(e),
        ));
        let held = Arc::new(raft::held::HeldPayloads::new(options.max_payload_bytes));
        Ok(Witness {
            raft,
            member,
            data_floor,
            held,
            prevote,
            options,
        })
    }

    /// The peer-facing gRPC service of the witness.
    pub fn peer_service(&self) -> PeerService<WitnessConfig> {
        let floor = Arc::clone(&self.data_floor);
        PeerService {
            raft: self.raft.clone(),
            cluster_id: self.options.cluster_id,
            on_data_floor: Some(Arc::new(move |f| {
                floor.fetch_max(f, Ordering::Relaxed);
            })),
            witness: true,
            incarnations: Arc::clone(&self.member.incarnations),
            prevote: Some(self.prevote.clone()),
            transfers: Arc::clone(&self.member.transfers),
            flush: None,
            held: Some(Arc::clone(&self.held)),
            member: Arc::clone(&self.member),
        }
    }

    pub fn member_id(&self) -> NodeId {
        self.options.member_id
    }

    pub fn status(&self) -> ReplicaStatus {
        status_of(
            &self.raft.metrics().borrow(),
            self.options.election_timeout_ms,
            Some(self.prevote.contact.silent_ms()),
        )
    }

    /// The members, with whether each is a learner.
    pub fn members(&self) -> Vec<(NodeId, MemberNode, bool)> {
        members_of(&self.raft.metrics().borrow())
    }

    /// Entries in the witness's log (what it keeps on disk, ids mostly).
    pub fn log_entries(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let purged = m.purged.map_or(0, |p| p.index);
        last.saturating_sub(purged)
    }

    /// Bytes of entry payloads held for a data node that is behind, and the cap (W4).
    pub fn held_payloads(&self) -> (u64, u64) {
        (self.held.bytes(), self.held.cap())
    }

    /// The highest index every data node is known to hold.
    pub fn data_floor(&self) -> u64 {
        self.data_floor.load(Ordering::Relaxed)
    }

    pub async fn shutdown(&self) -> anyhow::Result<()> {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        Ok(())
    }
}

/// While the witness leads, asks a caught-up data node to stand for election (W4).
async fn hand_off(member: Arc<Member<WitnessConfig>>, mut policy: Handoff) {
    let started = tokio::time::Instant::now();
    let metrics = member.raft.metrics();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if metrics.has_changed().is_err() {
            return;
        }
        let (o, nodes, term) = {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let replication = m.replication.as_ref();
            let data_matched = membership
                .voter_ids()
                .filter(|id| membership.get_node(id).is_some_and(|n| !n.witness))
                .map(|id| {
                    let matched = replication
                        .and_then(|r| r.get(&id))
                        .and_then(|l| l.map(|l| l.index))
                        .unwrap_or(0);
                    (id, matched)
                })
                .collect();
            let o = handoff::Observation {
                now_ms: started.elapsed().as_millis() as u64,
                leading: m.state == ServerState::Leader,
                last_index: m.last_log_index.unwrap_or(0),
                data_matched,
            };
            (
                o,
                membership
                    .nodes()
                    .map(|(i, n)| (*i, n.clone()))
                    .collect::<BTreeMap<_, _>>(),
                m.current_term,
            )
        };
        let Some(target) = policy.observe(&o) else {
            continue;
        };
        let Some(channel) = nodes.get(&target).and_then(|n| member.channels.to(n)) else {
            continue;
        };
        tracing::info!(to = %format!("{target:x}"), "handing leadership to a caught-up data node");
        let asked = net::forward::<()>(
            channel,
            member.cluster_id,
            &member.incarnations,
            &ForwardRequest::CampaignFor { term },
            HANDOFF_RETRY,
        )
        .await;
        if let Err(e) = asked {
            tracing::debug!(error = ?e, "asking a data node to stand for election");
        }
    }
}

/// Purges the witness's log up to the data floor: what every data node holds and is committed
/// is no longer needed here (its ids included: the snapshot's last log id stands for them).
async fn purge(raft: Raft, floor: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(TICK * 20);
    loop {
        tick.tick().await;
        let f = floor.load(Ordering::Relaxed);
        let (purged, snapshot, applied) = {
            let m = raft.metrics().borrow().clone();
            let index = |l: Option<raft::types::LogId>| l.map_or(0, |l| l.index);
            (index(m.purged), index(m.snapshot), index(m.last_applied))
        };
        if f < purged + PURGE_EVERY_ENTRIES || applied < f {
            continue;
        }
        // openraft purges only what a snapshot covers: first a snapshot (of metadata, at the
        // applied index, at or above the floor), then, on a later tick, the purge up to the
        // floor, so entries above it keep their payloads.
        let step = if snapshot < f {
            raft.trigger().snapshot().await
        } else {
            raft.trigger().purge_log(f).await
        };
        if step.is_err() {
            return;
        }
    }
}
