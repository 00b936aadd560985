//! The Cluster service. Membership is raft's: `MemberList` reports it. Changing membership
//! arrives with the two-node work; until then those calls say so.

use std::sync::Arc;

use etcd_api::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct ClusterService {
    pub node: Arc<Node>,
}

impl ClusterService {
    fn members(&self) -> Vec<pb::Member> {
        self.node
            .replica
            .members()
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
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "tandem: {what} is not supported yet (membership changes come with the two-node cluster)"
    ))
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet("member update"))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.node.read_index().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            // etcd's cluster service headers carry no revision.
            header: self.node.header(0),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet("member promote"))
    }
}
