//! etcd's TLS choices (`--tls-min-version`, `--tls-max-version`, `--cipher-suites`) and the
//! rustls configurations built from them and a side's [`Settings`].
//!
//! Cipher suites are named as Go names them. A suite Go knows but rustls refuses to implement
//! (CBC, RC4, 3DES and static-RSA key exchange) is left out with a warning; a name Go does not
//! know is refused with etcd's message. As in Go, the list applies to TLS 1.2 only: TLS 1.3's
//! suites are not configurable.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};

use crate::{files, Error, Settings};

/// A TLS version as etcd's flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    Tls12,
    Tls13,
}

impl Version {
    /// etcd's `tlsutil.GetTLSVersion`: "" is no bound.
    pub fn parse(s: &str) -> Result<Option<Version>, Error> {
        match s {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(Version::Tls12)),
            "TLS1.3" => Ok(Some(Version::Tls13)),
            other => Err(Error::Invalid(format!(
                "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            ))),
        }
    }
}

/// Go's names of the TLS 1.0–1.2 suites that rustls does not implement (all weak).
const GO_ONLY_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Go's names of TLS 1.3's suites (accepted in the list, as Go accepts them, with no effect).
const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The TLS versions and TLS 1.2 cipher suites both sides allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub min_version: Option<Version>,
    pub max_version: Option<Version>,
    /// Go's suite names; empty: every suite rustls has.
    pub cipher_suites: Vec<String>,
}

impl Policy {
    /// Checks the policy as etcd checks its flags at start-up.
    pub fn new(
        min_version: &str,
        max_version: &str,
        cipher_suites: Vec<String>,
    ) -> Result<Self, Error> {
        let policy = Policy {
            min_version: Version::parse(min_version)?,
            max_version: Version::parse(max_version)?,
            cipher_suites,
        };
        if let (Some(min), Some(max)) = (policy.min_version, policy.max_version) {
            if min > max {
                return Err(Error::Invalid(format!(
                    "min version ({min_version}) is greater than max version ({max_version})"
                )));
            }
        }
        if policy.min_version == Some(Version::Tls13) && !policy.cipher_suites.is_empty() {
            return Err(Error::Invalid(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        policy.provider()?;
        Ok(policy)
    }

    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let min = self.min_version.unwrap_or(Version::Tls12);
        let max = self.max_version.unwrap_or(Version::Tls13);
        let mut v = Vec::new();
        if min <= Version::Tls13 && max >= Version::Tls13 {
            v.push(&rustls::version::TLS13);
        }
        if min <= Version::Tls12 && max >= Version::Tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// rustls's ring provider with the configured TLS 1.2 suites. (rustls 0.23.48 deprecates it
    /// for lacking post-quantum key exchange, which etcd 3.5's Go lacks too; aws-lc-rs has it but
    /// needs cmake and a C toolchain at build time: docs/decisions/0011-tls.md.)
    fn provider(&self) -> Result<CryptoProvider, Error> {
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        if self.cipher_suites.is_empty() {
            return Ok(provider);
        }
        let mut wanted = Vec::new();
        for name in &self.cipher_suites {
            let name = name.trim();
            let go_alias = match name {
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
                    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
                }
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
                }
                n => n,
            };
            let known = provider
                .cipher_suites
                .iter()
                .any(|s| s.suite().as_str() == Some(go_alias));
            if known {
                wanted.push(go_alias.to_string());
            } else if GO_ONLY_SUITES.contains(&name) {
                tracing::warn!(
                    suite = name,
                    "cipher suite not implemented by rustls (weak); left out"
                );
            } else if !TLS13_SUITES.contains(&name) {
                return Err(Error::Invalid(format!(
                    "unexpected TLS cipher suite {name:?}"
                )));
            }
        }
        provider.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => wanted
                .iter()
                .any(|w| s.suite().as_str() == Some(w.as_str())),
        });
        let tls12_allowed = self.versions().contains(&&rustls::version::TLS12);
        if tls12_allowed && wanted.is_empty() {
            return Err(Error::Invalid(
                "none of the --cipher-suites is implemented (rustls implements the ECDHE suites with AES-GCM or ChaCha20-Poly1305)".into(),
            ));
        }
        Ok(provider)
    }
}

/// The protocols a connection may speak: gRPC needs h2 (grpc-go refuses a TLS server that
/// does not negotiate it); the HTTP endpoints also answer HTTP/1.1.
fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

fn required<'a>(path: &'a Option<std::path::PathBuf>, what: &str) -> Result<&'a Path, Error> {
    path.as_deref()
        .ok_or_else(|| Error::Invalid(format!("TLS needs {what}")))
}

pub(crate) fn server_config(
    settings: &Settings,
    policy: &Policy,
) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(policy.provider()?);
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&policy.versions())?;
    let builder = if settings.client_cert_auth {
        let ca = required(
            &settings.trusted_ca_file,
            "a trusted CA file to verify clients",
        )?;
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(files::roots(ca)?), provider);
        if let Some(crl) = &settings.crl_file {
            verifier = verifier.with_crls(files::crls(crl)?);
        }
        let verifier = verifier
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let cert = required(&settings.cert_file, "a certificate file")?;
    let key = required(&settings.key_file, "a key file")?;
    let mut config = builder.with_single_cert(files::certs(cert)?, files::key(key)?)?;
    config.alpn_protocols = alpn();
    Ok(config)
}

/// Where Debian and Red Hat keep the system's CAs: a dialer given no CA trusts them, as Go does.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

pub(crate) fn client_config(
    settings: &Settings,
    policy: &Policy,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(policy.provider()?);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&policy.versions())?;
    let builder = if settings.self_signed {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SelfSigned(provider)))
    } else {
        let ca = match &settings.trusted_ca_file {
            Some(ca) => ca.clone(),
            None => SYSTEM_CA_FILES
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::Invalid("TLS needs a trusted CA file to verify the server".into())
                })?,
        };
        let mut verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(files::roots(&ca)?),
            provider,
        );
        if let Some(crl) = &settings.crl_file {
            verifier = verifier.with_crls(files::crls(crl)?);
        }
        let verifier = verifier
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
        builder.with_webpki_verifier(verifier)
    };
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(files::certs(cert)?, files::key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `--peer-auto-tls`: peers' certificates are self-signed, so a dialer checks only that the
/// server holds the key of the certificate it shows (etcd sets InsecureSkipVerify).
#[derive(Debug)]
struct SelfSigned(Arc<CryptoProvider>);

impl ServerCertVerifier for SelfSigned {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
