//! The keyspace: reads at any kept revision, the deterministic application of [`Command`]s in
//! batches (one engine commit per batch), compaction, leases, alarms, hashing, snapshots and
//! defragmentation.
//!
//! Concurrency: one `RwLock` guards the engine handle together with the in-memory index, and a
//! batch holds the write side from its first change to its commit. A reader therefore always sees
//! an index and an engine state of the same commit: it collects revisions under the read lock and
//! opens its engine snapshot before releasing it, so a later compaction cannot delete records it
//! is about to read.
//!
//! Reads of the latest state share one engine snapshot of the key-value table
//! (`Inner::kv_reader`), opened by the first read after a change: beginning a transaction and
//! opening a table for every Range cost about 2.5% of a leader's CPU under 1,000 readers. Taking
//! the write side drops it, so no read after a change can see the state before it, and no
//! snapshot of ours holds up a compaction or a defragmentation.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::auth::{AuthState, Caller, PermType};
use crate::backend::*;
use crate::encoding::{decode_kv, encode_kv};
use crate::error::{Error, Result};
use crate::gosort;
use crate::index::{Entry, TreeIndex};
use crate::request::*;
use crate::revision::Revision;

/// The result of applying one command: what the proposer gets back, and the events watchers see.
#[derive(Debug)]
pub struct Outcome {
    pub response: Result<CommandResponse>,
    pub events: Vec<Event>,
}

/// The outcomes of one applied batch, in command order.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub outcomes: Vec<Outcome>,
}

/// Sizes and counters reported by `Status` and used by the quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    pub revision: i64,
    pub compacted: i64,
    /// Bytes of the database file.
    pub db_size: i64,
    /// Bytes of the database file holding live data.
    pub db_size_in_use: i64,
    pub index_entries: usize,
    /// Keys in the index, deleted ones included until compaction (etcd's keys_total).
    pub index_keys: usize,
}

struct LeaseState {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

struct Inner {
    db: Database,
    index: TreeIndex,
    current: i64,
    compacted: i64,
    leases: BTreeMap<i64, LeaseState>,
    alarms: BTreeSet<Alarm>,
    /// Users, roles and permissions; replaced whole by a change.
    auth: Arc<AuthState>,
    /// The key-value table as of the last change, shared by reads until the next write lock.
    kv_reader: Mutex<Option<Arc<KvReader>>>,
}

type KvReader = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Inner {
    /// The shared snapshot of the key-value table (opened now if none is).
    fn kv_reader(&self) -> Result<Arc<KvReader>> {
        let mut cached = self.kv_reader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = &*cached {
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(self.db.begin_read()?.open_table(KV)?);
        *cached = Some(Arc::clone(&table));
        Ok(table)
    }
}

/// The revisioned keyspace in one database file.
pub struct Store {
    inner: RwLock<Inner>,
    path: PathBuf,
    /// Whether authentication is enabled, readable without the lock: with it off (the common
    /// case) a request needs nothing else of the auth state.
    auth_enabled: AtomicBool,
    /// The first write that failed, after which every write is refused ([`Store::begin_write`]).
    /// redb latches an I/O failure of its own, but a non-durable commit reaches no file and
    /// would still succeed: over pages that the failed fdatasync may have let the kernel drop,
    /// and without the member noticing until its next durable commit.
    failed: std::sync::OnceLock<String>,
}

type KvTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

fn get_i64(meta: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<i64> {
    match meta.get(key)? {
        Some(v) => {
            let b: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| Error::Corrupt(format!("meta {key}")))?;
            Ok(i64::from_be_bytes(b))
        }
        None => Ok(0),
    }
}

fn read_kv(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    rev: Revision,
) -> Result<KeyValue> {
    let v = table.get(rev.to_key(false).as_slice())?.ok_or_else(|| {
        Error::Corrupt(format!("index names revision {rev:?} that is not stored"))
    })?;
    decode_kv(v.value())
}

/// redb's page cache by default (its own default is 1 GiB, which kept most of the database
/// resident: RSS 186 MiB after 200k puts against etcd's 156 MiB). Pages beyond it are read back
/// through the OS page cache, which costs reads CPU: the trade, and why 24 MiB, is in
/// `docs/decisions/0014-keyspace-page-cache.md`.
pub const DEFAULT_CACHE_BYTES: usize = 24 * 1024 * 1024;

/// Verifies every page of the keyspace file against redb's checksums before anything is read
/// from it, so that a damaged file refuses to start instead of serving wrong data (a flipped
/// byte was served silently, as etcd serves one). It reads the file once, as loading the key
/// index does anyway.
fn check_integrity(db: &mut Database, path: &Path) -> Result<()> {
    match db.check_integrity() {
        Ok(true) => Ok(()),
        Ok(false) => {
            // redb went back to its last intact commit; the raft log replays what follows it.
            tracing::warn!(path = %path.display(), "keyspace file repaired by redb's integrity check");
            Ok(())
        }
        Err(e) => Err(refusal(e, path)),
    }
}

/// A keyspace file redb finds corrupt (at open, or in its integrity check) refuses the start,
/// naming the file and what to do; other errors pass as they are.
fn refusal(e: redb::DatabaseError, path: &Path) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            Error::Corrupt(format!(
                "refusing to start: the keyspace file {} fails its integrity check ({what}). In a \
             cluster, remove this member's data directory and add the member back (etcdctl \
             member remove, then member add) so that it copies the data from its peers; a \
             single member must be restored from a snapshot (tandem-ctl snapshot restore)",
                path.display()
            ))
        }
        e => e.into(),
    }
}

