//! Authentication and RBAC. etcdctl 3.5 and 3.4 run every `user`, `role` and `auth` command, and
//! each command family with `--user`, against tandem and against the real etcd of the same
//! version: the normalized transcripts must be equal. Then the holes etcd's audits found
//! (Trail of Bits 2020, and later advisories), each a request that tandem must refuse: a write
//! hidden in a nested txn, a watch from a permitted key to the end of the keyspace, requests
//! without credentials to MemberList, Alarm, Status, LeaseTimeToLive and Compact, and tokens
//! that outlive their user's password or the user.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Permission, Txn, TxnOp, WatchOptions,
};
use etcd_compat_tests::*;

const BOTH: [CtlVersion; 2] = [CtlVersion::V35, CtlVersion::V34];
const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

/// Runs `args` as alice and as root, noting exit codes and errors (sizes, ids and hashes differ
/// between two servers; exit codes and errors must not).
fn as_alice_and_root(t: &mut Transcript, args: &[&str]) {
    for user in [ALICE, ROOT] {
        let mut with = vec![user];
        with.extend_from_slice(args);
        let out = t.ctl.run(&with, None);
        t.note(format!(
            "{}: exit {} {}",
            with.join(" "),
            out.code,
            user_error(&out.stderr)
        ));
    }
}

