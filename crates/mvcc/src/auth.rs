//! etcd's authentication state (its auth store): users, roles and their key permissions, whether
//! authentication is enabled, and the auth revision every change raises. It changes only by
//! applied commands ([`AuthCommand`]), so every member holds the same state at the same log
//! position; passwords arrive already hashed (bcrypt is salted, so hashing is done before
//! proposing, as etcd does). The permission checks are etcd's (`server/auth/store.go`,
//! `range_perm_cache.go`), with the holes its audits found closed: nested txns are checked all
//! the way down, and a range to the end of the keyspace is checked as a range, not as a key.
//!
//! Stored as one postcard-encoded record in the meta table (`backend::META_AUTH`), so snapshots
//! carry it; see docs/durable-formats.md.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::request::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

/// The user and the role that may do everything.
pub const ROOT: &str = "root";

/// etcd's `authpb.Permission_Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermType {
    Read,
    Write,
    ReadWrite,
}

impl PermType {
    fn allows(self, wanted: PermType) -> bool {
        self == PermType::ReadWrite || self == wanted
    }
}

/// A permission on one key (`range_end` empty), a range `[key, range_end)`, or every key from
/// `key` on (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub perm_type: PermType,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash of the password; empty for a user made with `--no-password`.
    pub password: Vec<u8>,
    pub no_password: bool,
    /// Sorted, as etcd keeps them.
    pub roles: Vec<String>,
    /// The auth revision at which this user's password was last set: a token names it, so a
    /// password change or the user's deletion (and a new user of the same name) ends it.
    pub password_revision: u64,
}

impl User {
    pub fn is_root(&self) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(ROOT))
            .is_ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key, as etcd keeps them.
    pub perms: Vec<Permission>,
}

/// Who asks, as the member that took the request saw it: the user (empty: nobody) and the auth
/// revision its credentials were checked at (0: none were given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: String,
    pub auth_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: 1 for a new store, raised by every change but enabling.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The key tokens are signed with, chosen when authentication is enabled (empty before).
    pub token_key: Vec<u8>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            token_key: Vec::new(),
        }
    }
}

