//! The raft state machine: applies committed entries to the keyspace in log order, one keyspace
//! commit per batch, and records the applied log id and membership in that same commit so that a
//! restart resumes exactly after the last applied entry.
//!
//! # Correctness
//! - Applying is deterministic: the same entries give the same keyspace on every member.
//! - Keyspace commits are not fsynced one by one (the log is the durable record and is replayed
//!   after a crash); they are made durable as [`DurableCommits`] says (entries, bytes, time) and
//!   always before a snapshot is handed out, because openraft purges the log behind a snapshot.
//! - A snapshot carries the applied log id and membership of exactly the state it contains.

use std::io::Cursor;
use std::sync::Arc;

use mvcc::{Command, Store};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, StorageIOError,
};
use serde::{Deserialize, Serialize};

use raft::codec;

use crate::types::{
    Applied, Batch, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The keyspace meta key of the applied state.
pub const META_APPLIED: &str = "applied";
/// Entries applied between two durable keyspace commits (etcd commits its backend every 10,000
/// writes or 100 ms). redb reuses the pages a commit frees only after a durable commit, so this
/// also bounds how much the file grows between two of them.
const DURABLE_EVERY_ENTRIES: usize = 1_000;
/// Bytes of keys and values applied between two durable keyspace commits (same reason).
const DURABLE_EVERY_BYTES: usize = 4 << 20;
/// The longest a keyspace commit waits for the next durable one while writes are applied, as
/// etcd's backend batch interval: a slow disk shows in the backend-commit histogram (and its
/// alert) within this long of writes, however few they are, and a restart replays at most this
/// much of the log besides the counts above.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// When keyspace commits are made durable: an applied batch's commit once `DURABLE_EVERY_ENTRIES`
/// entries or `DURABLE_EVERY_BYTES` bytes, or `DURABLE_EVERY` of time, have gone by since the
/// last durable one; and, with no batch applied, the commits left pending once `DURABLE_EVERY`
/// has gone by (etcd's backend commits its pending batch every 100 ms the same way): a restart
/// replays at most that much of the log, and redb, which keeps a non-durable commit's pages in
/// its write buffer against its cache budget, gives them back once the writes stop. A pure
/// policy: the caller gives the time.
#[derive(Debug)]
pub struct DurableCommits {
    entries: usize,
    bytes: usize,
    last: std::time::Instant,
    /// A commit since the last durable one was not durable.
    pending: bool,
}

impl DurableCommits {
    pub fn new(now: std::time::Instant) -> Self {
        Self {
            entries: 0,
            bytes: 0,
            last: now,
            pending: false,
        }
    }

    /// With no batch to apply at `now`: whether the pending commits are to be made durable now.
    pub fn idle(&self, now: std::time::Instant) -> bool {
        self.pending && now.saturating_duration_since(self.last) >= DURABLE_EVERY
    }

    /// A batch of `entries` commands of `bytes` is about to be committed at `now`: whether that
    /// commit is durable (and if so, counting starts again).
    pub fn batch(&mut self, entries: usize, bytes: usize, now: std::time::Instant) -> bool {
        self.entries += entries;
        self.bytes += bytes;
        let durable = self.entries >= DURABLE_EVERY_ENTRIES
            || self.bytes >= DURABLE_EVERY_BYTES
            || now.saturating_duration_since(self.last) >= DURABLE_EVERY;
        if durable {
            self.made_durable(now);
        } else {
            self.pending = true;
        }
        durable
    }

    /// The keyspace was made durable at `now` by other means (idle, or a snapshot installed).
    pub fn made_durable(&mut self, now: std::time::Instant) {
        self.entries = 0;
        self.bytes = 0;
        self.last = now;
        self.pending = false;
    }
}

/// When keyspace commits are made durable, shared by the state machine (which applies), the
/// idle commits ([`commit_when_idle`]) and the replica's shutdown.
#[derive(Clone)]
pub struct SharedCommits(Arc<std::sync::Mutex<DurableCommits>>);

impl SharedCommits {
    fn new(now: std::time::Instant) -> Self {
        Self(Arc::new(std::sync::Mutex::new(DurableCommits::new(now))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DurableCommits> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keyspace was made durable (by a final sync): nothing is pending any more, and no idle
    /// commit touches the store again until a batch is applied.
    pub fn made_durable(&self) {
        self.lock().made_durable(std::time::Instant::now());
    }

    /// Whether an idle commit is due at `now`, without waiting: a batch being committed holds
    /// the lock (and then none is).
    fn idle_due(&self, now: std::time::Instant) -> bool {
        match self.0.try_lock() {
            Ok(c) => c.idle(now),
            Err(std::sync::TryLockError::Poisoned(c)) => c.into_inner().idle(now),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// Makes the idle commit if one is due at `now`, and says whether it did: `store` is only
    /// reached for then (so that a store being closed is not held open by a check).
    fn commit_if_idle(
        &self,
        store: &std::sync::Weak<Store>,
        now: std::time::Instant,
    ) -> Result<bool, mvcc::Error> {
        let mut c = self.lock();
        if !c.idle(now) {
            return Ok(false);
        }
        let Some(store) = store.upgrade() else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        store.sync()?;
        BACKEND_COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        c.made_durable(now);
        Ok(true)
    }
}

/// Makes the keyspace's pending commits durable once [`DurableCommits::idle`] says so, checking
/// every `DURABLE_EVERY`. Ends with the store (`Ok`), or with the first commit that failed: the
/// keyspace then takes no more writes ([`Store::write_failed`]) and the caller stops the member
/// at once, as a failed apply does, instead of waiting for the next write to meet the failure.
pub async fn commit_when_idle(
    store: std::sync::Weak<Store>,
    commits: SharedCommits,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(DURABLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while store.strong_count() > 0 {
        tick.tick().await;
        let now = std::time::Instant::now();
        if !commits.idle_due(now) {
            continue;
        }
        let (store, commits) = (store.clone(), commits.clone());
        match tokio::task::spawn_blocking(move || commits.commit_if_idle(&store, now)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("the keyspace's idle commit did not finish: {e}")),
        }
    }
    Ok(())
}

/// Each durable keyspace commit, in seconds: etcd's `etcd_disk_backend_commit_duration_seconds`,
/// per process as etcd keeps it (see [`DurableCommits`]; the log is the durable record, the
/// commits between are not synced and not counted here).
pub static BACKEND_COMMIT_SECONDS: std::sync::LazyLock<
    prometheus_client::metrics::histogram::Histogram,
> = std::sync::LazyLock::new(|| {
    prometheus_client::metrics::histogram::Histogram::new(raft::log_store::disk_seconds_buckets())
});

/// Receives what the keyspace did, right after each applied batch (the watch hub).
pub trait ApplyListener: Send + Sync + 'static {
    /// A batch was applied: the events of each command in order, and the revision after it.
    fn applied(&self, events: Vec<Vec<mvcc::Event>>, revision: i64);
    /// The keyspace was replaced by a snapshot; watchers must resynchronize from the store.
    fn reset(&self, revision: i64);
}

/// The applied position, stored in the keyspace's meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// The applied state as the pre-witness tandem stored it (members without a role).
#[derive(Deserialize)]
struct AppliedStateV1 {
    last_applied: Option<LogId>,
    membership: openraft::StoredMembership<u64, codec::MemberNodeV1>,
}

impl codec::Stored for AppliedState {
    fn from_v1(body: &[u8]) -> Result<Self, codec::CodecError> {
        let v1: AppliedStateV1 = postcard::from_bytes(body)?;
        Ok(AppliedState {
            last_applied: v1.last_applied,
            membership: codec::stored_membership_from_v1(v1.membership),
        })
    }
}

/// The applied state from its stored bytes (the meta value under [`META_APPLIED`]).
pub fn decode_applied(b: &[u8]) -> anyhow::Result<AppliedState> {
    Ok(codec::decode_stored(b)?)
}

/// The applied position and membership stored in `store` (a stopped member's, for recovery
/// tools).
pub fn stored_applied(store: &Store) -> anyhow::Result<AppliedState> {
    Ok(match store.meta(META_APPLIED)? {
        Some(b) => codec::decode_stored(&b)?,
        None => AppliedState::default(),
    })
}

pub struct StateMachine {
    store: Arc<Store>,
    listener: Arc<dyn ApplyListener>,
    disk_full: Arc<raft::disk::DiskFull>,
    state: AppliedState,
    durable: SharedCommits,
    /// Until openraft's first question for the current snapshot, which it asks at start-up for
    /// the snapshot's meta alone (openraft 0.9.25 `StorageHelper::get_initial_state`), before
    /// anything else touches the state machine: answered without building one (anything else
    /// first, an apply or a snapshot installed, ends this). Building copied the whole keyspace
    /// into memory at every start (~600 MiB and 2.4 s for a 700 MB keyspace).
    starting: bool,
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

impl StateMachine {
    pub fn new(
        store: Arc<Store>,
        listener: Arc<dyn ApplyListener>,
        disk_full: Arc<raft::disk::DiskFull>,
    ) -> anyhow::Result<Self> {
        let state = stored_applied(&store)?;
        Ok(Self {
            store,
            listener,
            disk_full,
            state,
            durable: SharedCommits::new(std::time::Instant::now()),
            starting: true,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// When this state machine's keyspace commits are made durable, for [`commit_when_idle`]
    /// and the replica's shutdown.
    pub fn durable_commits(&self) -> SharedCommits {
        self.durable.clone()
    }

    fn commits(&self) -> std::sync::MutexGuard<'_, DurableCommits> {
        self.durable.lock()
    }
}

/// Builds a snapshot of the keyspace as it is when building starts.
pub struct SnapshotBuilder {
    store: Arc<Store>,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut buf = Vec::new();
        let meta_bytes = self
            .store
            .snapshot_to(&mut buf, META_APPLIED)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // The log behind this snapshot may be purged once it is handed out: make the keyspace
        // durable at least up to it first.
        self.store
            .sync()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let applied: AppliedState = match meta_bytes {
            Some(b) => codec::decode_stored(&b).map_err(|e| snap_err(ErrorVerb::Read, e))?,
            None => AppliedState::default(),
        };
        Ok(Snapshot {
            meta: snapshot_meta(applied, self.store.current_revision()),
            snapshot: Box::new(Cursor::new(buf)),
        })
    }

    /// The keyspace, made durable, as a snapshot with its meta alone: what openraft keeps of a
    /// snapshot it builds to purge its log (openraft 0.9.25 `sm::worker::build_snapshot` keeps
    /// `snap.meta` and drops the data). The data is made when a follower needs it
    /// (`get_current_snapshot`), from the keyspace as it is then; building it here copied the
    /// whole keyspace into memory every `--snapshot-count` entries.
    fn durable_meta(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = stored_applied(&self.store).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let revision = self.store.current_revision();
        // The log behind this meta may be purged once openraft has it: everything applied up to
        // it must be on disk first.
        self.store
            .sync()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(meta_only(snapshot_meta(applied, revision)))
    }
}

/// A snapshot with `meta` and no data: the keyspace itself, durable, stands for it.
fn meta_only(meta: SnapshotMeta) -> Snapshot<TypeConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(Vec::new())),
    }
}

/// The meta of a snapshot of the keyspace at `applied`, its revision `revision`.
fn snapshot_meta(applied: AppliedState, revision: i64) -> SnapshotMeta {
    let snapshot_id = match applied.last_applied {
        Some(l) => format!("{}-{}-{revision}", l.leader_id.term, l.index),
        None => "empty".to_string(),
    };
    SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership,
        snapshot_id,
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.durable_meta()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.starting = false;
        // Every command of every entry in one keyspace commit; `sizes` splits the results back.
        let mut cmds = Vec::new();
        let mut sizes = Vec::new();
        for e in entries {
            self.state.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Normal(payload) => {
                    // An entry that does not decode is a broken invariant (it was checked
                    // when written, and every record carries a checksum): stop applying.
                    let Batch(batch) = Batch::decode(&payload).map_err(|err| {
                        tracing::error!(entry = %e.log_id, error = %err, "an entry's batch does not decode");
                        sm_err(ErrorVerb::Read, format!("entry {}: {err}", e.log_id))
                    })?;
                    sizes.push(batch.len());
                    let term = e.log_id.leader_id.term;
                    cmds.extend(batch.into_iter().map(|c| c.in_entry_of_term(term)));
                }
                EntryPayload::Blank => sizes.push(0),
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(e.log_id), m);
                    sizes.push(0);
                }
            }
        }
        if sizes.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = cmds.iter().map(Command::approx_bytes).sum::<usize>();
        let meta = [(META_APPLIED, codec::encode(&self.state))];
        // Held through the commit, so that an idle commit does not count this one as durable.
        let mut commits = self.commits();
        let started = std::time::Instant::now();
        let durable = commits.batch(cmds.len(), bytes, started);
        let batch = self.store.apply(&cmds, &meta, durable).map_err(|e| {
            self.disk_full.note(&e.to_string());
            sm_err(ErrorVerb::Write, e)
        })?;
        drop(commits);
        if durable {
            BACKEND_COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        }
        let mut outcomes = batch.outcomes.into_iter();
        let mut events = Vec::with_capacity(cmds.len());
        let mut responses = Vec::with_capacity(sizes.len());
        for n in sizes {
            let mut results = Vec::with_capacity(n);
            for o in outcomes.by_ref().take(n) {
                results.push(o.response);
                events.push(o.events);
            }
            responses.push(Applied(results));
        }
        self.listener.applied(events, self.store.current_revision());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.starting = false;
        SnapshotBuilder {
            store: Arc::clone(&self.store),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        self.starting = false;
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.starting = false;
        let mut data = Cursor::new(snapshot.into_inner());
        self.store
            .restore_from(&mut data)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let m = [(META_APPLIED, codec::encode(&self.state))];
        self.store
            .apply(&[], &m, true)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.commits().made_durable(std::time::Instant::now());
        self.listener.reset(self.store.current_revision());
        tracing::info!(
            last_log_id = %meta.last_log_id.map_or("none".into(), |l| l.to_string()),
            revision = self.store.current_revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.state.last_applied.is_none() {
            return Ok(None);
        }
        if std::mem::take(&mut self.starting) {
            // The keyspace is the snapshot: its meta is what has been applied, nothing else
            // has happened yet.
            let revision = self.store.current_revision();
            return Ok(Some(meta_only(snapshot_meta(self.state.clone(), revision))));
        }
        SnapshotBuilder {
            store: Arc::clone(&self.store),
        }
        .build()
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Each row: a batch (entries, bytes, milliseconds since the start) and whether its commit
    /// is durable.
    #[test]
    fn durable_commits_come_by_entries_bytes_or_time() {
        let t0 = Instant::now();
        let mut d = DurableCommits::new(t0);
        let rows: &[(usize, usize, u64, bool)] = &[
            (1, 10, 1, false),
            (998, 10, 2, false),
            // The thousandth entry.
            (1, 10, 3, true),
            (10, 4 << 20, 4, true),
            (10, 10, 50, false),
            // 100 ms after the last durable commit (at 4 ms), however few the entries.
            (1, 10, 103, false),
            (1, 10, 104, true),
            (1, 10, 105, false),
            // A batch after an idle second.
            (1, 10, 1_200, true),
        ];
        for (i, &(entries, bytes, ms, want)) in rows.iter().enumerate() {
            let got = d.batch(entries, bytes, t0 + Duration::from_millis(ms));
            assert_eq!(
                got, want,
                "row {i}: {entries} entries, {bytes} bytes at {ms} ms"
            );
        }
        d.made_durable(t0 + Duration::from_millis(1_250));
        assert!(!d.batch(999, 10, t0 + Duration::from_millis(1_300)));
        assert!(d.batch(1, 10, t0 + Duration::from_millis(1_301)));
    }

    /// An idle commit whose flush fails ends the idle commits with that failure (the replica
    /// then stops raft), and the keyspace takes no more writes; they went on ticking, logging
    /// the failure every 100 ms, while non-durable applies kept succeeding.
    #[tokio::test]
    async fn a_failed_idle_commit_ends_them_with_its_failure() {
        let (store, faults) = Store::in_memory_with_sync_faults().expect("store");
        let store = Arc::new(store);
        let commits = SharedCommits::new(Instant::now());
        let put = mvcc::Command::Put(mvcc::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        let durable = commits.lock().batch(1, 10, Instant::now());
        assert!(!durable, "pending: the policy was made just now");
        store.apply(&[put], &[], durable).expect("apply");
        faults.fail();
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            commit_when_idle(Arc::downgrade(&store), commits),
        )
        .await
        .expect("the idle commits end");
        let error = ended.expect_err("with the failure");
        assert!(error.contains("os error 5"), "{error}");
        assert!(store.write_failed());
    }

    /// The idle commit reaches the store only when one is due, and not after a final sync.
    #[test]
    fn an_idle_commit_syncs_the_store_only_when_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("kv.db")).expect("store"));
        let weak = Arc::downgrade(&store);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let commits = SharedCommits::new(t0);
        assert!(
            !commits.commit_if_idle(&weak, at(500)).expect("idle"),
            "nothing pending"
        );
        assert!(commits.lock().batch(1, 10, at(500)));
        assert!(!commits.lock().batch(1, 10, at(510)));
        assert!(
            !commits.commit_if_idle(&weak, at(550)).expect("idle"),
            "not yet due"
        );
        assert!(commits.commit_if_idle(&weak, at(600)).expect("idle"), "due");
        assert!(
            !commits.commit_if_idle(&weak, at(900)).expect("idle"),
            "done already"
        );
        assert!(!commits.lock().batch(1, 10, at(620)));
        commits.made_durable();
        assert!(
            !commits.commit_if_idle(&weak, at(2_000)).expect("idle"),
            "after a final sync"
        );
        assert!(!commits.lock().batch(1, 10, Instant::now()));
        drop(store);
        assert!(
            !commits
                .commit_if_idle(&weak, Instant::now() + Duration::from_secs(1))
                .expect("idle"),
            "the store is gone"
        );
    }

    /// With no batch applied, pending commits become durable once 100 ms have gone by since the
    /// last durable one; with none pending, nothing is committed.
    #[test]
    fn pending_commits_become_durable_when_idle() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = DurableCommits::new(t0);
        assert!(!d.idle(at(500)), "nothing pending");
        assert!(
            d.batch(1, 10, at(500)),
            "the first batch after an idle while"
        );
        assert!(!d.idle(at(700)), "the last commit was durable");
        assert!(!d.batch(1, 10, at(520)));
        assert!(
            !d.idle(at(599)),
            "pending, 99 ms after the last durable commit"
        );
        assert!(d.idle(at(600)), "pending, 100 ms after it");
        d.made_durable(at(600));
        assert!(!d.idle(at(900)), "made durable when idle");
    }
}
