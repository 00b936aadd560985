//! The `bench` command: `clients` concurrent requesters over `conns` gRPC connections issue one
//! workload until `total` requests (or `duration`) are done, optionally paced to `rate` per
//! second, and report QPS, latency percentiles, errors by gRPC code and a latency histogram.
//! Modelled on etcd's `tools/benchmark`, so that one tool measures tandem and etcd alike.
//!
//! This file owns the options, the client loop and the report; `kv` holds the request
//! workloads, `watch` the watchers whose event latency the watch workloads measure, and `k8s`
//! the kube-apiserver-shaped mix.

mod k8s;
mod kv;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Put of a key in the key space.
    Put,
    /// Linearizable single-key range.
    Range,
    /// Serializable single-key range.
    RangeSerializable,
    /// Txn with a MOD compare and a put, as the apiserver's updates.
    TxnPut,
    /// Txns that read (a range) or write (a put), `--rw-ratio` reads per write.
    TxnMixed,
    /// Delete of a key; the key space is filled first (not measured).
    Delete,
    /// Puts as fast as the clients go; `--watchers` watchers over `--streams` streams receive
    /// every one. Measures event delivery: latency from put to event, events per second.
    Watch,
    /// Puts paced at `--rate` (100/s unless given) by one client; measures put-to-event latency.
    WatchLatency,
    /// One lease per client, refreshed over its keep-alive stream: keep-alive round trips.
    LeaseKeepalive,
    /// The kube-apiserver's mix: create/update/delete Txns on mod_revision, gets, paged lists,
    /// counts, lease grants, watches with prev_kv, and the compaction cycle.
    K8s,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workload.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Comma-separated host:port endpoints (round robin over connections).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// gRPC connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests in all (for watch workloads: puts).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this many seconds instead of a total.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Requests per second in all (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// How many distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// txn-mixed: reads per write.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// watch, watch-latency, k8s: watchers in all.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// watch, watch-latency, k8s: gRPC watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// k8s: seconds between compaction rounds.
    #[arg(long, default_value_t = 5)]
    pub compact_interval: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn rate_per_sec(&self) -> u64 {
        match (self.workload, self.rate) {
            (Workload::WatchLatency, 0) => 100,
            (_, r) => r,
        }
    }

    fn client_count(&self) -> usize {
        match self.workload {
            Workload::WatchLatency => 1,
            _ => self.clients.max(1),
        }
    }
}

/// The largest latency the histograms record, in microseconds (60 s).
const LATENCY_US_MAX: u64 = 60_000_000;
/// How long watchers may take to receive the last events after the last put.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Latencies by operation, and errors by gRPC code and message, shared by all tasks.
pub(crate) struct Recorder {
    start: Instant,
    ops: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    fn new(start: Instant) -> Self {
        Recorder {
            start,
            ops: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn record(&self, op: &'static str, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let mut ops = self.ops.lock().expect("histograms");
        let h = ops.entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds")
        });
        let _ = h.record(us);
    }

    pub(crate) fn error(&self, status: &tonic::Status) {
        *self
            .errors
            .lock()
            .expect("errors")
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }

    /// Times `fut` as one `op`; its error, if any, is counted instead.
    pub(crate) async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Option<T> {
        let t = Instant::now();
        match fut.await {
            Ok(v) => {
                self.record(op, t.elapsed());
                Some(v)
            }
            Err(s) => {
                self.error(&s);
                None
            }
        }
    }

    /// A value of `size` bytes (at least 8) whose first 8 carry the time since the run began,
    /// so that a watcher can tell how long the event took to reach it.
    pub(crate) fn stamped_value(&self, size: usize) -> Vec<u8> {
        let mut v = vec![b'v'; size.max(8)];
        let nanos = self.start.elapsed().as_nanos() as u64;
        v[..8].copy_from_slice(&nanos.to_le_bytes());
        v
    }

    /// How long ago a value made by `stamped_value` was made.
    pub(crate) fn age_of(&self, value: &[u8]) -> Option<Duration> {
        let stamp = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
        self.start
            .elapsed()
            .checked_sub(Duration::from_nanos(stamp))
    }
}

