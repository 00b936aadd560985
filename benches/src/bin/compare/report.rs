//! The comparison's outputs: `docs/benchmarks.md` (machine, command, figures, ratios, the
//! single-node targets met or missed) and a chart of tandem/etcd throughput ratios.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::{Figures, Results, System, WORKLOADS};

/// The targets' workloads, by their index in `WORKLOADS`.
const PUT_1: usize = 0;
const PUT_1000: usize = 1;
const RANGE_1000: usize = 3;

const ETCDS: [System; 2] = [System::Etcd34, System::Etcd35];

pub(crate) fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} vCPU ({model}), {mem:.0} GiB RAM, Linux {}, load generator on the same machine, loopback",
        kernel.trim()
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

pub(crate) fn cell(f: &Figures) -> String {
    format!("{:.0} / {:.2} / {:.2}", f.qps, f.p50_ms, f.p99_ms)
}

fn median_figures(r: &Results, w: usize, s: System) -> Figures {
    Figures {
        qps: r.median(w, s, |f| f.qps),
        p50_ms: r.median(w, s, |f| f.p50_ms),
        p99_ms: r.median(w, s, |f| f.p99_ms),
        max_ms: r.median(w, s, |f| f.max_ms),
        stddev_ms: r.median(w, s, |f| f.stddev_ms),
        // Summed over the rounds, as `errors`.
        errors_by_code: r
            .figures
            .get(&(w, s))
            .into_iter()
            .flatten()
            .flat_map(|f| f.errors_by_code.iter())
            .fold(BTreeMap::new(), |mut acc, (code, n)| {
                *acc.entry(code.clone()).or_insert(0) += n;
                acc
            }),
        events_per_sec: r
            .figures
            .get(&(w, s))
            .and_then(|v| v.first()?.events_per_sec)
            .map(|_| r.median(w, s, |f| f.events_per_sec.unwrap_or_default())),
    }
}

/// tandem/etcd ratios per workload: throughput, p50 and p99 against each single etcd member.
pub fn ratio_table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | QPS ×3.4 | QPS ×3.5 | p50 ×3.4 | p50 ×3.5 | p99 ×3.4 | p99 ×3.5 |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let t = median_figures(r, w, System::Tandem);
        let mut row = format!("| {} ", workload.name);
        for metric in [
            |f: &Figures| f.qps,
            |f: &Figures| f.p50_ms,
            |f: &Figures| f.p99_ms,
        ] {
            for e in ETCDS {
                let _ = write!(
                    row,
                    "| {:.2} ",
                    ratio(metric(&t), metric(&median_figures(r, w, e)))
                );
            }
        }
        let _ = writeln!(out, "{row}|");
    }
    out
}

/// A tandem cluster (`tandem`) against three etcd 3.5.1 members, the load spread over every
/// member that serves clients.
pub fn cluster_ratio_table(r: &Results, tandem: System) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | QPS ×3.5 | p50 ×3.5 | p99 ×3.5 |\n|---|---:|---:|---:|"
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let t = median_figures(r, w, tandem);
        let e = median_figures(r, w, System::Etcd35x3);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} |",
            workload.name,
            ratio(t.qps, e.qps),
            ratio(t.p50_ms, e.p50_ms),
            ratio(t.p99_ms, e.p99_ms)
        );
    }
    out
}

