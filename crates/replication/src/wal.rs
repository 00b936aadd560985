//! The raft log's files: a directory of preallocated segment files holding checksummed entry
//! records, and a small state file for the vote, the last purged log id and the committed hint.
//! Synchronous and single-writer: the log store's writer thread owns the `Wal`; readers get
//! `RecordLoc`s and read the bytes through shared file handles.
//!
//! Format (docs/durable-formats.md, "raft log"):
//! - segment `<first index, 20 digits>.seg`: a 16-byte header (`TNDMWAL\0`, format version u32
//!   LE, reserved u32), then records `[payload length u32 LE][crc32 of payload u32 LE][payload]`,
//!   payload = the entry in the replication codec. Segments are preallocated with zeros, so a
//!   zero length marks the end of the written part and an fdatasync never has to persist a new
//!   file size.
//! - `state`: `TNDMSTAT`, version u32, crc32 u32, length u32, then the codec's (vote, purged,
//!   committed). Replaced atomically (write to `state.tmp`, fdatasync, rename, fsync the dir).
//!
//! # Correctness
//! - `sync` makes every record written before it durable (fdatasync of each segment written
//!   since the last sync, and of the directory when a segment was created).
//! - Recovery accepts, in the last segment only, a torn tail: the first record that is short,
//!   fails its checksum or does not continue the index sequence ends the log, and the bytes
//!   from there on are zeroed so that no stale record can follow a later append. The same
//!   defect in an earlier segment is corruption: opening fails.
//! - Truncation removes later segments first, then cuts and re-zeroes the segment holding the
//!   first removed entry, so a crash in between leaves a contiguous log.
//! - Purge writes the new purged id to the state file before it deletes any segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use crate::codec;
use crate::types::{Entry, LogId, Vote};

const SEGMENT_MAGIC: &[u8; 8] = b"TNDMWAL\0";
const STATE_MAGIC: &[u8; 8] = b"TNDMSTAT";
const FORMAT_VERSION: u32 = 1;
const SEGMENT_HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: u64 = 8;
/// Bytes preallocated per segment (a record larger than this gets a segment of its own size).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The largest record payload accepted when reading (a larger length is a torn header).
const RECORD_BYTES_MAX: u64 = 1 << 30;

/// Where one entry's record is.
#[derive(Clone, Debug)]
pub struct RecordLoc {
    pub log_id: LogId,
    pub file: Arc<File>,
    /// Offset of the payload.
    pub offset: u64,
    pub len: u32,
}

impl RecordLoc {
    /// Reads and decodes the entry.
    pub fn read(&self) -> Result<Entry> {
        let mut buf = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut buf, self.offset)
            .with_context(|| {
                let size = self.file.metadata().map_or(0, |m| m.len());
                format!(
                    "reading raft log entry {} ({} bytes at offset {}, file size {size})",
                    self.log_id, self.len, self.offset
                )
            })?;
        let entry: Entry = codec::decode(&buf)?;
        ensure!(
            entry.log_id == self.log_id,
            "raft log record at {} holds {:?}, expected {:?}",
            self.offset,
            entry.log_id,
            self.log_id
        );
        Ok(entry)
    }
}

/// The vote, the last purged log id and the committed hint.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalState {
    pub vote: Option<Vote>,
    pub purged: Option<LogId>,
    pub committed: Option<LogId>,
}

struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where the next record goes.
    end: u64,
    /// The index the next record must have (records in a segment are consecutive).
    next_index: u64,
    /// Preallocated size.
    capacity: u64,
}