/// Users and roles built step by step without authentication, then used with it.
fn rbac_scenario(t: &mut Transcript, _s: &Server) {
    t.run(&["auth", "status"], None);
    t.run(&["auth", "enable"], None);
    t.run(&["user", "add", "root:rootpw"], None);
    t.run(&["user", "add", "root:again"], None);
    t.run(&["user", "add", "alice:alicepw"], None);
    t.run(&["user", "add", "bob", "--no-password"], None);
    t.run(&["user", "list"], None);
    t.run(&["role", "add", "reader"], None);
    t.run(&["role", "add", "reader"], None);
    t.run(&["role", "add", "writer"], None);
    t.run(&["role", "grant-permission", "reader", "read", "foo"], None);
    t.run(
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "pre/",
            "--prefix",
        ],
        None,
    );
    t.run(
        &["role", "grant-permission", "reader", "readwrite", "a", "c"],
        None,
    );
    t.run(
        &[
            "role",
            "grant-permission",
            "writer",
            "write",
            "z",
            "--from-key",
        ],
        None,
    );
    t.run(
        &["role", "grant-permission", "reader", "write", "foo"],
        None,
    );
    t.run(&["role", "grant-permission", "nope", "read", "foo"], None);
    t.run(&["role", "get", "reader"], None);
    t.run(&["role", "get", "writer", "-w", "json"], None);
    t.run(&["role", "get", "nope"], None);
    t.run(&["role", "list"], None);
    t.run(&["user", "grant-role", "alice", "reader"], None);
    t.run(&["user", "grant-role", "alice", "reader"], None);
    t.run(&["user", "grant-role", "alice", "nope"], None);
    t.run(&["user", "grant-role", "nobody", "reader"], None);
    t.run(&["user", "get", "alice"], None);
    t.run(&["user", "get", "alice", "--detail"], None);
    t.run(&["user", "get", "nobody"], None);
    t.run(&["auth", "status"], None);
    // etcdctl creates the root role and grants it when enabling finds it missing.
    t.run(&["auth", "enable"], None);
    t.run(&["auth", "status"], None);
    t.run(&[ROOT, "auth", "status", "-w", "json"], None);
    // Without credentials, with wrong ones, with a user's and with root's.
    t.run(&["put", "foo", "bar"], None);
    t.run(&["get", "foo"], None);
    t.run(&["--user=alice:wrong", "get", "foo"], None);
    t.run(&["--user=nobody:x", "get", "foo"], None);
    t.run(&["--user=bob:x", "get", "foo"], None);
    t.run(&[ROOT, "put", "foo", "bar"], None);
    t.run(&[ROOT, "put", "pre/1", "one"], None);
    t.run(&[ROOT, "put", "b", "bee"], None);
    t.run(&[ALICE, "get", "foo"], None);
    t.run(&[ALICE, "put", "foo", "baz"], None);
    t.run(&[ALICE, "get", "pre/", "--prefix"], None);
    t.run(&[ALICE, "get", "pre/1"], None);
    t.run(&[ALICE, "get", "foo", "--prefix"], None);
    t.run(&[ALICE, "get", "", "--from-key"], None);
    t.run(&[ALICE, "put", "b", "x", "--prev-kv"], None);
    t.run(&[ALICE, "del", "b"], None);
    t.run(&[ALICE, "del", "a", "c"], None);
    t.run(&[ALICE, "del", "a", "d"], None);
    t.run(
        &[ALICE, "txn"],
        Some("value(\"foo\") = \"bar\"\n\nput a 1\n\nput b 2\n\n"),
    );
    t.run(
        &[ALICE, "txn"],
        Some("value(\"foo\") = \"bar\"\n\nput foo x\n\n\n"),
    );
    t.run(
        &[ALICE, "txn"],
        Some("value(\"zzz\") = \"bar\"\n\nput a 1\n\n\n"),
    );
    // Leases: anyone signed in may grant; revoking needs write on every attached key.
    t.run(&[ALICE, "lease", "list"], None);
    // Admin only: a user is refused, root is not. (Compaction too in tandem, where etcd 3.5.1
    // lets any user compact: `requests_without_credentials_are_refused`.)
    for args in [
        &["member", "list"][..],
        &["endpoint", "status"],
        &["endpoint", "hashkv"],
        &["alarm", "list"],
        &["alarm", "disarm"],
        &["defrag"],
        &["user", "list"],
        &["role", "list"],
        &["auth", "status"],
    ] {
        as_alice_and_root(t, args);
    }
    // Watch, lease, lock, snapshot and move-leader with a user's and root's credentials.
    let rev = "--rev=1";
    let allowed = Background::start(&t.ctl, &[ALICE, "watch", "a", "c", rev], None);
    let refused = Background::start(&t.ctl, &[ALICE, "watch", "z", rev], None);
    let out = allowed
        .wait_for("PUT", Duration::from_secs(10))
        .expect("a permitted watch replays");
    let mut refused = refused;
    wait_until("a refused watch to end", Duration::from_secs(10), || {
        refused.exited()
    })
    .expect("etcdctl ends a cancelled watch");
    t.note(format!("watch a..c: {}", normalize(&out)));
    t.note(format!("watch z: {}", normalize(&refused.finish())));
    drop(allowed.finish());
    for args in [
        &["lease", "grant", "60"][..],
        &["lease", "timetolive", "1234"],
        &["lease", "revoke", "1234"],
        &["lock", "mylock", "echo", "locked"],
        &["snapshot", "save", "snap.db"],
    ] {
        as_alice_and_root(t, args);
    }
    // A user may read itself and its roles, not others.
    t.run(&[ALICE, "user", "get", "alice"], None);
    t.run(&[ALICE, "user", "get", "root"], None);
    t.run(&[ALICE, "role", "get", "reader"], None);
    t.run(&[ALICE, "role", "get", "writer"], None);
    t.run(&[ALICE, "user", "add", "mallory:x"], None);
    t.run(
        &[
            ALICE,
            "role",
            "grant-permission",
            "reader",
            "readwrite",
            "",
            "--from-key",
        ],
        None,
    );
    t.run(&[ALICE, "user", "grant-role", "alice", "root"], None);
    // Management with root.
    t.run(&[ROOT, "role", "get", "root"], None);
    t.run(&[ROOT, "user", "get", "root"], None);
    t.run(&[ROOT, "role", "revoke-permission", "reader", "foo"], None);
    t.run(&[ROOT, "role", "revoke-permission", "reader", "foo"], None);
    t.run(
        &[
            ROOT,
            "role",
            "revoke-permission",
            "reader",
            "pre/",
            "--prefix",
        ],
        None,
    );
    t.run(&[ROOT, "role", "get", "reader"], None);
    t.run(&[ALICE, "get", "foo"], None);
    t.run(&[ROOT, "user", "revoke-role", "alice", "writer"], None);
    t.run(&[ROOT, "user", "revoke-role", "root", "root"], None);
    t.run(&[ROOT, "user", "delete", "root"], None);
    t.run(&[ROOT, "role", "delete", "root"], None);
    t.run(
        &[ROOT, "user", "passwd", "alice", "--interactive=false"],
        Some("newpw\n"),
    );
    t.run(&[ALICE, "get", "a"], None);
    t.run(&["--user=alice:newpw", "get", "a"], None);
    t.run(&[ROOT, "role", "delete", "reader"], None);
    t.run(&[ROOT, "user", "get", "alice"], None);
    t.run(&[ROOT, "user", "revoke-role", "alice", "reader"], None);
    t.run(&[ROOT, "user", "delete", "bob"], None);
    t.run(&[ROOT, "user", "delete", "bob"], None);
    t.run(&[ROOT, "user", "list"], None);
    t.run(&[ROOT, "role", "list"], None);
    t.run(&[ROOT, "auth", "status"], None);
    t.run(&[ROOT, "auth", "disable"], None);
    t.run(&["auth", "status"], None);
    t.run(&["get", "foo"], None);
    t.run(&["user", "delete", "root"], None);
    t.run(&["role", "delete", "root"], None);
    t.run(&["auth", "enable"], None);
    t.run(&["auth", "disable"], None);
}

