//! The Auth service as etcd 3.5 answers it: users, roles and permissions change through the
//! log (`mvcc::auth`, checked for admin rights when applied); passwords are hashed with bcrypt
//! here, before proposing, as etcd does; reads of the auth state follow a ReadIndex round, as
//! etcd serves them through its log; `Authenticate` checks the password and hands out a token
//! (`crate::authn`).

use std::sync::Arc;

use base64::Engine;
use etcd_api::authpb;
use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use mvcc::auth::{AuthCommand, AuthState, Caller, PermType, Permission};
use mvcc::{Command, CommandResponse};
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::authn;
use crate::errors::unexpected;
use crate::node::Node;

pub struct AuthService {
    pub node: Arc<Node>,
}

type R<T> = Result<Response<T>, Status>;

/// etcd's error for a password given to a user made without one (not in its gRPC table, so
/// clients see it as Unknown with this text).
const NO_PASSWORD_USER: &str =
    "auth: authentication failed, password was given for no password user";

impl AuthService {
    /// Proposes `cmd` as `caller` and answers the header of the revision it applied at.
    async fn change(
        &self,
        caller: Caller,
        cmd: AuthCommand,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        match self.node.propose_as(caller, Command::Auth(cmd), 0).await? {
            CommandResponse::Auth { revision } => Ok(self.node.header(revision)),
            other => Err(unexpected(other)),
        }
    }

    /// The auth state after a ReadIndex round, with who asks.
    async fn read<T>(&self, r: &Request<T>) -> Result<(Arc<AuthState>, Caller), Status> {
        let caller = self.node.caller(r)?;
        self.node.read_index().await?;
        Ok((self.node.store.auth(), caller))
    }

    async fn hash(&self, password: &str) -> Result<Vec<u8>, Status> {
        authn::hash_password(password.to_string(), self.node.config.bcrypt_cost).await
    }
}

fn mvcc_err(e: mvcc::Error) -> Status {
    crate::errors::from_mvcc(e)
}

fn perm_type(t: i32) -> PermType {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Write) => PermType::Write,
        Ok(authpb::permission::Type::Readwrite) => PermType::ReadWrite,
        _ => PermType::Read,
    }
}

