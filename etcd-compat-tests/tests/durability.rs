//! Durability on a real process: concurrent writers, SIGKILL at random moments (chosen by a
//! seeded generator, triggered by the number of acknowledged writes so nothing sleeps), restart
//! on the same data directory, and a check that every acknowledged write survived with its
//! revision and that revisions continue. Also: HashKV at a revision is unchanged by restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use etcd_compat_tests::*;
use rand::{Rng, SeedableRng};

const CYCLES: usize = 20;
const WRITERS: usize = 8;
const WAIT: Duration = Duration::from_secs(30);

type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

async fn writer(url: String, cycle: usize, id: usize, acked: Acked) {
    let Ok(mut c) = Client::connect([url], None).await else {
        return;
    };
    for seq in 0.. {
        let key = format!("dur/{cycle:02}/{id}/{seq:06}");
        match tokio::time::timeout(WAIT, c.put(key.clone(), key.clone(), None)).await {
            Ok(Ok(r)) => {
                let rev = r.header().expect("header").revision();
                acked.lock().expect("acked").insert(key, rev);
            }
            // The server was killed: this write may or may not have happened.
            _ => return,
        }
    }
}

/// The acknowledged writes (key → revision) under `prefix` that the server does not hold with
/// that revision.
async fn missing(
    c: &mut Client,
    prefix: &str,
    acked: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    let all = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("read back");
    let found: BTreeMap<String, i64> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().expect("utf8").to_string(), kv.mod_revision()))
        .collect();
    acked
        .iter()
        .filter(|(k, rev)| found.get(*k) != Some(*rev))
        .map(|(k, rev)| (k.clone(), *rev))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = Server::start(Kind::Tandem).expect("tandem");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a4d);
    let acked: Acked = Arc::default();
    let mut max_rev = 0i64;
    for cycle in 0..CYCLES {
        let before = acked.lock().expect("acked").len();
        let kill_after = before + rng.gen_range(20..400);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|id| tokio::spawn(writer(server.url(), cycle, id, acked.clone())))
            .collect();
        let a = acked.clone();
        tokio::task::spawn_blocking(move || {
            wait_until("acknowledged writes", WAIT, || {
                a.lock().expect("acked").len() >= kill_after
            })
        })
        .await
        .expect("join")
        .expect("writes were acknowledged");
        server.stop("KILL").expect("SIGKILL");
        for t in tasks {
            t.await.expect("writer task");
        }
        server.restart().expect("restart after SIGKILL");

        let snapshot = acked.lock().expect("acked").clone();
        let mut c = server.client().await.expect("connect");
        let lost = missing(&mut c, "dur/", &snapshot).await;
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} acknowledged writes lost or changed, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let top = snapshot.values().copied().max().unwrap_or(0);
        assert!(top >= max_rev, "acknowledged revisions went backwards");
        max_rev = top;
        let next = c
            .put("dur-probe", "x", None)
            .await
            .expect("write after restart");
        assert!(
            next.header().expect("header").revision() > top,
            "revision did not continue after restart"
        );
        println!(
            "cycle {cycle}: {} acknowledged so far, store revision {}",
            snapshot.len(),
            next.header().expect("header").revision()
        );
    }
    let total = acked.lock().expect("acked").len();
    println!("{CYCLES} SIGKILL cycles, {total} acknowledged writes, 0 lost");
}

async fn hash_at(c: &mut Client, rev: i64) -> (u32, i64) {
    // The header revision is the store revision, so equal pairs also mean no write was lost or replayed.
    let r = c.hash_kv(rev).await.expect("hashkv");
    (r.hash(), r.header().map_or(0, |h| h.revision()))
}

