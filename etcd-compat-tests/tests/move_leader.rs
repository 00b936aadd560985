//! `etcdctl move-leader` (etcd's MoveLeader): against three members of tandem and of etcd 3.5.1
//! the same commands give the same answers (a move to each follower, to the leader itself, to
//! an unknown member, through a follower's endpoint only); under a steady writer every
//! acknowledged write survives the moves and the revision never goes back; beside a witness,
//! leadership moves between the data nodes and never to the witness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_compat_tests::{
    assert_same, steady_writer, wait_until_async, Cluster, Ctl, CtlVersion, Kind, Transcript,
    WITNESS_FLAG,
};

const WAIT: Duration = Duration::from_secs(30);

async fn client(url: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([url], Some(opts))
        .await
        .expect("connect")
}

/// Each member's id, as its status reports it.
async fn ids(cluster: &Cluster) -> Vec<u64> {
    let mut ids = Vec::new();
    for m in &cluster.members {
        ids.push(if m.is_witness() {
            0
        } else {
            let st = client(&m.url()).await.status().await.expect("status");
            st.header().expect("header").member_id()
        });
    }
    ids
}

fn ctl(endpoints: String) -> Ctl {
    Ctl {
        version: CtlVersion::V35,
        endpoint: endpoints,
        cwd: std::env::temp_dir(),
    }
}

/// The move-leader commands a user would run, recorded for comparison.
async fn scenario(cluster: &Cluster) -> Transcript {
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let ids = ids(cluster).await;
    let mut t = Transcript::new(ctl(cluster.endpoints()));
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    t.run(&["move-leader", &format!("{:x}", ids[follower])], None);
    let now = cluster.wait_leader(WAIT).await.expect("a leader");
    t.note(format!("leader is the first follower: {}", now == follower));
    t.run(&["move-leader", &format!("{:x}", ids[other])], None);
    let now = cluster.wait_leader(WAIT).await.expect("a leader");
    t.note(format!("leader is the other follower: {}", now == other));
    // To the leader itself, and to no member.
    t.run(&["move-leader", &format!("{:x}", ids[other])], None);
    t.run(&["move-leader", "1234abcd5678ef90"], None);
    // Without the leader's endpoint etcdctl refuses before asking.
    let mut f = Transcript::new(ctl(cluster.members[leader].url()));
    f.run(&["move-leader", &format!("{:x}", ids[leader])], None);
    t.lines.extend(f.lines);
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_matches_etcd() {
    let etcd = Cluster::start(Kind::Etcd35, 3, &[]).expect("etcd cluster");
    let reference = scenario(&etcd).await;
    drop(etcd);
    let tandem = Cluster::start(Kind::Tandem, 3, &[]).expect("tandem cluster");
    let ours = scenario(&tandem).await;
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", reference.lines.join("\n"));
    }
    assert_same(&reference, Kind::Etcd35.name(), &ours);
}

