//! `tandem-ctl status`: the cluster's state, one line a member — its role (data member, witness,
//! learner), whether it leads, its term and raft index, and on the leader how far each follower
//! lags and whether the witness is engaged. Data members answer through etcd's Maintenance API
//! and their `/metrics`; the witness, which serves no client, through `/metrics` on its peer URL.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use etcd_api::etcdserverpb::cluster_client::ClusterClient;
use etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use etcd_api::etcdserverpb::{Member, MemberListRequest, StatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

use crate::tls::TlsArgs;

/// How long any one member may take to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);
/// The most bytes of a `/metrics` answer read.
const METRICS_BYTES_MAX: u64 = 4 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Comma-separated host:port (or URL) endpoints of any data members.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub(crate) async fn channel(endpoint: &str, tls: &TlsArgs) -> anyhow::Result<Channel> {
    let mut e = Endpoint::from_shared(tls.url(endpoint))?
        .connect_timeout(MEMBER_TIMEOUT)
        .timeout(MEMBER_TIMEOUT);
    if let Some(config) = tls.grpc()? {
        e = e.tls_config(config)?;
    }
    Ok(e.connect().await?)
}

/// Writes an HTTP/1.0 GET of `path` on `stream` and reads the answer (at most
/// `METRICS_BYTES_MAX` bytes).
async fn get<S>(mut stream: S, host: &str, path: &str) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream
        .take(METRICS_BYTES_MAX)
        .read_to_string(&mut body)
        .await?;
    Ok(body)
}

/// `GET {base}/metrics` over HTTP/1.0 (over TLS for an `https://` base), as name → value
/// (labels kept in the name).
async fn metrics(base: &str, tls: &TlsArgs) -> anyhow::Result<HashMap<String, f64>> {
    let (secure, rest) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        _ => anyhow::bail!("{base}: not an http:// or https:// URL"),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(host).await?;
        if secure {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            get(tls.connect(name, tcp).await?, host, "/metrics").await
        } else {
            get(tcp, host, "/metrics").await
        }
    };
    let body = tokio::time::timeout(MEMBER_TIMEOUT, fetch)
        .await
        .context("timed out")??;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// One member's line.
async fn line(m: &Member, leader_lags: &HashMap<String, f64>, tls: &TlsArgs) -> String {
    let name = if m.name.is_empty() {
        "(unstarted)"
    } else {
        &m.name
    };
    let id = format!("{:x}", m.id);
    if let Some(client) = m.client_ur_ls.first() {
        let status = async {
            let mut c = MaintenanceClient::new(channel(client, tls).await?);
            anyhow::Ok(c.status(StatusRequest {}).await?.into_inner())
        };
        return match status.await {
            Ok(st) => {
                let leads = st.header.as_ref().is_some_and(|h| h.member_id == st.leader);
                let role = if m.is_learner { "learner" } else { "data" };
                let state = match (leads, st.leader) {
                    (true, _) => "leader",
                    (false, 0) => "no-leader",
                    (false, _) => "follower",
                };
                let lag = lag_of(name, leader_lags);
                format!(
                    "{name:<12} {id:<16} {role:<8} {state:<10} term={:<4} index={:<8} applied={:<8}{lag}",
                    st.raft_term, st.raft_index, st.raft_applied_index
                )
            }
            Err(e) => format!(
                "{name:<12} {id:<16} data     down       ({e:#}){}",
                lag_of(name, leader_lags)
            ),
        };
    }
    let Some(peer) = m.peer_ur_ls.first() else {
        return format!("{name:<12} {id:<16} ?        no URL");
    };
    match metrics(peer, tls).await {
        Ok(mm) if mm.get("tandem_server_is_witness") == Some(&1.0) => {
            let get = |k: &str| mm.get(k).copied().unwrap_or(0.0);
            let state = if get("etcd_server_is_leader") == 1.0 {
                "leader"
            } else if get("etcd_server_has_leader") == 1.0 {
                "follower"
            } else {
                "no-leader"
            };
            format!(
                "{name:<12} {id:<16} witness  {state:<10} term={:<4} log-entries={} data-floor={}{}",
                get("tandem_raft_term"),
                get("tandem_witness_log_entries"),
                get("tandem_witness_data_floor"),
                lag_of(name, leader_lags)
            )
        }
        Ok(_) => format!("{name:<12} {id:<16} ?        answers on {peer} but is not a witness"),
        // No client URL and no answer: a witness that is down, or a data member that has not
        // published its client URLs yet (it does once it knows a leader).
        Err(e) => {
            format!("{name:<12} {id:<16} ?        down       (no client URL; its peer URL: {e:#})")
        }
    }
}

fn lag_of(name: &str, lags: &HashMap<String, f64>) -> String {
    let entries = lags.get(&format!("tandem_follower_lag_entries{{member=\"{name}\"}}"));
    let seconds = lags.get(&format!("tandem_follower_lag_seconds{{member=\"{name}\"}}"));
    match (entries, seconds) {
        (Some(e), Some(s)) => format!(" lag={e} entries/{s:.3}s"),
        _ => String::new(),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let endpoints: Vec<&str> = args
        .endpoints
        .split(',')
        .filter(|e| !e.is_empty())
        .collect();
    let mut members = None;
    let mut errors = Vec::new();
    for e in &endpoints {
        let list = async {
            let mut c = ClusterClient::new(channel(e, &args.tls).await?);
            anyhow::Ok(
                c.member_list(MemberListRequest {
                    linearizable: false,
                })
                .await?
                .into_inner(),
            )
        };
        match list.await {
            Ok(l) => {
                members = Some(l.members);
                break;
            }
            Err(err) => errors.push(format!("{e}: {err:#}")),
        }
    }
    let members =
        members.with_context(|| format!("no endpoint answered: {}", errors.join("; ")))?;
    // The leader's metrics say how far each follower lags and whether the witness counts.
    let mut leader_metrics = HashMap::new();
    for m in &members {
        let Some(client) = m.client_ur_ls.first() else {
            continue;
        };
        if let Ok(mm) = metrics(client, &args.tls).await {
            if mm.get("etcd_server_is_leader") == Some(&1.0) {
                leader_metrics = mm;
                break;
            }
        }
    }
    let mut text = String::new();
    for m in &members {
        text.push_str(&line(m, &leader_metrics, &args.tls).await);
        text.push('\n');
    }
    if let Some(engaged) = leader_metrics.get("tandem_witness_engaged") {
        let engaged = if *engaged == 1.0 {
            "yes (a data member is behind)"
        } else {
            "no"
        };
        text.push_str(&format!("witness engaged: {engaged}\n"));
    }
    crate::print_out(&text);
    Ok(())
}
