//! The `k8s` workload: what kube-apiserver does to its store, in rough proportion. Each client
//! owns objects under `/registry/bench/r<resource>/`, creates them with a `MOD == 0` Txn,
//! updates and deletes them with `MOD == mod_revision` Txns (a Range on failure, as the
//! apiserver's guaranteed updates), reads them, lists a resource in pages of 500 pinned at the
//! first page's revision, counts it, and grants leases; watchers with prev_kv follow the whole
//! prefix; a compactor runs the apiserver's cycle (a version CAS on `compact_rev_key`, then
//! Compact at the revision of the previous round).

use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    LeaseGrantRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use etcd_api::mvccpb::KeyValue;
use rand::Rng;
use tonic::transport::Channel;

use super::kv::{op_put, put_request, Worker};
use super::watch::{prefix_end, Target};
use super::{Args, Recorder};

/// Every key the workload writes starts with this.
const PREFIX: &[u8] = b"/registry/bench/";
/// Resource types the objects are spread over (each listed on its own).
const RESOURCES: usize = 10;
/// The apiserver's list page size.
const PAGE_LIMIT: i64 = 500;
/// The apiserver's compaction bookkeeping key.
const COMPACT_KEY: &[u8] = b"compact_rev_key";
/// The TTL of granted leases, in seconds (the apiserver reuses one per minute).
const LEASE_TTL_SECS: i64 = 60;

/// The operations a k8s client issues, with their weights out of 100.
const MIX: [(&str, u32); 7] = [
    ("create", 15),
    ("update", 30),
    ("delete", 5),
    ("get", 30),
    ("list", 8),
    ("count", 7),
    ("lease-grant", 5),
];
pub(crate) const CLIENT_OPS: &[&str] = &[
    "create",
    "update",
    "delete",
    "get",
    "list",
    "count",
    "lease-grant",
];

/// A client's objects (key and last known mod_revision) and its current lease.
#[derive(Default)]
pub(crate) struct State {
    objects: Vec<(Vec<u8>, i64)>,
    next_id: u64,
    lease: Option<i64>,
}

pub(crate) fn watch_target() -> Target {
    Target::PrefixWithPrevKv(PREFIX)
}

fn resource_prefix(resource: usize) -> Vec<u8> {
    let mut p = PREFIX.to_vec();
    p.extend_from_slice(format!("r{resource}/").as_bytes());
    p
}

fn pick(rng: &mut impl Rng) -> &'static str {
    let mut roll = rng.gen_range(0..MIX.iter().map(|(_, w)| w).sum::<u32>());
    for (op, w) in MIX {
        if roll < w {
            return op;
        }
        roll -= w;
    }
    unreachable!("the roll is below the sum of the weights")
}

fn mod_equals(key: &[u8], rev: i64) -> Compare {
    Compare {
        key: key.to_vec().into(),
        target: compare::CompareTarget::Mod as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn op_get(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec().into(),
            ..Default::default()
        })),
    }
}

/// The key as the failure branch's Range saw it (None: it is gone).
fn failure_range_kv(resp: &TxnResponse) -> Option<&KeyValue> {
    resp.responses.first().and_then(|r| match &r.response {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.first(),
        _ => None,
    })
}

