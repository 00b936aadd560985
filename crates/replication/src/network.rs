//! The peer transport: openraft's three RPCs over gRPC (`tandempb.RaftPeer`), each message an
//! encoded openraft value (see `codec`) tagged with the cluster id. A member refuses messages of
//! another cluster, so two clusters sharing a network cannot merge by accident.
//!
//! The same service carries what a member that does not lead hands to the leader (`Forward`):
//! a batch of proposals, a read-index question, or the member's own attributes.

use std::collections::HashMap;
use std::sync::Mutex;
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
use crate::types::{Applied, Batch, MemberNode, NodeId, Raft, TypeConfig};
use crate::ReplicaError;

/// How long to wait for a peer's TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily connected channel per peer URL, shared by raft's own messages and forwarded
/// requests (one HTTP/2 connection per peer).
#[derive(Default)]
pub struct Channels {
    by_url: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// The channel to `node` (its first peer URL), or None if it has no usable URL.
    pub fn to(&self, node: &MemberNode) -> Option<Channel> {
        let url = node.peer_urls.first()?;
        let mut map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(url) {
            return Some(c.clone());
        }
        let channel = Endpoint::from_shared(url.clone())
            .ok()?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(url.clone(), channel.clone());
        Some(channel)
    }
}

/// Creates a client per peer.
#[derive(Clone)]
pub struct Network {
    pub cluster_id: u64,
    pub channels: std::sync::Arc<Channels>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        PeerClient {
            target,
            cluster_id: self.cluster_id,
            channel: self.channels.to(node),
        }
    }
}

/// What a member that does not lead asks of the leader.
#[derive(Debug, Serialize, serde::Deserialize)]
pub enum ForwardRequest {
    /// Replicate these commands as one entry.
    Propose(Batch),
    /// The index a linearizable read must wait for (ReadIndex).
    ReadIndex,
    /// Record this member's attributes (name and URLs) in the membership.
    SetNode(NodeId, MemberNode),
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Serialize, serde::Deserialize)]
pub enum ForwardResponse {
    /// The entry's log index and what applying it returned.
    Proposed {
        index: u64,
        applied: Applied,
    },
    ReadIndex {
        index: u64,
    },
    NodeSet,
}

/// Why a forwarded request failed.
#[derive(Debug)]
pub enum ForwardFailure {
    /// No connection to the leader could be made: the request was certainly not delivered, so
    /// it may be sent again (to the next leader).
    NotSent,
    Failed(ReplicaError),
}

/// Whether `s` reports a connection that could not be made (so nothing was sent).
fn never_connected(s: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            );
        }
        cause = e.source();
    }
    false
}

/// Sends `req` to the leader over `channel` and waits at most `timeout` for the answer. A
/// failure after connecting is a timeout to the client: whether the leader received the request
/// is unknown, as in etcd when a forwarded proposal is lost.
pub async fn forward(
    channel: Channel,
    cluster_id: u64,
    req: &ForwardRequest,
    timeout: Duration,
) -> Result<ForwardResponse, ForwardFailure> {
    let mut request = tonic::Request::new(RaftMessage {
        cluster_id,
        payload: codec::encode(req).into(),
    });
    request.set_timeout(timeout);
    let reply = RaftPeerClient::new(channel)
        .forward(request)
        .await
        .map_err(|s| {
            if never_connected(&s) {
                return ForwardFailure::NotSent;
            }
            tracing::debug!(status = %s, "forwarding to the leader failed");
            ForwardFailure::Failed(ReplicaError::Timeout)
        })?;
    let answer: Result<ForwardResponse, ReplicaError> = codec::decode(&reply.into_inner().payload)
        .map_err(|e| {
            tracing::warn!(error = %e, "undecodable answer from the leader");
            ForwardFailure::Failed(ReplicaError::Timeout)
        })?;
    answer.map_err(ForwardFailure::Failed)
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
    pub read_policy: crate::replica::ReadPolicy,
}

/// Carries out a forwarded request on this member, which should be the leader.
pub(crate) async fn serve_forward(
    raft: &Raft,
    read_policy: crate::replica::ReadPolicy,
    req: ForwardRequest,
) -> Result<ForwardResponse, ReplicaError> {
    use openraft::error::ClientWriteError;
    let write_error = |e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            crate::replica::not_leader(f.leader_id)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => {
            ReplicaError::LeaderChanged
        }
        RaftError::Fatal(_) => ReplicaError::Stopped,
    };
    match req {
        ForwardRequest::Propose(batch) => {
            let r = raft.client_write(batch).await.map_err(write_error)?;
            Ok(ForwardResponse::Proposed {
                index: r.log_id.index,
                applied: r.data,
            })
        }
        ForwardRequest::ReadIndex => Ok(ForwardResponse::ReadIndex {
            index: read_policy.leader_read_index(raft).await?,
        }),
        ForwardRequest::SetNode(id, node) => {
            let nodes = std::collections::BTreeMap::from([(id, node)]);
            raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(write_error)?;
            Ok(ForwardResponse::NodeSet)
        }
    }
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

    async fn forward(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: ForwardRequest = self.open(request.get_ref())?;
        Ok(self.reply(&serve_forward(&self.raft, self.read_policy, req).await))
    }
}
