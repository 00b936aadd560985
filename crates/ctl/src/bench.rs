//! The `bench` command: `clients` concurrent requesters over `conns` gRPC connections issue one
//! workload until `total` requests (or `duration`) are done, optionally paced to `rate` per
//! second, and report QPS, latency percentiles, errors by gRPC code and a latency histogram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use hdrhistogram::Histogram;
use rand::Rng;
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
    /// Requests in all.
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
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// The largest latency the histogram records, in microseconds (60 s).
const LATENCY_US_MAX: u64 = 60_000_000;

struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

fn key(args: &Args, n: u64) -> Vec<u8> {
    let k = if args.sequential_keys {
        n % args.key_space_size.max(1)
    } else {
        rand::thread_rng().gen_range(0..args.key_space_size.max(1))
    };
    let mut s = format!("{k:0width$}", width = args.key_size).into_bytes();
    s.truncate(args.key_size.max(1));
    s
}

async fn one(
    client: &mut KvClient<Channel>,
    args: &Args,
    n: u64,
    value: &[u8],
) -> Result<(), tonic::Status> {
    let k = key(args, n);
    match args.workload {
        Workload::Put => client
            .put(PutRequest {
                key: k.into(),
                value: value.to_vec().into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Workload::Range | Workload::RangeSerializable => client
            .range(RangeRequest {
                key: k.into(),
                serializable: args.workload == Workload::RangeSerializable,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Workload::TxnPut => {
            let put = RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k.clone().into(),
                    value: value.to_vec().into(),
                    ..Default::default()
                })),
            };
            let cmp = Compare {
                key: k.into(),
                target: compare::CompareTarget::Mod as i32,
                result: compare::CompareResult::Greater as i32,
                target_union: Some(compare::TargetUnion::ModRevision(-1)),
                ..Default::default()
            };
            client
                .txn(TxnRequest {
                    compare: vec![cmp],
                    success: vec![put],
                    failure: vec![],
                })
                .await
                .map(|_| ())
        }
    }
}

async fn client_loop(
    mut client: KvClient<Channel>,
    args: Arc<Args>,
    shared: Arc<Shared>,
    deadline: Option<Instant>,
    start: Instant,
    bar: indicatif::ProgressBar,
) {
    let value = vec![b'v'; args.val_size];
    let per_client_rate = args.rate as f64 / args.clients.max(1) as f64;
    let mut sent = 0u64;
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if deadline.is_none() && n >= args.total {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if per_client_rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / per_client_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        sent += 1;
        let t = Instant::now();
        let r = one(&mut client, &args, n, &value).await;
        let us = (t.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
        match r {
            Ok(()) => {
                let _ = shared.latencies.lock().expect("histogram").record(us);
            }
            Err(s) => {
                *shared
                    .errors
                    .lock()
                    .expect("errors")
                    .entry(format!("{:?}: {}", s.code(), s.message()))
                    .or_default() += 1
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
        bar.inc(1);
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    anyhow::ensure!(!endpoints.is_empty(), "--endpoints is empty");
    let mut channels = Vec::new();
    for i in 0..args.conns.max(1) {
        let e = &endpoints[i % endpoints.len()];
        let url = if e.contains("://") {
            e.clone()
        } else {
            format!("http://{e}")
        };
        channels.push(
            Endpoint::from_shared(url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        latencies: Mutex::new(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?),
        errors: Mutex::new(BTreeMap::new()),
    });
    let bar = if args.json || args.duration.is_some() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.total)
    };
    let start = Instant::now();
    let deadline = args.duration.map(|s| start + Duration::from_secs(s));
    let args = Arc::new(args);
    let tasks: Vec<_> = (0..args.clients.max(1))
        .map(|i| {
            let client = KvClient::new(channels[i % channels.len()].clone());
            tokio::spawn(client_loop(
                client,
                args.clone(),
                shared.clone(),
                deadline,
                start,
                bar.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let h = shared.latencies.lock().expect("histogram").clone();
    let errors = shared.errors.lock().expect("errors").clone();
    let ms = |us: u64| us as f64 / 1000.0;
    let report = serde_json::json!({
        "workload": format!("{:?}", args.workload),
        "clients": args.clients,
        "conns": args.conns,
        "requests": shared.done.load(Ordering::Relaxed),
        "succeeded": h.len(),
        "errors": errors,
        "seconds": elapsed,
        "qps": h.len() as f64 / elapsed,
        "latency_ms": {
            "min": ms(h.min()), "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)), "p999": ms(h.value_at_quantile(0.999)), "max": ms(h.max()),
        },
    });
    let text = if args.json {
        format!("{report}\n")
    } else {
        render(&h, &errors, elapsed)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// The human report, laid out like etcd's benchmark tool prints it.
fn render(h: &Histogram<u64>, errors: &BTreeMap<String, u64>, elapsed: f64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let secs = |us: u64| us as f64 / 1e6;
    let _ = writeln!(
        out,
        "Summary:\n  Total:\t{elapsed:.4} secs.\n  Slowest:\t{:.4} secs.\n  Fastest:\t{:.4} secs.",
        secs(h.max()),
        secs(h.min())
    );
    let _ = writeln!(
        out,
        "  Average:\t{:.4} secs.\n  Requests/sec:\t{:.4}",
        h.mean() / 1e6,
        h.len() as f64 / elapsed
    );
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
    if !errors.is_empty() {
        let _ = writeln!(out, "\nErrors:");
        for (e, n) in errors {
            let _ = writeln!(out, "  {n}\t{e}");
        }
    }
    out
}
