//! One scenario: a cluster of real processes (tandem or etcd), the workload, a fault schedule,
//! then healing, the revision history read from every member, and the checks. A failing run
//! keeps its history (`history.jsonl`) and every member's log under `target/robustness/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_compat_tests::faultproxy::{FaultProxy, Flow};
use etcd_compat_tests::fence::{FenceAgent, Mode};
use etcd_compat_tests::loopfs::LoopFs;
use etcd_compat_tests::netns::Net;
use etcd_compat_tests::{Cluster, Kind};

use crate::check::{self, Report};
use crate::history::{self, Recorder};
use crate::powerfs::PowerFs;
use crate::workload::{self, Config};

/// The size of a data dir that fills up, and what is left free when it does (below tandem's
/// reserve of 128 MiB).
const DISK_MIB: u64 = 400;
const DISK_LEFT_FREE: u64 = 64 << 20;

/// Debian's libfaketime (the `faketime` package; install-deps installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How long a flapping link stays down, and then up.
const FLAP: Duration = Duration::from_millis(300);

/// A fault applied to the cluster during the run, repeatedly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// SIGKILL the leader (a single member: the member), restart it after `down`.
    KillLeader,
    /// SIGKILL a follower, restart it after `down`.
    KillFollower,
    /// SIGSTOP the leader for `down`, then SIGCONT.
    PauseLeader,
    /// Cut the leader off from every peer for `down` (clients still reach it), then heal.
    PartitionLeader,
    /// Drop every packet the leader sends to its peers (not those it receives) for `down`.
    OneWayFromLeader,
    /// Cut and heal the leader's peer links every 300 ms for `down`.
    FlapLeader,
    /// Every member runs under libfaketime; the leader's wall clock jumps an hour ahead, then
    /// an hour back, then runs twice as fast, for `down` each (S15/S16). The monotonic clock
    /// is left alone: nothing may change (leases never expire early).
    ClockJumps,
    /// Fill the leader's disk (a 400 MiB loop-mounted ext4 data dir) to 64 MiB free, below
    /// tandem's reserve, for `down`, then free it (S12): writes refused with etcd's NOSPACE
    /// error, reads served, nothing lost, writes taken again.
    DiskFullLeader,
    /// SIGKILL every member at once and cut the power of every data dir (a power-loss
    /// filesystem drops what was not fsynced), then restart them all.
    PowerCut,
    /// Restart the leader under strace so that a later fdatasync fails with EIO; after `down`,
    /// restart it without. It must stop acknowledging writes at the failure (S13).
    FsyncEioLeader,
    /// SIGKILL the witness, restart it after `down` (S3).
    KillWitness,
    /// S4: cut the two data members from each other for `down`; the witness reaches both.
    PartitionDataMembers,
    /// S6: cut the data follower from both its peers for `down` (the witness reaches only the
    /// leader); it must cause no disruption once healed.
    PartitionFollower,
    /// S8: SIGKILL the witness, then cut the data members from each other for `down`: neither
    /// may take a write; then heal and restart the witness.
    KillWitnessThenPartition,
    /// S9: SIGKILL the data follower B; after `down` (the leader A commits with the witness)
    /// SIGKILL A and restart B, which must get what it missed from the witness; once B serves,
    /// restart A.
    KillFollowerThenLeader,
    /// Move leadership to a follower with etcd's MoveLeader (`etcdctl move-leader`), and after
    /// `down` back: no moment with two leaders answering, nothing lost.
    MoveLeader,
    /// S14: strace attaches to the leader and delays each of its fdatasyncs by 500 ms, for
    /// `down`; leadership must move to a follower (whose disk is fast) within it.
    SlowFsyncLeader,
    /// Two members that fence each other: the fence agent fails for `down` while the follower
    /// is SIGKILLed (writes stay refused), then works (the leader fences and goes on alone).
    FenceFailsThenWorks,
    /// As [`Fault::FenceFailsThenWorks`], the agent hanging (killed after --fence-timeout).
    FenceHangsThenWorks,
    /// S9 with the witness restarted: the data follower B is SIGKILLed; after `down` (the leader
    /// A commits with the witness) A and the witness are SIGKILLed, the witness and B restarted;
    /// once B serves, A is restarted. Nothing acknowledged may be lost (W1: the witness kept
    /// what it acknowledged).
    KillFollowerThenLeaderAndWitness,
    /// Membership changes under the workload: a voter added and started, a learner added,
    /// started and promoted, then both removed (the cluster grows by two and shrinks back).
    GrowAndShrink,
    /// S11: the leader is SIGKILLed just after a voter was asked for (etcd's MemberAdd, the
    /// new member never started), restarted after `down`; exactly one membership must be in
    /// effect on every member afterwards; the added member, if the change survived, is removed.
    KillLeaderDuringMemberAdd,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "no fault",
            Fault::KillLeader => "SIGKILL the leader",
            Fault::KillFollower => "SIGKILL a follower",
            Fault::PauseLeader => "SIGSTOP the leader",
            Fault::PartitionLeader => "partition the leader from its peers",
            Fault::OneWayFromLeader => "drop what the leader sends to its peers",
            Fault::FlapLeader => "flap the leader's peer links",
            Fault::FsyncEioLeader => "fdatasync fails with EIO on the leader",
            Fault::PowerCut => "power cut on every member",
            Fault::ClockJumps => "wall-clock jumps and skew on the leader",
            Fault::DiskFullLeader => "the leader's disk fills up",
            Fault::KillWitness => "SIGKILL the witness",
            Fault::PartitionDataMembers => "partition the data members from each other",
            Fault::PartitionFollower => "partition the follower from its peers",
            Fault::KillWitnessThenPartition => {
                "SIGKILL the witness, then partition the data members"
            }
            Fault::KillFollowerThenLeader => "SIGKILL the follower, then the leader",
            Fault::MoveLeader => "move leadership to a follower and back",
            Fault::SlowFsyncLeader => "slow fdatasync on the leader",
            Fault::FenceFailsThenWorks => "the fence fails, then works",
            Fault::FenceHangsThenWorks => "the fence hangs, then works",
            Fault::KillFollowerThenLeaderAndWitness => {
                "SIGKILL the follower, then the leader and the witness"
            }
            Fault::GrowAndShrink => "grow by a voter and a learner, shrink back",
            Fault::KillLeaderDuringMemberAdd => "SIGKILL the leader during a member add",
        }
    }

    /// Whether the members need network namespaces of their own.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader
                | Fault::OneWayFromLeader
                | Fault::FlapLeader
                | Fault::PartitionDataMembers
                | Fault::PartitionFollower
                | Fault::KillWitnessThenPartition
        )
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub kind: Kind,
    pub members: usize,
    pub fault: Fault,
    /// How long the workload runs.
    pub duration: Duration,
    /// Time between faults, and how long each lasts.
    pub every: Duration,
    pub down: Duration,
    pub workload: Config,
    /// Inject exactly this many faults (then run `every` more), whatever `duration` says.
    pub fault_count: Option<usize>,
    /// Extra server flags (e.g. shorter election timeouts).
    pub flags: Vec<String>,
    /// Environment for tandem members (e.g. `TANDEM_MUTANT`).
    pub env: Vec<(String, String)>,
}

