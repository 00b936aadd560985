//! Leases. Grants and revocations are log entries; expiry is decided by the leader alone, on the
//! monotonic clock, and carried out through the log (a `LeaseRevoke` entry deletes every attached
//! key in one revision). Expiry times live only in the leader's memory: a new leader (and a
//! restarted one) starts every lease's full TTL again, so a lease may expire late but never early;
//! and an expiry counts only if it reaches the log in the term of the leader that timed it
//! (`Command::LeaseExpire`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use etcd_api::tandempb::leader_lease_client::LeaderLeaseClient;
use etcd_api::tandempb::leader_lease_server::LeaderLease;
use futures::Stream;
use mvcc::auth::{Caller, PermType};
use mvcc::{Command, CommandResponse};
use prost::Message;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::errors::unexpected;
use crate::node::Node;

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// The most leases revoked per check (etcd revokes at most 1,000 per second).
const REVOKES_PER_CHECK_MAX: usize = 500;
/// Responses buffered on one keep-alive stream.
const KEEPALIVE_BUFFER: usize = 16;

/// The leader's view of when each lease expires.
pub struct Lessor {
    timed: Mutex<Timed>,
    /// The shortest TTL granted, as etcd derives it from the election timeout.
    pub min_ttl: i64,
}

/// Expiry times and the term of the leadership that set them.
#[derive(Default)]
struct Timed {
    term: u64,
    expiry: HashMap<i64, Instant>,
}

impl Lessor {
    pub fn new(config: &Config) -> Self {
        // etcd: ceil(1.5 × election timeout), in seconds.
        let min_ttl_ms = 3 * config.election_timeout_ms / 2;
        Self {
            timed: Mutex::new(Timed::default()),
            min_ttl: min_ttl_ms.div_ceil(1000) as i64,
        }
    }

    /// The expiry times as the leader of `term` keeps them: those set in another term are
    /// forgotten, so that each lease gets its full TTL again when leadership moved (a follower
    /// keeps none: it forgets with term 0).
    fn timed(&self, term: u64) -> std::sync::MutexGuard<'_, Timed> {
        let mut t = self.timed.lock().unwrap_or_else(|e| e.into_inner());
        if t.term != term {
            t.term = term;
            t.expiry.clear();
        }
        t
    }

    /// Forgets every expiry time (this member does not lead).
    fn forget(&self) {
        drop(self.timed(0));
    }

    /// Starts a lease's TTL over, as the leader of `term` (grant or keep-alive).
    pub fn refresh(&self, id: i64, ttl: i64, term: u64) {
        self.timed(term).expiry.insert(id, ends_after(ttl));
    }

    /// A keep-alive on the leader of `term`: starts the lease's TTL over unless it has already
    /// run out (its revocation is under way, or will be at the next check); whether it did. An
    /// expired lease is never renewed, as in etcd: the keep-alive would promise a TTL the
    /// revocation breaks.
    fn renew(&self, id: i64, ttl: i64, term: u64) -> bool {
        let mut timed = self.timed(term);
        if timed
            .expiry
            .get(&id)
            .is_some_and(|at| *at <= Instant::now())
        {
            return false;
        }
        timed.expiry.insert(id, ends_after(ttl));
        true
    }

    /// Seconds left (rounded down, as etcd reports them) as the leader of `term` times the
    /// lease; one it has not timed yet starts its full TTL now.
    pub fn remaining(&self, id: i64, ttl: i64, term: u64) -> i64 {
        let now = Instant::now();
        let mut timed = self.timed(term);
        let at = *timed
            .expiry
            .entry(id)
            .or_insert_with(|| now + Duration::from_secs(ttl.max(0) as u64));
        at.saturating_duration_since(now).as_secs() as i64
    }

    /// Leases whose TTL has run out as the leader of `term` timed them, given every lease the
    /// keyspace holds in id order (as `Store::leases` returns them).
    fn expired(&self, leases: &[(i64, i64)], term: u64) -> Vec<i64> {
        debug_assert!(
            leases.windows(2).all(|w| w[0].0 < w[1].0),
            "leases in id order"
        );
        let now = Instant::now();
        let mut timed = self.timed(term);
        let exp = &mut timed.expiry;
        exp.retain(|id, _| leases.binary_search_by_key(id, |(l, _)| *l).is_ok());
        let mut out = Vec::new();
        for (id, ttl) in leases {
            let at = *exp
                .entry(*id)
                .or_insert_with(|| now + Duration::from_secs((*ttl).max(0) as u64));
            if at <= now && out.len() < REVOKES_PER_CHECK_MAX {
                out.push(*id);
            }
        }
        out
    }
}

