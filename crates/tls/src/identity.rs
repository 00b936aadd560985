//! What a certificate says about its holder: the common name of its subject, which etcd
//! checks against `--peer-cert-allowed-cn` and takes as the user of a client's requests, and
//! the host names it is valid for (`--peer-cert-allowed-hostname`).

/// The first common name of the subject of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Whether a DER certificate is valid for `host` (an IP address or a DNS name, which may match
/// a `*.` wildcard of one label), as Go's `Certificate.VerifyHostname` decides from its subject
/// alternative names.
pub fn has_hostname(der: &[u8], host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    san.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(dns) => dns_matches(dns, host),
        GeneralName::IPAddress(bytes) => ip.is_some_and(|ip| match ip {
            std::net::IpAddr::V4(v4) => *bytes == v4.octets().as_slice(),
            std::net::IpAddr::V6(v6) => *bytes == v6.octets().as_slice(),
        }),
        _ => false,
    })
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host.trim_end_matches('.'),
    }
}

/// etcd's check of a peer's client certificate against the address it connects from: a
/// certificate naming no address and no host name passes; one naming addresses passes if
/// `remote` is among them; one naming host names passes if one of them resolves to `remote`
/// (etcd also tries a reverse lookup of `remote`, which needs the C library's resolver; a
/// forward lookup of each name finds the same for names with matching records).
pub async fn check_client_san(der: &[u8], remote: std::net::IpAddr) -> Result<(), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(());
    };
    let mut ips = Vec::new();
    let mut names = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
            GeneralName::DNSName(dns) => names.push(dns.to_string()),
            _ => {}
        }
    }
    if ips.is_empty() && names.is_empty() {
        return Ok(());
    }
    let remote_bytes = match remote {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    if ips.contains(&remote_bytes) {
        return Ok(());
    }
    for name in names.iter().filter(|n| !n.starts_with("*.")) {
        if let Ok(addrs) = tokio::net::lookup_host((name.as_str(), 0)).await {
            if addrs.into_iter().any(|a| a.ip() == remote) {
                return Ok(());
            }
        }
    }
    if names.is_empty() {
        return Err(format!(
            "tls: the certificate is not valid for {remote} (the address it connects from)"
        ));
    }
    Err(format!(
        "tls: {remote:?} does not match any of DNSNames {names:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        for (pattern, host, expected) in [
            ("etcd.example.com", "etcd.example.com", true),
            ("ETCD.example.com", "etcd.example.com", true),
            ("*.example.com", "etcd.example.com", true),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "example.com", false),
            ("etcd.example.com", "other.example.com", false),
        ] {
            assert_eq!(dns_matches(pattern, host), expected, "{pattern} vs {host}");
        }
    }
}
