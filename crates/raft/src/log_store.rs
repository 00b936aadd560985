//! The raft log store: openraft's `RaftLogStorage` over the segment files of `wal` (directory
//! `member/wal/`), with group commit on a writer thread.
//!
//! Group commit: every append, truncate, purge and vote goes to one writer thread, which takes
//! everything queued, writes it, and makes it durable with one fdatasync before completing any
//! of it. Many concurrent client writes therefore cost one flush. Entries stay in an in-memory
//! cache from `append` until they are durable (so readers always find them), and the most recent
//! durable ones stay too, within the [`Limits`] (a data node's default: `CACHE_ENTRIES_MAX` and
//! `CACHE_BYTES_MAX`; the witness keeps far fewer); older entries are
//! read back from the files.
//!
//! # Correctness
//! - An append's callback fires only after its entries are durable (written and fdatasynced).
//! - A vote is durable before `save_vote` returns. The committed log id is a restart hint
//!   (openraft does not require it durable): it reaches the disk with the next state write.
//! - Jobs take effect in submission order; a truncate or purge is durable before it returns.
//! - The log has no holes: entries are contiguous from `last_purged + 1` to `last_log_id`.
//! - A failed write or flush is reported to openraft, which stops the node; nothing is retried.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use tokio::sync::oneshot;

use crate::types::{Entry, LogId, StorageError, Types, Vote};
use crate::wal::{RecordLoc, Wal};

/// The most jobs one flush takes, so one group's size stays bounded.
const GROUP_JOBS_MAX: usize = 4096;
/// Durable entries kept in memory for readers (openraft applies and replicates recent ones).
const CACHE_ENTRIES_MAX: usize = 1024;
/// The most bytes (encoded size) of durable entries kept in memory.
const CACHE_BYTES_MAX: usize = 4 * 1024 * 1024;

enum Job<C: Types> {
    Append(Vec<Entry<C>>, LogFlushed<C>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(LogId, oneshot::Sender<Result<(), String>>),
    Vote(Vote, oneshot::Sender<Result<(), String>>),
}

/// Counters of the writer thread: how much work each durable flush covered.
#[derive(Debug)]
pub struct LogStats {
    /// Each fdatasync of the log, in seconds (etcd's `etcd_disk_wal_fsync_duration_seconds`,
    /// with its buckets).
    pub fsync_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Durable flushes (each one fdatasync of the log).
    pub commits: AtomicU64,
    /// Entries made durable.
    pub entries: AtomicU64,
    /// Time spent writing and flushing, in microseconds.
    pub commit_micros: AtomicU64,
    /// Set once a write failed because the disk is full.
    pub disk_full: Arc<crate::disk::DiskFull>,
    /// When the flush under way started ([`crate::flushes::now_micros`] + 1; 0: none).
    pub flush_started: AtomicU64,
}

/// etcd's buckets for disk latencies: 1 ms to about 8 s, doubling.
pub fn disk_seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)
}

impl Default for LogStats {
    fn default() -> Self {
        LogStats {
            fsync_seconds: prometheus_client::metrics::histogram::Histogram::new(
                disk_seconds_buckets(),
            ),
            commits: AtomicU64::default(),
            entries: AtomicU64::default(),
            commit_micros: AtomicU64::default(),
            disk_full: Arc::default(),
            flush_started: AtomicU64::default(),
        }
    }
}

impl LogStats {
    /// How long the flush under way has taken so far (0: none under way).
    pub fn inflight_micros(&self) -> u64 {
        match self.flush_started.load(Ordering::Relaxed) {
            0 => 0,
            s => crate::flushes::now_micros().saturating_sub(s - 1),
        }
    }
}

/// How much a log store keeps: durable entries in memory, and the size of a segment file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub segment_bytes: u64,
}

impl Default for Limits {
    /// A data node's: the cache openraft's apply and replication read from.
    fn default() -> Self {
        Limits {
            cache_entries: CACHE_ENTRIES_MAX,
            cache_bytes: CACHE_BYTES_MAX,
            segment_bytes: crate::wal::SEGMENT_BYTES,
        }
    }
}

