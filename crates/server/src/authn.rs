//! Who a client request comes from, as etcd's `AuthInfoFromCtx` decides it: the token in the
//! request's metadata (`token`, or `authorization` as etcd's gateway sends it), or, with
//! `--client-cert-auth` and no token, the common name of the client's verified certificate.
//! And the tokens themselves (`--auth-token simple`, `--auth-token-ttl`).
//!
//! etcd's simple tokens are random strings that every member learns through the log, one entry
//! per `Authenticate`. tandem's are signed instead: `nonce.user.password-revision.issued.mac`,
//! an HMAC-SHA256 under the key the cluster chose when authentication was enabled (replicated
//! in the auth state), so any member verifies any token with no log entry. A token ends, as
//! etcd's does, when its user is deleted or changes password (the user's password revision is
//! in it), when authentication is disabled (a new key at the next enable), and after
//! `--auth-token-ttl` seconds without use on the member serving it (a member that has not seen
//! it yet takes it within that time of its issue). Clients see an opaque string, and
//! `invalid auth token` when it ended, on which etcd's clients authenticate again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use mvcc::auth::{AuthState, Caller};
use rand::Rng;
use sha2::Sha256;
use tonic::metadata::MetadataMap;

use crate::conn::ConnInfo;

/// The metadata key etcd's clients put their token in, and the one its gateway uses.
const TOKEN_METADATA: &str = "token";
const TOKEN_METADATA_GATEWAY: &str = "authorization";
/// The most tokens a member remembers the last use of; past it the oldest uses are dropped.
const TOKENS_TRACKED_MAX: usize = 100_000;

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnError {
    /// etcd: "invalid auth token".
    InvalidToken,
}

pub struct Tokens {
    ttl: Duration,
    /// With `--client-cert-auth`: a verified certificate's common name names the user.
    cert_names_user: bool,
    /// When this member last saw each token used.
    last_used: Mutex<HashMap<String, Instant>>,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], body: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(body.as_bytes());
    m
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    pub fn new(ttl: Duration, cert_names_user: bool) -> Self {
        Tokens {
            ttl,
            cert_names_user,
            last_used: Mutex::new(HashMap::new()),
        }
    }

    /// A new token for `user`, who must exist in `auth`.
    pub fn assign(&self, auth: &AuthState, user: &str) -> String {
        let password_revision = auth.users.get(user).map_or(0, |u| u.password_revision);
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let body = format!(
            "{nonce}.{}.{password_revision}.{}",
            B64.encode(user),
            unix_now()
        );
        let tag = B64.encode(mac(&auth.token_key, &body).finalize().into_bytes());
        let token = format!("{body}.{tag}");
        self.used(&token, Instant::now());
        token
    }

    fn used(&self, token: &str, now: Instant) {
        let mut m = self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= TOKENS_TRACKED_MAX {
            let ttl = self.ttl;
            m.retain(|_, at| now.duration_since(*at) < ttl);
            if m.len() >= TOKENS_TRACKED_MAX {
                m.clear();
            }
        }
        m.insert(token.to_string(), now);
    }

    /// The user a token names, if it is still good.
    fn verify(&self, auth: &AuthState, token: &str) -> Option<String> {
        let (body, tag) = token.rsplit_once('.')?;
        let tag = B64.decode(tag).ok()?;
        mac(&auth.token_key, body).verify_slice(&tag).ok()?;
        let mut parts = body.split('.');
        let (_nonce, user, password_revision, issued) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let user = String::from_utf8(B64.decode(user).ok()?).ok()?;
        let password_revision: u64 = password_revision.parse().ok()?;
        let issued: u64 = issued.parse().ok()?;
        if auth.users.get(&user)?.password_revision != password_revision {
            return None;
        }
        let now = Instant::now();
        let seen = {
            let m = self.last_used.lock().unwrap_or_else(|e| e.into_inner());
            m.get(token).copied()
        };
        let fresh = match seen {
            Some(at) => now.duration_since(at) < self.ttl,
            None => unix_now().saturating_sub(issued) < self.ttl.as_secs(),
        };
        if !fresh {
            return None;
        }
        self.used(token, now);
        Some(user)
    }

    /// Who sent a request: `Ok(Caller::default())` for nobody (no token, no certificate name).
    /// With authentication disabled every request is nobody's, as etcd ignores tokens then.
    pub fn caller(
        &self,
        auth: &AuthState,
        metadata: &MetadataMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Caller, AuthnError> {
        if !auth.enabled {
            return Ok(Caller::default());
        }
        let token = metadata
            .get(TOKEN_METADATA)
            .or_else(|| metadata.get(TOKEN_METADATA_GATEWAY));
        if let Some(token) = token {
            let token = token.to_str().map_err(|_| AuthnError::InvalidToken)?;
            let user = self.verify(auth, token).ok_or(AuthnError::InvalidToken)?;
            return Ok(Caller {
                user,
                auth_revision: auth.revision,
            });
        }
        if self.cert_names_user {
            if let Some(name) = conn.and_then(|c| c.common_name.clone()) {
                return Ok(Caller {
                    user: name,
                    auth_revision: auth.revision,
                });
            }
        }
        Ok(Caller::default())
    }
}

/// The metadata key of a member's proof of membership: its corruption checks call HashKV on
/// the other members' client URLs, which needs an admin with authentication enabled (etcd
/// makes this call on its peer port instead).
pub const MEMBER_PROOF_METADATA: &str = "tandem-member-proof";

