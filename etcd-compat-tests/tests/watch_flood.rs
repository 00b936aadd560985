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

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends `frames` after the connection preface, reads until the server closes the connection,
/// and returns the error code of the GOAWAY it sent, with the client's address.
fn flood(server: &Server, frames: &[u8]) -> (Option<u32>, String) {
    use std::io::{Read, Write};
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend_from_slice(frames);
    conn.write_all(&out).expect("send the flood");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer); // until the server closes (or resets) it
    let mut goaway = None;
    let mut rest = &answer[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        if rest[3] == 0x7 && payload.len() >= 8 {
            goaway = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        rest = &rest[9 + len..];
    }
    (goaway, conn.local_addr().expect("local addr").to_string())
}

/// HEADERS (END_HEADERS) opening `stream` with HPACK's static entries :method POST,
/// :scheme http, :path /.
fn open_stream(stream: u32) -> Vec<u8> {
    h2_frame(0x1, 0x4, stream, &[0x83, 0x86, 0x84])
}

/// A client that really floods is still closed by h2's protection, and the close is logged at
/// warn level with the client's address and h2's reason (issue 9.3: hyper logs the close only
/// at debug, so an operator saw nothing but failing clients). Two floods: empty DATA frames
/// (`too_many_data_frames`, the one a slow server once met from legitimate clients) and "rapid
/// reset" (CVE-2023-44487: streams opened and reset faster than the server accepts them).
#[test]
fn a_connection_closed_for_flooding_is_logged_at_warn_level() {
    let server = Server::start(Kind::Tandem).expect("tandem");
    let mut empty_data = open_stream(1);
    let mut rapid_reset = Vec::new();
    for i in 0..1_000u32 {
        empty_data.extend(h2_frame(0x0, 0, 1, &[]));
        rapid_reset.extend(open_stream(2 * i + 1));
        rapid_reset.extend(h2_frame(0x3, 0, 2 * i + 1, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    for (name, frames, reason) in [
        ("empty DATA frames", empty_data, "too_many_data_frames"),
        ("rapid reset", rapid_reset, "too_many_resets"),
    ] {
        let (goaway, client) = flood(&server, &frames);
        assert_eq!(goaway, Some(0xb), "{name}: GOAWAY ENHANCE_YOUR_CALM");
        wait_until(
            &format!("{name}: the close in the log"),
            Duration::from_secs(10),
            || {
                server.log().lines().any(|l| {
                    l.contains("WARN")
                        && l.contains("closing a client connection for flooding the server")
                        && l.contains(&client)
                        && l.contains("ENHANCE_YOUR_CALM")
                        && l.contains(reason)
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", server.log()));
    }
}
