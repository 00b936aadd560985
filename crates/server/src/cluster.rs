//! The Cluster service: etcd's membership API. Membership is raft's: `MemberList` reports it,
//! and MemberAdd/Remove/Update/Promote are carried out by the leader (`raft::membership`),
//! checked as etcd checks them (`raft::policy::membership`).

use std::sync::Arc;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use raft::policy::membership::MemberChange;
use raft::MemberNode;
use tonic::{Request, Response, Status};

use crate::errors::from_replica;
use crate::node::Node;

pub struct ClusterService {
    pub node: Arc<Node>,
}

fn to_pb(members: Vec<(u64, MemberNode, bool)>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|(id, m, is_learner)| pb::Member {
            id,
            name: m.name,
            peer_ur_ls: m.peer_urls,
            client_ur_ls: m.client_urls,
            is_learner,
        })
        .collect()
}

impl ClusterService {
    /// etcd's cluster service headers carry no revision.
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.node.header(0)
    }

    async fn change(&self, change: MemberChange) -> Result<Vec<pb::Member>, Status> {
        self.node
            .replica
            .change_members(change)
            .await
            .map(to_pb)
            .map_err(from_replica)
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.node.require_admin(&request)?;
        let witness = request
            .metadata()
            .get(etcd_api::MEMBER_ROLE_METADATA)
            .is_some_and(|v| v == etcd_api::WITNESS_ROLE);
        let r = request.into_inner();
        let peer_urls = crate::config::member_urls(&r.peer_ur_ls).map_err(|e| {
            tracing::debug!(error = %e, "member add: bad peer URLs");
            rpctypes::MEMBER_BAD_URLS.status()
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = crate::config::added_member_id(&peer_urls, now);
        let node = MemberNode {
            name: String::new(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
            // etcd's MemberAdd adds data members; tandem's metadata asks for a witness.
            witness,
        };
        let members = self
            .change(MemberChange::Add {
                id,
                node,
                learner: r.is_learner,
            })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: peer_urls,
                client_ur_ls: Vec::new(),
                is_learner: r.is_learner,
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.node.require_admin(&request)?;
        let id = request.get_ref().id;
        let members = self.change(MemberChange::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.node.require_admin(&request)?;
        let r = request.into_inner();
        let peer_urls = crate::config::member_urls(&r.peer_ur_ls)
            .map_err(|_| rpctypes::MEMBER_BAD_URLS.status())?;
        let members = self
            .change(MemberChange::Update {
                id: r.id,
                peer_urls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.node.require_user(&request)?;
        if request.get_ref().linearizable {
            self.node.read_index().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: to_pb(self.node.replica.members()),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.node.require_admin(&request)?;
        let id = request.get_ref().id;
        let members = self.change(MemberChange::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
