//! The tandem node: etcd's gRPC services and HTTP endpoints over the replicated keyspace.
//!
//! `run` is the whole server: tests start it in-process with their own listeners and shutdown
//! signal, and `main` starts it from etcd's flags.

pub mod auth;
pub mod authn;
pub mod cluster;
pub mod coalesce;
pub mod compaction;
pub mod concurrency;
pub mod config;
pub mod conn;
pub mod convert;
pub mod corrupt_check;
pub mod disk_guard;
pub mod errors;
pub mod fence;
pub mod gateway;
pub mod goaway;
pub mod grpc_metrics;
pub mod http;
pub mod identity;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod mutants;
pub mod node;
mod process_metrics;
pub mod recover;
pub mod watch;
pub mod witness_node;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use etcd_api::tandempb::leader_lease_server::LeaderLeaseServer;
use raft::tandempb::raft_peer_server::RaftPeerServer;
use replication::{Replica, ReplicaConfig};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::conn::{Conn, Listener};
use crate::node::Node;

/// gRPC allows this much beyond `--max-request-bytes` before refusing a message outright; the
/// rest is refused with etcd's `request is too large` (etcd does the same).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Accepted connections with Nagle's algorithm off: gRPC writes a response's headers and data
/// separately, and with Nagle on the second write waits for the client's delayed ACK (~40 ms).
/// Over TLS when the listen URL is `https://` (`conn`).
pub(crate) fn incoming(
    listener: Listener,
    tls: Option<&Arc<tls::ServerTls>>,
) -> futures::stream::BoxStream<'static, std::io::Result<Conn>> {
    let tls = tls.filter(|_| listener.secure).cloned();
    conn::connections(listener, tls)
}

/// Client connections: as [`incoming`], with responses coalesced into fewer writes
/// ([`coalesce`]).
fn client_incoming(
    listener: Listener,
    tls: Option<&Arc<tls::ServerTls>>,
) -> impl futures::Stream<Item = std::io::Result<coalesce::Coalesced>> {
    use futures::StreamExt;
    incoming(listener, tls).map(|conn| conn.map(coalesce::Coalesced::new))
}

/// Binds every listen URL of `config` (TLS or not, as the URL's scheme says).
pub async fn bind(urls: &[String]) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for url in urls {
        let socket = match config::unix_socket_path(url) {
            Some(path) => {
                // A socket file left by an earlier run, as etcd removes it.
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("listening on {url}")),
                }
                let l = tokio::net::UnixListener::bind(&path)
                    .with_context(|| format!("listening on {url}"))?;
                conn::Socket::Unix(l, path)
            }
            None => {
                let addr = config::listen_addr(url).await?;
                conn::Socket::Tcp(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("listening on {url}"))?,
                )
            }
        };
        out.push(Listener {
            socket,
            secure: config::is_secure(url),
        });
    }
    Ok(out)
}

