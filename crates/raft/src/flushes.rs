//! Log flush times: this member's, measured from its log writer ([`FlushClock`]), and its
//! peers', as they report them in their answers to AppendEntries ([`PeerFlushes`], carried in
//! `RaftMessage.flush_micros`). A leader compares them to hand over when its disk is the slow
//! one (`crate::policy::slow_disk`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::log_store::LogStats;
use crate::policy::slow_disk::FlushWindow;
use crate::types::NodeId;

/// The window recent flushes are averaged over.
pub const WINDOW_MS: u64 = 2000;
/// How often the figure is worked out again (answers in between reuse it).
const RESAMPLE_MS: u64 = 100;

/// Microseconds since the first call in this process (a monotonic clock for the counters).
pub fn now_micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// This member's recent log flush time.
pub struct FlushClock {
    stats: Arc<LogStats>,
    state: Mutex<(FlushWindow, u64, u64)>,
}

impl FlushClock {
    pub fn new(stats: Arc<LogStats>) -> Self {
        FlushClock {
            stats,
            state: Mutex::new((FlushWindow::default(), 0, 0)),
        }
    }

    /// The average of the flushes completed in the last [`WINDOW_MS`], at least the age of
    /// the one under way, in µs (0: none lately).
    pub fn recent_micros(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let now_ms = now_micros() / 1000;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (window, last_ms, last) = &mut *state;
        if *last_ms != 0 && now_ms < *last_ms + RESAMPLE_MS {
            return (*last).max(self.stats.inflight_micros());
        }
        *last = window.sample(
            now_ms,
            WINDOW_MS,
            self.stats.commits.load(Relaxed),
            self.stats.commit_micros.load(Relaxed),
            self.stats.inflight_micros(),
        );
        *last_ms = now_ms.max(1);
        *last
    }
}

/// What each peer last reported of its log flushes.
#[derive(Default)]
pub struct PeerFlushes {
    /// Each peer's last reported flush time (µs), when it last answered an AppendEntries, and
    /// since when it has answered without a gap.
    by_peer: Mutex<BTreeMap<NodeId, (u64, Instant, Instant)>>,
}

/// A peer silent this long is no longer active (etcd marks a peer inactive when a message to
/// it fails; leaders here send at least every heartbeat interval).
const ACTIVE_GAP: std::time::Duration = std::time::Duration::from_secs(1);

impl PeerFlushes {
    pub fn note(&self, peer: NodeId, micros: u64) {
        let now = Instant::now();
        let mut m = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let since = match m.get(&peer) {
            Some((_, last, since)) if now.duration_since(*last) <= ACTIVE_GAP => *since,
            _ => now,
        };
        m.insert(peer, (micros, now, since));
    }

    /// The last figure `peer` reported (0: none).
    pub fn of(&self, peer: NodeId) -> u64 {
        let m = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&peer).map_or(0, |(micros, _, _)| *micros)
    }

    /// The peers that have answered without a gap for at least `for_at_least` (etcd's
    /// transport "active since", which its membership checks use).
    pub fn active_for(
        &self,
        for_at_least: std::time::Duration,
    ) -> std::collections::BTreeSet<NodeId> {
        let m = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(_, (_, last, since))| {
                last.elapsed() <= ACTIVE_GAP && since.elapsed() >= for_at_least
            })
            .map(|(id, _)| *id)
            .collect()
    }
}
