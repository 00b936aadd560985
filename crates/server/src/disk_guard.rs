//! Keeps the data directory's filesystem from filling up under tandem: while its free space is
//! below a reserve, this member raises etcd's NOSPACE alarm locally and refuses writes with
//! etcd's error, so that the raft log always has room for its next segment and the keyspace
//! file for its growth, nothing fails part way, and reads go on being served. The alarm clears
//! by itself once space is freed (with a margin, so it does not flap). A write that still
//! meets ENOSPC (another process filled the disk faster than the poll) stops the raft core and
//! keeps NOSPACE raised until a restart (`replication::disk`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;

/// Free bytes below which writes are refused: room for the next raft log segment plus as much
/// again for the keyspace file's growth.
pub const RESERVE_BYTES: u64 = 2 * raft::wal::SEGMENT_BYTES;
/// Free bytes above which a raised alarm clears.
pub const RESUME_BYTES: u64 = RESERVE_BYTES + 32 * 1024 * 1024;
/// How often free space is read.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Whether this member's filesystem is below its reserve.
#[derive(Debug, Default)]
pub struct DiskGuard {
    low: AtomicBool,
}

impl DiskGuard {
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }
}

/// The next state of the guard: low after `free` was read, given whether it was low.
pub fn next_low(was_low: bool, free: u64) -> bool {
    if was_low {
        free < RESUME_BYTES
    } else {
        free < RESERVE_BYTES
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Reads the data directory's free space every poll interval and updates the guard.
pub async fn run(node: Arc<Node>) {
    let dir = node.config.data_dir.clone();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tick.tick().await;
        let free = match free_bytes(&dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot read free disk space");
                continue;
            }
        };
        let guard = &node.disk_guard;
        let was = guard.is_low();
        let low = next_low(was, free);
        if low != was {
            guard.low.store(low, Ordering::Relaxed);
            if low {
                tracing::warn!(
                    free,
                    reserve = RESERVE_BYTES,
                    "disk nearly full; raising NOSPACE for this member"
                );
            } else {
                tracing::info!(free, "disk space freed; NOSPACE for this member cleared");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_below_the_reserve_and_clears_only_past_the_margin() {
        let table = [
            (false, RESERVE_BYTES, false),
            (false, RESERVE_BYTES - 1, true),
            (true, RESERVE_BYTES, true),
            (true, RESUME_BYTES - 1, true),
            (true, RESUME_BYTES, false),
            (false, 0, true),
        ];
        for (was, free, want) in table {
            assert_eq!(next_low(was, free), want, "was low {was}, free {free}");
        }
    }

    #[test]
    fn reads_free_space() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
    }
}