/// `--listen-metrics-urls`: `/metrics`, `/health` and the other HTTP endpoints on URLs of their
/// own, plain HTTP for `http://` (what kubeadm's probes use) and the client TLS for `https://`,
/// as etcd serves them.
pub(crate) async fn serve_metrics(
    config: &Config,
    routes: tonic::service::Routes,
    serving_tls: &ServingTls,
    stopped: &(impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + ?Sized),
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>> {
    let mut servers = Vec::new();
    for url in &config.metrics_urls {
        if config::is_secure(url) && serving_tls.client.is_none() {
            anyhow::bail!(
                "client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url"
            );
        }
    }
    for listener in bind(&config.metrics_urls).await? {
        tracing::info!(address = %listener.describe(), "serving metrics (HTTP)");
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(
                incoming(listener, serving_tls.client.as_ref()),
                stopped(),
            );
        servers.push(tokio::spawn(server));
    }
    Ok(servers)
}

/// The TLS of this member's listeners (client side, peer side), and the peer TLS it dials with
/// (given to `raft::dial`). `None` for a side that has no certificate.
pub struct ServingTls {
    pub client: Option<Arc<tls::ServerTls>>,
    pub peer: Option<Arc<tls::ServerTls>>,
}

impl ServingTls {
    /// Builds both sides from `config` (making `--auto-tls` certificates first), and sets the
    /// process's peer dialing TLS when the peer side has a certificate.
    pub fn start(config: &mut Config) -> anyhow::Result<Self> {
        let (data_dir, clients, peers) = (
            config.data_dir.clone(),
            config.client_urls.clone(),
            config.peer_urls.clone(),
        );
        config.tls.materialize(&data_dir, &clients, &peers)?;
        let t = &config.tls;
        let server = |settings: &tls::Settings, side: &str| -> anyhow::Result<_> {
            if settings.is_empty() {
                return Ok(None);
            }
            let s =
                tls::ServerTls::new(settings, &t.policy).with_context(|| format!("{side} TLS"))?;
            Ok(Some(Arc::new(s)))
        };
        let client = server(&t.client, "client")?;
        let peer = server(&t.peer, "peer")?;
        if !t.client.is_empty() {
            // Only the corruption checks dial peers' client URLs; without a CA to verify them
            // (a server certificate alone), they report the peers unreachable.
            match tls::ClientTls::new(&t.client, &t.policy) {
                Ok(dialer) => {
                    let _ = corrupt_check::CLIENT_DIALER.set(Arc::new(dialer));
                }
                Err(e) => tracing::info!(error = %e, "not dialing peers' https client URLs"),
            }
        }
        if !t.peer.is_empty() {
            let dialer = tls::ClientTls::new(&t.peer, &t.policy).context("peer TLS (dialing)")?;
            if let Err(e) = raft::dial::use_peer_tls(Arc::new(dialer)) {
                tracing::debug!(error = %e, "peer TLS already set in this process");
            }
        }
        Ok(ServingTls { client, peer })
    }
}

/// Runs a node until `shutdown` completes, then stops gracefully: listeners close, in-flight
/// requests finish, raft stops and the keyspace is made durable.
pub async fn run(
    mut config: Config,
    client_listeners: Vec<Listener>,
    peer_listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for note in &config.inert_flags {
        tracing::info!(flag = %note, "flag accepted for etcd's sake; it has no effect in tandem");
    }
    let serving_tls = ServingTls::start(&mut config)?;
    let config = greet_if_new(identity::settle(config)?).await?;
    if config.is_witness {
        return witness_node::run(
            config,
            client_listeners,
            peer_listeners,
            serving_tls,
            shutdown,
        )
        .await;
    }
    let store = Replica::open_store_with_cache(&config.data_dir, config.backend_cache_bytes)?;
    let hub = watch::WatchHub::new(Arc::clone(&store));
    let replica_config = ReplicaConfig {
        data_dir: config.data_dir.clone(),
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        initial_members: config.initial_members.clone(),
        self_node: config.self_node.clone(),
        bootstrap: config.bootstrap,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        snapshot_count: config.snapshot_count,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        forward_timeout: node::request_timeout(config.election_timeout_ms),
        incarnation: config.incarnation,
        fencing: config.fence.is_some(),
    };
    // Serve at once, as etcd does: until a leader is known, requests that need one fail with
    // `etcdserver: no leader` (Unavailable, which clients retry).
    let replica = Replica::open(replica_config, store, hub.clone()).await?;
    let node = Node::new(config, replica, hub);
    if node.config.initial_corrupt_check {
        corrupt_check::initial_check(&node).await?;
    }
    if !node.config.corrupt_check_interval.is_zero() {
        let interval = node.config.corrupt_check_interval;
        tokio::spawn(corrupt_check::run_periodic(Arc::clone(&node), interval));
    }
    let background = [
        tokio::spawn(lease::expiry_loop(Arc::clone(&node))),
        tokio::spawn(compaction::run(Arc::clone(&node))),
        tokio::spawn(disk_guard::run(Arc::clone(&node))),
    ];

    let removed = node.replica.removed();
    let fence_failure = Arc::new(std::sync::Mutex::new(None));
    let fenced = fenced(&node, Arc::clone(&fence_failure));
    let stopped = stop_signal(async move {
        tokio::select! {
            () = shutdown => {}
            () = removed => {}
            () = fenced => {}
        }
    });

    let mut servers = Vec::new();
    for listener in client_listeners {
        tracing::info!(address = %listener.describe(), "serving client traffic (gRPC and HTTP)");
        let routes = client_routes(&node);
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(node.config.grpc_keepalive.0).filter(|d| !d.is_zero()))
            .http2_keepalive_timeout(Some(node.config.grpc_keepalive.1))
            .max_concurrent_streams(Some(node.config.max_concurrent_streams))
            .layer(NameUnknownMethods)
            .layer(grpc_metrics::CountCalls(Arc::clone(&node.metrics.grpc)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                client_incoming(listener, serving_tls.client.as_ref()),
                stopped(),
            );
        servers.push(tokio::spawn(server));
    }
    let http = tonic::service::Routes::from(http::router(Arc::clone(&node)));
    servers.extend(serve_metrics(&node.config, http, &serving_tls, &stopped).await?);
    for listener in peer_listeners {
        tracing::info!(address = %listener.describe(), "serving peer traffic");
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                RaftPeerServer::new(node.replica.peer_service())
                    .max_decoding_message_size(64 << 20),
            )
            .add_service(LeaderLeaseServer::new(lease::LeaderLeaseService {
                node: Arc::clone(&node),
            }))
            .serve_with_incoming_shutdown(incoming(listener, serving_tls.peer.as_ref()), stopped());
        servers.push(tokio::spawn(server));
    }
    tracing::info!(
        name = %node.config.name,
        member_id = %format!("{:x}", node.config.member_id),
        cluster_id = %format!("{:x}", node.config.cluster_id),
        "ready to serve client requests"
    );
    stopped().await;
    tracing::info!("shutting down");
    // After a fence the member starts again at once to go on alone: no request in flight can
    // finish before that anyway (it has no quorum).
    let grace = if restart_after_fence(&node.config.data_dir) {
        Duration::ZERO
    } else {
        SHUTDOWN_GRACE
    };
    join_servers(servers, grace).await;
    for b in background {
        b.abort();
    }
    node.replica.shutdown().await?;
    tracing::info!("stopped");
    if let Some(e) = fence_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        // A failure, so that a supervisor (systemd's Restart=on-failure) starts it again.
        return Err(e);
    }
    Ok(())
}

