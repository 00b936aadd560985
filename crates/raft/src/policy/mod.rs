//! The decisions a member takes about leadership, each pure (what it sees in, what to do out)
//! and tested without tokio: leader loss, leadership hand-off from a witness, when the witness
//! may stand for election; witness engagement is in `crate::engagement`.

pub mod candidacy;
pub mod handoff;
pub mod leader_loss;