/// Connects `conns` channels round robin over the endpoints.
async fn connect(args: &Args) -> anyhow::Result<Vec<Channel>> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    anyhow::ensure!(!endpoints.is_empty(), "--endpoints is empty");
    let tls = args.tls.grpc()?;
    let mut channels = Vec::new();
    for i in 0..args.conns.max(1) {
        let e = &endpoints[i % endpoints.len()];
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = if e.contains("://") {
            e.clone()
        } else {
            format!("{scheme}://{e}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())?.tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    Ok(channels)
}

/// What every client loop shares: the request counter, pacing and the end condition.
struct Plan {
    next: AtomicU64,
    done: AtomicU64,
    total: u64,
    deadline: Option<Instant>,
    start: Instant,
    per_client_rate: f64,
}

impl Plan {
    /// The number of the next request, or None when the run is over.
    fn take(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let over = match self.deadline {
            Some(d) => Instant::now() >= d,
            None => n >= self.total,
        };
        (!over).then_some(n)
    }
}

async fn client_loop(
    mut worker: kv::Worker,
    plan: Arc<Plan>,
    bar: indicatif::ProgressBar,
) -> kv::Worker {
    let mut sent = 0u64;
    while let Some(n) = plan.take() {
        if plan.per_client_rate > 0.0 {
            let due = plan.start + Duration::from_secs_f64(sent as f64 / plan.per_client_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        sent += 1;
        worker.step(n).await;
        plan.done.fetch_add(1, Ordering::Relaxed);
        bar.inc(1);
    }
    worker
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let channels = connect(&args).await?;
    let args = Arc::new(args);
    let start = Instant::now();
    let rec = Arc::new(Recorder::new(start));
    if args.workload == Workload::Delete {
        kv::fill_key_space(&channels, &args).await?;
    }
    let watchers = match args.workload {
        Workload::Watch | Workload::WatchLatency => {
            Some(watch::open(&channels, &args, rec.clone(), watch::Target::AllKeys).await?)
        }
        Workload::K8s => {
            Some(watch::open(&channels, &args, rec.clone(), k8s::watch_target()).await?)
        }
        _ => None,
    };
    let compactor = (args.workload == Workload::K8s)
        .then(|| k8s::spawn_compactor(channels[0].clone(), &args, rec.clone()));
    let bar = if args.json || args.duration.is_some() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.total)
    };
    let clients = args.client_count();
    let plan = Arc::new(Plan {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        total: args.total,
        deadline: args
            .duration
            .map(|s| Instant::now() + Duration::from_secs(s)),
        start: Instant::now(),
        per_client_rate: args.rate_per_sec() as f64 / clients as f64,
    });
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let worker = kv::Worker::new(&channels[i % channels.len()], i, &args, rec.clone());
            tokio::spawn(client_loop(worker, plan.clone(), bar.clone()))
        })
        .collect();
    let mut writes = 0;
    for t in tasks {
        writes += t.await?.writes;
    }
    let requests_done = Instant::now();
    bar.finish_and_clear();
    if let Some(c) = compactor {
        c.abort();
    }
    let mut extra = serde_json::Map::new();
    if let Some(w) = watchers {
        let expected = writes * w.count() as u64;
        let delivered = w.drain(expected, DRAIN_DEADLINE).await;
        let secs = plan.start.elapsed().as_secs_f64();
        extra.insert("events_expected".into(), expected.into());
        extra.insert("events".into(), delivered.into());
        extra.insert("events_per_sec".into(), (delivered as f64 / secs).into());
    }
    let elapsed = (requests_done - plan.start).as_secs_f64();
    let report = Report::new(
        &args,
        &rec,
        plan.done.load(Ordering::Relaxed),
        elapsed,
        extra,
    );
    let text = if args.json {
        format!("{}\n", report.json)
    } else {
        report.render()
    };
    crate::print_out(&text);
    Ok(())
}

/// The operations whose latency is the workload's headline figure.
fn measured_ops(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::Watch | Workload::WatchLatency => &[watch::EVENT_OP],
        Workload::K8s => k8s::CLIENT_OPS,
        _ => &[kv::REQUEST_OP],
    }
}

