//! The peer transport: openraft's three RPCs over gRPC (`tandempb.RaftPeer`), each message an
//! encoded openraft value (see `codec`) tagged with the cluster id. A member refuses messages of
//! another cluster, so two clusters sharing a network cannot merge by accident.
//!
//! The same service carries what a member that does not lead hands to the leader (`Forward`):
//! a batch of proposals, a read-index question, or the member's own attributes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::tandempb::raft_peer_client::RaftPeerClient;
use crate::tandempb::raft_peer_server::RaftPeer;
use crate::tandempb::RaftMessage;
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
use tonic::transport::Channel;

use std::sync::Arc;

use crate::codec;
use crate::flushes::{FlushClock, PeerFlushes};
use crate::incarnation::Incarnations;
use crate::leadership::Leadership;
use crate::member::ReplicaError;
use crate::policy::read_quorum;
use crate::read_confirm::leader_view;
use crate::transfers::{Chunk, Direction, Transfers};
use crate::types::{Entry, MemberNode, NodeId, Payload, Types};

/// The most payload bytes one AppendEntries to the witness carries (it holds them in memory
/// while it decodes and stores them).
const WITNESS_REQUEST_BYTES_MAX: usize = 1 << 20;

pub use crate::dial::PEER_ROUTES_ENV;

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
        let channel = match crate::dial::channel(url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot dial a peer");
                return None;
            }
        };
        map.insert(url.clone(), channel.clone());
        Some(channel)
    }
}

/// Creates a client per peer.
#[derive(Clone)]
pub struct Network {
    pub cluster_id: u64,
    pub channels: std::sync::Arc<Channels>,
    /// Whether the witness counts now, and which entries every data node holds (W3).
    pub engagement: crate::engagement::Handle,
    /// This member is the witness: it has no keyspace, so it never sends a snapshot.
    pub from_witness: bool,
    pub incarnations: Arc<Incarnations>,
    pub transfers: Arc<Transfers>,
    pub leadership: Arc<Leadership>,
    pub peer_flushes: Arc<PeerFlushes>,
    pub vote_backoff: Arc<crate::vote_backoff::VoteBackoff>,
}

impl<C: Types> RaftNetworkFactory<C> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        PeerClient {
            target,
            cluster_id: self.cluster_id,
            channel: self.channels.to(node),
            to_witness: node.witness.then(|| self.engagement.clone()),
            from_witness: self.from_witness,
            incarnations: Arc::clone(&self.incarnations),
            transfers: Arc::clone(&self.transfers),
            leadership: Arc::clone(&self.leadership),
            peer_flushes: Arc::clone(&self.peer_flushes),
            vote_backoff: Arc::clone(&self.vote_backoff),
        }
    }
}

/// A member's transport and what its own tasks share with it: the channels to its peers, the
/// incarnations it knows, and the witness engagement (published by the leader's driver).
pub struct Wiring {
    pub network: Network,
    pub channels: Arc<Channels>,
    pub incarnations: Arc<Incarnations>,
    pub engagement: crate::engagement::Handle,
    pub publisher: crate::engagement::Publisher,
    /// Snapshots sent and received, for `/metrics`.
    pub transfers: Arc<Transfers>,
    /// A leadership move under way (`crate::leadership`).
    pub leadership: Arc<Leadership>,
    /// The peers' log flush times, from their answers (`crate::flushes`).
    pub peer_flushes: Arc<PeerFlushes>,
    /// The greater logs refused votes met (`crate::vote_backoff`).
    pub vote_backoff: Arc<crate::vote_backoff::VoteBackoff>,
}

