//! Replication: the openraft glue that turns client mutations into log entries, makes them
//! durable, and applies them to the keyspace in the same order on every member.
//!
//! - `types`: the raft type configuration and the member description.
//! - `log_store`: the raft log and vote (openraft's log storage), fdatasynced before
//!   acknowledging, with group commit; `wal`: its segment files and their recovery.
//! - `state_machine`: applies committed entries to `mvcc::Store`, builds and installs snapshots.
//! - `network`: the peer transport (gRPC, `tandempb.RaftPeer`), client and service sides.
//! - `mutants`: deliberately broken variants for the robustness suite (feature `mutants`, off
//!   by default, never in a release).
//! - `disk`: whether a write failed because the disk is full (etcd's NOSPACE alarm).
//! - `replica`: one member: opening, bootstrapping, proposing, linearizable read barriers.

// openraft's traits fix the error type (`StorageError`, 224 bytes); helpers return it as is.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod disk;
pub mod log_store;
pub mod mutants;
pub mod network;
pub mod replica;
pub mod state_machine;
pub mod types;
pub mod wal;

pub use replica::{Replica, ReplicaConfig, ReplicaError, ReplicaStatus};
pub use state_machine::ApplyListener;
pub use types::{MemberNode, NodeId, TypeConfig};
