//! tandem's robustness suite (issue 10), after etcd's `tests/robustness`: a workload of the
//! apiserver's request shapes runs against real processes (tandem, and etcd 3.5.1 for
//! comparison) while faults are injected; every operation and watch response is recorded
//! (`history`), and the history is checked against the revision history the cluster committed
//! (`check`): acknowledged writes lost, linearizability (with I6, monotonic revisions per
//! client, and I5, equal HashKV across members), the watch guarantees and lease safety.
//! `scenario` runs one cluster shape under one fault; `workload` is the clients.
//!
//! Mutants (deliberately broken tandem builds, the server's `mutants` feature) prove that the
//! checks catch what they claim: `tests/mutants.rs`.

pub mod check;
pub mod history;
pub mod powerfs;
pub mod scenario;
pub mod workload;
