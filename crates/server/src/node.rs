//! The running member as the gRPC services see it: the replica, the keyspace, the watch hub and
//! the lessor, plus the checks every request shares (leader, quota, request size, timeouts).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use mvcc::auth::Caller;
use mvcc::{Command, CommandResponse, Store};
use replication::{Replica, ReplicaStatus};
use tokio::sync::watch;
use tonic::Status;

use crate::config::Config;
use crate::conn::ConnInfo;
use crate::convert::HeaderFactory;
use crate::errors;
use crate::lease::Lessor;
use crate::watch::WatchHub;

/// The longest a client request waits for replication before `request timed out` (etcd: 5 s
/// plus two election timeouts).
pub fn request_timeout(election_timeout_ms: u64) -> Duration {
    Duration::from_secs(5) + Duration::from_millis(2 * election_timeout_ms)
}

/// gRPC metadata a client sets to require a leader (etcd's `hasleader`).
pub const HAS_LEADER_METADATA: &str = "hasleader";

pub struct Node {
    pub config: Config,
    pub replica: Replica,
    pub store: Arc<Store>,
    pub hub: Arc<WatchHub>,
    pub lessor: Lessor,
    /// This member's raft status, kept current by a metrics task.
    status: watch::Receiver<ReplicaStatus>,
    quota: QuotaMeter,
    /// Whether the data directory's filesystem is below its reserve (`disk_guard`).
    pub disk_guard: crate::disk_guard::DiskGuard,
    /// With `--fence-command`: whether this member may fence its peer now (`raft::fence`).
    pub fence_armed: Arc<std::sync::atomic::AtomicBool>,
    /// Authentication tokens (`--auth-token`, `--auth-token-ttl`).
    pub tokens: crate::authn::Tokens,
    pub metrics: ServerMetrics,
    /// Linearizable ranges being served now, from their arrival to their answer: how loaded
    /// the read path is, which paces the ReadIndex rounds (`raft::policy::read_rounds`).
    reads_in_flight: AtomicUsize,
}

/// One linearizable range in [`Node::reads_in_flight`], from [`Node::reading`] until dropped.
pub struct Reading<'a>(&'a AtomicUsize);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// etcd's server counters that are counted as things happen (the rest of `/metrics` is read
/// from state when scraped).
pub struct ServerMetrics {
    /// `grpc_server_*` (`crate::grpc_metrics`).
    pub grpc: Arc<crate::grpc_metrics::GrpcMetrics>,
    /// `etcd_server_leader_changes_seen_total`: each time this member saw a new leader.
    pub leader_changes: prometheus_client::metrics::counter::Counter,
    /// `etcd_server_proposals_failed_total`: proposals that did not commit (no leader, timed
    /// out, leader changed).
    pub proposals_failed: prometheus_client::metrics::counter::Counter,
    /// `etcd_server_proposals_pending`: proposals under way.
    pub proposals_pending: prometheus_client::metrics::gauge::Gauge,
}

/// One proposal under way in `etcd_server_proposals_pending`.
struct Pending<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Pending<'a> {
    fn new(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Pending(g)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts every change to a new leader this member sees, as etcd's raft loop does.
fn count_leader_changes(
    mut status: watch::Receiver<ReplicaStatus>,
    changes: prometheus_client::metrics::counter::Counter,
) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let leader = status.borrow_and_update().leader;
            if leader.is_some() && leader != last {
                changes.inc();
            }
            last = leader;
            if status.changed().await.is_err() {
                return;
            }
        }
    });
}

/// How many bytes may be written before the file or in-use size is measured again.
const QUOTA_REMEASURE_BYTES: i64 = 1 << 20;

/// Decides whether a write would pass the backend quota. The quota applies to the bytes the
/// database uses, not to its file: redb grows its file by doubling, so the file can be twice
/// the data. Far from the quota, the file's size read earlier plus the bytes written since (an
/// upper bound of the use) decides, and the size is read again once per MiB written; near the
/// quota the size is read on every write, and once the file passes it the use itself is
/// measured (it walks the tree), again once per MiB written.
#[derive(Default)]
struct QuotaMeter {
    inner: std::sync::Mutex<Meter>,
}

#[derive(Default)]
struct Meter {
    /// The file size last read and the bytes written since (None: never read).
    file: Option<(i64, i64)>,
    /// The use last measured and the bytes written since.
    in_use: Option<(i64, i64)>,
}

