//! openraft 0.9's backoff after losing a vote to a greater log, without its stickiness.
//!
//! A candidate whose vote request a voter refuses because the voter's log is greater than the
//! candidate's waits, before it stands again, an extra `smaller_log_timeout` (2 × its
//! `election_timeout_max`), so that the member with the greater log wins instead of the two
//! taking turns at raising the term. In openraft 0.9 that flag (`seen_greater_log`) is cleared
//! only when the member next stands: a member that lost the election at start-up, caught up as a
//! follower and never stood again carries the extra 2 s into the next leader loss, minutes or
//! days later. With three members and a cut-off leader that held writes up for 4 s (etcd: 1.9 s;
//! openraft issue #2088, fixed upstream by PR #2087 after 0.9: the backoff applies only while the
//! member's log is still smaller than the greater one).
//!
//! The same, with openraft 0.9: the vote client hides a refusal's greater log from openraft (it
//! uses the field only for this flag) and records it here; [`drive`] turns this member's elections
//! off while its last log is below the greatest one recorded, for at most the same
//! `smaller_log_timeout`. Only on members whose elections openraft's timer starts (not beside a
//! witness, not with fencing: tandem's pre-vote starts those, `crate::prevote`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::raft::VoteResponse;

use crate::types::{LogId, NodeId, Types};

/// A member's record of the greater logs its refused votes met.
#[derive(Debug)]
pub struct VoteBackoff {
    /// Whether [`drive`] runs for this member: otherwise refusals reach openraft unchanged.
    enabled: AtomicBool,
    greater: tokio::sync::watch::Sender<Option<LogId>>,
}

impl Default for VoteBackoff {
    fn default() -> Self {
        VoteBackoff {
            enabled: AtomicBool::new(false),
            greater: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl VoteBackoff {
    /// The answer to a vote request sent with the candidate's last log `candidate_last`, as
    /// openraft is to see it.
    pub fn answer(
        &self,
        candidate_last: Option<LogId>,
        mut resp: VoteResponse<NodeId>,
    ) -> VoteResponse<NodeId> {
        if !self.enabled.load(Ordering::Relaxed) || resp.vote_granted {
            return resp;
        }
        if let Some(greater) = resp.last_log_id.filter(|g| Some(*g) > candidate_last) {
            self.greater.send_if_modified(|g| match g {
                Some(seen) if *seen >= greater => false,
                _ => {
                    *g = Some(greater);
                    true
                }
            });
            resp.last_log_id = None;
        }
        resp
    }
}

/// Whether a member whose last log is `mine` may stand again, `since` after a refusal showed the
/// log `greater`: once it has caught up, or after `penalty` whatever its log.
pub fn may_stand(mine: Option<u64>, greater: LogId, since: Duration, penalty: Duration) -> bool {
    since >= penalty || mine.is_some_and(|m| m >= greater.index)
}

/// Keeps this member's elections off while a refusal's greater log is ahead of its own (at most
/// `penalty` after each refusal). Ends with raft.
pub async fn drive<C: Types>(
    raft: openraft::Raft<C>,
    backoff: std::sync::Arc<VoteBackoff>,
    penalty: Duration,
) {
    backoff.enabled.store(true, Ordering::Relaxed);
    let mut greater = backoff.greater.subscribe();
    let mut metrics = raft.metrics();
    while greater.changed().await.is_ok() {
        let Some(seen) = *greater.borrow_and_update() else {
            continue;
        };
        let since = tokio::time::Instant::now();
        raft.runtime_config().elect(false);
        tracing::info!(greater = %seen, "a voter refused this member's vote for its greater log: no election until this member has caught up");
        loop {
            let mine = metrics.borrow_and_update().last_log_index;
            if may_stand(mine, seen, since.elapsed(), penalty) {
                break;
            }
            let left = penalty.saturating_sub(since.elapsed());
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(left) => {}
            }
        }
        raft.runtime_config().elect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Vote};

    fn log(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn refusal(last: Option<LogId>) -> VoteResponse<NodeId> {
        VoteResponse {
            vote: Vote::new(2, 3),
            vote_granted: false,
            last_log_id: last,
        }
    }

    #[test]
    fn a_refusal_for_a_greater_log_is_recorded_and_hidden_once_enabled() {
        let b = VoteBackoff::default();
        // Not enabled: openraft sees it as it came.
        assert_eq!(
            b.answer(Some(log(1, 5)), refusal(Some(log(1, 9))))
                .last_log_id,
            Some(log(1, 9))
        );
        assert_eq!(*b.greater.borrow(), None);
        b.enabled.store(true, Ordering::Relaxed);
        assert_eq!(
            b.answer(Some(log(1, 5)), refusal(Some(log(1, 9))))
                .last_log_id,
            None
        );
        assert_eq!(*b.greater.borrow(), Some(log(1, 9)));
        // A smaller greater log does not lower it; a log not greater than the candidate's and
        // a granted vote pass unchanged.
        b.answer(Some(log(1, 5)), refusal(Some(log(1, 7))));
        assert_eq!(*b.greater.borrow(), Some(log(1, 9)));
        assert_eq!(
            b.answer(Some(log(1, 9)), refusal(Some(log(1, 9))))
                .last_log_id,
            Some(log(1, 9))
        );
        let mut granted = refusal(Some(log(1, 12)));
        granted.vote_granted = true;
        assert_eq!(
            b.answer(Some(log(1, 5)), granted).last_log_id,
            Some(log(1, 12))
        );
        assert_eq!(*b.greater.borrow(), Some(log(1, 9)));
    }

    #[test]
    fn a_member_stands_again_once_caught_up_or_after_the_penalty() {
        let s = Duration::from_secs;
        for (mine, since, expected) in [
            (Some(5), s(0), false),
            (None, s(1), false),
            (Some(8), s(1), false),
            (Some(9), s(0), true),
            (Some(20), s(0), true),
            (Some(5), s(2), true),
        ] {
            assert_eq!(
                may_stand(mine, log(1, 9), since, s(2)),
                expected,
                "{mine:?} after {since:?}"
            );
        }
    }
}
