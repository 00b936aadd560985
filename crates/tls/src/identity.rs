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
