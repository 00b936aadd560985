//! The Auth service as etcd answers it with authentication disabled and no users or roles
//! defined. Defining users and roles, and enabling auth, are not implemented yet: those calls
//! fail with a message saying so rather than pretending to succeed.

use std::sync::Arc;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct AuthService {
    pub node: Arc<Node>,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "tandem: {what} is not supported yet (authentication is disabled)"
    ))
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(&self, _r: Request<pb::AuthEnableRequest>) -> R<pb::AuthEnableResponse> {
        // With no users defined, etcd refuses for the same reason.
        Err(rpctypes::ROOT_USER_NOT_EXIST.status())
    }

    async fn auth_disable(
        &self,
        _r: Request<pb::AuthDisableRequest>,
    ) -> R<pb::AuthDisableResponse> {
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.node.current_header(),
        }))
    }

    async fn auth_status(&self, _r: Request<pb::AuthStatusRequest>) -> R<pb::AuthStatusResponse> {
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.node.current_header(),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn authenticate(
        &self,
        _r: Request<pb::AuthenticateRequest>,
    ) -> R<pb::AuthenticateResponse> {
        Err(rpctypes::AUTH_NOT_ENABLED.status())
    }

    async fn user_add(&self, _r: Request<pb::AuthUserAddRequest>) -> R<pb::AuthUserAddResponse> {
        Err(not_yet("user add"))
    }

    async fn user_get(&self, _r: Request<pb::AuthUserGetRequest>) -> R<pb::AuthUserGetResponse> {
        Err(rpctypes::USER_NOT_FOUND.status())
    }

    async fn user_list(&self, _r: Request<pb::AuthUserListRequest>) -> R<pb::AuthUserListResponse> {
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.node.current_header(),
            users: vec![],
        }))
    }

    async fn user_delete(
        &self,
        _r: Request<pb::AuthUserDeleteRequest>,
    ) -> R<pb::AuthUserDeleteResponse> {
        Err(rpctypes::USER_NOT_FOUND.status())
    }

    async fn user_change_password(
        &self,
        _r: Request<pb::AuthUserChangePasswordRequest>,
    ) -> R<pb::AuthUserChangePasswordResponse> {
        Err(rpctypes::USER_NOT_FOUND.status())
    }

    async fn user_grant_role(
        &self,
        _r: Request<pb::AuthUserGrantRoleRequest>,
    ) -> R<pb::AuthUserGrantRoleResponse> {
        Err(rpctypes::USER_NOT_FOUND.status())
    }

    async fn user_revoke_role(
        &self,
        _r: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> R<pb::AuthUserRevokeRoleResponse> {
        Err(rpctypes::USER_NOT_FOUND.status())
    }

    async fn role_add(&self, _r: Request<pb::AuthRoleAddRequest>) -> R<pb::AuthRoleAddResponse> {
        Err(not_yet("role add"))
    }

    async fn role_get(&self, _r: Request<pb::AuthRoleGetRequest>) -> R<pb::AuthRoleGetResponse> {
        Err(rpctypes::ROLE_NOT_FOUND.status())
    }

    async fn role_list(&self, _r: Request<pb::AuthRoleListRequest>) -> R<pb::AuthRoleListResponse> {
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.node.current_header(),
            roles: vec![],
        }))
    }

    async fn role_delete(
        &self,
        _r: Request<pb::AuthRoleDeleteRequest>,
    ) -> R<pb::AuthRoleDeleteResponse> {
        Err(rpctypes::ROLE_NOT_FOUND.status())
    }

    async fn role_grant_permission(
        &self,
        _r: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> R<pb::AuthRoleGrantPermissionResponse> {
        Err(rpctypes::ROLE_NOT_FOUND.status())
    }

    async fn role_revoke_permission(
        &self,
        _r: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> R<pb::AuthRoleRevokePermissionResponse> {
        Err(rpctypes::ROLE_NOT_FOUND.status())
    }
}
