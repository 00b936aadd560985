//! Watch fragmentation (`WatchCreateRequest.fragment`), which etcdctl and the Rust client cannot
//! ask for: a raw gRPC client built from tandem's own API types, against etcd 3.5.1 and tandem.

use std::time::Duration;

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::watch_request::RequestUnion;
use etcd_api::etcdserverpb::{WatchCreateRequest, WatchRequest};
use etcd_client::{Txn, TxnOp};
use etcd_compat_tests::*;

const WAIT: Duration = Duration::from_secs(20);

/// Writes one revision whose events (with previous values) exceed 1.5 MiB, then watches it with
/// and without fragmentation. Returns (fragment flag, events) for each response.
async fn scenario(server: &Server) -> Vec<(bool, usize)> {
    let mut c = server.client().await.expect("connect");
    let value = vec![b'v'; 700 * 1024];
    for k in ["frag/a", "frag/b", "frag/c"] {
        c.put(k, value.clone(), None).await.expect("put");
    }
    let txn = Txn::new().and_then(["frag/a", "frag/b"].map(|k| TxnOp::put(k, value.clone(), None)));
    let rev = c
        .txn(txn)
        .await
        .expect("txn")
        .header()
        .expect("header")
        .revision();
    let txn = Txn::new().and_then(["frag/c"].map(|k| TxnOp::put(k, value.clone(), None)));
    c.txn(txn).await.expect("txn");

    let mut out = Vec::new();
    for fragment in [true, false] {
        let mut client = WatchClient::connect(server.url())
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"frag/".to_vec().into(),
                range_end: b"frag0".to_vec().into(),
                start_revision: rev,
                prev_kv: true,
                fragment,
                ..Default::default()
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create).await.expect("send");
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut events = 0;
        while events < 3 {
            let r = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("in time")
                .expect("stream")
                .expect("response");
            if r.created {
                continue;
            }
            events += r.events.len();
            out.push((r.fragment, r.events.len()));
        }
        drop(tx);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_fragments_match_etcd() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let a = scenario(&etcd).await;
    let b = scenario(&tandem).await;
    println!("etcd {a:?}\ntandem {b:?}");
    assert_eq!(a, b);
    assert!(
        a.iter().any(|(f, _)| *f),
        "the scenario must make etcd fragment"
    );
}
