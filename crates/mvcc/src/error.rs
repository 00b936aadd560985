//! Errors of the keyspace. Each maps to exactly one etcd error at the gRPC edge (the server's
//! status table); the variants carry no text of their own for clients.

/// A request the store refuses, or a storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error("required revision has been compacted")]
    Compacted,
    #[error("required revision is a future revision")]
    FutureRevision,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("key not found")]
    KeyNotFound,
    /// The operation needs the store to itself and readers hold it; try again later.
    #[error("store busy")]
    Busy,
    /// The storage engine failed. The caller must stop the node: state may be unknown.
    #[error("storage failure: {0}")]
    Storage(String),
    /// Bytes read back from disk do not decode: corruption.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The CORRUPT alarm is raised: the cluster refuses mutations until it is disarmed.
    #[error("corrupt cluster")]
    CorruptCluster,
    // etcd's auth store errors (`server/auth/store.go`).
    #[error("root user does not exist")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("user already exists")]
    UserAlreadyExist,
    #[error("user name is empty")]
    UserEmpty,
    #[error("user not found")]
    UserNotFound,
    #[error("role already exists")]
    RoleAlreadyExist,
    #[error("role not found")]
    RoleNotFound,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("permission denied")]
    PermissionDenied,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    #[error("revision in header is old")]
    AuthOldRevision,
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    /// The keyspace file has a layout this build does not know (a newer tandem wrote it).
    #[error("{0}")]
    UnsupportedFormat(String),
}

pub type Result<T> = std::result::Result<T, Error>;

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}

storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError
);
