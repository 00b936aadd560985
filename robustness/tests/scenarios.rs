//! The short form of the robustness suite that CI runs: every scenario for a few seconds on
//! tandem (one member, three members) and on etcd 3.5.1 (three members, no false positives).
//! `cargo run -p robustness --release -- --help` runs the long form and writes
//! docs/robustness.md.

use std::time::Duration;

use etcd_compat_tests::Kind;
use robustness::scenario::{self, Fault, Scenario};

fn scenario(name: &str, kind: Kind, members: usize, fault: Fault) -> Scenario {
    Scenario {
        name: name.to_string(),
        kind,
        members,
        fault,
        duration: Duration::from_secs(10),
        every: Duration::from_millis(3500),
        // Longer than the longest election timeout (a tandem follower stands after 1.5–2 s): a new leader is
        // elected, and the old one is deposed.
        down: Duration::from_millis(2500),
        workload: Default::default(),
        fault_count: None,
        flags: Vec::new(),
        env: Vec::new(),
    }
}

async fn run(s: Scenario) -> scenario::Summary {
    let summary = scenario::run(&s).await.expect("the run");
    println!("{}", summary.line());
    summary.assert_ok().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(summary.acknowledged > 100, "the workload made progress");
    summary
}

/// etcd 3.5.0–3.5.2 did not save its consistent index atomically with the data it applied: a
/// member killed mid-write can come back with applied entries lost or applied twice, out of
/// step with its peers (etcd-io/etcd#13766, fixed in 3.5.3; the reference here is 3.5.1). A
/// run that kills etcd members therefore prints what the checker found and fails only when
/// the checker itself could not run; every other etcd run must be clean (no false positives).
async fn run_etcd_with_known_crash_bug(s: Scenario) {
    assert_eq!(s.kind, Kind::Etcd35);
    let summary = scenario::run(&s).await.expect("the run");
    println!("{}", summary.line());
    if let Err(e) = summary.assert_ok() {
        println!("etcd 3.5.1's known crash inconsistency (etcd-io/etcd#13766) showed:\n{e:#}");
    }
    assert!(summary.acknowledged > 100, "the workload made progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_without_faults() {
    run(scenario(
        "one member, no fault",
        Kind::Tandem,
        1,
        Fault::None,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_killed() {
    run(scenario(
        "one member, SIGKILL",
        Kind::Tandem,
        1,
        Fault::KillLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_leader_killed() {
    run(scenario(
        "three members, leader SIGKILL",
        Kind::Tandem,
        3,
        Fault::KillLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_leader_paused() {
    run(scenario(
        "three members, leader SIGSTOP",
        Kind::Tandem,
        3,
        Fault::PauseLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_follower_killed() {
    run(scenario(
        "three members, follower SIGKILL",
        Kind::Tandem,
        3,
        Fault::KillFollower,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_leader_killed() {
    run_etcd_with_known_crash_bug(scenario(
        "three members, leader SIGKILL",
        Kind::Etcd35,
        3,
        Fault::KillLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_leader_paused() {
    run(scenario(
        "three members, leader SIGSTOP",
        Kind::Etcd35,
        3,
        Fault::PauseLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_leader_partitioned() {
    if !etcd_compat_tests::netns::available() {
        panic!("network namespaces need root, ip and iptables: run scripts/install-deps as root");
    }
    run(scenario(
        "three members, leader partitioned",
        Kind::Tandem,
        3,
        Fault::PartitionLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_leader_partitioned() {
    run(scenario(
        "three members, leader partitioned",
        Kind::Etcd35,
        3,
        Fault::PartitionLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_fsync_fails() {
    run(scenario(
        "one member, fdatasync EIO",
        Kind::Tandem,
        1,
        Fault::FsyncEioLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_power_cut() {
    run(scenario(
        "one member, power cut",
        Kind::Tandem,
        1,
        Fault::PowerCut,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_power_cut() {
    run(scenario(
        "three members, power cut",
        Kind::Tandem,
        3,
        Fault::PowerCut,
    ))
    .await;
}

/// Issue 10's acceptance: power cuts under 8 writers lose no acknowledged write, on one member
/// and on three (all cut at once). CI runs 5 of each; `TANDEM_POWER_CUTS=20` runs the
/// acceptance. Regression: on three members, a follower served linearizable reads that missed
/// acknowledged writes after the cuts (a restored leader's ReadIndex ignored its log's tail);
/// 20 cuts found 73–76 such reads, the first after the second cut.
async fn power_cuts(members: usize) {
    let n = std::env::var("TANDEM_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut s = scenario(
        &format!("{members} member(s), {n} power cuts"),
        Kind::Tandem,
        members,
        Fault::PowerCut,
    );
    s.fault_count = Some(n);
    s.every = Duration::from_millis(1500);
    s.down = Duration::from_millis(100);
    s.workload.clients = 8;
    let summary = scenario::run(&s).await.expect("the run");
    println!("{}", summary.line());
    summary.assert_ok().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(summary.faults, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_on_one_member_lose_no_acknowledged_write() {
    power_cuts(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_on_three_members_lose_no_acknowledged_write() {
    power_cuts(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_power_cut() {
    run_etcd_with_known_crash_bug(scenario(
        "three members, power cut",
        Kind::Etcd35,
        3,
        Fault::PowerCut,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_one_way_from_the_leader() {
    run(scenario(
        "three members, one way from the leader",
        Kind::Tandem,
        3,
        Fault::OneWayFromLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_flapping_leader_links() {
    run(scenario(
        "three members, flapping leader links",
        Kind::Tandem,
        3,
        Fault::FlapLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_one_way_from_the_leader() {
    run(scenario(
        "three members, one way from the leader",
        Kind::Etcd35,
        3,
        Fault::OneWayFromLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_flapping_leader_links() {
    run(scenario(
        "three members, flapping leader links",
        Kind::Etcd35,
        3,
        Fault::FlapLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_clock_jumps() {
    run(scenario(
        "three members, clock jumps",
        Kind::Tandem,
        3,
        Fault::ClockJumps,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_disk_full() {
    run(scenario(
        "one member, disk full",
        Kind::Tandem,
        1,
        Fault::DiskFullLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_leader_disk_full() {
    run(scenario(
        "three members, leader's disk full",
        Kind::Tandem,
        3,
        Fault::DiskFullLeader,
    ))
    .await;
}

/// Two data nodes and a witness (members m1, m2; m3 the witness): the two-node design's
/// scenarios, each with the history checked.
fn witness_scenario(name: &str, fault: Fault) -> Scenario {
    let mut s = scenario(&format!("2 data + witness, {name}"), Kind::Tandem, 3, fault);
    s.flags = vec![
        etcd_compat_tests::WITNESS_FLAG.to_string(),
        "m3".to_string(),
    ];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_without_faults() {
    run(witness_scenario("no fault", Fault::None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s1_follower_killed() {
    run(witness_scenario("S1 follower SIGKILL", Fault::KillFollower)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s2_leader_killed() {
    run(witness_scenario("S2 leader SIGKILL", Fault::KillLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s3_witness_killed() {
    run(witness_scenario("S3 witness SIGKILL", Fault::KillWitness)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s9_follower_then_leader_killed() {
    let mut s = witness_scenario(
        "S9 follower, then leader SIGKILL",
        Fault::KillFollowerThenLeader,
    );
    s.fault_count = Some(1);
    run(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s9_follower_then_leader_and_witness_killed() {
    let mut s = witness_scenario(
        "S9 follower, then leader and witness SIGKILL",
        Fault::KillFollowerThenLeaderAndWitness,
    );
    s.fault_count = Some(1);
    run(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s17_leader_paused() {
    run(witness_scenario("S17 leader SIGSTOP", Fault::PauseLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s5_leader_partitioned() {
    run(witness_scenario(
        "S5 leader partitioned",
        Fault::PartitionLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s18_one_way_from_leader() {
    run(witness_scenario(
        "S18 one way from leader",
        Fault::OneWayFromLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s19_flapping_leader_links() {
    run(witness_scenario("S19 flapping links", Fault::FlapLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s10_power_cut() {
    run(witness_scenario("S10 power cut", Fault::PowerCut)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s4_data_members_partitioned() {
    run(witness_scenario(
        "S4 data members partitioned",
        Fault::PartitionDataMembers,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s6_follower_partitioned() {
    run(witness_scenario(
        "S6 follower partitioned",
        Fault::PartitionFollower,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s8_witness_lost_then_partition() {
    run(witness_scenario(
        "S8 witness lost, then partition",
        Fault::KillWitnessThenPartition,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s15_s16_clock_jumps_and_skew() {
    run(witness_scenario(
        "S15/S16 wall-clock jumps and skew on the leader",
        Fault::ClockJumps,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_leadership_moved() {
    run(scenario(
        "three members, leadership moved and back",
        Kind::Tandem,
        3,
        Fault::MoveLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_leadership_moved() {
    run(scenario(
        "three members, leadership moved and back",
        Kind::Etcd35,
        3,
        Fault::MoveLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_leadership_moved() {
    run(witness_scenario(
        "leadership moved and back",
        Fault::MoveLeader,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s14_slow_fsync_on_the_leader() {
    let mut s = witness_scenario("S14 slow fdatasync on the leader", Fault::SlowFsyncLeader);
    // The leader hands over after 3 s of slow flushes (raft::leadership); the move itself runs
    // on the slowed process (its appends wait for the slow disk; in CI one took 5.1 s) and the
    // new leader is found by asking members one of which is under strace. 10 s was too tight
    // there (3 of 8 CI runs); S14 sets no bound, 20 s keeps "it moves" a finite claim.
    s.down = Duration::from_secs(20);
    s.every = Duration::from_secs(11);
    s.duration = Duration::from_secs(14);
    s.fault_count = Some(1);
    run(s).await;
}

/// Two data members that fence each other (no witness): one fault each, the fenced member
/// started again afterwards, the history checked.
fn fencing_scenario(name: &str, fault: Fault) -> Scenario {
    let mut s = scenario(&format!("2 fencing, {name}"), Kind::Tandem, 2, fault);
    // Longer than an election timeout, the non-leader's fence delay and a restart.
    s.down = Duration::from_secs(4);
    s.every = Duration::from_secs(3);
    s.fault_count = Some(1);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_leader_killed() {
    run(fencing_scenario("leader SIGKILL", Fault::KillLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_leader_paused() {
    run(fencing_scenario("leader SIGSTOP", Fault::PauseLeader)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_symmetric_partition() {
    let mut s = fencing_scenario("symmetric partition", Fault::PartitionDataMembers);
    s.fault_count = Some(2);
    run(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_fence_fails_then_works() {
    run(fencing_scenario(
        "the fence fails, then works",
        Fault::FenceFailsThenWorks,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_fence_hangs_then_works() {
    run(fencing_scenario(
        "the fence hangs, then works",
        Fault::FenceHangsThenWorks,
    ))
    .await;
}

/// One membership fault, then the workload a little longer.
fn membership_scenario(mut s: Scenario) -> Scenario {
    s.fault_count = Some(1);
    s.every = Duration::from_secs(2);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_grow_and_shrink() {
    run(membership_scenario(scenario(
        "three members, grown by two and shrunk back",
        Kind::Tandem,
        3,
        Fault::GrowAndShrink,
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_three_members_grow_and_shrink() {
    run(membership_scenario(scenario(
        "three members, grown by two and shrunk back",
        Kind::Etcd35,
        3,
        Fault::GrowAndShrink,
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_s11_leader_killed_during_a_member_add() {
    run(membership_scenario(scenario(
        "three members, S11 leader SIGKILL during a member add",
        Kind::Tandem,
        3,
        Fault::KillLeaderDuringMemberAdd,
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witness_s11_leader_killed_during_a_member_add() {
    run(membership_scenario(witness_scenario(
        "S11 leader SIGKILL during a member add",
        Fault::KillLeaderDuringMemberAdd,
    )))
    .await;
}
