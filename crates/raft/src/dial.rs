//! How a member dials its peers: one lazily connected gRPC channel per peer URL, over TLS when
//! the URL is `https://` (the peer TLS of `--peer-cert-file`, `--peer-trusted-ca-file`, ...,
//! given once at start-up with [`use_peer_tls`]), through the robustness suite's fault proxy
//! when [`PEER_ROUTES_ENV`] routes the URL.
//!
//! The peer TLS is process-wide: a process runs one member, and every place that dials a peer
//! (raft's messages, forwarded requests, the greeting and membership questions of a starting
//! member) must use the same certificates.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

/// How long to wait for a peer's TCP connection (and, over TLS, its handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Names the test seam that sends peer traffic through a fault proxy:
/// `TANDEM_TEST_PEER_ROUTES=URL=HOST:PORT,...` makes this member dial HOST:PORT wherever it
/// would dial the peer at URL (the robustness suite puts a proxy on every directed link, so a
/// fault can tell who sends). Never set in production; a URL it does not name is dialed as is.
pub const PEER_ROUTES_ENV: &str = "TANDEM_TEST_PEER_ROUTES";

static PEER_TLS: OnceLock<Arc<tls::ClientTls>> = OnceLock::new();

/// Dials `https://` peers with `peer_tls` from now on (once per process; a second call is
/// refused).
pub fn use_peer_tls(peer_tls: Arc<tls::ClientTls>) -> Result<(), String> {
    PEER_TLS
        .set(peer_tls)
        .map_err(|_| "the peer TLS is already set".to_string())
}

/// The address to dial for the peer at `url` (`host:port`): its own, unless
/// [`PEER_ROUTES_ENV`] routes it.
fn route(url: &str) -> Option<String> {
    static ROUTES: OnceLock<HashMap<String, String>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let spec = std::env::var(PEER_ROUTES_ENV).unwrap_or_default();
        let routes: HashMap<String, String> = spec
            .split(',')
            .filter_map(|r| r.rsplit_once('='))
            .map(|(from, to)| (from.to_string(), to.to_string()))
            .collect();
        if !routes.is_empty() {
            tracing::warn!(
                ?routes,
                "peer traffic goes through the test routes of {PEER_ROUTES_ENV}"
            );
        }
        routes
    });
    routes.get(url).cloned()
}

/// A lazily connected channel to the peer at `url` (`http://` or `https://`).
pub fn channel(url: &str) -> Result<Channel, String> {
    channel_over(url, PEER_TLS.get().cloned())
}

/// A lazily connected channel to `url`, over `tls` for an `https://` URL (a member dialing a
/// peer's client URL gives its client-side TLS).
pub fn channel_over(url: &str, tls: Option<Arc<tls::ClientTls>>) -> Result<Channel, String> {
    let routed = route(url);
    if let Some(rest) = url.strip_prefix("https://") {
        let Some(tls) = tls else {
            return Err(format!(
                "{url}: an https URL needs TLS (--peer-cert-file and --peer-key-file, or \
                 --peer-auto-tls, for peer URLs; --cert-file and --key-file for client URLs)"
            ));
        };
        let host_port = rest.trim_end_matches('/').to_string();
        let host = match host_port.rsplit_once(':') {
            Some((h, _)) => h.to_string(),
            None => host_port.clone(),
        };
        let address = routed.unwrap_or(host_port);
        let connector = tower::service_fn(move |_: Uri| {
            let (tls, host, address) = (Arc::clone(&tls), host.clone(), address.clone());
            async move {
                let tcp = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(address.as_str()),
                )
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to a peer")
                })??;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(&host, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The connector does the TLS; tonic is given the plain scheme, since a tonic built
        // with its own TLS feature (feature unification in a workspace build) refuses an
        // https URI it has no TLS configuration for.
        let plain = format!("http://{rest}");
        let endpoint = Endpoint::from_shared(plain).map_err(|e| format!("{url}: {e}"))?;
        return Ok(endpoint.connect_with_connector_lazy(connector));
    }
    let dial = match routed {
        Some(address) => format!("http://{address}"),
        None => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(dial).map_err(|e| format!("{url}: {e}"))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}