pub(crate) async fn step(w: &mut Worker) {
    let (op, slot) = {
        let mut rng = rand::thread_rng();
        let op = if w.k8s.objects.is_empty() {
            "create"
        } else {
            pick(&mut rng)
        };
        (op, rng.gen_range(0..w.k8s.objects.len().max(1)))
    };
    let rec = w.rec.clone();
    match op {
        "create" => {
            let mut key = resource_prefix(w.index % RESOURCES);
            key.extend_from_slice(format!("c{}-{}", w.index, w.k8s.next_id).as_bytes());
            w.k8s.next_id += 1;
            let mut put = put_request(key.clone(), rec.stamped_value(w.args.val_size));
            put.lease = w
                .k8s
                .lease
                .filter(|_| w.k8s.next_id.is_multiple_of(5))
                .unwrap_or(0);
            let txn = w.kv.txn(TxnRequest {
                compare: vec![mod_equals(&key, 0)],
                success: vec![op_put(put)],
                failure: vec![op_get(&key)],
            });
            if let Some(r) = rec.timed(op, txn).await.map(|r| r.into_inner()) {
                if r.succeeded {
                    w.writes += 1;
                    let rev = r.header.map(|h| h.revision).unwrap_or_default();
                    w.k8s.objects.push((key, rev));
                }
            }
        }
        "update" | "delete" => {
            let (key, rev) = w.k8s.objects[slot].clone();
            let success = if op == "update" {
                op_put(put_request(key.clone(), rec.stamped_value(w.args.val_size)))
            } else {
                RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: key.clone().into(),
                            prev_kv: true,
                            ..Default::default()
                        },
                    )),
                }
            };
            let txn = w.kv.txn(TxnRequest {
                compare: vec![mod_equals(&key, rev)],
                success: vec![success],
                failure: vec![op_get(&key)],
            });
            let Some(r) = rec.timed(op, txn).await.map(|r| r.into_inner()) else {
                return;
            };
            let now = match (r.succeeded, op) {
                (true, "update") => r.header.map(|h| h.revision),
                (true, _) => None,
                (false, _) => failure_range_kv(&r).map(|kv| kv.mod_revision),
            };
            w.writes += u64::from(r.succeeded);
            match now {
                Some(rev) => w.k8s.objects[slot].1 = rev,
                None => {
                    w.k8s.objects.swap_remove(slot);
                }
            }
        }
        "get" => {
            let key = w.k8s.objects[slot].0.clone();
            let get = w.kv.range(RangeRequest {
                key: key.into(),
                ..Default::default()
            });
            rec.timed(op, get).await;
        }
        "list" => {
            let list = list_resource(w.kv.clone(), resource_prefix(slot % RESOURCES));
            rec.timed(op, list).await;
        }
        "count" => {
            let prefix = resource_prefix(slot % RESOURCES);
            let count = w.kv.range(RangeRequest {
                range_end: prefix_end(&prefix).into(),
                key: prefix.into(),
                count_only: true,
                ..Default::default()
            });
            rec.timed(op, count).await;
        }
        _ => {
            let grant = w.lease.lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            });
            if let Some(r) = rec.timed(op, grant).await {
                w.k8s.lease = Some(r.into_inner().id);
            }
        }
    }
}

/// A paged list as the apiserver makes it: the first page at the current revision, the next
/// ones from the last key + "\0", pinned at the first page's revision.
async fn list_resource(mut kv: KvClient<Channel>, prefix: Vec<u8>) -> Result<u64, tonic::Status> {
    let end = prefix_end(&prefix);
    let (mut key, mut revision, mut listed) = (prefix, 0, 0u64);
    loop {
        let page = kv
            .range(RangeRequest {
                key: key.clone().into(),
                range_end: end.clone().into(),
                limit: PAGE_LIMIT,
                revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        if revision == 0 {
            revision = page.header.as_ref().map(|h| h.revision).unwrap_or_default();
        }
        listed += page.kvs.len() as u64;
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.to_vec();
                key.push(0);
            }
            _ => return Ok(listed),
        }
    }
}

/// Runs the apiserver's compaction cycle every `--compact-interval` seconds until aborted.
pub(crate) fn spawn_compactor(
    channel: Channel,
    args: &Args,
    rec: Arc<Recorder>,
) -> tokio::task::JoinHandle<()> {
    let interval = Duration::from_secs(args.compact_interval.max(1));
    tokio::spawn(async move {
        let mut kv = KvClient::new(channel);
        let (mut version, mut previous) = (0i64, 0i64);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let cas = kv.txn(TxnRequest {
                compare: vec![Compare {
                    key: COMPACT_KEY.to_vec().into(),
                    target: compare::CompareTarget::Version as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Version(version)),
                    ..Default::default()
                }],
                success: vec![op_put(put_request(COMPACT_KEY.to_vec(), b"0".to_vec()))],
                failure: vec![op_get(COMPACT_KEY)],
            });
            let Some(r) = rec.timed("compact-cas", cas).await.map(|r| r.into_inner()) else {
                continue;
            };
            let revision = r.header.map(|h| h.revision).unwrap_or_default();
            if !r.succeeded {
                // Another compactor won this round: take its version and try again next time.
                version = failure_range_kv(&r).map_or(version, |kv| kv.version);
                continue;
            }
            version += 1;
            if previous > 0 {
                let compact = kv.compact(CompactionRequest {
                    revision: previous,
                    physical: false,
                });
                rec.timed("compact", compact).await;
            }
            previous = revision;
        }
    })
}