/// Marks a new keyspace with this build's layout; refuses one of a layout it does not know.
fn settle_format(meta: &mut redb::Table<'_, &str, &[u8]>, path: &Path) -> Result<()> {
    let found = meta.get(META_FORMAT)?.map(|v| v.value().to_vec());
    match found.as_deref().map(<[u8; 8]>::try_from) {
        None => {
            meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
            Ok(())
        }
        Some(Ok(v)) if u64::from_be_bytes(v) == FORMAT_VERSION => Ok(()),
        Some(v) => Err(Error::UnsupportedFormat(format!(
            "refusing to start: the keyspace file {} has layout {}, which this version of \
             tandem does not know (it reads layout {FORMAT_VERSION}); a newer tandem wrote it. \
             Start the tandem release that wrote it, or move the data: with that release, take \
             a snapshot (`etcdctl snapshot save FILE`), then `tandem-ctl snapshot restore FILE \
             --data-dir NEW_DIR ...` and start this tandem on NEW_DIR (docs/migration.md)",
            path.display(),
            match v {
                Ok(v) => u64::from_be_bytes(v).to_string(),
                Err(_) => "unreadable".to_string(),
            }
        ))),
    }
}

/// Makes the flushes of a [`Store::in_memory_with_sync_faults`] fail.
#[derive(Clone, Debug, Default)]
pub struct SyncFaults(Arc<AtomicBool>);