#[tokio::test(flavor = "multi_thread")]
async fn hashkv_is_unchanged_by_restarts() {
    let mut server = Server::start(Kind::Tandem).expect("tandem");
    let mut c = server.client().await.expect("connect");
    for i in 0..200 {
        c.put(format!("h/{}", i % 37), format!("v{i}"), None)
            .await
            .expect("put");
        if i % 13 == 0 {
            c.delete(format!("h/{}", i % 11), None)
                .await
                .expect("delete");
        }
    }
    let mid = store_revision(&mut c).await;
    c.compact(mid / 2, None).await.expect("compact");
    for i in 0..50 {
        c.put(format!("h/{}", i % 7), "after", None)
            .await
            .expect("put");
    }
    let revs = [mid / 2 + 1, mid, 0];
    let mut before = Vec::new();
    for r in revs {
        before.push(hash_at(&mut c, r).await);
    }
    for signal in ["TERM", "KILL"] {
        server.stop(signal).expect("stop");
        server.restart().expect("restart");
        let mut c = server.client().await.expect("connect");
        let mut after = Vec::new();
        for r in revs {
            after.push(hash_at(&mut c, r).await);
        }
        assert_eq!(before, after, "HashKV changed across a SIG{signal} restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_log_fsyncs() {
    // Group commit: while the log's fsync runs, concurrent writes queue and share the next one.
    // fsync is made the bottleneck (2 ms per fdatasync, injected by strace) so the test does not
    // depend on how fast this machine's disk is relative to its CPU.
    let strace = strace_injecting("fdatasync,fsync", "fdatasync,fsync:delay_enter=2000");
    let server = Server::start_wrapped(
        Kind::Tandem,
        &strace.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .expect("tandem under strace");
    let (commits0, entries0) = (
        metric(&server.url(), "tandem_raft_log_commits_total") as i64,
        metric(&server.url(), "tandem_raft_log_entries_total") as i64,
    );
    put_concurrently(&server.url(), 64, 64 * 20, |i| {
        (format!("gc/{i}"), b"v".to_vec())
    })
    .await;
    let commits = metric(&server.url(), "tandem_raft_log_commits_total") as i64 - commits0;
    let entries = metric(&server.url(), "tandem_raft_log_entries_total") as i64 - entries0;
    let puts = 64 * 20;
    println!("{puts} puts in {entries} log entries and {commits} durable log commits");
    assert!(
        commits >= 1 && entries >= 1,
        "the puts went through the log"
    );
    assert!(commits * 4 <= puts, "expected at least 4 puts per log fsync under 64 concurrent writers: {puts} puts, {commits} commits");
}

/// Regression (issue 9.5): a stopped member's data dir restarted with other client and peer
/// URLs derived a new member id, logged "ready", and every request and /health hung. etcd
/// 3.5.1 keeps its member id and serves; so must tandem.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_restarted_with_other_urls_keeps_its_id_and_serves() {
    for kind in [Kind::Etcd35, Kind::Tandem] {
        let mut server = Server::start(kind).expect("start");
        let mut c = server.client().await.expect("connect");
        c.put("moved", "v", None).await.expect("put");
        let before = c.status().await.expect("status");
        let id = before.header().expect("header").member_id();
        server.stop("TERM").expect("stop");
        server.client_port = free_port();
        server.peer_port = free_port();
        server
            .restart()
            .unwrap_or_else(|e| panic!("{} restarts on other URLs: {e:#}", kind.name()));
        let mut c = server.client().await.expect("connect");
        let got = c.get("moved", None).await.expect("get after the move");
        assert_eq!(got.kvs()[0].value(), b"v", "{}", kind.name());
        let after = c.status().await.expect("status");
        assert_eq!(
            after.header().expect("header").member_id(),
            id,
            "{} keeps its member id",
            kind.name()
        );
        c.put("moved", "w", None)
            .await
            .expect("a write after the move");
        println!(
            "{}: restarted on other URLs, member id {id:x} kept, serving",
            kind.name()
        );
    }
}

/// A data dir etcd made is refused, not taken for a new cluster: tandem reads none of etcd's
/// files, and serving an empty keyspace beside them would hide the user's data.
#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_data_dir_is_refused_not_served_empty() {
    let mut server = Server::start(Kind::Etcd35).expect("etcd");
    let mut c = server.client().await.expect("client");
    c.put("kept", "by etcd", None).await.expect("put");
    server.stop("TERM").expect("stop etcd");
    server.kind = Kind::Tandem;
    let (status, log) = server
        .restart_refused(WAIT)
        .expect("start tandem on etcd's data dir")
        .expect("tandem refuses the data dir instead of serving it");
    assert!(!status.success(), "exited with {status}");
    assert!(
        log.contains("refusing to start") && log.contains("holds an etcd data directory"),
        "the refusal says why:\n{log}"
    );
    assert!(
        server.data_dir().join("member/snap/db").exists(),
        "etcd's files are left as they were"
    );
}

/// A data dir a newer tandem wrote (a format version this build does not know, in any of its
/// files) is refused at start, naming the file and the version and saying how to move the
/// data; with the file as it was, the member starts and serves what it held.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_a_newer_format_is_refused_naming_the_file() {
    let mut server = Server::start(Kind::Tandem).expect("tandem");
    let mut c = server.client().await.expect("client");
    c.put("kept", "v", None).await.expect("put");
    drop(c);
    server.stop("TERM").expect("stop");
    let member = server.data_dir().join("member");
    let segment = std::fs::read_dir(member.join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a log segment");
    // A newer version in each file, at the place its format says (docs/durable-formats.md).
    let newer_identity = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).expect("identity");
        std::fs::write(p, text.replace("\"version\":1", "\"version\":2")).expect("write");
    };
    let newer_word_at_8 = |p: &std::path::Path| {
        let mut bytes = std::fs::read(p).expect("read");
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(p, bytes).expect("write");
    };
    let newer_keyspace = |p: &std::path::Path| {
        let db = redb::Database::open(p).expect("open the keyspace");
        let w = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
            let mut t = w.open_table(meta).expect("meta");
            t.insert("format", 2u64.to_be_bytes().as_slice())
                .expect("insert");
        }
        w.commit().expect("commit");
    };
    type MakeNewer<'a> = &'a dyn Fn(&std::path::Path);
    let cases: [(&str, std::path::PathBuf, MakeNewer<'_>); 4] = [
        (
            "identity format 2",
            member.join("identity"),
            &newer_identity,
        ),
        ("raft log format 9", segment, &newer_word_at_8),
        (
            "raft log state format 9",
            member.join("wal").join("state"),
            &newer_word_at_8,
        ),
        ("has layout 2", member.join("tandem.db"), &newer_keyspace),
    ];
    for (what, file, make_newer) in cases {
        let kept = std::fs::read(&file).expect("the file as it was");
        make_newer(&file);
        let (status, log) = server
            .restart_refused(WAIT)
            .expect("start on the newer file")
            .unwrap_or_else(|| panic!("tandem refuses a data dir with {what}"));
        assert!(!status.success(), "exited with {status}");
        for said in [
            "refusing to start",
            what,
            &file.display().to_string(),
            "a newer tandem wrote it",
            "tandem-ctl snapshot restore",
        ] {
            assert!(
                log.contains(said),
                "the refusal for {what} says {said:?}:\n{log}"
            );
        }
        std::fs::write(&file, kept).expect("the file as it was");
    }
    server.restart().expect("restart on the data dir as it was");
    let mut c = server.client().await.expect("client");
    let got = c.get("kept", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v", "the data is all there");
}

/// A keyspace flush that fails (fdatasync EIO on tandem.db, from strace attached to the running
/// member) stops the member, as a failed raft log flush does: no write that began after the
/// failure is acknowledged, every later write fails with `server stopped`, and after a restart
/// every acknowledged write is there with its revision. Writes come every 60 ms; the failing
/// flush is an applied batch's or an idle commit's (due 100 ms after the last durable one) as
/// timing has it: `state_machine::tests::a_failed_idle_commit_ends_them_with_its_failure`
/// covers the idle path alone (a failed idle commit was logged every 100 ms and the member went
/// on until a write met the failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_keyspace_flush_stops_the_member() {
    const ROUNDS: usize = 6;
    let mut server = Server::start(Kind::Tandem).expect("tandem");
    let traces = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let (mut idle, mut applied) = (0, 0);
    for round in 0..ROUNDS {
        let mut c = server.client().await.expect("connect");
        // Every other round starts from writes made just before the fault (then the first
        // failed flush is an applied batch's, as a rule; without them, often an idle commit's).
        for i in 0..if round % 2 == 0 { 20 } else { 0 } {
            let key = format!("flush/{round}/before/{i:02}");
            let r = c.put(key.clone(), "v", None).await.expect("put before");
            acked.insert(key, r.header().expect("header").revision());
        }
        let db = server.data_dir().join("member/tandem.db");
        let strace = Strace::attach(
            server.pid(),
            None,
            "fdatasync",
            "fdatasync:error=EIO",
            Some(&db),
            &traces.path().join(format!("strace-{round}")),
        )
        .expect("strace attached");
        let idle_before = server
            .log()
            .matches("making the keyspace durable failed")
            .count();
        let mut tick = tokio::time::interval(Duration::from_millis(60));
        let mut began_then_acked = Vec::new();
        let mut refused = 0;
        for seq in 0.. {
            assert!(
                seq < 500,
                "round {round}: the member never stopped taking writes"
            );
            tick.tick().await;
            let key = format!("flush/{round}/{seq:04}");
            let began = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs_f64();
            match tokio::time::timeout(WAIT, c.put(key.clone(), "v", None)).await {
                Ok(Ok(r)) => {
                    acked.insert(key.clone(), r.header().expect("header").revision());
                    began_then_acked.push((began, key));
                }
                Ok(Err(e)) => {
                    assert!(
                        e.to_string().contains("etcdserver: server stopped"),
                        "round {round}: a write after the failed flush: {e}"
                    );
                    refused += 1;
                    if refused == 5 {
                        break;
                    }
                }
                Err(_) => panic!("round {round}: a write did not finish in {WAIT:?}"),
            }
        }
        server.stop("KILL").expect("SIGKILL");
        let failed_at = strace.finish().expect("strace injected a failure");
        let after: Vec<_> = began_then_acked
            .iter()
            .filter(|(began, _)| *began > failed_at)
            .collect();
        assert!(
            after.is_empty(),
            "round {round}: acknowledged though begun after the failed flush: {after:?}"
        );
        if server
            .log()
            .matches("making the keyspace durable failed")
            .count()
            > idle_before
        {
            idle += 1;
        } else {
            applied += 1;
        }

        server.restart().expect("restart after the failed flush");
        let mut c = server.client().await.expect("connect");
        let lost = missing(&mut c, "flush/", &acked).await;
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost: {lost:?}"
        );
    }
    println!(
        "{ROUNDS} failed keyspace flushes ({idle} in an idle commit, {applied} in an applied \
         batch), {} acknowledged writes, 0 acknowledged after the failure, 0 lost",
        acked.len()
    );
}
