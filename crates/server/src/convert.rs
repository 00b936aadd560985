//! Conversions between the wire messages (`etcd_api`) and the keyspace's own types (`mvcc`).
//! Nothing here decides anything: enum values outside etcd's range are rejected by `checks`
//! before conversion, and a compare whose operand does not match its target reads as zero, as
//! etcd does.

use etcd_api::etcdserverpb as pb;
use etcd_api::mvccpb;
use prost::bytes::Bytes;

pub fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::from(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::from(kv.value),
        lease: kv.lease,
    }
}

pub fn event_to_pb(e: &mvcc::Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            mvcc::EventType::Put => mvccpb::event::EventType::Put as i32,
            mvcc::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(e.kv.clone())),
        prev_kv: if with_prev {
            e.prev_kv.clone().map(kv_to_pb)
        } else {
            None
        },
    }
}

pub fn range_from_pb(r: &pb::RangeRequest) -> mvcc::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    mvcc::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None) {
            SortOrder::None => mvcc::SortOrder::None,
            SortOrder::Ascend => mvcc::SortOrder::Ascend,
            SortOrder::Descend => mvcc::SortOrder::Descend,
        },
        sort_target: match SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key) {
            SortTarget::Key => mvcc::SortTarget::Key,
            SortTarget::Version => mvcc::SortTarget::Version,
            SortTarget::Create => mvcc::SortTarget::Create,
            SortTarget::Mod => mvcc::SortTarget::Mod,
            SortTarget::Value => mvcc::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn put_from_pb(p: &pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: p.key.to_vec(),
        value: p.value.to_vec(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_from_pb(d: &pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: d.key.to_vec(),
        range_end: d.range_end.to_vec(),
        prev_kv: d.prev_kv,
    }
}

fn compare_from_pb(c: &pb::Compare) -> mvcc::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let int =
        |want: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version) {
        CompareTarget::Version => mvcc::CompareTarget::Version(int(|t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Create => mvcc::CompareTarget::Create(int(|t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Mod => mvcc::CompareTarget::Mod(int(|t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Lease => mvcc::CompareTarget::Lease(int(|t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Value => mvcc::CompareTarget::Value(match &c.target_union {
            Some(TargetUnion::Value(v)) => v.to_vec(),
            _ => Vec::new(),
        }),
    };
    mvcc::Compare {
        result: match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
            CompareResult::Equal => mvcc::CompareResult::Equal,
            CompareResult::Greater => mvcc::CompareResult::Greater,
            CompareResult::Less => mvcc::CompareResult::Less,
            CompareResult::NotEqual => mvcc::CompareResult::NotEqual,
        },
        target,
        key: c.key.to_vec(),
        range_end: c.range_end.to_vec(),
    }
}

fn op_from_pb(op: &pb::RequestOp) -> Option<mvcc::RequestOp> {
    use pb::request_op::Request;
    Some(match op.request.as_ref()? {
        Request::RequestRange(r) => mvcc::RequestOp::Range(range_from_pb(r)),
        Request::RequestPut(p) => mvcc::RequestOp::Put(put_from_pb(p)),
        Request::RequestDeleteRange(d) => mvcc::RequestOp::DeleteRange(delete_from_pb(d)),
        Request::RequestTxn(t) => mvcc::RequestOp::Txn(txn_from_pb(t)),
    })
}

/// Converts a txn; empty `RequestOp`s (no request set) are dropped, as etcd ignores them.
pub fn txn_from_pb(t: &pb::TxnRequest) -> mvcc::TxnRequest {
    mvcc::TxnRequest {
        compare: t.compare.iter().map(compare_from_pb).collect(),
        success: t.success.iter().filter_map(op_from_pb).collect(),
        failure: t.failure.iter().filter_map(op_from_pb).collect(),
    }
}

/// Builds response headers: the cluster and member ids and raft term are fixed per call.
#[derive(Debug, Clone, Copy)]
pub struct HeaderFactory {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl HeaderFactory {
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }

    pub fn range(&self, r: mvcc::RangeResponse) -> pb::RangeResponse {
        pb::RangeResponse {
            header: self.header(r.revision),
            kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
            more: r.more,
            count: r.count,
        }
    }

    pub fn put(&self, p: mvcc::PutResponse) -> pb::PutResponse {
        pb::PutResponse {
            header: self.header(p.revision),
            prev_kv: p.prev_kv.map(kv_to_pb),
        }
    }

    pub fn delete(&self, d: mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
        pb::DeleteRangeResponse {
            header: self.header(d.revision),
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.into_iter().map(kv_to_pb).collect(),
        }
    }

    pub fn txn(&self, t: mvcc::TxnResponse) -> pb::TxnResponse {
        use pb::response_op::Response;
        // Responses nested in a txn carry only a revision in their header, as etcd's do.
        let nested = HeaderFactory {
            cluster_id: 0,
            member_id: 0,
            raft_term: 0,
        };
        let responses = t
            .responses
            .into_iter()
            .map(|r| pb::ResponseOp {
                response: Some(match r {
                    mvcc::ResponseOp::Range(r) => Response::ResponseRange(nested.range(r)),
                    mvcc::ResponseOp::Put(p) => Response::ResponsePut(nested.put(p)),
                    mvcc::ResponseOp::DeleteRange(d) => {
                        Response::ResponseDeleteRange(nested.delete(d))
                    }
                    mvcc::ResponseOp::Txn(t) => Response::ResponseTxn(nested.txn(t)),
                }),
            })
            .collect();
        pb::TxnResponse {
            header: self.header(t.revision),
            succeeded: t.succeeded,
            responses,
        }
    }
}