#[test]
fn user_role_and_auth_commands_match_etcd() {
    for v in BOTH {
        compare_with_etcd(v, &[], rbac_scenario);
    }
}

/// JWT tokens (`--auth-token jwt,...`), with the same RSA key pair on both servers: signing in,
/// requests, a change to the auth state (tokens issued before it are old), verify-only.
#[test]
fn jwt_tokens_match_etcd() {
    let dir = tempfile::tempdir().expect("tmp");
    let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
    let openssl = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    openssl(&["genrsa", "-out", private.to_str().unwrap(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        public.display(),
        private.display()
    );
    compare_with_etcd(CtlVersion::V35, &[&flag], |t, _| {
        t.run(&["user", "add", "root:rootpw"], None);
        t.run(&["user", "grant-role", "root", "root"], None);
        t.run(&["user", "add", "alice:alicepw"], None);
        t.run(&["role", "add", "r"], None);
        t.run(&["role", "grant-permission", "r", "readwrite", "a"], None);
        t.run(&["user", "grant-role", "alice", "r"], None);
        t.run(&["auth", "enable"], None);
        t.run(&[ALICE, "put", "a", "1"], None);
        t.run(&[ALICE, "get", "a"], None);
        t.run(&[ALICE, "get", "b"], None);
        t.run(&["--user=alice:wrong", "get", "a"], None);
        t.run(&[ROOT, "role", "grant-permission", "r", "read", "b"], None);
        t.run(&[ALICE, "get", "b"], None);
        t.run(&[ROOT, "user", "delete", "alice"], None);
        t.run(&[ALICE, "get", "a"], None);
        t.run(&[ROOT, "auth", "status"], None);
        t.run(&[ROOT, "auth", "disable"], None);
    });
    // A member with only the public key verifies but cannot sign in anyone.
    let verify_only = format!(
        "--auth-token=jwt,pub-key={},sign-method=RS256",
        public.display()
    );
    compare_with_etcd(CtlVersion::V35, &[&verify_only], |t, _| {
        t.run(&["user", "add", "root:rootpw"], None);
        t.run(&["user", "grant-role", "root", "root"], None);
        t.run(&["auth", "enable"], None);
        t.run(&[ROOT, "get", "a"], None);
    });
}

async fn connect(url: &str, user: Option<(&str, &str)>) -> Client {
    let mut opts = ConnectOptions::new().with_timeout(Duration::from_secs(10));
    if let Some((u, p)) = user {
        opts = opts.with_user(u, p);
    }
    Client::connect([url], Some(opts)).await.expect("connect")
}

/// A server with root and `alice`, who may read and write `a`…`c` and only read `k`.
async fn with_alice() -> (Server, Client) {
    let s = Server::start(Kind::Tandem).expect("tandem");
    let c = connect(&s.url(), None).await;
    let mut a = c.auth_client();
    a.user_add("root", "rootpw", None).await.unwrap();
    a.user_grant_role("root", "root").await.unwrap();
    a.user_add("alice", "alicepw", None).await.unwrap();
    a.role_add("r").await.unwrap();
    a.role_grant_permission("r", Permission::read_write("a").with_range_end("c"))
        .await
        .unwrap();
    a.role_grant_permission("r", Permission::read("k"))
        .await
        .unwrap();
    a.user_grant_role("alice", "r").await.unwrap();
    a.auth_enable().await.unwrap();
    let root = connect(&s.url(), Some(("root", "rootpw"))).await;
    let mut r = root.kv_client();
    for k in ["a", "k", "k2", "z"] {
        r.put(k, "v", None).await.unwrap();
    }
    (s, root)
}

fn denied<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>, what: &str) {
    let e = r.expect_err(what).to_string();
    assert!(
        e.contains("permission denied") || e.contains("user name is empty"),
        "{what}: {e}"
    );
}

/// etcd 3.5.1 checked only the first level of a txn: a put inside a nested txn went through.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_hidden_in_a_nested_txn_is_refused() {
    let (s, _root) = with_alice().await;
    let alice = connect(&s.url(), Some(("alice", "alicepw"))).await;
    let mut kv = alice.kv_client();
    let inner = Txn::new().and_then([TxnOp::put("z", "stolen", None)]);
    let outer = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "v")])
        .and_then([TxnOp::txn(inner)]);
    denied(kv.txn(outer).await, "a nested txn writing z");
    let inner = Txn::new().and_then([TxnOp::get("z", None)]);
    let outer = Txn::new().or_else([TxnOp::txn(inner)]);
    denied(kv.txn(outer).await, "a nested txn reading z");
    // What alice may do, nested, passes.
    let inner = Txn::new().and_then([TxnOp::put("b", "ok", None)]);
    kv.txn(Txn::new().and_then([TxnOp::txn(inner)]))
        .await
        .expect("a nested txn within alice's permission");
    let mut root = connect(&s.url(), Some(("root", "rootpw"))).await;
    let z = root.get("z", None).await.unwrap();
    assert_eq!(z.kvs()[0].value(), b"v", "z untouched");
}

