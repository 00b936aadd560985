//! Criterion micro-benchmarks of the keyspace's hot paths (`mvcc::Store`, on this machine's
//! disk, commits not durable as the state machine makes them): put, single-key and 10k-key
//! ranges, a compare-and-put txn, compaction, and watch fan-out (1,000 watchers on different
//! prefixes reading the latest revisions' events, as catching-up watchers do).
//! Run: `cargo bench -p tandem-benches --bench mvcc`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mvcc::{
    Command, Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RangeRequest, RequestOp,
    Store, TxnRequest,
};

/// Keys in the prepared keyspace.
const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 256;

fn key(i: usize) -> Vec<u8> {
    format!("/registry/pods/ns{}/pod{i:05}", i % 100).into_bytes()
}

fn put(i: usize) -> Command {
    Command::Put(PutRequest {
        key: key(i),
        value: vec![b'v'; VALUE_BYTES],
        ..Default::default()
    })
}

/// A store holding `KEYS` keys, written in batches of 100 commands.
fn filled() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path().join("kv.db")).expect("store");
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let cmds: Vec<Command> = chunk.iter().map(|i| put(*i)).collect();
        store.apply(&cmds, &[], false).expect("fill");
    }
    (dir, store)
}

fn benches(c: &mut Criterion) {
    let (_dir, store) = filled();
    let mut n = 0usize;
    c.bench_function("put (one command per commit)", |b| {
        b.iter(|| {
            n += 1;
            store.apply(&[put(n % KEYS)], &[], false).expect("put")
        })
    });
    c.bench_function("put (batch of 64 per commit)", |b| {
        b.iter(|| {
            let cmds: Vec<Command> = (0..64).map(|i| put((n + i) % KEYS)).collect();
            n += 64;
            store.apply(&cmds, &[], false).expect("put")
        })
    });
    c.bench_function("range one key", |b| {
        b.iter(|| {
            n += 1;
            store
                .range(&RangeRequest {
                    key: key(n % KEYS),
                    ..Default::default()
                })
                .expect("range")
        })
    });
    c.bench_function("range 10k keys", |b| {
        b.iter(|| {
            store
                .range(&RangeRequest {
                    key: b"/registry/".to_vec(),
                    range_end: b"/registry0".to_vec(),
                    ..Default::default()
                })
                .expect("range")
        })
    });
    c.bench_function("txn compare mod + put", |b| {
        b.iter(|| {
            n += 1;
            let k = key(n % KEYS);
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Mod(0),
                    key: k.clone(),
                    range_end: Vec::new(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: k.clone(),
                    value: vec![b't'; VALUE_BYTES],
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: k,
                    ..Default::default()
                })],
            };
            store.apply(&[Command::Txn(txn)], &[], false).expect("txn")
        })
    });
    c.bench_function(
        "watch fan-out: 1000 watchers read the last 64 revisions",
        |b| {
            b.iter(|| {
                let to = store.current_revision();
                let mut events = 0;
                for w in 0..1000 {
                    let prefix = format!("/registry/pods/ns{}/", w % 100).into_bytes();
                    let mut end = prefix.clone();
                    *end.last_mut().expect("non-empty") += 1;
                    events += store
                        .events(KeyRange::new(&prefix, &end), to - 63, to, true, 64)
                        .expect("events")
                        .len();
                }
                events
            })
        },
    );
    c.bench_function("compaction of 10k keys × 2 revisions", |b| {
        b.iter_batched(
            || {
                let (dir, store) = filled();
                let again: Vec<Command> = (0..KEYS).map(put).collect();
                store.apply(&again, &[], false).expect("rewrite");
                (dir, store)
            },
            |(_dir, store)| {
                let rev = store.current_revision();
                store
                    .apply(&[Command::Compact { revision: rev }], &[], false)
                    .expect("compact")
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group! {
    name = mvcc;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(mvcc);