impl Scenario {
    /// Whether every peer link goes through the fault proxy: a tandem cluster with a witness,
    /// or two that fence each other (network faults on the others use network namespaces, as
    /// they do for etcd beside them).
    pub fn through_proxy(&self) -> bool {
        self.kind == Kind::Tandem
            && (self.fencing()
                || self
                    .flags
                    .iter()
                    .any(|f| f == etcd_compat_tests::WITNESS_FLAG))
    }

    /// Two tandem members without a witness fence each other (`--fence-command`), with the
    /// test's fence agent, which SIGKILLs the peer's process (`etcd_compat_tests::fence`).
    pub fn fencing(&self) -> bool {
        self.kind == Kind::Tandem && self.members == 2
    }
}

/// The member that did not lead waits this much longer than the leader before it fences.
const FENCE_DELAY_MS: u64 = 1000;
/// A hanging fence command is killed after this long.
const FENCE_TIMEOUT_MS: u64 = 1000;

/// What a run measured, and what the checks found.
#[derive(Debug)]
pub struct Summary {
    pub scenario: String,
    pub kind: Kind,
    pub attempted: usize,
    pub acknowledged: usize,
    pub failed: usize,
    /// Failed writes: they may or may not have happened.
    pub indeterminate: usize,
    pub writes_per_second: f64,
    pub longest_write_gap: Duration,
    pub faults: usize,
    pub elections: u64,
    /// Power cuts: files that lost writes not fsynced (each cut drops the page cache).
    pub unsynced_dropped: usize,
    pub report: Report,
    pub artifacts: Option<PathBuf>,
}

fn is_write(op: &history::Op) -> bool {
    !matches!(
        op,
        history::Op::Get { .. } | history::Op::Range { .. } | history::Op::LeaseKeepAlive { .. }
    )
}

/// A data member other than `leader` (the follower a fault hits).
fn follower_of(cluster: &Cluster, leader: usize) -> usize {
    let data: Vec<usize> = cluster.data_members().collect();
    let at = data.iter().position(|i| *i == leader).unwrap_or(0);
    data[(at + 1) % data.len()]
}

async fn term(cluster: &Cluster) -> u64 {
    let mut best = 0;
    for m in cluster.data_members().map(|i| &cluster.members[i]) {
        if let Ok(mut c) = workload::connect(&[m.url()]).await {
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                best = best.max(st.raft_term());
            }
        }
    }
    best
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Where the network faults are made: iptables in the members' network namespaces, or the
/// fault proxy on every directed peer link (a tandem cluster with a witness).
enum Links<'a> {
    Namespaces(&'a Net),
    Proxy(std::sync::Arc<FaultProxy>),
}

