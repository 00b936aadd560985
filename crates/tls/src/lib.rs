//! TLS for tandem's listeners and for the connections it dials to its peers, with rustls (its
//! `ring` provider; no OpenSSL). etcd's TLS flags (`--cert-file`, `--trusted-ca-file`,
//! `--client-cert-auth`, `--*-crl-file`, `--peer-cert-allowed-cn`, `--cipher-suites`,
//! `--tls-min-version`, ...) become a [`Settings`] and a [`Policy`]; [`ServerTls`] and
//! [`ClientTls`] turn them into rustls configurations and build them again when a certificate,
//! key, CA or CRL file changes, so certificates rotate without a restart (as etcd's, which reads
//! its files at every handshake). [`self_signed`] makes the certificates of `--auto-tls`.
//!
//! Architecture invariant: nothing here knows etcd's API or raft; the server and the raft
//! transport both use this crate, so client and peer links share one implementation.

mod files;
mod identity;
mod policy;
mod self_signed;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

pub use identity::{common_name, has_hostname};
pub use policy::{Policy, Version};
pub use self_signed::self_signed;

/// How often a configuration looks at its files' modification times (at most; only when a
/// connection is accepted or dialed).
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(String),
    #[error("{0}")]
    Invalid(String),
}

/// One side's TLS files and choices, as etcd's `transport.TLSInfo` holds them (the client side
/// from `--cert-file` and friends, the peer side from `--peer-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify a certificate from whoever connects (`--client-cert-auth`,
    /// `--peer-client-cert-auth`).
    pub client_cert_auth: bool,
    pub crl_file: Option<PathBuf>,
    /// The only common name a connecting peer's certificate may carry
    /// (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// The only host name a connecting peer's certificate must be valid for
    /// (`--client-cert-allowed-hostname`, `--peer-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
    /// A connecting peer's certificate, if it names addresses or host names, must name the
    /// address it connects from (etcd checks this on its peer listeners unless
    /// `--experimental-peer-skip-client-san-verification`).
    pub check_client_san: bool,
    /// The certificates are self-signed (`--auto-tls`): a dialer does not verify the server's.
    pub self_signed: bool,
}

impl Settings {
    /// No certificate and key: etcd's `TLSInfo.Empty()`.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() || self.key_file.is_none()
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        [
            &self.cert_file,
            &self.key_file,
            &self.trusted_ca_file,
            &self.crl_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// A configuration built from files, built again when they change (checked at most every
/// [`RELOAD_CHECK_INTERVAL`]). A rebuild that fails keeps the previous configuration and logs
/// why: a certificate half-written by a rotation must not take the listener down.
struct Reloading<T> {
    build: Box<dyn Fn() -> Result<Arc<T>, Error> + Send + Sync>,
    files: Vec<PathBuf>,
    state: Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    current: Arc<T>,
    stamps: Vec<files::Stamp>,
    checked: Instant,
}

impl<T> Reloading<T> {
    fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<Arc<T>, Error> + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let stamps = files::stamps(&files);
        let current = build()?;
        Ok(Reloading {
            build: Box::new(build),
            files,
            state: Mutex::new(ReloadState {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            let stamps = files::stamps(&self.files);
            if stamps != state.stamps {
                match (self.build)() {
                    Ok(config) => {
                        tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                        state.current = config;
                        state.stamps = stamps;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS files changed but do not load; keeping the previous ones"
                    ),
                }
            }
        }
        Arc::clone(&state.current)
    }
}

/// The TLS side of a listener.
pub struct ServerTls {
    config: Reloading<rustls::ServerConfig>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
    check_client_san: bool,
}

/// A connection accepted over TLS, with what its peer's certificate says.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;

impl ServerTls {
    pub fn new(settings: &Settings, policy: &Policy) -> Result<Self, Error> {
        if settings.is_empty() {
            return Err(Error::Invalid(
                "a TLS listener needs a certificate and a key".into(),
            ));
        }
        let (s, p) = (settings.clone(), policy.clone());
        let config = Reloading::new(settings.watched_files(), move || {
            policy::server_config(&s, &p).map(Arc::new)
        })?;
        Ok(ServerTls {
            config,
            allowed_cn: settings.allowed_cn.clone(),
            allowed_hostname: settings.allowed_hostname.clone(),
            check_client_san: settings.check_client_san,
        })
    }

    /// Completes the TLS handshake of a connection accepted from `remote` (bounded by
    /// [`HANDSHAKE_TIMEOUT`]); refuses a peer whose certificate's common name or host name is
    /// not the allowed one, or (with `check_client_san`) does not name `remote`.
    pub async fn accept<S>(
        &self,
        stream: S,
        remote: Option<std::net::IpAddr>,
    ) -> std::io::Result<ServerStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        if let Some(allowed) = &self.allowed_cn {
            let cn = leaf.as_deref().and_then(common_name);
            if cn.as_deref() != Some(allowed.as_str()) {
                return Err(refused(format!(
                    "peer certificate common name {cn:?} is not the allowed {allowed:?}"
                )));
            }
        }
        if let (true, Some(cert), Some(remote)) = (self.check_client_san, &leaf, remote) {
            identity::check_client_san(cert, remote)
                .await
                .map_err(refused)?;
        }
        if let Some(allowed) = &self.allowed_hostname {
            if !leaf.as_deref().is_some_and(|c| has_hostname(c, allowed)) {
                return Err(refused(format!(
                    "peer certificate is not valid for the allowed host name {allowed:?}"
                )));
            }
        }
        Ok(tls)
    }
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

/// The TLS side of the connections a member dials (to its peers).
pub struct ClientTls {
    config: Reloading<rustls::ClientConfig>,
}

impl ClientTls {
    pub fn new(settings: &Settings, policy: &Policy) -> Result<Self, Error> {
        let (s, p) = (settings.clone(), policy.clone());
        let config = Reloading::new(settings.watched_files(), move || {
            policy::client_config(&s, &p).map(Arc::new)
        })?;
        Ok(ClientTls { config })
    }

    /// The TLS handshake over a dialed connection to `host` (a name or an IP address, which
    /// the server's certificate must carry as a subject alternative name).
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            .to_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))?
    }
}
