//! The raft log and vote, kept in their own redb file (`member/raft.db`).
//!
//! Group commit: every append, truncate, purge and vote goes to one writer thread, which takes
//! everything queued, writes it in a single engine transaction and makes it durable with a single
//! commit before completing any of it. Many concurrent client writes therefore cost one commit.
//! Entries wait in an in-memory cache between `append` and their commit so readers always find
//! them.
//!
//! # Correctness
//! - An append's callback fires only after its entries are durable (two-phase commit, fsynced).
//! - A vote is durable before `save_vote` returns. The committed log id is written lazily (it is
//!   a restart hint; openraft does not require it to be durable).
//! - Jobs take effect in submission order; a truncate or purge is durable before it returns.
//! - The log has no holes: entries are contiguous from `last_purged + 1` to `last_log_id`.
//! - A failed commit is reported to openraft, which stops the node; nothing is retried.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Log index → encoded entry.
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// The vote, the committed log id and the last purged log id.
const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
/// The most jobs one commit takes, so one commit's size stays bounded.
const GROUP_JOBS_MAX: usize = 4096;

enum Job {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(LogId, oneshot::Sender<Result<(), String>>),
    Vote(Vote, oneshot::Sender<Result<(), String>>),
    /// The committed log id is a hint for restart, not a durability promise: it is written with
    /// the next commit and never forces an fsync of its own.
    Committed(Option<LogId>),
}

/// Counters of the writer thread: how much work each durable commit covered.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Durable commits (each one fsync of the log).
    pub commits: AtomicU64,
    /// Entries made durable.
    pub entries: AtomicU64,
    /// Time spent committing, in microseconds.
    pub commit_micros: AtomicU64,
}

struct Shared {
    db: Database,
    stats: Arc<LogStats>,
    /// Appended entries not yet known durable, by index.
    pending: Mutex<BTreeMap<u64, Entry>>,
    jobs: mpsc::Sender<Job>,
}

/// The raft log store; cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

impl LogStore {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::builder().create(path)?;
        let w = db.begin_write()?;
        w.open_table(LOG)?;
        w.open_table(STATE)?;
        w.commit()?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            db,
            stats: Arc::default(),
            pending: Mutex::new(BTreeMap::new()),
            jobs: tx,
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self { shared })
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.shared.stats)
    }

    fn submit(&self, job: Job) -> Result<(), StorageError> {
        self.shared
            .jobs
            .send(job)
            .map_err(|_| io_err(ErrorSubject::Store, ErrorVerb::Write, "log writer stopped"))
    }

    async fn submit_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Job,
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

    fn state_value<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let tx = self.shared.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(STATE).map_err(read_err)?;
        match t.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(codec::decode(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn last_stored(&self) -> Result<Option<LogId>, StorageError> {
        let tx = self.shared.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let last = match t.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry = codec::decode(v.value()).map_err(read_err)?;
                Some(e.log_id)
            }
            None => None,
        };
        Ok(last)
    }
}

impl Shared {
    /// The writer thread: one engine commit per group of queued jobs.
    fn run(self: Arc<Self>, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < GROUP_JOBS_MAX {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.commit(&jobs).map_err(|e| e.to_string());
            let durable = !jobs.iter().all(|j| matches!(j, Job::Committed(_)));
            if result.is_ok() && durable {
                let entries: usize = jobs
                    .iter()
                    .map(|j| {
                        if let Job::Append(e, _) = j {
                            e.len()
                        } else {
                            0
                        }
                    })
                    .sum();
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .entries
                    .fetch_add(entries as u64, Ordering::Relaxed);
                self.stats
                    .commit_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "raft log commit failed; the node stops");
            }
            self.complete(jobs, result);
        }
    }

    fn commit(&self, jobs: &[Job]) -> anyhow::Result<()> {
        let mut tx = self.db.begin_write()?;
        if jobs.iter().all(|j| matches!(j, Job::Committed(_))) {
            // Only hints: no fsync; the next durable commit carries them to disk.
            tx.set_durability(Durability::None)?;
        } else {
            tx.set_durability(Durability::Immediate)?;
            tx.set_two_phase_commit(true);
        }
        {
            let mut log = tx.open_table(LOG)?;
            let mut state = tx.open_table(STATE)?;
            for job in jobs {
                match job {
                    Job::Append(entries, _) => {
                        for e in entries {
                            log.insert(e.log_id.index, codec::encode(e).as_slice())?;
                        }
                    }
                    Job::Truncate(index, _) => {
                        log.retain_in(*index.., |_, _| false)?;
                    }
                    Job::Purge(log_id, _) => {
                        log.retain_in(..=log_id.index, |_, _| false)?;
                        state.insert(KEY_PURGED, codec::encode(log_id).as_slice())?;
                    }
                    Job::Vote(vote, _) => {
                        state.insert(KEY_VOTE, codec::encode(vote).as_slice())?;
                    }
                    Job::Committed(c) => {
                        state.insert(KEY_COMMITTED, codec::encode(c).as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn complete(&self, jobs: Vec<Job>, result: Result<(), String>) {
        for job in jobs {
            match job {
                Job::Append(entries, cb) => {
                    if result.is_ok() {
                        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                        for e in &entries {
                            if pending
                                .get(&e.log_id.index)
                                .is_some_and(|p| p.log_id == e.log_id)
                            {
                                pending.remove(&e.log_id.index);
                            }
                        }
                    }
                    cb.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Truncate(_, tx) | Job::Purge(_, tx) | Job::Vote(_, tx) => {
                    let _ = tx.send(result.clone());
                }
                Job::Committed(_) => {}
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let tx = self.shared.db.begin_read().map_err(read_err)?;
            let t = tx.open_table(LOG).map_err(read_err)?;
            let lo = match range.start_bound() {
                Bound::Included(i) => *i,
                Bound::Excluded(i) => i + 1,
                Bound::Unbounded => 0,
            };
            let hi = match range.end_bound() {
                Bound::Included(i) => Bound::Included(*i),
                Bound::Excluded(i) => Bound::Excluded(*i),
                Bound::Unbounded => Bound::Unbounded,
            };
            for item in t
                .range::<u64>((Bound::Included(lo), hi))
                .map_err(read_err)?
            {
                let (k, v) = item.map_err(read_err)?;
                out.insert(k.value(), codec::decode(v.value()).map_err(read_err)?);
            }
        }
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (i, e) in pending.range(range) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.state_value::<LogId>(KEY_PURGED)?;
        let pending_last = {
            let pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            pending.values().next_back().map(|e| e.log_id)
        };
        let last = pending_last.or(self.last_stored()?).or(last_purged);
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
        self.state_value(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.submit(Job::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.state_value::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for e in &entries {
                pending.insert(e.log_id.index, e.clone());
            }
        }
        self.submit(Job::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            pending.split_off(&log_id.index);
        }
        let index = log_id.index;
        self.submit_wait(|tx| Job::Truncate(index, tx), ErrorSubject::Logs)
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let keep = pending.split_off(&(log_id.index + 1));
            *pending = keep;
        }
        self.submit_wait(|tx| Job::Purge(log_id, tx), ErrorSubject::Logs)
            .await
    }
}
