//! The peer transport: openraft's three RPCs over gRPC (`tandempb.RaftPeer`), each message an
//! encoded openraft value (see `codec`) tagged with the cluster id. A member refuses messages of
//! another cluster, so two clusters sharing a network cannot merge by accident.

use std::time::Duration;

use etcd_api::tandempb::raft_peer_client::RaftPeerClient;
use etcd_api::tandempb::raft_peer_server::RaftPeer;
use etcd_api::tandempb::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::types::{MemberNode, NodeId, Raft, TypeConfig};

/// How long to wait for a peer's TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Creates a client per peer.
#[derive(Clone)]
pub struct Network {
    pub cluster_id: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        let channel = node
            .peer_urls
            .first()
            .and_then(|u| Endpoint::from_shared(u.clone()).ok())
            .map(|e| e.connect_timeout(CONNECT_TIMEOUT).connect_lazy());
        PeerClient {
            target,
            cluster_id: self.cluster_id,
            channel,
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    cluster_id: u64,
    channel: Option<Channel>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(channel) = self.channel.clone() else {
            let e =
                std::io::Error::other(format!("member {:x} has no usable peer URL", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let mut client = RaftPeerClient::new(channel);
        let mut request = tonic::Request::new(RaftMessage {
            cluster_id: self.cluster_id,
            payload: codec::encode(req).into(),
        });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| match s.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
            _ => RPCError::Network(NetworkError::new(&s)),
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.into_inner().payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}

/// The service side: hands peers' messages to the local raft.
pub struct PeerService {
    pub raft: Raft,
    pub cluster_id: u64,
}

impl PeerService {
    fn open<T: DeserializeOwned>(&self, m: &RaftMessage) -> Result<T, tonic::Status> {
        if m.cluster_id != self.cluster_id {
            return Err(tonic::Status::failed_precondition(format!(
                "cluster id mismatch: message of {:x}, this member is in {:x}",
                m.cluster_id, self.cluster_id
            )));
        }
        codec::decode(&m.payload).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
    }

    fn reply<T: Serialize>(&self, v: &T) -> tonic::Response<RaftMessage> {
        tonic::Response::new(RaftMessage {
            cluster_id: self.cluster_id,
            payload: codec::encode(v).into(),
        })
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> = self.open(request.get_ref())?;
        Ok(self.reply(&self.raft.append_entries(req).await))
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: VoteRequest<NodeId> = self.open(request.get_ref())?;
        Ok(self.reply(&self.raft.vote(req).await))
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> = self.open(request.get_ref())?;
        Ok(self.reply(&self.raft.install_snapshot(req).await))
    }
}
