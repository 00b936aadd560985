//! Membership changes as etcd's Cluster API asks for them (MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote), checked the way etcd checks them — its validation of a
//! configuration change and its strict reconfiguration check (`--strict-reconfig-check`, on by
//! default) — and turned into openraft's change. Pure: the leader gathers the facts.
//!
//! etcd changes one member per raft entry; openraft changes voters through a joint
//! configuration (two entries), so the quorum checks below hold for both of its steps: the
//! joint configuration needs a quorum of the old voters and of the new.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{MemberNode, Membership, NodeId};

/// How long a peer must have answered without a gap to count as connected (etcd's
/// `HealthInterval`: a member just connected to does not count yet).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A learner is promoted only once it has matched this share of the leader's log (etcd's
/// `readyPercentThreshold`).
pub const LEARNER_READY_SHARE: f64 = 0.9;
/// At most this many learners (etcd 3.5's `maxLearners`).
pub const MAX_LEARNERS: usize = 1;

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new member (no name until it starts and publishes its attributes).
    Add {
        id: NodeId,
        node: MemberNode,
        learner: bool,
    },
    Remove {
        id: NodeId,
    },
    /// New peer URLs for a member.
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
    /// A learner becomes a voter.
    Promote {
        id: NodeId,
    },
}

/// Why a change is refused: each is one etcd error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("member id already exists")]
    MemberExists,
    #[error("peer URLs already exist")]
    PeerUrlExists,
    #[error("member not found")]
    NotFound,
    #[error("member is not a learner")]
    NotLearner,
    #[error("learner not in sync with the leader")]
    LearnerNotReady,
    #[error("too many learners")]
    TooManyLearners,
    #[error("not enough started members")]
    NotEnoughStarted,
    #[error("unhealthy cluster")]
    Unhealthy,
    /// tandem's own: a second witness.
    #[error("the cluster already has a witness")]
    WitnessExists,
    /// tandem's own: a witness votes or is nothing.
    #[error("a witness cannot be a learner")]
    WitnessLearner,
}

/// What the leader knows when it checks a change.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The membership in effect (uniform; a joint one is finished first).
    pub membership: &'a Membership,
    pub leader: NodeId,
    /// Members that have answered for [`HEALTH_INTERVAL`] (the leader counts as connected).
    pub connected: BTreeSet<NodeId>,
    /// How far each member's log matches the leader's (the leader's: its last log index).
    pub matched: BTreeMap<NodeId, u64>,
}

impl Facts<'_> {
    fn voters(&self) -> BTreeSet<NodeId> {
        self.membership.voter_ids().collect()
    }

    fn node(&self, id: NodeId) -> Option<&MemberNode> {
        self.membership.get_node(&id)
    }

    /// etcd: a member is started once it has published its name.
    fn started(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| !n.name.is_empty())
    }

    fn connected(&self, id: NodeId) -> bool {
        id == self.leader || self.connected.contains(&id)
    }
}

