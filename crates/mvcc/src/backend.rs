//! The storage engine behind the keyspace: redb tables and the keys of the meta table. This is
//! the only module that names the engine's tables; see docs/durable-formats.md for every layout
//! and docs/decisions/0001-storage-engine.md for why redb.

use redb::TableDefinition;

/// Every change ever kept: etcd revision bytes (see `revision`) → `mvccpb.KeyValue` bytes.
/// The table name is etcd's bucket name, which `HashKV` hashes.
pub const KV: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("key");
/// Leases: id → granted TTL in seconds.
pub const LEASE: TableDefinition<'_, i64, i64> = TableDefinition::new("lease");
/// Small named values: the store's own counters and the replication layer's state.
pub const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The store's revision: the last revision any request produced.
pub const META_CURRENT: &str = "current_revision";
/// The revision of the last compaction.
pub const META_COMPACTED: &str = "compacted_revision";
/// Raised alarms (postcard-encoded list).
pub const META_ALARMS: &str = "alarms";
/// The authentication state (`auth::AuthState`): a version byte (1), then postcard.
pub const META_AUTH: &str = "auth";
/// The keyspace's layout version (8-byte big-endian), written when the file is created; a file
/// without it predates the marker and has layout 1.
pub const META_FORMAT: &str = "format";
/// The layout this build reads and writes (docs/durable-formats.md).
pub const FORMAT_VERSION: u64 = 1;
/// Prefix of the keys that callers (the replication layer) own.
pub const META_EXTERNAL_PREFIX: &str = "ext/";

/// The name `HashKV` hashes first, as etcd does with its bucket name.
pub const KV_BUCKET_NAME: &[u8] = b"key";
