//! A keyspace written as etcd's db file (by `bbolt-rs`) and read back by tandem's own bbolt
//! reader into an empty keyspace comes back whole: every stored change (HashKV equal at every
//! revision checked), the leases, the compaction point, users and roles. Large enough for
//! branch pages and several batches, with values past a page (overflow pages).

use mvcc::auth::{AuthCommand, PermType, Permission};
use mvcc::{Command, DeleteRangeRequest, PutRequest, Store};

fn put(key: String, value: Vec<u8>, lease: i64) -> Command {
    Command::Put(PutRequest {
        key: key.into_bytes(),
        value,
        lease,
        ..Default::default()
    })
}

fn history(store: &Store) {
    let mut cmds = vec![Command::LeaseGrant { id: 7, ttl: 600 }];
    for i in 0..20_000 {
        cmds.push(put(format!("/registry/pods/p{i:05}"), vec![b'x'; 100], 0));
    }
    for i in 0..50 {
        // Larger than a page: bbolt keeps them on overflow pages.
        cmds.push(put(format!("/registry/big/{i}"), vec![i as u8; 10_000], 7));
    }
    for i in 0..1_000 {
        cmds.push(put(format!("/registry/pods/p{i:05}"), vec![b'y'; 50], 0));
    }
    cmds.push(Command::DeleteRange(DeleteRangeRequest {
        key: b"/registry/pods/p01".to_vec(),
        range_end: b"/registry/pods/p02".to_vec(),
        prev_kv: false,
    }));
    cmds.push(Command::Compact { revision: 15_000 });
    cmds.push(Command::Auth(AuthCommand::UserAdd {
        name: "alice".into(),
        password: b"hash".to_vec(),
        no_password: false,
    }));
    cmds.push(Command::Auth(AuthCommand::RoleAdd { name: "r".into() }));
    cmds.push(Command::Auth(AuthCommand::RoleGrantPermission {
        name: "r".into(),
        perm: Permission {
            perm_type: PermType::ReadWrite,
            key: b"/registry/".to_vec(),
            range_end: b"/registry0".to_vec(),
        },
    }));
    for chunk in cmds.chunks(1_000) {
        store.apply(chunk, &[], false).expect("apply");
    }
    store.sync().expect("sync");
}

#[test]
fn a_keyspace_survives_etcds_file_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Store::open(dir.path().join("source.db")).expect("source");
    history(&source);

    let file = dir.path().join("snapshot.db");
    let mut w = etcd_db::Writer::create(&file).expect("writer");
    source.export(&mut w, "").expect("export");
    w.finish(&etcd_db::ClusterInfo::default()).expect("finish");

    let restored = Store::open(dir.path().join("restored.db")).expect("restored");
    let report = etcd_db::restore::import(&file, &restored, vec![1; 32]).expect("import");
    assert_eq!(report.compacted, 15_000);
    assert_eq!(report.leases, 1);

    assert_eq!(restored.current_revision(), source.current_revision());
    assert_eq!(restored.compacted_revision(), source.compacted_revision());
    for rev in [0, 15_000, 18_000, source.current_revision()] {
        assert_eq!(
            restored.hash_kv(rev).expect("hash"),
            source.hash_kv(rev).expect("hash"),
            "HashKV at {rev}"
        );
    }
    assert_eq!(restored.leases(), source.leases());
    // Users lose only tandem's own password revision (etcd's file has none: tokens issued
    // before a restore end with it).
    let users = |s: &Store| -> Vec<(String, Vec<u8>, Vec<String>)> {
        let a = s.auth();
        a.users
            .iter()
            .map(|(n, u)| (n.clone(), u.password.clone(), u.roles.clone()))
            .collect()
    };
    assert_eq!(users(&restored), users(&source));
    assert_eq!(restored.auth().roles, source.auth().roles);
    assert_eq!(restored.auth().revision, source.auth().revision);

    // Reopened from disk, as a member starting on the restored data dir does.
    drop(restored);
    let reopened = Store::open(dir.path().join("restored.db")).expect("reopen");
    assert_eq!(
        reopened.hash_kv(0).expect("hash"),
        source.hash_kv(0).expect("hash")
    );
}

#[test]
fn a_copy_with_a_bad_hash_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let mut body = vec![0u8; 4096];
    body.extend_from_slice(&[9u8; 32]);
    std::fs::write(&snap, &body).expect("write");
    let err = etcd_db::restore::verify_and_copy(&snap, &dir.path().join("out"), false)
        .expect_err("a wrong hash");
    assert!(err.to_string().contains("expected sha256"), "{err}");
    etcd_db::restore::verify_and_copy(&snap, &dir.path().join("out2"), true)
        .expect("taken with --skip-hash-check");
}
