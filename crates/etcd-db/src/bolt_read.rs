//! A read-only reader of bbolt files, for restoring etcd's snapshots. `bbolt-rs` cannot open a
//! file written without a freelist (`PGID_NO_FREE_LIST`), and etcd writes its backend that way
//! (`NoFreelistSync`), so its snapshots are read here: the two meta pages (the valid one with
//! the higher transaction id), then each bucket's B+tree walked in key order, pages read one at
//! a time from the file (never the whole file in memory). The format is bbolt v1.3's: 16-byte
//! page headers, branch and leaf elements of 16 bytes whose `pos` counts from the element
//! itself, overflow pages contiguous, buckets as leaf values with the bucket flag (inline
//! buckets carry their one page in the value).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{Error, Result};

const PAGE_HEADER_BYTES: usize = 16;
const ELEMENT_BYTES: usize = 16;
const BUCKET_HEADER_BYTES: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const BUCKET_LEAF_FLAG: u32 = 0x01;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// Bytes of a meta page's body covered by its checksum.
const META_CHECKSUMMED_BYTES: usize = 56;
/// The smallest and largest page sizes accepted (bbolt uses the OS page size).
const PAGE_BYTES_MIN: u32 = 512;
const PAGE_BYTES_MAX: u32 = 1 << 20;
/// How deep a B+tree may be before the file is taken as corrupt (a cycle).
const DEPTH_MAX: usize = 64;

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::Bolt(format!("invalid database: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(at..at + 2)
            .ok_or_else(|| invalid("truncated page"))?
            .try_into()
            .unwrap_or_default(),
    ))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(at..at + 4)
            .ok_or_else(|| invalid("truncated page"))?
            .try_into()
            .unwrap_or_default(),
    ))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(at..at + 8)
            .ok_or_else(|| invalid("truncated page"))?
            .try_into()
            .unwrap_or_default(),
    ))
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    b.get(at..at + len)
        .ok_or_else(|| invalid("an element past its page"))
}

fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Receives a bucket's records: key and value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;
/// Receives a tree's leaf elements: key, value and element flags.
type VisitLeaf<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<()> + 'a;

/// Where a bucket's tree is: its root page, or its one page inline in its parent's leaf.
#[derive(Debug, Clone)]
pub enum Bucket {
    Root(u64),
    Inline(Vec<u8>),
}

/// An open bbolt file.
pub struct BoltFile {
    file: File,
    page_bytes: u64,
    /// Pages the file holds (the meta's high-water mark).
    pages: u64,
    root: u64,
}

impl BoltFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        let mut first = [0u8; PAGE_HEADER_BYTES + 64];
        file.read_exact_at(&mut first, 0)
            .map_err(|_| invalid("shorter than a meta page"))?;
        let page_bytes = u32_at(&first, PAGE_HEADER_BYTES + 8)?;
        if !(PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&page_bytes) {
            return Err(invalid(format!("page size {page_bytes}")));
        }
        let mut best: Option<(u64, u64, u64)> = None;
        for id in 0..2u64 {
            let mut page = [0u8; PAGE_HEADER_BYTES + 64];
            if file
                .read_exact_at(&mut page, id * u64::from(page_bytes))
                .is_err()
            {
                continue;
            }
            if let Some(meta) = valid_meta(&page)? {
                if best.is_none_or(|(txid, _, _)| meta.0 > txid) {
                    best = Some(meta);
                }
            }
        }
        let (_, root, pages) = best.ok_or_else(|| invalid("no valid meta page"))?;
        Ok(BoltFile {
            file,
            page_bytes: u64::from(page_bytes),
            pages,
            root,
        })
    }

    /// Page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>> {
        if id < 2 || id >= self.pages {
            return Err(invalid(format!("page {id} out of range")));
        }
        let mut header = [0u8; PAGE_HEADER_BYTES];
        self.file.read_exact_at(&mut header, id * self.page_bytes)?;
        let overflow = u64::from(u32_at(&header, 12)?);
        if id + overflow >= self.pages {
            return Err(invalid(format!("page {id} overflows the file")));
        }
        let mut page = vec![0u8; ((1 + overflow) * self.page_bytes) as usize];
        self.file.read_exact_at(&mut page, id * self.page_bytes)?;
        Ok(page)
    }

    /// The top-level bucket `name`, if the file has one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>> {
        let mut found = None;
        self.walk(&Bucket::Root(self.root), 0, &mut |k, v, flags| {
            if flags & BUCKET_LEAF_FLAG != 0 && k == name {
                found = Some(bucket_of(v)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Every key and value of `bucket` (nested buckets skipped), in key order.
    pub fn for_each(&self, bucket: &Bucket, f: &mut Visit<'_>) -> Result<()> {
        self.walk(bucket, 0, &mut |k, v, flags| {
            if flags & BUCKET_LEAF_FLAG == 0 {
                f(k, v)?;
            }
            Ok(())
        })
    }

    fn walk(&self, bucket: &Bucket, depth: usize, f: &mut VisitLeaf<'_>) -> Result<()> {
        match bucket {
            Bucket::Inline(page) => self.node(page, depth, f),
            Bucket::Root(id) => {
                let page = self.page(*id)?;
                self.node(&page, depth, f)
            }
        }
    }

    fn node(&self, page: &[u8], depth: usize, f: &mut VisitLeaf<'_>) -> Result<()> {
        if depth > DEPTH_MAX {
            return Err(invalid("a tree deeper than any bbolt writes"));
        }
        let (flags, count) = (u16_at(page, 8)?, usize::from(u16_at(page, 10)?));
        for i in 0..count {
            let elem = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            if flags & BRANCH_PAGE != 0 {
                let child = u64_at(page, elem + 8)?;
                self.walk(&Bucket::Root(child), depth + 1, f)?;
            } else if flags & LEAF_PAGE != 0 {
                let (eflags, pos) = (u32_at(page, elem)?, u32_at(page, elem + 4)? as usize);
                let (ksize, vsize) = (
                    u32_at(page, elem + 8)? as usize,
                    u32_at(page, elem + 12)? as usize,
                );
                let key = slice(page, elem + pos, ksize)?;
                let value = slice(page, elem + pos + ksize, vsize)?;
                f(key, value, eflags)?;
            } else {
                return Err(invalid(format!("page flags {flags:#x} in a tree")));
            }
        }
        Ok(())
    }
}

/// A meta page's transaction id, root bucket page and page count, if it is valid.
fn valid_meta(page: &[u8]) -> Result<Option<(u64, u64, u64)>> {
    if u16_at(page, 8)? & META_PAGE == 0 {
        return Ok(None);
    }
    let meta = &page[PAGE_HEADER_BYTES..];
    if u32_at(meta, 0)? != MAGIC || u32_at(meta, 4)? != VERSION {
        return Ok(None);
    }
    if fnv1a64(&meta[..META_CHECKSUMMED_BYTES]) != u64_at(meta, META_CHECKSUMMED_BYTES)? {
        return Ok(None);
    }
    Ok(Some((
        u64_at(meta, 48)?,
        u64_at(meta, 16)?,
        u64_at(meta, 40)?,
    )))
}

/// Where a bucket stored as the value `v` keeps its tree.
fn bucket_of(v: &[u8]) -> Result<Bucket> {
    let root = u64_at(v, 0)?;
    if root != 0 {
        return Ok(Bucket::Root(root));
    }
    let page = v
        .get(BUCKET_HEADER_BYTES..)
        .ok_or_else(|| invalid("an inline bucket without its page"))?;
    Ok(Bucket::Inline(page.to_vec()))
}
