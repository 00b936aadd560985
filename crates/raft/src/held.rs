//! What a witness holds of entry payloads (W4): while engaged it keeps the payloads a data node
//! lacks, and only those (everything at or below the data floor is elided). Past its cap it
//! takes no more, so nothing further commits without a data node: "safe but unavailable until
//! A returns" (two-node design, W4). The sizes only; what a payload means is not known here.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The payloads a witness holds, by entry index, and the most it may hold.
pub struct HeldPayloads {
    cap: u64,
    held: Mutex<BTreeMap<u64, u64>>,
}

impl HeldPayloads {
    pub fn new(cap: u64) -> Self {
        HeldPayloads {
            cap,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes of payloads held now.
    pub fn bytes(&self) -> u64 {
        self.lock().values().sum()
    }

    /// Whether the cap is reached: no more payloads are taken.
    pub fn full(&self) -> bool {
        self.bytes() >= self.cap
    }

    /// Records appended entries (index, payload bytes) and the data floor that came with them:
    /// what is at or below the floor is on every data node and no longer held.
    pub fn appended(&self, entries: impl IntoIterator<Item = (u64, u64)>, floor: u64) {
        let mut held = self.lock();
        for (index, bytes) in entries {
            // A conflicting entry replaces the one at its index, and those after it.
            held.split_off(&index);
            held.insert(index, bytes);
        }
        *held = held.split_off(&(floor + 1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_held_until_the_floor_passes_them_and_the_cap_stops_more() {
        let h = HeldPayloads::new(100);
        h.appended([(5, 30), (6, 30)], 4);
        assert_eq!(
            (h.bytes(), h.full()),
            (60, false),
            "two payloads above the floor"
        );
        h.appended([(7, 50)], 4);
        assert_eq!((h.bytes(), h.full()), (110, true), "past the cap");
        h.appended([], 6);
        assert_eq!(
            (h.bytes(), h.full()),
            (50, false),
            "the floor passed 5 and 6"
        );
        h.appended([(7, 10), (8, 10)], 6);
        assert_eq!(h.bytes(), 20, "a conflicting entry at 7 replaced the old 7");
        h.appended([(8, 5)], 6);
        assert_eq!(h.bytes(), 15, "and one at 8 replaced 8 and kept 7");
        h.appended([], 100);
        assert_eq!(h.bytes(), 0, "all on every data node");
    }
}
