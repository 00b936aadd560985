//! `/metrics` as the etcd-mixin alerts and dashboards read it: every metric they use is served
//! by tandem under etcd's name, type and help text, and moves when what it counts happens —
//! gRPC calls by method and code, WAL fsync and backend commit latencies, leader changes,
//! failed and pending proposals, and the peer network (round trips, bytes, send failures).

use std::time::Duration;

use etcd_compat_tests::{http_get, wait_until, Cluster, Kind, Server};

/// The metrics the etcd-mixin alerts (and the kube-prometheus etcd dashboard) query.
const ALERT_METRICS: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
    "process_resident_memory_bytes",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
];

fn metrics(url: &str) -> String {
    let (code, body) = http_get(&format!("{url}/metrics")).expect("/metrics");
    assert_eq!(code, 200);
    body
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|want| labelset.contains(want))
            .then(|| value.trim().parse().ok())?
    })
}

/// The `# HELP` and `# TYPE` lines of `name`.
fn described(body: &str, name: &str) -> Vec<String> {
    ["# HELP ", "# TYPE "]
        .iter()
        .filter_map(|p| {
            body.lines()
                .find(|l| {
                    l.strip_prefix(p)
                        .is_some_and(|r| r.split(' ').next() == Some(name))
                })
                .map(str::to_string)
        })
        .collect()
}

async fn put_and_get(url: &str) {
    let mut c = etcd_client::Client::connect([url], None)
        .await
        .expect("connect");
    c.put("k", "v", None).await.expect("put");
    c.get("k", None).await.expect("get");
    // Enough bytes that tandem commits its keyspace durably (every 4 MiB or 1,000 entries),
    // which is what the backend commit histogram counts.
    for i in 0..4 {
        c.put(format!("big{i}"), vec![b'x'; 1 << 20], None)
            .await
            .expect("put a large value");
    }
    let _ = c
        .get(
            "k",
            Some(etcd_client::GetOptions::new().with_revision(1_000)),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alerts_metrics_are_etcds() {
    let flags = ["--metrics=extensive"];
    let etcd = Server::start_with(Kind::Etcd35, &flags).expect("etcd");
    let tandem = Server::start_with(Kind::Tandem, &flags).expect("tandem");
    put_and_get(&etcd.url()).await;
    put_and_get(&tandem.url()).await;
    let (theirs, ours) = (metrics(&etcd.url()), metrics(&tandem.url()));
    for name in ALERT_METRICS {
        let theirs_d = described(&theirs, name);
        assert_eq!(theirs_d.len(), 2, "etcd describes {name}");
        assert_eq!(
            described(&ours, name),
            theirs_d,
            "{name} described as etcd does"
        );
    }
    let put = [
        "grpc_code=\"OK\"",
        "grpc_method=\"Put\"",
        "grpc_service=\"etcdserverpb.KV\"",
        "grpc_type=\"unary\"",
    ];
    let compacted = ["grpc_code=\"OutOfRange\"", "grpc_method=\"Range\""];
    for (who, body) in [("etcd", &theirs), ("tandem", &ours)] {
        let at_least_one = |name: &str, labels: &[&str]| {
            let v = sample(body, name, labels);
            assert!(
                v.is_some_and(|v| v >= 1.0),
                "{who}: {name}{labels:?} = {v:?}"
            );
        };
        at_least_one("grpc_server_started_total", &put[1..]);
        at_least_one("grpc_server_handled_total", &put);
        at_least_one("grpc_server_handled_total", &compacted);
        at_least_one("grpc_server_handling_seconds_count", &put[1..]);
        at_least_one("etcd_disk_wal_fsync_duration_seconds_count", &[]);
        at_least_one("etcd_disk_backend_commit_duration_seconds_count", &[]);
        at_least_one("etcd_server_leader_changes_seen_total", &[]);
        at_least_one(
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            &["le=\"+Inf\""],
        );
        // The four 1 MiB values were received; every answer was sent.
        let received = sample(body, "etcd_network_client_grpc_received_bytes_total", &[]);
        assert!(
            received.is_some_and(|v| v >= (4 << 20) as f64),
            "{who}: bytes received from clients {received:?}"
        );
        at_least_one("etcd_network_client_grpc_sent_bytes_total", &[]);
    }
    // Messages per method as go-grpc-prometheus counts them for etcd: a unary call's request,
    // and its answer when it succeeds.
    for name in [
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
    ] {
        assert_eq!(described(&ours, name), described(&theirs, name), "{name}");
        for method in ["grpc_method=\"Put\"", "grpc_method=\"Range\""] {
            assert_eq!(
                sample(&ours, name, &[method]),
                sample(&theirs, name, &[method]),
                "{name} {method}: tandem (left), etcd (right)"
            );
        }
    }
    // Basic metrics (the default) have no per-method latency histogram, as etcd's.
    let basic = Server::start(Kind::Tandem).expect("tandem, basic metrics");
    put_and_get(&basic.url()).await;
    let body = metrics(&basic.url());
    assert!(sample(&body, "grpc_server_handled_total", &put).is_some());
    assert!(
        !body.contains("grpc_server_handling_seconds"),
        "basic metrics"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_and_proposal_metrics_follow_what_happens() {
    let mut cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("cluster");
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    put_and_get(&cluster.members[leader].url()).await;
    let url = cluster.members[leader].url();
    let body = metrics(&url);
    assert!(
        sample(
            &body,
            "etcd_network_peer_round_trip_time_seconds_count",
            &["To=\""]
        )
        .is_some_and(|v| v > 0.0),
        "round trips to peers: {body}"
    );
    assert!(
        sample(&body, "etcd_network_peer_sent_bytes_total", &["To=\""]).is_some_and(|v| v > 0.0)
    );
    // A follower receives from the leader.
    let down: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let follower = metrics(&cluster.members[down[1]].url());
    assert!(
        sample(
            &follower,
            "etcd_network_peer_received_bytes_total",
            &["From=\""]
        )
        .is_some_and(|v| v > 0.0),
        "bytes received from the leader: {follower}"
    );
    // A member down: the leader's messages to it fail.
    cluster.members[down[0]].stop("KILL").expect("kill");
    wait_until(
        "send failures to the killed member",
        Duration::from_secs(30),
        || {
            sample(
                &metrics(&url),
                "etcd_network_peer_sent_failures_total",
                &["To=\""],
            )
            .is_some_and(|v| v > 0.0)
        },
    )
    .expect("etcd_network_peer_sent_failures_total counts");
    // No quorum: a write fails, and counts as a failed proposal.
    cluster.members[down[1]].stop("KILL").expect("kill");
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(20));
    let mut c = etcd_client::Client::connect([url.as_str()], Some(opts))
        .await
        .expect("connect");
    assert!(
        c.put("k2", "v", None).await.is_err(),
        "a write without quorum"
    );
    let failed = sample(&metrics(&url), "etcd_server_proposals_failed_total", &[]);
    assert!(
        failed.is_some_and(|v| v >= 1.0),
        "failed proposals: {failed:?}"
    );
}
