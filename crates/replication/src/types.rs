//! The data nodes' raft type configuration: a log entry's payload is a [`Batch`] of
//! `mvcc::Command`s in the raft layer's opaque [`raft::Payload`]; applying one returns
//! [`Applied`].

use std::io::Cursor;

use raft::Payload;
use serde::{Deserialize, Serialize};

pub use raft::types::{
    LogId, MemberNode, NodeId, SnapshotMeta, StorageError, StoredMembership, Vote,
};

/// The format of a batch's bytes inside a payload: postcard of `Vec<mvcc::Command>`. The
/// pre-witness log stored exactly these bytes (see `raft::codec::V1_BATCH_FORMAT`).
const BATCH_FORMAT_V1: u8 = raft::codec::V1_BATCH_FORMAT;

/// The commands proposed together (group commit: one entry, one log fsync and one replication
/// message for all of them). Each command still gets its own revision when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<mvcc::Command>);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("unknown batch format {0}")]
    Format(u8),
    #[error("an elided payload reached a data node's state machine")]
    Elided,
    #[error("empty payload")]
    Empty,
    #[error("decode: {0}")]
    Decode(#[from] postcard::Error),
}

impl Batch {
    pub fn encode(&self) -> Payload {
        let mut out = vec![BATCH_FORMAT_V1];
        // Our own commands always encode (the round-trip tests check it).
        out.extend(postcard::to_stdvec(&self.0).expect("postcard encoding of commands"));
        Payload::Data(out)
    }

    pub fn decode(p: &Payload) -> Result<Batch, BatchError> {
        let Payload::Data(b) = p else {
            return Err(BatchError::Elided);
        };
        match b.first() {
            None => Err(BatchError::Empty),
            Some(&BATCH_FORMAT_V1) => Ok(Batch(postcard::from_bytes(&b[1..])?)),
            Some(&v) => Err(BatchError::Format(v)),
        }
    }
}

/// What applying one command returned.
pub type CommandResult = Result<mvcc::CommandResponse, mvcc::Error>;

/// The results of applying one entry's batch, in command order, returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<CommandResult>);

openraft::declare_raft_types!(
    /// The data nodes' raft types.
    pub TypeConfig:
        D = Payload,
        R = Applied,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_through_payloads() {
        let put = mvcc::Command::Put(mvcc::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        let b = Batch(vec![put]);
        assert_eq!(Batch::decode(&b.encode()).expect("decode"), b);
        assert!(matches!(
            Batch::decode(&Payload::Elided),
            Err(BatchError::Elided)
        ));
    }

    /// A normal entry as the pre-witness tandem wrote it to `member/wal/` (codec version 1:
    /// the entry with its `Batch` inline) is read as the same batch.
    #[test]
    fn a_version_1_log_entry_still_applies_the_same_commands() {
        let put = mvcc::Command::Put(mvcc::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            ..Default::default()
        });
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 9);
        // Version 1's bytes: format byte, log id, variant 1 (normal), the batch.
        let mut v1 = vec![raft::codec::FORMAT_V1];
        v1.extend(postcard::to_stdvec(&(log_id, 1u32, vec![put.clone()])).expect("encode"));
        let e: Entry = raft::codec::decode_stored(&v1).expect("decode v1");
        assert_eq!(e.log_id, log_id);
        let openraft::EntryPayload::Normal(p) = e.payload else {
            panic!("not a normal entry");
        };
        assert_eq!(Batch::decode(&p).expect("batch"), Batch(vec![put]));
    }
}