impl<'a> Links<'a> {
    fn of(net: Option<&'a Net>, cluster: &Cluster) -> Result<Links<'a>> {
        match (net, &cluster.proxy) {
            (_, Some(p)) => Ok(Links::Proxy(p.clone())),
            (Some(n), None) => Ok(Links::Namespaces(n)),
            (None, None) => bail!("a network fault needs network namespaces or a fault proxy"),
        }
    }

    fn cut(&self, a: usize, b: usize) -> Result<()> {
        match self {
            Links::Namespaces(n) => n.cut(a, b),
            Links::Proxy(p) => {
                p.cut(a, b);
                Ok(())
            }
        }
    }

    fn cut_from_peers(&self, i: usize) -> Result<()> {
        match self {
            Links::Namespaces(n) => n.cut_from_peers(i),
            Links::Proxy(p) => {
                p.cut_from_peers(i);
                Ok(())
            }
        }
    }

    fn drop_one_way(&self, from: usize, to: usize) -> Result<()> {
        match self {
            Links::Namespaces(n) => n.drop_one_way(from, to),
            Links::Proxy(p) => {
                p.set(from, to, Flow::Blackhole);
                Ok(())
            }
        }
    }

    fn heal(&self) -> Result<()> {
        match self {
            Links::Namespaces(n) => n.heal(),
            Links::Proxy(p) => {
                p.heal();
                Ok(())
            }
        }
    }
}

/// A fault's span on one member: (member, from, to), in the run's nanoseconds.
type Window = (usize, u64, u64);

/// What the faults need and what they leave to check. Declared before the cluster, so that it
/// outlives the members (filesystems unmount after the processes are gone).
struct Rig {
    /// Network namespaces for partitions.
    net: Option<Net>,
    /// Power-loss filesystems under the data dirs, on `backing`.
    disks: Vec<PowerFs>,
    backing: tempfile::TempDir,
    /// How many files lost unsynced writes in power cuts.
    unsynced_dropped: usize,
    /// Each member's libfaketime clock file.
    clocks: tempfile::TempDir,
    /// A failing fsync: while strace was attached to a member.
    fsync_windows: Vec<Window>,
    /// Small filesystems under the data dirs, for a full disk.
    loops: Vec<LoopFs>,
    /// A full disk: while a member's was full.
    full_windows: Vec<Window>,
    /// Two members that fence each other: the agent their fence command runs.
    fence: Option<FenceAgent>,
}

/// Applies the fault once and heals it after `down`.
async fn inject(cluster: &mut Cluster, rig: &mut Rig, s: &Scenario, rec: &Recorder) -> Result<()> {
    let net = rig.net.as_ref();
    let clocks = rig.clocks.path();
    if s.fencing() {
        etcd_compat_tests::fence::wait_armed(cluster)?;
    }
    let leader = if s.members == 1 {
        0
    } else {
        cluster.wait_leader(Duration::from_secs(30)).await?
    };
    let fenced_before = rig.fence.as_ref().map_or(0, |a| a.killed().len());
    match s.fault {
        Fault::None => {}
        Fault::KillLeader | Fault::KillFollower => {
            let i = if s.fault == Fault::KillLeader || s.members == 1 {
                leader
            } else {
                follower_of(cluster, leader)
            };
            cluster.members[i].stop("KILL")?;
            tokio::time::sleep(s.down).await; // the fault's duration
            cluster.members[i].restart()?;
            cluster.wait_healthy(i)?;
        }
        Fault::KillWitness => {
            let w = cluster.witness().context("the cluster has no witness")?;
            cluster.members[w].stop("KILL")?;
            tokio::time::sleep(s.down).await; // the fault's duration
            cluster.members[w].restart()?;
            cluster.wait_healthy(w)?;
        }
        Fault::PartitionDataMembers => {
            let net = Links::of(net, cluster)?;
            net.cut(leader, follower_of(cluster, leader))?;
            tokio::time::sleep(s.down).await; // the fault's duration
            net.heal()?;
        }
        Fault::PartitionFollower => {
            let net = Links::of(net, cluster)?;
            net.cut_from_peers(follower_of(cluster, leader))?;
            tokio::time::sleep(s.down).await; // the fault's duration
            net.heal()?;
        }
        Fault::KillWitnessThenPartition => {
            let net = Links::of(net, cluster)?;
            let w = cluster.witness().context("the cluster has no witness")?;
            cluster.members[w].stop("KILL")?;
            net.cut(leader, follower_of(cluster, leader))?;
            tokio::time::sleep(s.down).await; // the fault's duration
            net.heal()?;
            cluster.members[w].restart()?;
            cluster.wait_healthy(w)?;
        }
        Fault::SlowFsyncLeader => {
            let pid = cluster.members[leader].pid().to_string();
            let mut strace = std::process::Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid])
                .args([
                    "-e",
                    "trace=fdatasync",
                    "-e",
                    "inject=fdatasync:delay_exit=500000",
                ])
                .spawn()
                .context("starting strace (scripts/install-deps installs it)")?;
            let moved = etcd_compat_tests::wait_until_async(
                "leadership to leave the member with the slow disk",
                s.down,
                || async { cluster.leader().await.is_ok_and(|l| l != leader) },
            )
            .await;
            // SIGINT: strace detaches and the member goes on at full speed.
            signal(strace.id(), "INT");
            strace.wait()?;
            moved?;
        }
        Fault::MoveLeader => {
            let b = follower_of(cluster, leader);
            move_leader(cluster, leader, b).await?;
            tokio::time::sleep(s.down).await; // the fault's duration
            move_leader(cluster, b, leader).await?;
        }
        Fault::KillFollowerThenLeader => {
            let b = follower_of(cluster, leader);
            cluster.members[b].stop("KILL")?;
            tokio::time::sleep(s.down).await; // the leader commits with the witness meanwhile
            cluster.members[leader].stop("KILL")?;
            cluster.members[b].restart()?;
            cluster.wait_healthy(b)?;
            cluster.members[leader].restart()?;
            cluster.wait_healthy(leader)?;
        }
        Fault::KillFollowerThenLeaderAndWitness => {
            let b = follower_of(cluster, leader);
            let w = cluster.witness().context("the cluster has no witness")?;
            cluster.members[b].stop("KILL")?;
            tokio::time::sleep(s.down).await; // the leader commits with the witness meanwhile
            cluster.members[leader].stop("KILL")?;
            cluster.members[w].stop("KILL")?;
            cluster.members[w].restart()?;
            cluster.members[b].restart()?;
            cluster.wait_healthy(b)?;
            cluster.members[leader].restart()?;
            cluster.wait_healthy(leader)?;
            cluster.wait_healthy(w)?;
        }
        Fault::PauseLeader => {
            let pid = cluster.members[leader].pid();
            signal(pid, "STOP");
            tokio::time::sleep(s.down).await; // the fault's duration
            signal(pid, "CONT");
        }
        Fault::PartitionLeader => {
            let net = Links::of(net, cluster)?;
            net.cut_from_peers(leader)?;
            tokio::time::sleep(s.down).await; // the fault's duration
            net.heal()?;
        }
        Fault::OneWayFromLeader => {
            let net = Links::of(net, cluster)?;
            for j in (0..s.members).filter(|&j| j != leader) {
                net.drop_one_way(leader, j)?;
            }
            tokio::time::sleep(s.down).await; // the fault's duration
            net.heal()?;
        }
        Fault::FlapLeader => {
            let net = Links::of(net, cluster)?;
            let until = std::time::Instant::now() + s.down;
            while std::time::Instant::now() < until {
                net.cut_from_peers(leader)?;
                tokio::time::sleep(FLAP).await; // the flap's period
                net.heal()?;
                tokio::time::sleep(FLAP).await; // the flap's period
            }
        }
        Fault::PowerCut => {
            for m in &mut cluster.members {
                m.stop("KILL")?;
            }
            for d in rig.disks.iter_mut() {
                rig.unsynced_dropped += d.cut()?;
            }
            tokio::time::sleep(s.down).await; // the fault's duration
            for m in &mut cluster.members {
                m.restart()?;
            }
            for i in 0..cluster.members.len() {
                cluster.wait_healthy(i)?;
            }
        }
        Fault::ClockJumps => {
            let clock = |i: usize| clocks.join(format!("m{i}"));
            if !clocks.join("m0").exists() {
                // First round: every member restarts under libfaketime, its clock file at +0.
                for i in 0..cluster.members.len() {
                    std::fs::write(clock(i), "+0")?;
                    let file = format!("FAKETIME_TIMESTAMP_FILE={}", clock(i).display());
                    let m = &mut cluster.members[i];
                    m.stop("KILL")?;
                    m.set_wrapper(&[
                        "env",
                        &format!("LD_PRELOAD={LIBFAKETIME}"),
                        &file,
                        "FAKETIME_NO_CACHE=1",
                        "DONT_FAKE_MONOTONIC=1",
                    ]);
                    m.restart()?;
                }
                for i in 0..cluster.members.len() {
                    cluster.wait_healthy(i)?;
                }
            }
            for offset in ["+3600", "-3600", "+0 x2", "+0"] {
                std::fs::write(clock(leader), offset)?;
                tokio::time::sleep(s.down / 3).await; // each step's duration
            }
        }
        Fault::DiskFullLeader => {
            let disk = &rig.loops[leader];
            let fill = disk.available()?.saturating_sub(DISK_LEFT_FREE);
            let ballast = std::fs::File::create(disk.ballast())?;
            if fill > 0 {
                rustix::fs::fallocate(&ballast, rustix::fs::FallocateFlags::empty(), 0, fill)?;
            }
            let from = rec.now();
            tokio::time::sleep(s.down).await; // the fault's duration
            std::fs::remove_file(disk.ballast())?;
            rig.full_windows.push((leader, from, rec.now()));
        }
        Fault::FenceFailsThenWorks | Fault::FenceHangsThenWorks => {
            let agent = rig.fence.as_ref().context("a fencing cluster")?;
            let follower = follower_of(cluster, leader);
            agent.set(if s.fault == Fault::FenceFailsThenWorks {
                Mode::Fail
            } else {
                Mode::Hang
            })?;
            cluster.members[follower].stop("KILL")?;
            tokio::time::sleep(s.down).await; // the fault's duration
            agent.set(Mode::Kill)?;
        }
        Fault::GrowAndShrink => {
            let voter = cluster
                .add_and_join(leader, &format!("x{}", cluster.members.len() + 1), false)
                .await?;
            let learner = cluster
                .add_and_join(leader, &format!("x{}", cluster.members.len() + 1), true)
                .await?;
            let id = cluster.members[learner].client().await?.status().await?;
            let id = id.header().context("a status header")?.member_id();
            etcd_compat_tests::wait_until_async(
                "the learner to be promoted",
                s.down * 4,
                || async {
                    match cluster.members[leader].client().await {
                        Ok(mut c) => c.member_promote(id).await.is_ok(),
                        Err(_) => false,
                    }
                },
            )
            .await?;
            tokio::time::sleep(s.down).await; // five members take the workload for a while
            for i in [learner, voter] {
                let id = member_id_of(cluster, leader, i).await?;
                cluster.members[leader]
                    .client()
                    .await?
                    .member_remove(id)
                    .await?;
            }
            for i in [learner, voter] {
                let m = &mut cluster.members[i];
                etcd_compat_tests::wait_until("a removed member to stop", s.down * 4, || {
                    m.exited()
                })?;
            }
            cluster.members.truncate(voter);
            check_one_membership(cluster).await?;
        }
        Fault::KillLeaderDuringMemberAdd => {
            let name = format!("x{}", cluster.members.len() + 1);
            let m = cluster.new_member(&name)?;
            let url = m.peer_url();
            let mut c = cluster.members[leader].client().await?;
            // Asked again while refused as "unhealthy cluster" (etcd 3.5.1 changes nothing
            // until every voter has been connected for 5 s); any other answer ends it.
            let asked = url.clone();
            let add = tokio::spawn(async move {
                loop {
                    match c.member_add([asked.clone()], None).await {
                        Err(e) if e.to_string().contains("unhealthy cluster") => {
                            // A client's back-off before asking again.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => return other,
                    }
                }
            });
            // The leader dies once a follower has applied the first step of the change.
            let follower = follower_of(cluster, leader);
            let started = etcd_compat_tests::wait_until_async(
                "a follower to apply the member add's first step",
                Duration::from_secs(30),
                || async {
                    match cluster.members[follower].client().await {
                        Ok(mut f) => f.member_list().await.is_ok_and(|l| {
                            l.members().iter().any(|x| x.peer_urls().contains(&url))
                        }),
                        Err(_) => false,
                    }
                },
            )
            .await;
            cluster.members[leader].stop("KILL")?;
            started?;
            let added = add.await?;
            tokio::time::sleep(s.down).await; // the fault's duration
            cluster.members[leader].restart()?;
            for i in cluster.data_members().collect::<Vec<_>>() {
                cluster.wait_healthy(i)?;
            }
            check_one_membership(cluster).await?;
            let any = cluster.data_members().next().context("a data member")?;
            let list = cluster.members[any].client().await?.member_list().await?;
            let stray = list
                .members()
                .iter()
                .find(|x| x.peer_urls().contains(&m.peer_url()))
                .map(|x| x.id());
            eprintln!(
                "member add during the leader's crash: answered {}, in effect afterwards: {}",
                if added.is_ok() { "ok" } else { "an error" },
                stray.is_some()
            );
            if let Some(id) = stray {
                let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
                cluster.members[leader]
                    .client()
                    .await?
                    .member_remove(id)
                    .await?;
                check_one_membership(cluster).await?;
            }
        }
        Fault::FsyncEioLeader => {
            // From the moment strace has attached to the raft log's writer, its next
            // fdatasync fails, once (later ones succeed: fsyncgate). Counted from the start
            // instead ("the 200th", strace counts per thread), the failure came after the
            // window or never under load (CI: no write failed at all). A failed keyspace flush
            // is durability.rs's `a_failed_keyspace_flush_stops_the_member`.
            let m = &cluster.members[leader];
            let strace = etcd_compat_tests::Strace::attach(
                m.pid(),
                Some("raft-log-writer"),
                "fdatasync",
                "fdatasync:error=EIO:when=1",
                None,
                &rig.backing.path().join(format!("strace-{leader}")),
            )?;
            let (attached, attached_wall) = (rec.now(), unix_seconds());
            tokio::time::sleep(s.down).await; // the fault's duration
            let m = &mut cluster.members[leader];
            m.stop("KILL")?;
            let window_end = rec.now();
            let failed = strace
                .finish()
                .context("no fdatasync failed while strace was attached")?;
            // strace's clock is the wall clock: the failure in the run's time.
            let window_start = attached + ((failed - attached_wall).max(0.0) * 1e9) as u64;
            m.restart()?;
            cluster.wait_healthy(leader)?;
            rig.fsync_windows.push((leader, window_start, window_end));
        }
    }
    if let Some(agent) = &rig.fence {
        power_on_fenced(cluster, agent, fenced_before).await?;
    }
    Ok(())
}