impl SyncFaults {
    /// Every flush from now on fails with EIO.
    pub fn fail(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct FaultyMemory {
    memory: redb::backends::InMemoryBackend,
    fail_syncs: Arc<AtomicBool>,
}

impl redb::StorageBackend for FaultyMemory {
    fn len(&self) -> std::io::Result<u64> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if self.fail_syncs.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.memory.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.memory.write(offset, data)
    }
}

impl Store {
    /// Opens (or creates) the keyspace at `path` and rebuilds the key index from it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (see [`DEFAULT_CACHE_BYTES`]).
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // A file whose every commit root is damaged fails here, before the integrity check.
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| refusal(e, &path))?;
        Self::open_db(db, path)
    }

    /// A keyspace in memory whose flushes to disk fail once [`SyncFaults::fail`] is called: for
    /// tests of what a failed fdatasync does (black-box tests meet it through strace).
    pub fn in_memory_with_sync_faults() -> Result<(Self, SyncFaults)> {
        let faults = SyncFaults::default();
        let backend = FaultyMemory {
            memory: redb::backends::InMemoryBackend::new(),
            fail_syncs: Arc::clone(&faults.0),
        };
        let db = Database::builder().create_with_backend(backend)?;
        Ok((Self::open_db(db, PathBuf::from("(in memory)"))?, faults))
    }

    fn open_db(mut db: Database, path: PathBuf) -> Result<Self> {
        check_integrity(&mut db, &path)?;
        let w = db.begin_write()?;
        w.open_table(KV)?;
        w.open_table(LEASE)?;
        settle_format(&mut w.open_table(META)?, &path)?;
        w.commit()?;
        let mut inner = Inner {
            db,
            index: TreeIndex::default(),
            current: 0,
            compacted: 0,
            leases: BTreeMap::new(),
            alarms: BTreeSet::new(),
            auth: Arc::default(),
            kv_reader: Mutex::new(None),
        };
        inner.load()?;
        Ok(Self {
            auth_enabled: AtomicBool::new(inner.auth.enabled),
            inner: RwLock::new(inner),
            path,
            failed: std::sync::OnceLock::new(),
        })
    }

    /// A write transaction, unless an earlier write failed: then the failure, again (the
    /// caller stops the member; only a restart, which checks the file, clears it).
    fn begin_write(&self, inner: &Inner) -> Result<redb::WriteTransaction> {
        if let Some(first) = self.failed.get() {
            return Err(Error::Storage(format!(
                "an earlier write to {} failed ({first}); the keyspace takes no more writes until \
                 the member is restarted",
                self.path.display()
            )));
        }
        inner.db.begin_write().map_err(|e| self.failing(e.into()))
    }

    /// Commits `tx`; a failure refuses every later write.
    fn commit(&self, tx: redb::WriteTransaction) -> Result<()> {
        tx.commit().map_err(|e| self.failing(e.into()))
    }

    /// Notes `e`, a failed write, so that no later write is taken; returns it.
    fn failing(&self, e: Error) -> Error {
        if self.failed.set(e.to_string()).is_ok() {
            tracing::error!(path = %self.path.display(), error = %e, "a keyspace write failed; no more are taken");
        }
        e
    }

    /// Whether a write has failed (and none is taken any more).
    pub fn write_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The write side; it drops the shared read snapshot (whatever the writer changes, no
    /// later read may see the state before it).
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *inner.kv_reader.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        inner
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The revision of the last change.
    pub fn current_revision(&self) -> i64 {
        self.read().current
    }

    /// The revision of the last compaction (0 if none).
    pub fn compacted_revision(&self) -> i64 {
        self.read().compacted
    }

    /// Serves a read. The response's `revision` is the store's current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let inner = self.read();
        let table = inner.kv_reader()?;
        range_in(&inner.index, &*table, inner.current, inner.compacted, req)
    }

    /// Applies commands in log order as one engine commit. `meta` is written in the same commit
    /// (the replication layer records its applied position there). With `durable` the commit is
    /// on disk when this returns; without, it becomes durable with the next durable commit.
    ///
    /// An `Err` is a storage failure: the batch may be partially applied in memory and the caller
    /// must stop the node.
    pub fn apply(
        &self,
        cmds: &[Command],
        meta: &[(&str, Vec<u8>)],
        durable: bool,
    ) -> Result<AppliedBatch> {
        let mut inner = self.write();
        let tx = self.begin_write(&inner)?;
        // Any failure from here on leaves the batch partially applied in memory.
        self.apply_in(&mut inner, tx, cmds, meta, durable)
            .map_err(|e| self.failing(e))
    }

    fn apply_in(
        &self,
        inner: &mut Inner,
        mut tx: redb::WriteTransaction,
        cmds: &[Command],
        meta: &[(&str, Vec<u8>)],
        durable: bool,
    ) -> Result<AppliedBatch> {
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut batch = AppliedBatch::default();
        let auth_before = Arc::clone(&inner.auth);
        {
            let mut kv = tx.open_table(KV)?;
            let mut lease = tx.open_table(LEASE)?;
            let mut metat = tx.open_table(META)?;
            for cmd in cmds {
                let mut w = Writer {
                    inner: &mut *inner,
                    kv: &mut kv,
                    lease: &mut lease,
                    sub: 0,
                    events: Vec::new(),
                };
                let response = w.apply(cmd)?;
                let events = std::mem::take(&mut w.events);
                if w.sub > 0 {
                    inner.current += 1;
                }
                batch.outcomes.push(Outcome {
                    response: response.map(|r| r.with_revision(inner.current)),
                    events,
                });
            }
            metat.insert(META_CURRENT, inner.current.to_be_bytes().as_slice())?;
            metat.insert(META_COMPACTED, inner.compacted.to_be_bytes().as_slice())?;
            let alarms: Vec<Alarm> = inner.alarms.iter().copied().collect();
            let encoded =
                postcard::to_stdvec(&alarms).map_err(|e| Error::Storage(e.to_string()))?;
            metat.insert(META_ALARMS, encoded.as_slice())?;
            if !Arc::ptr_eq(&auth_before, &inner.auth) {
                metat.insert(META_AUTH, encode_auth(&inner.auth)?.as_slice())?;
            }
            for (k, v) in meta {
                let key = format!("{META_EXTERNAL_PREFIX}{k}");
                metat.insert(key.as_str(), v.as_slice())?;
            }
        }
        tx.commit()?;
        self.auth_enabled
            .store(inner.auth.enabled, Ordering::Release);
        Ok(batch)
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<()> {
        let inner = self.write();
        let mut tx = self.begin_write(&inner)?;
        tx.set_durability(Durability::Immediate)?;
        self.commit(tx)
    }

    /// A value the replication layer stored with [`Store::apply`].
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let inner = self.read();
        let tx = inner.db.begin_read()?;
        let t = tx.open_table(META)?;
        let key = format!("{META_EXTERNAL_PREFIX}{key}");
        Ok(t.get(key.as_str())?.map(|v| v.value().to_vec()))
    }

    /// The changes with revision in `[from, to]` whose key is in `range`, in revision order,
    /// with previous values when `prev_kv`. `from` must not be below the compacted revision.
    /// At most `limit` revisions are returned (all events of a revision stay together), so a
    /// watcher catching up reads history in bounded pieces.
    pub fn events(
        &self,
        range: KeyRange<'_>,
        from: i64,
        to: i64,
        prev_kv: bool,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let inner = self.read();
        if from < inner.compacted {
            return Err(Error::Compacted);
        }
        let tx = inner.db.begin_read()?;
        let table = tx.open_table(KV)?;
        let lower = Revision::new(from, 0).lower_key();
        let upper = Revision::new(to.saturating_add(1), 0).lower_key();
        let mut out = Vec::new();
        let mut revisions = 0usize;
        let mut last_main = 0;
        for item in table.range::<&[u8]>(lower.as_slice()..upper.as_slice())? {
            let (k, v) = item?;
            let (rev, tombstone) = Revision::from_key(k.value())
                .ok_or_else(|| Error::Corrupt("revision key".into()))?;
            if rev.main != last_main {
                if revisions == limit {
                    break;
                }
                revisions += 1;
                last_main = rev.main;
            }
            let mut kv = decode_kv(v.value())?;
            if !range.contains(&kv.key) {
                continue;
            }
            let prev = if prev_kv {
                match inner.index.get(&kv.key).and_then(|h| h.before(rev)) {
                    Some(e) if !e.is_tombstone() => Some(read_kv(&table, e.rev)?),
                    _ => None,
                }
            } else {
                None
            };
            let kind = if tombstone {
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            out.push(Event {
                kind,
                kv,
                prev_kv: prev,
            });
        }
        Ok(out)
    }

    /// etcd's `HashKV`: a CRC-32C over the records up to `rev`, as etcd computes it over its key
    /// bucket, so equal histories give equal hashes on tandem and etcd. Returns `(hash, compacted revision or -1 if none, hashed revision)`.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let inner = self.read();
        let rev = if rev <= 0 { inner.current } else { rev };
        if rev > inner.current {
            return Err(Error::FutureRevision);
        }
        if rev < inner.compacted {
            return Err(Error::Compacted);
        }
        // As etcd: below the compaction point only each key's live revision as of `rev` counts
        // (its `Keep(rev)`), unless no key is live then, in which case everything kept counts.
        let keep: std::collections::HashSet<Revision> = inner
            .index
            .range(KeyRange::From(b""))
            .filter_map(|(_, h)| h.at(rev).map(|e| e.rev))
            .collect();
        let tx = inner.db.begin_read()?;
        let table = tx.open_table(KV)?;
        let upper = Revision::new(rev + 1, 0).lower_key();
        let mut h = crc32c::crc32c(KV_BUCKET_NAME);
        for item in table.range::<&[u8]>(..upper.as_slice())? {
            let (k, v) = item?;
            let (r, _) = Revision::from_key(k.value())
                .ok_or_else(|| Error::Corrupt("revision key".into()))?;
            if r.main <= inner.compacted && !keep.is_empty() && !keep.contains(&r) {
                continue;
            }
            h = crc32c::crc32c_append(h, k.value());
            h = crc32c::crc32c_append(h, v.value());
        }
        // etcd reports -1 while nothing was ever compacted.
        let compacted = if inner.compacted == 0 {
            -1
        } else {
            inner.compacted
        };
        Ok((h, compacted, rev))
    }

    /// A lease and its attached keys.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        let inner = self.read();
        inner.leases.get(&id).map(|l| LeaseInfo {
            id,
            ttl: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Every lease as `(id, granted TTL)`, in id order.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.read()
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect()
    }

    /// Whether authentication is enabled, as of the last applied batch.
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Acquire)
    }

    /// The authentication state as of the last applied command.
    pub fn auth(&self) -> Arc<AuthState> {
        Arc::clone(&self.read().auth)
    }

    pub fn alarms(&self) -> Vec<Alarm> {
        self.read().alarms.iter().copied().collect()
    }

    pub fn status(&self) -> Result<StoreStatus> {
        let inner = self.read();
        let db_size = std::fs::metadata(&self.path)
            .map_err(|e| Error::Storage(e.to_string()))?
            .len() as i64;
        let tx = inner.db.begin_read()?;
        // The key-value table is nearly all of the file; leases and meta are a few pages.
        let s = tx.open_table(KV)?.stats()?;
        let in_use = s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes();
        Ok(StoreStatus {
            revision: inner.current,
            compacted: inner.compacted,
            db_size,
            db_size_in_use: (in_use as i64).min(db_size),
            index_entries: inner.index.entries(),
            index_keys: inner.index.keys(),
        })
    }

    /// Rewrites the database file without free space (etcd's defragment). Fails with
    /// [`Error::Storage`] only on I/O failure; while readers hold snapshots it retries a while.
    pub fn defragment(&self) -> Result<()> {
        let mut inner = self.write();
        let mut tx = self.begin_write(&inner)?;
        tx.set_durability(Durability::Immediate)?;
        self.commit(tx)?;
        loop {
            match inner.db.compact() {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(redb::CompactionError::TransactionInProgress) => return Err(Error::Busy),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes every record of the keyspace (a consistent point-in-time copy) to `w`. Returns the
    /// caller's meta value `meta_key` as of that same point.
    pub fn snapshot_to(&self, w: &mut dyn Write, meta_key: &str) -> Result<Option<Vec<u8>>> {
        let (tx, current, compacted) = {
            let inner = self.read();
            (inner.db.begin_read()?, inner.current, inner.compacted)
        };
        let external = format!("{META_EXTERNAL_PREFIX}{meta_key}");
        let meta_value = tx
            .open_table(META)?
            .get(external.as_str())?
            .map(|v| v.value().to_vec());
        let mut sw = crate::snapshot::Writer::new(w)?;
        sw.header(current, compacted)?;
        for item in tx.open_table(KV)?.iter()? {
            let (k, v) = item?;
            sw.record(crate::snapshot::TAG_KV, k.value(), v.value())?;
        }
        for item in tx.open_table(LEASE)?.iter()? {
            let (k, v) = item?;
            sw.record(
                crate::snapshot::TAG_LEASE,
                &k.value().to_be_bytes(),
                &v.value().to_be_bytes(),
            )?;
        }
        for item in tx.open_table(META)?.iter()? {
            let (k, v) = item?;
            sw.record(crate::snapshot::TAG_META, k.value().as_bytes(), v.value())?;
        }
        sw.finish()?;
        Ok(meta_value)
    }

    /// Hands a consistent point-in-time copy of the keyspace to `sink`, record by record in
    /// key order (etcd's backup format is written from this, `etcd-db`). Returns the caller's
    /// meta value `meta_key` as of that same point.
    pub fn export(&self, sink: &mut dyn ExportSink, meta_key: &str) -> Result<Option<Vec<u8>>> {
        let (tx, current, compacted) = {
            let inner = self.read();
            (inner.db.begin_read()?, inner.current, inner.compacted)
        };
        let meta = tx.open_table(META)?;
        let external = format!("{META_EXTERNAL_PREFIX}{meta_key}");
        let meta_value = meta.get(external.as_str())?.map(|v| v.value().to_vec());
        sink.revisions(current, compacted)?;
        for item in tx.open_table(KV)?.iter()? {
            let (k, v) = item?;
            sink.kv(k.value(), v.value())?;
        }
        for item in tx.open_table(LEASE)?.iter()? {
            let (k, v) = item?;
            sink.lease(k.value(), v.value())?;
        }
        let auth = match meta.get(META_AUTH)? {
            Some(v) => decode_auth(v.value())?,
            None => AuthState::default(),
        };
        sink.auth(&auth)?;
        let alarms = match meta.get(META_ALARMS)? {
            Some(v) => postcard::from_bytes::<Vec<Alarm>>(v.value())
                .map_err(|e| Error::Corrupt(format!("alarms: {e}")))?,
            None => Vec::new(),
        };
        sink.alarms(&alarms)?;
        Ok(meta_value)
    }

    /// Starts filling this keyspace, which must be empty, from a copy kept elsewhere (a backup
    /// being restored, `etcd-db`): see [`Importer`].
    pub fn importer(&self) -> Result<Importer<'_>> {
        let empty = {
            let inner = self.read();
            inner.index.is_empty() && inner.leases.is_empty() && inner.compacted == 0
        };
        if !empty {
            return Err(Error::Storage(
                "a keyspace is imported only into an empty one".into(),
            ));
        }
        Ok(Importer {
            store: self,
            kvs: Vec::new(),
            leases: Vec::new(),
            pending_bytes: 0,
            last_main: 0,
        })
    }

    /// Replaces the whole keyspace with a copy written by [`Store::snapshot_to`], durably.
    pub fn restore_from(&self, r: &mut dyn Read) -> Result<()> {
        let mut inner = self.write();
        let mut tx = self.begin_write(&inner)?;
        tx.set_durability(Durability::Immediate)?;
        tx.delete_table(KV)?;
        tx.delete_table(LEASE)?;
        tx.delete_table(META)?;
        {
            let mut kv = tx.open_table(KV)?;
            let mut lease = tx.open_table(LEASE)?;
            let mut meta = tx.open_table(META)?;
            let mut sr = crate::snapshot::Reader::new(r)?;
            while let Some((tag, k, v)) = sr.next()? {
                match tag {
                    crate::snapshot::TAG_KV => {
                        kv.insert(k.as_slice(), v.as_slice())?;
                    }
                    crate::snapshot::TAG_LEASE => {
                        let id = i64::from_be_bytes(
                            k.try_into()
                                .map_err(|_| Error::Corrupt("lease id".into()))?,
                        );
                        let ttl = i64::from_be_bytes(
                            v.try_into()
                                .map_err(|_| Error::Corrupt("lease ttl".into()))?,
                        );
                        lease.insert(id, ttl)?;
                    }
                    crate::snapshot::TAG_META => {
                        let k =
                            String::from_utf8(k).map_err(|_| Error::Corrupt("meta key".into()))?;
                        meta.insert(k.as_str(), v.as_slice())?;
                    }
                    t => return Err(Error::Corrupt(format!("snapshot record tag {t}"))),
                }
            }
        }
        self.commit(tx)?;
        inner.load()?;
        self.auth_enabled
            .store(inner.auth.enabled, Ordering::Release);
        Ok(())
    }
}

impl Inner {
    /// Rebuilds the in-memory state from the engine.
    fn load(&mut self) -> Result<()> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        // A new store is at revision 1, as etcd's is: the first change gets revision 2.
        self.current = get_i64(&meta, META_CURRENT)?.max(1);
        self.compacted = get_i64(&meta, META_COMPACTED)?;
        self.alarms = match meta.get(META_ALARMS)? {
            Some(v) => postcard::from_bytes::<Vec<Alarm>>(v.value())
                .map_err(|e| Error::Corrupt(format!("alarms: {e}")))?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        };
        self.auth = Arc::new(match meta.get(META_AUTH)? {
            Some(v) => decode_auth(v.value())?,
            None => AuthState::default(),
        });
        self.index = TreeIndex::default();
        let kv = tx.open_table(KV)?;
        for item in kv.iter()? {
            let (k, v) = item?;
            let (rev, tombstone) = Revision::from_key(k.value())
                .ok_or_else(|| Error::Corrupt("revision key".into()))?;
            let rec = decode_kv(v.value())?;
            let e = if tombstone {
                Entry {
                    rev,
                    create: 0,
                    version: 0,
                    lease: 0,
                }
            } else {
                Entry {
                    rev,
                    create: rec.create_revision,
                    version: rec.version,
                    lease: rec.lease,
                }
            };
            self.index.push(&rec.key, e);
        }
        self.leases = BTreeMap::new();
        for item in tx.open_table(LEASE)?.iter()? {
            let (id, ttl) = item?;
            self.leases.insert(
                id.value(),
                LeaseState {
                    ttl: ttl.value(),
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, h) in self.index.range(KeyRange::From(b"")) {
            if let Some(e) = h.latest().filter(|e| !e.is_tombstone() && e.lease != 0) {
                if let Some(l) = self.leases.get_mut(&e.lease) {
                    l.keys.insert(key.clone());
                }
            }
        }
        Ok(())
    }
}

/// Serves a range over an index and a table of the same commit. `pending` changes of an
/// unfinished request are visible through `current` (see `Writer::read_rev`).
fn range_in(
    index: &TreeIndex,
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    current: i64,
    compacted: i64,
    req: &RangeRequest,
) -> Result<RangeResponse> {
    let rev = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if rev > current {
        return Err(Error::FutureRevision);
    }
    if rev < compacted {
        return Err(Error::Compacted);
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let keep = |e: &Entry| {
        (req.min_mod_revision == 0 || e.rev.main >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || e.rev.main <= req.max_mod_revision)
            && (req.min_create_revision == 0 || e.create >= req.min_create_revision)
            && (req.max_create_revision == 0 || e.create <= req.max_create_revision)
    };
    // etcd sorts ascending by default when a non-key target is named, and treats an ascending
    // key sort as the natural order.
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => {
            SortOrder::None
        }
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let limit = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    // etcd fetches everything only when a sort order is asked for or a filter is set; otherwise
    // the first `limit + 1` keys in key order, which a non-key target then sorts (so such a
    // sort covers only those keys).
    let fetch_max = if req.sort_order == SortOrder::None && !filtered {
        limit.saturating_add(1)
    } else {
        usize::MAX
    };
    let range = KeyRange::new(&req.key, &req.range_end);
    let mut count = 0i64;
    let mut matches: Vec<(&[u8], Entry)> = Vec::new();
    let mut fetched = 0;
    for (k, h) in index.range(range) {
        if let Some(e) = h.at(rev) {
            count += 1;
            if !req.count_only && fetched < fetch_max {
                fetched += 1;
                if !filtered || keep(e) {
                    matches.push((k.as_slice(), *e));
                }
            }
        }
    }
    if req.count_only {
        return Ok(RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
            revision: current,
        });
    }
    // etcd's sort is Go's unstable `sort.Sort`: equal elements come out in its order.
    let descend = order == SortOrder::Descend;
    let mut kvs = Vec::new();
    if req.sort_target == SortTarget::Value && order != SortOrder::None {
        for (_, e) in &matches {
            kvs.push(read_kv(table, e.rev)?);
        }
        gosort::sort_ordered(&mut kvs, descend, |a, b| a.value < b.value);
    } else {
        if order != SortOrder::None {
            let less = |a: &(&[u8], Entry), b: &(&[u8], Entry)| match req.sort_target {
                SortTarget::Key => a.0 < b.0,
                SortTarget::Version => a.1.version < b.1.version,
                SortTarget::Create => a.1.create < b.1.create,
                SortTarget::Mod => a.1.rev.main < b.1.rev.main,
                SortTarget::Value => false,
            };
            gosort::sort_ordered(&mut matches, descend, less);
        }
        for (_, e) in matches.iter().take(limit) {
            kvs.push(read_kv(table, e.rev)?);
        }
        if matches.len() > limit {
            // Marks `more` below without fetching the extra record.
            kvs.push(KeyValue::default());
        }
    }
    let more = kvs.len() > limit;
    kvs.truncate(limit);
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResponse {
        kvs,
        more,
        count,
        revision: current,
    })
}

/// Receives a copy of the keyspace from [`Store::export`]: the revisions first, then every
/// stored change in revision order, every lease in id order, the auth state and the alarms.
pub trait ExportSink {
    /// The store's revision and the last compaction's.
    fn revisions(&mut self, current: i64, compacted: i64) -> Result<()>;
    /// One stored change: etcd's revision bytes and its `mvccpb.KeyValue` bytes.
    fn kv(&mut self, revision: &[u8], value: &[u8]) -> Result<()>;
    /// One lease and its granted TTL in seconds.
    fn lease(&mut self, id: i64, ttl: i64) -> Result<()>;
    fn auth(&mut self, auth: &AuthState) -> Result<()>;
    fn alarms(&mut self, alarms: &[Alarm]) -> Result<()>;
}

/// Records are written once this many key and value bytes wait (bounds an import's memory).
const IMPORT_BATCH_BYTES: usize = 8 << 20;

/// Fills an empty keyspace record by record ([`Store::importer`]): every stored change in
/// revision order, every lease, then [`Importer::finish`] with the compaction point, the auth
/// state and the alarms, which commits durably and loads the keyspace as opening it would.
pub struct Importer<'a> {
    store: &'a Store,
    kvs: Vec<(Vec<u8>, Vec<u8>)>,
    leases: Vec<(i64, i64)>,
    pending_bytes: usize,
    /// The highest main revision imported so far.
    last_main: i64,
}

