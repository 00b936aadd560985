//! etcd's `v3lock` and `v3election` services, built as etcd builds them: on the recipes of its
//! client concurrency package (`Mutex`, `Election`), run inside the member. A lock or a
//! candidacy is a key `<name>/<lease in hex>` attached to the caller's lease; the oldest key
//! (lowest create revision) under the name holds the lock or leads. Writes go through the log
//! as the caller's (`Command::As`, so RBAC applies as it does to the KV service), reads follow a
//! ReadIndex round, and waiting for older keys to go is waiting for applied revisions.

use std::pin::Pin;
use std::sync::Arc;

use etcd_api::v3electionpb as epb;
use etcd_api::v3lockpb as lpb;
use futures::Stream;
use mvcc::auth::{Caller, PermType};
use mvcc::{
    Command, CommandResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventType,
    KeyRange, KeyValue, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::kv_to_pb;
use crate::errors::unexpected;
use crate::node::Node;

/// etcd's errors of these recipes (not in its gRPC table: clients see Unknown with the text).
const SESSION_EXPIRED: &str = "session expired";
const ELECTION_NOT_LEADER: &str = "election: not leader";
const ELECTION_NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// The TTL of a lease the services grant when a request names none (etcd's session default).
const SESSION_TTL_SECONDS: i64 = 60;
/// How many responses an Observe stream buffers for a slow client.
const OBSERVE_BUFFER: usize = 16;

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The recipes' operations on behalf of one caller.
struct Recipes<'a> {
    node: &'a Node,
    caller: Caller,
}

fn create_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create(rev),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

fn get(key: &[u8]) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

