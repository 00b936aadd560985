//! The deploy files work as written: the two machines' environment files of
//! `deploy/two-nodes/` (what `deploy/tandem.service` reads from `/etc/default/tandem`) start a
//! two-member cluster when only the addresses are filled in and `deploy/make-certs` has made the
//! certificates they name (mutual TLS with clients and between members) — for tandem and, as
//! their comments claim, for etcd 3.5.1 — and the endpoints and certificates of
//! `deploy/kubeadm-external-etcd.yaml` are those members' client URLs and the apiserver's
//! certificate from the same script; the witness and fencing files start their topologies. Each "machine" is a loopback address of its own (127.42.x.y), with
//! etcd's default ports, as on two real hosts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_compat_tests::{http_get, tandem_bin, wait_until, workspace_path, CtlVersion, Kind};

const WAIT: Duration = Duration::from_secs(30);

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped), with the node
/// addresses filled in.
fn env_file(path: &str, a_ip: &str, b_ip: &str) -> Vec<(String, String)> {
    env_file_with(path, &[("NODE_A_IP", a_ip), ("NODE_B_IP", b_ip)])
}

/// Where `deploy/make-certs` put a lab's certificates (for the addresses `ips`): the env files'
/// `/etc/tandem/pki`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make(ips: &[&str]) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("dir");
        // etcd checks that a peer connects from an address its certificate names; on one
        // host, peers connect from 127.0.0.1.
        let out = Command::new("bash")
            .env("TANDEM_CERT_EXTRA_SANS", "IP:127.0.0.1")
            .arg(workspace_path("deploy/make-certs"))
            .arg(dir.path())
            .args(ips)
            .output()
            .expect("deploy/make-certs");
        assert!(
            out.status.success(),
            "deploy/make-certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// etcdctl's flags for the operator's certificate.
    fn ctl_flags(&self) -> [String; 3] {
        [
            format!("--cacert={}", self.file("ca.crt")),
            format!("--cert={}", self.file("admin.crt")),
            format!("--key={}", self.file("admin.key")),
        ]
    }
}

/// The env file's variables with the placeholders filled in and `/etc/tandem/pki` moved to the
/// lab's.
fn env_with_pki(path: &str, addresses: &[(&str, &str)], pki: &Pki) -> Vec<(String, String)> {
    let pki_dir = pki.dir.path().display().to_string();
    env_file_with(path, addresses)
        .into_iter()
        .map(|(k, v)| (k, v.replace("/etc/tandem/pki", &pki_dir)))
        .collect()
}

/// `KEY=VALUE` lines of an environment file, each placeholder replaced by its address.
fn env_file_with(path: &str, addresses: &[(&str, &str)]) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_path(path)).expect("env file");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            let v = addresses
                .iter()
                .fold(v.to_string(), |v, (from, to)| v.replace(from, to));
            (k.to_string(), v)
        })
        .collect()
}

/// The `Environment=` settings of the systemd unit.
fn unit_environment() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_path("deploy/tandem.service")).expect("unit");
    text.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A member started the way systemd starts the unit: no flags, only the environment.
