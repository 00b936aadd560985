//! The witness's state machine: it applies nothing. It keeps the applied log id and the
//! membership (W2: membership entries are stored in full, in the log and here), and its
//! snapshots carry that metadata only — a snapshot a data leader sends it is read for its
//! metadata and its keyspace discarded, so the witness never holds key-value data.
//!
//! # Correctness
//! - The snapshot file is written whole (temporary file, fdatasync, rename, directory fsync)
//!   before a snapshot is handed to openraft, which may then purge the log behind it; the applied
//!   state after a restart is the snapshot's, and openraft replays the log after it.
//! - Nothing is applied, so applying is trivially deterministic.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, StorageIOError,
};
use raft::codec;
use raft::types::{LogId, SnapshotMeta, StorageError, StoredMembership};

use crate::types::{Entry, WitnessConfig};

/// What a witness snapshot's data is: this marker, so a data node can tell it holds no keyspace.
pub const SNAPSHOT_MAGIC: &[u8] = b"TNDMWITN";
const SNAPSHOT_FILE: &str = "witness-snapshot";

fn err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

/// The applied position and membership, nothing else.
pub struct WitnessStateMachine {
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<SnapshotMeta>,
}

impl WitnessStateMachine {
    /// Opens the state in `dir` (the member directory): the last snapshot's metadata, if any.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let snapshot: Option<SnapshotMeta> = match std::fs::read(&path) {
            Ok(b) => Some(codec::decode(&b).map_err(|e| {
                anyhow::anyhow!(
                    "refusing to start: {} does not decode ({e})",
                    path.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(WitnessStateMachine {
            dir: dir.to_path_buf(),
            last_applied: snapshot.as_ref().and_then(|s| s.last_log_id),
            membership: snapshot
                .as_ref()
                .map(|s| s.last_membership.clone())
                .unwrap_or_default(),
            snapshot,
        })
    }

    fn persist(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&codec::encode(&meta))?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| err(ErrorVerb::Write, e))?;
        self.snapshot = Some(meta);
        Ok(())
    }

    fn current(&self) -> Option<Snapshot<WitnessConfig>> {
        self.snapshot.as_ref().map(|meta| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(SNAPSHOT_MAGIC.to_vec())),
        })
    }
}

impl RaftSnapshotBuilder<WitnessConfig> for WitnessStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<WitnessConfig>, StorageError> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.last_applied.map_or("witness-0".into(), |l| {
                format!("witness-{}-{}", l.leader_id.term, l.index)
            }),
        };
        self.persist(meta)?;
        Ok(self.current().expect("a snapshot was just persisted"))
    }
}

impl RaftStateMachine<WitnessConfig> for WitnessStateMachine {
    type SnapshotBuilder = WitnessStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            if let EntryPayload::Membership(m) = e.payload {
                self.membership = StoredMembership::new(Some(e.log_id), m);
            }
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        WitnessStateMachine {
            dir: self.dir.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Keeps the metadata of a data leader's snapshot and drops its keyspace.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.persist(meta.clone())?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(
            last_log_id = %meta.last_log_id.map_or("none".into(), |l| l.to_string()),
            "took a snapshot's metadata from the leader (its keyspace is not kept)"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<WitnessConfig>>, StorageError> {
        Ok(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshots_hold_metadata_only_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sm = WitnessStateMachine::open(dir.path()).expect("open");
        let log_id = LogId::new(openraft::CommittedLeaderId::new(2, 1), 7);
        sm.apply([Entry {
            log_id,
            payload: EntryPayload::Normal(raft::Payload::Data(vec![1, 2, 3])),
        }])
        .await
        .expect("apply");
        let snap = sm.build_snapshot().await.expect("build");
        assert_eq!(snap.snapshot.into_inner(), SNAPSHOT_MAGIC);
        let mut again = WitnessStateMachine::open(dir.path()).expect("reopen");
        assert_eq!(again.applied_state().await.expect("state").0, Some(log_id));
        // A data leader's snapshot: its keyspace bytes are never written anywhere.
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 90)),
            last_membership: StoredMembership::default(),
            snapshot_id: "3-90-500".into(),
        };
        again
            .install_snapshot(
                &meta,
                Box::new(Cursor::new(b"TANDEMKV keys and values".to_vec())),
            )
            .await
            .expect("install");
        let stored = std::fs::read(dir.path().join(SNAPSHOT_FILE)).expect("file");
        assert!(!stored.windows(8).any(|w| w == b"TANDEMKV"));
        let reopened = WitnessStateMachine::open(dir.path()).expect("reopen");
        assert_eq!(reopened.last_applied, meta.last_log_id);
    }
}
