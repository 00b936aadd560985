//! The raft type configuration: what a log entry carries (an `mvcc::Command`), what applying
//! one returns, and how a member is described.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A member's id (etcd's member ID). Not a log index, not a revision.
pub type NodeId = u64;

/// What the cluster knows of a member, replicated in membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.peer_urls.join(","))
    }
}

/// The payload of a normal log entry: the commands proposed together (group commit: one entry,
/// one log fsync and one replication message for all of them). Each command still gets its own
/// revision when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<mvcc::Command>);

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} commands", self.0.len())
    }
}

/// What applying one command returned.
pub type CommandResult = Result<mvcc::CommandResponse, mvcc::Error>;

/// The results of applying one entry's batch, in command order, returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<CommandResult>);

openraft::declare_raft_types!(
    /// tandem's raft types.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