struct Machine {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn start(bin: &PathBuf, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(bin);
        for (k, v) in unit_environment().into_iter().chain(env) {
            cmd.env(k, v);
        }
        // The unit's /var/lib/tandem, moved into this test's directory.
        cmd.env("ETCD_DATA_DIR", dir.path().join("data"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start");
        Machine {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn two_machines(kind: Kind, a_ip: &str, b_ip: &str) {
    let bin = match kind {
        Kind::Tandem => tandem_bin(),
        _ => CtlVersion::V35.bin().with_file_name("etcd"),
    };
    let pki = Pki::make(&[a_ip, b_ip]);
    let ips = [("NODE_A_IP", a_ip), ("NODE_B_IP", b_ip)];
    let a = Machine::start(
        &bin,
        env_with_pki("deploy/two-nodes/tandem-a.env", &ips, &pki),
    );
    let b = Machine::start(
        &bin,
        env_with_pki("deploy/two-nodes/tandem-b.env", &ips, &pki),
    );
    let endpoints = format!("https://{a_ip}:2379,https://{b_ip}:2379");
    for (ip, m) in [(a_ip, &a), (b_ip, &b)] {
        let url = format!("http://{ip}:2381/health");
        if wait_until(&format!("{} on {ip} healthy", kind.name()), WAIT, || {
            http_get(&url).is_ok_and(|(code, body)| code == 200 && body.contains("true"))
        })
        .is_err()
        {
            panic!(
                "{} on {ip} did not become healthy:\n{}",
                kind.name(),
                m.log()
            );
        }
    }
    let etcdctl = |endpoints: &str, args: &[&str]| {
        Command::new(CtlVersion::V35.bin())
            .arg(format!("--endpoints={endpoints}"))
            .args(pki.ctl_flags())
            .args(args)
            .output()
            .expect("etcdctl")
    };
    let ctl = |args: &[&str]| {
        let out = etcdctl(&endpoints, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // What the walkthrough in docs/kubernetes.md checks after starting both machines.
    let health = ctl(&["endpoint", "health"]);
    assert_eq!(health.matches("is healthy").count(), 2, "{health}");
    let mut list = String::new();
    let published = wait_until("both members published their client URLs", WAIT, || {
        list = ctl(&["member", "list"]);
        list.contains(&format!("node-a, https://{a_ip}:2380, https://{a_ip}:2379"))
            && list.contains(&format!("node-b, https://{b_ip}:2380, https://{b_ip}:2379"))
    });
    assert!(published.is_ok(), "{}: member list:\n{list}", kind.name());
    // /version on the TLS client port, as kubeadm's preflight reads it (the metrics URL serves
    // only /metrics and /health on etcd).
    let version = Command::new("curl")
        .args(["-sS", "--cacert", &pki.file("ca.crt")])
        .args([
            "--cert",
            &pki.file("admin.crt"),
            "--key",
            &pki.file("admin.key"),
        ])
        .arg(format!("https://{a_ip}:2379/version"))
        .output()
        .expect("curl");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("\"etcdserver\"") && version.contains("\"etcdcluster\""),
        "{version}"
    );
    let put = etcdctl(
        &format!("https://{a_ip}:2379"),
        &["put", "/walkthrough", "a"],
    );
    assert!(put.status.success());
    let got = etcdctl(
        &format!("https://{b_ip}:2379"),
        &["get", "/walkthrough", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "a");
    // The apiserver's certificate from the same script is accepted; no certificate is not.
    let apiserver = Command::new(CtlVersion::V35.bin())
        .arg(format!("--endpoints=https://{a_ip}:2379"))
        .arg(format!("--cacert={}", pki.file("ca.crt")))
        .arg(format!("--cert={}", pki.file("apiserver-etcd-client.crt")))
        .arg(format!("--key={}", pki.file("apiserver-etcd-client.key")))
        .args(["get", "/walkthrough", "--print-value-only"])
        .output()
        .expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&apiserver.stdout).trim(), "a");
    let anonymous = Command::new(CtlVersion::V35.bin())
        .arg(format!("--endpoints=https://{a_ip}:2379"))
        .arg(format!("--cacert={}", pki.file("ca.crt")))
        .args([
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "get",
            "/walkthrough",
        ])
        .output()
        .expect("etcdctl");
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was served"
    );
}

#[test]
fn the_two_machine_env_files_start_a_cluster_for_tandem_and_etcd() {
    two_machines(Kind::Tandem, "127.42.0.1", "127.42.0.2");
    two_machines(Kind::Etcd35, "127.42.1.1", "127.42.1.2");
}

#[test]
fn the_witness_env_files_start_two_data_machines_and_a_witness() {
    let ips = [
        ("NODE_A_IP", "127.42.2.1"),
        ("NODE_B_IP", "127.42.2.2"),
        ("WITNESS_IP", "127.42.2.3"),
    ];
    let bin = tandem_bin();
    let pki = Pki::make(&["127.42.2.1", "127.42.2.2", "127.42.2.3"]);
    let machine = |file: &str| Machine::start(&bin, env_with_pki(file, &ips, &pki));
    let a = machine("deploy/witness/tandem-a.env");
    let b = machine("deploy/witness/tandem-b.env");
    let w = machine("deploy/witness/tandem-witness.env");
    for (url, m) in [
        ("http://127.42.2.1:2381/health", &a),
        ("http://127.42.2.2:2381/health", &b),
        ("http://127.42.2.3:2381/health", &w),
    ] {
        if wait_until(&format!("{url} healthy"), WAIT, || {
            http_get(url).is_ok_and(|(code, body)| code == 200 && body.contains("true"))
        })
        .is_err()
        {
            panic!("{url} did not become healthy:\n{}", m.log());
        }
    }
    let put = |endpoint: &str, key: &str| {
        let out = Command::new(CtlVersion::V35.bin())
            .arg(format!("--endpoints={endpoint}"))
            .args(pki.ctl_flags())
            .args(["put", key, "v"])
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    put("https://127.42.2.1:2379", "/before");
    // Either data machine may go: with B gone, A goes on with the witness.
    drop(b);
    put("https://127.42.2.1:2379", "/after-b");
}

/// The fencing env files start two machines that arm their fencing; with the peer gone, the
/// survivor runs the fence command as written (fence_redfish, not installed here: it fails, so
/// writes stay refused and the failure is in the log).
#[test]
fn the_fencing_env_files_start_two_machines_that_fence_each_other() {
    let ips = [
        ("NODE_A_IP", "127.42.3.1"),
        ("NODE_B_IP", "127.42.3.2"),
        ("NODE_A_BMC_IP", "127.42.3.11"),
        ("NODE_B_BMC_IP", "127.42.3.12"),
    ];
    let bin = tandem_bin();
    let pki = Pki::make(&["127.42.3.1", "127.42.3.2"]);
    let a = Machine::start(
        &bin,
        env_with_pki("deploy/fencing/tandem-a.env", &ips, &pki),
    );
    let b = Machine::start(
        &bin,
        env_with_pki("deploy/fencing/tandem-b.env", &ips, &pki),
    );
    for (ip, m) in [("127.42.3.1", &a), ("127.42.3.2", &b)] {
        let url = format!("http://{ip}:2381/metrics");
        if wait_until(&format!("{ip} to arm its fencing"), WAIT, || {
            http_get(&url).is_ok_and(|(_, body)| body.lines().any(|l| l == "tandem_fence_armed 1"))
        })
        .is_err()
        {
            panic!("{ip} did not arm its fencing:\n{}", m.log());
        }
    }
    drop(b);
    let failed = wait_until("A to run the fence command for node-b", WAIT, || {
        let log = a.log();
        log.contains("the fence command failed") && log.contains("fence_redfish")
    });
    assert!(failed.is_ok(), "{}", a.log());
    assert!(
        a.log().contains("\"peer\":\"node-b\""),
        "the peer named in the log"
    );
    let put = Command::new(CtlVersion::V35.bin())
        .arg("--endpoints=https://127.42.3.1:2379")
        .args(pki.ctl_flags())
        .args(["--command-timeout=3s", "put", "/unfenced", "v"])
        .output()
        .expect("etcdctl");
    assert!(
        !put.status.success(),
        "no write before the fence succeeds: {}",
        String::from_utf8_lossy(&put.stdout)
    );
}

#[test]
fn kubeadm_points_at_both_members() {
    let yaml =
        std::fs::read_to_string(workspace_path("deploy/kubeadm-external-etcd.yaml")).expect("yaml");
    let a = env_file("deploy/two-nodes/tandem-a.env", "NODE_A_IP", "NODE_B_IP");
    let b = env_file("deploy/two-nodes/tandem-b.env", "NODE_A_IP", "NODE_B_IP");
    for env in [a, b] {
        let url = &env
            .iter()
            .find(|(k, _)| k == "ETCD_ADVERTISE_CLIENT_URLS")
            .expect("advertised client URL")
            .1;
        assert!(
            yaml.contains(&format!("- {url}\n")),
            "kubeadm's endpoints include {url}"
        );
    }
    // The apiserver's client certificate is the one deploy/make-certs makes, under kubeadm's
    // paths.
    for line in [
        "caFile: /etc/kubernetes/pki/etcd/ca.crt",
        "certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt",
        "keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key",
    ] {
        assert!(yaml.contains(line), "kubeadm's config has {line}");
    }
    let script = std::fs::read_to_string(workspace_path("deploy/make-certs")).expect("make-certs");
    assert!(script.contains("leaf apiserver-etcd-client"));
}
