//! Fuzzing of request decoding, validation and application: arbitrary bytes decoded as every
//! client request type, and structured but wild requests (empty and inverted keys, out-of-range
//! enums, negative and huge revisions, deep nesting, too many operations). Nothing may panic;
//! a refused request must be refused with an error from etcd's table; an accepted one must apply
//! or be refused only as etcd's applier refuses it. Which error etcd gives for each request is
//! checked against etcd itself in `etcd-compat-tests/tests/fuzz_vs_etcd.rs`. CI runs the default
//! number of cases; `PROPTEST_CASES=100000` runs longer.

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use proptest::prelude::*;
use prost::Message;
use server::{convert, kv};

fn known_error(s: &tonic::Status) -> bool {
    rpctypes::ALL
        .iter()
        .any(|(_, e)| e.code == s.code() && e.message == s.message())
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(vec![0xff]),
        "[a-c]{1,2}".prop_map(String::into_bytes)
    ]
}

fn revision() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..40, Just(i64::MAX), Just(i64::MIN)]
}

fn range() -> impl Strategy<Value = pb::RangeRequest> {
    (
        key(),
        key(),
        -2i64..5,
        revision(),
        -1i32..7,
        -1i32..7,
        any::<bool>(),
        any::<bool>(),
        revision(),
        revision(),
    )
        .prop_map(
            |(k, e, limit, revision, so, st, keys_only, count_only, minm, maxc)| pb::RangeRequest {
                key: k.into(),
                range_end: e.into(),
                limit,
                revision,
                sort_order: so,
                sort_target: st,
                keys_only,
                count_only,
                min_mod_revision: minm,
                max_create_revision: maxc,
                ..Default::default()
            },
        )
}

fn put() -> impl Strategy<Value = pb::PutRequest> {
    (
        key(),
        "[a-z]{0,3}",
        -1i64..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(k, v, lease, prev_kv, iv, il)| pb::PutRequest {
            key: k.into(),
            value: v.into_bytes().into(),
            lease,
            prev_kv,
            ignore_value: iv,
            ignore_lease: il,
        })
}

fn delete() -> impl Strategy<Value = pb::DeleteRangeRequest> {
    (key(), key(), any::<bool>()).prop_map(|(k, e, prev_kv)| pb::DeleteRangeRequest {
        key: k.into(),
        range_end: e.into(),
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = pb::Compare> {
    use pb::compare::TargetUnion;
    let union = prop_oneof![
        Just(None),
        revision().prop_map(|v| Some(TargetUnion::Version(v))),
        revision().prop_map(|v| Some(TargetUnion::CreateRevision(v))),
        revision().prop_map(|v| Some(TargetUnion::ModRevision(v))),
        "[a-z]{0,2}".prop_map(|v| Some(TargetUnion::Value(v.into_bytes().into()))),
        (-1i64..3).prop_map(|v| Some(TargetUnion::Lease(v))),
    ];
    (-1i32..6, -1i32..7, key(), key(), union).prop_map(|(result, target, k, e, target_union)| {
        pb::Compare {
            result,
            target,
            key: k.into(),
            range_end: e.into(),
            target_union,
        }
    })
}

fn op(depth: u32) -> BoxedStrategy<pb::RequestOp> {
    use pb::request_op::Request;
    let leaf = prop_oneof![
        Just(None),
        range().prop_map(|r| Some(Request::RequestRange(r))),
        put().prop_map(|p| Some(Request::RequestPut(p))),
        delete().prop_map(|d| Some(Request::RequestDeleteRange(d))),
    ];
    if depth == 0 {
        return leaf.prop_map(|request| pb::RequestOp { request }).boxed();
    }
    prop_oneof![4 => leaf, 1 => txn(depth - 1).prop_map(|t| Some(Request::RequestTxn(t)))]
        .prop_map(|request| pb::RequestOp { request })
        .boxed()
}

fn txn(depth: u32) -> BoxedStrategy<pb::TxnRequest> {
    let ops = prop_oneof![8 => prop::collection::vec(op(depth), 0..5), 1 => prop::collection::vec(op(0), 127..131)];
    (
        prop::collection::vec(compare(), 0..3),
        ops,
        prop::collection::vec(op(depth), 0..4),
    )
        .prop_map(|(compare, success, failure)| pb::TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// Validates as the KV service does; returns the command to apply when accepted.
fn validate(t: &pb::TxnRequest) -> Result<mvcc::Command, tonic::Status> {
    kv::check_txn_request(t, 128)?;
    Ok(mvcc::Command::Txn(convert::txn_from_pb(t)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn wild_txns_are_refused_with_etcd_errors_or_applied(txns in prop::collection::vec(txn(3), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let store = mvcc::Store::open(dir.path().join("kv.db")).unwrap();
        for t in txns {
            // Through the wire first, as a client would send it.
            let t = pb::TxnRequest::decode(t.encode_to_vec().as_slice()).unwrap();
            match validate(&t) {
                Err(s) => prop_assert!(known_error(&s), "refused with a non-etcd error: {:?}", s),
                Ok(cmd) => {
                    let batch = store.apply(&[cmd], &[], false).expect("no storage error");
                    // A validated txn can fail to apply only as etcd's applier refuses one.
                    if let Err(e) = &batch.outcomes[0].response {
                        prop_assert!(
                            matches!(
                                e,
                                mvcc::Error::Compacted
                                    | mvcc::Error::FutureRevision
                                    | mvcc::Error::LeaseNotFound
                                    | mvcc::Error::KeyNotFound
                            ),
                            "{:?}",
                            e
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wild_ranges_are_refused_with_etcd_errors_or_served(reqs in prop::collection::vec(range(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let store = mvcc::Store::open(dir.path().join("kv.db")).unwrap();
        let seed = mvcc::Command::Put(mvcc::PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() });
        store.apply(&[seed.clone(), seed], &[], false).unwrap();
        for r in reqs {
            match kv::check_range(&r) {
                Err(s) => prop_assert!(known_error(&s)),
                Ok(()) => {
                    if let Err(e) = store.range(&convert::range_from_pb(&r)) {
                        prop_assert!(matches!(e, mvcc::Error::Compacted | mvcc::Error::FutureRevision), "{:?}", e);
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_decoding_or_validation(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let b = bytes.as_slice();
        if let Ok(r) = pb::RangeRequest::decode(b) { let _ = kv::check_range(&r); let _ = convert::range_from_pb(&r); }
        if let Ok(p) = pb::PutRequest::decode(b) { let _ = kv::check_put(&p); let _ = convert::put_from_pb(&p); }
        if let Ok(d) = pb::DeleteRangeRequest::decode(b) { let _ = kv::check_delete(&d); }
        if let Ok(t) = pb::TxnRequest::decode(b) { let _ = validate(&t); }
        let _ = pb::WatchRequest::decode(b);
        let _ = pb::LeaseGrantRequest::decode(b);
        let _ = pb::AlarmRequest::decode(b);
        let _ = pb::CompactionRequest::decode(b);
    }
}
