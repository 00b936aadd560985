//! Deliberately broken variants, to prove the robustness suite's checkers catch what they
//! claim to (issue 10.4). Compiled only with the `mutants` feature, which no release build
//! enables; with it, `TANDEM_MUTANT` names the one bug to switch on:
//! - `stale-read`: a linearizable read is served from the local keyspace without a ReadIndex
//!   round (a follower behind the leader, or a deposed leader, answers with old data);
//! - `lease-early`: a lease expires after half its TTL;
//! - `watch-from-rev-minus-1`: a watch starts one revision before the one asked for (a client
//!   resuming at `last + 1` gets `last` again);
//! - `ack-before-fsync`: the raft log is never fdatasynced, so entries are acknowledged before
//!   they are durable (only a power cut shows it);
//! - `fsync-errors-ignored`: a failed fdatasync of the raft log is logged and taken for success
//!   (fsyncgate: the node goes on acknowledging writes that may not be on disk);
//! - `deposed-leader-read`: a member that believes it leads serves a linearizable read from its
//!   keyspace without a round that confirms it still does (a lease that was never granted: a
//!   leader paused past the election timeout answers with old data once it resumes);
//! - `witness-forgets`: the witness starts with an empty log and no vote (W1 broken: after a
//!   double failure its vote elects a data member that lacks acknowledged writes).
//!
//! The switch lives here, the lowest crate with a mutant; the server's `mutants` feature turns
//! on this crate's.
//!
//! Without the feature [`on`] is a constant `false` and every mutant compiles away.

/// Whether the named mutant is switched on.
#[cfg(feature = "mutants")]
pub fn on(name: &str) -> bool {
    static MUTANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    MUTANT
        .get_or_init(|| {
            let m = std::env::var("TANDEM_MUTANT").ok();
            if let Some(m) = &m {
                tracing::warn!(mutant = %m, "running a deliberately broken build");
            }
            m
        })
        .as_deref()
        == Some(name)
}

#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub fn on(_name: &str) -> bool {
    false
}
