//! The decisions a member takes about leadership, each pure (what it sees in, what to do out)
//! and tested without tokio: leader loss, leadership hand-off from a witness; witness
//! engagement is in `crate::engagement`, pre-votes in `crate::prevote`.

pub mod fence;
pub mod handoff;
pub mod leader_loss;
pub mod membership;
pub mod read_quorum;
pub mod read_rounds;
pub mod slow_disk;
pub mod transfer;

/// openraft's election timeouts `[min, max)` in ms for a member of a cluster with a witness,
/// given etcd's election timeout `e` and heartbeat interval. openraft waits `max` (its leader
/// lease, also how long a member refuses candidates after its leader's last message) plus a
/// random timeout in `[min, max)` before electing: [0.4e, 0.5e) lets a data member stand 0.9–1
/// election timeout after its leader's last heartbeat (the other data member is its only rival;
/// the witness stands only after two election timeouts without a leader), so writes resume within 1.5 s of a
/// leader's crash, and keeps the witness's lease from holding up that election.
pub fn timeouts_beside_witness(e: u64, heartbeat: u64) -> (u64, u64) {
    let floor = heartbeat + 1;
    let max = (e / 2).max(floor + 1);
    ((e * 2 / 5).max(floor).min(max - 1), max)
}
