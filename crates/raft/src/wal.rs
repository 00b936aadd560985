//! The raft log's files: a directory of preallocated segment files holding checksummed entry
//! records, and a small state file for the vote, the last purged log id and the committed hint.
//! Synchronous and single-writer: the log store's writer thread owns the `Wal`; readers get
//! `RecordLoc`s and read the bytes through shared file handles.
//!
//! Format (docs/durable-formats.md, "raft log"):
//! - segment `<first index, 20 digits>.seg`: a 16-byte header (`TNDMWAL\0`, format version u32
//!   LE, reserved u32), then records, then zeros. Segments are preallocated with zeros (under a
//!   `.tmp` name until complete), so an fdatasync never has to persist a new file size.
//! - a format-2 record: mark `0xA5`, payload length u32 LE, CRC-32 of the payload u32 LE, the
//!   durable mark u64 LE (the highest index known durable when the record was written), CRC-32
//!   of those 17 bytes u32 LE, the payload (the entry in the replication codec), mark `0x5A`.
//!   Format 1 (still read) had only `[length][crc][payload]`.
//! - `state`: `TNDMSTAT`, version u32, crc32 u32, length u32, then the codec's (vote, purged,
//!   committed). Replaced atomically (write to `state.tmp`, fdatasync, rename, fsync the dir).
//!
//! # Correctness
//! - `sync` makes every record written before it durable (fdatasync of each segment written
//!   since the last sync, and of the directory when a segment was created).
//! - Recovery tells a torn tail from corruption. The log ends at the first slot that is not the
//!   next record. That is a torn tail only if (1) some 512-byte sector the bad record touches
//!   holds nothing but zeros from the record on, as a sector the disk never wrote does (records
//!   begin and end with a non-zero mark, so a record written whole never leaves such a sector),
//!   and (2) no intact record after it carries a durable mark at or past the lost index (then
//!   the lost entries had been fdatasynced, so they may have been acknowledged). A torn tail is
//!   zeroed and any later segment removed; anything else refuses to open, naming the file, the
//!   offset and what to do. Format-1 segments have no marks: there a defect is only accepted as
//!   torn in the last segment.
//! - Recovery fdatasyncs what it recovered, so the durable mark of later records is true.
//! - Truncation removes later segments first, then cuts and re-zeroes the segment holding the
//!   first removed entry, so a crash in between leaves a contiguous log.
//! - Purge writes the new purged id to the state file before it deletes any segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use crate::codec;
use crate::types::{Entry, LogId, Types, Vote};

const SEGMENT_MAGIC: &[u8; 8] = b"TNDMWAL\0";
const STATE_MAGIC: &[u8; 8] = b"TNDMSTAT";
/// The format of new segments; format 1 segments are still read (and appended to).
const FORMAT_VERSION: u32 = 2;
const STATE_FORMAT_VERSION: u32 = 1;
const SEGMENT_HEADER_BYTES: u64 = 16;
/// Bytes preallocated per segment (a record larger than this gets a segment of its own size).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The largest record payload accepted when reading (a larger length is a damaged header).
const RECORD_BYTES_MAX: u64 = 1 << 30;
/// The first and last byte of a format-2 record.
const RECORD_START: u8 = 0xA5;
const RECORD_END: u8 = 0x5A;
/// Format-2 header: mark, length, payload crc, durable mark, header crc.
const V2_HEADER_BYTES: u64 = 21;
/// The unit a disk writes whole (or not at all) on power loss.
const SECTOR_BYTES: u64 = 512;
/// Reads of zeros and scans go in pieces of this size.
const SCAN_CHUNK_BYTES: u64 = 1024 * 1024;

/// What every refusal tells the operator to do.
const REBUILD_ADVICE: &str = "In a cluster, remove this member's data directory and add the \
     member back (etcdctl member remove, then member add) so that it copies the data from its \
     peers; a single member must be restored from a snapshot (tandem-ctl snapshot restore)";
/// What to do with a data dir a newer tandem wrote.
const NEWER_ADVICE: &str = "a newer tandem wrote it. Start the tandem release that wrote it, or \
     move the data: with that release, take a snapshot (etcdctl snapshot save FILE), then \
     tandem-ctl snapshot restore FILE --data-dir NEW_DIR ... and start this tandem on NEW_DIR \
     (docs/migration.md)";