/// Entries in memory: every one not yet durable, and recent durable ones.
#[derive(Default)]
struct Cache<C: Types> {
    limits: Option<Limits>,
    entries: BTreeMap<u64, Entry<C>>,
    /// Encoded size of the cached entries that are durable, by index.
    durable_bytes: BTreeMap<u64, usize>,
    durable_total: usize,
}

impl<C: Types> Cache<C> {
    fn mark_durable(&mut self, entries: &[Entry<C>], locs: &[RecordLoc]) {
        for (e, loc) in entries.iter().zip(locs) {
            if self
                .entries
                .get(&e.log_id.index)
                .is_some_and(|c| c.log_id == e.log_id)
            {
                self.durable_bytes.insert(e.log_id.index, loc.len as usize);
                self.durable_total += loc.len as usize;
            }
        }
        let limits = self.limits.unwrap_or_default();
        while self.durable_bytes.len() > limits.cache_entries
            || self.durable_total > limits.cache_bytes
        {
            let Some((index, bytes)) = self.durable_bytes.pop_first() else {
                break;
            };
            self.durable_total -= bytes;
            self.entries.remove(&index);
        }
    }

    /// Forgets the entries at and after `index` (a truncation).
    fn forget_from(&mut self, index: u64) {
        self.entries.split_off(&index);
        let dropped = self.durable_bytes.split_off(&index);
        self.durable_total -= dropped.values().sum::<usize>();
    }

    /// Forgets the entries at and before `index` (a purge).
    fn forget_through(&mut self, index: u64) {
        self.entries = self.entries.split_off(&(index + 1));
        let kept = self.durable_bytes.split_off(&(index + 1));
        let dropped = std::mem::replace(&mut self.durable_bytes, kept);
        self.durable_total -= dropped.values().sum::<usize>();
    }
}

struct Shared<C: Types> {
    wal: Mutex<Wal>,
    cache: Mutex<Cache<C>>,
    stats: Arc<LogStats>,
    jobs: mpsc::Sender<Job<C>>,
}

/// The raft log store; cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore<C: Types> {
    shared: Arc<Shared<C>>,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: Types> LogStore<C> {
    /// Opens (or creates) the log in the directory `dir`, recovers it, and starts its writer
    /// thread; a write failing on a full disk is noted in `disk_full`.
    pub fn open(dir: &Path, disk_full: Arc<crate::disk::DiskFull>) -> anyhow::Result<Self> {
        Self::open_with(dir, disk_full, Limits::default())
    }

    /// As [`LogStore::open`], within `limits`.
    pub fn open_with(
        dir: &Path,
        disk_full: Arc<crate::disk::DiskFull>,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let wal = Wal::open_with_segment_bytes(dir, limits.segment_bytes)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            wal: Mutex::new(wal),
            cache: Mutex::new(Cache {
                limits: Some(limits),
                ..Cache::default()
            }),
            stats: Arc::new(LogStats {
                disk_full,
                ..Default::default()
            }),
            jobs: tx,
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self { shared })
    }

    /// The id of the last entry in the log (durable or queued), as openraft's log state has it.
    pub fn last_log_id(&self) -> Option<LogId> {
        let cached = lock(&self.shared.cache)
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id);
        let wal = lock(&self.shared.wal);
        match (cached, wal.last_log_id()) {
            (Some(c), Some(w)) => Some(c.max(w)),
            (c, w) => c.or(w),
        }
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.shared.stats)
    }

    fn submit(&self, job: Job<C>) -> Result<(), StorageError> {
        self.shared
            .jobs
            .send(job)
            .map_err(|_| io_err(ErrorSubject::Store, ErrorVerb::Write, "log writer stopped"))
    }

    async fn submit_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Job<C>,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(make(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, ErrorVerb::Write, e)),
            Err(_) => Err(io_err(subject, ErrorVerb::Write, "log writer stopped")),
        }
    }
}

