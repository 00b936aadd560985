//! The backend quota (NOSPACE), lease expiry, configuration through ETCD_* variables — compared
//! with real etcd — and tandem-only checks: watchers far behind catch up from the store, and a
//! restart never shortens a lease.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions, WatchOptions};
use etcd_compat_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// Fills the store with 16 KiB values until a put is refused; returns the refusal and how many
/// values were accepted.
async fn fill_until_refused(server: &Server) -> (String, usize) {
    let mut c = server.client().await.expect("connect");
    let value = vec![b'x'; 16 * 1024];
    for i in 0..4_000 {
        if let Err(e) = c.put(format!("fill/{i:05}"), value.clone(), None).await {
            let refusal = match e {
                etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
                other => other.to_string(),
            };
            return (refusal, i);
        }
    }
    panic!(
        "{}: 64 MiB written without reaching a 16 MiB quota",
        server.kind.name()
    );
}

fn nospace_scenario(t: &mut Transcript, s: &Server) {
    let refusal = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fill_until_refused(s));
    t.note(format!("first refused put: {}", refusal.0));
    println!(
        "{}: {} values of 16 KiB fit under a 16 MiB quota",
        s.kind.name(),
        refusal.1
    );
    t.run(&["alarm", "list"], None);
    t.run(&["put", "small", "v"], None);
    t.run(&["get", "fill/00000", "--keys-only"], None);
    // A read-only txn and a txn that only deletes (issue 9.6: tandem served the first).
    t.run(&["txn"], Some("\n\nget small\n\n\n"));
    t.run(&["txn"], Some("\n\ndel small\n\n\n"));
    t.run(&["del", "small"], None);
    t.run(&["endpoint", "health"], None);
    // How many 16 KiB values fit under the quota depends on the storage engine.
    let del = t.ctl.run(&["del", "fill/", "--prefix"], None);
    t.note(format!(
        "del fill/ --prefix: exit {}, deleted some {}",
        del.code,
        del.stdout.trim().parse::<u64>().is_ok_and(|n| n > 0)
    ));
    let rev = current_revision(&t.ctl).to_string();
    let compacted = t.ctl.run(&["compaction", &rev], None);
    t.note(format!(
        "compaction at the current revision: exit {}",
        compacted.code
    ));
    t.run(&["defrag"], None);
    t.run(&["alarm", "disarm"], None);
    t.run(&["alarm", "list"], None);
    t.run(&["put", "small", "v"], None);
    t.run(&["get", "small"], None);
}

#[test]
fn nospace_alarm_matches_etcd() {
    compare_with_etcd(
        CtlVersion::V35,
        &["--quota-backend-bytes=16777216"],
        nospace_scenario,
    );
}

fn lease_expiry_scenario(t: &mut Transcript, _s: &Server) {
    let out = t.run(&["lease", "grant", "2"], None);
    let id = lease_id(&out.stdout);
    t.run(&["put", "exp/a", "1", &format!("--lease={id}")], None);
    t.run(&["put", "exp/b", "2", &format!("--lease={id}")], None);
    let rev = format!("--rev={}", current_revision(&t.ctl) + 1);
    let w = Background::start(
        &t.ctl,
        &["watch", "exp/", "--prefix", "--prev-kv", &rev],
        None,
    );
    // Two DELETE events, each with its previous key and value: 2 × 5 lines.
    w.wait_lines(10, WAIT).expect("expiry deletes");
    t.note(format!("watch after expiry:\n{}", normalize(&w.finish())));
    t.run(&["get", "exp/", "--prefix", "-w", "json"], None);
    t.run(&["lease", "timetolive", &id], None);
    t.run(&["lease", "list"], None);
}

#[test]
fn lease_expiry_matches_etcd() {
    for v in [CtlVersion::V35, CtlVersion::V34] {
        compare_with_etcd(v, &[], lease_expiry_scenario);
    }
}

