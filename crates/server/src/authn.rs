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

/// `--auth-token`: etcd's token types.
pub enum TokenOptions {
    /// `simple` (here: signed, see the module comment).
    Simple,
    /// `jwt,sign-method=...,pub-key=...,priv-key=...,ttl=...`.
    Jwt(Box<Jwt>),
}

/// etcd's JWT tokens: claims `username`, `revision` (the auth revision at issue: any later
/// change to users or roles makes the token's requests fail with `revision of auth store is
/// old`, and clients sign in again) and `exp`.
pub struct Jwt {
    alg: jsonwebtoken::Algorithm,
    /// Without a private key a member only verifies (etcd's verify-only mode).
    sign: Option<jsonwebtoken::EncodingKey>,
    verify: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// etcd's option errors (`server/auth/store.go`).
const INVALID_OPTS: &str = "auth: invalid auth options";
const INVALID_METHOD: &str = "auth: invalid auth signature method";
const MISSING_KEY: &str = "auth: missing key data";
/// etcd: `ErrVerifyOnly`, returned by `Authenticate` when the member has no private key.
pub const VERIFY_ONLY: &str = "auth: token signing attempted with verify-only key";

impl TokenOptions {
    /// Parses `--auth-token` as etcd does (`decomposeOpts`, `jwtOptions`), reading key files.
    pub fn parse(flag: &str) -> anyhow::Result<Self> {
        let mut parts = flag.split(',');
        let kind = parts.next().unwrap_or_default();
        let mut opts = HashMap::new();
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                anyhow::bail!("--auth-token={flag}: {INVALID_OPTS}");
            };
            if opts.insert(k, v).is_some() {
                anyhow::bail!("--auth-token={flag}: {INVALID_OPTS}");
            }
        }
        match kind {
            "simple" => Ok(TokenOptions::Simple),
            "jwt" => Ok(TokenOptions::Jwt(Box::new(Jwt::from_options(&opts)?))),
            _ => anyhow::bail!("--auth-token={flag}: {INVALID_OPTS}"),
        }
    }
}

impl Jwt {
    fn from_options(opts: &HashMap<&str, &str>) -> anyhow::Result<Self> {
        use jsonwebtoken::{Algorithm as A, DecodingKey, EncodingKey};
        let ttl = match opts.get("ttl") {
            Some(t) => crate::config::parse_duration(t, Duration::from_secs(1))?,
            None => Duration::from_secs(300),
        };
        let read = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
            match opts.get(name) {
                Some(path) if !path.is_empty() => std::fs::read(path)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("--auth-token {name}={path}: {e}")),
                _ => Ok(None),
            }
        };
        let (public, private) = (read("pub-key")?, read("priv-key")?);
        let alg: A = opts
            .get("sign-method")
            .and_then(|m| m.parse().ok())
            .filter(|a| *a != A::EdDSA)
            .ok_or_else(|| anyhow::anyhow!(INVALID_METHOD))?;
        let bad = |e: jsonwebtoken::errors::Error| anyhow::anyhow!("--auth-token: {e}");
        let missing = || anyhow::anyhow!(MISSING_KEY);
        let (sign, verify) = match alg {
            A::HS256 | A::HS384 | A::HS512 => {
                let secret = private.ok_or_else(missing)?;
                (
                    Some(EncodingKey::from_secret(&secret).map_err(bad)?),
                    DecodingKey::from_secret(&secret).map_err(bad)?,
                )
            }
            A::ES256 | A::ES384 => {
                let public = public.ok_or_else(missing)?;
                let sign = private.map(|k| EncodingKey::from_ec_pem(&k)).transpose();
                (
                    sign.map_err(bad)?,
                    DecodingKey::from_ec_pem(&public).map_err(bad)?,
                )
            }
            _ => {
                let public = public.ok_or_else(missing)?;
                let sign = private.map(|k| EncodingKey::from_rsa_pem(&k)).transpose();
                (
                    sign.map_err(bad)?,
                    DecodingKey::from_rsa_pem(&public).map_err(bad)?,
                )
            }
        };
        Ok(Jwt {
            alg,
            sign,
            verify,
            ttl,
        })
    }

    fn assign(&self, user: &str, revision: u64) -> Result<String, tonic::Status> {
        let key = self
            .sign
            .as_ref()
            .ok_or_else(|| tonic::Status::unknown(VERIFY_ONLY))?;
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: unix_now() + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.alg), &claims, key)
            .map_err(|e| tonic::Status::internal(format!("jwt: {e}")))
    }

    fn verify(&self, token: &str) -> Option<Caller> {
        let mut v = jsonwebtoken::Validation::new(self.alg);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &v).ok()?;
        Some(Caller {
            user: data.claims.username,
            auth_revision: data.claims.revision,
        })
    }
}

pub struct Tokens {
    kind: TokenOptions,
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
    pub fn new(kind: TokenOptions, ttl: Duration, cert_names_user: bool) -> Self {
        Tokens {
            kind,
            ttl,
            cert_names_user,
            last_used: Mutex::new(HashMap::new()),
        }
    }

    /// A new token for `user`, who must exist in `auth`.
    pub fn assign(&self, auth: &AuthState, user: &str) -> Result<String, tonic::Status> {
        match &self.kind {
            TokenOptions::Simple => Ok(self.assign_simple(auth, user)),
            TokenOptions::Jwt(jwt) => jwt.assign(user, auth.revision),
        }
    }

    fn assign_simple(&self, auth: &AuthState, user: &str) -> String {
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
        self.remember(&mut self.lock_uses(), &token, Instant::now());
        token
    }

