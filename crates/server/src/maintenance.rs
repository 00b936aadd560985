//! The Maintenance service: status, hashes, alarms, defragmentation and snapshots.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use futures::Stream;
use mvcc::{Alarm, AlarmType, Command, CommandResponse};
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::errors::unexpected;
use crate::node::Node;

/// Bytes per snapshot message (etcd sends 32 KiB pieces).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// The snapshot body is padded to a multiple of this, as etcd clients require.
const SNAPSHOT_ALIGN_BYTES: u64 = 512;
/// The storage version reported by `Status` (etcd 3.6's field).
pub const STORAGE_VERSION: &str = "3.6.0";
/// How long defragmentation waits for readers to let go of the store before giving up.
const DEFRAG_WAIT_MAX: Duration = Duration::from_secs(30);

pub struct MaintenanceService {
    pub node: Arc<Node>,
}

fn alarm_to_pb(a: &Alarm) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: a.member_id,
        alarm: match a.alarm {
            AlarmType::NoSpace => pb::AlarmType::Nospace as i32,
            AlarmType::Corrupt => pb::AlarmType::Corrupt as i32,
        },
    }
}

/// etcd's text form of an alarm, as `Status.errors` lists it.
fn alarm_string(a: &Alarm) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm))
}

/// etcd's name of an alarm type.
pub fn alarm_name(t: AlarmType) -> &'static str {
    match t {
        AlarmType::NoSpace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        // Reading alarms needs a user; raising or clearing one, an admin (the check is made
        // again when the change is applied).
        let caller = self.node.require_user(&request)?;
        let r = request.into_inner();
        let alarm = match pb::AlarmType::try_from(r.alarm).unwrap_or(pb::AlarmType::None) {
            pb::AlarmType::None => None,
            pb::AlarmType::Nospace => Some(AlarmType::NoSpace),
            pb::AlarmType::Corrupt => Some(AlarmType::Corrupt),
        };
        let action = AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get);
        if action != AlarmAction::Get {
            self.node.authorize(|a| a.check_admin(&caller))?;
        }
        let alarms = match (action, alarm) {
            (AlarmAction::Get, _) | (_, None) => self
                .node
                .alarms()
                .into_iter()
                .filter(|a| {
                    alarm.is_none_or(|t| a.alarm == t)
                        && (r.member_id == 0 || a.member_id == r.member_id)
                })
                .collect(),
            (action, Some(alarm)) => {
                let a = Alarm {
                    member_id: r.member_id,
                    alarm,
                };
                let cmd = if action == AlarmAction::Activate {
                    Command::AlarmActivate(a)
                } else {
                    Command::AlarmDeactivate(a)
                };
                match self.node.propose_as(caller, cmd, 0).await? {
                    CommandResponse::Alarm { alarms, .. } => alarms,
                    other => return Err(unexpected(other)),
                }
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header: self.node.current_header(),
            alarms: alarms.iter().map(alarm_to_pb).collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.node.require_user(&request)?;
        let st = self.node.store.status().map_err(crate::errors::from_mvcc)?;
        let raft = self.node.status();
        Ok(Response::new(pb::StatusResponse {
            header: self.node.header(st.revision),
            version: self.node.config.server_version.clone(),
            db_size: st.db_size,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.last_log_index,
            raft_term: raft.term,
            raft_applied_index: raft.applied_index,
            errors: self.node.alarms().iter().map(alarm_string).collect(),
            db_size_in_use: st.db_size_in_use,
            is_learner: raft.is_learner,
            storage_version: STORAGE_VERSION.to_string(),
            db_size_quota: self.node.config.quota_backend_bytes,
            downgrade_info: Some(pb::DowngradeInfo::default()),
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        require_admin_unconverted(&self.node, &request)?;
        let store = Arc::clone(&self.node.store);
        let deadline = tokio::time::Instant::now() + DEFRAG_WAIT_MAX;
        loop {
            let s = Arc::clone(&store);
            let result = tokio::task::spawn_blocking(move || s.defragment())
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            match result {
                Ok(()) => break,
                // Readers (a snapshot stream, say) hold the file; wait for them, within limits.
                Err(mvcc::Error::Busy) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(crate::errors::from_mvcc(e)),
            }
        }
        // etcd answers a defragment with no header.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        require_admin_unconverted(&self.node, &request)?;
        let (hash, ..) = self
            .node
            .store
            .hash_kv(0)
            .map_err(crate::errors::from_mvcc)?;
        Ok(Response::new(pb::HashResponse {
            header: self.node.current_header(),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        // A member's corruption check, or an admin.
        if !crate::authn::is_member(&self.node.store.auth(), request.metadata()) {
            require_admin_unconverted(&self.node, &request)?;
        }
        let r = request.into_inner();
        let (hash, compact_revision, hash_revision) = self
            .node
            .store
            .hash_kv(r.revision)
            .map_err(crate::errors::from_mvcc)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.node.current_header(),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        require_admin_unconverted(&self.node, &request)?;
        let store = Arc::clone(&self.node.store);
        let dir = self.node.config.data_dir.join("member");
        let members = self.node.replica.members();
        let term = self.node.replica.status().term;
        // Written to a temporary bbolt file first (etcd's format, `etcd-db`): its size gives
        // `remaining_bytes`, and the keyspace is held only while writing, not while a slow
        // client reads. The file is unlinked at once; the open handle keeps it readable.
        let mut file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, Status> {
            let internal = |e: &dyn std::fmt::Display| Status::internal(e.to_string());
            let tmp = tempfile::tempdir_in(&dir).map_err(|e| internal(&e))?;
            let path = tmp.path().join("snapshot.db");
            let mut w = etcd_db::Writer::create(&path).map_err(|e| internal(&e))?;
            let applied = store
                .export(&mut w, replication::state_machine::META_APPLIED)
                .map_err(crate::errors::from_mvcc)?;
            let consistent_index = match applied {
                Some(b) => replication::state_machine::decode_applied(&b)
                    .map_err(|e| internal(&e))?
                    .last_applied
                    .map_or(0, |l| l.index),
                None => 0,
            };
            let info = etcd_db::ClusterInfo {
                consistent_index,
                term,
                members: members
                    .into_iter()
                    .map(|(id, m, is_learner)| etcd_db::Member {
                        id,
                        name: m.name,
                        peer_urls: m.peer_urls,
                        client_urls: m.client_urls,
                        is_learner,
                    })
                    .collect(),
            };
            w.finish(&info).map_err(|e| internal(&e))?;
            let f = std::fs::File::open(&path).map_err(|e| internal(&e))?;
            // etcd clients expect whole 512-byte pages before the SHA-256 trailer: bbolt's
            // pages are larger multiples of it.
            let len = f.metadata().map_err(|e| internal(&e))?.len();
            assert_eq!(len % SNAPSHOT_ALIGN_BYTES, 0, "a bbolt file is whole pages");
            drop(tmp);
            Ok(f)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let total = file
            .metadata()
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let header = self.node.current_header();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                };
                hasher.update(&buf[..n]);
                sent += n as u64;
                let msg = pb::SnapshotResponse {
                    header,
                    remaining_bytes: total - sent,
                    blob: buf[..n].to_vec().into(),
                    version: STORAGE_VERSION.to_string(),
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return;
                }
            }
            // As etcd does, the last message carries the SHA-256 of everything before it.
            let sum = hasher.finalize().to_vec();
            let _ = tx.blocking_send(Ok(pb::SnapshotResponse {
                header,
                remaining_bytes: 0,
                blob: sum.into(),
                version: STORAGE_VERSION.to_string(),
            }));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.node.require_admin(&request)?;
        use raft::leadership::MoveError;
        // etcd waits for the move until the request's deadline (etcdctl's --command-timeout).
        let timeout = grpc_timeout(request.metadata())
            .unwrap_or_else(|| crate::node::request_timeout(self.node.config.election_timeout_ms));
        let target = request.into_inner().target_id;
        match self.node.replica.move_leader(target, timeout).await {
            // etcd answers a bare MoveLeaderResponse (no header).
            Ok(()) => Ok(Response::new(pb::MoveLeaderResponse { header: None })),
            Err(MoveError::NotLeader) => Err(rpctypes::NOT_LEADER.status()),
            Err(MoveError::BadTransferee) => Err(rpctypes::BAD_LEADER_TRANSFEREE.status()),
            // Not one of etcd's gRPC errors: it reaches the client as Unknown, with its text.
            Err(MoveError::TimedOut) => Err(Status::unknown(
                "etcdserver: request timed out, leader transfer took too long",
            )),
            Err(MoveError::Stopped) => Err(rpctypes::STOPPED.status()),
        }
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.node.require_admin(&request)?;
        Err(Status::unimplemented(
            "tandem: cluster downgrade is not supported",
        ))
    }
}

/// etcd 3.5's maintenance service returns the admin check's error as it is, not as a gRPC
/// error: clients see Unknown and `auth: permission denied` (Defragment, Snapshot, Hash,
/// HashKV).
fn require_admin_unconverted<T>(node: &Node, req: &Request<T>) -> Result<(), Status> {
    let caller = node.caller(req)?;
    node.store
        .auth()
        .check_admin(&caller)
        .map_err(|e| Status::unknown(format!("auth: {e}")))
}

/// The deadline a gRPC client sent with its request (the `grpc-timeout` header: digits and a
/// unit, H M S m u n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_reads_each_unit_and_refuses_garbage() {
        let table = [
            ("5S", Some(Duration::from_secs(5))),
            ("4999982u", Some(Duration::from_micros(4_999_982))),
            ("100m", Some(Duration::from_millis(100))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("7n", Some(Duration::from_nanos(7))),
            ("5", None),
            ("S", None),
            ("5x", None),
            ("", None),
        ];
        for (header, want) in table {
            let mut m = tonic::metadata::MetadataMap::new();
            if !header.is_empty() {
                m.insert("grpc-timeout", header.parse().unwrap());
            }
            assert_eq!(grpc_timeout(&m), want, "{header:?}");
        }
    }
}
