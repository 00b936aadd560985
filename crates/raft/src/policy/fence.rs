//! Fencing: two data members and no witness (`--fence-command`). A member that loses its peer
//! for an election timeout has the operator's command fence (power off) that peer, and only
//! once the command reports success continues alone, keeping every entry of its log
//! (`crate::fence` does that part).
//!
//! Two decisions live here, both pure:
//!
//! - **Armed** ([`Arming`]): a member may fence only once, in this run of its process, its peer
//!   has answered that the membership in effect is the two of them as voters, committed. In a
//!   committed two-voter membership every committed entry is on both members, so either may
//!   continue alone without losing an acknowledged write. A member that has just restarted
//!   (after being fenced, say) does not know that: its peer may have continued alone and
//!   committed entries it lacks. Until it hears so from its peer it never fences, however long
//!   the peer is silent (corosync's `wait_for_all` is the same rule). Once armed it stays so
//!   while its own membership is still the two of them: the peer can leave that membership only
//!   by fencing this member, which powers it off.
//! - **When** ([`Fencer`]): silence from the peer for an election timeout is a loss. The member
//!   that led when the loss began fences at once; the other waits `delay_ms` more (Pacemaker's
//!   `pcmk_delay_base`), so that in a symmetric partition with both alive exactly one side
//!   fences the other. A fence that fails (or hangs, and is killed) is tried again after
//!   `retry_ms`; the member meanwhile refuses writes (it has no quorum). Hearing from the peer
//!   again ends the loss, unless a fence has already succeeded: then the peer is off, whatever
//!   answered.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// What the peer said of the membership in effect (its `ForwardRequest::Members` answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub voters: BTreeSet<NodeId>,
    /// The peer has applied that membership (it is committed).
    pub committed: bool,
}

/// Whether this member may fence its peer.
#[derive(Debug, Clone, Default)]
pub struct Arming {
    armed: bool,
}

impl Arming {
    /// Looks at this member's own voters and, when the peer just answered, its view; returns
    /// the peer to fence should it be lost (`None`: not armed).
    pub fn observe(
        &mut self,
        me: NodeId,
        mine: &BTreeSet<NodeId>,
        answer: Option<&PeerView>,
    ) -> Option<NodeId> {
        let peer = two_of(me, mine);
        if peer.is_none() {
            self.armed = false;
            return None;
        }
        if let Some(view) = answer {
            // The peer's word counts both ways: a peer that holds another membership (it went
            // on alone, or was not told of ours yet) disarms.
            self.armed = view.committed && &view.voters == mine;
        }
        peer.filter(|_| self.armed)
    }

    pub fn armed(&self) -> bool {
        self.armed
    }
}

/// The other voter when the voters are exactly this member and one other.
fn two_of(me: NodeId, voters: &BTreeSet<NodeId>) -> Option<NodeId> {
    if voters.len() != 2 || !voters.contains(&me) {
        return None;
    }
    voters.iter().copied().find(|v| *v != me)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Silence from the peer this long is a loss (etcd's election timeout).
    pub loss_ms: u64,
    /// The member that did not lead waits this much longer before fencing.
    pub delay_ms: u64,
    /// After a failed fence, the next attempt waits this long.
    pub retry_ms: u64,
}

/// One look at the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    /// The peer to fence should it be lost ([`Arming::observe`]).
    pub armed_against: Option<NodeId>,
    /// When the peer last answered.
    pub heard_ms: u64,
    /// This member leads now.
    pub leading: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Wait,
    /// Run the fence command for this peer now, and report with [`Fencer::fenced`].
    Fence(NodeId),
    /// The peer is fenced: continue alone.
    Alone(NodeId),
}

#[derive(Debug, Clone)]
pub struct Fencer {
    settings: Settings,
    /// When this member last led.
    led_ms: Option<u64>,
    /// The loss under way: the peer, and when fencing may start.
    loss: Option<(NodeId, u64)>,
    running: bool,
    done: Option<NodeId>,
}

impl Fencer {
    pub fn new(settings: Settings) -> Self {
        Fencer {
            settings,
            led_ms: None,
            loss: None,
            running: false,
            done: None,
        }
    }

    pub fn observe(&mut self, o: &Observation) -> Step {
        if let Some(peer) = self.done {
            return Step::Alone(peer);
        }
        if o.leading {
            self.led_ms = Some(o.now_ms);
        }
        if self.running {
            return Step::Wait;
        }
        let Some(peer) = o.armed_against else {
            self.loss = None;
            return Step::Wait;
        };
        let silent = o.now_ms.saturating_sub(o.heard_ms) >= self.settings.loss_ms;
        if !silent {
            self.loss = None;
            return Step::Wait;
        }
        let due = *self.loss.get_or_insert_with(|| {
            // Led until the loss began (its last lead is within the silence, or it leads
            // still): fence at once. Otherwise let the leader's fence land first.
            let led = self.led_ms.is_some_and(|l| l >= o.heard_ms);
            (
                peer,
                o.now_ms + if led { 0 } else { self.settings.delay_ms },
            )
        });
        if due.0 != peer || o.now_ms < due.1 {
            return Step::Wait;
        }
        self.running = true;
        Step::Fence(peer)
    }