/// With `--fence-command`: resolves once the lost peer is fenced, so that the node stops and
/// `main` starts it again to continue alone (`raft::fence`); never otherwise. If the marker
/// that records the fence cannot be written, it resolves too, with the error in `failure`.
fn fenced(
    node: &Arc<Node>,
    failure: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    let Some(fence) = node.config.fence.clone() else {
        return Box::pin(std::future::pending());
    };
    let e = node.config.election_timeout_ms;
    let settings = raft::policy::fence::Settings {
        loss_ms: e,
        delay_ms: fence.delay.as_millis() as u64,
        retry_ms: fence::retry_after(e).as_millis() as u64,
    };
    let watching = node
        .replica
        .fence(settings, Arc::clone(&node.fence_armed), move |peer| {
            let fence = fence.clone();
            async move { fence::run(&fence, &peer).await }
        });
    Box::pin(async move {
        if let Err(e) = watching.await {
            tracing::error!(error = %format!("{e:#}"), "fencing failed to record the peer's fence; stopping");
            *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(e.context("recording the peer's fence"));
        }
    })
}

/// Whether the node stopped to continue alone after fencing its peer: `main` starts it again.
pub fn restart_after_fence(data_dir: &std::path::Path) -> bool {
    data_dir.join("member").join(raft::fence::MARKER).exists()
}

/// `shutdown` shared: each call of the returned function is a future that completes once
/// `shutdown` has (one per server that stops with the node).
pub(crate) fn stop_signal(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    move || {
        let mut rx = stop_rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    }
}

/// How long the servers may take to finish their requests once a node stops; past it the
/// connections still open are dropped. A connection whose peer went silent (a partition) would
/// otherwise hold the stop forever.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Waits, up to `grace`, for every server task to stop (after the stop signal), logging those
/// that failed; those still running then are aborted.
pub(crate) async fn join_servers(
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    grace: Duration,
) {
    let aborts: Vec<tokio::task::AbortHandle> = servers.iter().map(|s| s.abort_handle()).collect();
    let joined = tokio::time::timeout(grace, async {
        for s in servers {
            match s.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "server task failed"),
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the grace period are dropped"
        );
        for a in aborts {
            a.abort();
        }
    }
}

