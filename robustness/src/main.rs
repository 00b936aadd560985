//! The long form of the robustness suite: every scenario on tandem (one member, three members)
//! and on etcd 3.5.1 (three members) for `--seconds` each, written to `docs/robustness.md`.
//! `scripts/robustness` builds what it needs and runs this.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Parser;
use etcd_compat_tests::Kind;
use robustness::scenario::{self, Fault, Scenario, Summary};

#[derive(Parser)]
#[command(about = "Runs every robustness scenario and writes the report")]
struct Args {
    /// How long each scenario's workload runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Where the report goes.
    #[arg(long, default_value = "docs/robustness.md")]
    out: String,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

fn scenarios(seconds: u64) -> Vec<Scenario> {
    let mut out = Vec::new();
    let shapes = [
        (Kind::Tandem, 1, Fault::None),
        (Kind::Tandem, 1, Fault::KillLeader),
        (Kind::Tandem, 1, Fault::FsyncEioLeader),
        (Kind::Tandem, 1, Fault::PowerCut),
        (Kind::Tandem, 1, Fault::DiskFullLeader),
        (Kind::Tandem, 3, Fault::None),
        (Kind::Tandem, 3, Fault::KillLeader),
        (Kind::Tandem, 3, Fault::KillFollower),
        (Kind::Tandem, 3, Fault::PauseLeader),
        (Kind::Tandem, 3, Fault::PartitionLeader),
        (Kind::Tandem, 3, Fault::OneWayFromLeader),
        (Kind::Tandem, 3, Fault::FlapLeader),
        (Kind::Tandem, 3, Fault::PowerCut),
        (Kind::Tandem, 3, Fault::ClockJumps),
        (Kind::Tandem, 3, Fault::MoveLeader),
        (Kind::Tandem, 3, Fault::GrowAndShrink),
        (Kind::Tandem, 3, Fault::KillLeaderDuringMemberAdd),
        (Kind::Etcd35, 3, Fault::None),
        (Kind::Etcd35, 3, Fault::KillLeader),
        (Kind::Etcd35, 3, Fault::KillFollower),
        (Kind::Etcd35, 3, Fault::PauseLeader),
        (Kind::Etcd35, 3, Fault::PartitionLeader),
        (Kind::Etcd35, 3, Fault::OneWayFromLeader),
        (Kind::Etcd35, 3, Fault::FlapLeader),
        (Kind::Etcd35, 3, Fault::PowerCut),
        (Kind::Etcd35, 3, Fault::MoveLeader),
        (Kind::Etcd35, 3, Fault::GrowAndShrink),
        (Kind::Etcd35, 3, Fault::KillLeaderDuringMemberAdd),
    ];
    for (kind, members, fault) in shapes {
        let what = match (members, fault) {
            (1, Fault::KillLeader) => "SIGKILL the member",
            (1, Fault::FsyncEioLeader) => "fdatasync fails with EIO",
            (1, Fault::PowerCut) => "power cut",
            (1, Fault::DiskFullLeader) => "the disk fills up",
            _ => fault.name(),
        };
        out.push(Scenario {
            name: format!(
                "{members} member{}, {what}",
                if members == 1 { "" } else { "s" }
            ),
            kind,
            members,
            fault,
            duration: Duration::from_secs(seconds),
            every: Duration::from_secs(6),
            // Longer than an election timeout: leaders are replaced, old ones deposed.
            down: Duration::from_millis(2500),
            workload: Default::default(),
            fault_count: None,
            flags: Vec::new(),
            env: Vec::new(),
        });
    }
    // Two data nodes and a witness (m3), with the two-node design's scenario numbers.
    let witness = [
        ("no fault", Fault::None),
        ("S1 SIGKILL the follower", Fault::KillFollower),
        ("S2 SIGKILL the leader", Fault::KillLeader),
        ("S3 SIGKILL the witness", Fault::KillWitness),
        ("S4 partition the data members", Fault::PartitionDataMembers),
        ("S5 partition the leader", Fault::PartitionLeader),
        ("S6 partition the follower", Fault::PartitionFollower),
        (
            "S8 SIGKILL the witness, then partition",
            Fault::KillWitnessThenPartition,
        ),
        (
            "S9 SIGKILL the follower, then the leader",
            Fault::KillFollowerThenLeader,
        ),
        (
            "S9 SIGKILL the follower, then the leader and the witness",
            Fault::KillFollowerThenLeaderAndWitness,
        ),
        ("S10 power cut on every member", Fault::PowerCut),
        ("S15/S16 clock jumps and skew", Fault::ClockJumps),
        ("S17 SIGSTOP the leader", Fault::PauseLeader),
        ("S18 drop what the leader sends", Fault::OneWayFromLeader),
        ("S19 flap the leader's links", Fault::FlapLeader),
        ("move leadership and back", Fault::MoveLeader),
        ("S14 slow fdatasync on the leader", Fault::SlowFsyncLeader),
        (
            "S11 SIGKILL the leader during a member add",
            Fault::KillLeaderDuringMemberAdd,
        ),
        ("grow by two members and shrink back", Fault::GrowAndShrink),
    ];
    for (what, fault) in witness {
        out.push(Scenario {
            name: format!("2 data + witness, {what}"),
            kind: Kind::Tandem,
            members: 3,
            fault,
            duration: Duration::from_secs(seconds),
            every: Duration::from_secs(match fault {
                Fault::KillFollowerThenLeader
                | Fault::KillFollowerThenLeaderAndWitness
                | Fault::SlowFsyncLeader
                | Fault::GrowAndShrink
                | Fault::KillLeaderDuringMemberAdd => 15,
                _ => 6,
            }),
            // A slow disk is handed over from after 3 s of slow flushes (raft::leadership).
            down: Duration::from_millis(if fault == Fault::SlowFsyncLeader {
                10_000
            } else {
                2500
            }),
            workload: Default::default(),
            fault_count: None,
            flags: vec![etcd_compat_tests::WITNESS_FLAG.into(), "m3".into()],
            env: Vec::new(),
        });
    }
    // Two data members that fence each other, no witness (two-node-design topology 2): the
    // fence agent SIGKILLs the peer's process (a stand-in for IPMI), and the fenced member is
    // started again after each fault.
    let fencing = [
        ("SIGKILL the leader", Fault::KillLeader, None),
        ("SIGKILL the follower", Fault::KillFollower, None),
        ("SIGSTOP the leader", Fault::PauseLeader, None),
        (
            "symmetric partition, 20 races",
            Fault::PartitionDataMembers,
            Some(20),
        ),
        (
            "the fence fails, then works",
            Fault::FenceFailsThenWorks,
            None,
        ),
        (
            "the fence hangs, then works",
            Fault::FenceHangsThenWorks,
            None,
        ),
    ];
    for (what, fault, count) in fencing {
        out.push(Scenario {
            name: format!("2 fencing, {what}"),
            kind: Kind::Tandem,
            members: 2,
            fault,
            duration: Duration::from_secs(seconds),
            every: Duration::from_secs(4),
            // Longer than an election timeout, the non-leader's fence delay and a restart.
            down: Duration::from_secs(4),
            workload: Default::default(),
            fault_count: count,
            flags: Vec::new(),
            env: Vec::new(),
        });
    }
    out
}

fn table(rows: &[Summary]) -> String {
    let Some(first) = rows.first() else {
        return String::from("(no scenario ran)\n");
    };
    let names: Vec<&str> = first.columns().iter().map(|c| c.0).collect();
    let mut s = format!(
        "| scenario | server | {} |\n|---|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for r in rows {
        let values: Vec<String> = r.columns().into_iter().map(|c| c.1).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            r.scenario,
            r.kind.name(),
            values.join(" | ")
        );
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for s in scenarios(args.seconds) {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !s.name.contains(o.as_str()))
        {
            continue;
        }
        let summary = scenario::run(&s).await?;
        eprintln!("{}", summary.line());
        if let Err(e) = summary.assert_ok() {
            eprintln!("{e:#}");
        }
        rows.push(summary);
    }
    let doc = format!(
        "# Robustness report\n\nGenerated by `scripts/robustness` (`cargo run -p robustness --release -- --seconds {}`): \
         each scenario runs the workload of `robustness/src/workload.rs` ({} clients over {} keys: puts, \
         linearizable gets and ranges, CAS txns, deletes, leases granted, kept alive, revoked and left to \
         expire; two watchers of every key that resume after errors) for {} s against real processes on \
         this machine, then checks the history (`robustness/src/check.rs`). The last six columns must be \
         zero. Debug and release builds differ in speed, not in the checks; tandem here is the build the \
         script made.\n\n{}\n",
        args.seconds,
        robustness::workload::Config::default().clients,
        robustness::workload::Config::default().keys,
        args.seconds,
        table(&rows)
    );
    std::fs::write(&args.out, doc)?;
    eprintln!("wrote {}", args.out);
    if rows.iter().any(|r| !r.report.ok()) {
        anyhow::bail!("violations found");
    }
    Ok(())
}