    /// The fence command for `peer` finished: `ok` when it reported success.
    pub fn fenced(&mut self, peer: NodeId, ok: bool, now_ms: u64) -> Step {
        self.running = false;
        if ok {
            self.done = Some(peer);
            return Step::Alone(peer);
        }
        if let Some(loss) = &mut self.loss {
            loss.1 = now_ms + self.settings.retry_ms;
        }
        Step::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;
    const PEER: NodeId = 2;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn view(ids: &[NodeId], committed: bool) -> PeerView {
        PeerView {
            voters: set(ids),
            committed,
        }
    }

    #[test]
    fn arming_needs_the_peers_word_on_a_committed_two_voter_membership() {
        // (own voters, peer's answer, armed before, armed after)
        type Row<'a> = (&'a [NodeId], Option<PeerView>, bool, Option<NodeId>);
        let table: &[Row<'_>] = &[
            // Just started: the peer has said nothing yet.
            (&[ME, PEER], None, false, None),
            // The peer confirms.
            (
                &[ME, PEER],
                Some(view(&[ME, PEER], true)),
                false,
                Some(PEER),
            ),
            // Not committed on the peer yet.
            (&[ME, PEER], Some(view(&[ME, PEER], false)), false, None),
            // The peer went on alone (this member was fenced and restarted).
            (&[ME, PEER], Some(view(&[PEER], true)), false, None),
            (&[ME, PEER], Some(view(&[PEER], true)), true, None),
            // Armed, and the peer is silent: stays armed.
            (&[ME, PEER], None, true, Some(PEER)),
            // Alone, or a learner: never armed.
            (&[ME], Some(view(&[ME], true)), true, None),
            (&[PEER], None, true, None),
            // Three voters: not the fencing topology.
            (&[ME, PEER, 3], Some(view(&[ME, PEER, 3], true)), true, None),
        ];
        for (i, (mine, answer, before, want)) in table.iter().enumerate() {
            let mut a = Arming { armed: *before };
            assert_eq!(a.observe(ME, &set(mine), answer.as_ref()), *want, "row {i}");
        }
    }

    #[test]
    fn armed_membership_change_disarms_until_the_peer_confirms_again() {
        let mut a = Arming::default();
        let two = set(&[ME, PEER]);
        assert_eq!(
            a.observe(ME, &two, Some(&view(&[ME, PEER], true))),
            Some(PEER)
        );
        assert_eq!(a.observe(ME, &set(&[ME]), None), None);
        assert_eq!(
            a.observe(ME, &two, None),
            None,
            "re-armed without the peer's word"
        );
        assert_eq!(
            a.observe(ME, &two, Some(&view(&[ME, PEER], true))),
            Some(PEER)
        );
    }

    const S: Settings = Settings {
        loss_ms: 1000,
        delay_ms: 3000,
        retry_ms: 500,
    };

    fn obs(now_ms: u64, heard_ms: u64, leading: bool) -> Observation {
        Observation {
            now_ms,
            armed_against: Some(PEER),
            heard_ms,
            leading,
        }
    }

    #[test]
    fn the_leader_fences_once_the_peer_is_silent_for_an_election_timeout() {
        let mut f = Fencer::new(S);
        assert_eq!(f.observe(&obs(100, 100, true)), Step::Wait);
        assert_eq!(f.observe(&obs(1099, 100, true)), Step::Wait);
        assert_eq!(f.observe(&obs(1100, 100, true)), Step::Fence(PEER));
        // One command at a time.
        assert_eq!(f.observe(&obs(1200, 100, true)), Step::Wait);
        assert_eq!(f.fenced(PEER, true, 1300), Step::Alone(PEER));
        // Done for good: even if something answers for the peer.
        assert_eq!(f.observe(&obs(1400, 1400, false)), Step::Alone(PEER));
    }

    #[test]
    fn the_member_that_did_not_lead_waits_the_delay_so_one_side_wins_the_race() {
        let mut f = Fencer::new(S);
        assert_eq!(f.observe(&obs(100, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(1100, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(4099, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(4100, 100, false)), Step::Fence(PEER));
    }

    #[test]
    fn a_leader_deposed_during_the_silence_still_fences_first() {
        let mut f = Fencer::new(S);
        assert_eq!(f.observe(&obs(100, 100, true)), Step::Wait);
        assert_eq!(f.observe(&obs(600, 100, true)), Step::Wait);
        // Stepped down (lost its quorum) before the loss was declared.
        assert_eq!(f.observe(&obs(1100, 100, false)), Step::Fence(PEER));
    }

    #[test]
    fn a_leader_from_before_the_silence_does_not_count() {
        let mut f = Fencer::new(S);
        assert_eq!(f.observe(&obs(50, 50, true)), Step::Wait);
        assert_eq!(f.observe(&obs(100, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(1100, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(4100, 100, false)), Step::Fence(PEER));
    }

    #[test]
    fn a_failed_fence_is_retried_and_the_peers_return_ends_the_loss() {
        let mut f = Fencer::new(S);
        assert_eq!(f.observe(&obs(1100, 100, true)), Step::Fence(PEER));
        assert_eq!(f.fenced(PEER, false, 1500), Step::Wait);
        assert_eq!(f.observe(&obs(1999, 100, false)), Step::Wait);
        assert_eq!(f.observe(&obs(2000, 100, false)), Step::Fence(PEER));
        assert_eq!(f.fenced(PEER, false, 2100), Step::Wait);
        // The peer answers again: no loss, no fence.
        assert_eq!(f.observe(&obs(2700, 2650, false)), Step::Wait);
        assert_eq!(f.observe(&obs(3000, 2700, false)), Step::Wait);
    }

    #[test]
    fn an_unarmed_member_never_fences() {
        let mut f = Fencer::new(S);
        let unarmed = Observation {
            armed_against: None,
            ..obs(100_000, 0, true)
        };
        assert_eq!(f.observe(&unarmed), Step::Wait);
    }
}
