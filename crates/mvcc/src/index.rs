//! The in-memory key index (etcd's `treeIndex`): for every key, the revisions at which it changed
//! since the last compaction, with enough per-revision facts (creation revision, version, lease)
//! that a write never has to read the old record. Rebuilt from the stored records at start-up.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::request::KeyRange;
use crate::revision::Revision;

/// One change of a key. `version == 0` marks a tombstone (a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub rev: Revision,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

impl Entry {
    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

/// Histories up to this long are allocated exactly (see `KeyHistory::push`).
const SHORT_HISTORY: usize = 4;

/// The history of one key, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    entries: Vec<Entry>,
}

impl KeyHistory {
    /// The live entry visible at `rev`: the latest change at or before it, unless that change is a
    /// delete.
    pub fn at(&self, rev: i64) -> Option<&Entry> {
        let n = self.entries.partition_point(|e| e.rev.main <= rev);
        let e = self.entries.get(n.checked_sub(1)?)?;
        (!e.is_tombstone()).then_some(e)
    }

    pub fn latest(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// The change just before `rev`, live or not (for a watch event's previous value).
    pub fn before(&self, rev: Revision) -> Option<&Entry> {
        let n = self.entries.partition_point(|e| e.rev < rev);
        self.entries.get(n.checked_sub(1)?)
    }

    pub fn push(&mut self, e: Entry) {
        debug_assert!(self.entries.last().is_none_or(|l| l.rev < e.rev));
        // Most keys have one or two changes between compactions: grow short histories one
        // entry at a time (a Vec would reserve four, 160 bytes per key), longer ones as usual.
        if self.entries.len() < SHORT_HISTORY {
            self.entries.reserve_exact(1);
        }
        self.entries.push(e);
    }

    /// Drops changes no read at `rev` or later can see; returns the revisions (and whether each
    /// is a tombstone) whose records may be deleted.
    fn compact(&mut self, rev: i64, out: &mut Vec<(Revision, bool)>) {
        let n = self.entries.partition_point(|e| e.rev.main <= rev);
        if n == 0 {
            return;
        }
        // Keep the newest change at or before `rev`, unless it is a delete.
        let keep_from = if self.entries[n - 1].is_tombstone() {
            n
        } else {
            n - 1
        };
        for e in self.entries.drain(..keep_from) {
            out.push((e.rev, e.is_tombstone()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Every key's history, in key order.
#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
    entries: usize,
}

impl TreeIndex {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    pub fn push(&mut self, key: &[u8], e: Entry) {
        self.entries += 1;
        match self.keys.get_mut(key) {
            Some(h) => h.push(e),
            None => {
                let mut h = KeyHistory::default();
                h.push(e);
                self.keys.insert(key.to_vec(), h);
            }
        }
    }

    /// Key histories whose key falls in `range`, in ascending key order.
    pub fn range<'a>(
        &'a self,
        range: KeyRange<'a>,
    ) -> Box<dyn DoubleEndedIterator<Item = (&'a Vec<u8>, &'a KeyHistory)> + 'a> {
        match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k).into_iter()),
            KeyRange::From(k) => Box::new(
                self.keys
                    .range::<[u8], _>((Bound::Included(k), Bound::Unbounded)),
            ),
            KeyRange::Between(k, end) if k < end => Box::new(
                self.keys
                    .range::<[u8], _>((Bound::Included(k), Bound::Excluded(end))),
            ),
            KeyRange::Between(..) => Box::new(std::iter::empty()),
        }
    }

    /// Applies a compaction at `rev`; returns the records that are no longer visible.
    pub fn compact(&mut self, rev: i64) -> Vec<(Revision, bool)> {
        let mut out = Vec::new();
        self.keys.retain(|_, h| {
            h.compact(rev, &mut out);
            !h.is_empty()
        });
        self.entries -= out.len();
        out
    }

    /// How many changes the index holds (a memory bound to watch).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// How many keys the index holds (deleted ones too, until compaction drops them).
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(main: i64, create: i64, version: i64) -> Entry {
        Entry {
            rev: Revision::new(main, 0),
            create,
            version,
            lease: 0,
        }
    }

    #[test]
    fn visibility_and_compaction() {
        let mut idx = TreeIndex::default();
        idx.push(b"a", e(2, 2, 1));
        idx.push(b"a", e(4, 2, 2));
        idx.push(b"a", e(6, 0, 0)); // deleted
        idx.push(b"a", e(8, 8, 1)); // recreated
        let h = idx.get(b"a").unwrap();
        assert_eq!(h.at(1), None);
        assert_eq!(h.at(3).unwrap().version, 1);
        assert_eq!(h.at(5).unwrap().version, 2);
        assert_eq!(h.at(6), None);
        assert_eq!(h.at(9).unwrap().create, 8);

        let removed = idx.compact(4);
        assert_eq!(removed, vec![(Revision::new(2, 0), false)]);
        let removed = idx.compact(7);
        assert_eq!(
            removed,
            vec![(Revision::new(4, 0), false), (Revision::new(6, 0), true)]
        );
        assert_eq!(idx.get(b"a").unwrap().len(), 1);
        assert_eq!(idx.entries(), 1);
    }

    #[test]
    fn deleted_key_disappears_after_compaction() {
        let mut idx = TreeIndex::default();
        idx.push(b"k", e(2, 2, 1));
        idx.push(b"k", e(3, 0, 0));
        assert_eq!(idx.compact(3).len(), 2);
        assert!(idx.get(b"k").is_none());
    }

    #[test]
    fn ranges() {
        let mut idx = TreeIndex::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            idx.push(*k, e(i as i64 + 2, i as i64 + 2, 1));
        }
        let keys = |r| idx.range(r).map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(KeyRange::new(b"b", b"")), vec![b"b".to_vec()]);
        assert_eq!(keys(KeyRange::new(b"a", b"c")).len(), 2);
        assert_eq!(keys(KeyRange::new(b"b", b"\0")).len(), 2);
        assert_eq!(keys(KeyRange::new(b"c", b"a")).len(), 0);
    }
}
