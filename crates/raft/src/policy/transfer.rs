//! Moving leadership to another voter (etcd's MoveLeader), which openraft 0.9 cannot do by itself
//! (it has no `transfer_leader`). The leader:
//!
//! 1. holds new requests (done by the driver, `crate::leadership`) and waits until the
//!    transferee holds every entry of its log;
//! 2. falls **silent**: no AppendEntries (heartbeats included) and no snapshot chunk leaves it;
//! 3. once a lease and a margin (messages already on their way) have passed, asks the
//!    transferee to stand for election (`ForwardRequest::Campaign`), and again every
//!    `retry_ms` while nobody else leads — sooner than the followers' own election timers
//!    (lease + [E/2, E)) fire, so a campaign lost to a late message (a voter whose lease was
//!    renewed by a heartbeat delayed past the margin) is not overtaken by another follower's;
//! 4. is done when it no longer leads and the transferee does; past the deadline the move has
//!    failed (etcd: "leader transfer took too long"), the silence ends and the held requests
//!    go on;
//! 5. when another member won an election instead (its own timer fired while the transferee's
//!    campaigns were refused, on a slow machine), hands the move to that member, which moves
//!    its leadership to the transferee within what is left of the deadline (etcd's transfer
//!    cannot be overtaken this way: its transferee campaigns past the voters' leases).
//!
//! Why the silence: openraft 0.9 refuses every candidate while the voter's lease on its leader
//! runs (openraft's `election_timeout_max`, renewed on a follower by each AppendEntries; on the
//! leader itself it dates from its election). A campaign refused that way leaves the
//! transferee at a higher term; the leader's next heartbeat is answered with that term and
//! deposes the leader without electing anyone, and the voters go on refusing for a lease: the
//! move stalled past etcdctl's 5 s (seen with three members when the leader was new). Silent
//! for a lease, every voter's lease has run out, and the first campaign wins: the transferee's
//! log is as long as any.
//!
//! There is never a moment with two leaders answering: from the start of the move the old
//! leader answers nothing a leader alone may answer (requests are held; without heartbeats no
//! read round of its own completes), and the transferee can win only after the leases on the
//! old leader ran out.

use crate::types::NodeId;

/// One look at the leader's progress, from its raft metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    /// This member still leads.
    pub leading: bool,
    pub current_leader: Option<NodeId>,
    pub last_index: u64,
    /// The last index the transferee is known to hold.
    pub target_matched: u64,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Wait,
    /// Stop sending AppendEntries and snapshots to every peer.
    FallSilent,
    /// Ask the transferee to stand for election now.
    Campaign,
    /// The transferee leads.
    Moved,
    /// This other member leads now: it is to move its leadership to the transferee.
    Overtaken(NodeId),
    /// The deadline passed.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    target: NodeId,
    lease_ms: u64,
    margin_ms: u64,
    retry_ms: u64,
    deadline_ms: u64,
    silent_since: Option<u64>,
    last_campaign: Option<u64>,
    /// The member that overtook this one, once the move was handed to it.
    handed_to: Option<NodeId>,
}

impl Transfer {
    /// A move to `target` started at `now_ms`, to be over within `timeout_ms`. `lease_ms` is
    /// how long a voter refuses candidates after its leader's last message, `margin_ms` covers
    /// messages sent just before the silence, and `retry_ms` is how long a campaign may take
    /// before the transferee is asked again.
    pub fn new(
        target: NodeId,
        now_ms: u64,
        timeout_ms: u64,
        lease_ms: u64,
        margin_ms: u64,
        retry_ms: u64,
    ) -> Self {
        Transfer {
            target,
            lease_ms,
            margin_ms,
            retry_ms,
            deadline_ms: now_ms + timeout_ms,
            silent_since: None,
            last_campaign: None,
            handed_to: None,
        }
    }