impl Wiring {
    /// The transport of member `member_id` (incarnation `incarnation`, its member directory
    /// `dir`) in cluster `cluster_id`; `from_witness` when the member is the witness.
    pub fn open(
        dir: &std::path::Path,
        cluster_id: u64,
        member_id: NodeId,
        incarnation: u64,
        from_witness: bool,
    ) -> anyhow::Result<Self> {
        let channels = Arc::new(Channels::default());
        let incarnations = Arc::new(Incarnations::open(dir, member_id, incarnation)?);
        let (publisher, engagement) = crate::engagement::channel();
        let transfers = Arc::new(Transfers::default());
        let leadership = Arc::new(Leadership::default());
        let peer_flushes = Arc::new(PeerFlushes::default());
        let vote_backoff = Arc::new(crate::vote_backoff::VoteBackoff::default());
        let network = Network {
            cluster_id,
            channels: Arc::clone(&channels),
            engagement: engagement.clone(),
            from_witness,
            incarnations: Arc::clone(&incarnations),
            transfers: Arc::clone(&transfers),
            leadership: Arc::clone(&leadership),
            peer_flushes: Arc::clone(&peer_flushes),
            vote_backoff: Arc::clone(&vote_backoff),
        };
        Ok(Wiring {
            network,
            channels,
            incarnations,
            engagement,
            publisher,
            transfers,
            leadership,
            peer_flushes,
            vote_backoff,
        })
    }
}

/// What a member that does not lead asks of the leader.
#[derive(Debug, Serialize, serde::Deserialize)]
pub enum ForwardRequest {
    /// Replicate this payload as one entry.
    Propose(Payload),
    /// The index a linearizable read must wait for (ReadIndex), for `reads` reads (the
    /// leader paces its rounds by load, `crate::policy::read_rounds`).
    ReadIndex { reads: u32 },
    /// Record this member's attributes (name and URLs) in the membership.
    SetNode(NodeId, MemberNode),
    /// From a witness that leads: this data node is caught up and should stand for election
    /// now, so leadership returns to a data node; and from a leader moving its leadership here
    /// (etcd's MoveLeader, `crate::leadership`). openraft 0.9 has no leadership transfer.
    /// Sent by the previous release; this one sends [`ForwardRequest::CampaignFor`].
    Campaign,
    /// From a member starting on a new data dir: whether its peers know it by another
    /// incarnation (W5). The answer is the check every message gets.
    Hello,
    /// Would you vote for a candidate whose last log id is this (`crate::prevote`)?
    PreVote(Option<crate::types::LogId>),
    /// etcd's MemberAdd/Remove/Update/Promote (`crate::membership`), on the leader.
    ChangeMembers(crate::policy::membership::MemberChange),
    /// From a member joining an existing cluster (`--initial-cluster-state existing`), which
    /// knows neither its id nor the cluster's: the cluster id and the membership this member
    /// knows. Answered by any member, even without a leader.
    Members,
    /// From a member that was moving its leadership to `target` when this one won an
    /// election instead (`crate::leadership`): move this member's leadership there, within
    /// `timeout_ms`.
    MoveLeader { target: NodeId, timeout_ms: u64 },
    /// [`ForwardRequest::Campaign`] from a leader of `term`: the receiver stands only once the
    /// asker has confirmed that it still asks ([`ForwardRequest::StillAsking`],
    /// `crate::leadership::campaign_if_still_asked`).
    CampaignFor { term: u64 },
    /// From a member asked to stand by this one in `term`: does this member, leading in `term`,
    /// still ask `target` to stand (moving its leadership there, or a witness handing over)?
    StillAsking { target: NodeId, term: u64 },
    /// [`ForwardRequest::ReadIndex`] from a follower that, with the leader, is a quorum
    /// (`crate::policy::read_quorum`): the leader answers at once with its read index and its
    /// leadership ([`ForwardResponse::ReadIndexIf`]), which the follower then checks its own vote
    /// against; otherwise it answers [`ForwardResponse::ReadIndex`] after a round. `in_flight`:
    /// the reads the follower has in flight (they pace the leader's rounds).
    ReadIndexOf { reads: u32, in_flight: u32 },
    /// From a leader confirming its read index with this member (`crate::read_confirm`): the
    /// leadership this member's vote names.
    VoteOf,
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Serialize, serde::Deserialize)]
pub enum ForwardResponse<R> {
    /// The entry's log index and what applying it returned.
    Proposed {
        index: u64,
        applied: R,
    },
    ReadIndex {
        index: u64,
    },
    NodeSet,
    Campaigning,
    Hello,
    PreVote {
        granted: bool,
    },
    /// The membership once the change took effect: each member, and whether it is a learner.
    MembersChanged(Vec<(NodeId, MemberNode, bool)>),
    Members(MembersAnswer),
    LeadershipMoved(Result<(), crate::leadership::MoveError>),
    /// The answer to [`ForwardRequest::StillAsking`].
    StillAsking(bool),
    /// A [`ForwardRequest::CampaignFor`] that no longer stands: not confirmed by its asker.
    CampaignDeclined,
    /// The answer to [`ForwardRequest::ReadIndexOf`] with no round: the read index holds if the
    /// asker's vote, checked after this answer came, still names `elected`.
    ReadIndexIf {
        index: u64,
        elected: crate::read_confirm::Elected,
    },
    /// The answer to [`ForwardRequest::VoteOf`].
    Vote(crate::read_confirm::Elected),
}

