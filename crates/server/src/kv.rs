//! The KV service: etcd's request checks (in etcd's order, with etcd's errors), then reads from
//! the local keyspace (after a ReadIndex round unless serializable) and writes through the log.

use std::collections::HashSet;
use std::sync::Arc;

use etcd_api::etcdserverpb as pb;
use etcd_api::etcdserverpb::request_op::Request as Op;
use etcd_api::rpctypes;
use mvcc::auth::PermType;
use mvcc::{Command, CommandResponse};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::errors::unexpected;
use crate::node::Node;

pub struct KvService {
    pub node: Arc<Node>,
}

pub fn check_range(r: &pb::RangeRequest) -> Result<(), Status> {
    use pb::range_request::{SortOrder, SortTarget};
    if r.key.is_empty() {
        return Err(rpctypes::EMPTY_KEY.status());
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(rpctypes::INVALID_SORT_OPTION.status());
    }
    Ok(())
}

pub fn check_put(r: &pb::PutRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(rpctypes::EMPTY_KEY.status());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(rpctypes::VALUE_PROVIDED.status());
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(rpctypes::LEASE_PROVIDED.status());
    }
    Ok(())
}

pub fn check_delete(r: &pb::DeleteRangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(rpctypes::EMPTY_KEY.status());
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: op counts, empty keys, and every nested request.
pub fn check_txn(r: &pb::TxnRequest, max_ops: usize) -> Result<(), Status> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(rpctypes::TOO_MANY_OPS.status());
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(rpctypes::EMPTY_KEY.status());
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => check_range(r)?,
            Some(Op::RequestPut(r)) => check_put(r)?,
            Some(Op::RequestDeleteRange(r)) => check_delete(r)?,
            Some(Op::RequestTxn(t)) => check_txn(t, max_ops - ops)?,
            None => return Err(rpctypes::KEY_NOT_FOUND.status()),
        }
    }
    Ok(())
}

/// Every check etcd makes on a txn before proposing it: operation counts and nested requests,
/// then duplicate keys on each branch.
pub fn check_txn_request(r: &pb::TxnRequest, max_ops: usize) -> Result<(), Status> {
    check_txn(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// A deleted interval: one key, or `[key, end)` compared as strings (etcd's affine intervals,
/// under which an end of `"\0"` covers nothing).
struct Deleted {
    key: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => self.key == k,
            Some(end) => k >= self.key.as_slice() && k < end.as_slice(),
        }
    }
}

/// etcd's `checkIntervals`: no key may be put twice, or put and deleted, on one txn path.
fn check_intervals(ops: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), Status> {
    let dup = || Err(rpctypes::DUPLICATE_KEY.status());
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Op::RequestDeleteRange(d)) => Some(Deleted {
                key: d.key.to_vec(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.to_vec()),
            }),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Op::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return dup();
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // A key put on both branches is fine: only one branch runs.
            if puts.contains(k) && !puts_then.contains(k) {
                return dup();
            }
            if dels.iter().any(|d| d.contains(k)) {
                return dup();
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Op::RequestPut(p)) = &op.request else {
            continue;
        };
        let k = p.key.to_vec();
        if puts.contains(&k) || dels.iter().any(|d| d.contains(&k)) {
            return dup();
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let _reading = (!request.get_ref().serializable).then(|| self.node.reading());
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        check_range(&r)?;
        if !r.serializable {
            self.node.read_index().await?;
        }
        self.node
            .authorize(|a| a.check_op(&caller, &r.key, &r.range_end, PermType::Read))?;
        let resp = self
            .node
            .store
            .range(&convert::range_from_pb(&r))
            .map_err(crate::errors::from_mvcc)?;
        self.node.recheck(&caller)?;
        Ok(Response::new(self.node.headers().range(resp)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        check_put(&r)?;
        let len = r.encoded_len();
        self.node.check_size(len)?;
        match self
            .node
            .propose_as(caller, Command::Put(convert::put_from_pb(&r)), len)
            .await?
        {
            CommandResponse::Put(p) => Ok(Response::new(self.node.headers().put(p))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        check_delete(&r)?;
        self.node.check_size(r.encoded_len())?;
        match self
            .node
            .propose_as(caller, Command::DeleteRange(convert::delete_from_pb(&r)), 0)
            .await?
        {
            CommandResponse::DeleteRange(d) => Ok(Response::new(self.node.headers().delete(d))),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        check_txn_request(&r, self.node.config.max_txn_ops)?;
        let len = r.encoded_len();
        self.node.check_size(len)?;
        match self
            .node
            .propose_as(caller, Command::Txn(convert::txn_from_pb(&r)), len)
            .await?
        {
            CommandResponse::Txn(t) => Ok(Response::new(self.node.headers().txn(t))),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let caller = self.node.caller(&request)?;
        let r = request.into_inner();
        match self
            .node
            .propose_as(
                caller,
                Command::Compact {
                    revision: r.revision,
                },
                0,
            )
            .await?
        {
            CommandResponse::Compact { revision } => Ok(Response::new(pb::CompactionResponse {
                header: self.node.header(revision),
            })),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Op::RequestPut(pb::PutRequest {
                key: k.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: k.as_bytes().to_vec().into(),
                range_end: end.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Op::RequestTxn(pb::TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    #[test]
    fn duplicate_keys_follow_etcd() {
        assert!(check_intervals(&[put("a"), put("b")]).is_ok());
        assert!(check_intervals(&[put("a"), put("a")]).is_err());
        assert!(check_intervals(&[put("b"), del("a", "c")]).is_err());
        assert!(check_intervals(&[del("a", "c"), del("b", "")]).is_ok());
        // The same key on both branches of a nested txn is allowed.
        assert!(check_intervals(&[txn(vec![put("a")], vec![put("a")])]).is_ok());
        assert!(check_intervals(&[txn(vec![put("a")], vec![]), put("a")]).is_err());
        // etcd compares intervals as strings: an end of "\0" covers nothing.
        assert!(check_intervals(&[put("b"), del("a", "\0")]).is_ok());
    }

    #[test]
    fn too_many_ops() {
        let t = pb::TxnRequest {
            success: (0..129).map(|i| put(&i.to_string())).collect(),
            ..Default::default()
        };
        assert_eq!(
            check_txn(&t, 128).unwrap_err().message(),
            "etcdserver: too many operations in txn request"
        );
        let t = pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(
            check_txn(&t, 128).unwrap_err().message(),
            "etcdserver: key not found"
        );
    }
}
