//! The revisioned key-value store behind tandem: etcd's MVCC model (one global revision per
//! mutating request, per-key create/mod revision and version, history readable until
//! compaction), leases and their key attachments, and the event feed that watches consume.
//!
//! This crate is synchronous and deterministic: it never reads a clock, spawns a task or talks to
//! the network. Every mutation arrives as a [`Command`] that the replicated log has already
//! ordered; applying the same commands in the same order gives byte-identical state (checked by
//! [`Store::hash_kv`]). The storage engine (redb) is named only in `backend`.

pub mod auth;
mod backend;
mod encoding;
mod error;
mod gosort;
mod index;
mod request;
mod revision;
mod snapshot;
mod store;

pub use error::{Error, Result};
pub use request::*;
pub use revision::Revision;
pub use store::{
    AppliedBatch, ExportSink, Importer, Outcome, Store, StoreStatus, SyncFaults,
    DEFAULT_CACHE_BYTES,
};

/// The most operations one txn may hold (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS_DEFAULT: usize = 128;
/// The largest lease TTL etcd accepts, in seconds.
pub const MAX_LEASE_TTL_SECONDS: i64 = 9_000_000_000;
