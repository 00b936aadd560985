//! etcdctl 3.4 and 3.5 against tandem and against the real etcd of the same version: every
//! scenario runs on a fresh server of each kind, and the normalized transcripts must be equal.

use etcd_compat_tests::*;

const BOTH: [CtlVersion; 2] = [CtlVersion::V35, CtlVersion::V34];

fn kv_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["put", "foo", "bar"], None);
    t.run(&["put", "foo", "baz", "--prev-kv"], None);
    t.run(&["put", "foo2", "v2", "-w", "json"], None);
    t.run(&["put", "foo3", "v3"], None);
    t.run(&["put", "zed", "last"], None);
    t.run(&["get", "foo"], None);
    t.run(&["get", "foo", "-w", "json"], None);
    t.run(&["get", "foo", "--prefix"], None);
    t.run(&["get", "foo", "--prefix", "--keys-only"], None);
    t.run(&["get", "foo", "--prefix", "--print-value-only"], None);
    t.run(&["get", "foo", "--prefix", "--limit=2", "-w", "json"], None);
    t.run(
        &["get", "foo", "--prefix", "--count-only", "-w", "json"],
        None,
    );
    t.run(&["get", "foo", "--rev=2", "-w", "json"], None);
    t.run(
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ],
        None,
    );
    t.run(
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=VALUE",
            "--order=ASCEND",
        ],
        None,
    );
    t.run(&["get", "foo", "--prefix", "--sort-by=VERSION"], None);
    t.run(
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=CREATE",
            "--order=DESCEND",
            "--limit=2",
        ],
        None,
    );
    t.run(&["get", "foo2", "--from-key"], None);
    t.run(&["get", "foo", "zed"], None);
    t.run(&["get", "foo", "--consistency=s"], None);
    t.run(&["get", "nothing", "-w", "json"], None);
    t.run(&["get", "", "--prefix", "--keys-only"], None);
    t.run(&["put", "foo", "--ignore-value"], None);
    t.run(&["get", "foo", "-w", "json"], None);
    t.run(&["put", "missing", "--ignore-value"], None);
    t.run(&["put", "missing", "--ignore-lease"], None);
    t.run(&["put", "foo", "x", "--ignore-value"], None);
    t.run(&["del", "foo3"], None);
    t.run(&["del", "foo", "--prefix", "--prev-kv"], None);
    t.run(&["del", "nothing"], None);
    t.run(&["put", "a", "1"], None);
    t.run(&["put", "b", "2"], None);
    t.run(&["del", "a", "--from-key", "-w", "json"], None);
    t.run(&["get", "", "--prefix", "-w", "json"], None);
}

#[test]
fn kv_put_get_del_match_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], kv_scenario);
    }
}

fn txn_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["put", "k1", "v1"], None);
    t.run(&["put", "k2", "v2"], None);
    let success =
        "value(\"k1\") = \"v1\"\nmod(\"k2\") > \"0\"\n\nput k3 v3\nget k1\ndel k2\n\nput k4 v4\n\n";
    t.run(&["txn", "-w", "json"], Some(success));
    let failure = "version(\"k1\") > \"5\"\n\nput k5 v5\n\nget k3\nput k6 v6\n\n";
    t.run(&["txn"], Some(failure));
    t.run(
        &["txn", "--interactive"],
        Some("create(\"k3\") = \"4\"\n\nput k7 v7\n\n\n"),
    );
    t.run(
        &["txn", "--interactive", "-w", "json"],
        Some("mod(\"absent\") = \"0\"\nvalue(\"absent\") = \"\"\n\nput x y\n\nput z w\n\n"),
    );
    t.run(&["txn"], Some("\n\nput same a\nput same b\n\n\n"));
    t.run(&["txn"], Some("\n\nput k1 a\ndel k1\n\n\n"));
    t.run(&["get", "", "--prefix", "-w", "json"], None);
}

#[test]
fn txn_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], txn_scenario);
    }
}