/// Moves leadership `moves` times between the data members of `cluster` under a writer on each
/// data member; returns the longest time a move took.
async fn moves_under_writers(cluster: &Cluster, moves: usize) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = cluster
        .data_members()
        .map(|i| {
            tokio::spawn(steady_writer(
                cluster.members[i].url(),
                "m/",
                Arc::clone(&stop),
            ))
        })
        .collect();
    let ids = ids(cluster).await;
    let data: Vec<usize> = cluster.data_members().collect();
    let mut longest = Duration::ZERO;
    for n in 0..moves {
        let leader = cluster.wait_leader(WAIT).await.expect("a leader");
        let at = data
            .iter()
            .position(|d| *d == leader)
            .expect("a data member leads");
        // Each of the others in turn.
        let to = data[(at + 1 + n % (data.len() - 1)) % data.len()];
        let started = Instant::now();
        let mut c = client(&cluster.members[leader].url()).await;
        c.move_leader(ids[to]).await.expect("move-leader");
        longest = longest.max(started.elapsed());
        let now = cluster.wait_leader(WAIT).await.expect("a leader");
        assert_eq!(now, to, "leadership moved to the member asked for");
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        let (keys, errors, went_back) = w.await.expect("writer");
        assert!(!went_back, "a client saw its revision go back");
        assert!(
            !keys.is_empty(),
            "the writer made progress; errors: {errors:?}"
        );
        acked.extend(keys);
    }
    // Every acknowledged write is on every data member.
    for i in cluster.data_members() {
        let mut c = client(&cluster.members[i].url()).await;
        let all = c
            .get("m/", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .expect("range");
        let held: std::collections::BTreeSet<String> = all
            .kvs()
            .iter()
            .map(|kv| kv.key_str().expect("utf-8").to_string())
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|k| !held.contains(*k)).collect();
        assert!(
            lost.is_empty(),
            "acknowledged writes lost on member {i}: {lost:?}"
        );
    }
    longest
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_under_steady_writers_lose_no_acknowledged_write() {
    let cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("cluster");
    let longest = moves_under_writers(&cluster, 6).await;
    println!("3 members: the longest of 6 moves took {longest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn beside_a_witness_leadership_moves_between_data_nodes_never_to_the_witness() {
    let cluster = Cluster::start(Kind::Tandem, 3, &[WITNESS_FLAG, "m3"]).expect("cluster");
    let longest = moves_under_writers(&cluster, 4).await;
    println!("2 data nodes + witness: the longest of 4 moves took {longest:?}");
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let witness = cluster.witness().expect("a witness");
    let list = client(&cluster.members[leader].url())
        .await
        .member_list()
        .await
        .expect("member list");
    let witness_id = list
        .members()
        .iter()
        .find(|m| m.name() == cluster.members[witness].name())
        .expect("the witness is listed")
        .id();
    let refused = client(&cluster.members[leader].url())
        .await
        .move_leader(witness_id)
        .await
        .expect_err("a move to the witness is refused");
    assert!(
        refused
            .to_string()
            .contains("etcdserver: bad leader transferee"),
        "{refused}"
    );
    // Through the follower: etcd's "not leader".
    let follower = cluster.data_members().find(|i| *i != leader).unwrap();
    let ids = ids(&cluster).await;
    let refused = client(&cluster.members[follower].url())
        .await
        .move_leader(ids[leader])
        .await
        .expect_err("only the leader moves its leadership");
    assert!(
        refused.to_string().contains("etcdserver: not leader"),
        "{refused}"
    );
}

/// With five members the transferee needs the votes of followers whose leases the old leader
/// renewed: its silence lets them run out, so the first campaign wins (each move must end
/// within the client's 5 s, as etcdctl's).
#[tokio::test(flavor = "multi_thread")]
async fn five_members_move_leadership_within_etcdctls_timeout() {
    let cluster = Cluster::start(Kind::Tandem, 5, &[]).expect("cluster");
    let longest = moves_under_writers(&cluster, 4).await;
    println!("5 members: the longest of 4 moves took {longest:?}");
}

/// Sends `signal` to member `i`'s process.
fn signal(cluster: &Cluster, i: usize, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &cluster.members[i].pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal}");
}

/// When the transferee cannot campaign (here: paused) and the third member's own election
/// timer fires first, that member wins; the move is then handed to it, and it moves its
/// leadership on to the transferee once that answers again: the request still succeeds, and
/// the transferee leads.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_overtaken_by_another_election_is_finished_by_the_new_leader() {
    let cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let ids = ids(&cluster).await;
    let (target, third) = ((leader + 1) % 3, (leader + 2) % 3);
    let url = cluster.members[leader].url();
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(20));
    let mut c = etcd_client::Client::connect([url], Some(opts))
        .await
        .expect("connect");
    signal(&cluster, target, "STOP");
    let target_id = ids[target];
    let began = std::time::Instant::now();
    let moving = tokio::spawn(async move { c.move_leader(target_id).await });
    // The third member wins the election the paused transferee cannot stand in.
    let third_url = cluster.members[third].url();
    let third_id = ids[third];
    wait_until_async("the third member to lead", WAIT, || {
        let url = third_url.clone();
        async move {
            let st = client(&url).await.status().await.expect("status");
            st.leader() == third_id
        }
    })
    .await
    .expect("the third member leads");
    let overtaken = began.elapsed();
    signal(&cluster, target, "CONT");
    let moved = moving.await.expect("the move's task");
    println!(
        "the third member led after {overtaken:?}; the move answered after {:?}",
        began.elapsed()
    );
    assert!(
        moved.is_ok(),
        "the move failed: {moved:?}\n{}",
        transfer_lines(&cluster)
    );
    let now = cluster.wait_leader(WAIT).await.expect("a leader");
    assert_eq!(now, target, "the transferee leads");
    // The first leader's requests to stand, sent while the transferee was stopped and read
    // once it ran again, no longer stood: the transferee declined them instead of deposing the
    // third member (which then moved its own leadership there).
    let declined = cluster.members[target]
        .log()
        .matches("declining to stand for election")
        .count();
    assert!(
        declined >= 1,
        "the transferee declined none of the stale requests to stand\n{}",
        transfer_lines(&cluster)
    );
    println!("the transferee declined {declined} stale requests to stand");
}

/// Each member's log lines about moves and elections: which member held the move, and where
/// it stood, when one fails.
fn transfer_lines(cluster: &Cluster) -> String {
    let mut out = String::new();
    for m in &cluster.members {
        out.push_str(&format!("--- {}\n", m.name()));
        for line in m.log().lines().filter(|l| {
            [
                "transfer", "move", "overtook", "election", "stand", "leader",
            ]
            .iter()
            .any(|w| l.contains(w))
        }) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
