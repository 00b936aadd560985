//! etcd's Cluster API through `etcdctl member`: against three members of tandem and of etcd
//! 3.5.1 the same commands give the same answers (add a voter and a learner, the refusals etcd
//! gives, promote, update, remove, list); a member added with `member add` joins with
//! `--initial-cluster-state existing`; a cluster grows from three members to five and shrinks
//! back under a steady writer without losing an acknowledged write.

use std::time::Duration;

use etcd_compat_tests::{
    assert_same, normalize, user_error, wait_until_async, Cluster, Ctl, CtlVersion, Kind, Server,
    Transcript,
};

const WAIT: Duration = Duration::from_secs(30);

fn ctl(endpoints: String) -> Ctl {
    Ctl {
        version: CtlVersion::V35,
        endpoint: endpoints,
        cwd: std::env::temp_dir(),
    }
}

/// `member list` lines sorted by name (etcd and tandem order members by id, which differ).
fn sorted_list(ctl: &Ctl) -> String {
    let out = ctl.run(&["member", "list"], None);
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_once(", ").map_or(l, |(_, rest)| rest).to_string())
        .collect();
    lines.sort();
    shown(&lines.join("\n"), &out)
}

/// An output as the transcript keeps it: exit code, normalized text, the user-visible error.
fn shown(stdout: &str, out: &etcd_compat_tests::CtlOutput) -> String {
    format!(
        "[exit {}]\n{}\n{}",
        out.code,
        normalize(stdout),
        normalize(&user_error(&out.stderr))
    )
}

/// What `member add` prints, with its `ETCD_INITIAL_CLUSTER` sorted (it follows id order).
fn add_output(out: &etcd_compat_tests::CtlOutput) -> String {
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            Some(rest) => {
                let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                parts.sort_unstable();
                format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
            }
            None => l.to_string(),
        })
        .collect();
    shown(&lines.join("\n"), out)
}

/// The id `member add` gave, from its first line ("Member <id> added to cluster <id>").
fn added_id(out: &etcd_compat_tests::CtlOutput) -> String {
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member id in {out:?}"))
        .to_string()
}

/// The `ETCD_INITIAL_CLUSTER` value `member add` printed.
fn initial_cluster(out: &etcd_compat_tests::CtlOutput) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out:?}"))
}

/// The id of the member named `name`, from `member list`.
fn id_of(ctl: &Ctl, name: &str) -> String {
    let out = ctl.run(&["member", "list"], None);
    out.stdout
        .lines()
        .find(|l| l.split(", ").nth(2) == Some(name))
        .and_then(|l| l.split(", ").next())
        .unwrap_or_else(|| panic!("no member {name} in {out:?}"))
        .to_string()
}

/// Runs a `member add` until it is not refused as "unhealthy cluster": etcd 3.5 adds a member
/// only once the member asked has been connected to every voter for 5 s (a new cluster, or
/// one that just grew, waits).
async fn add_when_connected(c: &Ctl, args: &[&str]) -> etcd_compat_tests::CtlOutput {
    let added = std::sync::Mutex::new(None);
    wait_until_async("the cluster to accept a member add", WAIT, || {
        let out = c.run(args, None);
        let done = !out.stderr.contains("unhealthy cluster");
        *added.lock().expect("lock") = Some(out);
        async move { done }
    })
    .await
    .expect("member add accepted");
    added.into_inner().expect("lock").expect("an answer")
}

