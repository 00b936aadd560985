//! Small differences from etcd found by probing (issue 9.6), each checked against etcd 3.5.1:
//! the status of an unknown gRPC method or service, and the cancellation of a watch whose
//! start revision is negative.

use etcd_api::etcdserverpb as pb;
use etcd_compat_tests::*;
use tonic::codegen::http::uri::PathAndQuery;

/// The code and message a raw unary call to `path` gets.
async fn call(server: &Server, path: &'static str) -> (tonic::Code, String) {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<pb::RangeRequest, pb::RangeResponse>::default();
    let req = tonic::Request::new(pb::RangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    });
    let status = grpc
        .unary(req, PathAndQuery::from_static(path), codec)
        .await
        .expect_err("an unknown method fails");
    (status.code(), status.message().to_string())
}

/// Regression: tandem answered an unknown method with an empty message, an unknown service
/// with an HTTP 404.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_methods_and_services_are_named_as_etcd_names_them() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    for path in ["/etcdserverpb.KV/NoSuch", "/etcdserverpb.NoSuch/Range"] {
        let want = call(&etcd, path).await;
        let got = call(&tandem, path).await;
        println!("{path}: etcd 3.5.1 {want:?}, tandem {got:?}");
        assert_eq!(got, want, "{path}");
    }
}

/// The watch responses (created, canceled, compact revision) for a start revision of `rev`.
async fn watch_from(server: &Server, rev: i64) -> Vec<(bool, bool, i64)> {
    let mut c = server.client().await.expect("connect");
    c.put("w", "v", None).await.expect("put");
    let opts = etcd_client::WatchOptions::new().with_start_revision(rev);
    let mut stream = c.watch("w", Some(opts)).await.expect("watch");
    let mut seen = Vec::new();
    while let Some(r) = stream.message().await.expect("watch stream") {
        seen.push((r.created(), r.canceled(), r.compact_revision()));
        if r.canceled() || !r.events().is_empty() {
            break;
        }
    }
    seen
}

/// Regression: a negative start revision was cancelled with compact_revision 0 (etcd: -1,
/// its compacted revision before any compaction). Not -1 itself: etcd never answers that
/// watch, tandem cancels it as it cancels -5.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_negative_revision_is_cancelled_as_etcd_cancels_it() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    for rev in [-5, -100] {
        let want = watch_from(&etcd, rev).await;
        let got = watch_from(&tandem, rev).await;
        println!("start revision {rev}: etcd 3.5.1 {want:?}, tandem {got:?}");
        assert_eq!(got, want, "start revision {rev}");
    }
}
