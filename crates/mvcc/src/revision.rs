//! Revisions and their on-disk form. A revision is `main` (the store's global revision, one per
//! mutating request) plus `sub` (the position of the change inside that request). The byte form
//! is etcd's: 8 bytes big-endian main, `_`, 8 bytes big-endian sub, and a trailing `t` for a
//! tombstone, so that records sort by revision and `HashKV` matches etcd's for the same history.

/// One change's position in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Length of an encoded revision without the tombstone mark.
pub const REV_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The key under which the record of this revision is stored.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut b = Vec::with_capacity(REV_BYTES + 1);
        b.extend_from_slice(&self.main.to_be_bytes());
        b.push(b'_');
        b.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            b.push(TOMBSTONE_MARK);
        }
        b
    }

    /// The smallest stored key of this revision or later.
    pub fn lower_key(self) -> Vec<u8> {
        self.to_key(false)
    }

    /// Parses a stored key; returns the revision and whether it marks a tombstone.
    pub fn from_key(b: &[u8]) -> Option<(Self, bool)> {
        if b.len() < REV_BYTES || b[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(b[0..8].try_into().ok()?);
        let sub = i64::from_be_bytes(b[9..17].try_into().ok()?);
        let tombstone = match &b[REV_BYTES..] {
            [] => false,
            [TOMBSTONE_MARK] => true,
            _ => return None,
        };
        Some((Self { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_order() {
        let a = Revision::new(5, 0);
        let b = Revision::new(5, 1);
        let c = Revision::new(300, 0);
        assert!(a.to_key(false) < b.to_key(true));
        assert!(b.to_key(true) < c.to_key(false));
        assert_eq!(Revision::from_key(&b.to_key(true)), Some((b, true)));
        assert_eq!(Revision::from_key(&c.to_key(false)), Some((c, false)));
        assert_eq!(Revision::from_key(b"short"), None);
    }
}
