//! etcd's backend database file, the format of etcd's snapshots (`etcdctl snapshot save`,
//! `etcdutl snapshot status/restore`): a bbolt file whose buckets hold what etcd 3.5 keeps —
//! `key` (every stored change under its revision bytes, `mvccpb.KeyValue` values), `meta`
//! (consistent index, term, compaction revisions), `lease` (`leasepb.Lease`), `alarm`,
//! `auth`/`authUsers`/`authRoles` (`authpb`), `members`/`members_removed` (JSON as etcd's
//! membership store writes it) and `cluster` (the cluster version).
//!
//! [`Writer`] is an [`mvcc::ExportSink`]: the keyspace streams into it record by record, and it
//! commits the bbolt file in bounded batches ([`BATCH_BYTES`]), so a snapshot of any size is
//! written with bounded memory. The layout and the encodings follow etcd v3.5.1's
//! `server/mvcc/buckets`, `server/lease`, `server/auth` and `server/etcdserver/api/membership`;
//! the file engine is the `bbolt-rs` crate (docs/decisions/0013-etcd-snapshot-format.md).

mod bolt_read;
pub mod restore;

use std::collections::BTreeMap;
use std::path::Path;

use bbolt_rs::{BucketRwApi, DbRwAPI, TxRwRefApi};
use mvcc::auth::{AuthState, PermType};
use mvcc::{Alarm, AlarmType};
use prost::Message;

