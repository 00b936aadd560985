//! Incarnations (two-node design, W5): raft assumes a member never forgets its vote or its log.
//! A member whose data dir was wiped and that comes back under its old id with an empty log
//! breaks that: a wiped witness would grant its vote to a data node missing acknowledged
//! writes. So every data dir gets a random incarnation when it is created; every peer message
//! and every answer carries the sender's id and incarnation; each member keeps the incarnation
//! it first saw from every peer (`member/peers`, fsynced before it is relied on) and refuses
//! messages, and ignores answers, from another incarnation of the same member. Rejoining after
//! a wipe is an explicit membership change.
//!
//! Format of `member/peers`: codec (version byte, postcard) of `BTreeMap<member id, incarnation>`,
//! written to `peers.tmp`, fdatasynced, renamed, directory fsynced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::codec;
use crate::types::NodeId;

const FILE: &str = "peers";

/// This member's incarnation and the ones it knows of its peers.
#[derive(Debug)]
pub struct Incarnations {
    me: NodeId,
    mine: u64,
    /// `None` in tests that keep nothing on disk.
    dir: Option<PathBuf>,
    known: Mutex<BTreeMap<NodeId, u64>>,
}

impl codec::Stored for BTreeMap<NodeId, u64> {
    fn from_v1(_: &[u8]) -> Result<Self, codec::CodecError> {
        // The peers file came with version 2.
        Err(codec::CodecError::Version(codec::FORMAT_V1))
    }
}

impl Incarnations {
    /// Reads what the member directory `dir` knows of its peers.
    pub fn open(dir: &Path, me: NodeId, mine: u64) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let known = match std::fs::read(&path) {
            Ok(b) => codec::decode_stored(&b).map_err(|e| {
                anyhow::anyhow!(
                    "refusing to start: {} does not decode ({e})",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Incarnations {
            me,
            mine,
            dir: Some(dir.to_path_buf()),
            known: Mutex::new(known),
        })
    }

    /// Incarnations kept in memory only (tests).
    pub fn in_memory(me: NodeId, mine: u64) -> Self {
        Incarnations {
            me,
            mine,
            dir: None,
            known: Mutex::default(),
        }
    }

    /// This member's id and incarnation, as its messages carry them.
    pub fn mine(&self) -> (NodeId, u64) {
        (self.me, self.mine)
    }

    /// Whether a message of `sender` in incarnation `incarnation` may be taken: the first one
    /// seen of a member is recorded (durably) and taken; another one of the same member is
    /// refused with a message saying why. A sender of 0 (no identity) is taken unrecorded.
    pub fn check(&self, sender: NodeId, incarnation: u64) -> Result<(), String> {
        if sender == 0 || incarnation == 0 || sender == self.me {
            return Ok(());
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(&sender) {
            Some(k) if *k == incarnation => Ok(()),
            Some(k) => Err(format!(
                "member {sender:x} has a new data dir (incarnation {incarnation:x}; this cluster \
                 knows it as incarnation {k:x}): its data dir was wiped or replaced, and a member \
                 that lost its log must not vote; it rejoins only through a membership change"
            )),
            None => {
                known.insert(sender, incarnation);
                if let Err(e) = self.persist(&known) {
                    known.remove(&sender);
                    return Err(format!("recording member {sender:x}'s incarnation: {e}"));
                }
                Ok(())
            }
        }
    }

    fn persist(&self, known: &BTreeMap<NodeId, u64>) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        crate::disk::write_durably(dir, FILE, &codec::encode(known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_known_by_its_first_incarnation_for_good() {
        let dir = tempfile::tempdir().expect("tmp");
        let inc = Incarnations::open(dir.path(), 1, 0xa1).expect("open");
        assert_eq!(inc.check(2, 0xb1), Ok(()));
        assert_eq!(inc.check(2, 0xb1), Ok(()));
        let refused = inc.check(2, 0xb2).expect_err("a wiped member");
        assert!(refused.contains("member 2 has a new data dir"), "{refused}");
        // Kept across restarts.
        let again = Incarnations::open(dir.path(), 1, 0xa1).expect("reopen");
        assert!(again.check(2, 0xb2).is_err());
        assert_eq!(again.check(3, 0xc1), Ok(()));
        // Messages without an identity, and our own, are taken.
        assert_eq!(again.check(0, 5), Ok(()));
        assert_eq!(again.check(1, 0xffff), Ok(()));
    }
}