fn perm_to_pb(p: &Permission) -> authpb::Permission {
    let t = match p.perm_type {
        PermType::Read => authpb::permission::Type::Read,
        PermType::Write => authpb::permission::Type::Write,
        PermType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.key.clone().into(),
        range_end: p.range_end.clone().into(),
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(&self, r: Request<pb::AuthEnableRequest>) -> R<pb::AuthEnableResponse> {
        let caller = self.node.caller(&r)?;
        let mut token_key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut token_key);
        let header = self
            .change(caller, AuthCommand::Enable { token_key })
            .await?;
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(&self, r: Request<pb::AuthDisableRequest>) -> R<pb::AuthDisableResponse> {
        let caller = self.node.caller(&r)?;
        let header = self.change(caller, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(&self, r: Request<pb::AuthStatusRequest>) -> R<pb::AuthStatusResponse> {
        let (auth, caller) = self.read(&r).await?;
        // etcd 3.5 serves this through its log, as an admin request.
        auth.check_admin(&caller).map_err(mvcc_err)?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.node.current_header(),
            enabled: auth.enabled,
            auth_revision: auth.revision,
        }))
    }

    async fn authenticate(
        &self,
        r: Request<pb::AuthenticateRequest>,
    ) -> R<pb::AuthenticateResponse> {
        self.node.read_index().await?;
        let r = r.into_inner();
        loop {
            let auth = self.node.store.auth();
            if !auth.enabled {
                return Err(rpctypes::AUTH_NOT_ENABLED.status());
            }
            let Some(user) = auth.users.get(&r.name) else {
                tracing::warn!(user = %r.name, "invalid authentication was requested: no such user");
                return Err(rpctypes::AUTH_FAILED.status());
            };
            if user.no_password {
                return Err(Status::unknown(NO_PASSWORD_USER));
            }
            if !authn::password_matches(r.password.clone(), user.password.clone()).await {
                tracing::warn!(user = %r.name, "invalid authentication was requested: wrong password");
                return Err(rpctypes::AUTH_FAILED.status());
            }
            // The password was checked against this state: if it changed meanwhile (the
            // password, the user), check again, as etcd does.
            if self.node.store.auth().revision != auth.revision {
                continue;
            }
            let token = self.node.tokens.assign(&auth, &r.name)?;
            return Ok(Response::new(pb::AuthenticateResponse {
                header: self.node.current_header(),
                token,
            }));
        }
    }

    async fn user_add(&self, r: Request<pb::AuthUserAddRequest>) -> R<pb::AuthUserAddResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            Vec::new()
        } else {
            self.hash(&r.password).await?
        };
        let header = self
            .change(
                caller,
                AuthCommand::UserAdd {
                    name: r.name,
                    password,
                    no_password,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(&self, r: Request<pb::AuthUserGetRequest>) -> R<pb::AuthUserGetResponse> {
        let (auth, caller) = self.read(&r).await?;
        let name = r.into_inner().name;
        // An admin may read any user; a user itself.
        if let Err(e) = auth.check_admin(&caller) {
            if caller.user != name {
                return Err(mvcc_err(e));
            }
        }
        let user = auth.user(&name).map_err(mvcc_err)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.node.current_header(),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(&self, r: Request<pb::AuthUserListRequest>) -> R<pb::AuthUserListResponse> {
        let (auth, caller) = self.read(&r).await?;
        auth.check_admin(&caller).map_err(mvcc_err)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.node.current_header(),
            users: auth.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        r: Request<pb::AuthUserDeleteRequest>,
    ) -> R<pb::AuthUserDeleteResponse> {
        let caller = self.node.caller(&r)?;
        let name = r.into_inner().name;
        let header = self
            .change(caller, AuthCommand::UserDelete { name })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        r: Request<pb::AuthUserChangePasswordRequest>,
    ) -> R<pb::AuthUserChangePasswordResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let password = if !r.password.is_empty() {
            self.hash(&r.password).await?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(&r.hashed_password)
                .map_err(|_| Status::unknown(NO_PASSWORD_USER))?
        };
        let header = self
            .change(
                caller,
                AuthCommand::UserChangePassword {
                    name: r.name,
                    password,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        r: Request<pb::AuthUserGrantRoleRequest>,
    ) -> R<pb::AuthUserGrantRoleResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let header = self
            .change(
                caller,
                AuthCommand::UserGrantRole {
                    user: r.user,
                    role: r.role,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        r: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> R<pb::AuthUserRevokeRoleResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let header = self
            .change(
                caller,
                AuthCommand::UserRevokeRole {
                    user: r.name,
                    role: r.role,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(&self, r: Request<pb::AuthRoleAddRequest>) -> R<pb::AuthRoleAddResponse> {
        let caller = self.node.caller(&r)?;
        let name = r.into_inner().name;
        let header = self.change(caller, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(&self, r: Request<pb::AuthRoleGetRequest>) -> R<pb::AuthRoleGetResponse> {
        let (auth, caller) = self.read(&r).await?;
        let name = r.into_inner().role;
        // An admin may read any role; a user the roles it has.
        if let Err(e) = auth.check_admin(&caller) {
            if !auth.has_role(&caller.user, &name) {
                return Err(mvcc_err(e));
            }
        }
        let role = auth.role(&name).map_err(mvcc_err)?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.node.current_header(),
            perm: role.perms.iter().map(perm_to_pb).collect(),
        }))
    }

    async fn role_list(&self, r: Request<pb::AuthRoleListRequest>) -> R<pb::AuthRoleListResponse> {
        let (auth, caller) = self.read(&r).await?;
        auth.check_admin(&caller).map_err(mvcc_err)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.node.current_header(),
            roles: auth.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        r: Request<pb::AuthRoleDeleteRequest>,
    ) -> R<pb::AuthRoleDeleteResponse> {
        let caller = self.node.caller(&r)?;
        let name = r.into_inner().role;
        let header = self
            .change(caller, AuthCommand::RoleDelete { name })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        r: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> R<pb::AuthRoleGrantPermissionResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let Some(p) = r.perm else {
            return Err(rpctypes::PERMISSION_NOT_GIVEN.status());
        };
        let perm = Permission {
            perm_type: perm_type(p.perm_type),
            key: p.key.to_vec(),
            range_end: p.range_end.to_vec(),
        };
        let header = self
            .change(
                caller,
                AuthCommand::RoleGrantPermission { name: r.name, perm },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        r: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> R<pb::AuthRoleRevokePermissionResponse> {
        let caller = self.node.caller(&r)?;
        let r = r.into_inner();
        let header = self
            .change(
                caller,
                AuthCommand::RoleRevokePermission {
                    name: r.role,
                    key: r.key.to_vec(),
                    range_end: r.range_end.to_vec(),
                },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}
