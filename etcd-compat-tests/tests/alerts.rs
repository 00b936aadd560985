//! The etcd-mixin alerts (`alerts/etcd-mixin.yaml`) fire on tandem as they fire on etcd 3.5.1.
//! Both are put through the same faults while every member's `/metrics` is scraped at a fixed
//! pace (and `up` recorded from whether the scrape answered); the scrapes are replayed to
//! promtool as one per minute, which evaluates the rules, `for` durations included, over the
//! recording. The alerts that fired must be the same on both, and include the one the fault
//! is for: leader changes, a member down (also as only its peers see it), and a follower whose
//! fdatasyncs take 600 ms (the fsync and backend-commit alerts on both). Needs promtool
//! (Debian's `prometheus` package; `scripts/install-deps`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_compat_tests::{
    http_get, run_command, steady_writer, strace_injecting, workspace_path, Cluster, Kind,
};

/// Each scrape is replayed as a minute (the rules' windows are minutes), so a rate in the
/// replay is the real one divided by 60 s / pace: the pace of a recording must leave the
/// counters a rule takes a rate of enough real time to move (a member retries a dead peer about
/// twice a second, and the rule wants more than one failure in two minutes; a slow disk syncs
/// about twice a second, and an empty five-minute window has no quantile).
const FAST: Duration = Duration::from_millis(250);
const SLOW: Duration = Duration::from_secs(1);

/// Every member's samples, scrape by scrape: series (with `job` and `instance`) → value.
#[derive(Default)]
struct Recording {
    scrapes: Vec<BTreeMap<String, f64>>,
}

/// One member's /metrics as series with `job` and `instance` added, or `None` when it does
/// not answer.
fn scrape(url: &str, instance: &str) -> Option<BTreeMap<String, f64>> {
    let (code, body) = http_get(&format!("{url}/metrics")).ok()?;
    if code != 200 {
        return None;
    }
    let extra = format!("job=\"etcd\",instance=\"{instance}\"");
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{{extra},{labels}"),
            None => format!("{series}{{{extra}}}"),
        };
        out.insert(series, v);
    }
    Some(out)
}

impl Recording {
    fn scrape(&mut self, cluster: &Cluster) {
        let mut all = BTreeMap::new();
        for m in &cluster.members {
            let up = match scrape(&m.url(), m.name()) {
                Some(samples) => {
                    all.extend(samples);
                    1.0
                }
                None => 0.0,
            };
            all.insert(format!("up{{job=\"etcd\",instance=\"{}\"}}", m.name()), up);
        }
        self.scrapes.push(all);
    }

    /// The alerts promtool sees firing at minute `at` of the replay.
    fn firing(&self, dir: &std::path::Path, at: usize) -> BTreeSet<String> {
        let series: BTreeSet<&String> = self.scrapes.iter().flat_map(|s| s.keys()).collect();
        let mut input = String::new();
        for s in series {
            let values: Vec<String> = self
                .scrapes
                .iter()
                .map(|scrape| scrape.get(s).map_or("_".to_string(), |v| format!("{v}")))
                .collect();
            input.push_str(&format!(
                "  - series: '{}'\n    values: '{}'\n",
                s.replace('\'', "''"),
                values.join(" ")
            ));
        }
        let rules = workspace_path("etcd-compat-tests/alerts/etcd-mixin.yaml");
        let names = [
            "etcdMembersDown",
            "etcdInsufficientMembers",
            "etcdNoLeader",
            "etcdHighNumberOfLeaderChanges",
            "etcdHighNumberOfFailedGRPCRequests",
            "etcdGRPCRequestsSlow",
            "etcdMemberCommunicationSlow",
            "etcdHighNumberOfFailedProposals",
            "etcdHighFsyncDurations",
            "etcdHighCommitDurations",
            "etcdDatabaseQuotaLowSpace",
            "etcdDatabaseHighFragmentationRatio",
        ];
        let eval = format!("{at}m");
        let tests: String = names
            .iter()
            .map(|n| format!("  - eval_time: {eval}\n    alertname: {n}\n    exp_alerts: []\n"))
            .collect();
        let file = dir.join("alerts-test.yaml");
        std::fs::write(
            &file,
            format!(
                "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n{input}  alert_rule_test:\n{tests}",
                rules.display()
            ),
        )
        .expect("promtool test file");
        let mut c = Command::new("promtool");
        c.args(["test", "rules"]).arg(&file);
        let out = run_command(c, None);
        // Every alert is expected silent: promtool names each that fired ("got" not empty).
        let text = format!("{}\n{}", out.stdout, out.stderr);
        let mut firing = BTreeSet::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("alertname: ") {
                current = rest.split(',').next().map(str::to_string);
            }
            if let (Some(name), Some(got)) = (&current, line.trim().strip_prefix("got:")) {
                if got.trim() != "[]" && !got.trim().is_empty() {
                    firing.insert(name.clone());
                }
            }
        }
        assert!(
            out.code == 0 || !firing.is_empty(),
            "promtool failed without naming an alert: {text}"
        );
        firing
    }
}