/// The oldest (or, descending, newest) key under `prefix`, created at or below `max_create`.
fn by_create(prefix: &[u8], order: SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order,
        sort_target: SortTarget::Create,
        max_create_revision: max_create,
        ..Default::default()
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

fn range_of(r: &ResponseOp) -> &[KeyValue] {
    match r {
        ResponseOp::Range(r) => &r.kvs,
        _ => &[],
    }
}

impl<'a> Recipes<'a> {
    /// The recipes on behalf of whoever sent `request`.
    fn of<T>(node: &'a Node, request: &Request<T>) -> Result<Self, Status> {
        Ok(Recipes {
            node,
            caller: node.caller(request)?,
        })
    }

    async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        match self
            .node
            .propose_as(self.caller.clone(), Command::Txn(t), 0)
            .await?
        {
            CommandResponse::Txn(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// A linearizable read, checked against the caller's permissions.
    async fn get(&self, r: &RangeRequest) -> Result<RangeResponse, Status> {
        self.node.read_index().await?;
        self.node
            .authorize(|a| a.check_op(&self.caller, &r.key, &r.range_end, PermType::Read))?;
        self.node.store.range(r).map_err(crate::errors::from_mvcc)
    }

    async fn delete(&self, key: &[u8]) -> Result<i64, Status> {
        let d = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        match self
            .node
            .propose_as(self.caller.clone(), Command::DeleteRange(d), 0)
            .await?
        {
            CommandResponse::DeleteRange(d) => Ok(d.revision),
            other => Err(unexpected(other)),
        }
    }

    /// The caller's lease, or a new one of etcd's session TTL when it named none.
    async fn lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let mut id = 0;
        while id == 0 {
            id = rand::random::<i64>() & i64::MAX;
        }
        let grant = Command::LeaseGrant {
            id,
            ttl: SESSION_TTL_SECONDS,
        };
        match self.node.propose_as(self.caller.clone(), grant, 0).await? {
            CommandResponse::LeaseGrant { id, ttl, .. } => {
                let status = self.node.status();
                if status.is_leader {
                    self.node.lessor.refresh(id, ttl, status.term);
                }
                Ok(id)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The caller's key under `name` (`<name>/<lease in hex>`, etcd's mutex and election
    /// keys): the prefix, the key and the lease (granted if the request named none).
    async fn own_key(&self, name: &[u8], lease: i64) -> Result<(Vec<u8>, Vec<u8>, i64), Status> {
        let lease = self.lease(lease).await?;
        let prefix = name_prefix(name);
        let key = [prefix.as_slice(), format!("{lease:x}").as_bytes()].concat();
        Ok((prefix, key, lease))
    }

    /// etcd's `waitDeletes`: until no key under `prefix` created at or below `max_create`
    /// remains; the revision of the read that found none.
    async fn wait_deletes(&self, prefix: &[u8], max_create: i64) -> Result<i64, Status> {
        let mut applied = self.node.hub.subscribe();
        loop {
            let r = self
                .get(&by_create(prefix, SortOrder::Descend, max_create))
                .await?;
            if r.kvs.is_empty() {
                return Ok(r.revision);
            }
            // Wait for the next change, then look again.
            applied
                .wait_for(|rev| *rev > r.revision)
                .await
                .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        }
    }
}

/// Deletes a key when the request that put it is abandoned (etcd's `Mutex.Lock` unlocks when its
/// wait fails, `Election.Campaign` resigns when its context ends).
struct Abandoned {
    node: Arc<Node>,
    caller: Caller,
    key: Option<Vec<u8>>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let (node, caller) = (Arc::clone(&self.node), self.caller.clone());
        tokio::spawn(async move {
            let r = Recipes {
                node: &node,
                caller,
            };
            if let Err(e) = r.delete(&key).await {
                tracing::debug!(error = %e, "removing an abandoned lock or candidacy key");
            }
        });
    }
}

pub struct LockService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let req = request.into_inner();
        let (prefix, key, lease) = r.own_key(&req.name, req.lease).await?;
        let owner = RequestOp::Range(by_create(&prefix, SortOrder::Ascend, 0));
        let t = r
            .txn(TxnRequest {
                compare: vec![create_is(&key, 0)],
                success: vec![put(&key, b"", lease), owner.clone()],
                failure: vec![get(&key), owner],
            })
            .await?;
        let mut guard = Abandoned {
            node: Arc::clone(&self.node),
            caller: r.caller.clone(),
            key: Some(key.clone()),
        };
        let my_rev = if t.succeeded {
            t.revision
        } else {
            range_of(&t.responses[0])
                .first()
                .map_or(t.revision, |kv| kv.create_revision)
        };
        let owner = range_of(&t.responses[1]);
        let revision = if owner.is_empty() || owner[0].create_revision == my_rev {
            t.revision
        } else {
            let revision = r.wait_deletes(&prefix, my_rev - 1).await?;
            let mine = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            // The lease may have run out while waiting (etcd: the session expired).
            if r.get(&mine).await?.kvs.is_empty() {
                guard.key = None;
                return Err(Status::unknown(SESSION_EXPIRED));
            }
            revision
        };
        guard.key = None;
        Ok(Response::new(lpb::LockResponse {
            header: self.node.header(revision),
            key: key.into(),
        }))
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let revision = r.delete(&request.into_inner().key).await?;
        Ok(Response::new(lpb::UnlockResponse {
            header: self.node.header(revision),
        }))
    }
}

pub struct ElectionService {
    pub node: Arc<Node>,
}

/// The prefix of a lock's or an election's keys.
fn name_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

impl ElectionService {
    /// etcd's `Election.Proclaim`: the new value, if `leader` still leads; the revision.
    async fn proclaim(
        r: &Recipes<'_>,
        leader: &epb::LeaderKey,
        value: &[u8],
    ) -> Result<i64, Status> {
        let t = r
            .txn(TxnRequest {
                compare: vec![create_is(&leader.key, leader.rev)],
                success: vec![put(&leader.key, value, leader.lease)],
                failure: vec![],
            })
            .await?;
        if !t.succeeded {
            return Err(Status::unknown(ELECTION_NOT_LEADER));
        }
        Ok(t.revision)
    }

    /// The current leader's key and value (the oldest key under the election's prefix).
    async fn leader_kv(r: &Recipes<'_>, name: &[u8]) -> Result<RangeResponse, Status> {
        r.get(&by_create(&name_prefix(name), SortOrder::Ascend, 0))
            .await
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let req = request.into_inner();
        let (prefix, key, lease) = r.own_key(&req.name, req.lease).await?;
        let t = r
            .txn(TxnRequest {
                compare: vec![create_is(&key, 0)],
                success: vec![put(&key, &req.value, lease)],
                failure: vec![get(&key)],
            })
            .await?;
        let mut guard = Abandoned {
            node: Arc::clone(&self.node),
            caller: r.caller.clone(),
            key: Some(key.clone()),
        };
        let mut leader = epb::LeaderKey {
            name: req.name.clone(),
            key: key.clone().into(),
            rev: t.revision,
            lease,
        };
        if !t.succeeded {
            let kv = range_of(&t.responses[0])
                .first()
                .cloned()
                .unwrap_or_default();
            leader.rev = kv.create_revision;
            if kv.value != req.value.as_ref() {
                Self::proclaim(&r, &leader, &req.value).await?;
            }
        }
        r.wait_deletes(&prefix, leader.rev - 1).await?;
        guard.key = None;
        Ok(Response::new(epb::CampaignResponse {
            header: self.node.header(t.revision),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let req = request.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let revision = Self::proclaim(&r, &leader, &req.value).await?;
        Ok(Response::new(epb::ProclaimResponse {
            header: self.node.header(revision),
        }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let resp = Self::leader_kv(&r, &request.into_inner().name).await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Err(Status::unknown(ELECTION_NO_LEADER));
        };
        Ok(Response::new(epb::LeaderResponse {
            header: self.node.header(resp.revision),
            kv: Some(kv_to_pb(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let caller = self.node.caller(&request)?;
        let name = request.into_inner().name.to_vec();
        let (tx, rx) = tokio::sync::mpsc::channel(OBSERVE_BUFFER);
        let node = Arc::clone(&self.node);
        tokio::spawn(async move {
            let r = Recipes {
                node: &node,
                caller,
            };
            if let Err(e) = observe(&r, &name, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let r = Recipes::of(&self.node, &request)?;
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let t = r
            .txn(TxnRequest {
                compare: vec![create_is(&leader.key, leader.rev)],
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: leader.key.to_vec(),
                    ..Default::default()
                })],
                failure: vec![],
            })
            .await?;
        Ok(Response::new(epb::ResignResponse {
            header: self.node.header(t.revision),
        }))
    }
}

/// The changes under `prefix` (or of one key) after revision `after`, once there are any.
async fn next_events(
    r: &Recipes<'_>,
    range: KeyRange<'_>,
    after: i64,
) -> Result<Vec<mvcc::Event>, Status> {
    let mut applied = r.node.hub.subscribe();
    loop {
        applied
            .wait_for(|rev| *rev > after)
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        let current = r.node.store.current_revision();
        let events = r
            .node
            .store
            .events(range, after + 1, current, false, usize::MAX)
            .map_err(crate::errors::from_mvcc)?;
        if !events.is_empty() {
            return Ok(events);
        }
    }
}

/// etcd's `Election.observe`: the leader now (or the first to put a key), then each new value
/// of its key until it goes, then the next leader; until the client goes.
async fn observe(
    r: &Recipes<'_>,
    name: &[u8],
    tx: &tokio::sync::mpsc::Sender<Result<epb::LeaderResponse, Status>>,
) -> Result<(), Status> {
    let prefix = name_prefix(name);
    let end = prefix_end(&prefix);
    let send = |revision: i64, kv: KeyValue| {
        tx.send(Ok(epb::LeaderResponse {
            header: r.node.header(revision),
            kv: Some(kv_to_pb(kv)),
        }))
    };
    loop {
        let now = ElectionService::leader_kv(r, name).await?;
        let (mut revision, leader) = match now.kvs.into_iter().next() {
            Some(kv) => (now.revision, kv),
            None => {
                // Wait for the first put under the prefix.
                let mut after = now.revision;
                loop {
                    let events = next_events(r, KeyRange::Between(&prefix, &end), after).await?;
                    after = events.last().map_or(after, |e| e.kv.mod_revision);
                    if let Some(e) = events.into_iter().find(|e| e.kind == EventType::Put) {
                        break (e.kv.mod_revision, e.kv);
                    }
                }
            }
        };
        let key = leader.key.clone();
        if send(revision, leader).await.is_err() {
            return Ok(());
        }
        // Each new value of the leader's key, until it is deleted.
        'leading: loop {
            for e in next_events(r, KeyRange::Single(&key), revision).await? {
                revision = e.kv.mod_revision;
                if e.kind == EventType::Delete {
                    break 'leading;
                }
                if send(revision, e.kv).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_as_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