async fn member_id_of(cluster: &Cluster, via: usize, i: usize) -> Result<u64> {
    let url = cluster.members[i].peer_url();
    let list = cluster.members[via].client().await?.member_list().await?;
    list.members()
        .iter()
        .find(|m| m.peer_urls().contains(&url))
        .map(|m| m.id())
        .context("the member is not listed")
}

/// S11: every running member lists the same membership (ids, peer URLs, learners).
async fn check_one_membership(cluster: &Cluster) -> Result<()> {
    etcd_compat_tests::wait_until_async(
        "every member to list one membership",
        Duration::from_secs(30),
        || async {
            let mut lists = Vec::new();
            for i in cluster.data_members() {
                let Ok(mut c) = cluster.members[i].client().await else {
                    return false;
                };
                let Ok(l) = c.member_list().await else {
                    return false;
                };
                let mut v: Vec<(u64, Vec<String>, bool)> = l
                    .members()
                    .iter()
                    .map(|m| (m.id(), m.peer_urls().to_vec(), m.is_learner()))
                    .collect();
                v.sort();
                lists.push(v);
            }
            lists.windows(2).all(|w| w[0] == w[1])
        },
    )
    .await
}

/// Two members that fence each other: once the fault has healed, waits until a fence has
/// powered a member off (the fault left one side without its peer for longer than an election
/// timeout and the delay), checks that exactly one side runs, and powers the fenced side on
/// again; it rejoins as a learner and is promoted.
async fn power_on_fenced(cluster: &mut Cluster, agent: &FenceAgent, before: usize) -> Result<()> {
    etcd_compat_tests::wait_until("a fence to succeed", Duration::from_secs(30), || {
        agent.killed().len() > before
    })?;
    let killed = agent.killed();
    anyhow::ensure!(
        killed.len() == before + 1,
        "more than one fence in one fault: {:?}",
        agent.calls()
    );
    let fenced = cluster
        .members
        .iter()
        .position(|m| m.name() == killed[before])
        .context("the fenced member")?;
    let survivor = 1 - fenced;
    anyhow::ensure!(
        !cluster.members[survivor].exited(),
        "both sides were fenced: {:?}",
        agent.calls()
    );
    // A fault that restarts what it killed (SIGKILL the leader) has powered it on already.
    let m = &mut cluster.members[fenced];
    if m.pid() == 0 || m.exited() {
        m.restart()?;
    }
    cluster.wait_healthy(fenced)?;
    etcd_compat_tests::fence::wait_armed(cluster)
}

