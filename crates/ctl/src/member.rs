//! `tandem-ctl member add-witness NAME --peer-urls URL`: adds a witness to a running cluster
//! (replacing a lost one: remove it first with `etcdctl member remove`). It is etcd's MemberAdd
//! with tandem's metadata asking for a witness, and it prints what to start the new witness
//! with, as `etcdctl member add` does for a data member, plus `TANDEM_INITIAL_CLUSTER_WITNESS`.

use anyhow::Context;
use etcd_api::etcdserverpb::cluster_client::ClusterClient;
use etcd_api::etcdserverpb::MemberAddRequest;

use crate::status::channel;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add a witness (the cluster must have none): prints the new member's environment.
    AddWitness(AddWitness),
}

#[derive(clap::Args, Debug)]
pub struct AddWitness {
    /// The new witness's --name.
    pub name: String,
    /// The new witness's peer URLs, comma-separated.
    #[arg(long)]
    pub peer_urls: String,
    /// Comma-separated host:port (or URL) endpoints of data members.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::AddWitness(args) => add_witness(args).await,
    }
}

async fn add_witness(args: AddWitness) -> anyhow::Result<()> {
    let peer_urls: Vec<String> = args
        .peer_urls
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let mut last_error = None;
    for endpoint in args.endpoints.split(',').map(str::trim) {
        let mut client = match channel(endpoint, &args.tls).await {
            Ok(c) => ClusterClient::new(c),
            Err(e) => {
                last_error = Some(e.context(format!("connecting to {endpoint}")));
                continue;
            }
        };
        let mut request = tonic::Request::new(MemberAddRequest {
            peer_ur_ls: peer_urls.clone(),
            is_learner: false,
        });
        request.metadata_mut().insert(
            etcd_api::MEMBER_ROLE_METADATA,
            etcd_api::WITNESS_ROLE.parse().expect("ascii"),
        );
        let response = match client.member_add(request).await {
            Ok(r) => r.into_inner(),
            // The cluster's answer (a refusal) is final; only an unreachable member is skipped.
            Err(s) if s.code() != tonic::Code::Unavailable => {
                anyhow::bail!("{}", s.message())
            }
            Err(s) => {
                last_error = Some(anyhow::anyhow!("{endpoint}: {}", s.message()));
                continue;
            }
        };
        let id = response
            .member
            .as_ref()
            .context("no member in the answer")?
            .id;
        let cluster = response.header.as_ref().map_or(0, |h| h.cluster_id);
        println!("Member {id:16x} added to cluster {cluster:16x} as the witness\n");
        print!(
            "{}",
            environment(&args.name, id, &response.members, &peer_urls)
        );
        return Ok(());
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no endpoint given")))
}

/// What the new witness starts with (as `etcdctl member add` prints it for a data member).
fn environment(
    name: &str,
    id: u64,
    members: &[etcd_api::etcdserverpb::Member],
    peer_urls: &[String],
) -> String {
    let cluster: Vec<String> = members
        .iter()
        .flat_map(|m| {
            let n = if m.id == id { name } else { m.name.as_str() };
            m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
        })
        .collect();
    format!(
        "ETCD_NAME=\"{name}\"\nETCD_INITIAL_CLUSTER=\"{}\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\nTANDEM_INITIAL_CLUSTER_WITNESS=\"{name}\"\n",
        cluster.join(","),
        peer_urls.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::etcdserverpb::Member;

    #[test]
    fn the_environment_names_the_new_witness_and_every_peer_url() {
        let members = vec![
            Member {
                id: 1,
                name: "node-a".into(),
                peer_ur_ls: vec!["http://a:2380".into()],
                ..Default::default()
            },
            Member {
                id: 9,
                name: String::new(),
                peer_ur_ls: vec!["http://w2:2380".into()],
                ..Default::default()
            },
        ];
        assert_eq!(
            environment("w2", 9, &members, &["http://w2:2380".into()]),
            "ETCD_NAME=\"w2\"\nETCD_INITIAL_CLUSTER=\"node-a=http://a:2380,w2=http://w2:2380\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://w2:2380\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\nTANDEM_INITIAL_CLUSTER_WITNESS=\"w2\"\n"
        );
    }
}