/// What only members know, with authentication enabled: a MAC of the cluster's token key.
pub fn member_proof(auth: &AuthState) -> Option<String> {
    auth.enabled.then(|| {
        B64.encode(
            mac(&auth.token_key, "tandem member")
                .finalize()
                .into_bytes(),
        )
    })
}

/// Whether `metadata` carries a member's proof of membership.
pub fn is_member(auth: &AuthState, metadata: &MetadataMap) -> bool {
    let Some(given) = metadata.get(MEMBER_PROOF_METADATA) else {
        return false;
    };
    let Ok(tag) = B64.decode(given.as_bytes()) else {
        return false;
    };
    auth.enabled
        && mac(&auth.token_key, "tandem member")
            .verify_slice(&tag)
            .is_ok()
}

/// etcd's `--bcrypt-cost` bounds (Go's bcrypt.MinCost and MaxCost); outside them etcd uses the
/// default, 10.
pub fn bcrypt_cost(flag: u32) -> u32 {
    if (4..=31).contains(&flag) {
        flag
    } else {
        bcrypt::DEFAULT_COST
    }
}

/// The bcrypt hash of `password` (what etcd stores), computed off the async workers.
pub async fn hash_password(password: String, cost: u32) -> Result<Vec<u8>, tonic::Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .map(String::into_bytes)
        .map_err(|e| tonic::Status::internal(format!("bcrypt: {e}")))
}

/// Whether `password` matches the stored bcrypt `hash`.
pub async fn password_matches(password: String, hash: Vec<u8>) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(hash) = String::from_utf8(hash) else {
            return false;
        };
        bcrypt::verify(password, &hash).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvcc::auth::AuthCommand;

    fn enabled() -> AuthState {
        let mut s = AuthState::default();
        for c in [
            AuthCommand::UserAdd {
                name: "root".into(),
                password: b"x".to_vec(),
                no_password: false,
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::UserAdd {
                name: "alice".into(),
                password: b"x".to_vec(),
                no_password: false,
            },
            AuthCommand::Enable {
                token_key: b"k1".to_vec(),
            },
        ] {
            s.apply(&c).unwrap();
        }
        s
    }

    fn with_token(t: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(TOKEN_METADATA, t.parse().unwrap());
        m
    }

    #[test]
    fn a_token_names_its_user_until_the_password_changes_or_the_user_goes() {
        let tokens = Tokens::new(Duration::from_secs(300), false);
        let mut s = enabled();
        let t = tokens.assign(&s, "alice");
        let other_member = Tokens::new(Duration::from_secs(300), false);
        for member in [&tokens, &other_member] {
            let c = member.caller(&s, &with_token(&t), None).unwrap();
            assert_eq!((c.user.as_str(), c.auth_revision), ("alice", s.revision));
        }
        // Tampered: another user's name under the same tag.
        let forged = t.replacen(&B64.encode("alice"), &B64.encode("root"), 1);
        assert_eq!(
            tokens.caller(&s, &with_token(&forged), None),
            Err(AuthnError::InvalidToken)
        );
        s.apply(&AuthCommand::UserChangePassword {
            name: "alice".into(),
            password: b"y".to_vec(),
        })
        .unwrap();
        assert_eq!(
            tokens.caller(&s, &with_token(&t), None),
            Err(AuthnError::InvalidToken)
        );
        let t2 = tokens.assign(&s, "alice");
        assert!(tokens.caller(&s, &with_token(&t2), None).is_ok());
        s.apply(&AuthCommand::UserDelete {
            name: "alice".into(),
        })
        .unwrap();
        s.apply(&AuthCommand::UserAdd {
            name: "alice".into(),
            password: b"y".to_vec(),
            no_password: false,
        })
        .unwrap();
        assert_eq!(
            tokens.caller(&s, &with_token(&t2), None),
            Err(AuthnError::InvalidToken),
            "a token of a deleted user does not pass for a new user of the same name"
        );
    }

    #[test]
    fn a_token_ends_with_a_new_key_and_after_its_ttl_unused() {
        let tokens = Tokens::new(Duration::from_secs(300), false);
        let mut s = enabled();
        let t = tokens.assign(&s, "alice");
        s.apply(&AuthCommand::Disable).unwrap();
        assert_eq!(
            tokens.caller(&s, &with_token(&t), None),
            Ok(Caller::default()),
            "disabled: tokens are ignored"
        );
        s.apply(&AuthCommand::Enable {
            token_key: b"k2".to_vec(),
        })
        .unwrap();
        assert_eq!(
            tokens.caller(&s, &with_token(&t), None),
            Err(AuthnError::InvalidToken)
        );
        let short = Tokens::new(Duration::ZERO, false);
        let t = short.assign(&s, "alice");
        assert_eq!(
            short.caller(&s, &with_token(&t), None),
            Err(AuthnError::InvalidToken)
        );
    }

    #[test]
    fn a_certificates_common_name_is_the_user_only_with_client_cert_auth_and_no_token() {
        let s = enabled();
        let conn = ConnInfo {
            remote: None,
            common_name: Some("alice".into()),
        };
        let off = Tokens::new(Duration::from_secs(300), false);
        assert_eq!(
            off.caller(&s, &MetadataMap::new(), Some(&conn)),
            Ok(Caller::default())
        );
        let on = Tokens::new(Duration::from_secs(300), true);
        assert_eq!(
            on.caller(&s, &MetadataMap::new(), Some(&conn))
                .unwrap()
                .user,
            "alice"
        );
        let root_token = on.assign(&s, "root");
        assert_eq!(
            on.caller(&s, &with_token(&root_token), Some(&conn))
                .unwrap()
                .user,
            "root"
        );
    }
}
