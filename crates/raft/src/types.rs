//! The raft vocabulary every member shares, the witness included: member ids and descriptions,
//! the opaque entry payload, and the bounds a type configuration must meet to use this crate's
//! log store and transport. Nothing here knows what a payload means: the key-value state machine
//! (crate `replication`) encodes and decodes its own bytes.

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
    /// A witness votes and keeps log ids (and, while engaged, payloads) but holds no key-value
    /// data and serves no client (`--initial-cluster-witness`).
    pub witness: bool,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.witness { " witness" } else { "" };
        write!(f, "{}({}){role}", self.name, self.peer_urls.join(","))
    }
}

/// The payload of a normal log entry, opaque to the raft layer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The state machine's bytes (their first byte is the state machine's own format version).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A witness kept only this entry's id; the payload is on every data node. A data node
    /// never receives one (the transport refuses to send it) and never applies one.
    Elided,
}

impl Payload {
    /// The payload's size in bytes (0 when elided).
    pub fn len(&self) -> usize {
        match self {
            Payload::Data(b) => b.len(),
            Payload::Elided => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Data(b) => write!(f, "payload of {} bytes", b.len()),
            Payload::Elided => write!(f, "elided payload"),
        }
    }
}

/// A raft type configuration this crate can store and send: entries carry [`Payload`], members
/// are [`MemberNode`]s, snapshots are bytes. The response type is each state machine's own (the
/// key-value one returns its commands' results; the witness returns nothing), and never
/// travels in log entries, so the witness and the data nodes share every byte on disk and on
/// the wire.
pub trait Types:
    openraft::RaftTypeConfig<
    D = Payload,
    NodeId = NodeId,
    Node = MemberNode,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
    AsyncRuntime = openraft::TokioRuntime,
    Responder = openraft::impls::OneshotResponder<Self>,
    R: fmt::Debug,
>
{
}

impl<T> Types for T where
    T: openraft::RaftTypeConfig<
        D = Payload,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<T>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<T>,
        R: fmt::Debug,
    >
{
}

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry<C> = openraft::Entry<C>;
pub type Membership = openraft::Membership<NodeId, MemberNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Metrics = openraft::RaftMetrics<NodeId, MemberNode>;

/// A type configuration for this crate's own tests.
#[cfg(test)]
pub(crate) mod test_types {
    use super::*;

    openraft::declare_raft_types!(
        pub Test:
            D = Payload,
            R = (),
            NodeId = NodeId,
            Node = MemberNode,
            Entry = openraft::Entry<Test>,
            SnapshotData = Cursor<Vec<u8>>,
    );
}