/// etcd 3.5.1 checked a watch from a key to the end of the keyspace as that one key.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_permitted_key_to_the_end_is_refused() {
    let (s, _root) = with_alice().await;
    let alice = connect(&s.url(), Some(("alice", "alicepw"))).await;
    let mut w = alice.watch_client();
    let mut stream = w
        .watch("k", Some(WatchOptions::new().with_from_key()))
        .await
        .expect("watch");
    let first = stream.message().await.expect("stream").expect("a response");
    assert!(
        first.canceled(),
        "the from-key watch is cancelled: {first:?}"
    );
    assert_eq!(first.cancel_reason(), "etcdserver: permission denied");
    // The key itself may be watched.
    let mut stream = w.watch("k", None).await.expect("watch");
    let first = stream.message().await.expect("stream").expect("a response");
    assert!(first.created() && !first.canceled(), "{first:?}");
    // And reading the range is refused as well.
    let mut kv = alice.kv_client();
    denied(
        kv.get("k", Some(GetOptions::new().with_from_key())).await,
        "a from-key range",
    );
}

/// Requests without credentials that etcd 3.5.1 served with authentication enabled.
#[tokio::test(flavor = "multi_thread")]
async fn requests_without_credentials_are_refused() {
    let (s, root) = with_alice().await;
    let mut rl = root.lease_client();
    let lease = rl.grant(60, None).await.unwrap().id();
    let mut anon = connect(&s.url(), None).await;
    denied(anon.member_list().await, "MemberList");
    denied(
        anon.alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await,
        "Alarm",
    );
    denied(anon.status().await, "Status");
    denied(
        anon.lease_time_to_live(lease, None).await,
        "LeaseTimeToLive",
    );
    denied(anon.leases().await, "LeaseLeases");
    denied(anon.lease_grant(60, None).await, "LeaseGrant");
    denied(anon.compact(2, None).await, "Compact");
    denied(anon.hash_kv(0).await, "HashKV");
    // A user that is not root: refused the admin's requests, but may see the cluster.
    let mut alice = connect(&s.url(), Some(("alice", "alicepw"))).await;
    denied(alice.compact(2, None).await, "Compact by a user");
    denied(
        alice
            .alarm(
                etcd_client::AlarmAction::Deactivate,
                etcd_client::AlarmType::None,
                None,
            )
            .await,
        "Alarm disarm by a user",
    );
    denied(alice.move_leader(1234).await, "MoveLeader by a user");
    alice.member_list().await.expect("MemberList for a user");
    // A lease with a key alice may not write: she may neither read nor revoke it.
    let mut rk = root.kv_client();
    rk.put(
        "z",
        "leased",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    denied(
        alice.lease_time_to_live(lease, None).await,
        "TimeToLive of z's lease",
    );
    denied(alice.lease_revoke(lease).await, "revoking z's lease");
}

/// Range `a` with a raw gRPC client, the token in the metadata as etcd's clients send it.
async fn range_with_token(
    url: String,
    token: String,
) -> Result<tonic::Response<etcd_api::etcdserverpb::RangeResponse>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = etcd_api::etcdserverpb::kv_client::KvClient::new(channel);
    let mut req = tonic::Request::new(etcd_api::etcdserverpb::RangeRequest {
        key: b"a".to_vec().into(),
        ..Default::default()
    });
    req.metadata_mut().insert("token", token.parse().unwrap());
    kv.range(req).await
}