/// Runs the scenario; `Err` only when the run itself could not be carried out.
pub async fn run(s: &Scenario) -> Result<Summary> {
    // Members inherit the environment, restarts included (so a test running scenarios with
    // different environments must run them one after another).
    for (k, v) in &s.env {
        std::env::set_var(k, v);
    }
    let fence = s.fencing().then(FenceAgent::new).transpose()?;
    let mut flags: Vec<String> = s.flags.clone();
    if let Some(agent) = &fence {
        flags.extend(agent.flags(FENCE_DELAY_MS, FENCE_TIMEOUT_MS));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut rig = Rig {
        net: if s.fault.needs_network() && !s.through_proxy() {
            Some(Net::new(s.members)?)
        } else {
            None
        },
        disks: Vec::new(),
        backing: tempfile::tempdir()?,
        unsynced_dropped: 0,
        clocks: tempfile::tempdir()?,
        fsync_windows: Vec::new(),
        loops: Vec::new(),
        full_windows: Vec::new(),
        fence,
    };
    let (backing, disks, loops) = (
        rig.backing.path().to_path_buf(),
        &mut rig.disks,
        &mut rig.loops,
    );
    let mut prepare = |i: usize, data: &std::path::Path| -> Result<()> {
        if s.fault == Fault::DiskFullLeader {
            loops.push(LoopFs::mount_at(data, DISK_MIB)?);
        }
        if s.fault == Fault::PowerCut {
            let b = backing.join(format!("m{i}"));
            std::fs::create_dir_all(&b)?;
            std::fs::create_dir_all(data)?;
            disks.push(PowerFs::mount(&b, data)?);
        }
        Ok(())
    };
    let mut cluster = if s.through_proxy() {
        Cluster::start_proxied(s.kind, s.members, &flags, &mut prepare)?
    } else {
        Cluster::start_prepared(s.kind, s.members, &flags, rig.net.as_ref(), &mut prepare)?
    };
    let endpoints: Vec<String> = cluster
        .data_members()
        .map(|i| cluster.members[i].url())
        .collect();
    let term_before = term(&cluster).await;
    let rec = Recorder::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::new();
    let mut watchers = Vec::new();
    for id in 0..s.workload.clients {
        tasks.push(tokio::spawn(workload::run_client(
            endpoints.clone(),
            s.workload.clone(),
            id,
            rec.clone(),
            stop_rx.clone(),
        )));
    }
    if s.workload.pinned {
        let readers = workload::Config {
            reads_only: true,
            ..s.workload.clone()
        };
        for (i, endpoint) in endpoints.iter().enumerate() {
            for (id, cfg) in [
                (PINNED_IDS + i as u32, &s.workload),
                (PINNED_READER_IDS + i as u32, &readers),
            ] {
                tasks.push(tokio::spawn(workload::run_client(
                    vec![endpoint.clone()],
                    cfg.clone(),
                    id,
                    rec.clone(),
                    stop_rx.clone(),
                )));
            }
        }
    }
    for w in 0..2 {
        watchers.push(tokio::spawn(workload::run_watcher(
            endpoints.clone(),
            1000 + w,
            1,
            rec.clone(),
            target_rx.clone(),
        )));
    }
    let started = std::time::Instant::now();
    let mut faults = 0;
    if s.fault == Fault::None {
        tokio::time::sleep(s.duration).await; // the workload's duration
    } else {
        let more = |faults: usize| match s.fault_count {
            Some(n) => faults < n,
            None => started.elapsed() + s.every < s.duration,
        };
        while more(faults) {
            tokio::time::sleep(s.every).await; // time between faults
            if let Err(e) = inject(&mut cluster, &mut rig, s, &rec).await {
                let kept = keep_artifacts(s, &cluster, &rec.lines())?;
                // The artifacts stay on the machine that ran the test: what its output needs to
                // explain the failure goes into the error.
                return Err(e.context(format!(
                    "members' logs in {}\n{}",
                    kept.display(),
                    log_digest(&cluster)
                )));
            }
            faults += 1;
        }
        let left = match s.fault_count {
            Some(_) => s.every,
            None => s.duration.saturating_sub(started.elapsed()),
        };
        tokio::time::sleep(left).await; // the rest of the workload's duration
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await.context("a workload task failed")?;
    }
    let elapsed = started.elapsed();
    let last = final_revision(&cluster).await?;
    // The watchers must now deliver everything up to the final revision (reliability).
    let _ = target_tx.send(Some(last));
    for t in watchers {
        t.await.context("a watcher failed")?;
    }
    let elections = term(&cluster).await.saturating_sub(term_before);
    let mut summary = finish(s, &cluster, rec.clone(), last, faults, elections, elapsed).await?;
    // What one member must do under a failing fsync or a full disk is checked on one member
    // (in a cluster, the others answer for it).
    if s.members == 1 {
        let (ops, _) = history::split(&rec.lines());
        check_stopped_after_eio(&ops, &rig.fsync_windows, &mut summary.report);
        check_nospace(&ops, &rig.full_windows, &mut summary.report);
    }
    summary.unsynced_dropped = rig.unsynced_dropped;
    Ok(summary)
}

/// Once every member is healthy again: the highest revision any of them reports.
async fn final_revision(cluster: &Cluster) -> Result<i64> {
    for i in 0..cluster.members.len() {
        cluster.wait_healthy(i)?;
    }
    let mut last = 0;
    for m in cluster.data_members().map(|i| &cluster.members[i]) {
        let mut c = workload::connect(&[m.url()]).await?;
        let r = c.get(workload::KEY_PREFIX, None).await?;
        last = last.max(r.header().map_or(0, |h| h.revision()));
    }
    Ok(last)
}

/// The history from every member (which must agree) up to `last`, and the checks.
async fn finish(
    s: &Scenario,
    cluster: &Cluster,
    rec: Recorder,
    last: i64,
    faults: usize,
    elections: u64,
    elapsed: Duration,
) -> Result<Summary> {
    let lines = rec.lines();
    let (ops, watches) = history::split(&lines);
    let mut truths = Vec::new();
    for m in cluster.data_members().map(|i| &cluster.members[i]) {
        truths.push(workload::read_truth(&m.url(), last).await?);
    }
    let (_, mut report) = check::check(&ops, &watches, &truths[0], last);
    for (i, t) in truths.iter().enumerate().skip(1) {
        if t != &truths[0] {
            report.watch.push(format!(
                "member {} and member 1 hold different revision histories ({} and {} events)",
                i + 1,
                t.len(),
                truths[0].len()
            ));
        }
    }
    check_hashes(cluster, last, &mut report).await;
    let acknowledged = ops.iter().filter(|r| !r.outcome.failed()).count();
    let failed = ops.len() - acknowledged;
    let indeterminate = ops
        .iter()
        .filter(|r| r.outcome.failed() && is_write(&r.op))
        .count();
    let mut write_acks: Vec<u64> = ops
        .iter()
        .filter(|r| !r.outcome.failed() && is_write(&r.op))
        .map(|r| r.ret)
        .collect();
    write_acks.sort_unstable();
    let end = elapsed.as_nanos() as u64;
    let mut gap = 0;
    let mut prev = 0;
    for t in write_acks.iter().copied().chain([end]) {
        gap = gap.max(t.saturating_sub(prev));
        prev = t;
    }
    let artifacts = if report.ok() && std::env::var_os("TANDEM_ROBUSTNESS_KEEP").is_none() {
        None
    } else {
        Some(keep_artifacts(s, cluster, &lines)?)
    };
    Ok(Summary {
        scenario: s.name.clone(),
        kind: s.kind,
        attempted: ops.len(),
        acknowledged,
        failed,
        indeterminate,
        writes_per_second: write_acks.len() as f64 / elapsed.as_secs_f64(),
        longest_write_gap: Duration::from_nanos(gap),
        faults,
        elections,
        unsynced_dropped: 0,
        report,
        artifacts,
    })
}

/// S13: once an fdatasync failed, the member acknowledges no write until it is restarted: no
/// write begun after the first failed fdatasync (`from`) is acknowledged, and writes fail with
/// `server stopped`.
fn check_stopped_after_eio(ops: &[history::Record], windows: &[Window], report: &mut Report) {
    for &(_, from, to) in windows {
        let after = |r: &&history::Record| r.call > from && r.ret <= to;
        if !ops
            .iter()
            .filter(after)
            .any(|r| failed_with(r, "server stopped"))
        {
            report.fsync.push(format!(
                "no write failed with `server stopped` after fdatasync failed ({:.1}–{:.1} s)",
                from as f64 / 1e9,
                to as f64 / 1e9
            ));
        }
        for r in ops.iter().filter(after) {
            if !r.outcome.failed() && is_write(&r.op) {
                report.fsync.push(format!(
                    "acknowledged after the failed fdatasync: client {} {:?} -> {:?}",
                    r.client, r.op, r.outcome
                ));
            }
        }
    }
}

/// The wall clock in unix seconds (strace's `-ttt` clock).
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// S12: while one member's disk was full, it refused writes with etcd's NOSPACE error and
/// went on serving reads.
fn check_nospace(ops: &[history::Record], windows: &[Window], report: &mut Report) {
    for &(_, from, to) in windows {
        // The disk guard polls every 200 ms: look from a second in.
        let during = |r: &&history::Record| r.call >= from + 1_000_000_000 && r.ret <= to;
        let refused = ops.iter().filter(during).any(|r| failed_with(r, NO_SPACE));
        let read = ops
            .iter()
            .filter(during)
            .any(|r| matches!(r.outcome, history::Outcome::Read { .. }));
        if !refused || !read {
            report.disk.push(format!(
                "while the disk was full ({:.1}–{:.1} s): a write refused with `{NO_SPACE}`: {refused}; a read served: {read}",
                from as f64 / 1e9,
                to as f64 / 1e9
            ));
        }
    }
}

fn failed_with(r: &history::Record, message: &str) -> bool {
    matches!(&r.outcome, history::Outcome::Failed { error } if error.contains(message))
}

/// etcd's refusal of a write while NOSPACE is raised.
/// Client ids of the clients pinned to one member, with the whole mix and reads only
/// (balanced clients count from 0, watchers from 1000).
const PINNED_IDS: u32 = 100;
const PINNED_READER_IDS: u32 = 500;

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// I5: every member's HashKV at the same revision is equal.
async fn check_hashes(cluster: &Cluster, rev: i64, report: &mut Report) {
    let mut hashes = Vec::new();
    for m in cluster.data_members().map(|i| &cluster.members[i]) {
        let h = match workload::connect(&[m.url()]).await {
            Ok(mut c) => c.hash_kv(rev).await.map(|r| r.hash()).ok(),
            Err(_) => None,
        };
        hashes.push(h);
    }
    if hashes.iter().any(|h| *h != hashes[0]) {
        report.linearizability.push(format!(
            "I5: HashKV at revision {rev} differs across members: {hashes:?}"
        ));
    }
}

/// How many of a member's notable log lines a failed fault injection shows.
const DIGEST_LINES: usize = 30;

/// The last warnings, errors and leadership events each member logged (elections, votes,
/// moves), one block per member, for a failure's message.
fn log_digest(cluster: &Cluster) -> String {
    let notable = |l: &&str| {
        l.contains("\"WARN\"")
            || l.contains("\"ERROR\"")
            || ["leader", "elect", "vote", "stand", "campaign"]
                .iter()
                .any(|w| l.contains(w))
    };
    let mut out = String::new();
    for m in &cluster.members {
        let log = m.log();
        let lines: Vec<&str> = log.lines().filter(notable).collect();
        out.push_str(&format!(
            "--- {} (last {DIGEST_LINES} notable lines)\n",
            m.name()
        ));
        for l in &lines[lines.len().saturating_sub(DIGEST_LINES)..] {
            out.extend(l.chars().take(400));
            out.push('\n');
        }
    }
    out
}

fn keep_artifacts(s: &Scenario, cluster: &Cluster, lines: &[history::Line]) -> Result<PathBuf> {
    let root = std::env::var_os("TANDEM_ROBUSTNESS_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/robustness"));
    let name: String = s
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = root.join(format!("{name}-{}-{}", s.kind.name(), std::process::id()));
    std::fs::create_dir_all(&dir)?;
    history::write_jsonl(&dir.join("history.jsonl"), lines)?;
    for m in &cluster.members {
        std::fs::write(dir.join(format!("{}.log", m.name())), m.log())?;
    }
    Ok(dir)
}

