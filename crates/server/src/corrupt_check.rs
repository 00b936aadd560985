//! etcd's corruption checks across members: `--experimental-initial-corrupt-check` compares
//! this member's HashKV with every reachable peer's before it serves, and refuses to start on
//! a difference; `--experimental-corrupt-check-time` makes the leader compare its HashKV with
//! every follower's periodically and raise etcd's CORRUPT alarm for a follower that differs.
//! Peers are asked over the client API (their published client URLs), at this member's
//! revision; a peer that is unreachable, behind or compacted past it is skipped, as etcd skips
//! it.

use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::rpctypes;
use mvcc::{Alarm, AlarmType, Command};

use crate::node::Node;

/// How long one peer may take to answer a HashKV request.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// One peer's answer at the revision asked: its hash and compacted revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHash {
    pub member_id: u64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// The peers whose keyspace differs from ours: same revision and compaction, other hash.
pub fn mismatched(ours: (u32, i64), peers: &[PeerHash]) -> Vec<u64> {
    peers
        .iter()
        .filter(|p| p.compact_revision == ours.1 && p.hash != ours.0)
        .map(|p| p.member_id)
        .collect()
}

/// Asks every other member with a client URL for its HashKV at `revision`.
async fn peer_hashes(node: &Node, revision: i64) -> Vec<PeerHash> {
    let mut out = Vec::new();
    for (id, member, _) in node.replica.members() {
        if id == node.config.member_id {
            continue;
        }
        let Some(url) = member.client_urls.first() else {
            continue;
        };
        let proof = crate::authn::member_proof(&node.store.auth());
        match tokio::time::timeout(PEER_TIMEOUT, peer_hash(url, revision, proof)).await {
            Ok(Ok((hash, compact_revision))) => out.push(PeerHash {
                member_id: id,
                hash,
                compact_revision,
            }),
            // A follower not yet at this revision is skipped quietly: it is not a fault.
            Ok(Err(e)) if is_behind(&e) => {
                tracing::debug!(peer = %format!("{id:x}"), revision, "peer behind; its hash is compared next time")
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %format!("{id:x}"), revision, error = %e, "cannot fetch the hash of a peer")
            }
            Err(_) => {
                tracing::warn!(peer = %format!("{id:x}"), revision, "cannot fetch the hash of a peer: timed out")
            }
        }
    }
    out
}

/// Whether a peer's HashKV refusal says it has not reached the revision yet.
fn is_behind(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.message() == rpctypes::FUTURE_REV.message)
}

/// How this member dials its peers' `https://` client URLs: with its client-side certificate
/// (set once at start, `crate::ServingTls::start`).
pub(crate) static CLIENT_DIALER: std::sync::OnceLock<Arc<tls::ClientTls>> =
    std::sync::OnceLock::new();

/// A peer's HashKV; with authentication enabled the request carries this member's proof of
/// membership (`authn::member_proof`) in place of an admin's token.
async fn peer_hash(url: &str, revision: i64, proof: Option<String>) -> anyhow::Result<(u32, i64)> {
    let channel = raft::dial::channel_over(url, CLIENT_DIALER.get().cloned())
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut client = pb::maintenance_client::MaintenanceClient::new(channel);
    let mut req = tonic::Request::new(pb::HashKvRequest { revision });
    if let Some(proof) = proof.and_then(|p| p.parse().ok()) {
        req.metadata_mut()
            .insert(crate::authn::MEMBER_PROOF_METADATA, proof);
    }
    let r = client.hash_kv(req).await?.into_inner();
    Ok((r.hash, r.compact_revision))
}

/// The local hash at the current revision: (revision, (hash, compacted revision)).
fn local_hash(node: &Node) -> anyhow::Result<(i64, (u32, i64))> {
    let (hash, compact, revision) = node.store.hash_kv(0)?;
    Ok((revision, (hash, compact)))
}

/// `--experimental-initial-corrupt-check`: refuses to start when a peer's keyspace at this
/// member's revision differs.
pub async fn initial_check(node: &Node) -> anyhow::Result<()> {
    let (revision, ours) = local_hash(node)?;
    let peers = peer_hashes(node, revision).await;
    let bad = mismatched(ours, &peers);
    if !bad.is_empty() {
        let ids: Vec<String> = bad.iter().map(|id| format!("{id:x}")).collect();
        anyhow::bail!(
            "{:x} found data inconsistency with peers (HashKV at revision {revision} differs \
             from member(s) {}); refusing to start",
            node.config.member_id,
            ids.join(", ")
        );
    }
    tracing::info!(
        revision,
        peers = peers.len(),
        "initial corruption check passed"
    );
    Ok(())
}

/// `--experimental-corrupt-check-time`: on the leader, compares hashes every `interval` and
/// raises CORRUPT for each follower that differs.
pub async fn run_periodic(node: Arc<Node>, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tick.tick().await;
        if node.leader() != Some(node.config.member_id) {
            continue;
        }
        let (revision, ours) = match local_hash(&node) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "corruption check: cannot hash the keyspace");
                continue;
            }
        };
        let raised = node.alarms();
        for id in mismatched(ours, &peer_hashes(&node, revision).await) {
            let alarm = Alarm {
                member_id: id,
                alarm: AlarmType::Corrupt,
            };
            if raised.contains(&alarm) {
                continue;
            }
            tracing::error!(peer = %format!("{id:x}"), revision, "found data inconsistency with a peer; raising CORRUPT");
            if let Err(e) = node.propose(Command::AlarmActivate(alarm), 0).await {
                tracing::warn!(error = %e, "corruption check: cannot raise CORRUPT");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_hash_at_the_same_compaction_is_a_mismatch() {
        let p = |member_id, hash, compact_revision| PeerHash {
            member_id,
            hash,
            compact_revision,
        };
        let peers = [p(1, 7, -1), p(2, 8, -1), p(3, 9, 5)];
        assert_eq!(mismatched((7, -1), &peers), vec![2]);
        assert_eq!(mismatched((9, 5), &peers), Vec::<u64>::new());
    }

    #[test]
    fn a_peer_behind_is_told_from_a_failing_one() {
        assert!(is_behind(&rpctypes::FUTURE_REV.status().into()));
        assert!(!is_behind(&rpctypes::COMPACTED.status().into()));
        assert!(!is_behind(&anyhow::anyhow!("connection refused")));
    }
}
