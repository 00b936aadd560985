//! tandem's raft layer, shared by the data nodes and the witness: it replicates opaque entry
//! payloads and knows nothing of what they mean (no key-value data, none of etcd's API).
//!
//! - `types`: member ids and descriptions, the opaque [`Payload`], the bounds of a type
//!   configuration ([`Types`]).
//! - `codec`: the versioned byte form of everything stored or sent (and readers of old bytes).
//! - `wal`: the raft log's segment files and their recovery; `log_store`: openraft's log storage
//!   over them, fdatasynced before acknowledging, with group commit.
//! - `dial`: how a member dials its peers (TLS for `https://` peer URLs, the test routes).
//! - `network`: the peer transport (gRPC, `tandempb.RaftPeer`), client and service sides.
//! - `member`: routing to the leader, forwarding, ReadIndex rounds, publishing, status.
//! - `membership`: etcd's membership changes on the leader; finishing a half-done change.
//! - `engagement`: when the witness counts (W3), and what it is sent.
//! - `policy`: leadership decisions as pure functions (leader loss; which member confirms a
//!   read index).
//! - `read_confirm`: a read index confirmed by one data member instead of a round to every
//!   voter (the witness kept out of reads, decision 0015).
//! - `vote_backoff`: openraft 0.9's backoff after a vote lost to a greater log, without its
//!   stickiness (kept only while this member's log is behind).
//! - `disk`: whether a write failed because the disk is full (etcd's NOSPACE alarm).
//! - `mutants`: deliberately broken variants for the robustness suite (feature `mutants`, off
//!   by default, never in a release).

// openraft's traits fix the error type (`StorageError`, 224 bytes); helpers return it as is.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod dial;
pub mod disk;
pub mod engagement;
pub mod fence;
pub mod flushes;
pub mod held;
pub mod incarnation;
pub mod leadership;
pub mod log_store;
pub mod member;
pub mod membership;
pub mod mutants;
pub mod network;
pub mod peer_metrics;
pub mod policy;
pub mod prevote;
pub mod read_confirm;
pub mod transfers;
pub mod types;
pub mod vote_backoff;
pub mod wal;

/// The generated peer protocol (`proto/tandempb/peer.proto`).
#[allow(clippy::all, rust_2018_idioms)]
pub mod tandempb {
    tonic::include_proto!("tandempb");
}

pub use member::{Member, ReadPolicy, ReplicaError, ReplicaStatus};
pub use types::{MemberNode, NodeId, Payload, Types};
