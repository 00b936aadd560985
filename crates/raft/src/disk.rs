//! Whether this member's disk has filled up: the log writer and the state machine note every
//! write that failed with ENOSPC, and the server raises etcd's NOSPACE alarm for this member
//! while it is set (a full disk stops the raft core; the alarm tells clients why, with etcd's
//! error, instead of only "server stopped"). Cleared only by a restart.

use std::sync::atomic::{AtomicBool, Ordering};

/// The OS's text for ENOSPC, as it appears in an error's display (io errors cross anyhow and
/// redb's string-carrying errors before they reach here, so the kind alone is not available).
const ENOSPC_TEXT: &str = "(os error 28)";

#[derive(Debug, Default)]
pub struct DiskFull(AtomicBool);

impl DiskFull {
    /// Notes `error` (its whole display, causes included); whether it was a full disk.
    pub fn note(&self, error: &str) -> bool {
        let full = error.contains(ENOSPC_TEXT);
        if full && !self.0.swap(true, Ordering::Relaxed) {
            tracing::error!(%error, "the disk is full; raising NOSPACE for this member");
        }
        full
    }

    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old file or the whole new one:
/// a temporary file, flushed, renamed over it, and the directory flushed.
pub fn write_durably(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enospc_counts() {
        let flag = DiskFull::default();
        let eio = std::io::Error::from_raw_os_error(5);
        assert!(!flag.note(&format!("{:#}", anyhow::Error::from(eio))));
        assert!(!flag.is_full());
        let full = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::from(full).context("creating raft log segment");
        assert!(flag.note(&format!("{e:#}")));
        assert!(flag.is_full());
    }
}
