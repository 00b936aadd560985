//! `tandem`: starts a node from etcd's flags and environment variables and runs it until SIGTERM
//! or SIGINT, then shuts down gracefully.

use anyhow::Context;

/// mimalloc instead of glibc's allocator: under 1,000 concurrent clients glibc's malloc, free
/// and arena locks took about 30% of the CPU (perf, 2026-11-22); see docs/decisions/0004.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use server::config::Flags;
use tracing_subscriber::EnvFilter;

fn init_logging(level: &str, outputs: &str) -> anyhow::Result<()> {
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => {
            anyhow::bail!("--log-level={other}: must be debug, info, warn, error, panic or fatal")
        }
    };
    let filter = EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},openraft=warn")));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false);
    match outputs {
        "default" | "stderr" => builder.with_writer(std::io::stderr).init(),
        "stdout" => builder.with_writer(std::io::stdout).init(),
        other => {
            anyhow::bail!("--log-outputs={other}: only default, stderr and stdout are supported")
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
    }
}

/// mimalloc's option that keeps it from asking for transparent huge pages.
const NO_THP: &str = "MIMALLOC_ALLOW_THP";

/// Replaces this process with a new run of tandem with the same arguments (and `env` set);
/// returns only if that fails.
fn exec_self(env: Option<(&str, &str)>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    if let Some((k, v)) = env {
        command.env(k, v);
    }
    Err(command.exec().into())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("unsafe-recover") {
        use clap::Parser;
        let args = server::recover::Args::parse_from(std::env::args().skip(1));
        return server::recover::run(&args, &mut std::io::stdin().lock(), &mut std::io::stdout());
    }
    let flags = Flags::parse_etcd_style();
    init_logging(&flags.log_level, &flags.log_outputs)?;
    let config = flags.resolve()?;
    // No transparent huge pages: mimalloc asks for them on its arena when it starts (before
    // main), so every touched 2 MiB of it would be a whole huge page — on the witness, which must
    // stay small (issue 11: RSS ≤ 20 MiB), and on a data member, 23–29 MiB of its ~100 MiB after
    // 200k puts for no measured throughput (docs/decisions/0014-keyspace-page-cache.md). Only
    // mimalloc's MIMALLOC_ALLOW_THP=0, read at start-up, stops that: tandem starts itself again
    // with it, before it has opened anything (an operator who sets the variable keeps theirs).
    if std::env::var_os(NO_THP).is_none() {
        return exec_self(Some((NO_THP, "0"))).context("restarting without transparent huge pages");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.is_witness {
        // The witness does little (votes, ids, heartbeats): one worker thread.
        runtime.worker_threads(1);
    }
    let runtime = runtime.enable_all().build()?;
    let data_dir = config.data_dir.clone();
    runtime.block_on(async move {
        let clients = server::bind(&config.client_urls).await?;
        let peers = server::bind(&config.peer_urls).await?;
        server::run(config, clients, peers, shutdown_signal())
            .await
            .context("tandem stopped with an error")
    })?;
    if server::restart_after_fence(&data_dir) {
        // The lost peer is fenced: this member starts again, in the same process (same pid for
        // its supervisor), and takes the one-voter membership before raft opens its log.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        return exec_self(None).context("starting again to continue alone after fencing the peer");
    }
    Ok(())
}
