//! Multi-member clusters on loopback: every member serves the whole API (writes and lease
//! renewals forwarded to the leader, linearizable reads through a ReadIndex round, watches from
//! its own applied state), a leader failure loses no acknowledged write, a member far behind
//! catches up from a snapshot, a member that loses its leader refuses `hasleader` requests
//! and ends `hasleader` watch streams as etcd does, and a linearizable read waits out a brief
//! pause of both followers as etcd's does. Where behaviour is etcd's, the same scenario runs
//! against a real etcd 3.5.1 cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_api::etcdserverpb as pb;
use etcd_client::{GetOptions, PutOptions, WatchOptions};
use etcd_compat_tests::{wait_until, Cluster, Kind};
use redb::ReadableTable;

const WAIT: Duration = Duration::from_secs(30);

async fn client(url: &str) -> etcd_client::Client {
    etcd_client::Client::connect([url], None)
        .await
        .expect("connect")
}

/// The next response of a watch stream, within the deadline.
async fn next_response(s: &mut etcd_client::WatchResponseStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("a watch response in time")
        .expect("stream")
        .expect("open")
}

/// Waits (polling, with a deadline) until `f` returns true.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    etcd_compat_tests::wait_until_async(what, WAIT, f)
        .await
        .expect("condition in time");
}