fn compaction_scenario(t: &mut Transcript, _s: &Server) {
    for i in 0..6 {
        t.run(&["put", "k", &format!("v{i}")], None);
    }
    t.run(&["put", "other", "x"], None);
    t.run(&["del", "other"], None);
    t.run(&["get", "k", "--rev=3"], None);
    t.run(&["compaction", "5"], None);
    t.run(&["get", "k", "--rev=3"], None);
    t.run(&["get", "k", "--rev=5", "-w", "json"], None);
    t.run(&["get", "k", "--rev=6", "-w", "json"], None);
    t.run(&["compaction", "5"], None);
    t.run(&["compaction", "4"], None);
    t.run(&["compaction", "100"], None);
    t.run(&["get", "k", "--rev=100"], None);
    t.run(&["compaction", "--physical", "9"], None);
    t.run(&["get", "", "--prefix", "-w", "json"], None);
    t.run(&["endpoint", "hashkv", "-w", "json"], None);
}

#[test]
fn compaction_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], compaction_scenario);
    }
}

fn lease_scenario(t: &mut Transcript, _s: &Server) {
    let out = t.run(&["lease", "grant", "60"], None);
    let id = lease_id(&out.stdout);
    t.run(&["put", "leased", "v", &format!("--lease={id}")], None);
    t.run(&["put", "leased2", "v", &format!("--lease={id}")], None);
    t.run(&["get", "leased", "-w", "json"], None);
    t.run(&["lease", "timetolive", &id], None);
    t.run(&["lease", "timetolive", &id, "--keys"], None);
    t.run(&["lease", "list"], None);
    t.run(&["lease", "keep-alive", "--once", &id], None);
    t.run(&["put", "leased", "--ignore-lease", "v2"], None);
    t.run(&["get", "leased", "-w", "json"], None);
    t.run(&["lease", "revoke", &id], None);
    t.run(&["get", "leased", "--prefix"], None);
    t.run(&["lease", "revoke", &id], None);
    t.run(&["lease", "timetolive", &id], None);
    t.run(&["put", "k", "v", "--lease=1234abcd"], None);
    t.run(&["lease", "keep-alive", "--once", "1234abcd"], None);
    t.run(&["lease", "list"], None);
    t.run(&["lease", "grant", "9000000001"], None);
}

#[test]
fn leases_match_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], lease_scenario);
    }
}

fn maintenance_scenario(t: &mut Transcript, s: &Server) {
    t.run(&["put", "a", "1"], None);
    t.run(&["put", "b", "2"], None);
    t.run(&["del", "a"], None);
    t.run(&["endpoint", "status", "-w", "json"], None);
    t.run(&["endpoint", "health"], None);
    t.run(&["endpoint", "hashkv", "-w", "json"], None);
    t.run(&["endpoint", "hashkv", "--rev=2", "-w", "json"], None);
    t.run(&["alarm", "list"], None);
    t.run(&["alarm", "disarm"], None);
    t.run(&["defrag"], None);
    t.run(&["member", "list", "-w", "json"], None);
    let snap = s.dir.path().join("backup.db");
    let out = t.run(&["snapshot", "save", "backup.db"], None);
    assert_eq!(out.code, 0, "snapshot save failed: {}", out.stderr);
    assert!(snap.metadata().expect("snapshot file").len() > 32);
    t.run(&["get", "b"], None);
}

#[test]
fn maintenance_matches_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], |t, s| {
            maintenance_scenario(t, s);
        });
    }
}

fn errors_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["put", "", "v"], None);
    t.run(&["get", ""], None);
    let many: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    t.run(&["txn"], Some(&format!("\n{many}\n\n")));
    let ok: String = (0..128).map(|i| format!("put k{i} v\n")).collect();
    t.run(&["txn"], Some(&format!("\n{ok}\n\n")));
    t.run(&["get", "k1", "--rev=1000"], None);
    t.run(&["put", "k", "v", "--lease=ffff"], None);
    t.run(&["txn"], Some("\n\nput k v\nput k w\n\n\n"));
    let big = "x".repeat(1_600_000);
    t.run(&["put", "big"], Some(&big));
    t.run(&["lease", "revoke", "abc"], None);
}

#[test]
fn errors_match_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], errors_scenario);
    }
}