/// Why a damaged log cannot simply be cut.
const CORRUPTION_ADVICE: &str = "the raft log cannot be repaired without losing acknowledged \
     writes.";

/// The record layout of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    V1,
    V2,
}

impl Format {
    fn header_bytes(self) -> u64 {
        match self {
            Format::V1 => 8,
            Format::V2 => V2_HEADER_BYTES,
        }
    }

    /// Header and trailer bytes around a payload.
    fn overhead_bytes(self) -> u64 {
        match self {
            Format::V1 => 8,
            Format::V2 => V2_HEADER_BYTES + 1,
        }
    }

    /// The bytes of a record holding `payload`.
    fn encode(self, payload: &[u8], durable: u64) -> Vec<u8> {
        let mut r = Vec::with_capacity(self.overhead_bytes() as usize + payload.len());
        if self == Format::V2 {
            r.push(RECORD_START);
        }
        r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        r.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        if self == Format::V2 {
            r.extend_from_slice(&durable.to_le_bytes());
            let header_crc = crc32fast::hash(&r);
            r.extend_from_slice(&header_crc.to_le_bytes());
        }
        r.extend_from_slice(payload);
        if self == Format::V2 {
            r.push(RECORD_END);
        }
        r
    }
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A format-2 header that passes its checksum: (payload length, payload crc, durable mark).
fn parse_v2_header(h: &[u8]) -> Option<(u32, u32, u64)> {
    let intact = h[0] == RECORD_START && crc32fast::hash(&h[..17]) == word(h, 17);
    let mark = u64::from_le_bytes(h[9..17].try_into().expect("8 bytes"));
    intact.then(|| (word(h, 1), word(h, 5), mark))
}

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
    pub fn read<C: Types>(&self) -> Result<Entry<C>> {
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
        let entry: Entry<C> = codec::decode_stored(&buf)?;
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

impl codec::Stored for WalState {
    /// Unchanged since version 1.
    fn from_v1(body: &[u8]) -> std::result::Result<Self, codec::CodecError> {
        Ok(postcard::from_bytes(body)?)
    }
}

struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    format: Format,
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
    /// The highest index known durable (0: none); written into every record as its mark.
    durable_through: u64,
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

/// The offset of the last non-zero byte of `file` in `[from, to)`, read backwards in pieces
/// (the usual answer is "none": the preallocated rest of the last segment).
fn last_nonzero(file: &File, from: u64, to: u64) -> std::io::Result<Option<u64>> {
    let mut hi = to;
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    while hi > from {
        let lo = hi.saturating_sub(SCAN_CHUNK_BYTES).max(from);
        let piece = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(piece, lo)?;
        if let Some(i) = piece.iter().rposition(|b| *b != 0) {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Whether `extent` bytes at `offset` look like a write the disk never finished: some sector
/// they touch holds only zeros from `max(sector start, offset)` to the sector's end (or the
/// segment's, `capacity`).
fn looks_torn(file: &File, offset: u64, extent: u64, capacity: u64) -> std::io::Result<bool> {
    let first = offset / SECTOR_BYTES * SECTOR_BYTES;
    let end = (offset + extent)
        .div_ceil(SECTOR_BYTES)
        .saturating_mul(SECTOR_BYTES)
        .min(capacity);
    let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
    file.read_exact_at(&mut buf, offset)?;
    let mut sector = first;
    while sector < end {
        let lo = (sector.max(offset) - offset) as usize;
        let hi = ((sector + SECTOR_BYTES).min(end) - offset) as usize;
        if lo < hi && buf[lo..hi].iter().all(|b| *b == 0) {
            return Ok(true);
        }
        sector += SECTOR_BYTES;
    }
    Ok(false)
}

/// The highest durable mark of the intact format-2 records anywhere in `buf`, found by their
/// start mark and header checksum at any byte offset (so damage before them does not hide
/// them), with how many there are.
fn durable_marks(buf: &[u8]) -> (Option<u64>, usize) {
    let header = V2_HEADER_BYTES as usize;
    let (mut best, mut found, mut p) = (None, 0, 0usize);
    while p + header < buf.len() {
        let Some(skip) = buf[p..].iter().position(|b| *b == RECORD_START) else {
            break;
        };
        p += skip;
        if p + header >= buf.len() {
            break;
        }
        let record = parse_v2_header(&buf[p..p + header]).filter(|(len, crc, _)| {
            let end = p + header + *len as usize;
            end < buf.len()
                && buf[end] == RECORD_END
                && crc32fast::hash(&buf[p + header..end]) == *crc
        });
        match record {
            Some((len, _, mark)) => {
                best = best.max(Some(mark));
                found += 1;
                p += header + len as usize + 1;
            }
            None => p += 1,
        }
    }
    (best, found)
}

/// What is at one offset of a segment.
enum Slot {
    /// An intact record: its entry's id and payload length.
    Record(LogId, u32),
    /// Zeros, or no room for another record: the written part ends here if nothing follows.
    End,
    /// Not an intact record: what is wrong, and how many bytes the damaged record claims (its
    /// header alone when its length cannot be trusted).
    Bad { what: String, extent: u64 },
}

fn read_slot(file: &File, format: Format, offset: u64, capacity: u64) -> Result<Slot> {
    let header_bytes = format.header_bytes();
    if offset + format.overhead_bytes() > capacity {
        return Ok(Slot::End);
    }
    let mut h = vec![0u8; header_bytes as usize];
    file.read_exact_at(&mut h, offset)?;
    if h.iter().all(|b| *b == 0) {
        return Ok(Slot::End);
    }
    let bad = |what: &str, extent: u64| {
        Ok(Slot::Bad {
            what: what.to_string(),
            extent,
        })
    };
    let (len, crc) = match format {
        Format::V1 => (word(&h, 0), word(&h, 4)),
        Format::V2 => match parse_v2_header(&h) {
            Some((len, crc, _)) => (len, crc),
            None => return bad("record header fails its checksum", header_bytes),
        },
    };
    let extent = format.overhead_bytes() + u64::from(len);
    if u64::from(len) > RECORD_BYTES_MAX || offset + extent > capacity {
        return bad(
            &format!("record length {len} runs past the segment"),
            header_bytes,
        );
    }
    let mut rest = vec![0u8; (extent - header_bytes) as usize];
    file.read_exact_at(&mut rest, offset + header_bytes)?;
    let payload = &rest[..len as usize];
    let end_ok = format == Format::V1 || rest[len as usize] == RECORD_END;
    if !end_ok || crc32fast::hash(payload) != crc {
        return bad("record fails its checksum", extent);
    }
    match codec::entry_log_id(payload) {
        Ok(log_id) => Ok(Slot::Record(log_id, len)),
        Err(e) => bad(&format!("record does not decode: {e:#}"), extent),
    }
}

/// How a segment's recovery ended.
enum Recovered {
    /// The segment ends cleanly; the log goes on in the next one, if any.
    Continues,
    /// A torn tail was cut here: later segments hold nothing durable and must go.
    TornTail,
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
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: Vec::new(),
            locs: Default::default(),
            state,
            dirty: BTreeMap::new(),
            dir_dirty: false,
            durable_through: 0,
        };
        let purged_index = wal.state.purged.map(|p| p.index);
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if name.ends_with(".seg.tmp") {
                // A segment whose creation never finished holds nothing.
                std::fs::remove_file(dir.join(&name))?;
                wal.dir_dirty = true;
            } else if let Some(n) = name.strip_suffix(".seg") {
                firsts.push(
                    n.parse::<u64>()
                        .with_context(|| format!("raft log file {name}"))?,
                );
            }
        }
        firsts.sort_unstable();
        // A segment wholly at or below the purged id is left over from an interrupted purge.
        while firsts.len() > 1 && purged_index.is_some_and(|p| firsts[1] <= p + 1) {
            std::fs::remove_file(dir.join(segment_name(firsts.remove(0))))?;
            wal.dir_dirty = true;
        }
        for (i, first) in firsts.iter().enumerate() {
            if let Recovered::TornTail = wal.recover_segment(*first, &firsts[i + 1..])? {
                for later in &firsts[i + 1..] {
                    std::fs::remove_file(dir.join(segment_name(*later)))?;
                    wal.dir_dirty = true;
                }
                break;
            }
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
        // What was recovered may have been in the page cache only (a killed process): make it
        // durable, so that the durable mark of the next records is true.
        for seg in &wal.segments {
            seg.file.sync_data()?;
        }
        wal.durable_through = wal.last_log_id().map_or(0, |l| l.index);
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

    /// Opens a segment file and checks its header; `None` for an all-zero last segment (its
    /// preallocation was cut short, as by a full disk, before any record), which is removed.
    fn open_segment(&mut self, path: &Path, last: bool) -> Result<Option<(File, Format)>> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let short = size < SEGMENT_HEADER_BYTES;
        if !short {
            file.read_exact(&mut header)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        if short || header == [0u8; SEGMENT_HEADER_BYTES as usize] {
            if last && last_nonzero(&file, 0, size)?.is_none() {
                tracing::warn!(segment = %path.display(), bytes = size,
                    "raft log: removing a segment whose creation never finished (all zeros)");
                drop(file);
                std::fs::remove_file(path)?;
                self.dir_dirty = true;
                return Ok(None);
            }
            bail!(
                "refusing to start: {} has no raft log segment header but holds data; {CORRUPTION_ADVICE} {REBUILD_ADVICE}",
                path.display()
            );
        }
        ensure!(
            &header[..8] == SEGMENT_MAGIC,
            "refusing to start: {} is not a tandem raft log segment; {CORRUPTION_ADVICE} {REBUILD_ADVICE}",
            path.display()
        );
        let format = match word(&header, 8) {
            1 => Format::V1,
            2 => Format::V2,
            v => bail!(
                "refusing to start: {} has raft log format {v}, which this version of tandem \
                 does not know (it reads formats 1 and 2); {NEWER_ADVICE}",
                path.display()
            ),
        };
        Ok(Some((file, format)))
    }

    /// Reads one segment's records into `locs` and decides how its written part ends (see the
    /// module's correctness notes). `later` are the first indexes of the segments after it.
    fn recover_segment(&mut self, first_index: u64, later: &[u64]) -> Result<Recovered> {
        let path = self.dir.join(segment_name(first_index));
        let Some((file, format)) = self.open_segment(&path, later.is_empty())? else {
            return Ok(Recovered::TornTail);
        };
        let capacity = file.metadata()?.len();
        let file = Arc::new(file);
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut expected = first_index;
        let bad = loop {
            match read_slot(&file, format, offset, capacity)? {
                Slot::Record(log_id, len) if log_id.index == expected => {
                    self.check_continues(&log_id)?;
                    self.locs.push_back(RecordLoc {
                        log_id,
                        file: Arc::clone(&file),
                        offset: offset + format.header_bytes(),
                        len,
                    });
                    offset += format.overhead_bytes() + u64::from(len);
                    expected += 1;
                }
                // An intact record out of sequence was written whole: never a torn write.
                Slot::Record(log_id, _) => {
                    break Some((
                        format!("entry {} where {expected} belongs", log_id.index),
                        None,
                    ))
                }
                Slot::End => break None,
                Slot::Bad { what, extent } => break Some((what, Some(extent))),
            }
        };
        self.segments.push(Segment {
            first_index,
            path: path.clone(),
            file: Arc::clone(&file),
            format,
            end: offset,
            next_index: expected,
            capacity,
        });
        let rest = last_nonzero(&file, offset, capacity)?;
        let follows = later.first().is_none_or(|n| *n == expected);
        if bad.is_none() && rest.is_none() && follows {
            return Ok(Recovered::Continues);
        }
        // Past `offset` is not the clean end of a log: a torn tail, or corruption.
        let (what, torn) = match bad {
            None if rest.is_some() => {
                let torn = looks_torn(&file, offset, format.header_bytes(), capacity)?;
                ("the written part ends but data follows".to_string(), torn)
            }
            None => (
                format!("the next segment does not start at {expected}"),
                true,
            ),
            Some((what, None)) => (what, false),
            Some((what, Some(extent))) => {
                let torn = looks_torn(&file, offset, extent, capacity)?;
                (what, torn)
            }
        };
        let (mark, intact_after) = self.durable_marks_after(&file, format, offset, rest, later)?;
        let lost_durable = mark.is_some_and(|m| m >= expected);
        if !torn || lost_durable || (format == Format::V1 && !later.is_empty()) {
            let why = if lost_durable {
                format!(
                    "; {intact_after} intact records follow, one written after entry {} was durable",
                    mark.unwrap_or_default()
                )
            } else if !torn {
                "; the damaged record was written whole, so this is not a write cut short by a crash"
                    .to_string()
            } else {
                String::new()
            };
            bail!(
                "refusing to start: raft log corrupt in {} at offset {offset} (entry {expected}): {what}{why}; {CORRUPTION_ADVICE} {REBUILD_ADVICE}",
                path.display()
            );
        }
        tracing::warn!(segment = %path.display(), offset, %what, intact_after,
            later_segments = later.len(), "raft log: discarding a torn tail (nothing in it was durable)");
        if let Some(last) = rest {
            zero_in_place(&file, offset, last + 1)?;
        }
        file.sync_data()?;
        Ok(Recovered::TornTail)
    }

    /// The highest durable mark (and count) of intact records after `offset` in this segment
    /// and in the `later` segments.
    fn durable_marks_after(
        &self,
        file: &File,
        format: Format,
        offset: u64,
        rest: Option<u64>,
        later: &[u64],
    ) -> Result<(Option<u64>, usize)> {
        let (mut mark, mut count) = (None, 0);
        let mut add = |file: &File, from: u64, to: Option<u64>| -> Result<()> {
            if let Some(to) = to.filter(|t| *t >= from) {
                let mut buf = vec![0u8; (to + 1 - from) as usize];
                file.read_exact_at(&mut buf, from)?;
                let (m, n) = durable_marks(&buf);
                mark = mark.max(m);
                count += n;
            }
            Ok(())
        };
        if format == Format::V2 {
            add(file, offset + 1, rest)?;
        }
        for first in later {
            let f = File::open(self.dir.join(segment_name(*first)))?;
            let size = f.metadata()?.len();
            add(&f, SEGMENT_HEADER_BYTES, last_nonzero(&f, 0, size)?)?;
        }
        Ok((mark, count))
    }

    /// Entries must follow each other: the next index, a term never lower.
    fn check_continues(&self, next: &LogId) -> Result<()> {
        if let Some(prev) = self.locs.back() {
            ensure!(
                next.index == prev.log_id.index + 1 && next.leader_id >= prev.log_id.leader_id,
                "refusing to start: raft log entry {next:?} does not follow {:?}; {CORRUPTION_ADVICE} {REBUILD_ADVICE}",
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
    pub fn append<C: Types>(&mut self, entry: &Entry<C>) -> Result<RecordLoc> {
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
        let index = entry.log_id.index;
        let fits =
            |s: &Segment| s.end + s.format.overhead_bytes() + payload.len() as u64 <= s.capacity;
        let need = Format::V2.overhead_bytes() + payload.len() as u64;
        match self.segments.last() {
            Some(s) if s.next_index == index && fits(s) => {}
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
        let record = seg.format.encode(&payload, self.durable_through);
        seg.file.write_all_at(&record, seg.end)?;
        let loc = RecordLoc {
            log_id: entry.log_id,
            file: Arc::clone(&seg.file),
            offset: seg.end + seg.format.header_bytes(),
            len: payload.len() as u32,
        };
        seg.end += record.len() as u64;
        seg.next_index = index + 1;
        self.dirty.insert(seg.first_index, Arc::clone(&seg.file));
        self.locs.push_back(loc.clone());
        Ok(loc)
    }

    /// Creates the segment starting at `first_index`: preallocated under a `.tmp` name and
    /// renamed once complete, so that a failure part way (a full disk) leaves nothing that
    /// recovery could take for a segment; the partial file is removed at once to free space.
    fn create_segment(&mut self, first_index: u64, need: u64) -> Result<()> {
        let path = self.dir.join(segment_name(first_index));
        let tmp = path.with_extension("seg.tmp");
        let capacity = self.segment_bytes.max(SEGMENT_HEADER_BYTES + need);
        let made = (|| -> Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            zero_and_allocate(&file, 0, capacity)?;
            let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
            header.extend_from_slice(SEGMENT_MAGIC);
            header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            header.extend_from_slice(&0u32.to_le_bytes());
            file.write_all_at(&header, 0)?;
            // The file's size and blocks are durable now, so later syncs are data-only.
            file.sync_all()?;
            Ok(file)
        })();
        let file = match made {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("creating raft log segment {}", tmp.display())));
            }
        };
        std::fs::rename(&tmp, &path)?;
        self.dir_dirty = true;
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            format: Format::V2,
            end: SEGMENT_HEADER_BYTES,
            next_index: first_index,
            capacity,
        });
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        let pending = self.begin_sync();
        let through = pending.through;
        pending.finish()?;
        self.note_durable(through);
        Ok(())
    }

    /// What `sync` must flush, taken so that the flush can run without holding the `Wal`;
    /// once it has finished, `note_durable(pending.through)`.
    pub fn begin_sync(&mut self) -> PendingSync {
        PendingSync {
            files: std::mem::take(&mut self.dirty).into_values().collect(),
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone()),
            through: self.locs.back().map_or(0, |l| l.log_id.index),
        }
    }

    /// Records that every entry through `through` is durable (a finished `PendingSync`).
    pub fn note_durable(&mut self, through: u64) {
        self.durable_through = through;
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
            let offset = cut.offset - seg.format.header_bytes();
            zero_in_place(&seg.file, offset, seg.end)?;
            seg.file.sync_data()?;
            seg.end = offset;
        }
        seg.next_index = index;
        self.locs.truncate(pos);
        self.durable_through = self.durable_through.min(index.saturating_sub(1));
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
        bytes.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
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
    /// The last index it makes durable (0: none).
    pub through: u64,
}

impl PendingSync {
    pub fn finish(self) -> Result<()> {
        for file in &self.files {
            if crate::mutants::on("ack-before-fsync") {
                continue; // written, acknowledged, never made durable
            }
            match file.sync_data() {
                Err(e) if crate::mutants::on("fsync-errors-ignored") => {
                    tracing::error!(error = %e, "fdatasync failed; going on (mutant)");
                }
                r => r?,
            }
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

fn read_state(dir: &Path) -> Result<WalState> {
    let path = dir.join("state");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WalState::default()),
        Err(e) => return Err(e.into()),
    };
    // The file is replaced by rename, never written in place: any damage is corruption.
    let damaged = |what: String| {
        anyhow::anyhow!(
            "refusing to start: the raft log state file {} is corrupt ({what}); it holds this \
             member's vote and purge point, which cannot be guessed. {REBUILD_ADVICE}",
            path.display()
        )
    };
    if bytes.len() < 20 || &bytes[..8] != STATE_MAGIC {
        return Err(damaged(format!("{} bytes, no state header", bytes.len())));
    }
    let version = word(&bytes, 8);
    ensure!(
        version == STATE_FORMAT_VERSION,
        "refusing to start: {} has raft log state format {version}, which this version of \
         tandem does not know (it reads format {STATE_FORMAT_VERSION}); {NEWER_ADVICE}",
        path.display()
    );
    let Some(payload) = bytes.get(20..20 + word(&bytes, 16) as usize) else {
        return Err(damaged(format!(
            "its length field says {} bytes of {} follow the header",
            word(&bytes, 16),
            bytes.len() - 20
        )));
    };
    if crc32fast::hash(payload) != word(&bytes, 12) {
        return Err(damaged("it fails its checksum".to_string()));
    }
    codec::decode_stored(payload).map_err(|e| damaged(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::test_types::Test;
    use crate::types::Payload;

    type Entry = crate::types::Entry<Test>;

    fn entry(term: u64, index: u64, bytes: usize) -> Entry {
        let mut data = format!("k{index}").into_bytes();
        data.resize(data.len() + bytes, b'v');
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Payload::Data(data)),
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

    /// The start and end offsets of the record holding `loc` (format 2).
    fn record_span(loc: &RecordLoc) -> (u64, u64) {
        let start = loc.offset - V2_HEADER_BYTES;
        (start, loc.offset + u64::from(loc.len) + 1)
    }

    /// What a power cut leaves of a record the disk wrote only part of: the sector holding its
    /// last byte (it starts inside the record) never written, so zeros, whatever else that
    /// sector held.
    fn tear(path: &Path, loc: &RecordLoc) {
        let (start, end) = record_span(loc);
        let boundary = (end - 1) / SECTOR_BYTES * SECTOR_BYTES;
        assert!(boundary > start, "the record spans a sector boundary");
        let f = OpenOptions::new().write(true).open(path).expect("seg");
        zero_in_place(&f, boundary, boundary + SECTOR_BYTES).expect("tear");
    }

    fn flip(path: &Path, offset: u64, bytes: usize) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("seg");
        let mut buf = vec![0u8; bytes];
        f.read_exact_at(&mut buf, offset).expect("read");
        for b in &mut buf {
            *b ^= 0x5C;
        }
        f.write_all_at(&buf, offset).expect("flip");
    }

    fn refusal(dir: &Path, segment_bytes: u64) -> String {
        let err = Wal::open_with_segment_bytes(dir, segment_bytes)
            .err()
            .expect("must refuse to open");
        format!("{err:#}")
    }

    const BIG: u64 = 1 << 20;

    #[test]
    fn a_torn_tail_is_dropped_and_zeroed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=3).map(|i| entry(1, i, 700)));
        let last = wal.locs().back().expect("last").clone();
        drop(wal);
        tear(&segment_files(dir.path())[0], &last);
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        assert_eq!(ids(&wal), (1..=2).map(|i| (1, i)).collect::<Vec<_>>());
        // A new entry 3 of a later term, shorter than the torn one, and nothing stale after it.
        append_all(&mut wal, [entry(2, 3, 10)]);
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen again");
        assert_eq!(ids(&wal), vec![(1, 1), (1, 2), (2, 3)]);
    }

