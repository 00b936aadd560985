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
        flags: Vec::new(),
        env: Vec::new(),
    }
}

async fn run(s: Scenario) {
    let summary = scenario::run(&s).await.expect("the run");
    println!("{}", summary.line());
    summary.assert_ok().unwrap_or_else(|e| panic!("{e:#}"));
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
    run(scenario(
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
