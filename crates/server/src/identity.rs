//! This member's identity, kept in its data directory (`member/identity`): the member id and
//! cluster id it was created with. tandem derives both from the peer URLs and the cluster
//! token, so a data dir restarted with other URLs used to come up as a different member that
//! its own raft state did not contain, and every request hung. As etcd keeps its ids in its
//! WAL, the ids stored here win over the derived ones on every later start.
//!
//! It also keeps the member's role (a data member or the witness) and the incarnation of the data
//! dir: a random id drawn when the data dir is created, which peers check so that a member
//! whose data dir was wiped cannot rejoin under its old id (W5, `raft::incarnation`).
//!
//! Format (docs/durable-formats.md): JSON `{"version":1,"member_id":"<hex>","cluster_id":
//! "<hex>","role":"data"|"witness","incarnation":"<hex>"}` (`role` and `incarnation` came with
//! the witness; a file without them is a data member's), written to `identity.tmp`, fsynced,
//! renamed, directory fsynced.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Config;

const FILE: &str = "identity";

/// Refuses a data dir that etcd made (`member/snap/db`, `member/wal/*.wal`): tandem reads none
/// of etcd's files, and starting beside them would serve an empty keyspace as if it were a new
/// cluster, the user's data silently out of sight.
fn refuse_etcd_files(data_dir: &Path) -> Result<()> {
    let member = data_dir.join("member");
    let db = member.join("snap").join("db");
    let wal_files = std::fs::read_dir(member.join("wal"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0);
    if db.exists() || wal_files > 0 {
        bail!(
            "refusing to start: the data dir {dir} holds an etcd data directory ({what}), which \
             tandem does not read in place; starting on it would serve an empty keyspace beside \
             etcd's data. To migrate it, take a snapshot (`etcdctl snapshot save FILE` from the \
             running etcd, or a copy of {dir}/member/snap/db with --skip-hash-check), then run \
             `tandem-ctl snapshot restore FILE --data-dir NEW_DIR --name NAME --initial-cluster \
             ...` and start tandem on NEW_DIR (docs/migration.md)",
            dir = data_dir.display(),
            what = if db.exists() {
                "member/snap/db"
            } else {
                "member/wal/*.wal"
            }
        );
    }
    Ok(())
}
const VERSION: u64 = 1;

/// Adopts the ids and incarnation stored in `config.data_dir`; for a new data dir, draws an
/// incarnation and returns `true`: nothing is stored until [`store_new`] (after the peers were
/// asked whether they know this member by another incarnation). A data dir of an older tandem
/// that kept no identity or no incarnation gets them now.
pub fn settle(mut config: Config) -> Result<(Config, bool)> {
    refuse_etcd_files(&config.data_dir)?;
    let dir = config.data_dir.join("member");
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let (member_id, cluster_id, witness) =
                parse(&bytes).with_context(|| format!("refusing to start: {}", path.display()))?;
            let role = |w: bool| if w { "the witness" } else { "a data member" };
            if witness != config.is_witness {
                bail!(
                    "refusing to start: the data dir {} belongs to {} (member {member_id:x} of \
                     cluster {cluster_id:x}), but --initial-cluster-witness makes this member \
                     {}; a member's role changes only through a membership change",
                    config.data_dir.display(),
                    role(witness),
                    role(config.is_witness),
                );
            }
            if witness && config.bootstrap && cluster_id != config.cluster_id {
                bail!(
                    "refusing to start: the witness data dir {} belongs to cluster \
                     {cluster_id:x} (member {member_id:x}), not to the cluster these flags \
                     describe ({:x}); a witness is never reused for another cluster: give it an \
                     empty data dir and add it to this cluster by a membership change",
                    config.data_dir.display(),
                    config.cluster_id,
                );
            }
            if member_id != config.member_id || cluster_id != config.cluster_id {
                tracing::warn!(
                    stored_member_id = %format!("{member_id:x}"),
                    derived_member_id = %format!("{:x}", config.member_id),
                    "this data dir's member was created with other peer URLs or cluster \
                     token; it keeps its member id, as etcd does"
                );
                if let Some(mut me) = config.initial_members.remove(&config.member_id) {
                    me.peer_urls = config.self_node.peer_urls.clone();
                    config.initial_members.insert(member_id, me);
                }
                config.member_id = member_id;
                config.cluster_id = cluster_id;
            }
            match incarnation(&bytes)? {
                Some(i) => config.incarnation = i,
                None => {
                    config.incarnation = draw_incarnation();
                    store(&dir, &config)?;
                }
            }
            Ok((config, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            config.incarnation = draw_incarnation();
            // A data dir with a raft log but no identity is an older tandem's: not new.
            let fresh = !dir.join("wal").exists();
            if !fresh {
                store(&dir, &config)?;
            }
            Ok((config, fresh))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Stores the identity of a new data dir (see [`settle`]).
pub fn store_new(config: &Config) -> Result<()> {
    let dir = config.data_dir.join("member");
    std::fs::create_dir_all(&dir)?;
    store(&dir, config)
}

fn draw_incarnation() -> u64 {
    // Never 0: 0 means "no identity" on the wire.
    rand::random::<u64>().max(1)
}

/// The stored incarnation, if the file has one (files before the witness do not).
fn incarnation(bytes: &[u8]) -> Result<Option<u64>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    v["incarnation"]
        .as_str()
        .map(|s| u64::from_str_radix(s, 16).with_context(|| format!("incarnation {s:?}")))
        .transpose()
}

/// The member id, cluster id and role stored in `data_dir` (for tools that work on a stopped
/// member's data dir).
pub fn stored(data_dir: &Path) -> Result<(u64, u64, bool)> {
    let path = data_dir.join("member").join(FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

/// The stored member id, cluster id, and whether the member is the witness (a file without a
/// role is a data member's: the witness came later).
fn parse(bytes: &[u8]) -> Result<(u64, u64, bool)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("damaged")?;
    match v["version"].as_u64() {
        Some(VERSION) => {}
        Some(newer) if newer > VERSION => bail!(
            "identity format {newer}, which this version of tandem does not know (it reads \
             format {VERSION}); a newer tandem wrote it. Start the tandem release that wrote it, \
             or move the data: with that release, take a snapshot (etcdctl snapshot save FILE), \
             then tandem-ctl snapshot restore FILE --data-dir NEW_DIR ... and start this tandem \
             on NEW_DIR (docs/migration.md)"
        ),
        _ => bail!("damaged: identity format {}", v["version"]),
    }
    let id = |field: &str| -> Result<u64> {
        let s = v[field]
            .as_str()
            .with_context(|| format!("damaged: no {field}"))?;
        u64::from_str_radix(s, 16).with_context(|| format!("damaged: {field} {s:?}"))
    };
    let witness = match v["role"].as_str() {
        None | Some("data") => false,
        Some("witness") => true,
        Some(other) => bail!("damaged: unknown role {other:?}"),
    };
    Ok((id("member_id")?, id("cluster_id")?, witness))
}

fn store(dir: &Path, config: &Config) -> Result<()> {
    let body = serde_json::json!({
        "version": VERSION,
        "member_id": format!("{:x}", config.member_id),
        "cluster_id": format!("{:x}", config.cluster_id),
        "role": if config.is_witness { "witness" } else { "data" },
        "incarnation": format!("{:x}", config.incarnation),
    });
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, body.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let _ = dir;
        let bytes = br#"{"version":1,"member_id":"abc1","cluster_id":"1234","role":"witness","incarnation":"7f"}"#;
        assert_eq!(parse(bytes).expect("parse"), (0xabc1, 0x1234, true));
        assert_eq!(incarnation(bytes).expect("incarnation"), Some(0x7f));
        // Written before the witness existed: a data member.
        let old = br#"{"version":1,"member_id":"a","cluster_id":"b"}"#;
        assert_eq!(parse(old).expect("parse"), (0xa, 0xb, false));
        assert!(parse(b"{\"version\":1,\"member_id\":\"zz\"}").is_err());
        assert!(parse(b"{\"version\":2,\"member_id\":\"1\",\"cluster_id\":\"2\"}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