#[test]
fn configuration_through_etcd_environment_variables_matches_etcd() {
    let etcd = Server::start_env(Kind::Etcd35).expect("etcd from ETCD_* variables");
    let tandem = Server::start_env(Kind::Tandem).expect("tandem from ETCD_* variables");
    let a = Ctl::new(CtlVersion::V35, &etcd).run(&["member", "list", "-w", "json"], None);
    let b = Ctl::new(CtlVersion::V35, &tandem).run(&["member", "list", "-w", "json"], None);
    assert_eq!(normalize(&a.stdout), normalize(&b.stdout));
    assert!(b.stdout.contains("\"name\":\"s1\""), "{}", b.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_far_behind_catches_up_from_the_store() {
    // More revisions than the watch hub keeps in memory (16,384), so the watcher starts from disk.
    const WRITES: i64 = 20_000;
    let server = Server::start(Kind::Tandem).expect("tandem");
    put_concurrently(&server.url(), 16, WRITES as usize, |i| {
        (format!("far/{}", i % 500), i.to_string().into_bytes())
    })
    .await;
    let mut c = server.client().await.expect("connect");
    let (_w, mut stream) = c
        .watch(
            "far/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(1)
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch")
        .split();
    let mut last = 0i64;
    let mut count = 0i64;
    let mut keys_seen = BTreeSet::new();
    while count < WRITES {
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("response");
        for e in r.events() {
            let kv = e.kv().expect("kv");
            assert!(
                kv.mod_revision() > last,
                "revision order broken: {} after {last}",
                kv.mod_revision()
            );
            // A put to a key seen before must carry its previous value.
            if !keys_seen.insert(kv.key().to_vec()) {
                assert!(
                    e.prev_kv().is_some(),
                    "missing prev_kv at revision {}",
                    kv.mod_revision()
                );
            }
            last = kv.mod_revision();
            count += 1;
        }
    }
    assert_eq!(last, WRITES + 1, "every revision delivered once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_never_shortens_a_lease() {
    let mut server = Server::start(Kind::Tandem).expect("tandem");
    let mut c = server.client().await.expect("connect");
    let lease = c.lease_grant(60, None).await.expect("grant").id();
    c.put("held", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    let before = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    server.stop("KILL").expect("kill");
    server.restart().expect("restart");
    let mut c = server.client().await.expect("connect");
    let after = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!(
        after >= before,
        "remaining TTL shrank across a restart: {before} → {after}"
    );
    let held = c
        .get("held", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .count();
    assert_eq!(held, 1, "the key outlived the restart with its lease");
}

/// Raises CORRUPT for `s`'s member through the Alarm API (as a corruption check does).
async fn raise_corrupt(s: &Server) {
    let mut c = s.client().await.expect("connect");
    let member = s.member_id().await.expect("member id");
    let mut opts = etcd_client::AlarmOptions::new();
    opts.with_member(member);
    c.alarm(
        etcd_client::AlarmAction::Activate,
        etcd_client::AlarmType::Corrupt,
        Some(opts),
    )
    .await
    .expect("activate CORRUPT");
}

fn corrupt_scenario(t: &mut Transcript, s: &Server) {
    t.run(&["put", "k", "v0"], None);
    let grant = t.ctl.run(&["lease", "grant", "600"], None);
    let lease = lease_id(&grant.stdout);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(raise_corrupt(s));
    t.run(&["alarm", "list"], None);
    t.run(&["put", "k", "v1"], None);
    t.run(&["get", "k"], None);
    t.run(&["get", "k", "--consistency=s"], None);
    t.run(&["txn"], Some("\n\nget k\n\n\n"));
    t.run(&["txn"], Some("\n\nput k v2\n\n\n"));
    t.run(&["del", "k"], None);
    t.run(&["lease", "grant", "60"], None);
    t.run(&["lease", "revoke", &lease], None);
    t.run(&["lease", "keep-alive", "--once", &lease], None);
    let rev = current_revision(&t.ctl).to_string();
    t.run(&["compaction", &rev], None);
    t.run(&["endpoint", "health"], None);
    t.run(&["alarm", "disarm"], None);
    t.run(&["alarm", "list"], None);
    t.run(&["put", "k", "v3"], None);
    t.run(&["get", "k"], None);
}

/// The CORRUPT alarm, as etcd's corrupt applier: while raised, a mutation is refused with
/// `etcdserver: corrupt cluster` (issue 9.1: tandem raised the alarm and went on serving).
#[test]
fn corrupt_alarm_matches_etcd() {
    compare_with_etcd(CtlVersion::V35, &[], corrupt_scenario);
}