pub struct Wal {
    dir: PathBuf,
    /// Bytes preallocated per new segment (`SEGMENT_BYTES`; smaller in tests).
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Every live entry (above the purged id), in index order.
    locs: std::collections::VecDeque<RecordLoc>,
    state: WalState,
    /// Segments written since the last sync (by position in `segments`, as first indexes).
    dirty: BTreeMap<u64, Arc<File>>,
    dir_dirty: bool,
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.seg")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Makes `[from, to)` of `file` zeros that are really written: an fdatasync after a later
/// write there then flushes only data, never a block allocation or an unwritten-extent
/// conversion (measured: a preallocated-but-unwritten tail doubled the flush time).
fn zero_and_allocate(file: &File, from: u64, to: u64) -> Result<()> {
    file.set_len(from)?;
    zero_in_place(file, from, to)
}

/// Overwrites `[from, to)` of `file` with zeros (extending it if `to` is past its end, never
/// shrinking it).
fn zero_in_place(file: &File, from: u64, to: u64) -> Result<()> {
    const CHUNK: usize = 1024 * 1024;
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Wal {
    /// Opens the log in `dir` (created if missing) and recovers it (see the module's
    /// correctness notes).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// `open`, with segments of `segment_bytes` (tests use small ones to exercise many).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state = read_state(dir)?;
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_suffix(".seg") {
                firsts.push(
                    n.parse::<u64>()
                        .with_context(|| format!("raft log file {name}"))?,
                );
            }
        }
        firsts.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: Vec::new(),
            locs: Default::default(),
            state,
            dirty: BTreeMap::new(),
            dir_dirty: false,
        };
        let purged_index = wal.state.purged.map(|p| p.index);
        for (i, first) in firsts.iter().enumerate() {
            let last_segment = i + 1 == firsts.len();
            let next_first = firsts.get(i + 1).copied();
            // A segment wholly at or below the purged id is left over from an interrupted purge.
            if next_first.is_some_and(|n| purged_index.is_some_and(|p| n <= p + 1)) {
                std::fs::remove_file(dir.join(segment_name(*first)))?;
                wal.dir_dirty = true;
                continue;
            }
            wal.recover_segment(*first, last_segment)?;
        }
        if let (Some(first), Some(p)) = (wal.locs.front(), wal.state.purged) {
            ensure!(
                first.log_id.index <= p.index + 1,
                "raft log has a hole: purged up to {} but the first entry is {}",
                p.index,
                first.log_id.index
            );
        }
        while wal
            .locs
            .front()
            .is_some_and(|l| Some(l.log_id.index) <= purged_index)
        {
            wal.locs.pop_front();
        }
        if wal.dir_dirty {
            sync_dir(dir)?;
            wal.dir_dirty = false;
        }
        tracing::info!(
            segments = wal.segments.len(),
            first = wal.locs.front().map(|l| l.log_id.index),
            last = wal.locs.back().map(|l| l.log_id.index),
            end = wal.segments.last().map(|s| s.end),
            "raft log recovered"
        );
        Ok(wal)
    }

    fn recover_segment(&mut self, first_index: u64, last_segment: bool) -> Result<()> {
        let path = self.dir.join(segment_name(first_index));
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let capacity = file.metadata()?.len();
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            &header[..8] == SEGMENT_MAGIC,
            "{} is not a tandem raft log segment",
            path.display()
        );
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        ensure!(
            version == FORMAT_VERSION,
            "{}: raft log format {version} is not supported",
            path.display()
        );
        let file = Arc::new(file);
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut expected = first_index;
        loop {
            match read_record(&file, offset, capacity) {
                Ok(Some((entry, len))) if entry.log_id.index == expected => {
                    self.check_continues(&entry.log_id)?;
                    self.locs.push_back(RecordLoc {
                        log_id: entry.log_id,
                        file: Arc::clone(&file),
                        offset: offset + RECORD_HEADER_BYTES,
                        len,
                    });
                    offset += RECORD_HEADER_BYTES + u64::from(len);
                    expected += 1;
                }
                Ok(None) => break,
                defect => {
                    let what = match defect {
                        Ok(Some((e, _))) => {
                            format!("entry {} where {expected} belongs", e.log_id.index)
                        }
                        Err(e) => e.to_string(),
                        Ok(None) => unreachable!("handled above"),
                    };
                    if !last_segment {
                        bail!(
                            "raft log corrupt in {} at offset {offset}: {what}",
                            path.display()
                        );
                    }
                    tracing::warn!(segment = %path.display(), offset, %what, "raft log: discarding a torn tail");
                    zero_and_allocate(&file, offset, capacity.max(offset))?;
                    file.sync_all()?;
                    break;
                }
            }
        }
        self.segments.push(Segment {
            first_index,
            path,
            file,
            end: offset,
            next_index: expected,
            capacity,
        });
        Ok(())
    }

    /// Entries must follow each other: the next index, a term never lower.
    fn check_continues(&self, next: &LogId) -> Result<()> {
        if let Some(prev) = self.locs.back() {
            ensure!(
                next.index == prev.log_id.index + 1 && next.leader_id >= prev.log_id.leader_id,
                "raft log entry {next:?} does not follow {:?}",
                prev.log_id
            );
        }
        Ok(())
    }

    pub fn state(&self) -> &WalState {
        &self.state
    }

    pub fn locs(&self) -> &std::collections::VecDeque<RecordLoc> {
        &self.locs
    }

    /// The live entries whose index is in `range` (the entries are consecutive, so their
    /// positions follow from the first index).
    pub fn locs_in(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> impl Iterator<Item = &RecordLoc> {
        use std::ops::Bound;
        let first = self.locs.front().map_or(0, |l| l.log_id.index);
        let pos = |i: u64| (i.saturating_sub(first) as usize).min(self.locs.len());
        let lo = match range.start_bound() {
            Bound::Included(i) => pos(*i),
            Bound::Excluded(i) => pos(i.saturating_add(1)),
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(i) => pos(i.saturating_add(1)),
            Bound::Excluded(i) => pos(*i),
            Bound::Unbounded => self.locs.len(),
        };
        self.locs.range(lo..hi.max(lo))
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.locs.back().map(|l| l.log_id).or(self.state.purged)
    }

    /// Writes `entry` after the last one (durable at the next `sync`); its location. An entry
    /// at or below the last index replaces it and everything after (raft's log matching: a
    /// different entry at an index invalidates the rest), as an explicit `truncate` would.
    pub fn append(&mut self, entry: &Entry) -> Result<RecordLoc> {
        if self
            .locs
            .back()
            .is_some_and(|l| l.log_id.index >= entry.log_id.index)
        {
            self.truncate(entry.log_id.index)?;
        }
        if let Some(last) = self.locs.back().map(|l| l.log_id) {
            ensure!(
                entry.log_id.index == last.index + 1,
                "raft log append of {} after {}",
                entry.log_id.index,
                last.index
            );
        }
        let payload = codec::encode(entry);
        let need = RECORD_HEADER_BYTES + payload.len() as u64;
        let index = entry.log_id.index;
        match self.segments.last() {
            Some(s) if s.next_index == index && s.end + need <= s.capacity => {}
            Some(s) if s.next_index == index => self.create_segment(index, need)?,
            None => self.create_segment(index, need)?,
            Some(_) => {
                // The log restarts elsewhere (only after everything was purged): the old
                // segments hold nothing live.
                ensure!(
                    self.locs.is_empty(),
                    "raft log append of {index} breaks the sequence"
                );
                for seg in std::mem::take(&mut self.segments) {
                    std::fs::remove_file(&seg.path)?;
                }
                self.dirty.clear();
                self.dir_dirty = true;
                self.create_segment(index, need)?;
            }
        }
        let seg = self.segments.last_mut().expect("created above");
        let mut record = Vec::with_capacity(need as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        seg.file.write_all_at(&record, seg.end)?;
        let loc = RecordLoc {
            log_id: entry.log_id,
            file: Arc::clone(&seg.file),
            offset: seg.end + RECORD_HEADER_BYTES,
            len: payload.len() as u32,
        };
        seg.end += need;
        seg.next_index = index + 1;
        self.dirty.insert(seg.first_index, Arc::clone(&seg.file));
        self.locs.push_back(loc.clone());
        Ok(loc)
    }

    fn create_segment(&mut self, first_index: u64, need: u64) -> Result<()> {
        let path = self.dir.join(segment_name(first_index));
        let capacity = self.segment_bytes.max(SEGMENT_HEADER_BYTES + need);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        zero_and_allocate(&file, 0, capacity)?;
        let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
        header.extend_from_slice(SEGMENT_MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        // The file's size and blocks are durable now, so later syncs are data-only.
        file.sync_all()?;
        self.dir_dirty = true;
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            end: SEGMENT_HEADER_BYTES,
            next_index: first_index,
            capacity,
        });
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.begin_sync().finish()
    }

    /// What `sync` must flush, taken so that the flush can run without holding the `Wal`.
    pub fn begin_sync(&mut self) -> PendingSync {
        PendingSync {
            files: std::mem::take(&mut self.dirty).into_values().collect(),
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone()),
        }
    }

    /// Removes the entries at and after `index`, durably.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        // Live entries are consecutive: the first to go is at a known position.
        let first = self.locs.front().map_or(index, |l| l.log_id.index);
        let pos = index.saturating_sub(first) as usize;
        if pos >= self.locs.len() {
            return Ok(());
        }
        tracing::info!(
            from = index,
            last = self.locs.back().map(|l| l.log_id.index),
            "raft log: dropping entries from a conflicting index"
        );
        self.sync()?;
        // Later segments go first, so that a crash leaves a contiguous log.
        while self.segments.len() > 1
            && self.segments.last().is_some_and(|s| s.first_index >= index)
        {
            let seg = self.segments.pop().expect("checked");
            std::fs::remove_file(&seg.path)?;
            self.dir_dirty = true;
        }
        self.sync()?;
        let seg = self
            .segments
            .last_mut()
            .expect("a live entry lives in a segment");
        let cut = &self.locs[pos];
        if Arc::ptr_eq(&seg.file, &cut.file) {
            // Zero the written records from the cut on, in place: the file keeps its size, so
            // a reader of an entry before the cut never meets a shortened file, and the space
            // stays allocated for the records that replace them.
            let offset = cut.offset - RECORD_HEADER_BYTES;
            zero_in_place(&seg.file, offset, seg.end)?;
            seg.file.sync_data()?;
            seg.end = offset;
        }
        seg.next_index = index;
        self.locs.truncate(pos);
        Ok(())
    }

    /// Records `purged` and drops what it covers: the state file first, then whole segments.
    pub fn purge(&mut self, purged: LogId) -> Result<()> {
        self.state.purged = Some(purged);
        self.write_state()?;
        while self
            .locs
            .front()
            .is_some_and(|l| l.log_id.index <= purged.index)
        {
            self.locs.pop_front();
        }
        // A segment goes when the next one starts at or below the first entry still needed.
        while self.segments.len() > 1 && self.segments[1].first_index <= purged.index + 1 {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
            self.dir_dirty = true;
        }
        if std::mem::take(&mut self.dir_dirty) {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Saves the vote (and the current committed hint) durably.
    pub fn save_vote(&mut self, vote: Vote) -> Result<()> {
        self.state.vote = Some(vote);
        self.write_state()
    }

    /// Remembers the committed hint; it reaches the disk with the next state write.
    pub fn note_committed(&mut self, committed: Option<LogId>) {
        self.state.committed = committed;
    }

    fn write_state(&self) -> Result<()> {
        let payload = codec::encode(&self.state);
        let mut bytes = Vec::with_capacity(20 + payload.len());
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let tmp = self.dir.join("state.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.dir.join("state"))?;
        sync_dir(&self.dir)
    }
}

/// Segments (and the directory) to flush; see `Wal::begin_sync`.
#[must_use]
pub struct PendingSync {
    files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
}

impl PendingSync {
    pub fn finish(self) -> Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

fn read_state(dir: &Path) -> Result<WalState> {
    let bytes = match std::fs::read(dir.join("state")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WalState::default()),
        Err(e) => return Err(e.into()),
    };
    ensure!(
        bytes.len() >= 20 && &bytes[..8] == STATE_MAGIC,
        "raft log state file is damaged"
    );
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    ensure!(
        word(8) == FORMAT_VERSION,
        "raft log state format {} is not supported",
        word(8)
    );
    let payload = bytes
        .get(20..20 + word(16) as usize)
        .context("raft log state file is short")?;
    ensure!(
        crc32fast::hash(payload) == word(12),
        "raft log state file fails its checksum"
    );
    Ok(codec::decode(payload)?)
}

/// The record at `offset`: Ok(None) at the zeroed end of the written part; an error when the
/// record is short, too long or fails its checksum.
fn read_record(file: &File, offset: u64, capacity: u64) -> Result<Option<(Entry, u32)>> {
    if offset + RECORD_HEADER_BYTES > capacity {
        return Ok(None);
    }
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Ok(None);
    }
    let start = offset + RECORD_HEADER_BYTES;
    ensure!(
        u64::from(len) <= RECORD_BYTES_MAX && start + u64::from(len) <= capacity,
        "record length {len} runs past the segment"
    );
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, start)?;
    ensure!(
        crc32fast::hash(&payload) == crc,
        "record fails its checksum"
    );
    Ok(Some((codec::decode(&payload)?, len)))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::Batch;

    fn entry(term: u64, index: u64, bytes: usize) -> Entry {
        let cmd = mvcc::Command::Put(mvcc::PutRequest {
            key: format!("k{index}").into_bytes(),
            value: vec![b'v'; bytes],
            ..Default::default()
        });
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch(vec![cmd])),
        }
    }

    fn ids(wal: &Wal) -> Vec<(u64, u64)> {
        wal.locs()
            .iter()
            .map(|l| (l.log_id.leader_id.term, l.log_id.index))
            .collect()
    }

    fn append_all(wal: &mut Wal, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            wal.append(&e).expect("append");
        }
        wal.sync().expect("sync");
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    /// Small segments: a few entries each, so rolls, purges and truncations cross files.
    const SMALL: u64 = 4096;

    #[test]
    fn entries_and_state_survive_reopen_across_segments() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=40).map(|i| entry(1, i, 300)));
        wal.save_vote(Vote::new(3, 1)).expect("vote");
        assert!(
            segment_files(dir.path()).len() > 3,
            "entries span several segments"
        );
        let before: Vec<Entry> = wal.locs().iter().map(|l| l.read().expect("read")).collect();
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        let after: Vec<Entry> = wal.locs().iter().map(|l| l.read().expect("read")).collect();
        assert_eq!(before, after);
        assert_eq!(wal.state().vote, Some(Vote::new(3, 1)));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_zeroed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=5).map(|i| entry(1, i, 100)));
        let last = wal.locs().back().expect("last").clone();
        drop(wal);
        // Damage the last record's payload, as a write cut short by a crash would.
        let f = OpenOptions::new()
            .write(true)
            .open(&segment_files(dir.path())[0])
            .expect("seg");
        f.write_all_at(b"XX", last.offset + 3).expect("damage");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        assert_eq!(ids(&wal), (1..=4).map(|i| (1, i)).collect::<Vec<_>>());
        // A new entry 5 of a later term, shorter than the torn one, and nothing stale after it.
        append_all(&mut wal, [entry(2, 5, 10)]);
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen again");
        assert_eq!(ids(&wal), vec![(1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]);
    }

    #[test]
    fn damage_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=40).map(|i| entry(1, i, 300)));
        let first = wal.locs().front().expect("first").clone();
        drop(wal);
        let f = OpenOptions::new()
            .write(true)
            .open(&segment_files(dir.path())[0])
            .expect("seg");
        f.write_all_at(b"XX", first.offset + 3).expect("damage");
        let err = Wal::open_with_segment_bytes(dir.path(), SMALL)
            .err()
            .expect("must refuse");
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }

    #[test]
    fn truncated_entries_never_come_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=30).map(|i| entry(1, i, 300)));
        wal.truncate(12).expect("truncate");
        assert_eq!(wal.last_log_id().map(|l| l.index), Some(11));
        // Same-size records of a later term: a stale entry 14 would line up exactly.
        append_all(&mut wal, [entry(2, 12, 300), entry(2, 13, 300)]);
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        let mut want: Vec<(u64, u64)> = (1..=11).map(|i| (1, i)).collect();
        want.extend([(2, 12), (2, 13)]);
        assert_eq!(ids(&wal), want);
    }

    #[test]
    fn purge_drops_whole_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=40).map(|i| entry(1, i, 300)));
        let files = segment_files(dir.path()).len();
        let purged = wal.locs()[24].log_id;
        wal.purge(purged).expect("purge");
        assert!(
            segment_files(dir.path()).len() < files,
            "whole segments went"
        );
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        assert_eq!(wal.state().purged, Some(purged));
        assert_eq!(ids(&wal), (26..=40).map(|i| (1, i)).collect::<Vec<_>>());
        // Purging everything leaves the purged id as the last log id.
        let mut wal = wal;
        let last = wal.last_log_id().expect("last");
        wal.purge(last).expect("purge all");
        assert_eq!(wal.last_log_id(), Some(last));
        assert!(wal.locs().is_empty());
    }
}