impl Summary {
    /// Fails with the findings and where the artifacts are.
    pub fn assert_ok(&self) -> Result<()> {
        if self.report.ok() {
            return Ok(());
        }
        bail!(
            "{} on {}: violations\n{}artifacts: {}",
            self.scenario,
            self.kind.name(),
            self.report.summary(),
            self.artifacts
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        )
    }

    /// The figures every fault test reports, named.
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let r = &self.report;
        vec![
            ("attempted", self.attempted.to_string()),
            ("acknowledged", self.acknowledged.to_string()),
            ("failed", self.failed.to_string()),
            ("indeterminate", self.indeterminate.to_string()),
            ("writes/s", format!("{:.0}", self.writes_per_second)),
            (
                "longest write gap",
                format!("{:.2} s", self.longest_write_gap.as_secs_f64()),
            ),
            ("faults", self.faults.to_string()),
            ("elections", self.elections.to_string()),
            (
                "files that lost unsynced writes",
                self.unsynced_dropped.to_string(),
            ),
            ("leases expired", r.expired_leases.to_string()),
            ("lost", r.lost.len().to_string()),
            ("linearizability", r.linearizability.len().to_string()),
            ("watch", r.watch.len().to_string()),
            ("lease", r.lease.len().to_string()),
            ("acked after a failed fsync", r.fsync.len().to_string()),
            ("full disk not refused as NOSPACE", r.disk.len().to_string()),
        ]
    }

    pub fn line(&self) -> String {
        let figures: Vec<String> = self
            .columns()
            .into_iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        format!(
            "{} on {}: {}",
            self.scenario,
            self.kind.name(),
            figures.join(", ")
        )
    }
}

/// Asks member `from`, which leads, to hand its leadership to member `to` (etcd's MoveLeader).
async fn move_leader(cluster: &Cluster, from: usize, to: usize) -> Result<()> {
    let id = cluster.members[to]
        .client()
        .await?
        .status()
        .await?
        .header()
        .context("a status header")?
        .member_id();
    cluster.members[from]
        .client()
        .await?
        .move_leader(id)
        .await?;
    Ok(())
}
