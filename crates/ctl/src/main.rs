//! `tandem-ctl`: the operator CLI. Its first command is `bench`, a load generator modelled on
//! etcd's `tools/benchmark`, so tandem and etcd are measured by the same tool. It speaks only the
//! etcd v3 API (`etcd-api`) and works against any etcd-compatible endpoint.

mod bench;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "tandem-ctl",
    version,
    about = "Operator tools for tandem (and any etcd v3 endpoint)."
)]
enum Cli {
    /// Measure a server: throughput, latency percentiles, errors by code.
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match Cli::parse() {
        Cli::Bench(args) => runtime.block_on(bench::run(args)),
    }
}
