//! Reading an etcd snapshot back (`tandem-ctl snapshot restore`): the SHA-256 trailer checked and
//! cut off as `etcdutl snapshot restore` does, then every bucket tandem keeps imported into an
//! empty keyspace ([`mvcc::Importer`]): stored changes, leases, the compaction point, users and
//! roles, alarms. Membership and raft state are not read: a restored member starts as a new
//! cluster, as etcd's restore makes one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use mvcc::auth::{AuthState, PermType, Permission, Role, User};
use mvcc::{Alarm, AlarmType};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::bolt_read::{BoltFile, Visit};
use crate::{AlarmMemberPb, Error, LeasePb, Result, RolePb, UserPb};

/// The SHA-256 trailer etcd appends to a snapshot.
const HASH_BYTES: u64 = 32;
/// A body with the trailer is this many bytes past a multiple of 512 (etcdutl's test).
const ALIGN_BYTES: u64 = 512;
/// Bytes copied at a time.
const COPY_BYTES: usize = 1 << 20;

/// Copies the database file of `snapshot` to `out`, checking the SHA-256 trailer as `etcdutl
/// snapshot restore` does (a file without one is taken only with `skip_hash_check`).
pub fn verify_and_copy(snapshot: &Path, out: &Path, skip_hash_check: bool) -> Result<()> {
    let mut f = std::fs::File::open(snapshot)?;
    let size = f.metadata()?.len();
    let has_hash = size % ALIGN_BYTES == HASH_BYTES;
    if !has_hash && !skip_hash_check {
        return Err(Error::Bolt(
            "snapshot missing hash but --skip-hash-check=false".into(),
        ));
    }
    let body = if has_hash { size - HASH_BYTES } else { size };
    let mut w = std::fs::File::create_new(out)?;
    let mut hasher = Sha256::new();
    let mut left = body;
    let mut buf = vec![0u8; COPY_BYTES];
    while left > 0 {
        let n = (left as usize).min(COPY_BYTES);
        f.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if has_hash && !skip_hash_check {
        let mut want = [0u8; HASH_BYTES as usize];
        f.seek(SeekFrom::Start(body))?;
        f.read_exact(&mut want)?;
        let got = hasher.finalize();
        if got.as_slice() != want {
            return Err(Error::Bolt(format!(
                "expected sha256 {want:?}, got {:?}",
                got.as_slice()
            )));
        }
    }
    w.sync_all()?;
    Ok(())
}

/// What a restore found, for its report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    pub leases: u64,
    pub compacted: i64,
}

fn mvcc_err(e: mvcc::Error) -> Error {
    Error::Bolt(e.to_string())
}

fn corrupt(what: &str) -> Error {
    Error::Bolt(format!("not an etcd database: {what}"))
}

fn be_i64(b: &[u8], what: &str) -> Result<i64> {
    Ok(i64::from_be_bytes(b.try_into().map_err(|_| corrupt(what))?))
}

/// Calls `f` with every key and value of top-level bucket `name` (none if it is missing).
fn each(bolt: &BoltFile, name: &str, f: &mut Visit<'_>) -> Result<()> {
    match bolt.bucket(name.as_bytes())? {
        Some(b) => bolt.for_each(&b, f),
        None => Ok(()),
    }
}

/// Imports the etcd database file at `db` into `store` (which must be empty). A fresh token
/// signing key is needed when authentication is on (etcd keeps none in its file): `token_key`.
pub fn import(db: &Path, store: &mvcc::Store, token_key: Vec<u8>) -> Result<Restored> {
    let bolt = BoltFile::open(db)?;
    if bolt.bucket(b"key")?.is_none() {
        return Err(corrupt("no key bucket"));
    }
    let mut im = store.importer().map_err(mvcc_err)?;
    let mut restored = Restored::default();
    each(&bolt, "key", &mut |k, v| {
        restored.records += 1;
        im.kv(k, v).map_err(mvcc_err)
    })?;
    each(&bolt, "lease", &mut |_, v| {
        let l = LeasePb::decode(v).map_err(|_| corrupt("a lease"))?;
        restored.leases += 1;
        im.lease(l.id, l.ttl).map_err(mvcc_err)
    })?;
    each(&bolt, "meta", &mut |k, v| {
        if k == b"finishedCompactRev" {
            let (rev, _) = mvcc::Revision::from_key(v).ok_or_else(|| corrupt("compaction"))?;
            restored.compacted = rev.main;
        }
        Ok(())
    })?;
    let auth = read_auth(&bolt, token_key)?;
    let mut alarms = Vec::new();
    each(&bolt, "alarm", &mut |k, _| {
        let a = AlarmMemberPb::decode(k).map_err(|_| corrupt("an alarm"))?;
        let alarm = match a.alarm {
            1 => AlarmType::NoSpace,
            2 => AlarmType::Corrupt,
            _ => return Ok(()),
        };
        alarms.push(Alarm {
            member_id: a.member_id,
            alarm,
        });
        Ok(())
    })?;
    im.finish(restored.compacted, &auth, &alarms)
        .map_err(mvcc_err)?;
    Ok(restored)
}

/// The auth state kept in the `auth`, `authUsers` and `authRoles` buckets.
fn read_auth(bolt: &BoltFile, token_key: Vec<u8>) -> Result<AuthState> {
    let mut auth = AuthState::default();
    each(bolt, "auth", &mut |k, v| {
        match k {
            b"authEnabled" => auth.enabled = v == [1u8],
            b"authRevision" => auth.revision = be_i64(v, "the auth revision")? as u64,
            _ => {}
        }
        Ok(())
    })?;
    if auth.enabled {
        auth.token_key = token_key;
    }
    let revision = auth.revision;
    let mut users = std::collections::BTreeMap::new();
    each(bolt, "authUsers", &mut |name, v| {
        let u = UserPb::decode(v).map_err(|_| corrupt("a user"))?;
        let mut roles = u.roles;
        roles.sort();
        let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("a user name"))?;
        users.insert(
            name,
            User {
                password: u.password,
                no_password: u.options.is_some_and(|o| o.no_password),
                roles,
                password_revision: revision,
            },
        );
        Ok(())
    })?;
    auth.users = users;
    let mut roles = std::collections::BTreeMap::new();
    each(bolt, "authRoles", &mut |name, v| {
        let r = RolePb::decode(v).map_err(|_| corrupt("a role"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("a role name"))?;
        let perms = r
            .key_permission
            .into_iter()
            .map(|p| Permission {
                perm_type: match p.perm_type {
                    0 => PermType::Read,
                    1 => PermType::Write,
                    _ => PermType::ReadWrite,
                },
                key: p.key,
                range_end: p.range_end,
            })
            .collect();
        roles.insert(name, Role { perms });
        Ok(())
    })?;
    auth.roles = roles;
    Ok(auth)
}
