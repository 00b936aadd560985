//! The watchers of the watch workloads: `--watchers` watchers spread over `--streams` gRPC watch
//! streams (round robin over the connections), each receiving every event of its target. An
//! event's delivery latency is read from the time stamped into its value by the writer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use etcd_api::mvccpb::event::EventType;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use super::{Args, Recorder};

/// The op name under which event delivery latency is recorded.
pub(crate) const EVENT_OP: &str = "watch-event";

/// What the watchers watch.
pub(crate) enum Target {
    /// Every key (the watch workloads write all over the key space).
    AllKeys,
    /// The keys under a prefix, with prev_kv (as the apiserver's watchers).
    PrefixWithPrevKv(&'static [u8]),
}

/// The open watchers. Dropping them closes their streams.
pub(crate) struct Watchers {
    count: usize,
    delivered: watch::Receiver<u64>,
    _requests: Vec<mpsc::Sender<WatchRequest>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Waits until `expected` events were delivered or `deadline` passed; how many were.
    pub(crate) async fn drain(mut self, expected: u64, deadline: Duration) -> u64 {
        let _ = tokio::time::timeout(deadline, self.delivered.wait_for(|n| *n >= expected)).await;
        let delivered = *self.delivered.borrow();
        for r in &self.readers {
            r.abort();
        }
        delivered
    }
}

fn create_request(target: &Target) -> WatchRequest {
    let (key, range_end, prev_kv) = match target {
        Target::AllKeys => (vec![0], vec![0], false),
        Target::PrefixWithPrevKv(p) => (p.to_vec(), prefix_end(p), true),
    };
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv,
                ..Default::default()
            },
        )),
    }
}

/// The range end that makes a range cover every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Opens the watchers and returns once every one of them is created.
pub(crate) async fn open(
    channels: &[Channel],
    args: &Args,
    rec: Arc<Recorder>,
    target: Target,
) -> anyhow::Result<Watchers> {
    let count = args.watchers.max(1);
    let streams = args.streams.clamp(1, count);
    let (delivered_tx, delivered) = watch::channel(0u64);
    let delivered_tx = Arc::new(delivered_tx);
    let mut requests = Vec::new();
    let mut readers = Vec::new();
    let mut created = Vec::new();
    for s in 0..streams {
        let on_stream = count / streams + usize::from(s < count % streams);
        let (tx, rx) = mpsc::channel(on_stream.max(1));
        // Queue the creates before opening the stream: etcd (grpc-go) sends the response
        // headers only with the first message.
        for _ in 0..on_stream {
            tx.send(create_request(&target)).await?;
        }
        let mut client = WatchClient::new(channels[s % channels.len()].clone());
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .context("opening a watch stream")?
            .into_inner();
        let (created_tx, created_rx) = oneshot::channel();
        let (rec, delivered_tx) = (rec.clone(), delivered_tx.clone());
        readers.push(tokio::spawn(async move {
            let mut to_create = on_stream;
            let mut created_tx = Some(created_tx);
            while let Ok(Some(resp)) = stream.message().await {
                if resp.created {
                    to_create -= 1;
                    if to_create == 0 {
                        created_tx.take().map(|t| t.send(()));
                    }
                }
                for e in &resp.events {
                    if e.r#type == EventType::Put as i32 {
                        if let Some(age) = e.kv.as_ref().and_then(|kv| rec.age_of(&kv.value)) {
                            rec.record(EVENT_OP, age);
                        }
                    }
                }
                let n = resp.events.len() as u64;
                if n > 0 {
                    delivered_tx.send_modify(|d| *d += n);
                }
            }
        }));
        requests.push(tx);
        created.push(created_rx);
    }
    for c in created {
        c.await
            .context("a watch stream ended before its watchers were created")?;
    }
    Ok(Watchers {
        count,
        delivered,
        _requests: requests,
        readers,
    })
}
