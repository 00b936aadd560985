//! The requests and results of the keyspace, in the storage layer's own terms. They mirror etcd's
//! v3 messages field for field, but carry no protobuf: the server converts at the gRPC edge.
//! [`Command`] is what the replicated log carries; its serialized form is a durable format
//! (docs/durable-formats.md), so variants are only ever appended.

use serde::{Deserialize, Serialize};

/// A key with its value and history counters, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Put,
    Delete,
}

/// One change, as a watcher sees it. A delete carries the key and the deleting revision only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// Which keys a request covers: one key, `[key, end)`, or every key from `key` on
/// (etcd's `range_end = "\0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange<'a> {
    Single(&'a [u8]),
    Between(&'a [u8], &'a [u8]),
    From(&'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// etcd's reading of a (key, range_end) pair.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::Between(key, end) => k >= key && k < end,
            KeyRange::From(key) => k >= key,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub limit: i64,
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// Keys in the range at the read revision, ignoring `limit`.
    pub count: i64,
    /// The store's revision when the read was served (the header revision).
    pub revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
    pub revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare reads from each key and the operand it compares with. An absent key reads as
/// zero revisions, version and lease; a value compare on an absent key always fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    pub revision: i64,
}

/// Alarms a member can raise, as etcd's `AlarmType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmType {
    NoSpace,
    Corrupt,
}

/// One raised alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Alarm {
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// A mutation, in the order the replicated log decided. Appending variants is compatible;
/// changing or removing one is a durable-format change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease (by a client, or because the leader saw it expire): one revision
    /// deletes every attached key.
    LeaseRevoke {
        id: i64,
    },
    AlarmActivate(Alarm),
    AlarmDeactivate(Alarm),
    /// Changes nothing; used to commit an entry of a new term.
    Noop,
    /// Revokes a lease whose TTL the leader of `term` saw run out. Expiry times live in that
    /// leader's memory alone, so this holds only in an entry of the same term
    /// ([`Command::in_entry_of_term`]).
    LeaseExpire {
        id: i64,
        term: u64,
    },
    /// A change to users, roles, permissions or whether authentication is enabled.
    Auth(crate::auth::AuthCommand),
    /// A client's request with who asked: applied only if the auth state, as of this entry,
    /// permits it (etcd's auth applier), so a permission revoked after the request was taken
    /// still stops it.
    As(crate::auth::Caller, Box<Command>),
}

impl Command {
    /// Whether etcd checks this against the backend quota and refuses it while NOSPACE is
    /// raised: Put, LeaseGrant and every Txn, even one that only reads or deletes (etcd 3.5.1
    /// refuses both; a plain DeleteRange passes).
    pub fn quota_checked(&self) -> bool {
        if let Command::As(_, c) = self {
            return c.quota_checked();
        }
        matches!(
            self,
            Command::Put(_) | Command::LeaseGrant { .. } | Command::Txn(_)
        )
    }

    /// Whether etcd's corrupt applier refuses this while the CORRUPT alarm is raised: every
    /// mutation of keys or leases, and a Txn unless each of its operations is a range
    /// (etcd serves such a txn without its applier; a nested txn counts as a write).
    /// Keep-alives and alarms pass.
    pub fn refused_when_corrupt(&self) -> bool {
        match self {
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseExpire { .. } => true,
            Command::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .any(|op| !matches!(op, RequestOp::Range(_))),
            Command::AlarmActivate(_)
            | Command::AlarmDeactivate(_)
            | Command::Noop
            | Command::Auth(_) => false,
            Command::As(_, c) => c.refused_when_corrupt(),
        }
    }

    /// Whether applying this may create keys or grow the store.
    pub fn may_grow(&self) -> bool {
        fn ops_grow(ops: &[RequestOp]) -> bool {
            ops.iter().any(|op| match op {
                RequestOp::Put(_) => true,
                RequestOp::Txn(t) => ops_grow(&t.success) || ops_grow(&t.failure),
                _ => false,
            })
        }
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(t) => ops_grow(&t.success) || ops_grow(&t.failure),
            Command::As(_, c) => c.may_grow(),
            _ => false,
        }
    }
}

impl Command {
    /// What this command does as a log entry of `term`: an expiry the leader of another term
    /// decided changes nothing. A deposed leader's expiry, forwarded to its successor, would
    /// otherwise revoke a lease the successor has renewed since, breaking the TTL its keep-alive
    /// promised. (An expiry that reached the log in its own term is applied by a successor before
    /// the successor renews anything: its first read index covers every entry it inherited.)
    pub fn in_entry_of_term(self, term: u64) -> Command {
        match self {
            Command::LeaseExpire { term: decided, .. } if decided != term => Command::Noop,
            Command::As(caller, c) => Command::As(caller, Box::new(c.in_entry_of_term(term))),
            cmd => cmd,
        }
    }

    /// Roughly how many bytes applying this may write (keys and values of its puts).
    pub fn approx_bytes(&self) -> usize {
        fn ops_bytes(ops: &[RequestOp]) -> usize {
            ops.iter()
                .map(|op| match op {
                    RequestOp::Put(p) => p.key.len() + p.value.len(),
                    RequestOp::Txn(t) => ops_bytes(&t.success).max(ops_bytes(&t.failure)),
                    RequestOp::DeleteRange(d) => d.key.len(),
                    RequestOp::Range(_) => 0,
                })
                .sum()
        }
        match self {
            Command::Put(p) => p.key.len() + p.value.len(),
            Command::DeleteRange(d) => d.key.len(),
            Command::Txn(t) => ops_bytes(&t.success).max(ops_bytes(&t.failure)),
            Command::As(_, c) => c.approx_bytes(),
            _ => 0,
        }
    }
}

/// What applying a command returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact { revision: i64 },
    LeaseGrant { id: i64, ttl: i64, revision: i64 },
    LeaseRevoke { revision: i64 },
    Alarm { alarms: Vec<Alarm>, revision: i64 },
    Noop { revision: i64 },
    Auth { revision: i64 },
}

impl CommandResponse {
    /// The response with its header revision set to `rev` (the store's revision after the
    /// command).
    pub fn with_revision(self, rev: i64) -> Self {
        match self {
            CommandResponse::Put(p) => CommandResponse::Put(PutResponse { revision: rev, ..p }),
            CommandResponse::DeleteRange(d) => {
                CommandResponse::DeleteRange(DeleteRangeResponse { revision: rev, ..d })
            }
            CommandResponse::Txn(t) => CommandResponse::Txn(TxnResponse { revision: rev, ..t }),
            CommandResponse::Compact { .. } => CommandResponse::Compact { revision: rev },
            CommandResponse::LeaseGrant { id, ttl, .. } => CommandResponse::LeaseGrant {
                id,
                ttl,
                revision: rev,
            },
            CommandResponse::LeaseRevoke { .. } => CommandResponse::LeaseRevoke { revision: rev },
            CommandResponse::Alarm { alarms, .. } => CommandResponse::Alarm {
                alarms,
                revision: rev,
            },
            CommandResponse::Noop { .. } => CommandResponse::Noop { revision: rev },
            CommandResponse::Auth { .. } => CommandResponse::Auth { revision: rev },
        }
    }
}

/// A lease as the store knows it: its granted TTL and the keys attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl: i64,
    pub keys: Vec<Vec<u8>>,
}