/// When a TTL of `ttl` seconds started now runs out.
fn ends_after(ttl: i64) -> Instant {
    let ttl = if crate::mutants::on("lease-early") {
        ttl / 2
    } else {
        ttl
    };
    Instant::now() + Duration::from_secs(ttl.max(0) as u64)
}

/// The leader's expiry loop: revokes expired leases through the log.
pub async fn expiry_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let status = node.status();
        if !status.is_leader {
            node.lessor.forget();
            continue;
        }
        let term = status.term;
        for id in node.lessor.expired(&node.store.leases(), term) {
            tracing::debug!(lease = id, "lease expired; revoking");
            // Carried out only if it reaches the log in this term (`Command::LeaseExpire`):
            // once deposed, this member would forward it to a leader that may have renewed
            // the lease since.
            if let Err(e) = node.propose(Command::LeaseExpire { id, term }, 0).await {
                if node.store.lease(id).is_some() {
                    tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; retrying");
                }
            }
        }
    }
}

pub struct LeaseService {
    pub node: Arc<Node>,
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        if r.ttl > mvcc::MAX_LEASE_TTL_SECONDS {
            return Err(rpctypes::LEASE_TTL_TOO_LARGE.status());
        }
        let ttl = r.ttl.max(self.node.lessor.min_ttl);
        let mut id = r.id;
        while id == 0 {
            id = rand::random::<i64>() & i64::MAX;
        }
        match self
            .node
            .propose_as(caller, Command::LeaseGrant { id, ttl }, r.encoded_len())
            .await?
        {
            CommandResponse::LeaseGrant { id, ttl, revision } => {
                // A follower leaves the timing to the leader, which starts it when it first
                // sees the lease.
                let status = self.node.status();
                if status.is_leader {
                    self.node.lessor.refresh(id, ttl, status.term);
                }
                Ok(Response::new(pb::LeaseGrantResponse {
                    header: self.node.header(revision),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        match self
            .node
            .propose_as(caller, Command::LeaseRevoke { id: r.id }, 0)
            .await?
        {
            CommandResponse::LeaseRevoke { revision } => {
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: self.node.header(revision),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let caller = self.node.caller(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_BUFFER);
        let node = Arc::clone(&self.node);
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let allowed = authorize_lease(&node, &caller, req.id, PermType::Write);
                let reply = match allowed {
                    Ok(()) => keep_alive(&node, req.id).await,
                    Err(e) => Err(e),
                };
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        let node = &self.node;
        authorize_lease(node, &caller, r.id, PermType::Read)?;
        let mut resp = match leader_route(node).await? {
            None => time_to_live_here(node, &r).await?,
            Some(leader) => LeaderLeaseClient::new(leader)
                .time_to_live(to_leader(node, r))
                .await
                .map_err(from_leader)?
                .into_inner(),
        };
        resp.header = node.current_header();
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let caller = self.node.caller(&request)?;
        self.node.read_index().await?;
        self.node.authorize(|a| a.check_authenticated(&caller))?;
        let leases = self
            .node
            .store
            .leases()
            .into_iter()
            .map(|(id, _)| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.node.current_header(),
            leases,
        }))
    }
}

/// Whether `caller` may renew (`Write`) or read (`Read`) lease `id`, by the keys this member
/// knows it holds (etcd's `checkLeaseRenew`, `checkLeaseTimeToLive`).
fn authorize_lease(node: &Node, caller: &Caller, id: i64, wanted: PermType) -> Result<(), Status> {
    node.authorize(|a| {
        if !a.enabled {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = node
            .store
            .lease(id)
            .map(|l| l.keys.into_iter().collect())
            .unwrap_or_default();
        a.check_lease(caller, &keys, wanted)
    })
}

/// Renews a lease: on the leader, which alone times leases, or through it. An unknown lease
/// answers TTL 0, as etcd does. The header is this member's, as etcd fills it.
async fn keep_alive(node: &Node, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let ttl = match leader_route(node).await? {
        None => renew_here(node, id).await?,
        Some(leader) => {
            let req = pb::LeaseKeepAliveRequest { id };
            LeaderLeaseClient::new(leader)
                .keep_alive(to_leader(node, req))
                .await
                .map_err(from_leader)?
                .into_inner()
                .ttl
        }
    };
    Ok(pb::LeaseKeepAliveResponse {
        header: node.current_header(),
        id,
        ttl,
    })
}

/// Renews a lease on the leader: its TTL, or 0 if it does not exist. A lease that has run out
/// is not renewed: the answer waits for its revocation (0), as etcd's does.
async fn renew_here(node: &Node, id: i64) -> Result<i64, Status> {
    node.read_index().await?;
    let Some(l) = node.store.lease(id) else {
        return Ok(0);
    };
    if node.lessor.renew(id, l.ttl, node.term()) {
        return Ok(l.ttl);
    }
    let mut applied = node.status_changes();
    let revoked = tokio::time::timeout(
        crate::node::request_timeout(node.config.election_timeout_ms),
        applied.wait_for(|_| node.store.lease(id).is_none()),
    )
    .await;
    match revoked {
        Ok(Ok(_)) => Ok(0),
        _ => Err(rpctypes::TIMEOUT.status()),
    }
}

/// A lease's time to live as the leader times it (without header).
async fn time_to_live_here(
    node: &Node,
    r: &pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, Status> {
    node.read_index().await?;
    let Some(l) = node.store.lease(r.id) else {
        return Ok(pb::LeaseTimeToLiveResponse {
            id: r.id,
            ttl: -1,
            ..Default::default()
        });
    };
    Ok(pb::LeaseTimeToLiveResponse {
        header: None,
        id: r.id,
        ttl: node.lessor.remaining(r.id, l.ttl, node.term()),
        granted_ttl: l.ttl,
        keys: if r.keys {
            l.keys.into_iter().map(Into::into).collect()
        } else {
            Vec::new()
        },
    })
}

/// gRPC metadata carrying the cluster id on lease requests between members.
const CLUSTER_ID_METADATA: &str = "tandem-cluster-id";

/// `None` when this member leads, else the channel to the leader.
async fn leader_route(node: &Node) -> Result<Option<tonic::transport::Channel>, Status> {
    node.replica
        .leader_route()
        .await
        .map_err(crate::errors::from_replica)
}

/// A request to the leader, tagged with this cluster's id and bounded by the request timeout.
fn to_leader<T>(node: &Node, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let id = format!("{:x}", node.config.cluster_id);
    if let Ok(v) = id.parse() {
        req.metadata_mut().insert(CLUSTER_ID_METADATA, v);
    }
    req.set_timeout(crate::node::request_timeout(
        node.config.election_timeout_ms,
    ));
    req
}

/// The leader's refusals (etcd errors) pass through; a failure to reach it is a timeout, as
/// etcd reports a renewal it could not forward.
fn from_leader(s: Status) -> Status {
    if s.message().starts_with("etcdserver: ") {
        s
    } else {
        tracing::debug!(status = %s, "forwarding a lease request to the leader failed");
        rpctypes::TIMEOUT.status()
    }
}

/// Answers what members that do not lead forward about leases.
pub struct LeaderLeaseService {
    pub node: Arc<Node>,
}

impl LeaderLeaseService {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let expected = format!("{:x}", self.node.config.cluster_id);
        let got = req.metadata().get(CLUSTER_ID_METADATA);
        if got.is_none_or(|v| v.as_bytes() != expected.as_bytes()) {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this member is in {expected}"
            )));
        }
        if !self.node.status().is_leader {
            return Err(rpctypes::NOT_LEADER.status());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl LeaderLease for LeaderLeaseService {
    async fn keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        self.check(&request)?;
        let id = request.get_ref().id;
        let ttl = renew_here(&self.node, id).await?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            header: None,
            id,
            ttl,
        }))
    }

    async fn time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            time_to_live_here(&self.node, request.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lessor() -> Lessor {
        Lessor {
            timed: Mutex::new(Timed::default()),
            min_ttl: 2,
        }
    }

    fn expiry(l: &Lessor, id: i64) -> Instant {
        l.timed(1).expiry[&id]
    }

    #[test]
    fn a_lease_that_ran_out_is_not_renewed() {
        let l = lessor();
        let now = Instant::now();
        l.timed(1).expiry.insert(1, now - Duration::from_millis(1));
        l.timed(1).expiry.insert(2, now + Duration::from_secs(3));
        assert!(!l.renew(1, 10, 1), "expired: its revocation is under way");
        assert!(
            expiry(&l, 1) < now,
            "the expired lease keeps its expiry time (the revocation goes ahead)"
        );
        assert!(l.renew(2, 10, 1));
        assert!(expiry(&l, 2) >= now + Duration::from_secs(10));
        // Not timed yet by this leader: renewed, its full TTL from now.
        assert!(l.renew(3, 10, 1));
        assert!(expiry(&l, 3) >= now + Duration::from_secs(10));
    }

    #[test]
    fn another_term_times_every_lease_afresh() {
        let l = lessor();
        let now = Instant::now();
        l.timed(1).expiry.insert(1, now - Duration::from_millis(1));
        // Leadership moved (or this member was a follower in between): the lease that ran out
        // under the last leadership is renewed with its full TTL, and is not expired.
        assert!(l.renew(1, 10, 2), "timed afresh in term 2");
        assert!(l.timed(2).expiry[&1] >= now + Duration::from_secs(10));
        l.timed(2).expiry.insert(2, now - Duration::from_millis(1));
        l.forget();
        assert_eq!(l.expired(&[(1, 10), (2, 10)], 2), Vec::<i64>::new());
    }
}