impl QuotaMeter {
    /// The size in use if writing `cost` more bytes would pass `quota`.
    fn over(&self, store: &Store, cost: i64, quota: i64) -> Option<i64> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let file_now = || std::fs::metadata(store.path()).map_or(0, |m| m.len() as i64);
        let (file, since) = match m.file {
            // Far from the quota: the size read earlier plus what was written since will do.
            Some((file, since))
                if since < QUOTA_REMEASURE_BYTES && file + since + cost <= quota =>
            {
                (file, since)
            }
            // Near it (or the file shrank by defragmentation): read the size again.
            _ => (file_now(), 0),
        };
        m.file = Some((file, since + cost));
        if file + since + cost <= quota {
            m.in_use = None;
            return None;
        }
        let (in_use, since) = match m.in_use {
            Some((in_use, since)) if since < QUOTA_REMEASURE_BYTES => (in_use, since),
            _ => (store.status().map(|s| s.db_size_in_use).unwrap_or(file), 0),
        };
        m.in_use = Some((in_use, since + cost));
        (in_use + since + cost > quota).then_some(in_use + since)
    }
}

impl Node {
    pub fn new(config: Config, replica: Replica, hub: Arc<WatchHub>) -> Arc<Self> {
        let store = Arc::clone(replica.store());
        let status = replica.watch_status();
        let lessor = Lessor::new(&config);
        let tokens = crate::authn::Tokens::new(
            crate::authn::TokenOptions::parse(&config.auth_token)
                .expect("--auth-token was checked when the flags were read"),
            Duration::from_secs(config.auth_token_ttl_secs),
            config.tls.client.client_cert_auth,
        );
        let metrics = ServerMetrics {
            grpc: Arc::new(crate::grpc_metrics::GrpcMetrics::new(
                config.extensive_metrics,
            )),
            leader_changes: Default::default(),
            proposals_failed: Default::default(),
            proposals_pending: Default::default(),
        };
        count_leader_changes(status.clone(), metrics.leader_changes.clone());
        Arc::new(Self {
            metrics,
            tokens,
            config,
            replica,
            store,
            hub,
            lessor,
            status,
            quota: QuotaMeter::default(),
            disk_guard: Default::default(),
            fence_armed: Default::default(),
            reads_in_flight: AtomicUsize::new(0),
        })
    }

