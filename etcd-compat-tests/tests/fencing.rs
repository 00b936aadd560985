//! Two data members and no witness, fencing each other (`--fence-command`,
//! `../shared/docs/two-node-design.md`, topology 2), on real processes with a fence agent that
//! SIGKILLs the peer's process (a stand-in for IPMI): the survivor of a lost peer fences it and
//! only then goes on alone with every acknowledged write; the fenced member, started again,
//! rejoins as a learner and is promoted; a failing or hanging fence keeps the survivor refusing
//! writes with etcd's `no leader` and is tried again; a symmetric partition is won by exactly
//! one side. The histories of the same faults are checked by the robustness suite.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_compat_tests::fence::{wait_armed, FenceAgent, Mode};
use etcd_compat_tests::{wait_until, wait_until_async, Cluster, Kind, Server};

const WAIT: Duration = Duration::from_secs(30);
/// The member that did not lead waits this much longer than the leader before it fences.
const DELAY_MS: u64 = 1000;
/// How long the race test's fence takes: longer than the two members' detections of the
/// silence can lie apart (a question to a silent peer waits half an election timeout), so
/// that without the delay both fences would run.
const RACE_FENCE_MS: u64 = 1500;
/// With a fence that takes time, the delay must be longer than the fence.
const RACE_DELAY_MS: u64 = 3000;

async fn client(url: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3));
    etcd_client::Client::connect([url], Some(opts))
        .await
        .expect("connect")
}

