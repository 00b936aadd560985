//! Off the hot path: the witness must cost the two data members nothing in steady state (W3).
//! One tandem cluster of two data members and a witness, the witness's links (to and from both
//! data members) through a [`FaultProxy`], measured under three conditions taken in turn in
//! every round (the order rotating from round to round): the witness's links undelayed, delayed
//! 50 ms each way, and the witness SIGSTOPped. Put throughput at 1,000 clients and put p50 at
//! one client on the data members must stay within 5% of the undelayed figures (medians over
//! the rounds). `compare --witness-path` writes the table to `docs/witness-path.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{bench, median, Bins, Cluster, Figures, System, WITNESS, WORKLOADS};
use etcd_compat_tests::faultproxy::Flow;

/// How much slower than with an undelayed witness the data members may be.
const TOLERANCE: f64 = 0.05;
/// The delay on each direction of the witness's links.
const DELAY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    Undelayed,
    Delayed,
    Stopped,
}

impl Condition {
    const ALL: [Condition; 3] = [Condition::Undelayed, Condition::Delayed, Condition::Stopped];

    fn label(self) -> &'static str {
        match self {
            Condition::Undelayed => "witness links undelayed",
            Condition::Delayed => "witness links delayed 50 ms each way",
            Condition::Stopped => "witness SIGSTOPped",
        }
    }
}

/// (workload index, what is compared, the figure, whether more is better)
type Measure = (usize, &'static str, fn(&Figures) -> f64, bool);
const MEASURES: [Measure; 2] = [
    (1, "put, 1000 clients: QPS", |f| f.qps, true),
    (0, "put, 1 client: p50 ms", |f| f.p50_ms, false),
];

fn signal(pid: u32, sig: &str) -> Result<()> {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -{sig} {pid} failed");
    Ok(())
}

/// Runs the benchmark and returns the markdown report.
pub fn run(bins: &Bins, work: &Path, rounds: usize, seconds: u64) -> Result<String> {
    let started = Instant::now();
    let cluster = Cluster::start_linked(
        System::TandemWitness,
        bins,
        &work.join("witness-path"),
        21_200,
        true,
        None,
    )?;
    let proxy = cluster.proxy.as_ref().context("the witness's proxy")?;
    let witness = cluster.members[WITNESS].child.id();
    let duration = ["--duration".to_string(), seconds.to_string()];
    let mut figures: BTreeMap<(Condition, usize), Vec<Figures>> = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..Condition::ALL.len() {
            let c = Condition::ALL[(round + k) % Condition::ALL.len()];
            match c {
                Condition::Undelayed => proxy.heal(),
                Condition::Delayed => proxy.set_member(WITNESS, Flow::Delay(DELAY)),
                Condition::Stopped => signal(witness, "STOP")?,
            }
            for (w, ..) in MEASURES {
                eprintln!(
                    "witness path, round {}/{rounds}: {} with the {}",
                    round + 1,
                    WORKLOADS[w].name,
                    c.label()
                );
                let f = bench(bins, &cluster, WORKLOADS[w].args, &duration)?;
                figures.entry((c, w)).or_default().push(f);
            }
            proxy.heal();
            if c == Condition::Stopped {
                signal(witness, "CONT")?;
            }
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    Ok(report(&figures, rounds, seconds, minutes))
}

fn report(
    figures: &BTreeMap<(Condition, usize), Vec<Figures>>,
    rounds: usize,
    seconds: u64,
    minutes: f64,
) -> String {
    let med = |c, w: usize, f: fn(&Figures) -> f64| {
        median(
            figures
                .get(&(c, w))
                .map_or(Vec::new(), |v| v.iter().map(f).collect()),
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The witness off the hot path\n\n\
         Produced by `benches/compare --witness-path` (benches/src/bin/compare/witness_path.rs); do\n\
         not edit by hand. One tandem cluster of two data members and a witness on loopback, the\n\
         witness's links to and from both data members through the fault proxy\n\
         (`etcd-compat-tests/src/faultproxy.rs`); the load (`tandem-ctl bench`) on the two data\n\
         members. {rounds} rounds; in each, every condition in turn (the order rotating), each\n\
         workload {seconds} s under it; medians over the rounds. Target (W3): within {:.0}% of the\n\
         undelayed witness.\n",
        TOLERANCE * 100.0
    );
    let _ = writeln!(
        out,
        "- Date: {}\n- tandem commit: {}\n- Run time: {minutes:.0} minutes\n",
        super::report::shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        super::report::shell("git", &["rev-parse", "--short", "HEAD"])
    );
    let _ = write!(out, "| condition |");
    for (_, what, ..) in MEASURES {
        let _ = write!(out, " {what} | vs undelayed |");
    }
    let _ = writeln!(out, "\n|---|{}", "---:|---|".repeat(MEASURES.len()));
    for c in Condition::ALL {
        let _ = write!(out, "| {} |", c.label());
        for (w, _, f, more_is_better) in MEASURES {
            let v = med(c, w, f);
            let base = med(Condition::Undelayed, w, f);
            let ratio = if base > 0.0 { v / base } else { 0.0 };
            let met = if more_is_better {
                ratio >= 1.0 - TOLERANCE
            } else {
                ratio <= 1.0 + TOLERANCE
            };
            let verdict = if c == Condition::Undelayed {
                "(baseline)".to_string()
            } else if met {
                format!("{ratio:.3}× (met)")
            } else {
                format!("{ratio:.3}× (**not met**)")
            };
            let _ = write!(out, " {v:.1} | {verdict} |");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "\nEach round's figures (QPS / p50 ms / p99 ms):\n");
    for c in Condition::ALL {
        for (w, ..) in MEASURES {
            let runs: Vec<String> = figures
                .get(&(c, w))
                .map_or(Vec::new(), |v| v.iter().map(super::report::cell).collect());
            let _ = writeln!(
                out,
                "- {}, {}: {}",
                c.label(),
                WORKLOADS[w].name,
                runs.join("; ")
            );
        }
    }
    out
}