/// The scenario both tandem and etcd must pass: each member answers every kind of request,
/// whichever member leads.
async fn every_member_serves(cluster: &Cluster) {
    let name = cluster.members[0].kind.name();
    let urls: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    let follower = (leader + 1) % urls.len();
    let other_follower = (leader + 2) % urls.len();

    // Membership: every member lists all three with their URLs (published after start).
    for url in &urls {
        eventually("every member's client URLs in the member list", || async {
            let mut c = client(url).await;
            let list = c.member_list().await.expect("member list");
            let mut seen: Vec<(String, usize)> = list
                .members()
                .iter()
                .map(|m| (m.name().to_string(), m.client_urls().len()))
                .collect();
            seen.sort();
            seen == [("m1".into(), 1), ("m2".into(), 1), ("m3".into(), 1)]
        })
        .await;
    }

    // Status: one leader and one term everywhere, each member answering for itself.
    let mut ids = BTreeSet::new();
    let mut leaders = BTreeSet::new();
    let mut terms = BTreeSet::new();
    for url in &urls {
        let st = client(url).await.status().await.expect("status");
        if cluster.members[0].kind == Kind::Tandem {
            // The apiserver's feature check runs against every endpoint (contract, "Status").
            let v: Vec<u64> = st
                .version()
                .split('.')
                .map(|p| p.parse().expect("numeric semver"))
                .collect();
            assert!(
                v >= vec![3, 5, 13],
                "Status.version {} on {url}",
                st.version()
            );
            let (code, body) =
                etcd_compat_tests::http_get(&format!("{url}/version")).expect("version");
            assert!(
                code == 200 && body.contains("\"etcdserver\"") && body.contains("\"etcdcluster\"")
            );
        }
        ids.insert(st.header().expect("header").member_id());
        leaders.insert(st.leader());
        terms.insert(st.raft_term());
    }
    assert_eq!(ids.len(), 3, "{name}: three distinct member ids");
    assert_eq!(leaders.len(), 1, "{name}: one leader: {leaders:?}");
    assert_eq!(terms.len(), 1, "{name}: one term: {terms:?}");

    // A watch on one follower sees writes made through every member, in revision order.
    let mut watcher = client(&urls[other_follower]).await;
    let (_w, mut events) = watcher
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch")
        .split();
    assert!(next_response(&mut events).await.created());

    // Writes through each member are read back (linearizably) from every member at once.
    let mut revisions = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let key = format!("k{i}");
        let put = client(url)
            .await
            .put(key.as_str(), format!("from m{}", i + 1), None)
            .await
            .unwrap_or_else(|e| panic!("{name}: put through m{}: {e}", i + 1));
        let rev = put.header().expect("header").revision();
        revisions.push(rev);
        for reader in &urls {
            let got = client(reader)
                .await
                .get(key.as_str(), None)
                .await
                .expect("get");
            assert_eq!(got.kvs().len(), 1, "{name}: {key} read through {reader}");
            assert_eq!(got.kvs()[0].mod_revision(), rev);
            assert!(got.header().expect("header").revision() >= rev);
        }
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = next_response(&mut events).await;
        for e in r.events() {
            let kv = e.kv().expect("kv");
            seen.push((kv.key_str().expect("utf8").to_string(), kv.mod_revision()));
        }
    }
    let expected: Vec<(String, i64)> = (0..3).map(|i| (format!("k{i}"), revisions[i])).collect();
    assert_eq!(seen, expected, "{name}: watch through a follower");

    // Leases through followers: grant, attach, renew and inspect — the leader times them.
    let mut f = client(&urls[follower]).await;
    let lease = f.lease_grant(60, None).await.expect("grant").id();
    client(&urls[other_follower])
        .await
        .put("lk", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    let (mut keeper, mut acks) = f.lease_keep_alive(lease).await.expect("keep-alive");
    keeper.keep_alive().await.expect("send keep-alive");
    let ack = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("ack in time")
        .expect("stream")
        .expect("ack");
    assert_eq!((ack.id(), ack.ttl()), (lease, 60), "{name}: renewal");
    let ttl = client(&urls[other_follower])
        .await
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .expect("time to live");
    assert_eq!(ttl.granted_ttl(), 60);
    assert!((55..=60).contains(&ttl.ttl()), "{name}: ttl {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"lk".to_vec()]);
    f.lease_revoke(lease).await.expect("revoke");
    let gone = client(&urls[leader])
        .await
        .get("lk", None)
        .await
        .expect("get");
    assert!(gone.kvs().is_empty(), "{name}: revoke deleted the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_serves_the_whole_api_as_etcd_does() {
    for kind in [Kind::Tandem, Kind::Etcd35] {
        let cluster = Cluster::start(kind, 3, &[]).expect("cluster");
        every_member_serves(&cluster).await;
    }
}

/// The response header of a `Status` request to the member at `url`.
async fn status_header(url: &str) -> etcd_client::ResponseHeader {
    client(url)
        .await
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .clone()
}

/// The longest window between two of `times` (in any order).
fn longest_gap(mut times: Vec<Instant>) -> Duration {
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Prefix of every key the writers of `a_leader_failure_loses_no_acknowledged_write` put.
const FAILOVER_PREFIX: &str = "/failover/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failure_loses_no_acknowledged_write() {
    // etcd runs the same scenario for reference (its failover window is printed beside ours).
    leader_failure(Kind::Etcd35).await;
    leader_failure(Kind::Tandem).await;
}

async fn leader_failure(kind: Kind) {
    let mut cluster = Cluster::start(kind, 3, &[]).expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    // Acknowledged keys, with when each acknowledgement arrived.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One writer per member, so writes arrive at the leader directly and through followers.
    let mut writers = Vec::new();
    for (w, m) in cluster.members.iter().enumerate() {
        let url = m.url();
        let acked = std::sync::Arc::clone(&acked);
        let stop = std::sync::Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("{FAILOVER_PREFIX}w{w}-{n:05}");
                n += 1;
                // Errors are expected while the leader is gone; only acknowledged keys count.
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(10), c.put(key.as_str(), "v", None))
                        .await
                {
                    acked.lock().expect("acked").push((key, Instant::now()));
                }
            }
        }));
    }
    let count = || acked.lock().expect("acked").len();
    eventually("writes before the failure", || async { count() >= 60 }).await;
    cluster.members[leader]
        .stop("KILL")
        .expect("kill the leader");
    let at_kill = count();
    let new_leader = cluster.wait_leader(WAIT).await.expect("a new leader");
    assert_ne!(new_leader, leader);
    eventually("writes after the failover", || async {
        count() >= at_kill + 60
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    // The longest window without an acknowledged write (reported, not asserted: timing is
    // for benchmarks; the scenario table's S2 asks for at most 3 s).
    let times: Vec<Instant> = acked.lock().expect("acked").iter().map(|a| a.1).collect();
    let gap = longest_gap(times.clone());
    println!(
        "{}: failover: {} writes acknowledged, longest window without one {gap:?}",
        kind.name(),
        times.len()
    );

    // Every acknowledged write is on the survivors.
    let acked: BTreeSet<String> = acked
        .lock()
        .expect("acked")
        .iter()
        .map(|a| a.0.clone())
        .collect();
    let stored = |url: String| async move {
        let r = client(&url)
            .await
            .get(
                FAILOVER_PREFIX,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .expect("list");
        r.kvs()
            .iter()
            .map(|kv| kv.key_str().expect("utf8").to_string())
            .collect::<BTreeSet<String>>()
    };
    let survivor = cluster.members[new_leader].url();
    let on_survivor = stored(survivor.clone()).await;
    let lost: Vec<&String> = acked.difference(&on_survivor).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // The killed member comes back, catches up, and holds the same state (equal HashKV).
    cluster.members[leader].restart().expect("restart");
    cluster.wait_healthy(leader).expect("healthy again");
    let revision = status_header(&survivor).await.revision();
    let mut hashes = BTreeSet::new();
    for m in &cluster.members {
        let url = m.url();
        eventually("every member at the same revision", || {
            let url = url.clone();
            async move {
                let mut c = client(&url).await;
                let r = c
                    .get("x", Some(GetOptions::new().with_serializable()))
                    .await;
                r.is_ok_and(|r| r.header().is_some_and(|h| h.revision() >= revision))
            }
        })
        .await;
        let h = client(&url).await.hash_kv(revision).await.expect("hash kv");
        hashes.insert((h.hash(), h.compact_version()));
    }
    assert_eq!(
        hashes.len(),
        1,
        "HashKV differs between members: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(
        Kind::Tandem,
        3,
        &[
            "--snapshot-count=50",
            "--experimental-snapshot-catchup-entries=5",
        ],
    )
    .expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    let lagging = (leader + 1) % 3;
    cluster.members[lagging].stop("KILL").expect("stop");
    let url = cluster.members[leader].url();
    let mut c = client(&url).await;
    let lease = c.lease_grant(3600, None).await.expect("grant").id();
    // Entries batch concurrent writes, so write one at a time: 300 entries pass several
    // snapshots, and the leader keeps only 5 entries behind each.
    for i in 0..300 {
        let opts = (i % 10 == 0).then(|| PutOptions::new().with_lease(lease));
        c.put(format!("snap/{:03}", i % 150), format!("v{i}"), opts)
            .await
            .expect("put");
    }
    c.compact(200, None).await.expect("compact");
    let revision = c
        .put("snap/last", "v", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();

    cluster.members[lagging].restart().expect("restart");
    cluster.wait_healthy(lagging).expect("healthy");
    let lagging_url = cluster.members[lagging].url();
    let mut l = client(&lagging_url).await;
    // A linearizable read through the member that was behind sees everything.
    let got = l.get("snap/last", None).await.expect("get");
    assert_eq!(got.kvs().len(), 1);
    let log = cluster.members[lagging].log();
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the lagging member caught up from a snapshot; log:\n{log}"
    );
    // Same state at the same revision, the same compaction point, the same lease.
    let a = c.hash_kv(revision).await.expect("hash kv");
    let b = l.hash_kv(revision).await.expect("hash kv");
    assert_eq!(
        (a.hash(), a.compact_version()),
        (b.hash(), b.compact_version())
    );
    let err = l
        .get("snap/000", Some(GetOptions::new().with_revision(100)))
        .await
        .expect_err("compacted");
    assert!(
        err.to_string()
            .contains("required revision has been compacted"),
        "{err}"
    );
    let ttl = l.lease_time_to_live(lease, None).await.expect("ttl");
    assert_eq!(ttl.granted_ttl(), 3600);
    // A watch from before the snapshot on the member that installed it replays history from
    // its store: the same events the leader replays.
    let events = |url: String| async move {
        let mut c = client(&url).await;
        let (_w, mut s) = c
            .watch(
                "snap/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision - 20),
                ),
            )
            .await
            .expect("watch")
            .split();
        let mut out = Vec::new();
        while out.len() < 21 {
            let r = next_response(&mut s).await;
            for e in r.events() {
                let kv = e.kv().expect("kv");
                out.push((kv.key().to_vec(), kv.mod_revision(), kv.value().to_vec()));
            }
        }
        out
    };
    assert_eq!(events(url).await, events(lagging_url).await);
}

/// Opens a watch stream with `hasleader` metadata on `url` and waits for its creation.
async fn hasleader_watch(url: &str) -> tonic::Streaming<pb::WatchResponse> {
    let mut wc = pb::watch_client::WatchClient::connect(url.to_string())
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // Queue the first request before waiting for the stream: gRPC-Go sends headers lazily.
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"/registry/".to_vec().into(),
                range_end: b"/registry0".to_vec().into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("queue");
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("hasleader", "true".parse().expect("metadata"));
    let mut stream = wc.watch(req).await.expect("watch").into_inner();
    let created = stream.message().await.expect("stream").expect("created");
    assert!(created.created);
    // Keep the sender alive with the stream: dropping it would end the client's side.
    std::mem::forget(tx);
    stream
}

/// Contract, "hasleader": a member that loses its leader ends `hasleader` watch streams with
/// `etcdserver: no leader` and refuses `hasleader` requests the same way.
async fn leader_loss(kind: Kind, flags: &[&str]) -> (String, String) {
    let mut cluster = Cluster::start(kind, 3, flags).expect("cluster");
    let url = cluster.members[0].url();
    let mut stream = hasleader_watch(&url).await;
    cluster.members[1].stop("KILL").expect("kill m2");
    cluster.members[2].stop("KILL").expect("kill m3");
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "stream ended without an error".to_string(),
                Err(s) => return format!("{:?}: {}", s.code(), s.message()),
            }
        }
    })
    .await
    .expect("the hasleader stream ends once the member has no leader");
    let mut kv = pb::kv_client::KvClient::connect(url.clone())
        .await
        .expect("connect");
    let mut range = tonic::Request::new(pb::RangeRequest {
        key: b"/registry/health".to_vec().into(),
        ..Default::default()
    });
    range
        .metadata_mut()
        .insert("hasleader", "true".parse().expect("metadata"));
    let refused = match tokio::time::timeout(WAIT, kv.range(range)).await {
        Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
        other => format!("not refused: {other:?}"),
    };
    let (code, _) = etcd_compat_tests::http_get(&format!("{url}/health")).expect("health");
    assert_eq!(code, 503, "{}: /health without a leader", kind.name());
    (ended, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_loses_its_leader_ends_hasleader_streams_as_etcd_does() {
    let etcd = leader_loss(Kind::Etcd35, &[]).await;
    let tandem = leader_loss(Kind::Tandem, &[]).await;
    // A data member isolated from the other data member and the witness (m3) alike.
    let isolated = leader_loss(Kind::Tandem, &[etcd_compat_tests::WITNESS_FLAG, "m3"]).await;
    assert_eq!(
        isolated, etcd,
        "a data member of two and a witness, isolated"
    );
    assert_eq!(
        etcd,
        (
            "Unavailable: etcdserver: no leader".to_string(),
            "Unavailable: etcdserver: no leader".to_string()
        ),
        "etcd 3.5.1's behaviour, the reference"
    );
    assert_eq!(tandem, etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_without_a_witness_refuse_writes_when_one_is_lost() {
    // Two voters need both for a quorum (as two etcd members do): after losing one, the other
    // must not accept a write (no split brain), yet still serves serializable reads.
    let mut cluster = Cluster::start(Kind::Tandem, 2, &[]).expect("cluster");
    let urls: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    for (i, url) in urls.iter().enumerate() {
        client(url)
            .await
            .put(format!("two/{i}"), "v", None)
            .await
            .expect("put while both run");
    }
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    for lost in [leader, 1 - leader] {
        let survivor = 1 - lost;
        cluster.members[lost].stop("KILL").expect("kill");
        // A write in flight when the peer is lost may still commit once it returns (its outcome
        // is unknown: "request timed out", as with etcd). Once the survivor knows it has no
        // leader — a leader that hears from no quorum for an election timeout counts as none,
        // as etcd's CheckQuorum makes it step down — it refuses writes outright.
        let health = format!("{}/health", urls[survivor]);
        wait_until("the survivor to report no leader", WAIT, || {
            etcd_compat_tests::http_get(&health)
                .is_ok_and(|(code, body)| code == 503 && body.contains("RAFT NO LEADER"))
        })
        .expect("no leader");
        let mut c = client(&urls[survivor]).await;
        let err = tokio::time::timeout(WAIT, c.put("two/after", "v", None))
            .await
            .expect("refused in time, not hung")
            .expect_err("no write without a quorum");
        assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
        tokio::time::timeout(WAIT, c.get("two/0", None))
            .await
            .expect("refused in time, not hung")
            .expect_err("no linearizable read without a quorum");
        let got = c
            .get(
                "two/",
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await
            .expect("serializable read");
        assert_eq!(got.kvs().len(), 2);
        // Both back: writes resume, and nothing was written while alone.
        cluster.members[lost].restart().expect("restart");
        cluster.wait_healthy(0).expect("healthy");
        cluster.wait_healthy(1).expect("healthy");
        let got = client(&urls[lost])
            .await
            .get("two/after", None)
            .await
            .expect("get");
        assert!(
            got.kvs().is_empty(),
            "a refused write must not appear later"
        );
    }
}

/// Sends `signal` to a member's process without waiting for it (STOP and CONT pause and resume).
fn signal(cluster: &Cluster, member: usize, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(cluster.members[member].pid().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal}");
}

/// A linearizable read on the leader while both followers are paused: the leader's ReadIndex
/// round cannot reach a quorum; once the followers resume (well within the election timeout),
/// the read is served. `waited_for` is what the leader's log says when a round went unanswered.
async fn read_through_follower_pause(kind: Kind, waited_for: &str) -> String {
    // A long election timeout: the pause must end before anyone may stand for election or the
    // leader may count its quorum as lost, however slow this machine is.
    let cluster = Cluster::start(kind, 3, &["--election-timeout=10000"]).expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    let url = cluster.members[leader].url();
    let mut c = client(&url).await;
    c.put("pause/k", "v", None).await.expect("put");
    let followers: Vec<usize> = (0..3).filter(|m| *m != leader).collect();
    for f in &followers {
        signal(&cluster, *f, "STOP");
    }
    let read = tokio::spawn(async move { c.get("pause/k", None).await });
    let waited = wait_until("the leader's read round to go unanswered", WAIT, || {
        cluster.members[leader].log().contains(waited_for)
    });
    for f in &followers {
        signal(&cluster, *f, "CONT");
    }
    if let Err(e) = waited {
        let log = cluster.members[leader].log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{}: the round went unanswered while the followers were paused: {e}; the leader's log ends:\n{}",
            kind.name(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let got = tokio::time::timeout(WAIT, read)
        .await
        .expect("answered in time")
        .expect("task");
    match got {
        Ok(r) => r
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .unwrap_or_default(),
        Err(e) => format!("error: {e}"),
    }
}

/// etcd retries a ReadIndex round that got no quorum (every 500 ms) until the request times
/// out; tandem retries a confirmation round that missed its quorum the same way, instead of
/// failing the read (the 3-member k8s mix of `benches/compare` saw such reads fail under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waits_out_a_brief_pause_of_the_followers_as_etcd_does() {
    let etcd =
        read_through_follower_pause(Kind::Etcd35, "waiting for ReadIndex response took too long")
            .await;
    let tandem =
        read_through_follower_pause(Kind::Tandem, "timeout while confirming leadership").await;
    assert_eq!(etcd, "v", "etcd 3.5.1's behaviour, the reference");
    assert_eq!(tandem, etcd);
}

/// The longest window without an acknowledged write through a follower, around a SIGSTOP of
/// the leader; and whether every write was applied once (each key is put once, so a key at
/// version 2 would be a write applied twice).
async fn paused_leader_write_gap(kind: Kind) -> Duration {
    let cluster = Cluster::start(kind, 3, &[]).expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    let follower = (leader + 1) % 3;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Open-loop load, as an apiserver's: a new put every 20 ms whatever the earlier ones do.
    let writer = {
        let (url, acked, stop) = (cluster.members[follower].url(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client(&url).await;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut puts = Vec::new();
            for n in 0.. {
                tick.tick().await;
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (mut c, acked) = (c.clone(), acked.clone());
                puts.push(tokio::spawn(async move {
                    let key = format!("/paused/{n:06}");
                    let put = c.put(key.as_str(), "v", None);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), put).await {
                        acked.lock().expect("acked").push((key, Instant::now()));
                    }
                }));
            }
            for p in puts {
                p.await.expect("put task");
            }
        })
    };
    let count = || acked.lock().expect("acked").len();
    eventually("writes before the pause", || async { count() >= 40 }).await;
    let paused_at = Instant::now();
    signal(&cluster, leader, "STOP");
    let after = || {
        acked
            .lock()
            .expect("acked")
            .iter()
            .filter(|a| a.1 > paused_at)
            .count()
    };
    eventually("writes after the pause", || async { after() >= 40 }).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    signal(&cluster, leader, "CONT");
    let mut times: Vec<Instant> = acked.lock().expect("acked").iter().map(|a| a.1).collect();
    times.push(paused_at);
    let gap = longest_gap(times);
    let r = client(&cluster.members[follower].url())
        .await
        .get("/paused/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("list");
    let twice: Vec<_> = r.kvs().iter().filter(|kv| kv.version() != 1).collect();
    assert!(
        twice.is_empty(),
        "{}: writes applied twice: {twice:?}",
        kind.name()
    );
    let keys: BTreeSet<String> = r
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf8").to_string())
        .collect();
    let lost = acked
        .lock()
        .expect("acked")
        .iter()
        .filter(|a| !keys.contains(&a.0))
        .count();
    assert_eq!(lost, 0, "{}: acknowledged writes lost", kind.name());
    println!(
        "{}: leader SIGSTOPped: longest window without an acknowledged write through a \
         follower {gap:?}, {} writes, 0 applied twice, 0 lost",
        kind.name(),
        r.kvs().len()
    );
    gap
}

/// Regression (issue 9.4): writes forwarded to a SIGSTOPped leader hung until the forward
/// timeout (5 s + two election timeouts) and held up every proposal behind them, so the first
/// write through a follower came after 6.7–7.0 s (etcd 3.5.1: 2.2 s). The bound asserted is
/// that timeout's 5 s base, which the old code could not beat; the figures (median over
/// `TANDEM_FAILOVER_RUNS` runs, default 1; the acceptance ran 10) are printed beside etcd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_holds_up_writes_through_a_follower_only_until_the_election() {
    let runs: usize = std::env::var("TANDEM_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for kind in [Kind::Etcd35, Kind::Tandem] {
        let mut gaps = Vec::new();
        for _ in 0..runs {
            gaps.push(paused_leader_write_gap(kind).await);
        }
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        println!(
            "{}: median write gap over {runs} runs: {median:?} ({gaps:?})",
            kind.name()
        );
        assert!(
            median < Duration::from_secs(5),
            "{}: writes through a follower waited {median:?} for a paused leader",
            kind.name()
        );
    }
}

/// Rewrites, in a stopped member's keyspace file, every stored value holding `from` into the
/// same bytes with `to` (of equal length): a keyspace that silently differs from its peers'.
fn tamper(data_dir: &std::path::Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let db = redb::Database::open(data_dir.join("member/tandem.db")).expect("open tandem.db");
    let tx = db.begin_write().expect("write");
    {
        let mut table = tx
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("key"))
            .expect("key table");
        let hits: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .expect("iter")
            .map(|r| r.expect("row"))
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .filter(|(_, v)| v.windows(from.len()).any(|w| w == from))
            .collect();
        assert!(!hits.is_empty(), "the value is stored");
        for (k, v) in hits {
            let at = v
                .windows(from.len())
                .position(|w| w == from)
                .expect("found");
            let mut changed = v.clone();
            changed[at..at + to.len()].copy_from_slice(to);
            table
                .insert(k.as_slice(), changed.as_slice())
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

/// Issue 9.1: etcd's `--experimental-corrupt-check-time` (the leader compares HashKV with its
/// followers and raises CORRUPT for one that differs) and `--experimental-initial-corrupt-check`
/// (a member whose keyspace differs from its peers' refuses to start). Before, both flags were
/// unknown to tandem and a follower with a damaged keyspace served silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_keyspace_differs_is_found_by_the_corruption_checks() {
    let mut cluster = Cluster::start(Kind::Tandem, 3, &["--experimental-corrupt-check-time=1s"])
        .expect("cluster");
    let leader = cluster.wait_leader(WAIT).await.expect("leader");
    let leader_url = cluster.members[leader].url();
    client(&leader_url)
        .await
        .put("victim", "original-value", None)
        .await
        .expect("put");
    let f = (leader + 1) % 3;
    let f_url = cluster.members[f].url();
    eventually("the follower has the value", || {
        let url = f_url.clone();
        async move {
            let r = client(&url)
                .await
                .get("victim", Some(GetOptions::new().with_serializable()))
                .await;
            r.is_ok_and(|r| r.count() == 1)
        }
    })
    .await;
    let f_id = status_header(&f_url).await.member_id();
    cluster.members[f].stop("TERM").expect("stop the follower");
    tamper(
        &cluster.members[f].data_dir(),
        b"original-value",
        b"tampered-value",
    );
    cluster.members[f].restart().expect("restart");
    cluster.wait_healthy(f).expect("healthy");
    eventually("CORRUPT raised for the follower", || {
        let url = leader_url.clone();
        async move {
            let r = client(&url)
                .await
                .alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                )
                .await;
            r.is_ok_and(|r| {
                r.alarms()
                    .iter()
                    .any(|a| a.member_id() == f_id && a.alarm() == etcd_client::AlarmType::Corrupt)
            })
        }
    })
    .await;
    println!("the leader's periodic check raised CORRUPT for {f_id:x}");
    // As etcd's corrupt applier: every member now refuses mutations, and still serves reads.
    let other = cluster.members[(leader + 2) % 3].url();
    let err = client(&other)
        .await
        .put("victim", "after-the-alarm", None)
        .await
        .expect_err("a put under CORRUPT is refused");
    assert!(
        err.to_string().contains("etcdserver: corrupt cluster"),
        "{err}"
    );
    let r = client(&other)
        .await
        .get("victim", None)
        .await
        .expect("a read");
    assert_eq!(r.kvs()[0].value(), b"original-value");
    let member = &mut cluster.members[f];
    member.add_flag("--experimental-initial-corrupt-check");
    let refused = member
        .restart_refused(WAIT)
        .expect("restart with the initial check");
    let (status, log) = refused.expect("the member refuses to start");
    assert!(!status.success());
    assert!(
        log.contains("found data inconsistency with peers"),
        "{}",
        log.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    println!("with --experimental-initial-corrupt-check the member refuses to start");
}
