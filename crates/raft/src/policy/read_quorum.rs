//! Which one member confirms a leader's read index instead of a heartbeat round to every voter.
//!
//! A read index covers every write that completed before a read began once a quorum has been
//! seen, after the read began, to still follow the leader (the leader included): a leader
//! elected since needed the vote of some member of that quorum, which then no longer follows
//! the old one. openraft's round asks every voter at once and waits for a quorum; with two data
//! members and a witness that is a heartbeat to the witness per round, which is most of what the
//! witness does under a read load (and ~6% of the machine). The leader and one other voter
//! suffice when the two are a quorum of every configuration in force (of three voters: any two;
//! joint configurations: each). A data member is asked, never the witness (W3: it sees little
//! more than heartbeats); when none qualifies, or the one asked does not answer in time, the
//! leader runs openraft's round as before (`crate::read_confirm`).
//!
//! A follower's read is confirmed the same way with no round at all: it asks the leader, which
//! answers with its read index and its leadership (its state at that instant, taken in openraft's
//! core), and the follower then checks that its own vote still names that leadership. Both the
//! leader's answer and the follower's check come after the read began, and the two are a quorum.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// Whether `a` and `b` together are a quorum of every configuration in `configs` (a joint
/// membership has two; none is never a quorum).
pub fn pair_is_quorum(configs: &[BTreeSet<NodeId>], a: NodeId, b: NodeId) -> bool {
    !configs.is_empty()
        && a != b
        && configs.iter().all(|voters| {
            let present = usize::from(voters.contains(&a)) + usize::from(voters.contains(&b));
            2 * present > voters.len()
        })
}

/// The member that, with the leader `me`, confirms its read index: the first data member (not
/// in `witnesses`) that makes a quorum with it, if any.
pub fn partner(
    configs: &[BTreeSet<NodeId>],
    me: NodeId,
    witnesses: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    configs
        .iter()
        .flatten()
        .copied()
        .filter(|p| *p != me && !witnesses.contains(p))
        .find(|p| pair_is_quorum(configs, me, *p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configurations, the leader, the witnesses, the partner expected.
    type PartnerCase<'a> = (&'a [&'a [NodeId]], NodeId, &'a [NodeId], Option<NodeId>);

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn two_members_are_a_quorum_only_of_every_configuration_they_hold_a_majority_of() {
        let cases: &[(&[&[NodeId]], NodeId, NodeId, bool)] = &[
            // Two data members and a witness (or three data members): any two.
            (&[&[1, 2, 3]], 1, 2, true),
            (&[&[1, 2, 3]], 1, 3, true),
            // One is not a pair.
            (&[&[1, 2, 3]], 1, 1, false),
            // Not a member.
            (&[&[1, 2, 3]], 1, 4, false),
            // Two of four, or of five, are not a majority.
            (&[&[1, 2, 3, 4]], 1, 2, false),
            (&[&[1, 2, 3, 4, 5]], 1, 2, false),
            // Two members: both.
            (&[&[1, 2]], 1, 2, true),
            // Joint: a majority of each.
            (&[&[1, 2, 3], &[1, 2, 4]], 1, 2, true),
            (&[&[1, 2, 3], &[1, 3, 4]], 1, 2, false),
            (&[&[1, 2, 3], &[1, 2, 3, 4]], 1, 2, false),
            // No configuration.
            (&[], 1, 2, false),
        ];
        for (configs, a, b, want) in cases {
            let configs: Vec<_> = configs.iter().map(|c| set(c)).collect();
            assert_eq!(
                pair_is_quorum(&configs, *a, *b),
                *want,
                "{configs:?} {a} {b}"
            );
        }
    }

    #[test]
    fn the_partner_is_a_data_member_that_makes_a_quorum_with_the_leader() {
        let cases: &[PartnerCase<'_>] = &[
            // Two data members and a witness (3): the other data member.
            (&[&[1, 2, 3]], 1, &[3], Some(2)),
            (&[&[1, 2, 3]], 2, &[3], Some(1)),
            // The witness leads: a data member.
            (&[&[1, 2, 3]], 3, &[3], Some(1)),
            // Never the witness, even when it is the only one left.
            (&[&[1, 3]], 1, &[3], None),
            // Three data members: the first other.
            (&[&[1, 2, 3]], 1, &[], Some(2)),
            // Five: no pair is a quorum.
            (&[&[1, 2, 3, 4, 5]], 1, &[], None),
            // A leader alone.
            (&[&[1]], 1, &[], None),
            // Joint: one in both configurations.
            (&[&[1, 2, 3], &[1, 3, 4]], 1, &[], Some(3)),
        ];
        for (configs, me, witnesses, want) in cases {
            let configs: Vec<_> = configs.iter().map(|c| set(c)).collect();
            assert_eq!(
                partner(&configs, *me, &set(witnesses)),
                *want,
                "{configs:?} {me}"
            );
        }
    }
}
