//! `--auto-tls` and `--peer-auto-tls`: a self-signed certificate for this member's hosts, made
//! once and kept in the data dir (etcd keeps them in `<data-dir>/fixtures/{client,peer}`), valid
//! for `--self-signed-cert-validity` years.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Error;

/// The certificate and key files in `dir` for `hosts` (names or IP addresses), made if absent.
pub fn self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<(PathBuf, PathBuf), Error> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let invalid = |e: rcgen::Error| Error::Invalid(format!("self-signed certificate: {e}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = name;
    for host in hosts {
        let san = match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(invalid)?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now
        + std::time::Duration::from_secs(365 * 24 * 3600 * u64::from(validity_years.max(1))))
    .into();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(invalid)?;
    let write = |path: &Path, contents: String| {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(path, contents))
            .map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
    };
    write(&key_path, key.serialize_pem())?;
    restrict(&key_path)?;
    write(&cert_path, cert.pem())?;
    tracing::info!(path = %cert_path.display(), ?hosts, "made a self-signed certificate");
    Ok((cert_path, key_path))
}

/// The key is readable by its owner only.
fn restrict(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Read {
            path: path.to_path_buf(),
            source,
        }
    })
}
