//! `tandem unsafe-recover`: the way out of S7 (the witness lost, then the data peer, and no
//! fence to prove the peer gone). Run on the last data member, stopped, it turns that member
//! into a one-member cluster at its next start, keeping every entry of its log (unlike etcd's
//! `--force-new-cluster`, which drops those above the commit index). It is unsafe because the
//! others may have committed entries this member never received (they are lost) and may still
//! be running: the operator must be sure they are gone for good. So it first prints what it
//! knows and asks for confirmation (`--yes` for scripts). The change itself is the fence
//! marker (`raft::fence`): applied when the member starts.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use raft::fence;
use replication::{Replica, TypeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "tandem unsafe-recover",
    about = "Makes a stopped member the only member of its cluster at its next start, keeping \
             every entry of its log. Unsafe: entries the lost members committed without this \
             one are lost, and they must never run again with their old data dirs."
)]
pub struct Args {
    /// The stopped member's data dir (its --data-dir).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Prints the plan to `out`, asks on `input` unless `--yes`, and writes the marker.
pub fn run(args: &Args, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<()> {
    let (me, cluster, witness) =
        crate::identity::stored(&args.data_dir).context("this is not a tandem data dir")?;
    if witness {
        bail!(
            "{} is the witness's data dir: recover a data member",
            args.data_dir.display()
        );
    }
    let member_dir = args.data_dir.join("member");
    // The keyspace is locked while the member runs: recovery needs it stopped.
    let store = Replica::open_store(&args.data_dir)
        .context("opening the keyspace (is the member still running? stop it first)")?;
    let applied = replication::stored_applied(&store)?;
    drop(store);
    let plan = fence::recovery_plan::<TypeConfig>(
        &member_dir.join("wal"),
        applied.membership.membership(),
        applied.last_applied,
    )?;
    let Some(sole) = fence::sole_membership(&plan.membership, me) else {
        bail!("member {me:x} is not in the membership its log holds: it was removed");
    };
    let others: Vec<String> = plan
        .membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| format!("{} ({id:x})", n.name))
        .collect();
    writeln!(
        out,
        "member {me:x} of cluster {cluster:x} ({})",
        args.data_dir.display()
    )?;
    writeln!(
        out,
        "its log ends at index {}; it knows entries up to index {} to be committed (the hint is \
         written lazily: more may be)",
        plan.last_index(),
        plan.committed_index()
    )?;
    writeln!(
        out,
        "- {} entries above index {} are kept and become committed (none is dropped; those not \
         committed before were never acknowledged)",
        plan.uncommitted(),
        plan.committed_index()
    )?;
    writeln!(
        out,
        "- entries the other members committed above index {} without this member are LOST \
         (how many cannot be known here)",
        plan.committed_index()
    )?;
    writeln!(
        out,
        "- removed from the cluster: {}; they must never start again on their old data dirs \
         (add them back with etcdctl member add and empty data dirs)",
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    )?;
    if !args.yes {
        write!(out, "Type yes to make this member a one-member cluster: ")?;
        out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("not confirmed: nothing changed");
        }
    }
    fence::write_marker(&member_dir, &sole)?;
    writeln!(
        out,
        "done: start the member as before; it takes the one-member membership at its next start"
    )?;
    Ok(())
}