    /// Regression (issue 9.1): a damaged record with intact, durable records after it was
    /// taken for a torn tail, and every acknowledged entry after it disappeared.
    #[test]
    fn damage_in_the_middle_of_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        for i in 1..=40 {
            append_all(&mut wal, [entry(1, i, 100)]);
        }
        let victim = wal.locs()[19].clone();
        drop(wal);
        let seg = &segment_files(dir.path())[0];
        flip(seg, victim.offset + 7, 16);
        let msg = refusal(dir.path(), BIG);
        let (start, _) = record_span(&victim);
        assert!(
            msg.contains(&format!("at offset {start} (entry 20)")),
            "{msg}"
        );
        assert!(msg.contains(&seg.display().to_string()), "{msg}");
        assert!(msg.contains("member remove"), "{msg}");
    }

    /// A 16-byte flip in the very last record (nothing after it) is not a torn write either.
    #[test]
    fn damage_in_the_last_record_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        append_all(&mut wal, (1..=5).map(|i| entry(1, i, 2000)));
        let last = wal.locs().back().expect("last").clone();
        drop(wal);
        flip(&segment_files(dir.path())[0], last.offset + 900, 16);
        let msg = refusal(dir.path(), BIG);
        assert!(msg.contains("written whole"), "{msg}");
    }

    /// A flip in a record's header (its length) is caught by the header checksum.
    #[test]
    fn a_damaged_record_header_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        append_all(&mut wal, (1..=5).map(|i| entry(1, i, 100)));
        let (start, _) = record_span(&wal.locs()[4]);
        drop(wal);
        flip(&segment_files(dir.path())[0], start + 2, 1);
        let msg = refusal(dir.path(), BIG);
        assert!(msg.contains("header fails its checksum"), "{msg}");
    }

    /// Power loss can write later sectors of an unsynced group and not an earlier one: those
    /// later records carry the durable mark of the group before, so the cut is safe.
    #[test]
    fn a_torn_unsynced_group_with_intact_records_after_it_is_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        append_all(&mut wal, (1..=5).map(|i| entry(1, i, 700)));
        // One group, not synced: its records all carry mark 5.
        append_all(&mut wal, (6..=9).map(|i| entry(1, i, 700)));
        let first_of_group = wal.locs()[5].clone();
        drop(wal);
        tear(&segment_files(dir.path())[0], &first_of_group);
        let wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("reopen");
        assert_eq!(ids(&wal), (1..=5).map(|i| (1, i)).collect::<Vec<_>>());
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("the cut is durable");
        assert_eq!(ids(&wal).len(), 5);
    }

    /// The same tear in a record that later groups were written after (so it was durable) is
    /// corruption: a missing sector of synced data.
    #[test]
    fn a_zeroed_sector_in_durable_records_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        append_all(&mut wal, (1..=5).map(|i| entry(1, i, 700)));
        let durable = wal.locs()[2].clone();
        append_all(&mut wal, (6..=9).map(|i| entry(1, i, 700)));
        drop(wal);
        tear(&segment_files(dir.path())[0], &durable);
        let msg = refusal(dir.path(), BIG);
        assert!(
            msg.contains("one written after entry 5 was durable"),
            "{msg}"
        );
    }

    /// A zeroed record header in the middle (a lost sector) with durable records after it.
    #[test]
    fn a_zeroed_header_before_durable_records_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
        for i in 1..=10 {
            append_all(&mut wal, [entry(1, i, 600)]);
        }
        let (start, end) = record_span(&wal.locs()[3]);
        drop(wal);
        let f = OpenOptions::new()
            .write(true)
            .open(&segment_files(dir.path())[0])
            .expect("seg");
        zero_in_place(&f, start, end).expect("zero");
        let msg = refusal(dir.path(), BIG);
        assert!(msg.contains("data follows"), "{msg}");
    }

    /// Regression (issue 9.2): a segment whose preallocation a full disk cut short (all
    /// zeros, no header) made every restart fail with "is not a tandem raft log segment".
    #[test]
    fn a_segment_whose_creation_never_finished_is_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        append_all(&mut wal, (1..=3).map(|i| entry(1, i, 100)));
        drop(wal);
        // What earlier versions left (zeros under the final name) and this one could (a .tmp).
        std::fs::write(dir.path().join(segment_name(4)), vec![0u8; 3000]).expect("zeros");
        std::fs::write(
            dir.path().join(format!("{}.tmp", segment_name(4))),
            [0u8; 10],
        )
        .expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        assert_eq!(ids(&wal), (1..=3).map(|i| (1, i)).collect::<Vec<_>>());
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert!(!dir.path().join(format!("{}.tmp", segment_name(4))).exists());
        append_all(&mut wal, (4..=30).map(|i| entry(1, i, 300)));
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen again");
        assert_eq!(ids(&wal).len(), 30);
    }

    #[test]
    fn a_damaged_state_file_refuses_to_open_with_its_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open");
        wal.save_vote(Vote::new(3, 1)).expect("vote");
        drop(wal);
        let state = dir.path().join("state");
        let len = std::fs::metadata(&state).expect("state").len();
        for (offset, bytes) in [(16, 1), (len - 2, 1), (0, 4)] {
            flip(&state, offset, bytes);
            let msg = refusal(dir.path(), SMALL);
            assert!(msg.contains(&state.display().to_string()), "{msg}");
            assert!(msg.contains("corrupt"), "{msg}");
            flip(&state, offset, bytes);
        }
        Wal::open_with_segment_bytes(dir.path(), SMALL).expect("undamaged again");
    }

    /// Golden: a format-1 segment (as tandem wrote before format 2) is read, appended to in
    /// its own format, and later segments are format 2.
    #[test]
    fn a_format_1_segment_is_still_read_and_extended() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(SEGMENT_MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        for i in 1..=3 {
            bytes.extend(Format::V1.encode(&codec::encode(&entry(1, i, 50)), 0));
        }
        bytes.resize(SMALL as usize, 0);
        std::fs::write(dir.path().join(segment_name(1)), bytes).expect("v1 segment");
        let mut wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("open v1");
        assert_eq!(ids(&wal), (1..=3).map(|i| (1, i)).collect::<Vec<_>>());
        assert_eq!(wal.locs()[1].read().expect("read"), entry(1, 2, 50));
        append_all(&mut wal, (4..=30).map(|i| entry(1, i, 300)));
        drop(wal);
        let wal = Wal::open_with_segment_bytes(dir.path(), SMALL).expect("reopen");
        assert_eq!(ids(&wal).len(), 30);
        assert_eq!(wal.segments[0].format, Format::V1);
        assert_eq!(wal.segments[1].format, Format::V2);
    }

    /// Issue 9.1's acceptance at the log's level: 16 bytes flipped at random offsets of the
    /// written log never open with an entry missing or changed.
    #[test]
    fn random_flips_never_lose_or_change_an_entry() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..40 {
            let dir = tempfile::tempdir().expect("tmp");
            let mut wal = Wal::open_with_segment_bytes(dir.path(), BIG).expect("open");
            for g in 0..20 {
                append_all(&mut wal, (1..=3).map(|k| entry(1, g * 3 + k, 150)));
            }
            let want: Vec<Entry> = wal.locs().iter().map(|l| l.read().expect("read")).collect();
            let end = wal.segments[0].end;
            drop(wal);
            let at = SEGMENT_HEADER_BYTES + next() % (end - SEGMENT_HEADER_BYTES - 16);
            flip(&segment_files(dir.path())[0], at, 16);
            if let Ok(wal) = Wal::open_with_segment_bytes(dir.path(), BIG) {
                let got: Vec<Entry> = wal.locs().iter().map(|l| l.read().expect("read")).collect();
                assert_eq!(got, want, "a flip at {at} opened with other entries");
            }
        }
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
