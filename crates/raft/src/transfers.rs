//! Snapshot transfers between members, counted as etcd counts them (`etcd_network_snapshot_send_*`
//! by peer `To`, `etcd_network_snapshot_receive_*` by peer `From`): whether one is in flight,
//! how many succeeded and how many failed. openraft sends a snapshot as a series of chunks; a
//! transfer starts with the chunk at offset 0 and ends with the chunk marked done, or with the
//! first chunk that fails. Operators (and the robustness suite, which kills a member in the
//! middle of an install) read them from `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::types::NodeId;

/// How long one snapshot chunk may take to be sent and, for the last one, installed (openraft's
/// `install_snapshot_timeout`, milliseconds). openraft's default, 200 ms, is far too short for a
/// 3 MiB chunk on a busy machine or a slow link, or for installing a large keyspace: each timeout
/// restarts the transfer, and each restart rebuilds the snapshot, so a follower far enough behind
/// never caught up (S20 found it). A member that stops answering still fails the transfer, just
/// later; a member that is down fails it at once (the connection is refused).
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 60_000;

/// One direction of transfers with one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub inflight: bool,
    pub success: u64,
    pub failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Send,
    Receive,
}

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub first: bool,
    pub last: bool,
    pub ok: bool,
}

#[derive(Default)]
pub struct Transfers {
    by_peer: Mutex<BTreeMap<(Direction, NodeId), Counts>>,
}

impl Transfers {
    /// Records a chunk sent to, or received from, `peer`.
    pub fn note(&self, direction: Direction, peer: NodeId, chunk: Chunk) {
        let mut map = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let c = map.entry((direction, peer)).or_default();
        *c = step(*c, chunk);
    }

    /// Every peer's counts in `direction`.
    pub fn counts(&self, direction: Direction) -> Vec<(NodeId, Counts)> {
        let map = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((d, _), _)| *d == direction)
            .map(|((_, p), c)| (*p, *c))
            .collect()
    }
}

/// The counts after `chunk`.
fn step(mut c: Counts, chunk: Chunk) -> Counts {
    if chunk.first {
        c.inflight = true;
    }
    if !c.inflight {
        return c; // a chunk of a transfer already counted as failed
    }
    if !chunk.ok {
        c.inflight = false;
        c.failures += 1;
    } else if chunk.last {
        c.inflight = false;
        c.success += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Chunk = Chunk {
        first: true,
        last: false,
        ok: true,
    };
    const MIDDLE: Chunk = Chunk {
        first: false,
        last: false,
        ok: true,
    };
    const LAST: Chunk = Chunk {
        first: false,
        last: true,
        ok: true,
    };
    const FAILED: Chunk = Chunk {
        first: false,
        last: false,
        ok: false,
    };

    fn run(chunks: &[Chunk]) -> Counts {
        chunks.iter().fold(Counts::default(), |c, k| step(c, *k))
    }

    #[test]
    fn a_transfer_is_in_flight_from_its_first_chunk_to_its_last() {
        let table: &[(&[Chunk], Counts)] = &[
            (&[], Counts::default()),
            (
                &[FIRST],
                Counts {
                    inflight: true,
                    ..Counts::default()
                },
            ),
            (
                &[FIRST, MIDDLE],
                Counts {
                    inflight: true,
                    ..Counts::default()
                },
            ),
            (
                &[FIRST, MIDDLE, LAST],
                Counts {
                    success: 1,
                    ..Counts::default()
                },
            ),
            (
                &[FIRST, FAILED],
                Counts {
                    failures: 1,
                    ..Counts::default()
                },
            ),
            // The rest of a failed transfer is not counted again.
            (
                &[FIRST, FAILED, MIDDLE, LAST],
                Counts {
                    failures: 1,
                    ..Counts::default()
                },
            ),
            // A transfer of one chunk.
            (
                &[Chunk {
                    first: true,
                    last: true,
                    ok: true,
                }],
                Counts {
                    success: 1,
                    ..Counts::default()
                },
            ),
            // Restarted from the beginning: still one in flight.
            (
                &[FIRST, MIDDLE, FIRST],
                Counts {
                    inflight: true,
                    ..Counts::default()
                },
            ),
        ];
        for (chunks, want) in table {
            assert_eq!(run(chunks), *want, "after {chunks:?}");
        }
    }
}