impl<C: Types> Shared<C> {
    /// The writer thread: one flush per group of queued jobs.
    fn run(self: Arc<Self>, rx: mpsc::Receiver<Job<C>>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < GROUP_JOBS_MAX {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            self.stats
                .flush_started
                .store(crate::flushes::now_micros() + 1, Ordering::Relaxed);
            let result = self.write(&jobs).map_err(|e| format!("{e:#}"));
            self.stats.flush_started.store(0, Ordering::Relaxed);
            match &result {
                Ok(locs) => {
                    let entries = locs.len() as u64;
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.entries.fetch_add(entries, Ordering::Relaxed);
                    self.stats
                        .commit_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.disk_full.note(e);
                    tracing::error!(error = %e, "raft log write failed; the node stops");
                }
            }
            self.complete(jobs, result);
        }
    }

    /// Carries out the jobs in order and flushes once; the locations of the appended entries.
    fn write(&self, jobs: &[Job<C>]) -> anyhow::Result<Vec<RecordLoc>> {
        let mut locs = Vec::new();
        let pending = {
            let mut wal = lock(&self.wal);
            for job in jobs {
                match job {
                    Job::Append(entries, _) => {
                        for e in entries {
                            locs.push(wal.append(e)?);
                        }
                    }
                    Job::Truncate(index, _) => wal.truncate(*index)?,
                    Job::Purge(log_id, _) => wal.purge(*log_id)?,
                    Job::Vote(vote, _) => wal.save_vote(*vote)?,
                }
            }
            wal.begin_sync()
        };
        // The flush runs without the lock, so readers are not held up by it.
        let through = pending.through;
        let synced = Instant::now();
        pending.finish()?;
        self.stats
            .fsync_seconds
            .observe(synced.elapsed().as_secs_f64());
        lock(&self.wal).note_durable(through);
        Ok(locs)
    }

    fn complete(&self, jobs: Vec<Job<C>>, result: Result<Vec<RecordLoc>, String>) {
        let mut locs = result.as_deref().unwrap_or_default();
        for job in jobs {
            match job {
                Job::Append(entries, cb) => {
                    if result.is_ok() {
                        let (mine, rest) = locs.split_at(entries.len());
                        lock(&self.cache).mark_durable(&entries, mine);
                        locs = rest;
                    }
                    let r = result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| std::io::Error::other(e.clone()));
                    cb.log_io_completed(r);
                }
                Job::Truncate(_, tx) | Job::Purge(_, tx) | Job::Vote(_, tx) => {
                    let _ = tx.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
                }
            }
        }
    }
}

impl<C: Types> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let mut out: BTreeMap<u64, Entry<C>> = lock(&self.shared.cache)
            .entries
            .range(range.clone())
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        // What the cache lacks is read from the files under the log's lock, so that a
        // truncation cannot overwrite a record between finding it and reading it (a deposed
        // leader's replication may still be reading the tail its successor makes it drop).
        // Disk reads are the rare case: followers far behind, and start-up.
        let wal = lock(&self.shared.wal);
        for loc in wal.locs_in(range) {
            if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(loc.log_id.index) {
                slot.insert(loc.read().map_err(read_err)?);
            }
        }
        drop(wal);
        Ok(out.into_values().collect())
    }
}

impl<C: Types> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let last = self.last_log_id();
        let last_purged = lock(&self.shared.wal).state().purged;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.submit_wait(|tx| Job::Vote(vote, tx), ErrorSubject::Vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.shared.wal).state().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        lock(&self.shared.wal).note_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.shared.wal).state().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<C>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        {
            let mut cache = lock(&self.shared.cache);
            for e in &entries {
                cache.entries.insert(e.log_id.index, e.clone());
            }
        }
        self.submit(Job::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        lock(&self.shared.cache).forget_from(log_id.index);
        let index = log_id.index;
        self.submit_wait(|tx| Job::Truncate(index, tx), ErrorSubject::Logs)
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        lock(&self.shared.cache).forget_through(log_id.index);
        self.submit_wait(|tx| Job::Purge(log_id, tx), ErrorSubject::Logs)
            .await
    }
}
