//! Snapshots in etcd's format, both ways: `etcdctl snapshot save` against tandem writes a file
//! that etcd 3.5.1's `etcdutl snapshot status` reads and `etcdutl snapshot restore` turns into a
//! data dir etcd 3.5.1 serves with the same keys, revisions, leases, compaction point and users
//! (HashKV equal); an etcd 3.5.1 snapshot restored by `tandem-ctl snapshot restore` (etcdutl's
//! flags) is served by tandem the same way; both ways on one member and on three.

use std::process::Command;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use etcd_compat_tests::{
    etcdutl_bin, run_command, tandem_bin, Cluster, Ctl, CtlVersion, Kind, Server,
};

/// A kube-apiserver-shaped history: objects created, updated and deleted under `/registry/`,
/// a txn as the apiserver writes them, keys on a lease (events), a compaction, more writes
/// after it, and users and roles (authentication left off).
async fn write_history(c: &mut Client) -> (i64, i64) {
    for i in 0..40 {
        let key = format!("/registry/pods/default/pod-{i}");
        c.put(key, format!("{{\"spec\":{i}}}"), None)
            .await
            .expect("put");
    }
    for i in 0..10 {
        let key = format!("/registry/pods/default/pod-{i}");
        c.put(key, format!("{{\"spec\":{i},\"v\":2}}"), None)
            .await
            .expect("update");
    }
    for i in 30..35 {
        c.delete(format!("/registry/pods/default/pod-{i}"), None)
            .await
            .expect("delete");
    }
    let lease = c.lease_grant(3600, None).await.expect("grant").id();
    for i in 0..3 {
        let opts = PutOptions::new().with_lease(lease);
        c.put(
            format!("/registry/events/default/e-{i}"),
            "event",
            Some(opts),
        )
        .await
        .expect("put on a lease");
    }
    let key = "/registry/configmaps/kube-system/cm";
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, "created", None)]);
    c.txn(txn).await.expect("txn");
    let compact_at = c
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision()
        - 5;
    c.compact(compact_at, None).await.expect("compact");
    for i in 0..5 {
        c.put(
            format!("/registry/leases/kube-node-lease/n{i}"),
            "renew",
            None,
        )
        .await
        .expect("put after the compaction");
    }
    c.user_add("alice", "secret", None).await.expect("user add");
    c.role_add("reader").await.expect("role add");
    c.role_grant_permission(
        "reader",
        etcd_client::Permission::read("/registry/").with_prefix(),
    )
    .await
    .expect("grant permission");
    c.user_grant_role("alice", "reader")
        .await
        .expect("grant role");
    let rev = c
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    (rev, compact_at)
}

