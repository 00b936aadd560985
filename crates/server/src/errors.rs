//! The one place where tandem's errors become etcd's gRPC errors. Every handler returns
//! `tonic::Status` built here, so the codes and messages clients see are exactly etcd's
//! (`etcd_api::rpctypes`).

use etcd_api::rpctypes::{self, RpcError};
use replication::ReplicaError;
use tonic::Status;

/// The etcd error for a keyspace error. Storage failures are not client errors: the node is
/// stopping, and the client is told so.
pub fn mvcc_error(e: &mvcc::Error) -> RpcError {
    match e {
        mvcc::Error::Compacted => rpctypes::COMPACTED,
        mvcc::Error::FutureRevision => rpctypes::FUTURE_REV,
        mvcc::Error::LeaseNotFound => rpctypes::LEASE_NOT_FOUND,
        mvcc::Error::LeaseExists => rpctypes::LEASE_EXIST,
        mvcc::Error::KeyNotFound => rpctypes::KEY_NOT_FOUND,
        mvcc::Error::Busy => rpctypes::TOO_MANY_REQUESTS,
        mvcc::Error::CorruptCluster => rpctypes::CORRUPT,
        mvcc::Error::RootUserNotExist => rpctypes::ROOT_USER_NOT_EXIST,
        mvcc::Error::RootRoleNotExist => rpctypes::ROOT_ROLE_NOT_EXIST,
        mvcc::Error::UserAlreadyExist => rpctypes::USER_ALREADY_EXIST,
        mvcc::Error::UserEmpty => rpctypes::USER_EMPTY,
        mvcc::Error::UserNotFound => rpctypes::USER_NOT_FOUND,
        mvcc::Error::RoleAlreadyExist => rpctypes::ROLE_ALREADY_EXIST,
        mvcc::Error::RoleNotFound => rpctypes::ROLE_NOT_FOUND,
        mvcc::Error::RoleEmpty => rpctypes::ROLE_EMPTY,
        mvcc::Error::PermissionDenied => rpctypes::PERMISSION_DENIED,
        mvcc::Error::RoleNotGranted => rpctypes::ROLE_NOT_GRANTED,
        mvcc::Error::PermissionNotGranted => rpctypes::PERMISSION_NOT_GRANTED,
        mvcc::Error::AuthOldRevision => rpctypes::AUTH_OLD_REVISION,
        mvcc::Error::InvalidAuthMgmt => rpctypes::INVALID_AUTH_MGMT,
        mvcc::Error::Storage(_) | mvcc::Error::Corrupt(_) | mvcc::Error::UnsupportedFormat(_) => {
            rpctypes::STOPPED
        }
    }
}

/// The etcd error for a replication failure.
pub fn replica_error(e: &ReplicaError) -> RpcError {
    match e {
        ReplicaError::NoLeader => rpctypes::NO_LEADER,
        ReplicaError::NotLeader(_) | ReplicaError::LeaderChanged => rpctypes::LEADER_CHANGED,
        // etcd's removed member stops: its clients see "server stopped".
        ReplicaError::Stopped | ReplicaError::Removed => rpctypes::STOPPED,
        ReplicaError::Timeout => rpctypes::TIMEOUT,
        ReplicaError::Membership(e) => membership_error(*e),
    }
}

/// The etcd error for a refused membership change.
pub fn membership_error(e: raft::policy::membership::MembershipError) -> RpcError {
    use raft::policy::membership::MembershipError as M;
    match e {
        M::MemberExists => rpctypes::MEMBER_EXIST,
        M::PeerUrlExists => rpctypes::PEER_URL_EXIST,
        M::NotFound => rpctypes::MEMBER_NOT_FOUND,
        M::NotLearner => rpctypes::MEMBER_NOT_LEARNER,
        M::LearnerNotReady => rpctypes::LEARNER_NOT_READY,
        M::TooManyLearners => rpctypes::TOO_MANY_LEARNERS,
        M::NotEnoughStarted => rpctypes::MEMBER_NOT_ENOUGH_STARTED,
        M::Unhealthy => rpctypes::UNHEALTHY,
        M::WitnessExists => rpctypes::WITNESS_EXISTS,
        M::WitnessLearner => rpctypes::WITNESS_LEARNER,
    }
}

pub fn from_mvcc(e: mvcc::Error) -> Status {
    if matches!(e, mvcc::Error::Storage(_) | mvcc::Error::Corrupt(_)) {
        tracing::error!(error = %e, "keyspace failure");
    }
    mvcc_error(&e).status()
}

pub fn from_replica(e: ReplicaError) -> Status {
    replica_error(&e).status()
}

/// A command answered with a response of another kind: a bug, reported as Internal.
pub fn unexpected(r: mvcc::CommandResponse) -> Status {
    tracing::error!(response = ?r, "a command returned a response of another kind");
    Status::internal("tandem: unexpected response kind")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_errors_use_etcds_strings() {
        let s = from_mvcc(mvcc::Error::Compacted);
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = from_mvcc(mvcc::Error::FutureRevision);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let s = from_mvcc(mvcc::Error::LeaseNotFound);
        assert_eq!(
            (s.code(), s.message()),
            (
                tonic::Code::NotFound,
                "etcdserver: requested lease not found"
            )
        );
        let s = from_replica(ReplicaError::NoLeader);
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
    }
}
