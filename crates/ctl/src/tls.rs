//! `--cacert`, `--cert` and `--key`, as etcdctl takes them: TLS (and a client certificate) for
//! tandem-ctl's gRPC calls and for the HTTP endpoints it reads (`/metrics`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Verify the servers' certificates with this CA bundle (TLS).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// The client certificate to identify with (mutual TLS).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

fn read(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

impl TlsArgs {
    /// Whether any TLS flag was given (endpoints without a scheme are then `https://`).
    pub fn on(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// The URL of `endpoint` (`host:port` or a URL).
    pub fn url(&self, endpoint: &str) -> String {
        match (endpoint.contains("://"), self.on()) {
            (true, _) => endpoint.to_string(),
            (false, true) => format!("https://{endpoint}"),
            (false, false) => format!("http://{endpoint}"),
        }
    }

    /// The gRPC client's TLS, if any flag was given.
    pub fn grpc(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        if !self.on() {
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => anyhow::bail!("--cert and --key go together"),
        }
        Ok(Some(tls))
    }

    /// A TLS connection to `host` over `stream`, for an `https://` HTTP endpoint.
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        #[allow(deprecated)] // ring, as the server (docs/decisions/0011-tls.md)
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.cacert {
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&read(ca)?) {
                roots.add(cert.context("a CA certificate")?)?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                use rustls::pki_types::pem::PemObject;
                let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<Result<Vec<_>, _>>()
                    .context("the client certificate")?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(key)?)
                    .context("the client key")?;
                builder.with_client_auth_cert(certs, key)?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(connector.connect(name, stream).await?)
    }
}
