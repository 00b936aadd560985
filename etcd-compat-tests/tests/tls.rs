//! TLS as etcd serves it: clients over mutual TLS (etcdctl 3.4 and 3.5, the Rust client, curl),
//! the certificates a server must refuse (another CA's, an expired one, none), peers over
//! mutual TLS (3 members, 2 data members + witness) and a member whose certificate comes from
//! another CA, `--auto-tls`, certificates rotated without a restart. Where behaviour is in
//! question, etcd 3.5.1 (and 3.4.23) run the same scenario and the transcripts must be equal.

use std::path::Path;
use std::time::Duration;

use etcd_compat_tests::pki::{Ca, Leaf};
use etcd_compat_tests::*;

/// A lab PKI: a CA with server, client and peer certificates, and the wrong ones.
struct Lab {
    _dir: tempfile::TempDir,
    ca: String,
    other_ca: String,
    server: (String, String),
    client: (String, String),
    other_client: (String, String),
    /// A client certificate naming the user `alice` (etcd's CN auth).
    alice: (String, String),
    expired_client: (String, String),
    peer: (String, String),
    other_peer: (String, String),
    /// The right CA, but naming another address than the one its holder connects from.
    peer_elsewhere: (String, String),
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("dir");
        let ca = Ca::new(dir.path(), "ca").expect("ca");
        let other = Ca::new(dir.path(), "other-ca").expect("other ca");
        let leaf = |ca: &Ca, file: &str, cn: &str| ca.loopback_leaf(file, cn).expect("leaf");
        Lab {
            ca: ca.cert_file(),
            other_ca: other.cert_file(),
            server: leaf(&ca, "server", "server"),
            client: leaf(&ca, "client", "root"),
            other_client: leaf(&other, "other-client", "root"),
            alice: leaf(&ca, "alice", "alice"),
            expired_client: ca
                .leaf(&Leaf {
                    file: "expired-client",
                    common_name: "root",
                    hosts: &["127.0.0.1", "localhost"],
                    expired: true,
                })
                .expect("leaf"),
            peer: leaf(&ca, "peer", "peer"),
            other_peer: leaf(&other, "other-peer", "peer"),
            peer_elsewhere: ca
                .leaf(&Leaf {
                    file: "peer-elsewhere",
                    common_name: "peer",
                    hosts: &["10.9.9.9"],
                    expired: false,
                })
                .expect("leaf"),
            _dir: dir,
        }
    }

    /// A server's flags for client mTLS.
    fn client_mtls(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.server.0),
            format!("--key-file={}", self.server.1),
            format!("--trusted-ca-file={}", self.ca),
            "--client-cert-auth".into(),
        ]
    }

    /// A member's flags for peer mTLS with `cert` (signed by `ca`).
    fn peer_mtls(&self, cert: &(String, String), ca: &str) -> Vec<String> {
        vec![
            format!("--peer-cert-file={}", cert.0),
            format!("--peer-key-file={}", cert.1),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// etcdctl's flags for a client with `cert`, trusting `ca`.
    fn ctl(&self, ca: &str, cert: Option<&(String, String)>) -> Vec<String> {
        let mut v = vec![format!("--cacert={ca}")];
        if let Some((c, k)) = cert {
            v.push(format!("--cert={c}"));
            v.push(format!("--key={k}"));
        }
        v
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `args` with the TLS flags `tls` in front.
fn run(t: &mut Transcript, tls: &[String], args: &[&str]) -> CtlOutput {
    let mut all = strs(tls);
    all.extend_from_slice(args);
    t.run(&all, None)
}

/// What a refused client sees, quickly.
const FAST: [&str; 2] = ["--dial-timeout=1s", "--command-timeout=2s"];

fn mtls_scenario(lab: &Lab) -> impl Fn(&mut Transcript, &Server) + '_ {
    move |t, _| {
        let good = lab.ctl(&lab.ca, Some(&lab.client));
        run(t, &good, &["put", "foo", "bar"]);
        run(t, &good, &["get", "foo", "-w", "json"]);
        run(t, &good, &["del", "foo"]);
        run(t, &good, &["endpoint", "health"]);
        run(t, &good, &["member", "list", "-w", "json"]);
        let mut refused = |what: &str, ca: &str, cert: Option<&(String, String)>| {
            t.note(what);
            let mut flags = lab.ctl(ca, cert);
            flags.extend(FAST.map(String::from));
            run(t, &flags, &["get", "foo"]);
        };
        refused("no client certificate:", &lab.ca, None);
        refused(
            "a client certificate from another CA:",
            &lab.ca,
            Some(&lab.other_client),
        );
        refused(
            "an expired client certificate:",
            &lab.ca,
            Some(&lab.expired_client),
        );
        refused(
            "the client does not trust the server's CA:",
            &lab.other_ca,
            Some(&lab.client),
        );
        t.note("plain gRPC to the TLS port:");
        run(t, &FAST.map(String::from), &["get", "foo"]);
    }
}

/// etcdctl of `version` against tandem and the etcd of the same version, both on client mTLS.
fn mtls_as_etcd(version: CtlVersion) {
    let lab = Lab::new();
    compare_with_etcd(version, &strs(&lab.client_mtls()), mtls_scenario(&lab));
}

/// With `--client-cert-auth`, a verified certificate's common name is the user when the request
/// has no token (etcd's CN auth); a token, when given, wins.
fn common_name_auth_scenario(lab: &Lab) -> impl Fn(&mut Transcript, &Server) + '_ {
    move |t, _| {
        let root = lab.ctl(&lab.ca, Some(&lab.client));
        let alice = lab.ctl(&lab.ca, Some(&lab.alice));
        run(t, &root, &["user", "add", "root:rootpw"]);
        run(t, &root, &["user", "grant-role", "root", "root"]);
        run(t, &root, &["user", "add", "alice:alicepw"]);
        run(t, &root, &["role", "add", "r"]);
        run(
            t,
            &root,
            &["role", "grant-permission", "r", "readwrite", "a"],
        );
        run(t, &root, &["user", "grant-role", "alice", "r"]);
        run(t, &root, &["auth", "enable"]);
        run(t, &root, &["put", "z", "by root's certificate"]);
        run(t, &root, &["user", "list"]);
        run(t, &alice, &["put", "a", "by alice's certificate"]);
        run(t, &alice, &["get", "a"]);
        run(t, &alice, &["get", "z"]);
        run(t, &alice, &["user", "list"]);
        run(t, &alice, &["--user=root:rootpw", "get", "z"]);
        run(t, &alice, &["--user=root:wrong", "get", "z"]);
        run(
            t,
            &root,
            &["--user=alice", "--password=alicepw", "get", "z"],
        );
        run(t, &root, &["auth", "disable"]);
    }
}

fn common_name_auth_as_etcd(version: CtlVersion) {
    let lab = Lab::new();
    compare_with_etcd(
        version,
        &strs(&lab.client_mtls()),
        common_name_auth_scenario(&lab),
    );
}

#[test]
fn a_client_certificates_common_name_is_its_user_as_etcd_3_5() {
    common_name_auth_as_etcd(CtlVersion::V35);
}

#[test]
fn a_client_certificates_common_name_is_its_user_as_etcd_3_4() {
    common_name_auth_as_etcd(CtlVersion::V34);
}

/// `unix://host:port` and `unixs://host:port` listen URLs (a socket file named `host:port` in
/// the working directory, plain and over TLS), with etcdctl on each, as etcd serves them.
fn unix_sockets(kind: Kind, lab: &Lab) -> Transcript {
    let mut server = Server::start_with(kind, &strs(&lab.client_mtls())).expect("server");
    let (plain, secure) = (free_port(), free_port());
    server.add_flag(&format!(
        "--listen-client-urls=https://127.0.0.1:{},unix://localhost:{plain},unixs://localhost:{secure}",
        server.client_port
    ));
    server.restart().expect("restart with unix sockets");
    let ctl = |endpoint: String| Ctl {
        version: CtlVersion::V35,
        endpoint,
        cwd: server.dir.path().to_path_buf(),
    };
    let mut t = Transcript::new(ctl(format!("unixs://localhost:{secure}")));
    let good = lab.ctl(&lab.ca, Some(&lab.client));
    run(&mut t, &good, &["put", "k", "over unixs"]);
    run(&mut t, &good, &["get", "k"]);
    t.note("without a client certificate:");
    let mut no_cert = lab.ctl(&lab.ca, None);
    no_cert.extend(FAST.map(String::from));
    run(&mut t, &no_cert, &["get", "k"]);
    let mut plain_t = Transcript::new(ctl(format!("unix://localhost:{plain}")));
    plain_t.run(&["put", "k", "over unix"], None);
    plain_t.run(&["get", "k", "-w", "json"], None);
    t.lines.extend(plain_t.lines);
    t
}

#[test]
fn unix_socket_listeners_as_etcd_3_5() {
    let lab = Lab::new();
    let reference = unix_sockets(Kind::Etcd35, &lab);
    let ours = unix_sockets(Kind::Tandem, &lab);
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", reference.lines.join("\n"));
    }
    assert_same(&reference, Kind::Etcd35.name(), &ours);
}