/// The member commands a user would run, recorded for comparison.
async fn scenario(cluster: &mut Cluster) -> Transcript {
    cluster.wait_leader(WAIT).await.expect("a leader");
    let c = ctl(cluster.endpoints());
    // Every member has published its client URLs.
    wait_until_async("every member to publish its client URLs", WAIT, || {
        let out = c.run(&["member", "list"], None);
        async move { out.code == 0 && !out.stdout.contains(", , ") }
    })
    .await
    .expect("members published");
    let mut t = Transcript::new(ctl(cluster.endpoints()));
    t.note(sorted_list(&c));
    let m4 = cluster.new_member("m4").expect("m4");
    let m5 = cluster.new_member("m5").expect("m5");
    let spare = cluster.new_member("spare").expect("spare");
    // A voter, added and then started with what member add printed. Both refuse a member
    // added to a cluster whose peers have not been connected for 5 s ("unhealthy cluster").
    let added = add_when_connected(
        &c,
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls={}", m4.peer_url()),
        ],
    )
    .await;
    t.note(add_output(&added));
    let m4_id = added_id(&added);
    let joined = cluster.join(m4, &initial_cluster(&added));
    t.note(format!("m4 joined: {}", joined.is_ok()));
    if let Err(e) = joined {
        panic!("{:?} m4 did not join: {e:#}", cluster.members[0].kind);
    }
    // Its peer URL again, bad URLs, an id in use.
    let again = cluster.members[3].peer_url();
    t.note(add_output(
        &add_when_connected(
            &c,
            &["member", "add", "again", &format!("--peer-urls={again}")],
        )
        .await,
    ));
    t.run(
        &["member", "add", "bad", "--peer-urls=localhost:2380"],
        None,
    );
    t.run(
        &[
            "member",
            "add",
            "bad",
            "--peer-urls=http://127.0.0.1:1/path",
        ],
        None,
    );
    // A learner, then a second one (etcd 3.5 allows one).
    let learner = add_when_connected(
        &c,
        &[
            "member",
            "add",
            "m5",
            "--learner",
            &format!("--peer-urls={}", m5.peer_url()),
        ],
    )
    .await;
    t.note(add_output(&learner));
    let m5_id = added_id(&learner);
    t.note(add_output(
        &add_when_connected(
            &c,
            &[
                "member",
                "add",
                "spare",
                "--learner",
                &format!("--peer-urls={}", spare.peer_url()),
            ],
        )
        .await,
    ));
    // Not started: not in sync.
    t.run(&["member", "promote", &m5_id], None);
    let learner_index = cluster.join(m5, &initial_cluster(&learner));
    t.note(format!("m5 joined: {}", learner_index.is_ok()));
    t.note(sorted_list(&c));
    // Promote once it has caught up (the first tries may find it behind).
    let promoted = wait_until_async("the learner to be promoted", WAIT, || {
        let c = &c;
        let id = m5_id.clone();
        async move {
            c.run(&["member", "promote", &id], None)
                .stdout
                .contains("promoted")
        }
    })
    .await;
    t.note(format!("m5 promoted: {}", promoted.is_ok()));
    t.run(&["member", "promote", &m5_id], None);
    t.run(&["member", "promote", &m4_id], None);
    t.run(&["member", "promote", "1234abcd5678ef90"], None);
    t.run(&["member", "remove", "1234abcd5678ef90"], None);
    t.run(
        &[
            "member",
            "update",
            "1234abcd5678ef90",
            "--peer-urls=http://127.0.0.1:2",
        ],
        None,
    );
    // A member's own URL again is no conflict; another's is.
    let m2 = id_of(&c, "m2");
    t.run(
        &[
            "member",
            "update",
            &m2,
            &format!("--peer-urls={}", cluster.members[1].peer_url()),
        ],
        None,
    );
    t.run(
        &[
            "member",
            "update",
            &m2,
            &format!("--peer-urls={}", cluster.members[2].peer_url()),
        ],
        None,
    );
    // Back to three.
    t.run(&["member", "remove", &m5_id], None);
    t.run(&["member", "remove", &m4_id], None);
    // A removed member stops, as etcd's does.
    for i in [3, 4] {
        let stopped = etcd_compat_tests::wait_until("a removed member to stop", WAIT, || {
            cluster.members[i].exited()
        });
        t.note(format!(
            "{} stopped: {}",
            cluster.members[i].name(),
            stopped.is_ok()
        ));
    }
    let c3 = ctl(cluster.members[..3]
        .iter()
        .map(Server::url)
        .collect::<Vec<_>>()
        .join(","));
    t.note(sorted_list(&c3));
    t.ctl = c3;
    t.run(&["member", "remove", &m4_id], None);
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn member_commands_match_etcd() {
    let mut etcd = Cluster::start(Kind::Etcd35, 3, &[]).expect("etcd cluster");
    let reference = scenario(&mut etcd).await;
    drop(etcd);
    let mut tandem = Cluster::start(Kind::Tandem, 3, &[]).expect("tandem cluster");
    let ours = scenario(&mut tandem).await;
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", reference.lines.join("\n"));
    }
    assert_same(&reference, Kind::Etcd35.name(), &ours);
}

async fn client(url: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([url], Some(opts))
        .await
        .expect("connect")
}

