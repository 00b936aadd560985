//! Criterion micro-benchmarks of the raft log's segment files (`raft::wal::Wal`): append
//! batches of 1, 16 and 128 entries of about 300 bytes (a small put), each batch made durable
//! with one fdatasync, as the log writer thread does per group.
//! Run: `cargo bench -p tandem-benches --bench raft_log`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openraft::{CommittedLeaderId, EntryPayload};
use raft::wal::Wal;
use replication::types::{Batch, Entry, LogId};

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(
            Batch(vec![mvcc::Command::Put(mvcc::PutRequest {
                key: format!("key{index:08}").into_bytes(),
                value: vec![b'v'; 256],
                ..Default::default()
            })])
            .encode(),
        ),
    }
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft log append + fdatasync");
    for batch in [1u64, 16, 128] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open(dir.path()).expect("wal");
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                for _ in 0..batch {
                    wal.append(&entry(next)).expect("append");
                    next += 1;
                }
                wal.sync().expect("sync")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = raft_log;
    config = Criterion::default().sample_size(20);
    targets = appends
}
criterion_main!(raft_log);
