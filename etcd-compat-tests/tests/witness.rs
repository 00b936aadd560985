//! Two data nodes and a witness (`../shared/docs/two-node-design.md`), on real processes: either
//! data node can be lost and the other keeps taking writes with the witness (S1, S2), losing the
//! witness changes nothing (S3), a data node that returns after the other died gets what it
//! missed from the witness (S9), losing the witness and then a data node stops writes (S7), a
//! follower killed while installing a snapshot recovers consistent (S20), the witness holds
//! payloads only up to its cap (W4), holds no keyspace, serves no client and takes no part in
//! linearizable reads (W3), and a witness's data dir is never taken for another role or another
//! cluster.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_compat_tests::{metric, wait_until, Cluster, Kind, Server, WITNESS_FLAG};

const WAIT: Duration = Duration::from_secs(30);
const WITNESS: [&str; 2] = [WITNESS_FLAG, "m3"];

async fn client(url: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([url], Some(opts))
        .await
        .expect("connect")
}

/// Puts `key` through `url` until it is acknowledged (a try may fail while a leader is being
/// elected; every value is unique, so a retried put that did happen is harmless), and returns
/// how long it took.
async fn put_acknowledged(url: &str, key: &str) -> Duration {
    let started = Instant::now();
    loop {
        let mut c = client(url).await;
        match c.put(key, format!("value of {key}"), None).await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(started.elapsed() < WAIT, "put {key} through {url}: {e}");
                until_serving(url).await;
            }
        }
    }
}

/// Before a client tries again after an error: waits (briefly) until the member at `url`
/// reports a leader, as a client backs off until its member can serve.
async fn until_serving(url: &str) {
    let health = format!("{url}/health");
    let _ = etcd_compat_tests::wait_until_async("a leader", RETRY_WAIT, || {
        let health = health.clone();
        async move {
            etcd_compat_tests::http_get(&health)
                .is_ok_and(|(code, body)| code == 200 && body.contains("true"))
        }
    })
    .await;
}

/// The most a client waits for its member before trying again anyway.
const RETRY_WAIT: Duration = Duration::from_millis(300);

/// Waits until both data members list their client URLs (each publishes its own).
async fn wait_published(url: &str) {
    etcd_compat_tests::wait_until_async(
        "both data members to publish their URLs",
        WAIT,
        || async {
            let members = client(url).await.member_list().await.expect("member list");
            let published = members
                .members()
                .iter()
                .filter(|m| !m.client_urls().is_empty())
                .count();
            published == 2
        },
    )
    .await
    .expect("published");
}

/// Every key in `keys` can be read, linearizably, through `url`.
async fn assert_all_present(url: &str, keys: &[String]) {
    let missing = missing(url, keys).await;
    assert!(
        missing.is_empty(),
        "acknowledged {missing:?} missing on {url}"
    );
}

