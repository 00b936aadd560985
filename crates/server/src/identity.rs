//! This member's identity, kept in its data directory (`member/identity`): the member id and
//! cluster id it was created with. tandem derives both from the peer URLs and the cluster
//! token, so a data dir restarted with other URLs used to come up as a different member that
//! its own raft state did not contain, and every request hung. As etcd keeps its ids in its
//! WAL, the ids stored here win over the derived ones on every later start.
//!
//! Format (docs/durable-formats.md): JSON `{"version":1,"member_id":"<hex>","cluster_id":
//! "<hex>"}`, written to `identity.tmp`, fsynced, renamed, directory fsynced.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Config;

const FILE: &str = "identity";
const VERSION: u64 = 1;

/// Adopts the ids stored in `config.data_dir`, or stores the configured ones (a new data dir,
/// or one from a version of tandem that kept none).
pub fn settle(mut config: Config) -> Result<Config> {
    let dir = config.data_dir.join("member");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let (member_id, cluster_id, witness) = parse(&bytes)
                .with_context(|| format!("refusing to start: {} is damaged", path.display()))?;
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
            if witness && cluster_id != config.cluster_id {
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
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            store(&dir, config.member_id, config.cluster_id, config.is_witness)?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    Ok(config)
}

/// The stored member id, cluster id, and whether the member is the witness (a file without a
/// role is a data member's: the witness came later).
fn parse(bytes: &[u8]) -> Result<(u64, u64, bool)> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    if v["version"].as_u64() != Some(VERSION) {
        bail!("identity format {} is not supported", v["version"]);
    }
    let id = |field: &str| -> Result<u64> {
        let s = v[field].as_str().with_context(|| format!("no {field}"))?;
        u64::from_str_radix(s, 16).with_context(|| format!("{field} {s:?}"))
    };
    let witness = match v["role"].as_str() {
        None | Some("data") => false,
        Some("witness") => true,
        Some(other) => bail!("unknown role {other:?}"),
    };
    Ok((id("member_id")?, id("cluster_id")?, witness))
}

fn store(dir: &Path, member_id: u64, cluster_id: u64, witness: bool) -> Result<()> {
    let body = serde_json::json!({
        "version": VERSION,
        "member_id": format!("{member_id:x}"),
        "cluster_id": format!("{cluster_id:x}"),
        "role": if witness { "witness" } else { "data" },
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
        store(dir.path(), 0xabc1, 0x1234, true).expect("store");
        let bytes = std::fs::read(dir.path().join(FILE)).expect("read");
        assert_eq!(parse(&bytes).expect("parse"), (0xabc1, 0x1234, true));
        // Written before the witness existed: a data member.
        let old = br#"{"version":1,"member_id":"a","cluster_id":"b"}"#;
        assert_eq!(parse(old).expect("parse"), (0xa, 0xb, false));
        assert!(parse(b"{\"version\":1,\"member_id\":\"zz\"}").is_err());
        assert!(parse(b"{\"version\":2,\"member_id\":\"1\",\"cluster_id\":\"2\"}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
