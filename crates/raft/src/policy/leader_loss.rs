//! Leader loss: openraft 0.9 keeps a leader that hears from no quorum in office; etcd's raft
//! (CheckQuorum) steps down after an election timeout. tandem reports no leader instead, and
//! refuses proposals, which is what a client of etcd sees.

use openraft::ServerState;

use crate::types::Metrics;

/// Whether the member whose metrics are `m` leads but has not heard from a quorum for an
/// election timeout.
pub fn lost_quorum(m: &Metrics, election_timeout_ms: u64) -> bool {
    let membership = m.membership_config.membership();
    let others = membership.voter_ids().any(|v| v != m.id);
    m.state == ServerState::Leader
        && others
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms > election_timeout_ms)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use super::*;
    use crate::types::{Membership, StoredMembership};

    fn metrics(voters: &[u64], state: ServerState, since_ack_ms: Option<u64>) -> Metrics {
        let nodes: BTreeMap<u64, crate::types::MemberNode> =
            voters.iter().map(|v| (*v, Default::default())).collect();
        let membership =
            Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes);
        let mut m = Metrics::new_initial(1);
        m.state = state;
        m.millis_since_quorum_ack = since_ack_ms;
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    #[test]
    fn a_leader_is_lost_only_after_an_election_timeout_without_a_quorum() {
        let cases = [
            (vec![1, 2, 3], ServerState::Leader, Some(1001), true),
            (vec![1, 2, 3], ServerState::Leader, Some(1000), false),
            (vec![1, 2, 3], ServerState::Leader, None, false),
            (vec![1, 2, 3], ServerState::Follower, Some(5000), false),
            // A sole voter is its own quorum.
            (vec![1], ServerState::Leader, Some(5000), false),
        ];
        for (voters, state, since, lost) in cases {
            let m = metrics(&voters, state, since);
            assert_eq!(
                lost_quorum(&m, 1000),
                lost,
                "{voters:?} {state:?} {since:?}"
            );
        }
    }
}
