//! Replication of the keyspace on a data node: the raft type configuration whose entries carry
//! batches of `mvcc::Command`s, the state machine that applies them to the keyspace in the same
//! order on every data node, and the member the server drives. The log, the transport and
//! everything a witness shares live in the `raft` crate.
//!
//! - `types`: the type configuration, [`types::Batch`] and its byte form in a payload.
//! - `state_machine`: applies committed entries to `mvcc::Store`, builds and installs snapshots.
//! - `replica`: one data node: opening, bootstrapping, proposing, linearizable read barriers.

// openraft's traits fix the error type (`StorageError`, 224 bytes); helpers return it as is.
#![allow(clippy::result_large_err)]

pub mod replica;
pub mod state_machine;
pub mod types;

pub use raft::{mutants, ReplicaError, ReplicaStatus};
pub use replica::{Replica, ReplicaConfig};
pub use state_machine::{stored_applied, AppliedState, ApplyListener};
pub use types::{MemberNode, NodeId, TypeConfig};