#[test]
fn etcdctl_over_mutual_tls_and_refusals_as_etcd_3_5() {
    mtls_as_etcd(CtlVersion::V35);
}

#[test]
fn etcdctl_over_mutual_tls_and_refusals_as_etcd_3_4() {
    mtls_as_etcd(CtlVersion::V34);
}

#[test]
fn auto_tls_as_etcd() {
    compare_with_etcd(CtlVersion::V35, &["--auto-tls"], |t, _| {
        let insecure = [
            "--insecure-transport=false".to_string(),
            "--insecure-skip-tls-verify".to_string(),
        ];
        run(t, &insecure, &["put", "k", "v"]);
        run(t, &insecure, &["get", "k"]);
        t.note("a client that verifies the self-signed certificate:");
        let mut verify = vec!["--insecure-transport=false".to_string()];
        verify.extend(FAST.map(String::from));
        run(t, &verify, &["get", "k"]);
    });
}

/// `curl` with a client certificate: the HTTP endpoints share the TLS port, as etcd's do.
fn curl(lab: &Lab, cert: Option<&(String, String)>, url: &str) -> CtlOutput {
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "--max-time", "5", "--cacert", &lab.ca]);
    if let Some((crt, key)) = cert {
        c.args(["--cert", crt, "--key", key]);
    }
    c.arg(url);
    run_command(c, None)
}