/// Adds a member named `name` (a learner if `learner`) through `c` and starts it with what
/// `member add` printed; returns its id.
async fn add_and_join(cluster: &mut Cluster, c: &Ctl, name: &str, learner: bool) -> String {
    let m = cluster.new_member(name).expect("a new member");
    let urls = format!("--peer-urls={}", m.peer_url());
    let mut args = vec!["member", "add", name, urls.as_str()];
    if learner {
        args.push("--learner");
    }
    let added = add_when_connected(c, &args).await;
    assert_eq!(added.code, 0, "{added:?}");
    cluster
        .join(m, &initial_cluster(&added))
        .unwrap_or_else(|e| panic!("{name} joins: {e:#}"));
    added_id(&added)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_grows_to_five_and_shrinks_back_under_a_writer() {
    let mut cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("tandem cluster");
    cluster.wait_leader(WAIT).await.expect("a leader");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(etcd_compat_tests::steady_writer(
        cluster.members[1].url(),
        "g/",
        std::sync::Arc::clone(&stop),
    ));
    let c = ctl(cluster.endpoints());
    // A voter, then a learner promoted once caught up: five voters.
    let m4_id = add_and_join(&mut cluster, &c, "m4", false).await;
    let m5_id = add_and_join(&mut cluster, &c, "m5", true).await;
    wait_until_async("the learner to be promoted", WAIT, || {
        let out = c.run(&["member", "promote", &m5_id], None);
        async move { out.stdout.contains("promoted") }
    })
    .await
    .expect("m5 promoted");
    let list = c.run(&["member", "list"], None).stdout;
    assert_eq!(
        list.lines().filter(|l| l.ends_with("false")).count(),
        5,
        "five voters: {list}"
    );
    // And back to three: the newest first, then the other.
    for id in [&m5_id, &m4_id] {
        let out = c.run(&["member", "remove", id], None);
        assert_eq!(out.code, 0, "remove {id}: {out:?}");
    }
    for i in [3, 4] {
        etcd_compat_tests::wait_until("a removed member to stop", WAIT, || {
            cluster.members[i].exited()
        })
        .expect("removed member stopped");
    }
    // Writes go on at three.
    let mut probe = client(&cluster.members[0].url()).await;
    probe
        .put("g/after", "v", None)
        .await
        .expect("a write after shrinking");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, errors, went_back) = writer.await.expect("writer");
    assert!(!went_back, "a revision went back");
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged; errors {errors:?}",
        acked.len()
    );
    // Every acknowledged write on every remaining member.
    for m in &cluster.members[..3] {
        let mut c = client(&m.url()).await;
        let got = c
            .get(
                "g/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .expect("range");
        let keys: std::collections::BTreeSet<String> = got
            .kvs()
            .iter()
            .map(|kv| kv.key_str().expect("utf8").to_string())
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|k| !keys.contains(*k)).collect();
        assert!(
            lost.is_empty(),
            "{}: {} acknowledged writes lost: {:?}",
            m.name(),
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    println!(
        "grown to 5 and shrunk to 3 under a writer: {} writes acknowledged, {} errors ({:?})",
        acked.len(),
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
}

/// A member removed while it was down, then restarted on its data dir, learns from the others
/// that it was removed and stops, as etcd's does ("the member has been permanently removed
/// from the cluster"), instead of standing for election forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_removed_while_down_stops_when_restarted() {
    let mut exits = Vec::new();
    for kind in [Kind::Etcd35, Kind::Tandem] {
        let mut cluster = Cluster::start(kind, 3, &[]).expect("cluster");
        cluster.wait_leader(WAIT).await.expect("a leader");
        let c = ctl(cluster.endpoints());
        let id = id_of(&c, cluster.members[2].name());
        cluster.members[2].stop("KILL").expect("stop the member");
        cluster
            .wait_leader(WAIT)
            .await
            .expect("a leader of the other two");
        let rest = ctl(format!(
            "{},{}",
            cluster.members[0].url(),
            cluster.members[1].url()
        ));
        let out = rest.run(&["member", "remove", &id], None);
        assert_eq!(out.code, 0, "{}: remove {id}: {out:?}", kind.name());
        let (status, log) = cluster.members[2]
            .restart_refused(WAIT)
            .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", kind.name(), cluster.members[2].log()))
            .unwrap_or_else(|| panic!("{}: the removed member serves again", kind.name()));
        assert!(
            log.contains("the member has been permanently removed from the cluster"),
            "{}: {status}; log:\n{log}",
            kind.name()
        );
        exits.push(status.code());
    }
    assert_eq!(exits[1], exits[0], "tandem's exit code, etcd's");
}
