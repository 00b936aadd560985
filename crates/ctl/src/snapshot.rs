//! `tandem-ctl snapshot restore FILE`: builds a new member's data dir from a snapshot — one
//! `etcdctl snapshot save` took from etcd or from tandem (both are etcd's bbolt file) — with
//! etcdutl's flags, names, defaults and checks, so scripts written for `etcdutl snapshot restore`
//! run unchanged. Every stored change (revisions and history since the compaction), lease,
//! user and role is kept; the member starts as a new cluster from the flags given, as etcd's
//! restored members do. This is an offline tool: it works on files, never on a running member.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Where a member keeps its keyspace inside its data dir (docs/durable-formats.md).
const KEYSPACE_FILE: &str = "member/tandem.db";
/// The length of the token signing key a restore with authentication on draws.
const TOKEN_KEY_BYTES: usize = 32;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Restore a member's data dir from a snapshot file (etcdutl snapshot restore's flags).
    Restore(RestoreArgs),
}

#[derive(Parser, Debug)]
pub struct RestoreArgs {
    /// The snapshot file (`etcdctl snapshot save` from etcd or tandem).
    pub file: PathBuf,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Path to the WAL directory (tandem keeps its log in the data dir: must be unset).
    #[arg(long = "wal-dir")]
    pub wal_dir: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(
        long = "initial-cluster",
        default_value = "default=http://localhost:2380"
    )]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap.
    #[arg(long = "initial-cluster-token", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long = "initial-advertise-peer-urls",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory).
    #[arg(long = "skip-hash-check")]
    pub skip_hash_check: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Restore(args) => restore(&args),
    }
}

/// The peer URLs `--initial-cluster` gives `name`, as etcd reads the flag.
fn urls_of(initial_cluster: &str, name: &str) -> Result<Vec<String>> {
    let mut urls = Vec::new();
    for entry in initial_cluster.split(',').filter(|e| !e.is_empty()) {
        let (n, url) = entry
            .split_once('=')
            .with_context(|| format!("invalid --initial-cluster entry {entry:?}"))?;
        if n == name {
            urls.push(url.to_string());
        }
    }
    if urls.is_empty() {
        bail!("couldn't find local name {name:?} in the initial cluster configuration");
    }
    urls.sort();
    Ok(urls)
}

fn restore(args: &RestoreArgs) -> Result<()> {
    if args.wal_dir.is_some() {
        bail!("--wal-dir is not supported: tandem keeps its log in the data dir");
    }
    let mut advertised: Vec<String> = args
        .initial_advertise_peer_urls
        .split(',')
        .map(str::to_string)
        .collect();
    advertised.sort();
    let configured = urls_of(&args.initial_cluster, &args.name)?;
    if configured != advertised {
        bail!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            args.name,
            configured.join(","),
            args.initial_advertise_peer_urls
        );
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", args.name)));
    if data_dir.exists() {
        bail!("data-dir {:?} exists", data_dir.display().to_string());
    }
    eprintln!(
        "restoring snapshot {} to data dir {} (member {})",
        args.file.display(),
        data_dir.display(),
        args.name
    );
    // Built beside its final place and renamed: a failed restore leaves no half data dir.
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let work = tempfile::Builder::new()
        .prefix(".tandem-restore-")
        .tempdir_in(parent)?;
    let db = work.path().join("snapshot.db");
    etcd_db::restore::verify_and_copy(&args.file, &db, args.skip_hash_check)?;
    let staged = work.path().join("data");
    let keyspace = staged.join(KEYSPACE_FILE);
    std::fs::create_dir_all(keyspace.parent().context("keyspace dir")?)?;
    let store = mvcc::Store::open(&keyspace)?;
    let mut token_key = vec![0u8; TOKEN_KEY_BYTES];
    rand::Rng::fill(&mut rand::thread_rng(), token_key.as_mut_slice());
    let restored = etcd_db::restore::import(&db, &store, token_key)?;
    drop(store);
    std::fs::rename(&staged, &data_dir)
        .with_context(|| format!("moving the restored data dir to {}", data_dir.display()))?;
    sync_dir(parent)?;
    eprintln!(
        "restored snapshot: {} records, {} leases, compacted at revision {}; start the member \
         with --name {} --initial-cluster {} --initial-cluster-token {}",
        restored.records,
        restored.leases,
        restored.compacted,
        args.name,
        args.initial_cluster,
        args.initial_cluster_token
    );
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