/// The operations the client loops issue (what "requests" and QPS count).
fn client_ops(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::Watch | Workload::WatchLatency => &[kv::WATCHED_PUT_OP],
        Workload::K8s => k8s::CLIENT_OPS,
        _ => &[kv::REQUEST_OP],
    }
}

struct Report {
    json: serde_json::Value,
    headline: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: f64,
}

impl Report {
    fn new(
        args: &Args,
        rec: &Recorder,
        requests: u64,
        elapsed: f64,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let ops = rec.ops.lock().expect("histograms").clone();
        let errors = rec.errors.lock().expect("errors").clone();
        let mut headline = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("bounds");
        for op in measured_ops(args.workload) {
            if let Some(h) = ops.get(op) {
                headline.add(h).expect("same bounds");
            }
        }
        let succeeded: u64 = client_ops(args.workload)
            .iter()
            .filter_map(|op| ops.get(op))
            .map(|h| h.len())
            .sum();
        let mut json = serde_json::json!({
            "workload": format!("{:?}", args.workload),
            "clients": args.client_count(),
            "conns": args.conns,
            "requests": requests,
            "succeeded": succeeded,
            "errors": errors,
            "seconds": elapsed,
            "qps": succeeded as f64 / elapsed,
            "latency_ms": latency_json(&headline),
        });
        if ops.len() > 1 || args.workload == Workload::K8s {
            let by_op: serde_json::Map<_, _> = ops
                .iter()
                .map(|(op, h)| (op.to_string(), latency_json(h)))
                .collect();
            json["ops"] = by_op.into();
        }
        for (k, v) in extra {
            json[k] = v;
        }
        Report {
            json,
            headline,
            errors,
            elapsed,
        }
    }

    /// The human report, laid out like etcd's benchmark tool prints it.
    fn render(&self) -> String {
        use std::fmt::Write;
        let h = &self.headline;
        let mut out = String::new();
        let secs = |us: u64| us as f64 / 1e6;
        let _ = writeln!(
            out,
            "Summary:\n  Total:\t{:.4} secs.\n  Slowest:\t{:.4} secs.\n  Fastest:\t{:.4} secs.",
            self.elapsed,
            secs(h.max()),
            secs(h.min())
        );
        let _ = writeln!(
            out,
            "  Average:\t{:.4} secs.\n  Stddev:\t{:.4} secs.\n  Requests/sec:\t{:.4}",
            h.mean() / 1e6,
            h.stdev() / 1e6,
            self.json["qps"].as_f64().unwrap_or_default()
        );
        if let Some(e) = self.json.get("events_per_sec") {
            let _ = writeln!(out, "  Events/sec:\t{:.4}", e.as_f64().unwrap_or_default());
        }
        let _ = writeln!(out, "\nResponse time histogram:");
        for step in h.iter_log((h.max() / 1024).max(1), 2.0) {
            if step.count_since_last_iteration() > 0 {
                let _ = writeln!(
                    out,
                    "  {:.4} [{}]",
                    secs(step.value_iterated_to()),
                    step.count_since_last_iteration()
                );
            }
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for q in [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "  {:.1}% in {:.4} secs.",
                q * 100.0,
                secs(h.value_at_quantile(q))
            );
        }
        if let Some(ops) = self.json.get("ops").and_then(|o| o.as_object()) {
            let _ = writeln!(out, "\nBy operation (count, p50 ms, p99 ms):");
            for (op, l) in ops {
                let _ = writeln!(
                    out,
                    "  {op:<14}{:>9}{:>10}{:>10}",
                    l["count"], l["p50"], l["p99"]
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nErrors:");
            for (e, n) in &self.errors {
                let _ = writeln!(out, "  {n}\t{e}");
            }
        }
        out
    }
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "min": ms(h.min()), "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)), "p999": ms(h.value_at_quantile(0.999)), "max": ms(h.max()),
        "mean": h.mean() / 1000.0, "stddev": h.stdev() / 1000.0,
    })
}
