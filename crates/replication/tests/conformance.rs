//! openraft's storage conformance suite, run on tandem's log store and state machine, plus a
//! snapshot round trip between two state machines (HashKV must be identical after the install)
//! and the term rule of lease expiries.

use std::sync::Arc;

use mvcc::{Command, PutRequest};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use replication::state_machine::StateMachine;
use replication::types::{Batch, Entry, StorageError, TypeConfig};

type LogStore = raft::log_store::LogStore<TypeConfig>;
use replication::{ApplyListener, Replica};

struct Quiet;

impl ApplyListener for Quiet {
    fn applied(&self, _events: Vec<Vec<mvcc::Event>>, _revision: i64) {}
    fn reset(&self, _revision: i64) {}
}

fn state_machine(dir: &std::path::Path) -> StateMachine {
    let store = Replica::open_store(dir).expect("keyspace");
    StateMachine::new(store, Arc::new(Quiet), Arc::default()).expect("state machine")
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("wal"), Arc::default()).expect("log store");
        let sm = state_machine(dir.path());
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn entry(index: u64, cmd: Command) -> Entry {
    entry_of_term(1, index, cmd)
}

fn entry_of_term(term: u64, index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Batch(vec![cmd]).encode()),
    }
}

/// A lease expiry is carried out only by an entry of the term whose leader saw the TTL run out:
/// a deposed leader's expiry, forwarded to its successor (so in an entry of a later term),
/// changes nothing, since the successor may have renewed the lease since.
#[tokio::test]
async fn a_lease_expires_only_in_the_term_that_timed_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = state_machine(dir.path());
    let put = Command::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        ..Default::default()
    });
    sm.apply(vec![
        entry_of_term(1, 1, Command::LeaseGrant { id: 7, ttl: 5 }),
        entry_of_term(1, 2, put),
    ])
    .await
    .expect("apply");
    let revision = sm.store().current_revision();

    sm.apply(vec![entry_of_term(
        2,
        3,
        Command::LeaseExpire { id: 7, term: 1 },
    )])
    .await
    .expect("apply");
    let lease = sm
        .store()
        .lease(7)
        .expect("the lease outlives an expiry of term 1 in term 2");
    assert_eq!(lease.keys, [b"k".to_vec()]);
    assert_eq!(
        sm.store().current_revision(),
        revision,
        "nothing was deleted"
    );

    sm.apply(vec![entry_of_term(
        2,
        4,
        Command::LeaseExpire { id: 7, term: 2 },
    )])
    .await
    .expect("apply");
    assert!(
        sm.store().lease(7).is_none(),
        "revoked by its own term's expiry"
    );
    assert_eq!(
        sm.store().current_revision(),
        revision + 1,
        "its key deleted"
    );
}

#[tokio::test]
async fn snapshot_install_keeps_hashkv() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let mut a = state_machine(a_dir.path());
    let mut entries = Vec::new();
    for i in 0..300u64 {
        let key = format!("k{}", i % 17).into_bytes();
        entries.push(entry(
            i + 1,
            Command::Put(PutRequest {
                key,
                value: i.to_be_bytes().to_vec(),
                ..Default::default()
            }),
        ));
    }
    entries.push(entry(301, Command::Compact { revision: 150 }));
    a.apply(entries).await.expect("apply");
    // What openraft builds to purge its log is the meta alone (the keyspace, made durable);
    // what it sends a follower is made from the keyspace when asked for.
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let snapshot = a
        .get_current_snapshot()
        .await
        .expect("the current snapshot")
        .expect("one exists");
    assert_eq!(built.meta, snapshot.meta, "one meta for the same state");

    let b_dir = tempfile::tempdir().expect("tempdir");
    let mut b = state_machine(b_dir.path());
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(
        a.applied_state().await.expect("a").0,
        b.applied_state().await.expect("b").0
    );
    // 300 puts end at revision 301; the compaction at 150 does not bump it.
    for rev in [150, 200, 301, 0] {
        let want = a.store().hash_kv(rev).expect("HashKV on the source");
        let got = b
            .store()
            .hash_kv(rev)
            .expect("HashKV on the installed copy");
        assert_eq!(got, want, "HashKV at {rev} after install");
        let hashed = if rev == 0 { 301 } else { rev };
        assert_eq!(
            (want.1, want.2),
            (150, hashed),
            "HashKV at {rev}: compacted, hashed"
        );
    }
    // Below the compaction and beyond the current revision both refuse, as etcd does.
    for (rev, err) in [
        (149, mvcc::Error::Compacted),
        (302, mvcc::Error::FutureRevision),
    ] {
        assert_eq!(a.store().hash_kv(rev), Err(err.clone()), "source at {rev}");
        assert_eq!(b.store().hash_kv(rev), Err(err), "installed copy at {rev}");
    }
    // Both continue identically: revisions carry on from the snapshot.
    let next = vec![entry(
        302,
        Command::Put(PutRequest {
            key: b"after".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        }),
    )];
    let ra = a.apply(next.clone()).await.expect("apply a");
    let rb = b.apply(next).await.expect("apply b");
    assert_eq!(ra, rb);
    assert_eq!(a.store().hash_kv(0), b.store().hash_kv(0));
    // And the installed state survives reopening.
    drop(b);
    let b = state_machine(b_dir.path());
    assert_eq!(a.store().hash_kv(0), b.store().hash_kv(0));
}
