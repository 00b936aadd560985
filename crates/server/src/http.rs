//! The HTTP endpoints etcd serves next to gRPC on the client port: `/health`, `/livez`,
//! `/readyz` (with etcd's `?exclude=`, `?serializable=` and `?verbose` forms), `/version` and
//! `/metrics` (Prometheus text, etcd's metric names).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::node::Node;

/// How long a health check's read may take (etcd: 5 s for /health, 2 s is what the apiserver
/// gives its own probe).
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(node)
}

type Params = Query<HashMap<String, String>>;

/// One named check and its failure reason, if any.
type Check = (&'static str, Option<String>);

async fn linearizable_read(node: &Node) -> Option<String> {
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.read_index()).await {
        Ok(Ok(())) => None,
        Ok(Err(s)) => Some(s.message().to_string()),
        Err(_) => Some("timed out".into()),
    }
}

fn alarm_failure(node: &Node, excluded: &[&str]) -> Option<String> {
    let alarms: Vec<&str> = node
        .alarms()
        .iter()
        .map(|a| crate::maintenance::alarm_name(a.alarm))
        .filter(|a| !excluded.contains(a))
        .collect();
    (!alarms.is_empty()).then(|| format!("ALARM {}", alarms.join(",")))
}

/// etcd's `/health`: JSON `{"health":"true","reason":""}`, 503 when unhealthy.
async fn health(State(node): State<Arc<Node>>, Query(q): Params) -> impl IntoResponse {
    let excluded: Vec<&str> = q
        .get("exclude")
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let serializable = q.get("serializable").is_some_and(|v| v == "true");
    let reason = if let Some(r) = alarm_failure(&node, &excluded) {
        Some(r)
    } else if node.leader().is_none() {
        Some("RAFT NO LEADER".to_string())
    } else if !serializable {
        linearizable_read(&node)
            .await
            .map(|e| format!("QGET ERROR: {e}"))
    } else {
        None
    };
    let (code, healthy, reason) = match reason {
        None => (StatusCode::OK, "true", String::new()),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, "false", r),
    };
    let body = serde_json::json!({ "health": healthy, "reason": reason }).to_string();
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