impl Importer<'_> {
    /// One stored change: etcd's revision bytes and its `mvccpb.KeyValue` bytes, checked.
    pub fn kv(&mut self, revision: &[u8], value: &[u8]) -> Result<()> {
        let (rev, _) = Revision::from_key(revision)
            .ok_or_else(|| Error::Corrupt(format!("revision key {revision:?}")))?;
        decode_kv(value)?;
        self.last_main = self.last_main.max(rev.main);
        self.pending_bytes += revision.len() + value.len();
        self.kvs.push((revision.to_vec(), value.to_vec()));
        self.flush_if_full()
    }

    /// One lease and its granted TTL in seconds.
    pub fn lease(&mut self, id: i64, ttl: i64) -> Result<()> {
        self.pending_bytes += 16;
        self.leases.push((id, ttl));
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.pending_bytes >= IMPORT_BATCH_BYTES {
            self.flush(None)?;
        }
        Ok(())
    }

    /// Writes what waits; with `meta`, also the meta records, durably.
    fn flush(&mut self, meta: Option<&[(&str, Vec<u8>)]>) -> Result<()> {
        let inner = self.store.write();
        let mut tx = self.store.begin_write(&inner)?;
        if meta.is_some() {
            tx.set_durability(Durability::Immediate)?;
        } else {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut kv = tx.open_table(KV)?;
            for (k, v) in self.kvs.drain(..) {
                kv.insert(k.as_slice(), v.as_slice())?;
            }
            let mut lease = tx.open_table(LEASE)?;
            for (id, ttl) in self.leases.drain(..) {
                lease.insert(id, ttl)?;
            }
            let mut metat = tx.open_table(META)?;
            for (k, v) in meta.unwrap_or_default() {
                metat.insert(*k, v.as_slice())?;
            }
        }
        self.store.commit(tx)?;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the rest: the revision is the highest imported (at least the compaction's), as
    /// etcd's is after a restore.
    pub fn finish(mut self, compacted: i64, auth: &AuthState, alarms: &[Alarm]) -> Result<()> {
        let current = self.last_main.max(compacted);
        let alarms = postcard::to_stdvec(alarms).map_err(|e| Error::Storage(e.to_string()))?;
        let meta = [
            (META_CURRENT, current.to_be_bytes().to_vec()),
            (META_COMPACTED, compacted.to_be_bytes().to_vec()),
            (META_ALARMS, alarms),
            (META_AUTH, encode_auth(auth)?),
        ];
        self.flush(Some(&meta))?;
        let mut inner = self.store.write();
        inner.load()?;
        self.store
            .auth_enabled
            .store(inner.auth.enabled, Ordering::Release);
        Ok(())
    }
}

/// Version byte of the stored auth state.
const AUTH_FORMAT_V1: u8 = 1;

fn encode_auth(a: &AuthState) -> Result<Vec<u8>> {
    let mut out = vec![AUTH_FORMAT_V1];
    out.extend(postcard::to_stdvec(a).map_err(|e| Error::Storage(e.to_string()))?);
    Ok(out)
}

fn decode_auth(b: &[u8]) -> Result<AuthState> {
    match b.split_first() {
        Some((&AUTH_FORMAT_V1, body)) => {
            postcard::from_bytes(body).map_err(|e| Error::Corrupt(format!("auth state: {e}")))
        }
        _ => Err(Error::Corrupt("auth state: unknown format".into())),
    }
}

/// Applies one command inside an open engine transaction.
struct Writer<'a, 't> {
    inner: &'a mut Inner,
    kv: &'a mut KvTable<'t>,
    lease: &'a mut redb::Table<'t, i64, i64>,
    /// Changes made so far by this command; the revision is bumped iff this ends above zero.
    sub: i64,
    events: Vec<Event>,
}

impl Writer<'_, '_> {
    fn apply(&mut self, cmd: &Command) -> Result<Result<CommandResponse>> {
        let current = self.inner.current;
        // etcd's corrupt applier: the alarm is replicated state, so every member refuses alike.
        if cmd.refused_when_corrupt()
            && self
                .inner
                .alarms
                .iter()
                .any(|a| a.alarm == AlarmType::Corrupt)
        {
            return Ok(Err(Error::CorruptCluster));
        }
        Ok(Ok(match cmd {
            Command::Put(p) => {
                if let Err(e) = self.check_put(p) {
                    return Ok(Err(e));
                }
                CommandResponse::Put(self.put(p)?)
            }
            Command::DeleteRange(d) => CommandResponse::DeleteRange(self.delete_range(d)?),
            Command::Txn(t) => {
                // Like etcd, every compare (nested ones included) is evaluated against the state
                // before the txn writes anything; this fixes the branch each txn takes.
                let mut path = Vec::new();
                self.txn_path(t, &mut path)?;
                if let Err(e) = self.check_txn(t, &path)? {
                    return Ok(Err(e));
                }
                let mut resp = self.txn(t, &mut path.iter().copied())?;
                resp.revision = self.read_rev();
                CommandResponse::Txn(resp)
            }
            Command::Compact { revision } => {
                if *revision <= self.inner.compacted {
                    return Ok(Err(Error::Compacted));
                }
                if *revision > current {
                    return Ok(Err(Error::FutureRevision));
                }
                self.compact(*revision)?;
                CommandResponse::Compact { revision: current }
            }
            Command::LeaseGrant { id, ttl } => {
                if self.inner.leases.contains_key(id) {
                    return Ok(Err(Error::LeaseExists));
                }
                self.lease.insert(*id, *ttl)?;
                self.inner.leases.insert(
                    *id,
                    LeaseState {
                        ttl: *ttl,
                        keys: BTreeSet::new(),
                    },
                );
                CommandResponse::LeaseGrant {
                    id: *id,
                    ttl: *ttl,
                    revision: current,
                }
            }
            Command::LeaseRevoke { id } | Command::LeaseExpire { id, .. } => {
                let Some(l) = self.inner.leases.remove(id) else {
                    return Ok(Err(Error::LeaseNotFound));
                };
                self.lease.remove(*id)?;
                for key in l.keys {
                    self.delete_key(&key, false)?;
                }
                CommandResponse::LeaseRevoke { revision: current }
            }
            Command::AlarmActivate(a) => {
                self.inner.alarms.insert(*a);
                CommandResponse::Alarm {
                    alarms: vec![*a],
                    revision: current,
                }
            }
            Command::AlarmDeactivate(a) => {
                let alarms = if self.inner.alarms.remove(a) {
                    vec![*a]
                } else {
                    vec![]
                };
                CommandResponse::Alarm {
                    alarms,
                    revision: current,
                }
            }
            Command::Noop => CommandResponse::Noop { revision: current },
            Command::Auth(a) => {
                let mut next = (*self.inner.auth).clone();
                if let Err(e) = next.apply(a) {
                    return Ok(Err(e));
                }
                self.inner.auth = Arc::new(next);
                CommandResponse::Auth { revision: current }
            }
            Command::As(caller, cmd) => {
                if let Err(e) = self.authorize(caller, cmd) {
                    return Ok(Err(e));
                }
                return self.apply(cmd);
            }
        }))
    }

    /// etcd's auth applier: whether `caller` may have `cmd` applied, by the auth state as of
    /// this entry.
    fn authorize(&self, caller: &Caller, cmd: &Command) -> Result<()> {
        let auth = &self.inner.auth;
        if !auth.enabled {
            return Ok(());
        }
        match cmd {
            Command::Put(p) => {
                auth.check_put(caller, p)?;
                self.authorize_lease_keys(caller, p.lease)
            }
            Command::DeleteRange(d) => auth.check_delete(caller, d),
            Command::Txn(t) => auth.check_txn(caller, t),
            Command::LeaseRevoke { id } => self.authorize_lease_keys(caller, *id),
            // etcd 3.5.1 lets anyone grant a lease; tandem asks for a user at least.
            Command::LeaseGrant { .. } => auth.check_authenticated(caller),
            Command::Compact { .. }
            | Command::AlarmActivate(_)
            | Command::AlarmDeactivate(_)
            | Command::Auth(_) => auth.check_admin(caller),
            Command::As(_, _) | Command::Noop | Command::LeaseExpire { .. } => Ok(()),
        }
    }

    /// etcd's `checkLeasePuts`: attaching to or revoking a lease needs write permission on
    /// every key the lease holds.
    fn authorize_lease_keys(&self, caller: &Caller, lease: i64) -> Result<()> {
        if let Some(l) = self.inner.leases.get(&lease) {
            for key in &l.keys {
                self.inner
                    .auth
                    .check_op(caller, key, &[], PermType::Write)?;
            }
        }
        Ok(())
    }

    /// The revision reads inside the running command see: including its own earlier changes.
    fn read_rev(&self) -> i64 {
        self.inner.current + i64::from(self.sub > 0)
    }

    fn pending_rev(&self) -> Revision {
        Revision::new(self.inner.current + 1, self.sub)
    }

    fn live(&self, key: &[u8]) -> Option<Entry> {
        self.inner
            .index
            .get(key)
            .and_then(|h| h.at(self.read_rev()))
            .copied()
    }

    fn check_put(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && self.live(&p.key).is_none() {
            return Err(Error::KeyNotFound);
        }
        if p.lease != 0 && !self.inner.leases.contains_key(&p.lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    /// Appends, in execution order, whether each txn on the path (this one, then the nested ones
    /// it will run) takes its success branch.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let ok = self.compares_hold(&t.compare)?;
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(nested) = op {
                self.txn_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Checks the branches a txn will take before anything is written, as etcd does, so a
    /// refused txn changes nothing.
    /// etcd's `checkRequests` over the branch each txn takes: every put on the path first
    /// (leases, `ignore_value`/`ignore_lease` on a missing key), then every range (revision
    /// compacted or in the future); the first failure refuses the whole txn.
    fn check_txn(&self, t: &TxnRequest, path: &[bool]) -> Result<Result<()>> {
        for puts in [true, false] {
            let r = self.check_ops(t, &mut path.iter().copied(), puts)?;
            if r.is_err() {
                return Ok(r);
            }
        }
        Ok(Ok(()))
    }

    /// One pass of [`Self::check_txn`]: the puts, or the ranges.
    fn check_ops(
        &self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
        puts: bool,
    ) -> Result<Result<()>> {
        let first_rev = if self.inner.compacted == 0 {
            -1
        } else {
            self.inner.compacted
        };
        let ops = if path.next().unwrap_or(false) {
            &t.success
        } else {
            &t.failure
        };
        for op in ops {
            let r = match op {
                RequestOp::Range(r) if !puts && r.revision > self.inner.current => {
                    Err(Error::FutureRevision)
                }
                // etcd compares with its first revision, -1 until a compaction: inside a txn a
                // negative revision is refused as compacted (alone, a range treats it as 0).
                RequestOp::Range(r) if !puts && r.revision != 0 && r.revision < first_rev => {
                    Err(Error::Compacted)
                }
                RequestOp::Put(p) if puts => self.check_put(p),
                RequestOp::Txn(t) => self.check_ops(t, path, puts)?,
                _ => Ok(()),
            };
            if r.is_err() {
                return Ok(r);
            }
        }
        Ok(Ok(()))
    }

    fn compares_hold(&self, compares: &[Compare]) -> Result<bool> {
        for c in compares {
            if !self.compare_holds(c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool> {
        let rev = self.read_rev();
        let range = KeyRange::new(&c.key, &c.range_end);
        let entries: Vec<Entry> = self
            .inner
            .index
            .range(range)
            .filter_map(|(_, h)| h.at(rev).copied())
            .collect();
        if entries.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_entry(
                c,
                &Entry {
                    rev: Revision::default(),
                    create: 0,
                    version: 0,
                    lease: 0,
                },
                None,
            ));
        }
        for e in entries {
            let value = match c.target {
                CompareTarget::Value(_) => Some(read_kv(&*self.kv, e.rev)?.value),
                _ => None,
            };
            if !compare_entry(c, &e, value.as_deref()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let rev = self.pending_rev();
        let prev = self.live(&p.key);
        let prev_kv = match prev {
            Some(e) => Some(read_kv(&*self.kv, e.rev)?),
            None => None,
        };
        let (create, version) = match prev {
            Some(e) => (e.create, e.version + 1),
            None => (rev.main, 1),
        };
        let value = match (&prev_kv, p.ignore_value) {
            (Some(old), true) => old.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev_kv, p.ignore_lease) {
            (Some(old), true) => old.lease,
            _ => p.lease,
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.kv
            .insert(rev.to_key(false).as_slice(), encode_kv(&kv).as_slice())?;
        self.inner.index.push(
            &p.key,
            Entry {
                rev,
                create,
                version,
                lease,
            },
        );
        let old_lease = prev.map_or(0, |e| e.lease);
        if old_lease != lease {
            if let Some(l) = self.inner.leases.get_mut(&old_lease) {
                l.keys.remove(&p.key);
            }
        }
        if let Some(l) = self.inner.leases.get_mut(&lease) {
            l.keys.insert(p.key.clone());
        }
        self.sub += 1;
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv: prev_kv.clone(),
        });
        Ok(PutResponse {
            prev_kv: prev_kv.filter(|_| p.prev_kv),
            revision: 0,
        })
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let rev = self.read_rev();
        let keys: Vec<Vec<u8>> = self
            .inner
            .index
            .range(KeyRange::new(&d.key, &d.range_end))
            .filter(|(_, h)| h.at(rev).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut resp = DeleteRangeResponse {
            deleted: keys.len() as i64,
            ..Default::default()
        };
        for key in keys {
            if let Some(prev) = self.delete_key(&key, d.prev_kv)? {
                resp.prev_kvs.push(prev);
            }
        }
        Ok(resp)
    }

    /// Deletes one live key; returns its last value when `want_prev`.
    fn delete_key(&mut self, key: &[u8], want_prev: bool) -> Result<Option<KeyValue>> {
        let Some(prev) = self.live(key) else {
            return Ok(None);
        };
        let prev_kv = read_kv(&*self.kv, prev.rev)?;
        let rev = self.pending_rev();
        let tomb = KeyValue {
            key: key.to_vec(),
            ..Default::default()
        };
        self.kv
            .insert(rev.to_key(true).as_slice(), encode_kv(&tomb).as_slice())?;
        self.inner.index.push(
            key,
            Entry {
                rev,
                create: 0,
                version: 0,
                lease: 0,
            },
        );
        if let Some(l) = self.inner.leases.get_mut(&prev.lease) {
            l.keys.remove(key);
        }
        self.sub += 1;
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..Default::default()
        };
        self.events.push(Event {
            kind: EventType::Delete,
            kv,
            prev_kv: Some(prev_kv.clone()),
        });
        Ok(want_prev.then_some(prev_kv))
    }

    /// Runs a txn along its precomputed path. Each response carries the revision as of its own
    /// operation (a nested txn's stays 0, as etcd leaves it); the caller sets the outer one.
    fn txn(
        &mut self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let (index, cur, compacted) =
                        (&self.inner.index, self.read_rev(), self.inner.compacted);
                    ResponseOp::Range(range_in(index, &*self.kv, cur, compacted, r)?)
                }
                RequestOp::Put(p) => {
                    let mut resp = self.put(p)?;
                    resp.revision = self.read_rev();
                    ResponseOp::Put(resp)
                }
                RequestOp::DeleteRange(d) => {
                    let mut resp = self.delete_range(d)?;
                    resp.revision = self.read_rev();
                    ResponseOp::DeleteRange(resp)
                }
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(t, path)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision: 0,
        })
    }

    fn compact(&mut self, rev: i64) -> Result<()> {
        let removed = self.inner.index.compact(rev);
        for (r, tombstone) in removed {
            self.kv.remove(r.to_key(tombstone).as_slice())?;
        }
        self.inner.compacted = rev;
        Ok(())
    }
}

fn compare_entry(c: &Compare, e: &Entry, value: Option<&[u8]>) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => e.version.cmp(v),
        CompareTarget::Create(v) => e.create.cmp(v),
        CompareTarget::Mod(v) => e.rev.main.cmp(v),
        CompareTarget::Lease(v) => e.lease.cmp(v),
        CompareTarget::Value(v) => value.unwrap_or_default().cmp(v.as_slice()),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}