/// What a client sees of a keyspace: every key with its revisions, each lease with its granted
/// TTL and keys, the users and roles, what a read below the compaction answers, and HashKV.
async fn view(c: &mut Client, compacted: i64) -> Vec<String> {
    let mut out = Vec::new();
    let all = c
        .get("", Some(GetOptions::new().with_from_key()))
        .await
        .expect("range");
    out.push(format!("revision {}", all.header().expect("h").revision()));
    for kv in all.kvs() {
        out.push(format!(
            "{} = {} create {} mod {} version {} lease {:x}",
            kv.key_str().unwrap_or("?"),
            kv.value_str().unwrap_or("?"),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ));
    }
    let mut leases: Vec<i64> = c
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    leases.sort();
    for id in leases {
        let ttl = c
            .lease_time_to_live(
                id,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .expect("time to live");
        let mut keys: Vec<String> = ttl
            .keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        out.push(format!(
            "lease {id:x} granted {} keys {keys:?}",
            ttl.granted_ttl()
        ));
    }
    let below = c
        .get(
            "/registry/pods/default/pod-0",
            Some(GetOptions::new().with_revision(compacted - 1)),
        )
        .await
        .map(|_| "served".to_string())
        .unwrap_or_else(|e| e.to_string());
    out.push(format!("read below the compaction: {below}"));
    let users = c.user_list().await.expect("users");
    out.push(format!("users {:?}", users.users()));
    let role = c.role_get("reader").await.expect("role");
    for p in role.permissions() {
        out.push(format!(
            "reader may {:?} [{:?}, {:?})",
            p.get_type(),
            String::from_utf8_lossy(p.key()),
            String::from_utf8_lossy(p.range_end())
        ));
    }
    let hash = c.hash_kv(0).await.expect("hashkv");
    out.push(format!(
        "hashkv {} compact revision {}",
        hash.hash(),
        hash.compact_version()
    ));
    out
}

/// `etcdctl snapshot save` (3.5) against `server`: the file's path.
fn save_snapshot(server: &Server) -> String {
    let ctl = Ctl::new(CtlVersion::V35, server);
    let out = ctl.run(&["snapshot", "save", "snap.db"], None);
    assert_eq!(out.code, 0, "snapshot save: {}", out.stderr);
    ctl.cwd
        .join("snap.db")
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// `etcdutl snapshot restore` (3.5.1) of `snap` into `dir`, for member `name` of
/// `initial_cluster` advertising `peer`.
fn restore_with_etcdutl(
    snap: &str,
    dir: &std::path::Path,
    name: &str,
    initial_cluster: &str,
    peer: &str,
) {
    etcdutl(&[
        "snapshot",
        "restore",
        snap,
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-advertise-peer-urls",
        peer,
    ]);
}

/// Every member of `cluster` serves what `want` shows.
async fn every_member_serves(cluster: &Cluster, want: &[String], compacted: i64, what: &str) {
    for m in &cluster.members {
        let mut c = m.client().await.expect("client");
        let got = view(&mut c, compacted).await;
        assert_eq!(want, got.as_slice(), "{what} vs member {}", m.name());
    }
}

fn etcdutl(args: &[&str]) -> String {
    let mut c = Command::new(etcdutl_bin());
    c.args(args);
    let out = run_command(c, None);
    assert_eq!(out.code, 0, "etcdutl {args:?}: {}", out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tandem_snapshot_restores_into_etcd_with_identical_data() {
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let mut c = tandem.client().await.expect("client");
    let (rev, compacted) = write_history(&mut c).await;
    let ours = view(&mut c, compacted).await;

    let snap = save_snapshot(&tandem);
    let snap = snap.as_str();

    let status = etcdutl(&["snapshot", "status", snap, "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status["revision"].as_i64(), Some(rev), "status: {status}");
    assert!(
        status["totalKey"].as_i64().unwrap_or(0) > 50,
        "status: {status}"
    );

    let peer = "http://127.0.0.1:2380";
    let etcd = Server::start_prepared(Kind::Etcd35, |dir| {
        restore_with_etcdutl(snap, dir, "s1", &format!("s1={peer}"), peer);
        Ok(())
    })
    .expect("etcd 3.5.1 on the restored data dir");
    let mut e = etcd.client().await.expect("etcd client");
    let theirs = view(&mut e, compacted).await;
    assert_eq!(
        ours, theirs,
        "tandem before the snapshot vs etcd restored from it"
    );
}

fn tandem_ctl(args: &[&str]) -> etcd_compat_tests::CtlOutput {
    let mut c = Command::new(tandem_bin().with_file_name("tandem-ctl"));
    c.args(args);
    run_command(c, None)
}

/// `tandem-ctl snapshot restore` with etcdutl's flags, for member `name` of `initial_cluster`.
fn restore_with_tandem_ctl(snap: &str, dir: &std::path::Path, name: &str, initial_cluster: &str) {
    let peer = initial_cluster
        .split(',')
        .find_map(|e| e.strip_prefix(&format!("{name}=")))
        .expect("the member in --initial-cluster");
    let dir = dir.to_str().expect("utf-8 path");
    let out = tandem_ctl(&[
        "snapshot",
        "restore",
        snap,
        "--data-dir",
        dir,
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        "restored",
        "--initial-advertise-peer-urls",
        peer,
    ]);
    assert_eq!(out.code, 0, "tandem-ctl snapshot restore: {}", out.stderr);
}

/// Writes the history on etcd 3.5.1 and saves a snapshot of it: the snapshot's path, what a
/// client saw before it, and the compaction revision.
async fn etcd_snapshot() -> (Server, String, Vec<String>, i64) {
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let mut c = etcd.client().await.expect("client");
    let (_, compacted) = write_history(&mut c).await;
    let theirs = view(&mut c, compacted).await;
    let snap = save_snapshot(&etcd);
    (etcd, snap, theirs, compacted)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_snapshot_restores_into_tandem_with_identical_data() {
    let (_etcd, snap, theirs, compacted) = etcd_snapshot().await;
    let tandem = Server::start_prepared(Kind::Tandem, |dir| {
        restore_with_tandem_ctl(&snap, dir, "s1", "s1=http://127.0.0.1:2380");
        Ok(())
    })
    .expect("tandem on the restored data dir");
    let mut c = tandem.client().await.expect("client");
    let ours = view(&mut c, compacted).await;
    assert_eq!(
        theirs, ours,
        "etcd before the snapshot vs tandem restored from it"
    );
    // The restored member takes writes at the next revision.
    let before = c
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    let put = c
        .put("/registry/after", "restore", None)
        .await
        .expect("put");
    assert_eq!(put.header().expect("h").revision(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_snapshot_restores_into_three_tandem_members() {
    let (_etcd, snap, theirs, compacted) = etcd_snapshot().await;
    // The cluster's own flags name the members m1..m3 (their URLs are chosen at start).
    let initial = "m1=http://127.0.0.1:2381,m2=http://127.0.0.1:2382,m3=http://127.0.0.1:2383";
    let cluster = Cluster::start_prepared(Kind::Tandem, 3, &[], None, &mut |i, dir| {
        restore_with_tandem_ctl(&snap, dir, &format!("m{}", i + 1), initial);
        Ok(())
    })
    .expect("three tandem members on restored data dirs");
    every_member_serves(&cluster, &theirs, compacted, "etcd before the snapshot").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_tandem_snapshot_restores_into_three_etcd_members() {
    let tandem = Cluster::start(Kind::Tandem, 3, &[]).expect("tandem cluster");
    let leader = tandem
        .wait_leader(std::time::Duration::from_secs(30))
        .await
        .expect("a leader");
    let mut c = tandem.members[leader].client().await.expect("client");
    let (_, compacted) = write_history(&mut c).await;
    let ours = view(&mut c, compacted).await;
    // Taken from a follower: every member's keyspace is the same.
    let snap = save_snapshot(&tandem.members[(leader + 1) % 3]);
    let etcd = Cluster::start_restored(Kind::Etcd35, 3, &[], &mut |m| {
        let initial = m.initial_cluster().expect("a member of a cluster");
        restore_with_etcdutl(&snap, &m.data_dir(), m.name(), initial, &m.peer_url());
        Ok(())
    })
    .expect("three etcd members on restored data dirs");
    every_member_serves(&etcd, &ours, compacted, "tandem before the snapshot").await;
}

/// The short form of `scripts/snapshot-rss` (1 GiB there): a snapshot streams from disk, so
/// taking one raises the server's peak resident memory by far less than the keyspace's size.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_is_not_a_copy_in_memory() {
    const VALUES: usize = 1536;
    const VALUE_BYTES: usize = 64 << 10; // 96 MiB in all
    const GROWTH_MAX_KIB: u64 = 64 << 10;
    let tandem =
        Server::start_with(Kind::Tandem, &["--quota-backend-bytes", "1073741824"]).expect("tandem");
    etcd_compat_tests::put_concurrently(&tandem.url(), 8, VALUES, |i| {
        (
            format!("/registry/big/{i:05}"),
            vec![(i % 251) as u8; VALUE_BYTES],
        )
    })
    .await;
    let status = format!("/proc/{}/status", tandem.pid());
    let kib = |field: &str| -> u64 {
        let s = std::fs::read_to_string(&status).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a memory figure")
    };
    let before = kib("VmRSS:");
    // Resets the peak (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{}/clear_refs", tandem.pid()), "5").expect("clear_refs");
    let snap = save_snapshot(&tandem);
    let growth = kib("VmHWM:").saturating_sub(before);
    let file = std::fs::metadata(snap).expect("snapshot").len();
    assert!(
        file > (VALUES * VALUE_BYTES) as u64,
        "the snapshot holds every value"
    );
    println!(
        "a {} MiB snapshot raised the peak RSS by {} MiB",
        file >> 20,
        growth >> 10
    );
    assert!(
        growth < GROWTH_MAX_KIB,
        "taking a {} MiB snapshot raised the peak RSS by {} MiB",
        file >> 20,
        growth >> 10
    );
}

#[test]
fn restore_refuses_what_etcdutl_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap.db");
    std::fs::write(&snap, vec![0u8; 4096]).expect("write");
    let snap = snap.to_str().expect("utf-8");
    let existing = dir.path().to_str().expect("utf-8");
    let cases: [(&[&str], &str); 3] = [
        (&["--data-dir", existing], "exists"),
        (
            &["--data-dir", "/nonexistent/x", "--name", "other"],
            "couldn't find local name \"other\" in the initial cluster configuration",
        ),
        (
            &["--data-dir", "/nonexistent/x"],
            "snapshot missing hash but --skip-hash-check=false",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["snapshot", "restore", snap];
        args.extend_from_slice(flags);
        let out = tandem_ctl(&args);
        assert_ne!(out.code, 0, "{flags:?} was accepted");
        assert!(out.stderr.contains(want), "{flags:?}: {}", out.stderr);
    }
}

/// The live cut-over docs/migration.md describes: `etcdctl make-mirror` from etcd 3.5.1 into
/// tandem copies what etcd holds, then follows etcd's changes as they happen.
#[tokio::test(flavor = "multi_thread")]
async fn make_mirror_from_etcd_follows_into_tandem() {
    use etcd_compat_tests::{wait_until_async, Background};
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let mut e = etcd.client().await.expect("etcd client");
    for i in 0..20 {
        e.put(format!("/registry/pods/p{i}"), "before", None)
            .await
            .expect("put");
    }
    let mirror = Background::start(
        &Ctl::new(CtlVersion::V35, &etcd),
        &["make-mirror", &tandem.endpoint()],
        None,
    );
    let t = tandem.client().await.expect("tandem client");
    // A condition: `prefix` holds `want` keys on tandem.
    let count = |prefix: &'static str, want: i64| {
        let t = t.clone();
        move || {
            let mut t = t.clone();
            async move {
                let opts = GetOptions::new().with_prefix().with_count_only();
                let got = t.get(prefix, Some(opts)).await;
                got.is_ok_and(|r| r.count() == want)
            }
        }
    };
    let wait = std::time::Duration::from_secs(30);
    wait_until_async("the copy", wait, count("/registry/pods/", 20))
        .await
        .expect("make-mirror copies what etcd holds");
    for i in 0..10 {
        e.put(format!("/registry/events/e{i}"), "after", None)
            .await
            .expect("put");
    }
    e.delete("/registry/pods/p0", None).await.expect("delete");
    wait_until_async("the changes", wait, count("/registry/events/", 10))
        .await
        .expect("make-mirror follows etcd's writes");
    wait_until_async("the delete", wait, count("/registry/pods/", 19))
        .await
        .expect("make-mirror follows etcd's deletes");
    drop(mirror);
}

/// A member that starts on a large keyspace does not copy it into memory (openraft asks for the
/// current snapshot at start-up; building one copied the whole keyspace: ~600 MiB of memory
/// and 2.4 s for a 700 MB keyspace, held by the allocator afterwards).
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_does_not_copy_the_keyspace_into_memory() {
    const VALUES: usize = 1536;
    const VALUE_BYTES: usize = 64 << 10; // 96 MiB in all
                                         // 67 MiB measured (debug build); 227 MiB when the start built a snapshot in memory.
    const PEAK_MAX_MIB: u64 = 128;
    let mut tandem =
        Server::start_with(Kind::Tandem, &["--quota-backend-bytes", "1073741824"]).expect("tandem");
    etcd_compat_tests::put_concurrently(&tandem.url(), 8, VALUES, |i| {
        (
            format!("/registry/big/{i:05}"),
            vec![(i % 251) as u8; VALUE_BYTES],
        )
    })
    .await;
    tandem.stop("TERM").expect("stop");
    tandem.restart().expect("restart");
    let mut c = tandem.client().await.expect("client");
    let last = c
        .get(format!("/registry/big/{:05}", VALUES - 1), None)
        .await
        .expect("get");
    assert_eq!(
        last.kvs()[0].value().len(),
        VALUE_BYTES,
        "the data is there"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", tandem.pid())).expect("status");
    let peak_mib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        >> 10;
    println!(
        "peak RSS after a restart on {} MiB of values: {peak_mib} MiB",
        (VALUES * VALUE_BYTES) >> 20
    );
    assert!(
        peak_mib < PEAK_MAX_MIB,
        "a restart on {} MiB of values peaked at {peak_mib} MiB",
        (VALUES * VALUE_BYTES) >> 20
    );
}
