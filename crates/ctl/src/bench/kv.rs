//! One benchmark client: the request each workload issues, timed into the recorder. Keys are
//! the key-space number zero-padded to `--key-size`, as etcd's benchmark makes them.

use std::sync::Arc;

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::Rng;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

use super::{k8s, Args, Recorder, Workload};

/// The op name of every simple workload's request.
pub(crate) const REQUEST_OP: &str = "request";
/// The op name of the puts the watch workloads make.
pub(crate) const WATCHED_PUT_OP: &str = "put";
/// Puts in flight while the delete workload fills its key space.
const FILL_CONCURRENCY: usize = 64;
/// The TTL of the lease-keepalive workload's leases, in seconds.
const KEEPALIVE_TTL_SECS: i64 = 60;

/// A lease's keep-alive stream: requests go in through `tx`, answers come out of `rx`.
struct KeepAlive {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

pub(crate) struct Worker {
    pub(crate) kv: KvClient<Channel>,
    pub(crate) lease: LeaseClient<Channel>,
    pub(crate) args: Arc<Args>,
    pub(crate) rec: Arc<Recorder>,
    /// Which client this is (k8s: which objects it owns).
    pub(crate) index: usize,
    /// Writes that took effect (what watchers should see).
    pub(crate) writes: u64,
    keepalive: Option<KeepAlive>,
    pub(crate) k8s: k8s::State,
    /// The value every plain put writes (`--val-size` bytes), made once.
    value: Vec<u8>,
}

impl Worker {
    pub(crate) fn new(
        channel: &Channel,
        index: usize,
        args: &Arc<Args>,
        rec: Arc<Recorder>,
    ) -> Self {
        Worker {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            args: args.clone(),
            rec,
            index,
            writes: 0,
            keepalive: None,
            k8s: k8s::State::default(),
            value: vec![b'v'; args.val_size],
        }
    }

    /// Issues request number `n` of the run.
    pub(crate) async fn step(&mut self, n: u64) {
        let rec = self.rec.clone();
        match self.args.workload {
            Workload::LeaseKeepalive => return self.keep_alive().await,
            Workload::K8s => return k8s::step(self).await,
            _ => {}
        }
        let k = key(&self.args, n);
        match self.args.workload {
            Workload::Put => {
                let put = self.kv.put(put_request(k, self.value.clone()));
                rec.timed(REQUEST_OP, put).await;
            }
            Workload::Range | Workload::RangeSerializable => {
                let range = self.kv.range(RangeRequest {
                    key: k.into(),
                    serializable: self.args.workload == Workload::RangeSerializable,
                    ..Default::default()
                });
                rec.timed(REQUEST_OP, range).await;
            }
            Workload::TxnPut => {
                let txn = self.kv.txn(TxnRequest {
                    compare: vec![mod_greater_than_minus_one(&k)],
                    success: vec![op_put(put_request(k, self.value.clone()))],
                    failure: vec![],
                });
                rec.timed(REQUEST_OP, txn).await;
            }
            Workload::TxnMixed => {
                let read = rand::thread_rng().gen::<f64>() * (1.0 + self.args.rw_ratio) >= 1.0;
                let op = if read {
                    RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key: k.into(),
                            ..Default::default()
                        })),
                    }
                } else {
                    op_put(put_request(k, self.value.clone()))
                };
                let txn = self.kv.txn(TxnRequest {
                    success: vec![op],
                    ..Default::default()
                });
                rec.timed(REQUEST_OP, txn).await;
            }
            Workload::Delete => {
                let delete = self.kv.delete_range(DeleteRangeRequest {
                    key: k.into(),
                    ..Default::default()
                });
                rec.timed(REQUEST_OP, delete).await;
            }
            Workload::Watch | Workload::WatchLatency => {
                let value = rec.stamped_value(self.args.val_size);
                let put = self.kv.put(put_request(k, value));
                if rec.timed(WATCHED_PUT_OP, put).await.is_some() {
                    self.writes += 1;
                }
            }
            Workload::LeaseKeepalive | Workload::K8s => unreachable!("handled above"),
        }
    }

    /// One keep-alive round trip on this client's lease (granted, and its stream opened, on
    /// the first call; that call's time includes the grant and the stream's opening).
    async fn keep_alive(&mut self) {
        let rec = self.rec.clone();
        let t = std::time::Instant::now();
        match &self.keepalive {
            Some(ka) => {
                if ka
                    .tx
                    .send(LeaseKeepAliveRequest { id: ka.id })
                    .await
                    .is_err()
                {
                    self.keepalive = None;
                    return rec.error(&tonic::Status::unavailable("keep-alive stream closed"));
                }
            }
            None => match self.open_keepalive().await {
                Some(ka) => self.keepalive = Some(ka),
                None => return,
            },
        }
        let ka = self.keepalive.as_mut().expect("set above");
        match ka.rx.message().await {
            Ok(Some(r)) if r.ttl > 0 => rec.record(REQUEST_OP, t.elapsed()),
            Ok(Some(_)) => rec.error(&tonic::Status::not_found("lease expired")),
            Ok(None) => {
                self.keepalive = None;
                rec.error(&tonic::Status::unavailable("keep-alive stream ended"))
            }
            Err(s) => {
                self.keepalive = None;
                rec.error(&s)
            }
        }
    }
}

impl Worker {
    /// Grants this client's lease and opens its keep-alive stream with the first keep-alive
    /// queued: etcd (grpc-go) sends the response headers only with the first message.
    async fn open_keepalive(&mut self) -> Option<KeepAlive> {
        let grant = self.lease.lease_grant(LeaseGrantRequest {
            ttl: KEEPALIVE_TTL_SECS,
            id: 0,
        });
        let id = self.rec.timed("grant", grant).await?.into_inner().id;
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id }).await.ok()?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        match self.lease.lease_keep_alive(stream).await {
            Ok(s) => Some(KeepAlive {
                id,
                tx,
                rx: s.into_inner(),
            }),
            Err(s) => {
                self.rec.error(&s);
                None
            }
        }
    }
}

pub(crate) fn key(args: &Args, n: u64) -> Vec<u8> {
    let space = args.key_space_size.max(1);
    let k = if args.sequential_keys {
        n % space
    } else {
        rand::thread_rng().gen_range(0..space)
    };
    key_of(args.key_size, k)
}

/// Key number `k`, zero-padded (or cut) to `size` bytes.
fn key_of(size: usize, k: u64) -> Vec<u8> {
    let mut s = format!("{k:0size$}").into_bytes();
    s.truncate(size.max(1));
    s
}

pub(crate) fn put_request(key: Vec<u8>, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub(crate) fn op_put(put: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put)),
    }
}

fn mod_greater_than_minus_one(key: &[u8]) -> Compare {
    Compare {
        key: key.to_vec().into(),
        target: compare::CompareTarget::Mod as i32,
        result: compare::CompareResult::Greater as i32,
        target_union: Some(compare::TargetUnion::ModRevision(-1)),
        ..Default::default()
    }
}

/// Puts every key of the key space once (the delete workload's starting point).
pub(crate) async fn fill_key_space(channels: &[Channel], args: &Args) -> anyhow::Result<()> {
    use futures::StreamExt;
    let value = vec![b'v'; args.val_size];
    let puts = (0..args.key_space_size.max(1)).map(|n| {
        let mut kv = KvClient::new(channels[n as usize % channels.len()].clone());
        let req = put_request(key_of(args.key_size, n), value.clone());
        async move { kv.put(req).await }
    });
    let mut results = futures::stream::iter(puts).buffer_unordered(FILL_CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}
