//! `tandem-ctl`: the operator CLI. `bench` is a load generator modelled on etcd's
//! `tools/benchmark`, so tandem and etcd are measured by the same tool; `status` prints the
//! cluster's state, one line a member (the witness included); `member add-witness` adds a
//! witness to a running cluster. It speaks only the etcd v3 API
//! (`etcd-api`) and the members' HTTP endpoints; `snapshot restore`, an offline tool like
//! etcdutl's, works on files (`etcd-db`, `mvcc`) and never on a running member.

mod bench;
mod member;
mod snapshot;
mod status;
mod tls;

use clap::Parser;

/// mimalloc, as the server has: with glibc's allocator, malloc and free took about a tenth of
/// `bench`'s CPU at 1,000 clients (perf, 2026-12-06), CPU the servers under test on the same
/// machine then lack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "tandem-ctl",
    version,
    about = "Operator tools for tandem (and any etcd v3 endpoint)."
)]
enum Cli {
    /// Measure a server: throughput, latency percentiles, errors by code.
    Bench(bench::Args),
    /// The cluster's state, one line a member: role, leader, term, index, lag.
    Status(status::Args),
    /// Membership changes etcdctl has no command for (adding a witness).
    #[command(subcommand)]
    Member(member::Command),
    /// Snapshot files (restore, as etcdutl's).
    #[command(subcommand)]
    Snapshot(snapshot::Command),
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error worth a
/// panic, as `println!` would make it.
pub(crate) fn print_out(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match Cli::parse() {
        Cli::Bench(args) => runtime.block_on(bench::run(args)),
        Cli::Status(args) => runtime.block_on(status::run(args)),
        Cli::Member(command) => runtime.block_on(member::run(command)),
        Cli::Snapshot(command) => snapshot::run(command),
    }
}
