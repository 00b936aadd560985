//! A laboratory PKI for the TLS tests, made with rcgen: a CA and the certificates a server, its
//! peers and its clients use, plus the wrong ones (another CA's, an expired one, another common
//! name) that a server must refuse. Files are PEM, in a directory of their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority that signs leaf certificates into a directory.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    dir: PathBuf,
    name: String,
}

/// What a leaf certificate is for and how it is made.
pub struct Leaf<'a> {
    pub file: &'a str,
    pub common_name: &'a str,
    /// Subject alternative names: IP addresses or DNS names.
    pub hosts: &'a [&'a str],
    /// Already expired (its validity ended a day ago).
    pub expired: bool,
}

impl Ca {
    /// A new CA whose certificate is `<dir>/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem())?;
        Ok(Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        })
    }

    /// The CA certificate's file.
    pub fn cert_file(&self) -> String {
        path(&self.dir.join(format!("{}.crt", self.name)))
    }

    /// A valid certificate for `common_name` on loopback (127.0.0.1 and localhost), as
    /// [`Ca::leaf`] makes it.
    pub fn loopback_leaf(&self, file: &str, common_name: &str) -> Result<(String, String)> {
        self.leaf(&Leaf {
            file,
            common_name,
            hosts: &["127.0.0.1", "localhost"],
            expired: false,
        })
    }

    /// Signs a certificate for client and server use; writes `<file>.crt` and `<file>.key`
    /// and returns their paths.
    pub fn leaf(&self, leaf: &Leaf<'_>) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        for host in leaf.hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*host).try_into()?),
            });
        }
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        if leaf.expired {
            params.not_before = (now - 30 * day).into();
            params.not_after = (now - day).into();
        } else {
            params.not_before = (now - day).into();
            params.not_after = (now + 30 * day).into();
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let cert_file = self.dir.join(format!("{}.crt", leaf.file));
        let key_file = self.dir.join(format!("{}.key", leaf.file));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok((path(&cert_file), path(&key_file)))
    }
}

/// A member's flags for mutual TLS with its clients and its peers, one certificate for both
/// (`cert`, `key`), verifying both with `ca`.
pub fn member_mtls_flags(ca: &str, cert: &str, key: &str) -> Vec<String> {
    vec![
        format!("--cert-file={cert}"),
        format!("--key-file={key}"),
        format!("--trusted-ca-file={ca}"),
        "--client-cert-auth".to_string(),
        format!("--peer-cert-file={cert}"),
        format!("--peer-key-file={key}"),
        format!("--peer-trusted-ca-file={ca}"),
        "--peer-client-cert-auth".to_string(),
    ]
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