fn render_checks(
    checks: Vec<Check>,
    q: &HashMap<String, String>,
    kind: &str,
) -> (StatusCode, String) {
    let excluded: Vec<&str> = q
        .get("exclude")
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let verbose = q.contains_key("verbose");
    let mut body = String::new();
    let mut failed = false;
    for (name, failure) in checks {
        if excluded.contains(&name) {
            body.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match failure {
            None => body.push_str(&format!("[+]{name} ok\n")),
            Some(reason) => {
                failed = true;
                body.push_str(&format!("[-]{name} failed: {reason}\n"));
            }
        }
    }
    if failed {
        body.push_str(&format!("{kind} check failed\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body)
    } else if verbose {
        body.push_str(&format!("{kind} check passed\n"));
        (StatusCode::OK, body)
    } else {
        (StatusCode::OK, "ok".into())
    }
}

/// A local read of the health key: fails only if the keyspace cannot be read.
fn serializable_read(node: &Node) -> Option<String> {
    let probe = mvcc::RangeRequest {
        key: b"health".to_vec(),
        ..Default::default()
    };
    node.store.range(&probe).err().map(|e| e.to_string())
}

async fn livez(State(node): State<Arc<Node>>, Query(q): Params) -> impl IntoResponse {
    let serializable = serializable_read(&node);
    render_checks(vec![("serializable_read", serializable)], &q, "livez")
}

async fn readyz(State(node): State<Arc<Node>>, Query(q): Params) -> impl IntoResponse {
    let corrupt = node
        .alarms()
        .iter()
        .any(|a| a.alarm == mvcc::AlarmType::Corrupt)
        .then(|| "data corruption alarm".to_string());
    let serializable = serializable_read(&node);
    let excluded = q
        .get("exclude")
        .is_some_and(|e| e.split(',').any(|c| c == "linearizable_read"));
    let linearizable = if excluded {
        None
    } else {
        linearizable_read(&node).await
    };
    render_checks(
        vec![
            ("data_corruption", corrupt),
            ("serializable_read", serializable),
            ("linearizable_read", linearizable),
        ],
        &q,
        "readyz",
    )
}

async fn version(State(node): State<Arc<Node>>) -> impl IntoResponse {
    version_body(&node.config.server_version)
}

/// `/version` as etcd answers it, plus tandem's own version.
pub(crate) fn version_body(server_version: &str) -> impl IntoResponse {
    let body = serde_json::json!({
        "etcdserver": server_version,
        "etcdcluster": crate::config::DEFAULT_CLUSTER_VERSION,
        "storage": crate::maintenance::STORAGE_VERSION,
        "tandem": env!("CARGO_PKG_VERSION"),
    })
    .to_string();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// prometheus-client writes OpenMetrics; etcd serves Prometheus's text format. Two
/// differences show: every help text gets a period appended (etcd's are given verbatim, some end
/// with one, some do not: the added one is taken off), and a counter's HELP and TYPE lines name
/// it without its `_total` suffix (in Prometheus's format they name the sample, as etcd's do).
pub(crate) fn verbatim_help(encoded: &str) -> String {
    let counters: std::collections::HashSet<&str> = encoded
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(encoded.len());
    for line in encoded.lines() {
        let line = match line.starts_with("# HELP ") {
            true => line.strip_suffix('.').unwrap_or(line),
            false => line,
        };
        let named = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let name = rest.split(' ').next()?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total{}", &rest[name.len()..]))
        });
        out.push_str(named.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

pub(crate) fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// A gauge of 1 with one label, as etcd reports versions.
pub(crate) fn labelled(registry: &mut Registry, name: &str, help: &str, label: &str, value: &str) {
    let f: Family<Vec<(String, String)>, Gauge> = Family::default();
    f.get_or_create(&vec![(label.to_string(), value.to_string())])
        .set(1);
    registry.register(name, help, f);
}

/// What every member reports of raft, the witness included: etcd's leader gauges and the term.
pub(crate) fn raft_gauges(registry: &mut Registry, raft: &replication::ReplicaStatus) {
    gauge(
        registry,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        i64::from(raft.leader.is_some()),
    );
    gauge(
        registry,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        i64::from(raft.is_leader),
    );
    gauge(
        registry,
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        i64::from(raft.is_learner),
    );
    // etcd 3.5 exports no term gauge; this one is tandem's own.
    gauge(
        registry,
        "tandem_raft_term",
        "The current raft term.",
        raft.term as i64,
    );
}

/// The Prometheus text of `registry`, with etcd's help texts.
pub(crate) fn render(registry: &Registry) -> axum::response::Response {
    let mut encoded = String::new();
    if encode(&mut encoded, registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        verbatim_help(&encoded),
    )
        .into_response()
}

/// etcd's disk latency histograms and the server counters counted as things happen.
fn disk_and_server_metrics(registry: &mut Registry, node: &Node) {
    registry.register(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        node.replica.log_stats().fsync_seconds.clone(),
    );
    registry.register(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        replication::state_machine::BACKEND_COMMIT_SECONDS.clone(),
    );
    let m = &node.metrics;
    m.grpc.register(registry);
    registry.register(
        "etcd_server_leader_changes_seen",
        "The number of leader changes seen.",
        m.leader_changes.clone(),
    );
    registry.register(
        "etcd_server_proposals_failed",
        "The total number of failed proposals seen.",
        m.proposals_failed.clone(),
    );
    registry.register(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        m.proposals_pending.clone(),
    );
}

/// etcd's peer network metrics (`raft::peer_metrics`), on every member, the witness included.
pub(crate) fn peer_metrics(registry: &mut Registry) {
    let p = raft::peer_metrics::peers();
    registry.register(
        "etcd_network_peer_sent_bytes",
        "The total number of bytes sent to peers.",
        p.sent_bytes.clone(),
    );
    registry.register(
        "etcd_network_peer_received_bytes",
        "The total number of bytes received from peers.",
        p.received_bytes.clone(),
    );
    registry.register(
        "etcd_network_peer_sent_failures",
        "The total number of send failures from peers.",
        p.sent_failures.clone(),
    );
    registry.register(
        "etcd_network_peer_round_trip_time_seconds",
        "Round-Trip-Time histogram between peers",
        p.round_trip.clone(),
    );
}

/// tandem's own: every member's role, whether the witness is engaged, how far each follower
/// lags (entries, and the age of the oldest entry it lacks).
fn two_node_metrics(registry: &mut Registry, node: &Node) {
    gauge(
        registry,
        "tandem_server_is_witness",
        "Whether this member is the witness (no key-value data). 1 if is, 0 otherwise.",
        0,
    );
    let roles: Family<Vec<(String, String)>, Gauge> = Family::default();
    let names: HashMap<u64, String> = node
        .replica
        .members()
        .into_iter()
        .map(|(id, n, learner)| {
            let role = match (n.witness, learner) {
                (true, _) => "witness",
                (false, true) => "learner",
                (false, false) => "data",
            };
            roles
                .get_or_create(&vec![
                    ("member".to_string(), n.name.clone()),
                    ("id".to_string(), format!("{id:x}")),
                    ("role".to_string(), role.to_string()),
                ])
                .set(1);
            (id, n.name)
        })
        .collect();
    registry.register(
        "tandem_member_role",
        "Each member of the cluster and its role (data, witness or learner); always 1.",
        roles,
    );
    gauge(
        registry,
        "tandem_witness_engaged",
        "Whether the witness's acknowledgements count now (this member leads and a data follower is behind). 1 if so.",
        i64::from(node.replica.witness_engaged()),
    );
    gauge(
        registry,
        "tandem_fence_armed",
        "With --fence-command: whether this member may fence its peer should it be lost (the peer confirmed the committed two-voter membership since this member started). 1 if so.",
        i64::from(node.fence_armed.load(std::sync::atomic::Ordering::Relaxed)),
    );
    let entries: Family<Vec<(String, String)>, Gauge> = Family::default();
    let seconds: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>> =
        Family::default();
    for lag in node.replica.follower_lags() {
        let label = vec![(
            "member".to_string(),
            names
                .get(&lag.member)
                .cloned()
                .unwrap_or_else(|| format!("{:x}", lag.member)),
        )];
        entries.get_or_create(&label).set(lag.entries as i64);
        seconds.get_or_create(&label).set(lag.seconds);
    }
    registry.register(
        "tandem_follower_lag_entries",
        "On the leader: log entries each follower is not known to hold.",
        entries,
    );
    registry.register(
        "tandem_follower_lag_seconds",
        "On the leader: how long the oldest entry each follower lacks has been in the log.",
        seconds,
    );
}

/// etcd's snapshot transfer metrics, by peer (`To` when sending, `From` when receiving; the
/// member id in hex, as etcd prints it). Only peers a snapshot went to or came from appear.
fn snapshot_transfer_metrics(registry: &mut Registry, node: &Node) {
    use raft::transfers::Direction;
    for (direction, label, what) in [
        (Direction::Send, "To", "send"),
        (Direction::Receive, "From", "receive"),
    ] {
        let inflight: Family<Vec<(String, String)>, Gauge> = Family::default();
        let success: Family<Vec<(String, String)>, Gauge> = Family::default();
        let failures: Family<Vec<(String, String)>, Gauge> = Family::default();
        for (peer, c) in node.replica.snapshot_transfers(direction) {
            let l = vec![(label.to_string(), format!("{peer:x}"))];
            inflight.get_or_create(&l).set(i64::from(c.inflight));
            success.get_or_create(&l).set(c.success as i64);
            failures.get_or_create(&l).set(c.failures as i64);
        }
        registry.register(
            format!("etcd_network_snapshot_{what}_inflights_total"),
            format!("Total number of inflight snapshot {what}s"),
            inflight,
        );
        registry.register(
            format!("etcd_network_snapshot_{what}_success"),
            format!("Total number of successful snapshot {what}s"),
            success,
        );
        registry.register(
            format!("etcd_network_snapshot_{what}_failures"),
            format!("Total number of snapshot {what} failures"),
            failures,
        );
    }
}

/// Metrics are read from the node's state at scrape time, under etcd's names.
async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let mut registry = Registry::default();
    let raft = node.status();
    let store = node.store.status().ok();
    raft_gauges(&mut registry, &raft);
    gauge(
        &mut registry,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        raft.last_log_index as i64,
    );
    gauge(
        &mut registry,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        raft.applied_index as i64,
    );
    gauge(
        &mut registry,
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        node.config.quota_backend_bytes,
    );
    if let Some(s) = store {
        gauge(
            &mut registry,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            s.db_size,
        );
        gauge(
            &mut registry,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            s.db_size_in_use,
        );
        gauge(
            &mut registry,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            s.revision,
        );
        gauge(
            &mut registry,
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            s.compacted,
        );
        gauge(
            &mut registry,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            s.index_keys as i64,
        );
        gauge(
            &mut registry,
            "tandem_mvcc_index_entries",
            "Key changes (revisions) kept in the in-memory index.",
            s.index_entries as i64,
        );
    }
    let log = node.replica.log_stats();
    let load =
        |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as i64;
    gauge(
        &mut registry,
        "tandem_raft_log_commits_total",
        "Durable commits of the raft log (one fsync each).",
        load(&log.commits),
    );
    gauge(
        &mut registry,
        "tandem_raft_log_entries_total",
        "Raft log entries made durable.",
        load(&log.entries),
    );
    gauge(
        &mut registry,
        "tandem_raft_log_commit_microseconds_total",
        "Time spent in durable commits of the raft log.",
        load(&log.commit_micros),
    );
    disk_and_server_metrics(&mut registry, &node);
    peer_metrics(&mut registry);
    two_node_metrics(&mut registry, &node);
    snapshot_transfer_metrics(&mut registry, &node);
    crate::process_metrics::register(&mut registry);
    labelled(
        &mut registry,
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        "server_version",
        &node.config.server_version,
    );
    labelled(
        &mut registry,
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        "cluster_version",
        crate::config::DEFAULT_CLUSTER_VERSION,
    );
    render(&registry)
}
