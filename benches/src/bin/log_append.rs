//! Measures durable append throughput of the candidate raft log stores on this machine's disk:
//! redb with one-phase and two-phase commit (one transaction per batch), and a plain append-only
//! file with one `fdatasync` per batch. Usage: `log_append [seconds-per-case]`.
//! The figures are recorded in docs/decisions/0002-raft-log-store.md.

use std::io::Write;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// About the size of a raft entry carrying a small put.
const ENTRY_BYTES: usize = 300;

fn redb_case(
    dir: &std::path::Path,
    batch: usize,
    two_phase: bool,
    budget: Duration,
) -> anyhow::Result<(u64, u64)> {
    let db = Database::create(dir.join(format!("redb-{batch}-{two_phase}.db")))?;
    let value = vec![7u8; ENTRY_BYTES];
    let (mut index, mut commits) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < budget {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.set_two_phase_commit(two_phase);
        {
            let mut t = tx.open_table(LOG)?;
            for _ in 0..batch {
                index += 1;
                t.insert(index, value.as_slice())?;
            }
        }
        tx.commit()?;
        commits += 1;
    }
    Ok((commits, index))
}

fn file_case(dir: &std::path::Path, batch: usize, budget: Duration) -> anyhow::Result<(u64, u64)> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("wal-{batch}.log")))?;
    let entry = vec![7u8; ENTRY_BYTES + 16];
    let (mut entries, mut commits) = (0u64, 0u64);
    let start = Instant::now();
    let mut buf = Vec::with_capacity(batch * entry.len());
    while start.elapsed() < budget {
        buf.clear();
        for _ in 0..batch {
            buf.extend_from_slice(&entry);
            entries += 1;
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        commits += 1;
    }
    Ok((commits, entries))
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(secs);
    let dir = tempfile::tempdir_in(".")?;
    println!("| store | batch | commits/s | entries/s |");
    println!("|---|---:|---:|---:|");
    for batch in [1usize, 16, 128] {
        for (name, two_phase) in [
            ("redb, 1-phase commit", false),
            ("redb, 2-phase commit", true),
        ] {
            let (c, e) = redb_case(dir.path(), batch, two_phase, budget)?;
            println!(
                "| {name} | {batch} | {:.0} | {:.0} |",
                c as f64 / secs as f64,
                e as f64 / secs as f64
            );
        }
        let (c, e) = file_case(dir.path(), batch, budget)?;
        println!(
            "| append file + fdatasync | {batch} | {:.0} | {:.0} |",
            c as f64 / secs as f64,
            e as f64 / secs as f64
        );
    }
    Ok(())
}
