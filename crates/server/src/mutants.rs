//! The robustness suite's deliberately broken variants: see `replication::mutants`, where the
//! switch and the list live (the server's `mutants` feature enables that crate's).

pub use replication::mutants::on;