/// Puts `key` through `url` until it is acknowledged (each value is unique, so a retried put
/// that did happen is harmless); how long it took.
async fn put_acknowledged(url: &str, key: &str) -> Duration {
    let started = Instant::now();
    let last_error = std::sync::Mutex::new(String::new());
    let last_error = &last_error;
    wait_until_async(
        &format!("{key} to be acknowledged by {url}"),
        WAIT,
        || async move {
            match client(url)
                .await
                .put(key, format!("value of {key}"), None)
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    *last_error.lock().expect("error") = e.to_string();
                    false
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; last error: {}", last_error.lock().expect("error")));
    started.elapsed()
}

/// The keys under `f/` at `url` (a linearizable range).
async fn keys(url: &str) -> std::collections::BTreeSet<String> {
    let got = client(url)
        .await
        .get("f/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("linearizable range");
    got.kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf-8").to_string())
        .collect()
}

/// Every key of `acked` is in a linearizable range at `url`.
async fn assert_all_present(url: &str, acked: &[String]) {
    let present = keys(url).await;
    let missing: Vec<&String> = acked.iter().filter(|k| !present.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged {missing:?} missing on {url}"
    );
}

/// (name, is learner) of every member, as `url` lists them.
async fn members(url: &str) -> Vec<(String, bool)> {
    let list = client(url).await.member_list().await.expect("member list");
    list.members()
        .iter()
        .map(|m| (m.name().to_string(), m.is_learner()))
        .collect()
}

fn start(agent: &FenceAgent, timeout_ms: u64) -> Cluster {
    let flags = agent.flags(DELAY_MS, timeout_ms);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::start(Kind::Tandem, 2, &flags).expect("two members that fence each other")
}

/// Starts the fenced member `i` again (powered on) and waits until it has rejoined: promoted
/// back to a voter, and serving.
async fn power_on(cluster: &mut Cluster, i: usize, survivor: usize) {
    cluster.members[i].restart().expect("restart");
    let url = cluster.members[survivor].url();
    wait_until_async(
        "the returning member to be promoted to a voter",
        WAIT,
        || async {
            let list = members(&url).await;
            list.len() == 2 && list.iter().all(|(_, learner)| !learner)
        },
    )
    .await
    .expect("promoted");
    cluster.wait_healthy(i).expect("healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_peer_is_fenced_and_the_survivor_goes_on_with_every_acknowledged_write() {
    let agent = FenceAgent::new().expect("agent");
    let mut cluster = start(&agent, 10_000);
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = Vec::new();
    for i in 0..20 {
        let k = format!("f/before-{i:02}");
        put_acknowledged(&urls[i % 2], &k).await;
        acked.push(k);
    }
    wait_armed(&cluster).expect("armed");

    // Round 1: the leader is SIGKILLed; the follower fences it (after its delay) and goes on.
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let survivor = 1 - leader;
    let lost_name = cluster.members[leader].name().to_string();
    cluster.members[leader].stop("KILL").expect("kill");
    let took = put_acknowledged(&urls[survivor], "f/after-kill").await;
    eprintln!("leader killed: next write acknowledged after {took:?}");
    acked.push("f/after-kill".into());
    assert_eq!(
        agent.killed(),
        vec![lost_name.clone()],
        "one fence, of the lost member"
    );
    let list = members(&urls[survivor]).await;
    assert!(
        list.contains(&(lost_name.clone(), true)),
        "the fenced member is a learner now: {list:?}"
    );
    let log = cluster.members[survivor].log();
    assert!(
        log.contains("took the one-voter membership after fencing the peer"),
        "the survivor went on alone"
    );
    for i in 0..10 {
        let k = format!("f/alone-{i:02}");
        put_acknowledged(&urls[survivor], &k).await;
        acked.push(k);
    }

    power_on(&mut cluster, leader, survivor).await;
    for url in &urls {
        assert_all_present(url, &acked).await;
    }
    wait_armed(&cluster).expect("armed");

    // Round 2: whoever leads now is paused (SIGSTOP) past the election timeout; the other
    // fences it, so it never answers again, and goes on.
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let survivor = 1 - leader;
    let paused = cluster.members[leader].pid();
    std::process::Command::new("kill")
        .args(["-STOP", &paused.to_string()])
        .status()
        .expect("SIGSTOP");
    let took = put_acknowledged(&urls[survivor], "f/after-pause").await;
    eprintln!("leader paused: next write acknowledged after {took:?}");
    acked.push("f/after-pause".into());
    assert!(
        cluster.members[leader].exited(),
        "the paused member was fenced: its process is gone"
    );
    assert_eq!(
        agent.killed().len(),
        2,
        "the paused member was fenced: {:?}",
        agent.calls()
    );
    power_on(&mut cluster, leader, survivor).await;

    assert_all_present(&urls[leader], &acked).await;
    // I5: equal keyspaces at equal revision.
    let rev = client(&urls[0])
        .await
        .get("f/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    let mut hashes = Vec::new();
    for url in &urls {
        hashes.push(client(url).await.hash_kv(rev).await.expect("hash").hash());
    }
    assert_eq!(hashes[0], hashes[1], "HashKV at {rev}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_hanging_fence_keeps_writes_refused_and_is_tried_again() {
    let agent = FenceAgent::new().expect("agent");
    let mut cluster = start(&agent, 1000);
    wait_armed(&cluster).expect("armed");
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let follower = 1 - leader;
    let url = cluster.members[leader].url();
    put_acknowledged(&url, "f/before").await;
    agent.set(Mode::Fail).expect("fail");
    cluster.members[follower].stop("KILL").expect("kill");

    let refused = |what: &'static str, mode: Mode| {
        let agent = &agent;
        let url = url.clone();
        async move {
            wait_until(&format!("the {what} fence to be tried twice"), WAIT, || {
                agent.calls().iter().filter(|(_, m)| *m == mode).count() >= 2
            })
            .expect("retried");
            let err = client(&url)
                .await
                .put(format!("f/during-{what}"), "v", None)
                .await
                .expect_err("a write while the fence has not succeeded");
            assert!(
                err.to_string().contains("etcdserver: no leader"),
                "refused as etcd refuses without a leader: {err}"
            );
        }
    };
    refused("failing", Mode::Fail).await;
    let log = cluster.members[leader].log();
    assert!(
        log.contains("cannot reach the BMC"),
        "the command's output is in the log"
    );
    agent.set(Mode::Hang).expect("hang");
    refused("hanging", Mode::Hang).await;
    assert!(
        cluster.members[leader]
            .log()
            .contains("the fence command hung and was killed"),
        "a hanging command is killed after --fence-timeout"
    );
    assert!(agent.killed().is_empty(), "no fence has succeeded yet");

    agent.set(Mode::Kill).expect("kill");
    let took = put_acknowledged(&url, "f/after").await;
    eprintln!("the fence succeeded: a write acknowledged {took:?} later");
    assert_eq!(
        agent.killed(),
        vec![cluster.members[follower].name().to_string()]
    );
    let present = keys(&url).await;
    assert!(present.contains("f/before") && present.contains("f/after"));
    assert!(
        !present.contains("f/during-failing") && !present.contains("f/during-hanging"),
        "refused writes were not applied: {present:?}"
    );
    power_on(&mut cluster, follower, leader).await;
}

/// Races of a symmetric partition with both members alive: `TANDEM_FENCE_RACES` (default 3;
/// 20 for the acceptance run) partitions, each won by exactly one side. Both lose their peer
/// at the same moment and a fence takes 1.5 s, so without the non-leader's delay both would
/// fence each other.
#[tokio::test(flavor = "multi_thread")]
async fn a_symmetric_partition_is_won_by_exactly_one_side() {
    let races: usize = std::env::var("TANDEM_FENCE_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let agent = FenceAgent::new().expect("agent");
    agent
        .set_duration(Duration::from_millis(RACE_FENCE_MS))
        .expect("duration");
    let flags = agent.flags(RACE_DELAY_MS, 10_000);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_proxied(Kind::Tandem, 2, &flags, &mut |_, _| Ok(()))
        .expect("two members behind the fault proxy");
    let proxy = cluster.proxy.clone().expect("proxy");
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = Vec::new();
    for race in 0..races {
        wait_armed(&cluster).expect("armed");
        let leader = cluster.wait_leader(WAIT).await.expect("a leader");
        let started = Instant::now();
        proxy.cut(0, 1);
        let mut exited = [false; 2];
        wait_until("one side to be fenced", WAIT, || {
            for (i, e) in exited.iter_mut().enumerate() {
                *e |= cluster.members[i].exited();
            }
            exited.iter().any(|e| *e)
        })
        .expect("fenced");
        let winner = exited.iter().position(|e| !e).expect("a side still runs");
        for m in &cluster.members {
            let log = m.log();
            let fencing: Vec<&str> = log.lines().filter(|l| l.contains("fenc")).collect();
            eprintln!(
                "{}: {}",
                m.name(),
                fencing[fencing.len().saturating_sub(6)..].join("\n")
            );
        }
        let key = format!("f/race-{race:02}");
        put_acknowledged(&urls[winner], &key).await;
        acked.push(key);
        // The loser stays off (nothing powers it on): still exactly one side.
        assert!(!cluster.members[winner].exited(), "both sides were fenced");
        eprintln!(
            "race {race}: {} (the leader: {}) won; next write {:?} after the cut",
            cluster.members[winner].name(),
            winner == leader,
            started.elapsed()
        );
        assert_eq!(
            winner, leader,
            "the leader fences first (the other waits the delay)"
        );
        proxy.heal();
        power_on(&mut cluster, 1 - winner, winner).await;
    }
    assert_eq!(
        agent.killed().len(),
        races,
        "one fence a race: {:?}",
        agent.calls()
    );
    for url in &urls {
        assert_all_present(url, &acked).await;
    }
}
