//! A member started as the witness (`--initial-cluster-witness` names it): the `witness` crate's
//! voter on the peer port, with `/health`, `/version` and `/metrics` there and on any client
//! URL, and every gRPC request on a client URL answered `Unavailable` with the data members to
//! use instead (scripts that start every member alike give the witness client URLs too).

use std::future::Future;
use std::sync::Arc;

use crate::conn::Listener;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use raft::tandempb::raft_peer_server::RaftPeerServer;
use witness::{Witness, WitnessOptions};

use crate::config::Config;
use crate::http::{gauge, labelled, raft_gauges, render, version_body};

struct WitnessNode {
    config: Config,
    witness: Witness,
}

/// Runs the witness until `shutdown` completes.
pub async fn run(
    config: Config,
    client_listeners: Vec<Listener>,
    peer_listeners: Vec<Listener>,
    serving_tls: crate::ServingTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = WitnessOptions {
        data_dir: config.data_dir.clone(),
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        initial_members: config.initial_members.clone(),
        self_node: config.self_node.clone(),
        bootstrap: config.bootstrap,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        forward_timeout: crate::node::request_timeout(config.election_timeout_ms),
        incarnation: config.incarnation,
        max_payload_bytes: config.witness_max_payload_bytes,
    };
    let witness = Witness::open(options).await?;
    let node = Arc::new(WitnessNode { config, witness });
    let stopped = crate::stop_signal(shutdown);
    let mut servers = Vec::new();
    for listener in client_listeners {
        tracing::info!(address = %listener.describe(), "serving the witness's HTTP endpoints; gRPC clients are sent to the data members");
        let routes = tonic::service::Routes::from(http_routes(&node, true));
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                crate::incoming(listener, serving_tls.client.as_ref()),
                stopped(),
            );
        servers.push(tokio::spawn(server));
    }
    let http = tonic::service::Routes::from(http_routes(&node, false));
    servers.extend(crate::serve_metrics(&node.config, http, &serving_tls, &stopped).await?);
    for listener in peer_listeners {
        tracing::info!(address = %listener.describe(), "serving peer traffic (witness)");
        let routes = tonic::service::Routes::from(http_routes(&node, false)).add_service(
            RaftPeerServer::new(node.witness.peer_service()).max_decoding_message_size(64 << 20),
        );
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                crate::incoming(listener, serving_tls.peer.as_ref()),
                stopped(),
            );
        servers.push(tokio::spawn(server));
    }
    tracing::info!(
        name = %node.config.name,
        member_id = %format!("{:x}", node.config.member_id),
        cluster_id = %format!("{:x}", node.config.cluster_id),
        "ready: this member is the witness (no key-value data, no client API)"
    );
    stopped().await;
    tracing::info!("shutting down");
    crate::join_servers(servers, crate::SHUTDOWN_GRACE).await;
    node.witness.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP endpoints; on a client URL (`clients`) everything else is answered as [`not_here`].
fn http_routes(node: &Arc<WitnessNode>, clients: bool) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics));
    let router = match clients {
        true => router.fallback(not_here),
        false => router,
    };
    router.with_state(Arc::clone(node))
}

/// The data members a client should use instead, as "name (client URLs)".
fn data_members(node: &WitnessNode) -> String {
    let members: Vec<String> = node
        .witness
        .members()
        .into_iter()
        .filter(|(_, n, _)| !n.witness)
        .map(|(_, n, _)| match n.client_urls.is_empty() {
            true => n.name,
            false => format!("{} ({})", n.name, n.client_urls.join(",")),
        })
        .collect();
    members.join(", ")
}

/// Any gRPC request on a client URL: `Unavailable`, naming the data members; a request to
/// etcd's JSON gateway (`/v3/...`) gets the same error as the gateway's JSON body (503).
async fn not_here(
    State(node): State<Arc<WitnessNode>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let status = tonic::Status::unavailable(format!(
        "this member ({}) is the cluster's witness: it holds no key-value data and serves no \
         client; use a data member: {}",
        node.config.name,
        data_members(&node)
    ));
    if crate::gateway::is_gateway_path(uri.path()) {
        return crate::gateway::error_response(&status);
    }
    status.into_http()
}

async fn health(State(node): State<Arc<WitnessNode>>) -> impl IntoResponse {
    let (status, body) = match node.witness.status().leader {
        Some(_) => (
            axum::http::StatusCode::OK,
            r#"{"health":"true","reason":""}"#,
        ),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#,
        ),
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

async fn version(State(node): State<Arc<WitnessNode>>) -> impl IntoResponse {
    version_body(&node.config.server_version)
}

/// The size of the files under `dir` (the witness's member directory is two levels deep).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn metrics(State(node): State<Arc<WitnessNode>>) -> impl IntoResponse {
    let mut registry = Registry::default();
    let raft = node.witness.status();
    raft_gauges(&mut registry, &raft);
    crate::http::peer_metrics(&mut registry);
    gauge(
        &mut registry,
        "tandem_server_is_witness",
        "Whether this member is the witness (no key-value data). 1 if is, 0 otherwise.",
        1,
    );
    gauge(
        &mut registry,
        "tandem_witness_log_entries",
        "Entries in the witness's raft log (ids, and payloads a data node lacks).",
        node.witness.log_entries() as i64,
    );
    let (held, cap) = node.witness.held_payloads();
    gauge(
        &mut registry,
        "tandem_witness_held_payload_bytes",
        "Bytes of entry payloads the witness holds for a data node that is behind (W4).",
        held as i64,
    );
    gauge(
        &mut registry,
        "tandem_witness_max_payload_bytes",
        "The most entry payload bytes the witness holds (--witness-max-payload-bytes); past it no write commits until a data node has caught up.",
        cap as i64,
    );
    gauge(
        &mut registry,
        "tandem_witness_data_floor",
        "The highest log index every data node is known to hold.",
        node.witness.data_floor() as i64,
    );
    gauge(
        &mut registry,
        "tandem_witness_disk_bytes",
        "Bytes of the witness's data dir on disk (its raft log's segments and state).",
        disk_bytes(&node.config.data_dir.join("member")) as i64,
    );
    labelled(
        &mut registry,
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        "server_version",
        &node.config.server_version,
    );
    crate::process_metrics::register(&mut registry);
    render(&registry)
}
