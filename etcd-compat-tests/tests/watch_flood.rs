//! Watch creates faster than the server reads them (issue 9.3): 10,000 creates sent at once on
//! one stream, as a busy kube-apiserver multiplexes its watches, against the debug build (a
//! slow server). Every watch must be created and get its event, and the connection must live.
//! Two clients: grpc-core (Python grpcio, `tools/watch_flood.py`), which sends each create as
//! its own small HTTP/2 DATA frame, and the Rust etcd-client. Before the fix the stream task
//! walked every watcher after each request, fell behind, and h2's flood protection closed the
//! whole connection (`GOAWAY ENHANCE_YOUR_CALM too_many_data_frames`; grpcio: "Stream removed
//! (sendmsg: Broken pipe)") after 1,175–1,966 creates. `TANDEM_WATCH_FLOOD` sets the count
//! (the acceptance also ran 50,000).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use etcd_compat_tests::*;

const WAIT: Duration = Duration::from_secs(600);

fn creates() -> usize {
    std::env::var("TANDEM_WATCH_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_watch_creates_on_one_stream_is_served_without_a_connection_error() {
    let n = creates();
    let server = Server::start(Kind::Tandem).expect("tandem");
    let mut c = server.client().await.expect("connect");
    let prefix = || Some(WatchOptions::new().with_prefix());
    let stream = c.watch("flood/", prefix()).await.expect("first watch");
    let (mut tx, mut rx) = stream.split();
    let sender = tokio::spawn(async move {
        for _ in 1..n {
            tx.watch("flood/", prefix()).await.expect("send a create");
        }
        tx
    });
    let started = std::time::Instant::now();
    let mut created = 1;
    while created < n {
        let r = tokio::time::timeout(WAIT, rx.message())
            .await
            .expect("creates answered in time")
            .unwrap_or_else(|e| panic!("the watch stream failed after {created} creates: {e}"))
            .expect("the watch stream ended");
        assert!(
            !r.canceled(),
            "a watch was cancelled: {}",
            r.cancel_reason()
        );
        created += usize::from(r.created());
    }
    let _tx = sender.await.expect("sender");
    println!("{n} watches created in {:?}", started.elapsed());
    // The same connection still serves other requests.
    let mut other = c.clone();
    other
        .put("flood/x", "v", None)
        .await
        .expect("a put on the same connection");
    let mut events = 0;
    while events < n {
        let r = tokio::time::timeout(WAIT, rx.message())
            .await
            .expect("events delivered in time")
            .expect("watch stream")
            .expect("the watch stream ended");
        events += r.events().len();
    }
    let got = other
        .get("flood/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("a read on the same connection");
    assert_eq!(got.count(), 1);
    println!(
        "{n} creates on one stream: all created, {events} events delivered, no connection error, {:?} in all",
        started.elapsed()
    );
}

/// The grpc-core client: one DATA frame per create.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_small_frames_from_grpc_core_is_served_without_a_connection_error() {
    let n = creates();
    let server = Server::start(Kind::Tandem).expect("tandem");
    let mut child = Command::new("python3")
        .arg(workspace_path("etcd-compat-tests/tools/watch_flood.py"))
        .arg(server.endpoint())
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps installs grpcio)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    let created = next();
    assert_eq!(created, format!("CREATED {n}"), "grpcio's flood");
    let mut c = server.client().await.expect("connect");
    c.put("flood/x", "v", None).await.expect("put");
    let events = next();
    assert_eq!(events, format!("EVENTS {n}"), "every watcher's event");
    assert!(child.wait().expect("wait").success());
    println!("grpcio: {n} creates on one stream: {created}, {events}, no connection error");
}