/// The keys among `keys` a linearizable range over `w/` at `url` does not return.
async fn missing(url: &str, keys: &[String]) -> Vec<String> {
    let mut c = client(url).await;
    let got = c
        .get("w/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("linearizable range");
    let present: std::collections::BTreeSet<String> = got
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf-8").to_string())
        .collect();
    keys.iter()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect()
}

fn start() -> Cluster {
    let cluster = Cluster::start(Kind::Tandem, 3, &WITNESS).expect("two data nodes and a witness");
    assert_eq!(cluster.witness(), Some(2));
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn either_data_node_or_the_witness_can_be_lost() {
    let mut cluster = start();
    let leader = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let follower = 1 - leader;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = Vec::new();
    for i in 0..5 {
        let k = format!("w/before-{i}");
        put_acknowledged(&urls[leader], &k).await;
        acked.push(k);
    }

    // S1: the follower crashes; the leader goes on with the witness.
    cluster.members[follower].stop("KILL").expect("kill");
    for i in 0..5 {
        let k = format!("w/s1-{i}");
        let took = put_acknowledged(&urls[leader], &k).await;
        eprintln!("S1: {k} acknowledged after {took:?}");
        acked.push(k);
    }
    // The leader shows the witness engaged and how far the follower lags.
    let engaged = metric(&urls[leader], "tandem_witness_engaged");
    assert_eq!(
        engaged, 1.0,
        "the witness counts while the follower is down"
    );
    let follower_name = cluster.members[follower].name().to_string();
    let lag = metric(
        &urls[leader],
        &format!("tandem_follower_lag_entries{{member=\"{follower_name}\"}}"),
    );
    assert!(
        lag >= 1.0,
        "the follower lags by the writes it missed: {lag}"
    );
    cluster.members[follower].restart().expect("restart");
    cluster.wait_healthy(follower).expect("healthy");
    assert_all_present(&urls[follower], &acked).await;
    wait_until("the witness to be disengaged", WAIT, || {
        metric(&urls[leader], "tandem_witness_engaged") == 0.0
    })
    .expect("disengaged once the follower caught up");

    // S3: the witness crashes; nothing changes for the data nodes.
    cluster.members[2].stop("KILL").expect("kill the witness");
    for (i, url) in [&urls[leader], &urls[follower]].iter().enumerate() {
        let k = format!("w/s3-{i}");
        let took = put_acknowledged(url, &k).await;
        assert!(took < Duration::from_secs(5), "S3: {k} took {took:?}");
        acked.push(k);
    }
    cluster.members[2].restart().expect("restart the witness");
    cluster.wait_healthy(2).expect("witness healthy");

    // S2: the leader crashes; the follower leads and writes resume through it.
    cluster.members[leader]
        .stop("KILL")
        .expect("kill the leader");
    let k = "w/s2-0".to_string();
    let took = put_acknowledged(&urls[follower], &k).await;
    eprintln!("S2: first write after the leader's crash acknowledged after {took:?}");
    acked.push(k);
    assert_eq!(
        cluster.wait_leader(WAIT).await.expect("a leader"),
        follower,
        "the surviving data node leads"
    );
    cluster.members[leader].restart().expect("restart");
    cluster.wait_healthy(leader).expect("healthy");
    for m in cluster.data_members() {
        assert_all_present(&urls[m], &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_returning_data_node_gets_what_it_missed_from_the_witness() {
    // S9: B is down while A commits with the witness; then A dies and B returns. Only the
    // witness holds those writes: it must lead, hand them to B, and hand leadership to B.
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    cluster.members[b].stop("KILL").expect("kill B");
    let mut acked = Vec::new();
    for i in 0..20 {
        let k = format!("w/s9-{i:02}");
        put_acknowledged(&urls[a], &k).await;
        acked.push(k);
    }
    cluster.members[a].stop("KILL").expect("kill A");
    cluster.members[b].restart().expect("restart B");
    let started = Instant::now();
    if let Err(e) = cluster.wait_healthy(b) {
        for m in &cluster.members {
            eprintln!("==== {}\n{}", m.name(), m.log());
        }
        panic!("B healthy: {e:#}");
    }
    assert_all_present(&urls[b], &acked).await;
    let k = "w/s9-after".to_string();
    put_acknowledged(&urls[b], &k).await;
    eprintln!(
        "S9: B serves and takes writes after {:?}",
        started.elapsed()
    );
    assert_eq!(
        cluster.wait_leader(WAIT).await.expect("a leader"),
        b,
        "leadership belongs on the data node"
    );
    acked.push(k);
    cluster.members[a].restart().expect("restart A");
    cluster.wait_healthy(a).expect("A healthy");
    assert_all_present(&urls[a], &acked).await;
}

/// S7: the witness is lost, then the data follower. The last data node must not take a write
/// alone (it cannot know that its peer is gone rather than cut off and leading with the
/// witness): every write is refused with etcd's `Unavailable` ("no leader" or "request timed
/// out"), linearizable reads too, while serializable reads are still served. Once the peer
/// returns, writes go on and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_data_node_refuses_writes_once_the_witness_and_its_peer_are_lost() {
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = vec!["w/s7-before".to_string()];
    put_acknowledged(&urls[a], &acked[0]).await;
    cluster.members[2].stop("KILL").expect("kill the witness");
    acked.push("w/s7-witness-lost".to_string());
    put_acknowledged(&urls[a], &acked[1]).await;
    cluster.members[b]
        .stop("KILL")
        .expect("kill the data follower");
    // Longer than the member's own request timeout: the member answers, not the client's clock.
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(20));
    let mut c = etcd_client::Client::connect([&urls[a]], Some(opts))
        .await
        .expect("connect");
    for i in 0..3 {
        let started = Instant::now();
        let refused = c
            .put(format!("w/s7-alone-{i}"), "must not be acknowledged", None)
            .await
            .expect_err("the last data node took a write alone");
        let code = match &refused {
            etcd_client::Error::GRpcStatus(s) => s.code(),
            other => panic!("refused with {other}, not a gRPC status"),
        };
        assert_eq!(code, tonic::Code::Unavailable, "refused with {refused}");
        eprintln!(
            "S7: put {i} refused after {:?}: {refused}",
            started.elapsed()
        );
    }
    let read = c.get("w/s7-before", None).await;
    assert!(
        matches!(&read, Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::Unavailable),
        "a linearizable read on the last data node: {read:?}"
    );
    let serializable = c
        .get(
            "w/s7-witness-lost",
            Some(GetOptions::new().with_serializable()),
        )
        .await
        .expect("a serializable read is served");
    assert_eq!(
        serializable.kvs().len(),
        1,
        "the acknowledged write is held"
    );
    cluster.members[b]
        .restart()
        .expect("restart the data follower");
    acked.push("w/s7-peer-back".to_string());
    put_acknowledged(&urls[a], &acked[2]).await;
    assert_all_present(&urls[a], &acked).await;
    assert_all_present(&urls[b], &acked).await;
}

/// Runs `tandem unsafe-recover` on `data_dir` with `args`, `stdin` as the operator's answer.
fn unsafe_recover(data_dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut c = std::process::Command::new(etcd_compat_tests::tandem_bin());
    c.arg("unsafe-recover")
        .arg(format!("--data-dir={}", data_dir.display()))
        .args(args);
    let out = etcd_compat_tests::run_command(c, Some(stdin));
    (out.code == 0, out.stdout + &out.stderr)
}

/// S7 with an operator: the witness, then the data follower are lost for good. Only an explicit
/// `tandem unsafe-recover` on the stopped last data node, which says what may be lost and asks
/// for confirmation, makes it a one-member cluster that takes writes, with every acknowledged
/// write.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_data_node_takes_writes_only_after_an_explicit_unsafe_recovery() {
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = Vec::new();
    for i in 0..10 {
        let k = format!("w/s7r-{i}");
        put_acknowledged(&urls[i % 2], &k).await;
        acked.push(k);
    }
    cluster.members[2].stop("KILL").expect("kill the witness");
    acked.push("w/s7r-witness-lost".into());
    put_acknowledged(&urls[a], "w/s7r-witness-lost").await;
    cluster.members[b]
        .stop("KILL")
        .expect("kill the data follower");

    let data_dir = cluster.members[a].data_dir();
    let (ok, text) = unsafe_recover(&data_dir, &["--yes"], "");
    assert!(!ok, "refused while the member runs: {text}");
    assert!(text.contains("stop it first"), "{text}");
    cluster.members[a]
        .stop("KILL")
        .expect("stop the last data node");

    let (ok, text) = unsafe_recover(&data_dir, &[], "no\n");
    assert!(!ok, "not confirmed: {text}");
    assert!(
        text.contains("LOST") && text.contains("not confirmed: nothing changed"),
        "{text}"
    );
    assert!(
        !data_dir.join("member").join("fenced").exists(),
        "nothing changed without confirmation"
    );
    cluster.members[a].restart().expect("restart");
    let refused = client(&urls[a]).await.put("w/s7r-refused", "x", None).await;
    assert!(
        refused.is_err(),
        "still refused before the recovery: {refused:?}"
    );
    cluster.members[a].stop("KILL").expect("stop");

    let (ok, text) = unsafe_recover(&data_dir, &[], "yes\n");
    eprintln!("{text}");
    assert!(ok, "{text}");
    let removed: Vec<String> = [b, 2]
        .iter()
        .map(|i| cluster.members[*i].name().to_string())
        .collect();
    for name in &removed {
        assert!(
            text.contains(&format!("{name} (")),
            "{name} named as removed: {text}"
        );
    }
    cluster.members[a].restart().expect("restart");
    cluster
        .wait_healthy(a)
        .expect("the recovered member serves");
    acked.push("w/s7r-recovered".into());
    let took = put_acknowledged(&urls[a], "w/s7r-recovered").await;
    eprintln!("S7 recovered: a write acknowledged {took:?} after the restart");
    assert_all_present(&urls[a], &acked).await;
    let members = client(&urls[a])
        .await
        .member_list()
        .await
        .expect("member list");
    assert_eq!(
        members.members().len(),
        1,
        "a one-member cluster: {members:?}"
    );
}

/// `tandem-ctl member add-witness NAME --peer-urls URL --endpoints ...`: its exit status and
/// output, once the cluster is healthy enough to consider it (as etcd 3.5.1, a change waits
/// until every voter has been connected for 5 s).
fn add_witness(name: &str, peer_url: &str, endpoints: &str) -> (bool, String) {
    let mut answer = (false, String::new());
    wait_until("the cluster to consider adding a witness", WAIT, || {
        answer = add_witness_once(name, peer_url, endpoints);
        answer.0 || !answer.1.contains("unhealthy cluster")
    })
    .expect("an answer");
    answer
}

fn add_witness_once(name: &str, peer_url: &str, endpoints: &str) -> (bool, String) {
    let mut c =
        std::process::Command::new(etcd_compat_tests::tandem_bin().with_file_name("tandem-ctl"));
    c.args(["member", "add-witness", name])
        .arg(format!("--peer-urls={peer_url}"))
        .arg(format!("--endpoints={endpoints}"));
    let out = etcd_compat_tests::run_command(c, None);
    (out.code == 0, out.stdout + &out.stderr)
}

/// The value of `KEY="value"` in what `member add` printed.
fn printed(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

/// The ID of the member named `name`, once the member list shows that name: a member that has
/// just joined is listed unnamed until it has published its attributes through the log.
async fn member_id(url: &str, name: &str) -> u64 {
    let id = std::sync::Mutex::new(None);
    etcd_compat_tests::wait_until_async(
        &format!("the member list to name {name}"),
        WAIT,
        || async {
            let list = client(url).await.member_list().await.expect("member list");
            let found = list
                .members()
                .iter()
                .find(|m| m.name() == name)
                .map(|m| m.id());
            *id.lock().expect("id") = found;
            found.is_some()
        },
    )
    .await
    .expect("the member is named");
    id.into_inner().expect("id").expect("found")
}

/// Replacing a lost witness (W5's explicit membership change, the walkthrough of
/// docs/kubernetes.md): the witness's machine is gone; `etcdctl member remove` takes it out,
/// `tandem-ctl member add-witness` adds a new one, which joins with what that printed; the new
/// witness then carries the cluster through the loss of a data node (S1).
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_witness_is_replaced_by_a_new_one() {
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let endpoints = cluster.endpoints();
    let mut acked = vec!["w/rw-before".to_string()];
    put_acknowledged(&urls[a], &acked[0]).await;
    wait_published(&urls[a]).await;

    cluster.members[2]
        .stop("KILL")
        .expect("the witness's machine is lost");
    let old = member_id(&urls[a], "m3").await;
    client(&urls[a])
        .await
        .member_remove(old)
        .await
        .expect("remove the lost witness");

    let mut w2 = cluster.new_member("w2").expect("a new member");
    w2.set_flags(&[WITNESS_FLAG, "w2"]);
    let (ok, text) = add_witness("w2", &w2.peer_url(), &endpoints);
    assert!(ok, "{text}");
    assert!(
        text.contains("added to cluster") && text.contains("as the witness"),
        "{text}"
    );
    assert_eq!(printed(&text, "TANDEM_INITIAL_CLUSTER_WITNESS"), "w2");
    assert_eq!(printed(&text, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let w2 = cluster
        .join(w2, &printed(&text, "ETCD_INITIAL_CLUSTER"))
        .expect("the new witness joins");
    let role = format!(
        "tandem_member_role{{member=\"w2\",id=\"{:x}\",role=\"witness\"}}",
        member_id(&urls[a], "w2").await
    );
    wait_until("the leader to list w2 as the witness", WAIT, || {
        etcd_compat_tests::http_get(&format!("{}/metrics", urls[a]))
            .is_ok_and(|(_, body)| body.contains(&format!("{role} 1")))
    })
    .expect("w2 is the witness");
    assert!(cluster.members[w2].is_witness());
    let (again, refused) = add_witness("w3", "http://127.0.0.1:1", &endpoints);
    assert!(
        !again && refused.contains("the cluster already has a witness"),
        "a second witness is refused: {refused}"
    );

    // S1 with the new witness: the follower is lost, the leader goes on with w2.
    cluster.members[b]
        .stop("KILL")
        .expect("kill the data follower");
    for i in 0..5 {
        let k = format!("w/rw-s1-{i}");
        let took = put_acknowledged(&urls[a], &k).await;
        eprintln!("S1 with the new witness: {k} acknowledged after {took:?}");
        acked.push(k);
    }
    assert_eq!(metric(&urls[a], "tandem_witness_engaged"), 1.0);
    cluster.members[b].restart().expect("restart the follower");
    cluster.wait_healthy(b).expect("healthy");
    assert_all_present(&urls[b], &acked).await;
}

/// Replacing a lost data node: `etcdctl member remove`, `member add`, the new member joins with
/// an empty data dir and catches up; it then carries the cluster with the witness through the
/// loss of the other data node.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_data_node_is_replaced_by_a_new_one() {
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let mut acked = Vec::new();
    for i in 0..20 {
        let k = format!("w/rd-{i:02}");
        put_acknowledged(&urls[i % 2], &k).await;
        acked.push(k);
    }
    wait_published(&urls[a]).await;
    let b_name = cluster.members[b].name().to_string();
    cluster.members[b]
        .stop("KILL")
        .expect("B's machine is lost");
    let old = member_id(&urls[a], &b_name).await;
    client(&urls[a])
        .await
        .member_remove(old)
        .await
        .expect("remove the lost data node");
    acked.push("w/rd-after-remove".into());
    put_acknowledged(&urls[a], "w/rd-after-remove").await;

    let b2 = cluster
        .add_and_join(a, "b2", false)
        .await
        .expect("b2 joins");
    let b2_url = cluster.members[b2].url();
    assert_all_present(&b2_url, &acked).await;

    // The new data node and the witness carry the cluster without A.
    cluster.members[a].stop("KILL").expect("kill A");
    acked.push("w/rd-without-a".into());
    let took = put_acknowledged(&b2_url, "w/rd-without-a").await;
    eprintln!("the replaced data node leads after {took:?}");
    assert_all_present(&b2_url, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_witness_holds_no_keyspace_and_serves_no_client() {
    let cluster = start();
    let data = cluster.members[0].url();
    for i in 0..50 {
        put_acknowledged(&data, &format!("w/k{i}")).await;
    }
    let w = &cluster.members[2];
    // gRPC on its client URL: Unavailable, naming the data members.
    let mut c = etcd_client::Client::connect([w.url()], None)
        .await
        .expect("connect");
    let err = c
        .get("w/k0", None)
        .await
        .expect_err("the witness serves no KV");
    let text = err.to_string();
    assert!(
        text.contains("unavailable") && text.contains("witness") && text.contains("m1"),
        "{text}"
    );
    assert!(text.contains("m2"), "{text}");
    // etcd's JSON gateway on it: the same error, as the gateway's JSON body.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-d",
            r#"{"key":"dy9rMA=="}"#,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("{}/v3/kv/range", w.url()))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&out.stdout);
    let (body, code) = out.rsplit_once('\n').expect("a status line");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!((code, v["code"].as_i64()), ("503", Some(14)), "{out}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("witness") && e.contains("m1")),
        "{out}"
    );
    // HTTP endpoints.
    let (code, body) = etcd_compat_tests::http_get(&format!("{}/health", w.url())).expect("health");
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (_, version) = etcd_compat_tests::http_get(&format!("{}/version", w.url())).expect("v");
    assert!(version.contains("etcdserver"), "{version}");
    let floor = || -> u64 {
        let (_, m) = etcd_compat_tests::http_get(&format!("{}/metrics", w.url())).expect("m");
        assert!(m.contains("tandem_server_is_witness 1"), "{m}");
        m.lines()
            .find_map(|l| l.strip_prefix("tandem_witness_data_floor "))
            .and_then(|v| v.trim().parse().ok())
            .expect("data floor metric")
    };
    wait_until("the witness to learn the data floor", WAIT, || {
        floor() >= 50
    })
    .expect("the data nodes tell the witness what they hold");
    // Member list through a data node shows the witness, with no client URL.
    let members = client(&data)
        .await
        .member_list()
        .await
        .expect("member list");
    let witness = members
        .members()
        .iter()
        .find(|m| m.name() == "m3")
        .expect("the witness is a member");
    assert!(witness.client_urls().is_empty());
    assert!(!witness.is_learner());
    let role = format!(
        "tandem_member_role{{member=\"m3\",id=\"{:x}\",role=\"witness\"}}",
        witness.id()
    );
    assert_eq!(metric(&data, &role), 1.0);
    // tandem-ctl status: one line a member, the witness's through its peer URL. (Members publish
    // their client URLs once a leader is known, as etcd's do: wait for both.)
    wait_published(&data).await;
    let ctl = etcd_compat_tests::tandem_bin().with_file_name("tandem-ctl");
    let out = std::process::Command::new(&ctl)
        .args(["status", "--endpoints", &cluster.endpoints()])
        .output()
        .expect("tandem-ctl status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('m')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("m3") && l.contains(" witness ")),
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" data ") && l.contains(" leader "))
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("witness engaged: no"), "{text}");
    // Into a reader that has gone (`| head -0`): no panic, exit status 0, as etcdctl.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(&ctl)
        .args(["status", "--endpoints", &cluster.endpoints()])
        .stdout(writer)
        .output()
        .expect("tandem-ctl status");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // No keyspace on its disk.
    let member_dir = w.data_dir().join("member");
    assert!(member_dir.join("wal").exists());
    assert!(
        !member_dir.join("tandem.db").exists(),
        "a witness holds no keyspace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_witness_data_dir_is_never_taken_for_another_role_or_cluster() {
    let mut cluster = start();
    let w = &mut cluster.members[2];
    w.stop("TERM").expect("stop the witness");
    // Started without the witness flag, it would be a data member: refused.
    w.set_flags(&[]);
    let (status, log) = w
        .restart_refused(WAIT)
        .expect("start")
        .expect("refused at start-up");
    assert!(!status.success());
    assert!(
        log.contains("belongs to the witness") && log.contains("a data member"),
        "{log}"
    );
    // Named as the witness of another cluster (another token): refused.
    w.set_flags(&[WITNESS_FLAG, "m3", "--initial-cluster-token", "another"]);
    let (_, log) = w
        .restart_refused(WAIT)
        .expect("start")
        .expect("refused at start-up");
    assert!(
        log.contains("a witness is never reused for another cluster"),
        "{log}"
    );
    // A data member's dir started as the witness: refused.
    let d = &mut cluster.members[0];
    d.stop("TERM").expect("stop m1");
    d.set_flags(&[WITNESS_FLAG, "m1"]);
    let (_, log) = d
        .restart_refused(WAIT)
        .expect("start")
        .expect("refused at start-up");
    assert!(log.contains("belongs to a data member"), "{log}");
    // A witness that is not a member: refused.
    let refused = Server::start_with(Kind::Tandem, &[WITNESS_FLAG, "nosuch"]);
    let err = format!("{:#}", refused.err().expect("refused"));
    assert!(
        err.contains("no member of --initial-cluster is named"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_witness_cannot_rejoin_under_its_old_identity() {
    // W5: a witness whose data dir was wiped would vote with an empty log, and a data node
    // missing acknowledged writes could win with it. Its peers know its data dir's incarnation.
    let mut cluster = start();
    let data = cluster.members[0].url();
    put_acknowledged(&data, "w/before-wipe").await;
    let w = &mut cluster.members[2];
    w.stop("KILL").expect("kill the witness");
    let dir = w.data_dir();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("empty data dir");
    let (status, log) = w
        .restart_refused(WAIT)
        .expect("start")
        .expect("refused at start-up");
    assert!(!status.success());
    assert!(
        log.contains("refusing to start") && log.contains("has a new data dir"),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert!(
        left.is_empty(),
        "nothing written on a refused start: {left:?}"
    );
    // A member started with flags that describe another cluster is refused too.
    let d = &mut cluster.members[2];
    d.set_flags(&[WITNESS_FLAG, "m3", "--initial-cluster-token", "other"]);
    let (_, log) = d
        .restart_refused(WAIT)
        .expect("start")
        .expect("refused at start-up");
    assert!(log.contains("cluster id mismatch"), "{log}");
    // The data nodes go on.
    put_acknowledged(&data, "w/after-wipe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_witness_keeps_what_a_data_node_lacks_and_purges_it_once_held() {
    // W4's disk: while B is down the witness keeps the entries B lacks (payloads and all); once
    // B holds them, the witness purges its log to what every data node holds.
    let mut cluster = start();
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    let w = cluster.members[2].url();
    cluster.members[b].stop("KILL").expect("kill B");
    let mut c = client(&urls[a]).await;
    for i in 0..1500 {
        c.put(format!("w/lag-{i}"), vec![b'x'; 8192], None)
            .await
            .expect("put with the witness");
    }
    let held = metric(&w, "tandem_witness_log_entries");
    assert!(
        held >= 1500.0,
        "the witness holds what B lacks: {held} entries"
    );
    let disk = metric(&w, "tandem_witness_disk_bytes");
    cluster.members[b].restart().expect("restart B");
    cluster.wait_healthy(b).expect("B healthy");
    wait_until("the witness to purge what B now holds", WAIT, || {
        metric(&w, "tandem_witness_log_entries") < 1000.0
    })
    .expect("purged");
    let after = metric(&w, "tandem_witness_disk_bytes");
    assert!(after < disk, "disk use falls back: {disk} → {after} bytes");
}

/// Issue 11's failover figure: the leader SIGKILLed `TANDEM_FAILOVER_KILLS` times (3 in CI, 20
/// for the acceptance) under a steady writer on each data member (an apiserver beside each);
/// prints the time from each kill to the next acknowledged write sent after it (median and
/// worst), beside etcd 3.5.1 with three members under the same load, and checks that no
/// acknowledged write was lost. Timing is reported, not asserted (a benchmark's job).
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_again_and_again_loses_no_acknowledged_write() {
    let kills: usize = std::env::var("TANDEM_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (tandem, lost) = failover(
        Cluster::start(Kind::Tandem, 3, &WITNESS).expect("2 + witness"),
        kills,
    )
    .await;
    assert!(lost.is_empty(), "tandem lost acknowledged writes: {lost:?}");
    // etcd 3.5.0-3.5.2 may lose acknowledged writes on a member SIGKILLed under load (its
    // consistent index was not saved atomically: etcd-io/etcd#13766, fixed in 3.5.3). The
    // reference run reports what it lost instead of failing on etcd's bug.
    let (etcd, etcd_lost) =
        failover(Cluster::start(Kind::Etcd35, 3, &[]).expect("etcd"), kills).await;
    for (name, gaps, lost) in [
        ("tandem, 2 data + witness", tandem, lost),
        ("etcd 3.5.1, 3 members", etcd, etcd_lost),
    ] {
        eprintln!(
            "failover over {kills} leader kills, {name}: median {:?}, worst {:?} (all: {gaps:?}); acknowledged writes missing: {lost:?}",
            gaps[gaps.len() / 2],
            gaps[gaps.len() - 1]
        );
    }
}

/// W3 under a read load: a linearizable read is confirmed by the two data members alone (the
/// leader and its follower are a quorum, `raft::policy::read_quorum`), so the witness sees only
/// its heartbeats, not a heartbeat per ReadIndex round. 300 reads one after another on each data
/// member (each its own round, one at a time): the leader's round trips to the witness grow by
/// about its heartbeats over that time (10 a second), where a round to every voter made it at
/// least one a read. Every read sees the write acknowledged before it.
#[tokio::test(flavor = "multi_thread")]
async fn the_witness_takes_no_part_in_linearizable_reads() {
    let cluster = start();
    let urls: Vec<String> = cluster
        .data_members()
        .map(|i| cluster.members[i].url())
        .collect();
    wait_published(&urls[0]).await;
    let witness = member_id(&urls[0], "m3").await;
    let to_witness = |url: &str| peer_round_trips(url, witness);
    let before: f64 = urls.iter().map(|u| to_witness(u)).sum();
    let started = Instant::now();
    const READS: usize = 300;
    for (i, url) in urls.iter().enumerate() {
        let mut c = client(url).await;
        for n in 0..READS {
            // A write acknowledged through the other member, then a read here that must see it.
            let key = format!("r/{i}/{n}");
            if n % 30 == 0 {
                put_acknowledged(&urls[1 - i], &key).await;
                let got = c.get(key.as_str(), None).await.expect("linearizable range");
                assert_eq!(
                    got.kvs().len(),
                    1,
                    "{key} acknowledged but not read on {url}"
                );
            } else {
                c.get("r/none", None).await.expect("linearizable range");
            }
        }
    }
    let took = started.elapsed();
    let after: f64 = urls.iter().map(|u| to_witness(u)).sum();
    let heartbeats = took.as_secs_f64() * 10.0;
    eprintln!(
        "{} linearizable reads in {took:?}: {} round trips to the witness (heartbeats every 100 ms: ~{heartbeats:.0})",
        2 * READS,
        after - before
    );
    assert!(
        after - before < heartbeats + 100.0,
        "the witness took part in reads: {} round trips to it for {} reads in {took:?}",
        after - before,
        2 * READS
    );
}

/// The round trips the member at `url` has timed to the peer `id`
/// (`etcd_network_peer_round_trip_time_seconds_count{To="<id in hex>"}`; 0: none yet).
fn peer_round_trips(url: &str, id: u64) -> f64 {
    let name = "etcd_network_peer_round_trip_time_seconds_count{To=\"";
    let (_, body) = etcd_compat_tests::http_get(&format!("{url}/metrics")).expect("metrics");
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.split_once("\"} "))
        .filter(|(to, _)| u64::from_str_radix(to, 16) == Ok(id))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// Kills the leader `kills` times under a writer on each data member; the sorted times from
/// each kill to the next acknowledged write sent after it, and the acknowledged writes some
/// data member's linearizable range then misses (as `url: key`).
async fn failover(mut cluster: Cluster, kills: usize) -> (Vec<Duration>, Vec<String>) {
    let endpoints: Vec<String> = cluster
        .data_members()
        .map(|i| cluster.members[i].url())
        .collect();
    // (when the put was sent, when it was acknowledged, its key)
    let acks = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(Instant, Instant, String)>::new(),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(w, url)| {
            let (acks, stop, url) = (acks.clone(), stop.clone(), url.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w/steady-{w}-{i:06}");
                    i += 1;
                    // A fresh connection after a failure, as a client that lost its member.
                    let put = async { client(&url).await.put(key.clone(), "v", None).await };
                    let sent = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(2), put).await {
                        Ok(Ok(_)) => acks.lock().expect("acks").push((sent, Instant::now(), key)),
                        _ => until_serving(&url).await,
                    }
                }
            })
        })
        .collect();
    let mut gaps = Vec::new();
    for _ in 0..kills {
        let leader = cluster.wait_leader(WAIT).await.expect("a data node leads");
        let before = acks.lock().expect("acks").len();
        wait_until("the writers to make progress", WAIT, || {
            acks.lock().expect("acks").len() > before + 20
        })
        .expect("writes before the kill");
        let killed_at = Instant::now();
        cluster.members[leader]
            .stop("KILL")
            .expect("kill the leader");
        // The next acknowledged write sent after the kill (one in flight may still be
        // acknowledged by a survivor a moment later: it says nothing of the failover).
        let after = |a: &(Instant, Instant, String)| a.0 > killed_at;
        wait_until("a write sent after the kill acknowledged", WAIT, || {
            acks.lock().expect("acks").iter().any(after)
        })
        .expect("writes resume");
        let next = acks
            .lock()
            .expect("acks")
            .iter()
            .find(|a| after(a))
            .map(|a| a.1 - killed_at)
            .expect("a write after the kill");
        gaps.push(next);
        cluster.members[leader].restart().expect("restart");
        cluster.wait_healthy(leader).expect("healthy");
        if cluster.witness().is_some() {
            let others: Vec<String> = endpoints.clone();
            wait_until("the restarted member to catch up", WAIT, || {
                others
                    .iter()
                    .all(|u| metric(u, "tandem_witness_engaged") == 0.0)
            })
            .expect("the witness disengaged again");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked: Vec<String> = acks
        .lock()
        .expect("acks")
        .iter()
        .map(|a| a.2.clone())
        .collect();
    let mut lost = Vec::new();
    for url in &endpoints {
        lost.extend(
            missing(url, &acked)
                .await
                .into_iter()
                .map(|k| format!("{url}: {k}")),
        );
    }
    gaps.sort();
    (gaps, lost)
}

/// The value of `name{label="value"}` on the member at `url`, if it reports one.
fn labelled_metric(url: &str, name: &str) -> Option<f64> {
    let (_, body) = etcd_compat_tests::http_get(&format!("{url}/metrics")).ok()?;
    body.lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .find_map(|l| l.rsplit_once(' ')?.1.trim().parse().ok())
}

/// S20: a data follower so far behind that the leader must send it a snapshot, SIGKILLed in the
/// middle of installing it (while `etcd_network_snapshot_receive_inflights_total` says a
/// transfer is under way), then restarted: it installs a snapshot again and holds exactly the
/// leader's keyspace (I5: equal HashKV at an equal revision), every acknowledged write there,
/// the revision carried on.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_killed_while_installing_a_snapshot_recovers_consistent() {
    let mut flags = WITNESS.to_vec();
    flags.extend([
        "--snapshot-count=100",
        "--experimental-snapshot-catchup-entries=10",
    ]);
    let mut cluster = Cluster::start(Kind::Tandem, 3, &flags).expect("cluster");
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let urls: Vec<String> = cluster.members.iter().map(Server::url).collect();
    cluster.members[b]
        .stop("KILL")
        .expect("kill the data follower");
    // 48 MiB of values (16 chunks of openraft's 3 MiB), many entries past the last snapshot
    // the follower could have seen.
    const KEYS: usize = 3072;
    let value = "v".repeat(16 * 1024);
    let mut writers = Vec::new();
    for w in 0..16 {
        let (url, value) = (urls[a].clone(), value.clone());
        writers.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            for i in (w..KEYS).step_by(16) {
                let started = Instant::now();
                // A leader that lost its quorum for a moment refuses; a client tries again.
                while let Err(e) = c.put(format!("w/s20-{i:05}"), value.as_str(), None).await {
                    assert!(
                        started.elapsed() < WAIT,
                        "put while the follower is down: {e}"
                    );
                    until_serving(&url).await;
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let revision = client(&urls[a])
        .await
        .put("w/s20-last", "v", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();

    cluster.members[b].restart().expect("restart the follower");
    let receiving = "etcd_network_snapshot_receive_inflights_total";
    wait_until("the follower to be receiving a snapshot", WAIT, || {
        labelled_metric(&urls[b], receiving) == Some(1.0)
    })
    .expect("a snapshot transfer under way");
    cluster.members[b]
        .stop("KILL")
        .expect("kill it mid-install");

    cluster.members[b].restart().expect("restart it again");
    // The leader builds the snapshot anew for each transfer (seconds for 48 MiB in a debug
    // build on a loaded machine): wait longer than a start takes.
    wait_until("the follower to install a snapshot", WAIT, || {
        labelled_metric(&urls[b], "etcd_network_snapshot_receive_success") >= Some(1.0)
    })
    .expect("a snapshot installed after the crash");
    cluster.wait_healthy(b).expect("the follower serves again");
    let mut on_b = client(&urls[b]).await;
    let last = on_b
        .get("w/s20-last", None)
        .await
        .expect("linearizable get");
    assert_eq!(
        last.kvs().len(),
        1,
        "the last acknowledged write is on the follower"
    );
    let all = on_b
        .get(
            "w/s20-",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable(),
            ),
        )
        .await
        .expect("count");
    assert_eq!(all.count(), KEYS as i64 + 1, "every acknowledged key");
    let ha = client(&urls[a])
        .await
        .hash_kv(revision)
        .await
        .expect("hash");
    let hb = on_b.hash_kv(revision).await.expect("hash");
    assert_eq!(
        (ha.hash(), ha.compact_version()),
        (hb.hash(), hb.compact_version()),
        "I5: the two data members differ at revision {revision}"
    );
    // Asked again only while refused with `no leader` (refused before anything is proposed, so
    // the revision tells whether the write landed right after the leader's): a member just
    // back from a snapshot install on a loaded machine may miss a heartbeat.
    let rb = std::sync::Mutex::new(None);
    etcd_compat_tests::wait_until_async("a write after", WAIT, || async {
        match client(&urls[b]).await.put("w/s20-after", "v", None).await {
            Ok(r) => {
                *rb.lock().expect("rb") = r.header().map(|h| h.revision());
                true
            }
            Err(e) if e.to_string().contains("etcdserver: no leader") => false,
            Err(e) => panic!("a write after: {e}"),
        }
    })
    .await
    .expect("a write after");
    let rb = rb.into_inner().expect("rb").expect("a header");
    assert_eq!(rb, revision + 1, "the revision goes on from the leader's");
}

/// W4's cap: with the data follower down the witness holds the payloads it lacks, up to
/// `--witness-max-payload-bytes`; past it no write commits ("safe but unavailable until A
/// returns"), and once the follower is back and caught up, writes go on and the witness lets
/// the payloads go. Every acknowledged write is on the follower.
#[tokio::test(flavor = "multi_thread")]
async fn the_witness_holds_payloads_up_to_its_cap_then_writes_wait_for_a_data_node() {
    const CAP: u64 = 4 << 20;
    let cap_flag = format!("--witness-max-payload-bytes={CAP}");
    let mut flags = WITNESS.to_vec();
    flags.push(&cap_flag);
    let mut cluster = Cluster::start(Kind::Tandem, 3, &flags).expect("cluster");
    let a = cluster.wait_leader(WAIT).await.expect("a data node leads");
    let b = 1 - a;
    let w = cluster.witness().expect("a witness");
    let (url_a, url_w) = (cluster.members[a].url(), cluster.members[w].url());
    cluster.members[b]
        .stop("KILL")
        .expect("kill the data follower");
    let value = "v".repeat(16 * 1024);
    let mut c = client(&url_a).await;
    let mut acked = Vec::new();
    let refused = loop {
        let key = format!("w/cap-{:05}", acked.len());
        match c.put(key.as_str(), value.as_str(), None).await {
            Ok(_) => acked.push(key),
            Err(e) => break e,
        }
        assert!(
            (acked.len() * value.len()) as u64 <= 4 * CAP,
            "{} writes of 16 KiB committed with the follower down: the witness holds past its cap",
            acked.len()
        );
    };
    let held = metric(&url_w, "tandem_witness_held_payload_bytes") as u64;
    println!(
        "{} writes acknowledged, then refused ({refused}); the witness holds {held} bytes (cap {CAP})",
        acked.len()
    );
    assert!(
        (CAP..CAP + (2 << 20)).contains(&held),
        "held {held}, cap {CAP}"
    );
    assert!(
        (acked.len() * value.len()) as u64 >= CAP - (1 << 20),
        "only {} writes before the refusal",
        acked.len()
    );

    cluster.members[b].restart().expect("restart the follower");
    cluster.wait_healthy(b).expect("the follower serves again");
    let url_b = cluster.members[b].url();
    etcd_compat_tests::wait_until_async("writes to commit again", WAIT, || async {
        client(&url_a)
            .await
            .put("w/cap-after", "v", None)
            .await
            .is_ok()
    })
    .await
    .expect("writes commit once the follower is back");
    acked.push("w/cap-after".to_string());
    assert_all_present(&url_b, &acked).await;
    wait_until("the witness to let the payloads go", WAIT, || {
        metric(&url_w, "tandem_witness_held_payload_bytes") == 0.0
    })
    .expect("payloads released once the follower holds them");
}