/// The openraft change for `change`, or why etcd would refuse it.
pub fn plan(
    change: &MemberChange,
    facts: &Facts<'_>,
) -> Result<openraft::ChangeMembers<NodeId, MemberNode>, MembershipError> {
    use openraft::ChangeMembers;
    let voters = facts.voters();
    let quorum = |n: usize| n / 2 + 1;
    match change {
        MemberChange::Add { id, node, learner } => {
            // etcd checks the cluster's health first (--strict-reconfig-check), then the
            // change itself. A voter: the started members must make a quorum of the grown
            // cluster (IsReadyToAddVotingMember), a 1-member cluster excepted.
            let members = voters.len() + 1;
            let started = voters.iter().filter(|v| facts.started(**v)).count();
            let restoring = started == 1 && members == 2;
            if !*learner && !restoring && started < quorum(members) {
                return Err(MembershipError::NotEnoughStarted);
            }
            // etcd 3.5: the member asked must have been connected to every voter for the
            // health interval, for a learner too.
            if !voters.iter().all(|v| facts.connected(*v)) {
                return Err(MembershipError::Unhealthy);
            }
            if facts.node(*id).is_some() {
                return Err(MembershipError::MemberExists);
            }
            let taken = facts
                .membership
                .nodes()
                .flat_map(|(_, n)| n.peer_urls.iter())
                .any(|u| node.peer_urls.contains(u));
            if taken {
                return Err(MembershipError::PeerUrlExists);
            }
            if node.witness {
                if *learner {
                    return Err(MembershipError::WitnessLearner);
                }
                if facts.membership.nodes().any(|(_, n)| n.witness) {
                    return Err(MembershipError::WitnessExists);
                }
            }
            if *learner {
                let learners = facts.membership.nodes().count() - voters.len();
                if learners + 1 > MAX_LEARNERS {
                    return Err(MembershipError::TooManyLearners);
                }
                return Ok(ChangeMembers::AddNodes(BTreeMap::from([(
                    *id,
                    node.clone(),
                )])));
            }
            Ok(ChangeMembers::AddVoters(BTreeMap::from([(
                *id,
                node.clone(),
            )])))
        }
        MemberChange::Remove { id } => {
            if facts.node(*id).is_none() {
                return Err(MembershipError::NotFound);
            }
            if !voters.contains(id) {
                return Ok(ChangeMembers::RemoveNodes(BTreeSet::from([*id])));
            }
            let rest: Vec<NodeId> = voters.iter().copied().filter(|v| v != id).collect();
            let started = rest.iter().filter(|v| facts.started(**v)).count();
            if started < quorum(rest.len()) {
                return Err(MembershipError::NotEnoughStarted);
            }
            // A member that is down is safe to remove; otherwise the connected members but it
            // must still make a quorum (etcd's mayRemoveMember).
            if *id == facts.leader || facts.connected(*id) {
                let connected = voters.iter().filter(|v| facts.connected(**v)).count();
                if connected - 1 < quorum(voters.len() - 1) {
                    return Err(MembershipError::Unhealthy);
                }
            }
            Ok(ChangeMembers::RemoveVoters(BTreeSet::from([*id])))
        }
        MemberChange::Update { id, peer_urls } => {
            let Some(node) = facts.node(*id) else {
                return Err(MembershipError::NotFound);
            };
            let taken = facts
                .membership
                .nodes()
                .filter(|(other, _)| *other != id)
                .flat_map(|(_, n)| n.peer_urls.iter())
                .any(|u| peer_urls.contains(u));
            if taken {
                return Err(MembershipError::PeerUrlExists);
            }
            let node = MemberNode {
                peer_urls: peer_urls.clone(),
                ..node.clone()
            };
            Ok(ChangeMembers::SetNodes(BTreeMap::from([(*id, node)])))
        }
        MemberChange::Promote { id } => {
            if facts.node(*id).is_none() {
                return Err(MembershipError::NotFound);
            }
            if voters.contains(id) {
                return Err(MembershipError::NotLearner);
            }
            let leader = facts.matched.get(&facts.leader).copied().unwrap_or(0);
            let learner = facts.matched.get(id).copied().unwrap_or(0);
            if leader > 0 && (learner as f64) / (leader as f64) < LEARNER_READY_SHARE {
                return Err(MembershipError::LearnerNotReady);
            }
            // The learner counts as started (etcd's IsReadyToPromoteMember).
            let members = voters.len() + 1;
            let started = 1 + voters.iter().filter(|v| facts.started(**v)).count();
            if started < quorum(members) {
                return Err(MembershipError::NotEnoughStarted);
            }
            Ok(ChangeMembers::AddVoterIds(BTreeSet::from([*id])))
        }
    }
}

/// What another member said its membership is (`ForwardRequest::Members`).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub cluster_id: u64,
    pub members: &'a [NodeId],
    /// The log index of that membership, when that member has applied it.
    pub committed_at: Option<u64>,
}