    pub fn observe(&mut self, o: &Observation) -> Step {
        if !o.leading && o.current_leader == Some(self.target) {
            return Step::Moved;
        }
        if o.now_ms >= self.deadline_ms {
            return Step::TimedOut;
        }
        // Another member won: the move is handed to it, once per member that leads.
        if let (false, Some(other)) = (o.leading, o.current_leader) {
            if self.handed_to == Some(other) {
                return Step::Wait;
            }
            self.handed_to = Some(other);
            return Step::Overtaken(other);
        }
        let Some(since) = self.silent_since else {
            if o.leading && o.target_matched >= o.last_index {
                self.silent_since = Some(o.now_ms);
                return Step::FallSilent;
            }
            return Step::Wait;
        };
        if o.now_ms < since + self.lease_ms + self.margin_ms {
            return Step::Wait;
        }
        // Deposed with no leader known: the transferee's vote arrived and its first heartbeat
        // is on its way, or its campaign was lost; asked again after `retry_ms` (a leader asked
        // to stand answers without a new election).
        if self
            .last_campaign
            .is_some_and(|t| o.now_ms < t + self.retry_ms)
        {
            return Step::Wait;
        }
        self.last_campaign = Some(o.now_ms);
        Step::Campaign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;
    const B: NodeId = 2;
    const C: NodeId = 3;

    fn obs(now_ms: u64, leader: Option<NodeId>, last: u64, matched: u64) -> Observation {
        Observation {
            now_ms,
            leading: leader == Some(ME),
            current_leader: leader,
            last_index: last,
            target_matched: matched,
        }
    }

    /// timeout 5000, lease 500, margin 100, retry 1000.
    fn run(events: &[Observation]) -> Vec<Step> {
        let mut t = Transfer::new(B, 0, 5000, 500, 100, 1000);
        events.iter().map(|o| t.observe(o)).collect()
    }

    #[test]
    fn a_move_goes_silent_once_caught_up_then_campaigns_after_the_lease() {
        use Step::*;
        let table: &[(&str, Vec<Observation>, Vec<Step>)] = &[
            (
                "caught up at once: silent, a campaign after lease + margin, deposed, moved",
                vec![
                    obs(0, Some(ME), 10, 10),
                    obs(599, Some(ME), 10, 10),
                    obs(600, Some(ME), 10, 10),
                    obs(700, None, 10, 10),
                    obs(750, Some(B), 10, 10),
                ],
                vec![FallSilent, Wait, Campaign, Wait, Moved],
            ),
            (
                "behind: no silence until the transferee holds the last entry",
                vec![
                    obs(0, Some(ME), 10, 8),
                    obs(50, Some(ME), 11, 10),
                    obs(80, Some(ME), 11, 11),
                    obs(680, Some(ME), 11, 11),
                ],
                vec![Wait, Wait, FallSilent, Campaign],
            ),
            (
                "a lost campaign is asked again after retry, not before",
                vec![
                    obs(0, Some(ME), 10, 10),
                    obs(600, Some(ME), 10, 10),
                    obs(1599, Some(ME), 10, 10),
                    obs(1600, Some(ME), 10, 10),
                ],
                vec![FallSilent, Campaign, Wait, Campaign],
            ),
            (
                "deposed with no leader known: asked again after retry (a lost campaign)",
                vec![
                    obs(0, Some(ME), 10, 10),
                    obs(600, Some(ME), 10, 10),
                    obs(700, None, 10, 10),
                    obs(1599, None, 10, 10),
                    obs(1600, None, 10, 10),
                    obs(1650, Some(B), 10, 10),
                ],
                vec![FallSilent, Campaign, Wait, Wait, Campaign, Moved],
            ),
            (
                "past the deadline: timed out, caught up or not",
                vec![obs(100, Some(ME), 10, 3), obs(5000, Some(ME), 10, 3)],
                vec![Wait, TimedOut],
            ),
            (
                "another member won: the move is handed to it once, then the deadline counts",
                vec![
                    obs(0, Some(ME), 10, 10),
                    obs(600, Some(ME), 10, 10),
                    obs(900, Some(C), 10, 10),
                    obs(950, Some(C), 10, 10),
                    obs(5000, Some(C), 10, 10),
                ],
                vec![FallSilent, Campaign, Overtaken(C), Wait, TimedOut],
            ),
            (
                "deposed before falling silent: handed to the new leader as well",
                vec![obs(0, Some(ME), 10, 8), obs(50, Some(C), 10, 8)],
                vec![Wait, Overtaken(C)],
            ),
            (
                "the transferee leading wins over the deadline",
                vec![obs(0, Some(ME), 10, 10), obs(6000, Some(B), 10, 10)],
                vec![FallSilent, Moved],
            ),
        ];
        for (what, events, want) in table {
            assert_eq!(&run(events), want, "{what}");
        }
    }
}