/// One member's answer to `ForwardRequest::Members`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MembersAnswer {
    pub cluster_id: u64,
    pub members: Vec<(NodeId, MemberNode, bool)>,
    /// The log index of that membership, when the member answering has applied it.
    pub committed_at: Option<u64>,
}

/// The `Members` answer from `raft`'s metrics.
fn members_answer<R>(cluster_id: u64, m: &crate::types::Metrics) -> ForwardResponse<R> {
    ForwardResponse::Members(MembersAnswer {
        cluster_id,
        members: crate::member::members_of(m),
        committed_at: crate::member::membership_applied_at(m),
    })
}

/// Why a forwarded request failed.
#[derive(Debug)]
pub enum ForwardFailure {
    /// No connection to the leader could be made: the request was certainly not delivered, so
    /// it may be sent again (to the next leader).
    NotSent,
    Failed(ReplicaError),
    /// The peer could not read the request: it runs an older release (nothing was done).
    NotUnderstood,
}

/// A message of this member: `payload` with the cluster id, this member's id and incarnation.
fn message(cluster_id: u64, me: &Incarnations, payload: Vec<u8>, data_floor: u64) -> RaftMessage {
    let (sender, incarnation) = me.mine();
    RaftMessage {
        cluster_id,
        payload: payload.into(),
        data_floor,
        sender,
        incarnation,
        flush_micros: 0,
    }
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
pub async fn forward<R: DeserializeOwned>(
    channel: Channel,
    cluster_id: u64,
    me: &Incarnations,
    req: &ForwardRequest,
    timeout: Duration,
) -> Result<ForwardResponse<R>, ForwardFailure> {
    let mut request = tonic::Request::new(message(cluster_id, me, codec::encode(req), 0));
    request.set_timeout(timeout);
    // The grpc-timeout is for the peer; a link that went silent is bounded here.
    let reply = tokio::time::timeout(timeout, RaftPeerClient::new(channel).forward(request))
        .await
        .map_err(|_| ForwardFailure::Failed(ReplicaError::Timeout))?
        .map_err(|s| {
            if never_connected(&s) {
                return ForwardFailure::NotSent;
            }
            if s.code() == tonic::Code::InvalidArgument {
                return ForwardFailure::NotUnderstood;
            }
            tracing::debug!(status = %s, "forwarding to the leader failed");
            ForwardFailure::Failed(ReplicaError::Timeout)
        })?;
    let reply = reply.into_inner();
    if let Err(e) = me.check(reply.sender, reply.incarnation) {
        tracing::warn!(error = %e, "ignoring an answer from another incarnation of a member");
        return Err(ForwardFailure::Failed(ReplicaError::Timeout));
    }
    let answer: Result<ForwardResponse<R>, ReplicaError> =
        codec::decode(&reply.payload).map_err(|e| {
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
    /// Set when the peer is the witness: what it may be sent depends on the engagement.
    to_witness: Option<crate::engagement::Handle>,
    from_witness: bool,
    incarnations: Arc<Incarnations>,
    transfers: Arc<Transfers>,
    leadership: Arc<Leadership>,
    peer_flushes: Arc<PeerFlushes>,
    vote_backoff: Arc<crate::vote_backoff::VoteBackoff>,
}

/// The error for a message a leader moving its leadership away does not send.
fn silenced<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, MemberNode, E> {
    let e = std::io::Error::other(format!(
        "not sent to {target:x}: this leader is moving its leadership and stays silent until the \
         move ends"
    ));
    RPCError::Unreachable(Unreachable::new(&e))
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        data_floor: u64,
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
        let mut request = tonic::Request::new(message(
            self.cluster_id,
            &self.incarnations,
            codec::encode(req),
            data_floor,
        ));
        request.set_timeout(option.hard_ttl());
        let metrics = crate::peer_metrics::peers();
        let to = crate::peer_metrics::label("To", self.target);
        let bytes = request.get_ref().payload.len() as u64;
        let sent = std::time::Instant::now();
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| {
            metrics.sent_failures.get_or_create(&to).inc();
            match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
                _ => RPCError::Network(NetworkError::new(&s)),
            }
        })?;
        metrics.sent_bytes.get_or_create(&to).inc_by(bytes);
        if let Kind::Append = kind {
            metrics
                .round_trip
                .get_or_create(&to)
                .observe(sent.elapsed().as_secs_f64());
        }
        let reply = reply.into_inner();
        if let Kind::Append = kind {
            self.peer_flushes.note(self.target, reply.flush_micros);
        }
        if let Err(e) = self.incarnations.check(reply.sender, reply.incarnation) {
            // A wiped member's vote or acknowledgement must not count (W5).
            tracing::warn!(error = %e, "ignoring an answer from another incarnation of a member");
            return Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(e),
            )));
        }
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl<C: Types> RaftNetwork<C> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        if self.leadership.silent() {
            return Err(silenced(self.target));
        }
        let Some(engagement) = self.to_witness.clone() else {
            let elided =
                |e: &Entry<C>| matches!(e.payload, openraft::EntryPayload::Normal(Payload::Elided));
            let Some(last_elided) = rpc.entries.iter().rposition(elided) else {
                return self.call(Kind::Append, &rpc, 0, &option).await;
            };
            // A witness that leads holds only the ids of entries every data node had. openraft
            // may still send them (it probes from an old index), so ask first whether the data
            // node holds the last of them: if it does, it holds all of them (log matching), and
            // it has matched up to there.
            let id = rpc.entries[last_elided].log_id;
            let probe = AppendEntriesRequest::<C> {
                vote: rpc.vote,
                prev_log_id: Some(id),
                leader_commit: rpc.leader_commit,
                entries: Vec::new(),
            };
            let resp: AppendEntriesResponse<NodeId> =
                self.call(Kind::Append, &probe, 0, &option).await?;
            return match resp {
                AppendEntriesResponse::Success => {
                    Ok(AppendEntriesResponse::PartialSuccess(Some(id)))
                }
                AppendEntriesResponse::Conflict | AppendEntriesResponse::PartialSuccess(_) => {
                    // It lacks an entry whose payload only the data nodes had: sending the id
                    // alone would lose data. Never; the replication stays stuck, visibly.
                    let e = std::io::Error::other(format!(
                        "this member holds only the id of entry {id}, which member {:x} lacks",
                        self.target
                    ));
                    Err(RPCError::Network(NetworkError::new(&e)))
                }
                other => Ok(other),
            };
        };
        // The witness: shaped by the engagement (W3), see `engagement::Shape`.
        let shape = engagement
            .shape(&rpc.entries, rpc.prev_log_id, option.soft_ttl() / 2)
            .await;
        // Bound what one request makes the witness hold (its memory), whatever openraft batched.
        let mut bytes = 0;
        let fits = rpc
            .entries
            .iter()
            .take(shape.keep)
            .take_while(|e| {
                bytes += match &e.payload {
                    openraft::EntryPayload::Normal(p) if e.log_id.index > shape.data_floor => {
                        p.len()
                    }
                    _ => 0,
                };
                bytes <= WITNESS_REQUEST_BYTES_MAX
            })
            .count()
            .max(shape.keep.min(1));
        let shape = crate::engagement::Shape {
            keep: fits,
            held_back: fits < rpc.entries.len(),
            ..shape
        };
        rpc.entries.truncate(shape.keep);
        for e in &mut rpc.entries {
            if e.log_id.index <= shape.data_floor {
                if let openraft::EntryPayload::Normal(p) = &mut e.payload {
                    *p = Payload::Elided;
                }
            }
        }
        let sent_last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let resp: AppendEntriesResponse<NodeId> = self
            .call(Kind::Append, &rpc, shape.data_floor, &option)
            .await?;
        Ok(match resp {
            AppendEntriesResponse::Success if shape.held_back => {
                AppendEntriesResponse::PartialSuccess(sent_last)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        if self.from_witness {
            // The data node needs entries this witness has purged: only a data node's snapshot
            // can catch it up (the witness's holds no keyspace). Never send one.
            let e = std::io::Error::other(format!(
                "member {:x} needs a snapshot, which a witness cannot give",
                self.target
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if self.leadership.silent() {
            return Err(silenced(self.target));
        }
        let (first, last) = (rpc.offset == 0, rpc.done);
        let sent = self.call(Kind::Snapshot, &rpc, 0, &option).await;
        let ok = sent.is_ok();
        self.transfers
            .note(Direction::Send, self.target, Chunk { first, last, ok });
        sent
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let candidate_last = rpc.last_log_id;
        let answer = self.call(Kind::Vote, &rpc, 0, &option).await?;
        Ok(self.vote_backoff.answer(candidate_last, answer))
    }
}

/// What a member does with what its peers send: the raft messages go to openraft; an
/// AppendEntries request's data floor is reported to `on_data_floor` (the witness purges what
/// every data node holds); a forwarded request goes to `forwarded`.
pub struct PeerService<C: Types> {
    pub raft: openraft::Raft<C>,
    pub cluster_id: u64,
    pub on_data_floor: Option<std::sync::Arc<dyn Fn(u64) + Send + Sync>>,
    /// This member is the witness: it takes no proposals, even while it leads.
    pub witness: bool,
    pub incarnations: Arc<Incarnations>,
    /// For pre-votes (`crate::prevote`): when this member last heard from a leader, its leader
    /// lease, its election timeout, and its last log id.
    pub prevote: Option<PreVoter>,
    /// Snapshots received, for `/metrics`.
    pub transfers: Arc<Transfers>,
    /// This member's log flush times, reported in answers (a data member's; a witness's log
    /// never leads the cluster, so it reports none).
    pub flush: Option<Arc<FlushClock>>,
    /// A witness's payloads (W4, `crate::held`): past the cap it takes no AppendEntries
    /// carrying a payload, so nothing more commits without a data node.
    pub held: Option<Arc<crate::held::HeldPayloads>>,
    /// This member: forwarded requests are carried out on it (`serve_forward`).
    pub member: Arc<crate::member::Member<C>>,
}

/// What a member answers pre-votes with.
#[derive(Clone)]
pub struct PreVoter {
    pub contact: Arc<crate::prevote::Contact>,
    pub lease_ms: u64,
    pub election_timeout_ms: u64,
    pub last_log: Arc<dyn Fn() -> Option<crate::types::LogId> + Send + Sync>,
}

/// Carries out a forwarded request on this member, which should be the leader.
///
/// While this leader moves its leadership away (`crate::leadership`) it takes no proposal and
/// confirms no read: it answers "not leader, the transferee will be", and the asking member
/// waits for the next leader (nothing was appended, so sending it again is safe).
pub async fn serve_forward<C: Types>(
    member: &crate::member::Member<C>,
    from: Option<NodeId>,
    req: ForwardRequest,
) -> Result<ForwardResponse<C::R>, ReplicaError> {
    let (raft, leadership) = (&member.raft, &member.leadership);
    if let (
        Some(to),
        ForwardRequest::Propose(_)
        | ForwardRequest::ReadIndex { .. }
        | ForwardRequest::ReadIndexOf { .. }
        | ForwardRequest::SetNode(..)
        | ForwardRequest::ChangeMembers(_),
    ) = (leadership.moving_to(), &req)
    {
        return Err(ReplicaError::NotLeader(Some(to)));
    }
    let write_error = crate::membership::write_error;
    match req {
        ForwardRequest::Propose(payload) => {
            let r = raft.client_write(payload).await.map_err(write_error)?;
            Ok(ForwardResponse::Proposed {
                index: r.log_id.index,
                applied: r.data,
            })
        }
        ForwardRequest::ReadIndex { reads } => Ok(ForwardResponse::ReadIndex {
            index: member.leader_reads.read_index(reads as usize, 0).await?,
        }),
        ForwardRequest::ReadIndexOf { reads, in_flight } => {
            let me = member.member_id;
            if let (Some(from), Some(view)) = (from, leader_view(raft, me).await) {
                if read_quorum::pair_is_quorum(&view.configs, me, from) {
                    return Ok(ForwardResponse::ReadIndexIf {
                        index: view.read_index,
                        elected: view.elected,
                    });
                }
            }
            Ok(ForwardResponse::ReadIndex {
                index: member
                    .leader_reads
                    .read_index(reads as usize, in_flight as usize)
                    .await?,
            })
        }
        ForwardRequest::VoteOf => Ok(ForwardResponse::Vote(
            crate::read_confirm::elected_of(raft)
                .await
                .ok_or(ReplicaError::Stopped)?,
        )),
        ForwardRequest::SetNode(id, node) => {
            let nodes = std::collections::BTreeMap::from([(id, node)]);
            raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(write_error)?;
            Ok(ForwardResponse::NodeSet)
        }
        ForwardRequest::Hello => Ok(ForwardResponse::Hello),
        // Answered by the peer service, which knows when this member last heard a leader.
        ForwardRequest::PreVote(_) => Ok(ForwardResponse::PreVote { granted: false }),
        ForwardRequest::ChangeMembers(change) => Ok(ForwardResponse::MembersChanged(
            crate::membership::change(raft, &member.peer_flushes, change).await?,
        )),
        ForwardRequest::Members => Ok(members_answer(0, &raft.metrics().borrow())),
        ForwardRequest::MoveLeader { target, timeout_ms } => Ok(ForwardResponse::LeadershipMoved(
            member
                .move_leader(target, Duration::from_millis(timeout_ms))
                .await,
        )),
        ForwardRequest::StillAsking { target, term } => {
            let m = raft.metrics();
            let m = m.borrow();
            let witness = m
                .membership_config
                .membership()
                .get_node(&member.member_id)
                .is_some_and(|n| n.witness);
            Ok(ForwardResponse::StillAsking(crate::leadership::still_asks(
                m.state == openraft::ServerState::Leader,
                m.current_term,
                term,
                leadership.moving_to(),
                target,
                witness,
            )))
        }
        // Answered by the peer service, which knows who asks.
        ForwardRequest::CampaignFor { .. } => Ok(ForwardResponse::CampaignDeclined),
        ForwardRequest::Campaign => crate::leadership::stand(member).await,
    }
}

impl<C: Types> PeerService<C> {
    fn open<T: DeserializeOwned>(&self, m: &RaftMessage) -> Result<T, tonic::Status> {
        if m.cluster_id != self.cluster_id {
            return Err(tonic::Status::failed_precondition(format!(
                "cluster id mismatch: a message of cluster {:x} reached a member of cluster {:x}; \
                 --initial-cluster, --initial-cluster-token and --initial-cluster-witness must be \
                 the same on every member",
                m.cluster_id, self.cluster_id
            )));
        }
        self.incarnations
            .check(m.sender, m.incarnation)
            .map_err(tonic::Status::failed_precondition)?;
        crate::peer_metrics::peers()
            .received_bytes
            .get_or_create(&crate::peer_metrics::label("From", m.sender))
            .inc_by(m.payload.len() as u64);
        codec::decode(&m.payload).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
    }

    fn reply<T: Serialize>(&self, v: &T) -> tonic::Response<RaftMessage> {
        tonic::Response::new(message(
            self.cluster_id,
            &self.incarnations,
            codec::encode(v),
            0,
        ))
    }
}

#[tonic::async_trait]
impl<C: Types> RaftPeer for PeerService<C> {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: AppendEntriesRequest<C> = self.open(request.get_ref())?;
        let floor = request.get_ref().data_floor;
        // A witness: the payloads this request would have it hold (data nodes skip this).
        let held = self.held.as_ref().map(|h| {
            let payloads: Vec<(u64, u64)> = req
                .entries
                .iter()
                .filter_map(|e| match &e.payload {
                    openraft::EntryPayload::Normal(p @ Payload::Data(_)) => {
                        Some((e.log_id.index, p.len() as u64))
                    }
                    _ => None,
                })
                .collect();
            (h, payloads)
        });
        if let Some((h, payloads)) = &held {
            if h.full() && !payloads.is_empty() {
                return Err(tonic::Status::resource_exhausted(format!(
                    "the witness holds {} bytes of entry payloads, its cap \
                     (--witness-max-payload-bytes); it takes no more until a data node has \
                     caught up",
                    h.bytes()
                )));
            }
        }
        let resp = self.raft.append_entries(req).await;
        if let (Some((h, payloads)), true) = (held, resp.is_ok()) {
            h.appended(payloads, floor);
        }
        if let (Some(f), true) = (&self.on_data_floor, resp.is_ok()) {
            f(floor);
        }
        if let (
            Some(p),
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)),
        ) = (&self.prevote, &resp)
        {
            p.contact.note();
        }
        // Only answers to AppendEntries carry this member's flush time (the leader reads it there).
        let mut reply = self.reply(&resp);
        reply.get_mut().flush_micros = self.flush.as_ref().map_or(0, |f| f.recent_micros());
        Ok(reply)
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
        let req: InstallSnapshotRequest<C> = self.open(request.get_ref())?;
        let from = req.vote.leader_id().voted_for().unwrap_or_default();
        let (first, last) = (req.offset == 0, req.done);
        let installed = self.raft.install_snapshot(req).await;
        let ok = installed.is_ok();
        self.transfers
            .note(Direction::Receive, from, Chunk { first, last, ok });
        Ok(self.reply(&installed))
    }

    async fn forward(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let m = request.get_ref();
        if m.cluster_id == 0 && m.sender == 0 {
            // A member joining an existing cluster: it may ask only who the members are.
            let req: ForwardRequest = codec::decode(&m.payload)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let ForwardRequest::Members = req else {
                return Err(tonic::Status::failed_precondition(
                    "a member that does not know its cluster may only ask for the members",
                ));
            };
            let answer: Result<ForwardResponse<C::R>, ReplicaError> = Ok(members_answer(
                self.cluster_id,
                &self.raft.metrics().borrow(),
            ));
            return Ok(self.reply(&answer));
        }
        let req: ForwardRequest = self.open(m)?;
        if let (ForwardRequest::Campaign, Some(p)) = (&req, &self.prevote) {
            p.contact.note_asked();
        }
        if let ForwardRequest::CampaignFor { term } = req {
            let contact = self.prevote.as_ref().map(|p| Arc::clone(&p.contact));
            let answer = crate::leadership::campaign_if_still_asked(
                &self.member,
                m.sender,
                term,
                move || {
                    if let Some(c) = contact {
                        c.note_asked();
                    }
                },
            )
            .await;
            return Ok(self.reply(&answer));
        }
        if let (ForwardRequest::PreVote(candidate_last), Some(p)) = (&req, &self.prevote) {
            let m = self.raft.metrics().borrow().clone();
            let ask = crate::prevote::Ask {
                now_ms: p.contact.now_ms(),
                heard_ms: p.contact.last_ms(),
                lease_ms: p.lease_ms,
                leads_with_quorum: m.state == openraft::ServerState::Leader
                    && !crate::policy::leader_loss::lost_quorum(&m, p.election_timeout_ms),
                voter_last: (p.last_log)(),
                candidate_last: *candidate_last,
            };
            let answer: Result<ForwardResponse<C::R>, ReplicaError> =
                Ok(ForwardResponse::PreVote {
                    granted: crate::prevote::grant(&ask),
                });
            return Ok(self.reply(&answer));
        }
        let serves_a_member = matches!(
            req,
            ForwardRequest::Propose(_)
                | ForwardRequest::ReadIndex { .. }
                | ForwardRequest::ReadIndexOf { .. }
                | ForwardRequest::SetNode(..)
                | ForwardRequest::ChangeMembers(_)
        );
        if serves_a_member {
            // A leader's membership is the newest: a member it does not hold was removed (a new
            // one is added before it starts). It is not served through the leader (etcd's
            // peers answer a removed member 410 Gone).
            let unknown = {
                let metrics = self.raft.metrics();
                let now = metrics.borrow();
                now.state == openraft::ServerState::Leader
                    && now
                        .membership_config
                        .membership()
                        .get_node(&m.sender)
                        .is_none()
            };
            if unknown {
                let refused: Result<ForwardResponse<C::R>, ReplicaError> =
                    Err(ReplicaError::Removed);
                return Ok(self.reply(&refused));
            }
        }
        if self.witness && matches!(req, ForwardRequest::Propose(_)) {
            let refused: Result<ForwardResponse<C::R>, ReplicaError> = Err(ReplicaError::NoLeader);
            return Ok(self.reply(&refused));
        }
        let served = serve_forward(&self.member, Some(m.sender), req).await;
        Ok(self.reply(&served))
    }
}

/// Before a member starts on a new data dir: asks each peer at `peer_urls` whether it knows
/// this member by another incarnation, and returns the refusal of the first that does. Peers
/// that cannot be reached within `timeout` are skipped (a new cluster starts together); their
/// messages are checked anyway.
pub async fn greet(
    peer_urls: &[String],
    cluster_id: u64,
    me: &Incarnations,
    timeout: Duration,
) -> Result<(), String> {
    for url in peer_urls {
        let Ok(channel) = crate::dial::channel(url) else {
            continue;
        };
        let mut request = tonic::Request::new(message(
            cluster_id,
            me,
            codec::encode(&ForwardRequest::Hello),
            0,
        ));
        request.set_timeout(timeout);
        match RaftPeerClient::new(channel).forward(request).await {
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(format!("{url} refuses this member: {}", s.message()));
            }
            Err(s) => tracing::debug!(peer = %url, status = %s, "greeting a peer"),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// For a member joining an existing cluster: asks each peer at `peer_urls` in turn for the
/// cluster id and the membership, and returns the first answer (or why none came).
pub async fn ask_members(peer_urls: &[String], timeout: Duration) -> Result<MembersAnswer, String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        match ask_members_of(url, timeout).await {
            Ok(answer) => return Ok(answer),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Asks the member at `url` for its cluster id and membership (as a member that does not know
/// its cluster may).
pub async fn ask_members_of(url: &str, timeout: Duration) -> Result<MembersAnswer, String> {
    let nobody = Incarnations::in_memory(0, 0);
    let channel = crate::dial::channel(url)?;
    match forward::<()>(channel, 0, &nobody, &ForwardRequest::Members, timeout).await {
        Ok(ForwardResponse::Members(answer)) => Ok(answer),
        Ok(other) => Err(format!("{url}: unexpected answer {other:?}")),
        Err(ForwardFailure::NotSent) => Err(format!("{url}: unreachable")),
        Err(ForwardFailure::Failed(e)) => Err(format!("{url}: {e}")),
        Err(ForwardFailure::NotUnderstood) => Err(format!("{url}: request not understood")),
    }
}
