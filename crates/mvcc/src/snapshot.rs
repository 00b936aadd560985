//! The keyspace's snapshot stream: a self-checking dump of every table, used to ship the state
//! machine to another member (raft snapshots) and by `Maintenance.Snapshot`.
//!
//! Format (docs/durable-formats.md, "keyspace snapshot v1"): the magic `TANDEMKV`, a version byte
//! (1), current and compacted revision as big-endian i64, then records of
//! `tag u8 | key length u32 BE | key | value length u32 BE | value`, an end tag (0), and the
//! CRC-32C of everything before it as u32 BE. A reader rejects a wrong magic, version or checksum.

use std::io::{Read, Write};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"TANDEMKV";
const VERSION: u8 = 1;
pub const TAG_END: u8 = 0;
pub const TAG_KV: u8 = 1;
pub const TAG_LEASE: u8 = 2;
pub const TAG_META: u8 = 3;
/// The largest key or value a record may hold; larger lengths mean corruption.
const FIELD_BYTES_MAX: u32 = 64 << 20;

fn io(e: std::io::Error) -> Error {
    Error::Storage(e.to_string())
}

pub struct Writer<'a> {
    w: &'a mut dyn Write,
    crc: u32,
}

impl<'a> Writer<'a> {
    pub fn new(w: &'a mut dyn Write) -> Result<Self> {
        let mut s = Self { w, crc: 0 };
        s.put(MAGIC)?;
        s.put(&[VERSION])?;
        Ok(s)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.w.write_all(b).map_err(io)
    }

    pub fn header(&mut self, current: i64, compacted: i64) -> Result<()> {
        self.put(&current.to_be_bytes())?;
        self.put(&compacted.to_be_bytes())
    }

    pub fn record(&mut self, tag: u8, k: &[u8], v: &[u8]) -> Result<()> {
        self.put(&[tag])?;
        self.put(&(k.len() as u32).to_be_bytes())?;
        self.put(k)?;
        self.put(&(v.len() as u32).to_be_bytes())?;
        self.put(v)
    }

    pub fn finish(mut self) -> Result<()> {
        self.put(&[TAG_END])?;
        let crc = self.crc;
        self.w.write_all(&crc.to_be_bytes()).map_err(io)?;
        self.w.flush().map_err(io)
    }
}

/// One snapshot record: tag, key, value.
pub type Record = (u8, Vec<u8>, Vec<u8>);

pub struct Reader<'a> {
    r: &'a mut dyn Read,
    crc: u32,
    /// The revisions the header names (current, compacted).
    pub revisions: (i64, i64),
}

impl<'a> Reader<'a> {
    pub fn new(r: &'a mut dyn Read) -> Result<Self> {
        let mut s = Self {
            r,
            crc: 0,
            revisions: (0, 0),
        };
        let mut magic = [0u8; 9];
        s.get(&mut magic)?;
        if &magic[..8] != MAGIC || magic[8] != VERSION {
            return Err(Error::Corrupt("not a tandem keyspace snapshot (v1)".into()));
        }
        let mut b = [0u8; 8];
        s.get(&mut b)?;
        let current = i64::from_be_bytes(b);
        s.get(&mut b)?;
        s.revisions = (current, i64::from_be_bytes(b));
        Ok(s)
    }

    fn get(&mut self, b: &mut [u8]) -> Result<()> {
        self.r
            .read_exact(b)
            .map_err(|e| Error::Corrupt(format!("snapshot truncated: {e}")))?;
        self.crc = crc32c::crc32c_append(self.crc, b);
        Ok(())
    }

    fn field(&mut self) -> Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.get(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > FIELD_BYTES_MAX {
            return Err(Error::Corrupt(format!("snapshot field of {len} bytes")));
        }
        let mut v = vec![0u8; len as usize];
        self.get(&mut v)?;
        Ok(v)
    }

    /// The next record, or `None` after the end record (whose checksum is verified).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>> {
        let mut tag = [0u8; 1];
        self.get(&mut tag)?;
        if tag[0] == TAG_END {
            let want = self.crc;
            let mut crc = [0u8; 4];
            self.r
                .read_exact(&mut crc)
                .map_err(|e| Error::Corrupt(format!("snapshot truncated: {e}")))?;
            if u32::from_be_bytes(crc) != want {
                return Err(Error::Corrupt("snapshot checksum mismatch".into()));
            }
            return Ok(None);
        }
        let k = self.field()?;
        let v = self.field()?;
        Ok(Some((tag[0], k, v)))
    }
}