/// The faults recorded.
#[derive(Clone, Copy)]
enum Fault {
    /// Leadership moved five times (an unstable cluster's elections).
    LeaderChanges,
    /// A follower killed.
    MemberDown,
    /// Nothing more (the fault was set up before recording).
    None,
}

/// Records `scrapes` scrapes of `cluster`, one every `pace`, with `fault` after the first few.
async fn record(cluster: &mut Cluster, fault: Fault, scrapes: usize, pace: Duration) -> Recording {
    let mut rec = Recording::default();
    let mut tick = tokio::time::interval(pace);
    for i in 0..scrapes {
        tick.tick().await;
        rec.scrape(cluster);
        if i != 3 {
            continue;
        }
        let leader = cluster
            .wait_leader(Duration::from_secs(30))
            .await
            .expect("leader");
        match fault {
            Fault::LeaderChanges => {
                for _ in 0..5 {
                    move_leader_away(cluster).await;
                }
            }
            Fault::MemberDown => {
                let victim = (leader + 1) % cluster.members.len();
                cluster.members[victim].stop("KILL").expect("kill");
            }
            Fault::None => {}
        }
    }
    rec
}

async fn move_leader_away(cluster: &Cluster) {
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let to = (leader + 1) % cluster.members.len();
    let id = cluster.members[to].member_id().await.expect("member id");
    let mut l = cluster.members[leader].client().await.expect("client");
    l.move_leader(id).await.expect("move leader");
}

/// The alerts each fault fires on `kind`.
async fn alerts_of(kind: Kind, dir: &std::path::Path) -> Vec<(&'static str, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut cluster = Cluster::start(kind, 3, &[]).expect("cluster");
    // The changes land at minute 4 of the replay: counted in the next 15 minutes' increase,
    // and firing once that held for 5.
    let rec = record(&mut cluster, Fault::LeaderChanges, 16, FAST).await;
    out.push(("leader changes", rec.firing(dir, 14)));
    // A member down from minute 4: firing once its send failures held for 20 minutes.
    let mut rec = record(&mut cluster, Fault::MemberDown, 28, SLOW).await;
    out.push(("a member down", rec.firing(dir, 27)));
    // Without `up` (a member Prometheus does not scrape) only its peers' send failures tell.
    for scrape in &mut rec.scrapes {
        scrape.retain(|series, _| !series.starts_with("up{"));
    }
    out.push(("a member down, seen by its peers", rec.firing(dir, 27)));
    drop(cluster);
    out.push(("slow fsync on a follower", slow_fsync(kind, dir).await));
    out
}

/// A follower whose fdatasyncs take 600 ms each (strace), under eight steady writers.
async fn slow_fsync(kind: Kind, dir: &std::path::Path) -> BTreeSet<String> {
    let mut cluster = Cluster::start(kind, 3, &[]).expect("cluster");
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let slow = (leader + 1) % 3;
    let m = &mut cluster.members[slow];
    m.stop("TERM").expect("stop");
    let strace = strace_injecting("fdatasync", "fdatasync:delay_enter=600000");
    m.set_wrapper(&strace.iter().map(String::as_str).collect::<Vec<_>>());
    m.restart().expect("restart under strace");
    cluster.wait_healthy(slow).expect("healthy under strace");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [
        "/fsync/0/",
        "/fsync/1/",
        "/fsync/2/",
        "/fsync/3/",
        "/fsync/4/",
        "/fsync/5/",
        "/fsync/6/",
        "/fsync/7/",
    ]
    .into_iter()
    .map(|prefix| {
        tokio::spawn(steady_writer(
            cluster.members[leader].url(),
            prefix,
            Arc::clone(&stop),
        ))
    })
    .collect();
    let rec = record(&mut cluster, Fault::None, 16, SLOW).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    // Slow from the start: the rate of 5 minutes and 10 minutes of `for` have passed by 15.
    rec.firing(dir, 15)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_etcd_mixin_alerts_fire_on_tandem_as_on_etcd() {
    if Command::new("promtool").arg("--version").output().is_err() {
        panic!("promtool is missing: run scripts/install-deps (Debian's prometheus package)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let theirs = alerts_of(Kind::Etcd35, dir.path()).await;
    let ours = alerts_of(Kind::Tandem, dir.path()).await;
    for ((fault, t), (_, o)) in theirs.iter().zip(&ours) {
        println!("{fault}: etcd fired {t:?}, tandem fired {o:?}");
    }
    let want = [
        ("leader changes", "etcdHighNumberOfLeaderChanges"),
        ("a member down", "etcdMembersDown"),
        ("a member down, seen by its peers", "etcdMembersDown"),
        ("slow fsync on a follower", "etcdHighFsyncDurations"),
    ];

    for ((fault, alert), ((_, t), (_, o))) in want.iter().zip(theirs.iter().zip(&ours)) {
        assert!(
            t.contains(*alert),
            "{fault}: etcd did not fire {alert}: {t:?}"
        );
        assert_eq!(o, t, "{fault}: tandem fires what etcd fires");
    }
}