    /// Counts a linearizable range as in flight until the guard is dropped (taken first thing
    /// on arrival, so that the count includes the reads waiting for the CPU).
    pub fn reading(&self) -> Reading<'_> {
        self.reads_in_flight.fetch_add(1, Ordering::Relaxed);
        Reading(&self.reads_in_flight)
    }

    pub fn status(&self) -> ReplicaStatus {
        *self.status.borrow()
    }

    /// A receiver that changes with this member's raft status.
    pub fn status_changes(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    pub fn term(&self) -> u64 {
        self.status.borrow().term
    }

    pub fn leader(&self) -> Option<u64> {
        self.status.borrow().leader
    }

    pub fn headers(&self) -> HeaderFactory {
        HeaderFactory {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member_id,
            raft_term: self.term(),
        }
    }

    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.headers().header(revision)
    }

    /// A header with the store's current revision.
    pub fn current_header(&self) -> Option<pb::ResponseHeader> {
        self.header(self.store.current_revision())
    }

    /// The alarms raised in the cluster, plus NOSPACE for this member while its disk is nearly
    /// full or a write met a full disk (a local alarm: a full disk could not replicate it).
    pub fn alarms(&self) -> Vec<mvcc::Alarm> {
        let mut alarms = self.store.alarms();
        let local = mvcc::Alarm {
            member_id: self.config.member_id,
            alarm: mvcc::AlarmType::NoSpace,
        };
        let full = self.disk_guard.is_low() || self.replica.disk_full();
        if full && !alarms.contains(&local) {
            alarms.push(local);
        }
        alarms
    }

    /// Refuses a request that asked for a leader when there is none.
    pub fn check_has_leader<T>(&self, req: &tonic::Request<T>) -> Result<(), Status> {
        let wants = req
            .metadata()
            .get(HAS_LEADER_METADATA)
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants && self.leader().is_none() {
            return Err(rpctypes::NO_LEADER.status());
        }
        Ok(())
    }

    /// Refuses a mutation bigger than `--max-request-bytes`.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len > self.config.max_request_bytes as usize {
            return Err(rpctypes::REQUEST_TOO_LARGE.status());
        }
        Ok(())
    }

    /// etcd's backend quota: while NOSPACE is raised (by the quota, or because this member's
    /// disk is full) quota-checked requests are refused; when a request that grows the store
    /// would pass the quota, it is refused and the alarm is raised once.
    async fn check_quota(&self, cmd: &Command, cost: usize) -> Result<(), Status> {
        if !cmd.quota_checked() {
            return Ok(());
        }
        let raised = self
            .alarms()
            .iter()
            .any(|a| a.alarm == mvcc::AlarmType::NoSpace);
        if raised {
            return Err(rpctypes::NO_SPACE.status());
        }
        if !cmd.may_grow() {
            return Ok(());
        }
        let quota = self.config.quota_backend_bytes;
        if let Some(in_use) = self.quota.over(&self.store, cost as i64, quota) {
            tracing::warn!(
                db_size_in_use = in_use,
                quota,
                "backend quota exceeded; raising NOSPACE"
            );
            let alarm = mvcc::Alarm {
                member_id: self.config.member_id,
                alarm: mvcc::AlarmType::NoSpace,
            };
            self.propose_unchecked(Command::AlarmActivate(alarm))
                .await?;
            return Err(rpctypes::NO_SPACE.status());
        }
        Ok(())
    }

    /// Who sent `req` (etcd's `AuthInfoFromCtx`); a bad token is `invalid auth token`.
    pub fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        if !self.store.auth_enabled() {
            return Ok(Caller::default());
        }
        let auth = self.store.auth();
        self.tokens
            .caller(&auth, req.metadata(), req.extensions().get::<ConnInfo>())
            .map_err(|crate::authn::AuthnError::InvalidToken| rpctypes::INVALID_AUTH_TOKEN.status())
    }

    /// Checks `caller` against the auth state now (for what is served without the log).
    pub fn authorize(
        &self,
        check: impl FnOnce(&mvcc::auth::AuthState) -> mvcc::Result<()>,
    ) -> Result<(), Status> {
        // Every check passes with authentication disabled.
        if !self.store.auth_enabled() {
            return Ok(());
        }
        check(&self.store.auth()).map_err(errors::from_mvcc)
    }

    /// etcd's `IsAdminPermitted` on a request's sender: with authentication enabled, only a
    /// user with the root role.
    pub fn require_admin<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(req)?;
        self.authorize(|a| a.check_admin(&caller))?;
        Ok(caller)
    }

    /// etcd's `requireAuthInfo`: with authentication enabled, a request must name a user.
    pub fn require_user<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(req)?;
        self.authorize(|a| a.check_authenticated(&caller))?;
        Ok(caller)
    }

    /// Fails a read served under `caller`'s credentials if the auth state changed while it was
    /// served (etcd's `doSerialize`): a permission revoked meanwhile must not let it through.
    pub fn recheck(&self, caller: &Caller) -> Result<(), Status> {
        if caller.auth_revision != 0 && caller.auth_revision != self.store.auth().revision {
            return Err(rpctypes::AUTH_OLD_REVISION.status());
        }
        Ok(())
    }

    /// Replicates a client's mutation, checked at apply time against the auth state of its
    /// entry (`Command::As`), and returns what applying it returned.
    pub async fn propose_as(
        &self,
        caller: Caller,
        cmd: Command,
        cost: usize,
    ) -> Result<CommandResponse, Status> {
        self.propose(Command::As(caller, Box::new(cmd)), cost).await
    }

    /// Replicates a mutation and returns what applying it returned, as a gRPC result.
    pub async fn propose(&self, cmd: Command, cost: usize) -> Result<CommandResponse, Status> {
        self.check_quota(&cmd, cost).await?;
        self.propose_unchecked(cmd).await
    }

    async fn propose_unchecked(&self, cmd: Command) -> Result<CommandResponse, Status> {
        let timeout = request_timeout(self.config.election_timeout_ms);
        // Counted down however the request ends (a client that goes away cancels it).
        let _pending = Pending::new(&self.metrics.proposals_pending);
        let proposed = tokio::time::timeout(timeout, self.replica.propose(cmd)).await;
        if matches!(proposed, Err(_) | Ok(Err(_))) {
            self.metrics.proposals_failed.inc();
        }
        match proposed {
            Err(_) => Err(rpctypes::TIMEOUT.status()),
            Ok(Err(e)) => Err(errors::from_replica(e)),
            Ok(Ok(Err(e))) => Err(errors::from_mvcc(e)),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }

    /// Waits until a linearizable read may be served from the local keyspace.
    pub async fn read_index(&self) -> Result<(), Status> {
        if crate::mutants::on("stale-read")
            || (crate::mutants::on("deposed-leader-read") && self.status().is_leader)
        {
            return Ok(());
        }
        let timeout = request_timeout(self.config.election_timeout_ms);
        match tokio::time::timeout(
            timeout,
            self.replica
                .read_barrier(self.reads_in_flight.load(Ordering::Relaxed).max(1)),
        )
        .await
        {
            Err(_) => Err(rpctypes::TIMEOUT.status()),
            Ok(r) => r.map_err(errors::from_replica),
        }
    }
}