/// In a cluster, a token one member handed out is good on every member, and a user made or a
/// permission revoked through one member holds on all.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_one_member_works_on_every_member() {
    let cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("cluster");
    let url = |i: usize| cluster.members[i].url();
    let c = connect(&url(0), None).await;
    let mut a = c.auth_client();
    a.user_add("root", "rootpw", None).await.unwrap();
    a.user_grant_role("root", "root").await.unwrap();
    a.user_add("alice", "alicepw", None).await.unwrap();
    a.role_add("r").await.unwrap();
    a.role_grant_permission("r", Permission::read("a"))
        .await
        .unwrap();
    a.user_grant_role("alice", "r").await.unwrap();
    a.auth_enable().await.unwrap();
    let token = connect(&url(1), None)
        .await
        .auth_client()
        .authenticate("alice".into(), "alicepw".into())
        .await
        .expect("authenticate on member 1")
        .token()
        .to_string();
    for i in 0..3 {
        range_with_token(url(i), token.clone())
            .await
            .unwrap_or_else(|e| panic!("member {i} takes member 1's token: {e}"));
    }
    let root = connect(&url(2), Some(("root", "rootpw"))).await;
    root.auth_client()
        .role_revoke_permission("r", "a", None)
        .await
        .unwrap();
    for i in 0..3 {
        // A member that has not applied the revocation yet answers after its ReadIndex.
        let e = range_with_token(url(i), token.clone())
            .await
            .expect_err("the permission is gone");
        assert_eq!(e.message(), "etcdserver: permission denied", "member {i}");
    }
}

/// A token ends with its user's password, and with its user.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_do_not_outlive_a_password_change_or_the_user() {
    let (s, root) = with_alice().await;
    let token = {
        let c = connect(&s.url(), None).await;
        c.auth_client()
            .authenticate("alice".into(), "alicepw".into())
            .await
            .expect("authenticate")
            .token()
            .to_string()
    };
    let get_with = |token: String| range_with_token(s.url(), token);
    get_with(token.clone()).await.expect("the token works");
    let mut a = root.auth_client();
    a.user_change_password("alice", "newpw").await.unwrap();
    let e = get_with(token.clone())
        .await
        .expect_err("old password's token");
    assert_eq!(e.message(), "etcdserver: invalid auth token");
    let token = {
        let c = connect(&s.url(), None).await;
        c.auth_client()
            .authenticate("alice".into(), "newpw".into())
            .await
            .unwrap()
            .token()
            .to_string()
    };
    get_with(token.clone()).await.expect("the new token works");
    a.user_delete("alice").await.unwrap();
    a.user_add("alice", "newpw", None).await.unwrap();
    a.user_grant_role("alice", "r").await.unwrap();
    let e = get_with(token).await.expect_err("a deleted user's token");
    assert_eq!(e.message(), "etcdserver: invalid auth token");
}