#[tokio::test]
async fn the_rust_client_and_curl_over_mutual_tls() {
    let lab = Lab::new();
    let server = Server::start_with(Kind::Tandem, &strs(&lab.client_mtls())).expect("tandem");
    let pem = |p: &str| std::fs::read_to_string(p).expect("pem");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(pem(&lab.ca)))
        .identity(etcd_client::Identity::from_pem(
            pem(&lab.client.0),
            pem(&lab.client.1),
        ));
    let options = etcd_client::ConnectOptions::new().with_tls(tls);
    let mut client = etcd_client::Client::connect([server.url()], Some(options))
        .await
        .expect("connect over mTLS");
    client.put("rust", "tls", None).await.expect("put");
    let got = client.get("rust", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"tls");

    let anonymous = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(pem(&lab.ca)));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(anonymous)
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let refused = match etcd_client::Client::connect([server.url()], Some(options)).await {
        Err(e) => Err(e),
        Ok(mut c) => c.get("rust", None).await.map(|_| ()),
    };
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let health = curl(&lab, Some(&lab.client), &format!("{}/health", server.url()));
    assert_eq!(health.code, 0, "{}", health.stderr);
    assert!(
        health.stdout.contains("\"health\":\"true\""),
        "{}",
        health.stdout
    );
    let refused = curl(&lab, None, &format!("{}/health", server.url()));
    assert_ne!(
        refused.code, 0,
        "curl without a certificate: {}",
        refused.stdout
    );
    assert!(
        server.log().contains("rejected connection"),
        "the refusals are logged as etcd logs them"
    );
    // The plain metrics URL the harness gives a TLS server answers without a certificate.
    let (code, body) = http_get(&server.health_url()).expect("metrics URL");
    assert_eq!((code, body.contains("true")), (200, true), "{body}");
}

