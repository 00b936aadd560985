//! Reads share one engine snapshot until the next change (`store.rs`, `Inner::kv_reader`): a
//! read after a write, a compaction or a restore sees it, and the shared snapshot never holds up
//! a defragmentation.

use mvcc::{Command, PutRequest, RangeRequest, Store};

fn put(store: &Store, key: &str, value: &str) {
    let cmd = Command::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    });
    store.apply(&[cmd], &[], false).expect("apply");
}

fn get(store: &Store, key: &str) -> Option<Vec<u8>> {
    let req = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let resp = store.range(&req).expect("range");
    resp.kvs.first().map(|kv| kv.value.clone())
}

#[test]
fn a_read_after_a_change_sees_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path().join("tandem.db")).expect("open");
    put(&store, "k", "1");
    assert_eq!(get(&store, "k").as_deref(), Some(&b"1"[..]));
    // The snapshot the read above opened is shared by this one...
    assert_eq!(get(&store, "k").as_deref(), Some(&b"1"[..]));
    // ...and dropped by the next change.
    for i in 2..50 {
        put(&store, "k", &i.to_string());
        assert_eq!(
            get(&store, "k"),
            Some(i.to_string().into_bytes()),
            "after put {i}"
        );
    }
    let compact = Command::Compact { revision: 40 };
    store.apply(&[compact], &[], true).expect("compact");
    assert_eq!(get(&store, "k").as_deref(), Some(&b"49"[..]));
    // A read's shared snapshot does not keep the file from being rewritten.
    store.defragment().expect("defragment");
    put(&store, "k", "after-defrag");
    assert_eq!(get(&store, "k").as_deref(), Some(&b"after-defrag"[..]));
}