/// (target, workload, figure, bound, whether tandem/etcd must be at least the bound)
type RatioTarget = (&'static str, usize, fn(&Figures) -> f64, f64, bool);
const RATIO_TARGETS: [RatioTarget; 3] = [
    (
        "put, 1000 clients: throughput ≥ 1.5× etcd",
        PUT_1000,
        |f| f.qps,
        1.5,
        true,
    ),
    (
        "put, 1000 clients: p99 ≤ 0.7× etcd",
        PUT_1000,
        |f| f.p99_ms,
        0.7,
        false,
    ),
    (
        "range (linearizable), 1000 clients: throughput ≥ 1.5× etcd",
        RANGE_1000,
        |f| f.qps,
        1.5,
        true,
    ),
];

/// The same ratio targets for two data nodes and a witness against etcd 3.5.1 with three
/// members (the load spread over the data members, and over every etcd member).
fn two_node_targets(r: &Results) -> Vec<Target> {
    RATIO_TARGETS
        .iter()
        .map(|&(what, w, figure, bound, at_least)| {
            let t = figure(&median_figures(r, w, System::TandemWitness));
            let e = figure(&median_figures(r, w, System::Etcd35x3));
            let v = ratio(t, e);
            Target {
                what,
                measured: format!("{v:.2}× vs 3.5.1 (3 members)"),
                met: if at_least { v >= bound } else { v <= bound },
            }
        })
        .collect()
}

fn target_table(out: &mut String, targets: Vec<Target>) {
    let _ = writeln!(out, "| target | measured | met |\n|---|---|---|");
    for t in targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.what,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
}

struct Target {
    what: &'static str,
    measured: String,
    met: bool,
}

fn targets(r: &Results) -> Vec<Target> {
    let t = |w| median_figures(r, w, System::Tandem);
    let e = |w, s| median_figures(r, w, s);
    let per_etcd = |f: &dyn Fn(System) -> (f64, bool)| {
        let (mut text, mut met) = (Vec::new(), true);
        for s in ETCDS {
            let (v, ok) = f(s);
            met &= ok;
            text.push(format!("{v:.2}× vs {}", version(s)));
        }
        (text.join(", "), met)
    };
    let mut out = Vec::new();
    // etcd 3.5.1 as a single member answers a put before its WAL fdatasync has returned
    // (etcd-io/etcd#14370, fixed in 3.5.5 and 3.4.21): its latency is not that of a durable
    // write, so the target is judged against etcd 3.4.23, which waits for the fdatasync.
    let p50 = |s| ratio(t(PUT_1).p50_ms, e(PUT_1, s).p50_ms);
    out.push(Target {
        what: "put, 1 client: p50 ≤ etcd (judged against 3.4.23: 3.5.1 acknowledges before its fsync)",
        measured: format!(
            "{:.2}× vs 3.4, {:.2}× vs 3.5.1 (not durable when it answers)",
            p50(System::Etcd34),
            p50(System::Etcd35)
        ),
        met: p50(System::Etcd34) <= 1.0,
    });
    for (what, w, figure, bound, at_least) in RATIO_TARGETS {
        let (measured, met) = per_etcd(&|s| {
            let v = ratio(figure(&t(w)), figure(&e(w, s)));
            (v, if at_least { v >= bound } else { v <= bound })
        });
        out.push(Target {
            what,
            measured,
            met,
        });
    }
    if let Some(fp) = r.footprints.get(&System::Tandem) {
        let v = ratio(fp.reads_after_writes, fp.reads_fresh);
        out.push(Target {
            what: if r.writes_before_reads >= 1_000_000 {
                "range, 1000 clients, after 1M writes: ≥ 0.9× the fresh figure"
            } else {
                "range, 1000 clients, after the writes (target: after 1M): ≥ 0.9× the fresh figure"
            },
            measured: format!(
                "{v:.2}× ({:.0} vs {:.0} QPS)",
                fp.reads_after_writes, fp.reads_fresh
            ),
            met: v >= 0.9,
        });
        let footprint = |get: fn(&super::Footprint) -> f64| {
            per_etcd(&|s| {
                let v = r
                    .footprints
                    .get(&s)
                    .map_or(f64::NAN, |o| ratio(get(fp), get(o)));
                (v, true)
            })
        };
        let (m, _) = footprint(|f| f.rss_mib);
        let rss_ok = ETCDS.iter().all(|s| {
            r.footprints
                .get(s)
                .is_some_and(|o| fp.rss_mib <= 0.5 * o.rss_mib)
        });
        let what = if r.puts_before_rss >= 200_000 {
            "RSS after 200k puts ≤ 0.5× etcd"
        } else {
            "RSS after the puts (target: after 200k) ≤ 0.5× etcd"
        };
        out.push(Target {
            what,
            measured: m,
            met: rss_ok,
        });
        let (m, _) = footprint(|f| f.data_after_defrag_mib);
        let disk_ok = ETCDS.iter().all(|s| {
            r.footprints
                .get(s)
                .is_some_and(|o| fp.data_after_defrag_mib <= o.data_after_defrag_mib)
        });
        out.push(Target {
            what: "data dir after compaction + defrag ≤ etcd",
            measured: m,
            met: disk_ok,
        });
        if let Some(v) = &fp.check_perf {
            out.push(Target {
                what: "`etcdctl check perf --load=l` passes",
                measured: v.clone(),
                met: !v.is_empty() && !v.contains("FAIL"),
            });
        }
        if let Some(f) = &fp.check_perf_load {
            let (met, measured) = super::check_perf_verdict(f);
            out.push(Target {
                what: "check perf --load=l's load from `tandem-ctl bench`, etcdctl's pass criteria",
                measured,
                met,
            });
        }
    }
    out
}

fn version(s: System) -> &'static str {
    match s {
        System::Etcd34 => "3.4",
        _ => "3.5",
    }
}