/// The common name of the certificate a TLS server at `addr` shows.
fn served_common_name(lab: &Lab, addr: &str) -> String {
    let mut c = std::process::Command::new("openssl");
    c.args([
        "s_client",
        "-connect",
        addr,
        "-CAfile",
        &lab.ca,
        "-cert",
        &lab.client.0,
        "-key",
        &lab.client.1,
    ]);
    let out = run_command(c, Some(""));
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("subject=").map(str::to_owned))
        .unwrap_or_default()
}

/// Replaces a file's contents in one step (as a certificate manager renames a new file over
/// the old one).
fn replace(target: &str, from: &str) {
    let tmp = format!("{target}.new");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, target).expect("rename");
}

#[test]
fn certificates_rotate_without_a_restart() {
    let lab = Lab::new();
    let dir = Path::new(&lab.server.0)
        .parent()
        .expect("dir")
        .to_path_buf();
    // The server's files, which the rotation overwrites.
    let cert = dir.join("live.crt").display().to_string();
    let key = dir.join("live.key").display().to_string();
    std::fs::copy(&lab.server.0, &cert).expect("copy");
    std::fs::copy(&lab.server.1, &key).expect("copy");
    let flags = [
        format!("--cert-file={cert}"),
        format!("--key-file={key}"),
        format!("--trusted-ca-file={}", lab.ca),
        "--client-cert-auth".into(),
    ];
    let server = Server::start_with(Kind::Tandem, &strs(&flags)).expect("tandem");
    let addr = server.endpoint();
    assert!(
        served_common_name(&lab, &addr).contains("server"),
        "before the rotation"
    );
    // The peer certificate (CN peer, same CA) becomes the server's.
    replace(&key, &lab.peer.1);
    replace(&cert, &lab.peer.0);
    wait_until(
        "new connections to get the rotated certificate",
        Duration::from_secs(10),
        || served_common_name(&lab, &addr).contains("peer"),
    )
    .expect("rotation");
    let mut t = Transcript::new(Ctl::new(CtlVersion::V35, &server));
    let out = run(
        &mut t,
        &lab.ctl(&lab.ca, Some(&lab.client)),
        &["put", "after", "rotation"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Puts through the first data member and reads (linearizably) through every data member.
fn write_and_read_everywhere(lab: &Lab, cluster: &Cluster, key: &str) {
    let data: Vec<usize> = cluster.data_members().collect();
    let first = &cluster.members[data[0]];
    let ctl = |m: &Server, args: &[&str]| {
        let mut t = Transcript::new(Ctl::new(CtlVersion::V35, m));
        run(&mut t, &lab.ctl(&lab.ca, Some(&lab.client)), args)
    };
    let out = ctl(first, &["put", key, "v"]);
    assert_eq!(out.code, 0, "put: {}", out.stderr);
    for &i in &data {
        let out = ctl(&cluster.members[i], &["get", key, "--print-value-only"]);
        assert_eq!(
            (out.code, out.stdout.trim()),
            (0, "v"),
            "member {i}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn three_members_over_peer_mutual_tls() {
    let lab = Lab::new();
    let mut flags = lab.client_mtls();
    flags.extend(lab.peer_mtls(&lab.peer, &lab.ca));
    flags.push("--peer-cert-allowed-cn=peer".into());
    let mut cluster = Cluster::start(Kind::Tandem, 3, &strs(&flags)).expect("cluster");
    assert!(cluster.members[0].peer_url().starts_with("https://"));
    write_and_read_everywhere(&lab, &cluster, "over-peer-tls");

    // The corruption checks reach the peers' https client URLs with the client certificate.
    let m1 = &mut cluster.members[0];
    let logged = m1.log().len();
    m1.add_flag("--experimental-initial-corrupt-check=true");
    m1.restart().expect("restart m1");
    wait_until(
        "m1's initial corruption check to compare with its peers",
        START_DEADLINE,
        || {
            let log = cluster.members[0].log();
            log[logged..].lines().any(|l| {
                l.contains("initial corruption check passed") && !l.contains("\"peers\":0")
            })
        },
    )
    .unwrap_or_else(|e| {
        let log = cluster.members[0].log();
        let corrupt: Vec<&str> = log[logged..]
            .lines()
            .filter(|l| l.contains("corrupt") || l.contains("hash"))
            .collect();
        panic!("{e}: {corrupt:#?}")
    });
    cluster.wait_healthy(0).expect("m1 healthy");

    // A member whose certificate comes from another CA cannot take part: its peers refuse
    // its connections, it has no leader, and the other two go on.
    let mut flags = lab.client_mtls();
    flags.extend(lab.peer_mtls(&lab.other_peer, &lab.other_ca));
    let logged: Vec<usize> = cluster.members.iter().map(|m| m.log().len()).collect();
    let m3 = &mut cluster.members[2];
    m3.stop("KILL").expect("stop m3");
    m3.set_flags(&strs(&flags));
    m3.restart().expect("restart m3");
    wait_until(
        "a peer to refuse the member with another CA's certificate",
        START_DEADLINE,
        || (0..2).any(|i| cluster.members[i].log()[logged[i]..].contains("rejected connection")),
    )
    .expect("refused");
    let health = cluster.members[2].health_url();
    wait_until("m3 to answer /health", START_DEADLINE, || {
        http_get(&health).is_ok()
    })
    .expect("m3 serves /health");
    let (code, body) = http_get(&health).expect("health");
    assert!(
        code != 200 || body.contains("\"false\""),
        "the member with another CA's certificate is healthy: {body}"
    );
    let mut t = Transcript::new(Ctl::new(CtlVersion::V35, &cluster.members[0]));
    let out = run(
        &mut t,
        &lab.ctl(&lab.ca, Some(&lab.client)),
        &["put", "still", "serving"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The right CA but a common name m3 does not allow: m3 refuses its peers.
    let mut flags = lab.client_mtls();
    flags.extend(lab.peer_mtls(&lab.peer, &lab.ca));
    flags.push("--peer-cert-allowed-cn=someone-else".into());
    let m3 = &mut cluster.members[2];
    let logged = m3.log().len();
    m3.stop("KILL").expect("stop m3");
    m3.set_flags(&strs(&flags));
    m3.restart().expect("restart m3");
    wait_until(
        "m3 to refuse peers whose common name it does not allow",
        START_DEADLINE,
        || cluster.members[2].log()[logged..].contains("is not the allowed"),
    )
    .expect("refused by common name");

    // The right CA and common name, but a certificate naming another address than the one m3
    // connects from: its peers refuse it, as etcd's peer listeners do.
    let mut flags = lab.client_mtls();
    flags.extend(lab.peer_mtls(&lab.peer_elsewhere, &lab.ca));
    let logged: Vec<usize> = cluster.members.iter().map(|m| m.log().len()).collect();
    let m3 = &mut cluster.members[2];
    m3.stop("KILL").expect("stop m3");
    m3.set_flags(&strs(&flags));
    m3.restart().expect("restart m3");
    wait_until(
        "a peer to refuse a certificate that does not name m3's address",
        START_DEADLINE,
        || {
            (0..2).any(|i| {
                cluster.members[i].log()[logged[i]..]
                    .contains("the certificate is not valid for 127.0.0.1")
            })
        },
    )
    .expect("refused by address");
}

#[test]
fn allowed_client_hostnames_as_etcd() {
    let lab = Lab::new();
    for hostname in ["localhost", "elsewhere.example"] {
        let mut flags = lab.client_mtls();
        flags.push(format!("--client-cert-allowed-hostname={hostname}"));
        compare_with_etcd(CtlVersion::V35, &strs(&flags), |t, _| {
            let mut good = lab.ctl(&lab.ca, Some(&lab.client));
            good.extend(FAST.map(String::from));
            run(t, &good, &["put", "foo", "bar"]);
        });
    }
}

#[test]
fn two_data_members_and_a_witness_over_peer_mutual_tls() {
    let lab = Lab::new();
    let mut flags = lab.client_mtls();
    flags.extend(lab.peer_mtls(&lab.peer, &lab.ca));
    flags.extend([WITNESS_FLAG.to_string(), "m3".to_string()]);
    let cluster = Cluster::start(Kind::Tandem, 3, &strs(&flags)).expect("cluster");
    write_and_read_everywhere(&lab, &cluster, "witness-over-tls");
    let mut t = Transcript::new(Ctl::new(CtlVersion::V35, &cluster.members[0]));
    let out = run(
        &mut t,
        &lab.ctl(&lab.ca, Some(&lab.client)),
        &["member", "list"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert!(
        out.stdout.contains("https://"),
        "peer URLs are https: {}",
        out.stdout
    );
    // tandem-ctl status over TLS: the data members through gRPC and /metrics on their client
    // URLs, the witness through /metrics on its peer URL, all with the operator's certificate.
    let ctl = tandem_bin().with_file_name("tandem-ctl");
    let mut c = std::process::Command::new(&ctl);
    c.args(["status", "--endpoints", &cluster.endpoints()])
        .args(lab.ctl(&lab.ca, Some(&lab.client)));
    let mut text = String::new();
    wait_until(
        "tandem-ctl status to list a leader and the witness",
        START_DEADLINE,
        || {
            let out = run_command(
                {
                    let mut again = std::process::Command::new(&ctl);
                    again.args(c.get_args());
                    again
                },
                None,
            );
            text = format!("{}{}", out.stdout, out.stderr);
            let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('m')).collect();
            lines.len() == 3
                && lines
                    .iter()
                    .any(|l| l.starts_with("m3") && l.contains(" witness ") && !l.contains("down"))
                && lines
                    .iter()
                    .filter(|l| l.contains(" data ") && l.contains(" leader "))
                    .count()
                    == 1
        },
    )
    .unwrap_or_else(|e| panic!("{e}:\n{text}"));
}

#[test]
fn tls_flags_are_checked_as_etcd_checks_them() {
    let lab = Lab::new();
    // An https listen URL without a certificate.
    let bin = tandem_bin();
    let out = run_command(
        {
            let mut c = std::process::Command::new(&bin);
            c.args([
                "--data-dir=/nonexistent/never-created",
                "--listen-client-urls=https://127.0.0.1:0",
                "--advertise-client-urls=https://127.0.0.1:0",
            ]);
            c
        },
        None,
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme"
        ),
        "{}",
        out.stderr
    );
    for (flags, expected) in [
        (
            vec!["--tls-min-version=TLS1.1".to_string()],
            "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)",
        ),
        (
            vec![
                "--tls-min-version=TLS1.3".to_string(),
                "--tls-max-version=TLS1.2".to_string(),
            ],
            "min version (TLS1.3) is greater than max version (TLS1.2)",
        ),
        (
            vec![
                "--tls-min-version=TLS1.3".to_string(),
                "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
            ],
            "cipher suites cannot be configured when only TLS1.3 is enabled",
        ),
        (
            vec!["--cipher-suites=TLS_NOT_A_SUITE".to_string()],
            "unexpected TLS cipher suite \"TLS_NOT_A_SUITE\"",
        ),
        (
            vec![
                format!("--cert-file={}", lab.server.0),
                format!("--key-file={}", lab.ca),
                "--listen-client-urls=https://127.0.0.1:0".into(),
                "--advertise-client-urls=https://127.0.0.1:0".into(),
            ],
            "client TLS",
        ),
    ] {
        let mut c = std::process::Command::new(&bin);
        let dir = tempfile::tempdir().expect("dir");
        c.arg(format!("--data-dir={}", dir.path().display()));
        c.arg("--listen-peer-urls=http://127.0.0.1:0");
        c.args(&flags);
        let out = run_command(c, None);
        assert_ne!(out.code, 0, "{flags:?} started");
        assert!(out.stderr.contains(expected), "{flags:?}: {}", out.stderr);
    }
}
