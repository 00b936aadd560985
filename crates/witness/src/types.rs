//! The witness's raft type configuration: the same entries as the data nodes' (opaque
//! payloads), and nothing returned from applying them.

use std::io::Cursor;

use raft::types::{MemberNode, NodeId};
use raft::Payload;

openraft::declare_raft_types!(
    /// The witness's raft types; byte-compatible with the data nodes' on disk and on the wire.
    pub WitnessConfig:
        D = Payload,
        R = (),
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<WitnessConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<WitnessConfig>;
pub type Raft = openraft::Raft<WitnessConfig>;