pub fn markdown(r: &Results, minutes: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks: tandem and etcd side by side\n");
    let _ = writeln!(
        out,
        "Produced by `benches/compare` (installs etcd 3.4.23 from Debian and etcd 3.5.1 from PyPI, builds\n\
         tandem in release mode, runs `benches/src/bin/compare`); do not edit by hand. Every system is\n\
         measured by the same load generator (`tandem-ctl bench`) in the same run, on the same disk.\n\
         Compare ratios from one run, never absolute figures from different runs: the disk's fsync\n\
         latency varies by the hour on this machine.\n"
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(
        out,
        "- Date: {}",
        shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        out,
        "- tandem commit: {}",
        shell("git", &["rev-parse", "--short", "HEAD"])
    );
    let _ = writeln!(out, "- Command: `{}` ({minutes:.0} minutes)", r.command);
    let _ = writeln!(
        out,
        "- Method: {} rounds; in each round every workload runs {} s against each system in turn\n  \
         (interleaved); figures are medians over the rounds. Keys 8 bytes, values 256 bytes. All\n  \
         systems run at once (idle ones cost little); the 3-member etcd gets the load spread over its\n  \
         members. Memory and disk are measured afterwards on fresh single members, one at a time.\n",
        r.rounds, r.seconds
    );
    let _ = writeln!(
        out,
        "Micro-benchmarks of the hot paths (criterion, not part of this comparison): \
         `cargo bench -p tandem-benches --bench mvcc --bench raft_log`.\n"
    );
    let _ = writeln!(out, "## Single-node targets\n");
    target_table(&mut out, targets(r));
    let _ = writeln!(
        out,
        "\n## tandem / etcd ratios (single members; QPS > 1 and latency < 1 favour tandem)\n"
    );
    out.push_str(&ratio_table(r));
    let _ = writeln!(out, "\n![tandem/etcd throughput ratios](benchmarks.svg)\n");
    let _ = writeln!(
        out,
        "## Three members: tandem / etcd 3.5.1 (the load spread over every member)\n\n\
         Followers forward writes to the leader and answer linearizable reads after a ReadIndex \
         round, in both.\n"
    );
    out.push_str(&cluster_ratio_table(r, System::Tandemx3));
    let _ = writeln!(
        out,
        "\n## Two data nodes + witness: tandem / etcd 3.5.1 with three members\n\n\
         The load spread over tandem's two data members (the witness serves no client) and over \
         every etcd member. How the witness stays off the hot path (its links delayed, or the \
         witness stopped): [witness-path.md](witness-path.md).\n"
    );
    target_table(&mut out, two_node_targets(r));
    out.push('\n');
    out.push_str(&cluster_ratio_table(r, System::TandemWitness));
    out.push('\n');
    let _ = writeln!(
        out,
        "## Figures (QPS / p50 ms / p99 ms; watch workloads: event delivery latency)\n"
    );
    let _ = write!(out, "| workload |");
    for s in System::ALL {
        let _ = write!(out, " {} |", s.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(System::ALL.len()));
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let _ = write!(out, "| {} |", workload.name);
        for s in System::ALL {
            let f = median_figures(r, w, s);
            let events = f
                .events_per_sec
                .map(|e| format!(", {e:.0} events/s"))
                .unwrap_or_default();
            let errors = if f.errors() > 0 {
                let codes: Vec<String> = f
                    .errors_by_code
                    .iter()
                    .map(|(code, n)| format!("{code}: {n}"))
                    .collect();
                format!(", {} errors ({})", f.errors(), codes.join(", "))
            } else {
                String::new()
            };
            let _ = write!(out, " {}{events}{errors} |", cell(&f));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\nEach workload's `tandem-ctl bench` arguments (plus `--duration {}`):\n",
        r.seconds
    );
    for w in WORKLOADS {
        let _ = writeln!(out, "- {}: `{}`", w.name, w.args);
    }
    let _ = writeln!(
        out,
        "\n## Memory and disk (single members)\n\nEach of 100,000 keys put once, then the 1000-client range workload (\"fresh\"); puts up to\n\
         {} in all (200 clients, random keys), readings; compaction at the current revision and\n\
         defrag, readings; puts up to {} in all, and the range workload again (each range figure the\n\
         median of as many runs as there are rounds). Then `etcdctl check perf --load=l`, and the same\n\
         load from `tandem-ctl bench` (`{}`, as long as the run), judged by etcdctl's criteria.\n\n\
         | | RSS after puts | data dir after puts | RSS after compact + defrag | data dir after compact + defrag | put QPS while loading | range QPS fresh | range QPS after the writes | check perf --load=l | its load from tandem-ctl bench |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        r.puts_before_rss,
        r.writes_before_reads,
        super::CHECK_PERF_L.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    for (s, fp) in &r.footprints {
        let _ = writeln!(
            out,
            "| {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} | {:.0} | {:.0} | {} | {} |",
            s.label(),
            fp.rss_mib,
            fp.data_mib,
            fp.rss_after_defrag_mib,
            fp.data_after_defrag_mib,
            fp.put_qps_during_load,
            fp.reads_fresh,
            fp.reads_after_writes,
            fp.check_perf.as_deref().unwrap_or("not run"),
            fp.check_perf_load
                .as_ref()
                .map_or("not run".to_string(), |f| super::check_perf_verdict(f).1)
        );
    }
    out
}

/// Horizontal bars: tandem's throughput over each single etcd member's, per workload.
pub fn chart(r: &Results, path: &Path) -> anyhow::Result<()> {
    let n = WORKLOADS.len();
    let ratios: Vec<[f64; 2]> = (0..n)
        .map(|w| {
            let t = r.median(w, System::Tandem, |f| f.qps);
            ETCDS.map(|s| {
                let v = ratio(t, r.median(w, s, |f| f.qps));
                if v.is_finite() {
                    v
                } else {
                    0.0
                }
            })
        })
        .collect();
    let max = ratios.iter().flatten().copied().fold(2.0, f64::max) * 1.25;
    let root = SVGBackend::new(path, (900, 60 + 40 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "tandem throughput / etcd throughput (single member)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(290)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ratio (1.0 = equal; 1.5 = target for put and range at 1000 clients)")
        .draw()?;
    let colors = [RGBColor(230, 145, 56), RGBColor(61, 133, 198)];
    for (i, (s, color)) in ETCDS.iter().zip(colors).enumerate() {
        chart
            .draw_series(ratios.iter().enumerate().map(|(w, v)| {
                let top = n as f64 - w as f64 - 0.15 - 0.35 * i as f64;
                Rectangle::new([(0.0, top - 0.33), (v[i], top)], color.filled())
            }))?
            .label(format!("vs etcd {}", version(*s)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    for line in [1.0, 1.5] {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(line, 0.0), (line, n as f64)],
            BLACK.mix(0.5),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    // The workload names, right-aligned left of the axis at the middle of each pair of bars.
    let label = TextStyle::from(("sans-serif", 13).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Right,
            plotters::style::text_anchor::VPos::Center,
        ),
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, n as f64 - w as f64 - 0.5));
        root.draw(&Text::new(workload.name, (x - 8, y), label.clone()))?;
    }
    root.present()?;
    Ok(())
}