/// How long a new member waits for each peer's answer to its greeting.
const GREETING_TIMEOUT: Duration = Duration::from_secs(1);

/// A member on a new data dir first asks its peers whether they know it by another incarnation
/// (its data dir was wiped, W5), or belong to another cluster (flags that disagree), and
/// refuses to start if one does, before anything is written; then its identity is stored.
async fn greet_if_new((config, fresh): (Config, bool)) -> anyhow::Result<Config> {
    if !fresh {
        return Ok(config);
    }
    let config = if config.bootstrap {
        config
    } else {
        join_existing(config).await?
    };
    let peers: Vec<String> = config
        .initial_members
        .iter()
        .filter(|(id, _)| **id != config.member_id)
        .filter_map(|(_, n)| n.peer_urls.first().cloned())
        .collect();
    let me = raft::incarnation::Incarnations::in_memory(config.member_id, config.incarnation);
    raft::network::greet(&peers, config.cluster_id, &me, GREETING_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?;
    identity::store_new(&config)?;
    Ok(config)
}

/// How long a member joining an existing cluster keeps asking its peers for the membership.
const JOIN_PATIENCE: Duration = Duration::from_secs(10);

/// A member started on a new data dir with `--initial-cluster-state existing` joins a running
/// cluster that already added it (etcd's MemberAdd): it asks the peers of `--initial-cluster`
/// for the cluster id and the membership, checks that `--initial-cluster` names the same
/// members by their peer URLs (as etcd does), and takes the ids the cluster gave it.
async fn join_existing(mut config: Config) -> anyhow::Result<Config> {
    let mut own = config.advertise_peer_urls.clone();
    own.sort();
    let peers: Vec<String> = config
        .initial_members
        .values()
        .flat_map(|n| n.peer_urls.iter())
        .filter(|u| !own.contains(u))
        .cloned()
        .collect();
    if peers.is_empty() {
        anyhow::bail!(
            "refusing to start: --initial-cluster-state=existing, but --initial-cluster names no \
             other member to join"
        );
    }
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let (cluster_id, members) = loop {
        match raft::network::ask_members(&peers, GREETING_TIMEOUT).await {
            Ok(answer) => break (answer.cluster_id, answer.members),
            Err(e) if tokio::time::Instant::now() >= deadline => anyhow::bail!(
                "refusing to start: cannot fetch cluster info from peer urls ({e}); an existing \
                 cluster's members must be reachable to join it"
            ),
            Err(e) => {
                tracing::info!(error = %e, "asking the cluster's members who they are; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let sorted = |n: &raft::MemberNode| {
        let mut u = n.peer_urls.clone();
        u.sort();
        u
    };
    let mut local: Vec<Vec<String>> = config.initial_members.values().map(sorted).collect();
    let mut remote: Vec<Vec<String>> = members.iter().map(|(_, n, _)| sorted(n)).collect();
    local.sort();
    remote.sort();
    if local != remote {
        anyhow::bail!(
            "refusing to start: --initial-cluster does not match the cluster's members (cluster \
             {cluster_id:x} has peer URLs {remote:?}; --initial-cluster gives {local:?}): add this \
             member first (etcdctl member add) and start it with the --initial-cluster that \
             prints"
        );
    }
    let Some((id, node, _)) = members.iter().find(|(_, n, _)| sorted(n) == own) else {
        anyhow::bail!(
            "refusing to start: no member of cluster {cluster_id:x} has peer URLs {own:?}"
        );
    };
    if node.witness != config.is_witness {
        anyhow::bail!(
            "refusing to start: the cluster added member {id:x} as {}, but \
             --initial-cluster-witness makes this member {}",
            if node.witness {
                "the witness"
            } else {
                "a data member"
            },
            if config.is_witness {
                "the witness"
            } else {
                "a data member"
            },
        );
    }
    tracing::info!(member_id = %format!("{id:x}"), cluster_id = %format!("{cluster_id:x}"), "joining an existing cluster");
    config.member_id = *id;
    config.cluster_id = cluster_id;
    config.initial_members = members.into_iter().map(|(id, n, _)| (id, n)).collect();
    Ok(config)
}

fn client_routes(node: &Arc<Node>) -> tonic::service::Routes {
    let max = node.config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    let http_node = Arc::clone(node);
    let node = Arc::clone(node);
    let grpc = tonic::service::Routes::from(axum::Router::new())
        .add_service(
            KvServer::new(kv::KvService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            WatchServer::new(watch::WatchService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            LeaseServer::new(lease::LeaseService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            ClusterServer::new(cluster::ClusterService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            AuthServer::new(auth::AuthService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            etcd_api::v3lockpb::lock_server::LockServer::new(concurrency::LockService {
                node: Arc::clone(&node),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            etcd_api::v3electionpb::election_server::ElectionServer::new(
                concurrency::ElectionService { node },
            )
            .max_decoding_message_size(max),
        )
        .prepare()
        .into_axum_router();
    // etcd's JSON gateway calls the same gRPC services; it and the HTTP endpoints answer with
    // etcd's CORS headers.
    let http = http::router(Arc::clone(&http_node))
        .merge(gateway::router(
            // Gateway calls are gRPC calls, counted in the grpc_server_* metrics as on etcd.
            grpc.clone().layer(grpc_metrics::CountCalls(Arc::clone(
                &http_node.metrics.grpc,
            ))),
            max,
        ))
        .layer(axum::middleware::from_fn(gateway::cors));
    tonic::service::Routes::from(grpc.merge(http))
}

/// gRPC-go's messages for a method or service that does not exist (etcd: `unknown method
/// NoSuch for service etcdserverpb.KV`, `unknown service etcdserverpb.NoSuch`); tonic answers
/// the first with an empty message and the second as an HTTP 404. A layer around the whole
/// client service, with a future of its own: on the path of every request, it allocates
/// nothing (a clone of the URI shares its bytes) and boxes nothing.
#[derive(Debug, Clone, Copy)]
struct NameUnknownMethods;

impl<S> tower::Layer<S> for NameUnknownMethods {
    type Service = NamingUnknownMethods<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NamingUnknownMethods { inner }
    }
}

#[derive(Debug, Clone)]
struct NamingUnknownMethods<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<axum::http::Request<B>> for NamingUnknownMethods<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = NamingFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        NamingFuture {
            uri: grpc.then(|| req.uri().clone()),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    struct NamingFuture<F> {
        #[pin]
        inner: F,
        // The request's URI, for a gRPC request.
        uri: Option<axum::http::Uri>,
    }
}

impl<F, RB, E> std::future::Future for NamingFuture<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<RB>, E>>,
    RB: Default,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        std::task::Poll::Ready(Ok(match this.uri.take() {
            Some(uri) => name_unknown(resp, &uri),
            None => resp,
        }))
    }
}

/// `resp` to a gRPC request for `uri`, with gRPC-go's message when it names no method.
fn name_unknown<RB: Default>(
    mut resp: axum::http::Response<RB>,
    uri: &axum::http::Uri,
) -> axum::http::Response<RB> {
    use axum::http::StatusCode;
    let not_found = resp.status() == StatusCode::NOT_FOUND;
    let unnamed = resp
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"12")
        && !resp.headers().contains_key("grpc-message");
    if !not_found && !unnamed {
        return resp;
    }
    let Some((service, method)) = uri.path().trim_start_matches('/').split_once('/') else {
        return resp;
    };
    if not_found {
        return tonic::Status::unimplemented(format!("unknown service {service}")).into_http();
    }
    let message = format!("unknown method {method} for service {service}");
    if let Ok(v) = axum::http::HeaderValue::from_str(&message) {
        resp.headers_mut().insert("grpc-message", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    /// Regression: with Nagle on, a response's second write waited for the client's delayed ACK
    /// and single-key reads took ~44 ms (366 reads/s at 16 clients instead of ~25,000).
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let listener = super::Listener {
            socket: crate::conn::Socket::Tcp(listener),
            secure: false,
        };
        let mut accepted = super::incoming(listener, None);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        let super::Conn::Plain(stream) = stream else {
            panic!("a plain listener accepted a TLS connection");
        };
        assert!(
            stream.nodelay().expect("nodelay"),
            "TCP_NODELAY must be set on client and peer connections"
        );
    }
}