/// Whether `seen` proves member `me` of cluster `cluster_id` was removed, when the last
/// membership in its log that held it is at log index `held_at`: a committed membership of the
/// same cluster, later than that one, that leaves it out. Committed memberships follow one
/// another and an id removed never comes back, so a later one without it is its removal (or,
/// if its own was never committed, says it never joined); an earlier one (a member that lags)
/// or one not yet committed proves nothing.
pub fn removed_by(me: NodeId, cluster_id: u64, held_at: u64, seen: &Seen<'_>) -> bool {
    seen.cluster_id == cluster_id
        && seen.committed_at.is_some_and(|at| at > held_at)
        && !seen.members.contains(&me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, url: &str) -> MemberNode {
        MemberNode {
            name: name.into(),
            peer_urls: vec![url.into()],
            ..Default::default()
        }
    }

    /// Voters 1, 2, 3 (started unless named ""), learners as given.
    fn membership(unstarted: &[NodeId], learners: &[NodeId]) -> Membership {
        let mut nodes = BTreeMap::new();
        for id in [1, 2, 3].into_iter().chain(learners.iter().copied()) {
            let name = if unstarted.contains(&id) {
                String::new()
            } else {
                format!("m{id}")
            };
            nodes.insert(id, node(&name, &format!("http://h{id}:2380")));
        }
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    fn facts<'a>(m: &'a Membership, connected: &[NodeId], matched: &[(NodeId, u64)]) -> Facts<'a> {
        Facts {
            membership: m,
            leader: 1,
            connected: connected.iter().copied().collect(),
            matched: matched.iter().copied().collect(),
        }
    }

    fn add_witness(id: NodeId, learner: bool) -> MemberChange {
        MemberChange::Add {
            id,
            node: MemberNode {
                witness: true,
                ..node("", &format!("http://h{id}:2380"))
            },
            learner,
        }
    }

    fn add(id: NodeId, url: &str, learner: bool) -> MemberChange {
        MemberChange::Add {
            id,
            node: node("", url),
            learner,
        }
    }

    /// What is asked, of which membership, with which peers connected, and etcd's answer.
    type Case<'a> = (
        &'a str,
        &'a Membership,
        MemberChange,
        &'a [NodeId],
        Result<(), MembershipError>,
    );

    #[test]
    fn changes_are_checked_as_etcd_checks_them() {
        use MembershipError::*;
        let plain = membership(&[], &[]);
        let with_learner = membership(&[], &[4]);
        let with_witness = {
            let nodes = membership(&[], &[])
                .nodes()
                .map(|(id, n)| {
                    let witness = *id == 3;
                    (
                        *id,
                        MemberNode {
                            witness,
                            ..n.clone()
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>();
            Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
        };
        let two_unstarted = membership(&[2, 3], &[]);
        let all = [2, 3];
        let cases: Vec<Case<'_>> = vec![
            (
                "add a voter",
                &plain,
                add(9, "http://h9:2380", false),
                &all,
                Ok(()),
            ),
            (
                "add a learner",
                &plain,
                add(9, "http://h9:2380", true),
                &all,
                Ok(()),
            ),
            (
                "an id in use",
                &plain,
                add(2, "http://h9:2380", false),
                &all,
                Err(MemberExists),
            ),
            (
                "a peer URL in use",
                &plain,
                add(9, "http://h2:2380", false),
                &all,
                Err(PeerUrlExists),
            ),
            (
                "a second learner",
                &with_learner,
                add(9, "http://h9:2380", true),
                &all,
                Err(TooManyLearners),
            ),
            ("a witness", &plain, add_witness(9, false), &all, Ok(())),
            (
                "a witness as a learner",
                &plain,
                add_witness(9, true),
                &all,
                Err(WitnessLearner),
            ),
            (
                "a second witness",
                &with_witness,
                add_witness(9, false),
                &all,
                Err(WitnessExists),
            ),
            // 1 started of 4 members: below the quorum of 3.
            (
                "add beside unstarted",
                &two_unstarted,
                add(9, "http://h9:2380", false),
                &all,
                Err(NotEnoughStarted),
            ),
            // etcd 3.5: every voter connected, for a learner too.
            (
                "add while a peer is down",
                &plain,
                add(9, "http://h9:2380", false),
                &[2],
                Err(Unhealthy),
            ),
            (
                "add a learner while a peer is down",
                &plain,
                add(9, "http://h9:2380", true),
                &[2],
                Err(Unhealthy),
            ),
            (
                "remove a voter",
                &plain,
                MemberChange::Remove { id: 3 },
                &all,
                Ok(()),
            ),
            (
                "remove the leader",
                &plain,
                MemberChange::Remove { id: 1 },
                &all,
                Ok(()),
            ),
            (
                "remove an unknown member",
                &plain,
                MemberChange::Remove { id: 9 },
                &all,
                Err(NotFound),
            ),
            // A member that is down is safe to remove.
            (
                "remove a down member",
                &plain,
                MemberChange::Remove { id: 3 },
                &[2],
                Ok(()),
            ),
            // Removing a live member while another is down leaves 1 of 2.
            (
                "remove beside a down member",
                &plain,
                MemberChange::Remove { id: 2 },
                &[2],
                Err(Unhealthy),
            ),
            (
                "remove a learner",
                &with_learner,
                MemberChange::Remove { id: 4 },
                &[],
                Ok(()),
            ),
            (
                "remove beside unstarted",
                &two_unstarted,
                MemberChange::Remove { id: 1 },
                &all,
                Err(NotEnoughStarted),
            ),
            (
                "update",
                &plain,
                MemberChange::Update {
                    id: 2,
                    peer_urls: vec!["http://n2:2380".into()],
                },
                &all,
                Ok(()),
            ),
            (
                "update to its own URL",
                &plain,
                MemberChange::Update {
                    id: 2,
                    peer_urls: vec!["http://h2:2380".into()],
                },
                &all,
                Ok(()),
            ),
            (
                "update to another's URL",
                &plain,
                MemberChange::Update {
                    id: 2,
                    peer_urls: vec!["http://h3:2380".into()],
                },
                &all,
                Err(PeerUrlExists),
            ),
            (
                "update an unknown member",
                &plain,
                MemberChange::Update {
                    id: 9,
                    peer_urls: vec![],
                },
                &all,
                Err(NotFound),
            ),
            (
                "promote a voter",
                &plain,
                MemberChange::Promote { id: 2 },
                &all,
                Err(NotLearner),
            ),
            (
                "promote an unknown member",
                &plain,
                MemberChange::Promote { id: 9 },
                &all,
                Err(NotFound),
            ),
        ];
        let matched = [(1, 100), (4, 95)];
        for (what, m, change, connected, want) in cases {
            let got = plan(&change, &facts(m, connected, &matched)).map(|_| ());
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_learner_is_promoted_once_it_matched_nine_tenths_of_the_leaders_log() {
        let m = membership(&[], &[4]);
        for (learner, ok) in [(95, true), (90, true), (89, false), (0, false)] {
            let got = plan(
                &MemberChange::Promote { id: 4 },
                &facts(&m, &[2, 3, 4], &[(1, 100), (4, learner)]),
            );
            assert_eq!(got.is_ok(), ok, "learner at {learner} of 100: {got:?}");
            if !ok {
                assert_eq!(got, Err(MembershipError::LearnerNotReady));
            }
        }
    }

    #[test]
    fn each_change_becomes_the_matching_openraft_change() {
        use openraft::ChangeMembers;
        let m = membership(&[], &[4]);
        let f = facts(&m, &[2, 3, 4], &[(1, 10), (4, 10)]);
        assert!(
            matches!(plan(&add(9, "http://h9:2380", false), &f), Ok(ChangeMembers::AddVoters(n)) if n.contains_key(&9))
        );
        assert!(
            matches!(plan(&MemberChange::Remove { id: 2 }, &f), Ok(ChangeMembers::RemoveVoters(v)) if v == BTreeSet::from([2]))
        );
        assert!(
            matches!(plan(&MemberChange::Remove { id: 4 }, &f), Ok(ChangeMembers::RemoveNodes(v)) if v == BTreeSet::from([4]))
        );
        assert!(
            matches!(plan(&MemberChange::Promote { id: 4 }, &f), Ok(ChangeMembers::AddVoterIds(v)) if v == BTreeSet::from([4]))
        );
        let Ok(ChangeMembers::SetNodes(n)) = plan(
            &MemberChange::Update {
                id: 2,
                peer_urls: vec!["http://n2:2380".into()],
            },
            &f,
        ) else {
            panic!("update is SetNodes");
        };
        // The name and client URLs stay.
        assert_eq!(n[&2].name, "m2");
        assert_eq!(n[&2].peer_urls, vec!["http://n2:2380".to_string()]);
    }

    #[test]
    fn only_a_later_committed_membership_without_it_removes_a_member() {
        let seen = |cluster_id, members: &'static [NodeId], committed_at| Seen {
            cluster_id,
            members,
            committed_at,
        };
        // (the answer, whether member 3 of cluster 7, last held at index 10, was removed)
        let table = [
            (seen(7, &[1, 2], Some(12)), true),
            (seen(7, &[1, 2, 3], Some(12)), false),
            // Older than the last membership that held it: a member that lags, or had not
            // heard of 3 yet.
            (seen(7, &[1, 2], Some(9)), false),
            (seen(7, &[1, 2], Some(10)), false),
            // Not yet applied there: it may not be committed.
            (seen(7, &[1, 2], None), false),
            // Another cluster's members say nothing of this one.
            (seen(8, &[1, 2], Some(12)), false),
        ];
        for (answer, removed) in table {
            assert_eq!(removed_by(3, 7, 10, &answer), removed, "{answer:?}");
        }
    }
}