/// A change to the auth state, as a client asked it (admin rights are checked by the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable {
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        /// bcrypt hash; ignored with `no_password`.
        password: Vec<u8>,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Vec<u8>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Permission,
    },
    RoleRevokePermission {
        name: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthState {
    /// Applies `cmd`; on an error nothing changed.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<()> {
        use AuthCommand as C;
        match cmd {
            C::Enable { token_key } => {
                if self.enabled {
                    return Ok(());
                }
                let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
                if !root.is_root() {
                    return Err(Error::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key.clone();
                // etcd does not raise the revision when enabling.
                return Ok(());
            }
            C::Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
            }
            C::UserAdd {
                name,
                password,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(Error::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(Error::UserAlreadyExist);
                }
                let user = User {
                    password: if *no_password {
                        Vec::new()
                    } else {
                        password.clone()
                    },
                    no_password: *no_password,
                    roles: Vec::new(),
                    password_revision: self.revision + 1,
                };
                self.users.insert(name.clone(), user);
            }
            C::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(Error::UserNotFound)?;
            }
            C::UserChangePassword { name, password } => {
                let next = self.revision + 1;
                let user = self.users.get_mut(name).ok_or(Error::UserNotFound)?;
                if !user.no_password {
                    user.password = password.clone();
                }
                user.password_revision = next;
            }
            C::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(Error::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(Error::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked above");
                match u.roles.binary_search(role) {
                    // etcd ignores a role granted twice, without a new revision.
                    Ok(_) => return Ok(()),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
            }
            C::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(Error::UserNotFound)?;
                let before = u.roles.len();
                u.roles.retain(|r| r != role);
                if u.roles.len() == before {
                    return Err(Error::RoleNotGranted);
                }
            }
            C::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(Error::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(Error::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            C::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(Error::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.retain(|r| r != name);
                }
            }
            C::RoleGrantPermission { name, perm } => {
                let role = self.roles.get_mut(name).ok_or(Error::RoleNotFound)?;
                let same = role
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end);
                match same {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        role.perms.push(perm.clone());
                        // Go's sort.Sort, as etcd sorts its permSlice (by key alone).
                        crate::gosort::sort_by(&mut role.perms, |a, b| a.key < b.key);
                    }
                }
            }
            C::RoleRevokePermission {
                name,
                key,
                range_end,
            } => {
                let role = self.roles.get_mut(name).ok_or(Error::RoleNotFound)?;
                let before = role.perms.len();
                role.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if role.perms.len() == before {
                    return Err(Error::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }

    /// etcd's `IsAdminPermitted`: with authentication enabled, only a user with the root role.
    pub fn check_admin(&self, caller: &Caller) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() {
            return Err(Error::UserEmpty);
        }
        let user = self.users.get(&caller.user).ok_or(Error::UserNotFound)?;
        if !user.is_root() {
            return Err(Error::PermissionDenied);
        }
        Ok(())
    }

    /// With authentication enabled, the caller must have given credentials (etcd's
    /// `requireAuthInfo`, for Status, MemberList and reading alarms).
    pub fn check_authenticated(&self, caller: &Caller) -> Result<()> {
        if self.enabled && caller.user.is_empty() {
            return Err(Error::UserEmpty);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `caller` read (or write) the key `key` (`range_end` empty)
    /// or the range `[key, range_end)` (`"\0"`: every key from `key` on).
    pub fn check_op(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        wanted: PermType,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if caller.auth_revision == 0 {
            return Err(Error::UserEmpty);
        }
        if caller.auth_revision < self.revision {
            return Err(Error::AuthOldRevision);
        }
        let user = self
            .users
            .get(&caller.user)
            .ok_or(Error::PermissionDenied)?;
        if user.is_root() {
            return Ok(());
        }
        let granted: Vec<Interval> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.perms)
            .filter(|p| p.perm_type.allows(wanted))
            .map(Interval::of_permission)
            .collect();
        let permitted = if range_end.is_empty() {
            let point = Interval::point(key);
            granted.iter().any(|g| g.intersects(&point))
        } else {
            covered(&granted, &Interval::of_request(key, range_end))
        };
        if permitted {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    /// etcd's `checkTxnAuth`: every compare may be read, every operation done, on every branch;
    /// unlike etcd 3.5.1, nested txns are checked too (its audit's RBAC bypass), and a put
    /// asking for the previous value needs read permission on its key.
    pub fn check_txn(&self, caller: &Caller, t: &TxnRequest) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        for c in &t.compare {
            self.check_op(caller, &c.key, &c.range_end, PermType::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => {
                    self.check_op(caller, &r.key, &r.range_end, PermType::Read)?
                }
                RequestOp::Put(p) => self.check_put(caller, p)?,
                RequestOp::DeleteRange(d) => self.check_delete(caller, d)?,
                RequestOp::Txn(t) => self.check_txn(caller, t)?,
            }
        }
        Ok(())
    }

    pub fn check_put(&self, caller: &Caller, p: &PutRequest) -> Result<()> {
        self.check_op(caller, &p.key, &[], PermType::Write)?;
        if p.prev_kv {
            self.check_op(caller, &p.key, &[], PermType::Read)?;
        }
        Ok(())
    }

    pub fn check_delete(&self, caller: &Caller, d: &DeleteRangeRequest) -> Result<()> {
        self.check_op(caller, &d.key, &d.range_end, PermType::Write)?;
        if d.prev_kv {
            self.check_op(caller, &d.key, &d.range_end, PermType::Read)?;
        }
        Ok(())
    }

    /// etcd's `checkLeaseRenew` and `checkLeaseTimeToLive`: an admin may renew or read any
    /// lease; another user needs `wanted` permission on every key the lease holds.
    pub fn check_lease(&self, caller: &Caller, keys: &[Vec<u8>], wanted: PermType) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.check_authenticated(caller)?;
        if self.check_admin(caller).is_ok() {
            return Ok(());
        }
        for key in keys {
            self.check_op(caller, key, &[], wanted)?;
        }
        Ok(())
    }

    /// A user's roles, if the user exists.
    pub fn user(&self, name: &str) -> Result<&User> {
        self.users.get(name).ok_or(Error::UserNotFound)
    }

    pub fn role(&self, name: &str) -> Result<&Role> {
        self.roles.get(name).ok_or(Error::RoleNotFound)
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

/// etcd's "affine" byte order: the empty string is above every other (it stands for the end of
/// the keyspace).
fn affine(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// `[begin, end)` in the affine order.
#[derive(Debug, Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn point(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    fn of_permission(p: &Permission) -> Self {
        if p.range_end.is_empty() {
            Interval::point(&p.key)
        } else {
            Interval::of_request(&p.key, &p.range_end)
        }
    }

    /// A range with an end: `"\0"` is the end of the keyspace.
    fn of_request(key: &[u8], range_end: &[u8]) -> Self {
        Interval {
            begin: key.to_vec(),
            end: if range_end == [0] {
                Vec::new()
            } else {
                range_end.to_vec()
            },
        }
    }

    fn intersects(&self, other: &Interval) -> bool {
        affine(&self.begin, &other.end) == Ordering::Less
            && affine(&other.begin, &self.end) == Ordering::Less
    }
}

/// Whether the union of `granted` covers all of `want` (etcd's `IntervalTree.Contains`).
fn covered(granted: &[Interval], want: &Interval) -> bool {
    let mut sorted: Vec<&Interval> = granted.iter().collect();
    sorted.sort_by(|a, b| affine(&a.begin, &b.begin));
    let mut reached = want.begin.clone();
    for g in sorted {
        if affine(&reached, &want.end) != Ordering::Less {
            break;
        }
        if affine(&g.begin, &reached) == Ordering::Greater {
            return false;
        }
        if affine(&g.end, &reached) == Ordering::Greater {
            reached = g.end.clone();
        }
    }
    affine(&reached, &want.end) != Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    /// Auth enabled, root, and `alice` with role `r` holding `perms`.
    fn state(perms: Vec<Permission>) -> (AuthState, Caller) {
        let mut s = AuthState::default();
        let mut cmds = vec![
            AuthCommand::UserAdd {
                name: ROOT.into(),
                password: b"h".to_vec(),
                no_password: false,
            },
            AuthCommand::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthCommand::RoleAdd { name: "r".into() },
            AuthCommand::UserAdd {
                name: "alice".into(),
                password: b"h".to_vec(),
                no_password: false,
            },
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "r".into(),
            },
        ];
        cmds.extend(
            perms
                .into_iter()
                .map(|perm| AuthCommand::RoleGrantPermission {
                    name: "r".into(),
                    perm,
                }),
        );
        cmds.push(AuthCommand::Enable { token_key: vec![1] });
        for c in &cmds {
            s.apply(c).unwrap();
        }
        let caller = Caller {
            user: "alice".into(),
            auth_revision: s.revision,
        };
        (s, caller)
    }

    #[test]
    fn revisions_count_as_etcds() {
        let (s, _) = state(vec![perm(PermType::Read, "a", "")]);
        // 1, then five changes and one grant; enabling adds none.
        assert_eq!(s.revision, 7);
        let mut s2 = s.clone();
        // A role granted twice changes nothing.
        s2.apply(&AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "r".into(),
        })
        .unwrap();
        assert_eq!(s2.revision, 7);
        s2.apply(&AuthCommand::Disable).unwrap();
        assert_eq!(s2.revision, 8);
    }

    #[test]
    fn management_errors_are_etcds() {
        let (mut s, _) = state(vec![]);
        let cases: Vec<(AuthCommand, Error)> = vec![
            (
                AuthCommand::UserDelete { name: ROOT.into() },
                Error::InvalidAuthMgmt,
            ),
            (
                AuthCommand::RoleDelete { name: ROOT.into() },
                Error::InvalidAuthMgmt,
            ),
            (
                AuthCommand::UserRevokeRole {
                    user: ROOT.into(),
                    role: ROOT.into(),
                },
                Error::InvalidAuthMgmt,
            ),
            (
                AuthCommand::UserAdd {
                    name: "alice".into(),
                    password: vec![],
                    no_password: true,
                },
                Error::UserAlreadyExist,
            ),
            (
                AuthCommand::UserAdd {
                    name: "".into(),
                    password: vec![],
                    no_password: true,
                },
                Error::UserEmpty,
            ),
            (AuthCommand::RoleAdd { name: "".into() }, Error::RoleEmpty),
            (
                AuthCommand::RoleAdd { name: "r".into() },
                Error::RoleAlreadyExist,
            ),
            (
                AuthCommand::UserGrantRole {
                    user: "alice".into(),
                    role: "nope".into(),
                },
                Error::RoleNotFound,
            ),
            (
                AuthCommand::UserRevokeRole {
                    user: "alice".into(),
                    role: "other".into(),
                },
                Error::RoleNotGranted,
            ),
            (
                AuthCommand::RoleRevokePermission {
                    name: "r".into(),
                    key: b"x".to_vec(),
                    range_end: vec![],
                },
                Error::PermissionNotGranted,
            ),
            (
                AuthCommand::UserDelete { name: "bob".into() },
                Error::UserNotFound,
            ),
        ];
        let before = s.clone();
        for (cmd, want) in cases {
            assert_eq!(s.apply(&cmd), Err(want), "{cmd:?}");
            assert_eq!(s, before, "a refused {cmd:?} changed nothing");
        }
        let mut fresh = AuthState::default();
        assert_eq!(
            fresh.apply(&AuthCommand::Enable { token_key: vec![] }),
            Err(Error::RootUserNotExist)
        );
        fresh
            .apply(&AuthCommand::UserAdd {
                name: ROOT.into(),
                password: vec![],
                no_password: false,
            })
            .unwrap();
        assert_eq!(
            fresh.apply(&AuthCommand::Enable { token_key: vec![] }),
            Err(Error::RootRoleNotExist)
        );
    }

    #[test]
    fn deleting_a_role_takes_it_from_every_user() {
        let (mut s, alice) = state(vec![perm(PermType::Read, "a", "")]);
        s.apply(&AuthCommand::RoleDelete { name: "r".into() })
            .unwrap();
        assert!(s.users["alice"].roles.is_empty());
        let alice = Caller {
            auth_revision: s.revision,
            ..alice
        };
        assert_eq!(
            s.check_op(&alice, b"a", b"", PermType::Read),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn permissions_cover_keys_and_ranges_as_etcds_interval_trees() {
        use PermType::*;
        let (s, alice) = state(vec![
            perm(Read, "a", ""),
            perm(ReadWrite, "b", "d"),
            perm(Write, "d", "f"),
            perm(Read, "x", "\0"),
        ]);
        let ok = |k: &str, e: &str, t| s.check_op(&alice, k.as_bytes(), e.as_bytes(), t).is_ok();
        assert!(ok("a", "", Read));
        assert!(!ok("a", "", Write));
        assert!(!ok("a", "b", Read), "a range is not a key");
        assert!(ok("b", "d", Read));
        assert!(ok("c", "", Write));
        // Two adjacent grants cover a range together.
        assert!(ok("b", "f", Write));
        assert!(!ok("b", "f", Read));
        assert!(ok("x", "\0", Read));
        assert!(ok("y", "", Read));
        // The watch from-key leak: a permission on one key does not reach the keys after it.
        assert!(!ok("a", "\0", Read));
        assert!(!ok("b", "\0", Read));
        let root = Caller {
            user: ROOT.into(),
            auth_revision: s.revision,
        };
        assert!(s.check_op(&root, b"\0", b"\0", Write).is_ok());
        assert_eq!(
            s.check_op(&Caller::default(), b"a", b"", Read),
            Err(Error::UserEmpty)
        );
        let stale = Caller {
            auth_revision: s.revision - 1,
            ..alice.clone()
        };
        assert_eq!(
            s.check_op(&stale, b"a", b"", Read),
            Err(Error::AuthOldRevision)
        );
        assert_eq!(s.check_admin(&alice), Err(Error::PermissionDenied));
        assert_eq!(s.check_admin(&root), Ok(()));
        assert_eq!(s.check_admin(&Caller::default()), Err(Error::UserEmpty));
    }

    #[test]
    fn grants_of_one_key_update_in_place_and_stay_sorted() {
        use PermType::*;
        let (mut s, _) = state(vec![perm(Read, "b", ""), perm(Read, "a", "")]);
        s.apply(&AuthCommand::RoleGrantPermission {
            name: "r".into(),
            perm: perm(Write, "b", ""),
        })
        .unwrap();
        let keys: Vec<(&[u8], PermType)> = s.roles["r"]
            .perms
            .iter()
            .map(|p| (p.key.as_slice(), p.perm_type))
            .collect();
        assert_eq!(keys, vec![(&b"a"[..], Read), (&b"b"[..], Write)]);
    }
}
