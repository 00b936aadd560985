//! A flush to disk that failed (fdatasync EIO) ends the keyspace's writes until a restart. redb
//! refuses later I/O of its own, but a non-durable commit reaches no file: it went on
//! succeeding after the failed flush, and the member acknowledged writes over pages the kernel
//! may have dropped (robustness S13, `one_member_fsync_fails`, met through an idle commit).

use mvcc::{Command, PutRequest, RangeRequest, Store};

fn put(key: &str) -> Vec<Command> {
    vec![Command::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })]
}

#[test]
fn no_write_is_taken_after_a_failed_flush() {
    let (store, faults) = Store::in_memory_with_sync_faults().expect("store");
    store.apply(&put("a"), &[], true).expect("durable");
    store.apply(&put("b"), &[], false).expect("pending");
    assert!(!store.write_failed());

    faults.fail();
    let err = store.sync().expect_err("the flush fails");
    assert!(err.to_string().contains("os error 5"), "{err}");
    assert!(store.write_failed());

    let later = store
        .apply(&put("c"), &[], false)
        .expect_err("a non-durable commit after the failed flush");
    assert!(
        later
            .to_string()
            .contains("an earlier write to (in memory) failed")
            && later.to_string().contains("os error 5"),
        "{later}"
    );
    store
        .apply(&put("d"), &[], true)
        .expect_err("a durable one");
    store.sync().expect_err("another flush");
    // Reads still see what was committed before the failure, and nothing after it.
    let all = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        ..Default::default()
    };
    let keys: Vec<_> = store
        .range(&all)
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn a_failed_durable_apply_ends_the_writes_too() {
    let (store, faults) = Store::in_memory_with_sync_faults().expect("store");
    store.apply(&put("a"), &[], false).expect("pending");
    faults.fail();
    store
        .apply(&put("b"), &[], true)
        .expect_err("its flush fails");
    assert!(store.write_failed());
    store
        .apply(&put("c"), &[], false)
        .expect_err("a non-durable commit after it");
}