    /// Records a token's use at `now`, first dropping uses older than the TTL once the map is
    /// full (all of them if that frees nothing).
    fn remember(&self, uses: &mut HashMap<String, Instant>, token: &str, now: Instant) {
        if uses.len() >= TOKENS_TRACKED_MAX {
            let ttl = self.ttl;
            uses.retain(|_, at| now.duration_since(*at) < ttl);
            if uses.len() >= TOKENS_TRACKED_MAX {
                uses.clear();
            }
        }
        uses.insert(token.to_string(), now);
    }

    fn lock_uses(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.last_used.lock().unwrap_or_else(|e| e.into_inner())
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
        // One look at the uses map per request: check freshness and record this use together.
        let now = Instant::now();
        let mut uses = self.lock_uses();
        match uses.get_mut(token) {
            Some(at) if now.duration_since(*at) < self.ttl => *at = now,
            Some(_) => return None,
            None if unix_now().saturating_sub(issued) < self.ttl.as_secs() => {
                self.remember(&mut uses, token, now)
            }
            None => return None,
        }
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
            return match &self.kind {
                TokenOptions::Simple => {
                    let user = self.verify(auth, token).ok_or(AuthnError::InvalidToken)?;
                    Ok(Caller {
                        user,
                        auth_revision: auth.revision,
                    })
                }
                TokenOptions::Jwt(jwt) => jwt.verify(token).ok_or(AuthnError::InvalidToken),
            };
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
        let tokens = Tokens::new(TokenOptions::Simple, Duration::from_secs(300), false);
        let mut s = enabled();
        let t = tokens.assign(&s, "alice").unwrap();
        let other_member = Tokens::new(TokenOptions::Simple, Duration::from_secs(300), false);
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
        let t2 = tokens.assign(&s, "alice").unwrap();
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
        let tokens = Tokens::new(TokenOptions::Simple, Duration::from_secs(300), false);
        let mut s = enabled();
        let t = tokens.assign(&s, "alice").unwrap();
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
        let short = Tokens::new(TokenOptions::Simple, Duration::ZERO, false);
        let t = short.assign(&s, "alice").unwrap();
        assert_eq!(
            short.caller(&s, &with_token(&t), None),
            Err(AuthnError::InvalidToken)
        );
    }

    #[test]
    fn jwt_tokens_carry_the_user_and_the_auth_revision_and_options_fail_as_etcds() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret");
        std::fs::write(&key, b"a shared secret").unwrap();
        let flag = format!("jwt,priv-key={},sign-method=HS256,ttl=1h", key.display());
        let tokens = Tokens::new(
            TokenOptions::parse(&flag).unwrap(),
            Duration::from_secs(300),
            false,
        );
        let mut s = enabled();
        let t = tokens.assign(&s, "alice").unwrap();
        let c = tokens.caller(&s, &with_token(&t), None).unwrap();
        assert_eq!((c.user.as_str(), c.auth_revision), ("alice", s.revision));
        // After a change to the auth state the token's revision is old: its requests fail
        // (`check_op`), and the client signs in again.
        s.apply(&AuthCommand::RoleAdd { name: "x".into() }).unwrap();
        let c = tokens.caller(&s, &with_token(&t), None).unwrap();
        assert!(c.auth_revision < s.revision);
        // Another user's claims under the same signature.
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let claims = B64.encode(format!(
            r#"{{"username":"root","revision":{},"exp":{}}}"#,
            s.revision,
            unix_now() + 3600
        ));
        let forged = format!("{head}.{claims}.{sig}");
        assert_eq!(
            tokens.caller(&s, &with_token(&forged), None),
            Err(AuthnError::InvalidToken)
        );
        let err = |flag: &str| TokenOptions::parse(flag).err().unwrap().to_string();
        assert!(err("jwt,sign-method=XX256").ends_with(INVALID_METHOD));
        assert!(err("jwt,sign-method=RS256").ends_with(MISSING_KEY));
        assert!(err("bogus").ends_with(INVALID_OPTS));
        assert!(err("jwt,ttl").ends_with(INVALID_OPTS));
        assert!(err("jwt,ttl=1m,ttl=2m").ends_with(INVALID_OPTS));
    }

    #[tokio::test]
    async fn bcrypt_cost_is_the_flags_within_bcrypts_bounds() {
        assert_eq!(bcrypt_cost(4), 4);
        assert_eq!(
            bcrypt_cost(3),
            bcrypt::DEFAULT_COST,
            "below Go's MinCost: etcd's default"
        );
        assert_eq!(bcrypt_cost(32), bcrypt::DEFAULT_COST);
        let hash = hash_password("pw".into(), bcrypt_cost(5)).await.unwrap();
        assert!(String::from_utf8_lossy(&hash).starts_with("$2b$05$"));
        assert!(password_matches("pw".into(), hash.clone()).await);
        assert!(!password_matches("other".into(), hash).await);
    }

    #[test]
    fn a_certificates_common_name_is_the_user_only_with_client_cert_auth_and_no_token() {
        let s = enabled();
        let conn = ConnInfo {
            remote: None,
            common_name: Some("alice".into()),
        };
        let off = Tokens::new(TokenOptions::Simple, Duration::from_secs(300), false);
        assert_eq!(
            off.caller(&s, &MetadataMap::new(), Some(&conn)),
            Ok(Caller::default())
        );
        let on = Tokens::new(TokenOptions::Simple, Duration::from_secs(300), true);
        assert_eq!(
            on.caller(&s, &MetadataMap::new(), Some(&conn))
                .unwrap()
                .user,
            "alice"
        );
        let root_token = on.assign(&s, "root").unwrap();
        assert_eq!(
            on.caller(&s, &with_token(&root_token), Some(&conn))
                .unwrap()
                .user,
            "root"
        );
    }
}