/// etcd's bucket names, in etcd's order of creation.
pub const BUCKETS: [&str; 10] = [
    "key",
    "meta",
    "lease",
    "alarm",
    "cluster",
    "members",
    "members_removed",
    "auth",
    "authUsers",
    "authRoles",
];
/// Puts are committed once this many key and value bytes wait (bounds the memory a snapshot
/// takes: bbolt keeps a transaction's dirty pages in memory until it commits, in a few copies;
/// 2 MiB batches raised a 1 GiB snapshot's anonymous memory by up to ~60 MiB, 512 KiB ones by
/// under 5 MiB, and took no longer).
pub const BATCH_BYTES: usize = 512 << 10;
/// bbolt's page size on the machines etcd runs on.
const PAGE_BYTES: usize = 4096;
/// The fill of bbolt pages: records arrive in key order, so pages are filled as bbolt fills
/// them for sequential inserts, not half-empty.
const FILL_PERCENT: f64 = 0.9;
/// The cluster version a tandem cluster reports (etcd's `cluster/clusterVersion`).
pub const CLUSTER_VERSION: &str = "3.5.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd db file: {0}")]
    Bolt(String),
    #[error("etcd db file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<bbolt_rs::Error> for Error {
    fn from(e: bbolt_rs::Error) -> Self {
        Error::Bolt(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A member as etcd's membership store keeps it (`members` bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What the keyspace does not hold: raft's position and the membership.
#[derive(Debug, Clone, Default)]
pub struct ClusterInfo {
    /// The raft index of the last entry applied to the keyspace (etcd's consistent index).
    pub consistent_index: u64,
    pub term: u64,
    pub members: Vec<Member>,
}

/// One key and its value.
type Record = (Vec<u8>, Vec<u8>);

/// Writes a new etcd db file from a keyspace export.
pub struct Writer {
    path: std::path::PathBuf,
    /// Open but while it is being reopened.
    db: Option<bbolt_rs::Bolt>,
    pending: BTreeMap<&'static str, Vec<Record>>,
    pending_bytes: usize,
    /// Bytes committed since the file was last opened.
    since_open: usize,
    compacted: i64,
}

/// How much is written before the file is closed and opened again. bbolt reads pages through a
/// shared mapping of the whole file (and writes with write(2)): each commit reads the pages at
/// the end of the tree it appends to, new pages every time, and they stay resident in this
/// process until the mapping goes. Reopening drops the mapping, so a snapshot's resident file
/// pages stay within what this many bytes touch, whatever the keyspace's size (a 1 GiB export
/// kept ~70 MiB of them without it).
const REOPEN_BYTES: usize = 32 << 20;

fn open_bolt(path: &Path) -> Result<bbolt_rs::Bolt> {
    // Batches are not synced one by one: the file is synced once, when finished.
    Ok(bbolt_rs::BoltOptions::builder()
        .no_sync()
        .page_size(PAGE_BYTES)
        .build()
        .open(path)?)
}

impl Writer {
    /// Creates the file at `path` (which must not exist) with etcd's buckets.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Err(Error::Bolt(format!("{} already exists", path.display())));
        }
        let mut db = open_bolt(path)?;
        db.update(|mut tx| {
            for b in BUCKETS {
                tx.create_bucket(b)?;
            }
            Ok(())
        })?;
        Ok(Writer {
            path: path.to_path_buf(),
            db: Some(db),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            since_open: 0,
            compacted: 0,
        })
    }

    fn bolt(&mut self) -> Result<&mut bbolt_rs::Bolt> {
        self.db
            .as_mut()
            .ok_or_else(|| Error::Bolt("the file could not be opened again".into()))
    }

    fn put(&mut self, bucket: &'static str, k: Vec<u8>, v: Vec<u8>) -> Result<()> {
        self.pending_bytes += k.len() + v.len();
        self.pending.entry(bucket).or_default().push((k, v));
        if self.pending_bytes >= BATCH_BYTES {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.since_open += std::mem::take(&mut self.pending_bytes);
        if pending.is_empty() {
            return Ok(());
        }
        if self.since_open >= REOPEN_BYTES {
            // The old handle (its mapping and its file lock) goes before the new one opens.
            self.db = None;
            self.db = Some(open_bolt(&self.path)?);
            self.since_open = 0;
        }
        self.bolt()?.update(|mut tx| {
            for (name, records) in &pending {
                let mut b = tx.bucket_mut(name).ok_or(bbolt_rs::Error::BucketNotFound)?;
                b.set_fill_percent(FILL_PERCENT);
                for (k, v) in records {
                    b.put(k, v)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Writes what the keyspace does not hold, commits, and closes the file (synced).
    pub fn finish(mut self, info: &ClusterInfo) -> Result<()> {
        self.put(
            "meta",
            b"consistent_index".to_vec(),
            info.consistent_index.to_be_bytes().to_vec(),
        )?;
        self.put("meta", b"term".to_vec(), info.term.to_be_bytes().to_vec())?;
        if self.compacted > 0 {
            // etcd writes both once a compaction has finished; a restarted etcd resumes from them.
            let rev = mvcc::Revision::new(self.compacted, 0).to_key(false);
            self.put("meta", b"scheduledCompactRev".to_vec(), rev.clone())?;
            self.put("meta", b"finishedCompactRev".to_vec(), rev)?;
        }
        for m in &info.members {
            self.put(
                "members",
                format!("{:x}", m.id).into_bytes(),
                member_json(m),
            )?;
        }
        self.put(
            "cluster",
            b"clusterVersion".to_vec(),
            CLUSTER_VERSION.as_bytes().to_vec(),
        )?;
        self.commit()?;
        self.bolt()?.sync()?;
        Ok(())
    }
}

fn storage(e: Error) -> mvcc::Error {
    mvcc::Error::Storage(e.to_string())
}

impl mvcc::ExportSink for Writer {
    fn revisions(&mut self, _current: i64, compacted: i64) -> mvcc::Result<()> {
        self.compacted = compacted;
        Ok(())
    }

    fn kv(&mut self, revision: &[u8], value: &[u8]) -> mvcc::Result<()> {
        self.put("key", revision.to_vec(), value.to_vec())
            .map_err(storage)
    }

    fn lease(&mut self, id: i64, ttl: i64) -> mvcc::Result<()> {
        let lease = LeasePb {
            id,
            ttl,
            remaining_ttl: 0,
        };
        self.put("lease", id.to_be_bytes().to_vec(), lease.encode_to_vec())
            .map_err(storage)
    }

    fn auth(&mut self, auth: &AuthState) -> mvcc::Result<()> {
        for (bucket, (k, v)) in auth_records(auth) {
            self.put(bucket, k, v).map_err(storage)?;
        }
        Ok(())
    }

    fn alarms(&mut self, alarms: &[Alarm]) -> mvcc::Result<()> {
        for a in alarms {
            let member = AlarmMemberPb {
                member_id: a.member_id,
                alarm: match a.alarm {
                    AlarmType::NoSpace => 1,
                    AlarmType::Corrupt => 2,
                },
            };
            self.put("alarm", member.encode_to_vec(), Vec::new())
                .map_err(storage)?;
        }
        Ok(())
    }
}

/// The `auth`, `authUsers` and `authRoles` records of `auth`, as etcd's auth store writes them.
fn auth_records(auth: &AuthState) -> Vec<(&'static str, Record)> {
    let mut out = Vec::new();
    if auth.enabled {
        out.push(("auth", (b"authEnabled".to_vec(), vec![1])));
    }
    out.push((
        "auth",
        (
            b"authRevision".to_vec(),
            auth.revision.to_be_bytes().to_vec(),
        ),
    ));
    for (name, u) in &auth.users {
        let user = UserPb {
            name: name.as_bytes().to_vec(),
            password: u.password.clone(),
            roles: u.roles.clone(),
            options: u.no_password.then_some(UserOptionsPb { no_password: true }),
        };
        out.push((
            "authUsers",
            (name.as_bytes().to_vec(), user.encode_to_vec()),
        ));
    }
    for (name, r) in &auth.roles {
        let role = RolePb {
            name: name.as_bytes().to_vec(),
            key_permission: r
                .perms
                .iter()
                .map(|p| PermissionPb {
                    perm_type: match p.perm_type {
                        PermType::Read => 0,
                        PermType::Write => 1,
                        PermType::ReadWrite => 2,
                    },
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect(),
        };
        out.push((
            "authRoles",
            (name.as_bytes().to_vec(), role.encode_to_vec()),
        ));
    }
    out
}

/// etcd's `membership.Member` as JSON: the id, then the raft attributes, then the others.
#[derive(serde::Serialize)]
struct MemberJson<'a> {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
    client_urls: &'a [String],
}

fn member_json(m: &Member) -> Vec<u8> {
    serde_json::to_vec(&MemberJson {
        id: m.id,
        peer_urls: &m.peer_urls,
        is_learner: m.is_learner,
        name: &m.name,
        client_urls: &m.client_urls,
    })
    .expect("a member serializes")
}

/// `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// `etcdserverpb.AlarmMember`.
#[derive(Clone, PartialEq, prost::Message)]
struct AlarmMemberPb {
    #[prost(uint64, tag = "1")]
    member_id: u64,
    #[prost(int32, tag = "2")]
    alarm: i32,
}

/// `authpb.User`.
#[derive(Clone, PartialEq, prost::Message)]
struct UserPb {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    password: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    roles: Vec<String>,
    #[prost(message, optional, tag = "4")]
    options: Option<UserOptionsPb>,
}

/// `authpb.UserAddOptions`.
#[derive(Clone, PartialEq, prost::Message)]
struct UserOptionsPb {
    #[prost(bool, tag = "1")]
    no_password: bool,
}

/// `authpb.Permission`.
#[derive(Clone, PartialEq, prost::Message)]
struct PermissionPb {
    #[prost(int32, tag = "1")]
    perm_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    range_end: Vec<u8>,
}

/// `authpb.Role`.
#[derive(Clone, PartialEq, prost::Message)]
struct RolePb {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    key_permission: Vec<PermissionPb>,
}
