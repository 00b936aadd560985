//! The kube-apiserver storage contract (`../shared/docs/kubernetes-contract.md`), one test per
//! line of it, spoken to tandem exactly as the apiserver does (the shapes of etcd's
//! `client/v3/kubernetes`). Where etcd 3.5.1 defines the behaviour the same way, the same calls
//! run against it and the results must be equal.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::etcdserverpb::watch_request::RequestUnion;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use etcd_compat_tests::*;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `scenario` against fresh etcd 3.5.1 and tandem servers and asserts equal transcripts.
async fn on_both<F, Fut>(flags: &[&str], scenario: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let etcd = Server::start_with(Kind::Etcd35, flags).expect("etcd");
    let tandem = Server::start_with(Kind::Tandem, flags).expect("tandem");
    let a = scenario(etcd.url()).await;
    let b = scenario(tandem.url()).await;
    assert_same_steps(&a, &b, "tandem");
}

/// Asserts that two transcripts are equal step by step, etcd's on the left.
fn assert_same_steps(etcd: &[String], tandem: &[String], tandem_name: &str) {
    for (i, (x, y)) in etcd.iter().zip(tandem).enumerate() {
        assert_eq!(x, y, "step {i}: etcd-3.5.1 (left) vs {tandem_name} (right)");
    }
    assert_eq!(etcd.len(), tandem.len());
}

/// Runs `scenario` against a fresh etcd 3.5.1 member and through a follower of a fresh
/// three-member tandem cluster, and asserts equal transcripts: the apiserver spreads its requests
/// over every `--etcd-servers` endpoint, so every member must serve every line of the contract
/// (writes and lease grants forwarded to the leader, linearizable reads through ReadIndex,
/// watches from the member's own applied state).
async fn on_follower<F, Fut>(flags: &[&str], scenario: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let etcd = Server::start_with(Kind::Etcd35, flags).expect("etcd");
    let tandem = Cluster::start(Kind::Tandem, 3, flags).expect("tandem cluster");
    let leader = tandem.wait_leader(WAIT).await.expect("leader");
    let follower = tandem.members[(leader + 1) % 3].url();
    let a = scenario(etcd.url()).await;
    let b = scenario(follower).await;
    assert_same_steps(&a, &b, "a tandem follower");
}

/// As [`on_follower`], on a fresh two-data-member + witness tandem cluster, through the data
/// member that leads and then (on another fresh cluster) through the one that follows: the
/// apiservers of a two-machine control plane talk to both.
async fn on_each_data_member_with_a_witness<F, Fut>(flags: &[&str], scenario: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let etcd = Server::start_with(Kind::Etcd35, flags).expect("etcd");
    let want = scenario(etcd.url()).await;
    let mut with_witness = flags.to_vec();
    with_witness.extend([etcd_compat_tests::WITNESS_FLAG, "m3"]);
    for leads in [true, false] {
        let tandem = Cluster::start(Kind::Tandem, 3, &with_witness).expect("2 + witness");
        let leader = tandem.wait_leader(WAIT).await.expect("a data member leads");
        let member = if leads { leader } else { 1 - leader };
        let got = scenario(tandem.members[member].url()).await;
        let name = if leads {
            "the leading data member"
        } else {
            "the following data member"
        };
        assert_same_steps(&want, &got, name);
    }
}

// Contract, every line above, through each data member of two data members and a witness.
#[tokio::test(flavor = "multi_thread")]
async fn each_data_member_of_two_and_a_witness_serves_the_contract_as_etcd_does() {
    on_each_data_member_with_a_witness(&[], txn_shapes).await;
    on_each_data_member_with_a_witness(&[], range_shapes).await;
    on_each_data_member_with_a_witness(&[], watch_shapes).await;
    on_each_data_member_with_a_witness(&[], compaction_cycle).await;
    on_each_data_member_with_a_witness(&[], lease_reuse).await;
}

// Contract over mutual TLS (kubeadm's external etcd: `--etcd-cafile`, `--etcd-certfile`,
// `--etcd-keyfile`), members also talking mutual TLS among themselves, through each data member
// of two data members and a witness, against etcd 3.5.1 over the same certificates.
#[tokio::test(flavor = "multi_thread")]
async fn the_contract_over_mutual_tls_through_each_data_member_with_a_witness() {
    let flags: Vec<&str> = apiserver_tls()
        .server_flags
        .iter()
        .map(String::as_str)
        .collect();
    on_each_data_member_with_a_witness(&flags, txn_shapes).await;
    on_each_data_member_with_a_witness(&flags, range_shapes).await;
    on_each_data_member_with_a_witness(&flags, watch_shapes).await;
    on_each_data_member_with_a_witness(&flags, lease_reuse).await;
}

// Contract, "How it connects" (every member must serve every RPC) with "Txn: the only four
// shapes" and "Range: the exact shapes" 1, 3, 4, 5, through a follower.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_the_txn_and_range_shapes_as_etcd_does() {
    on_follower(&[], txn_shapes).await;
    on_follower(&[], range_shapes).await;
}

// Contract, "How it connects" with "Watch" and "Periodic progress notify", through a follower.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_watches_and_progress_as_etcd_does() {
    on_follower(&[], watch_shapes).await;
    on_follower(
        &["--experimental-watch-progress-notify-interval=1s"],
        periodic_progress,
    )
    .await;
}

// Contract, "How it connects" with "Compaction" and "Leases", through a follower (lease expiry
// is the leader's; its DELETE events reach the follower's watchers).
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_runs_compaction_and_leases_as_etcd_does() {
    on_follower(&[], compaction_cycle).await;
    on_follower(&[], lease_reuse).await;
}

// Contract, "How it connects" with "Range: the exact shapes" 2, through a follower.
#[tokio::test(flavor = "multi_thread")]
async fn paged_list_through_a_follower_is_consistent() {
    let tandem = Cluster::start(Kind::Tandem, 3, &[]).expect("tandem cluster");
    let leader = tandem.wait_leader(WAIT).await.expect("leader");
    let out = paged_list(tandem.members[(leader + 1) % 3].url()).await;
    println!("{out:?}");
}

/// The apiserver's certificate, CA and key (`--etcd-cafile`, `--etcd-certfile`,
/// `--etcd-keyfile`) for the `https://` servers of the mutual-TLS run, and those servers' flags.
struct ApiserverTls {
    _dir: tempfile::TempDir,
    ca: String,
    cert: (String, String),
    server_flags: Vec<String>,
}

static APISERVER_TLS: OnceLock<ApiserverTls> = OnceLock::new();

fn apiserver_tls() -> &'static ApiserverTls {
    APISERVER_TLS.get_or_init(|| {
        use etcd_compat_tests::pki::Ca;
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("dir");
        let ca = Ca::new(dir.path(), "etcd-ca").expect("ca");
        let member = ca.loopback_leaf("member", "member").expect("leaf");
        let cert = ca
            .loopback_leaf("apiserver-etcd-client", "kube-apiserver-etcd-client")
            .expect("leaf");
        let server_flags =
            etcd_compat_tests::pki::member_mtls_flags(&ca.cert_file(), &member.0, &member.1);
        use_client_tls(ClientTlsFiles {
            ca: ca.cert_file(),
            cert: cert.0.clone(),
            key: cert.1.clone(),
        });
        ApiserverTls {
            ca: ca.cert_file(),
            cert,
            server_flags,
            _dir: dir,
        }
    })
}

/// The apiserver's TLS for an `https://` URL, none for `http://`.
fn tls_for(url: &str) -> Option<tonic::transport::ClientTlsConfig> {
    if !url.starts_with("https://") {
        return None;
    }
    let t = apiserver_tls();
    let pem = |p: &str| std::fs::read_to_string(p).expect("pem");
    Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem(&t.ca)))
            .identity(tonic::transport::Identity::from_pem(
                pem(&t.cert.0),
                pem(&t.cert.1),
            )),
    )
}

async fn client(url: &str) -> Client {
    let options = tls_for(url).map(|tls| etcd_client::ConnectOptions::new().with_tls(tls));
    Client::connect([url], options).await.expect("connect")
}

fn rev_of(r: &etcd_client::TxnResponse) -> i64 {
    r.header().expect("header").revision()
}

/// The first key-value of a failed Update/Delete's `Range`, as the apiserver reads it.
fn failure_kv(r: &etcd_client::TxnResponse) -> String {
    match r.op_responses().first() {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map_or("none".into(), |kv| {
            format!(
                "{}@{} v{}",
                kv.value_str().unwrap_or("?"),
                kv.mod_revision(),
                kv.version()
            )
        }),
        other => format!("{other:?}"),
    }
}

// Contract, "Txn: the only four shapes": Create on MOD==0, Update/Delete on MOD==rev with the Range
// on failure, and the compact_rev_key version CAS, including the failure branches.
async fn txn_shapes(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let mut log = Vec::new();
    let key = "/registry/pods/default/web";
    let create = |v: &str| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, v, None)])
    };
    let r = c.txn(create("v1")).await.expect("create");
    log.push(format!(
        "create: succeeded {} rev {}",
        r.succeeded(),
        rev_of(&r)
    ));
    let created = rev_of(&r);
    let r = c.txn(create("again")).await.expect("create again");
    log.push(format!(
        "create existing: succeeded {} responses {}",
        r.succeeded(),
        r.op_responses().len()
    ));
    let update = |rev: i64, v: &str| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key, v, None)])
            .or_else([TxnOp::get(key, None)])
    };
    let r = c.txn(update(created, "v2")).await.expect("update");
    log.push(format!(
        "update: succeeded {} rev {}",
        r.succeeded(),
        rev_of(&r)
    ));
    let updated = rev_of(&r);
    let r = c.txn(update(created, "stale")).await.expect("stale update");
    log.push(format!(
        "stale update: succeeded {} current {}",
        r.succeeded(),
        failure_kv(&r)
    ));
    let delete = |rev: i64| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)])
            .or_else([TxnOp::get(key, None)])
    };
    let r = c.txn(delete(created)).await.expect("stale delete");
    log.push(format!(
        "stale delete: succeeded {} current {}",
        r.succeeded(),
        failure_kv(&r)
    ));
    let r = c.txn(delete(updated)).await.expect("delete");
    log.push(format!(
        "delete: succeeded {} rev {}",
        r.succeeded(),
        rev_of(&r)
    ));
    // Compare on a missing key: MOD, VERSION and CREATE read 0; a VALUE compare fails.
    for (name, cmp) in [
        (
            "mod",
            Compare::mod_revision("/missing", CompareOp::Equal, 0),
        ),
        ("version", Compare::version("/missing", CompareOp::Equal, 0)),
        (
            "create",
            Compare::create_revision("/missing", CompareOp::Equal, 0),
        ),
        ("value", Compare::value("/missing", CompareOp::Equal, "")),
    ] {
        let r = c.txn(Txn::new().when([cmp])).await.expect("compare");
        log.push(format!("missing-key {name} compare: {}", r.succeeded()));
    }
    // The compaction CAS two apiservers race on: the per-key version is the clock.
    let cas = |version: i64, rev: i64| {
        Txn::new()
            .when([Compare::version(
                "compact_rev_key",
                CompareOp::Equal,
                version,
            )])
            .and_then([TxnOp::put("compact_rev_key", rev.to_string(), None)])
            .or_else([TxnOp::get("compact_rev_key", None)])
    };
    let r = c.txn(cas(0, 4)).await.expect("cas");
    log.push(format!(
        "cas v0: succeeded {} rev {}",
        r.succeeded(),
        rev_of(&r)
    ));
    let r = c.txn(cas(0, 5)).await.expect("losing cas");
    log.push(format!(
        "losing cas v0: succeeded {} current {}",
        r.succeeded(),
        failure_kv(&r)
    ));
    let r = c.txn(cas(1, 6)).await.expect("cas v1");
    log.push(format!(
        "cas v1: succeeded {} rev {}",
        r.succeeded(),
        rev_of(&r)
    ));
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_shapes_match_etcd() {
    on_both(&[], txn_shapes).await;
}

// Contract, "Range: the exact shapes" 1, 3, 4, 5 and the errors: Get at revision, Count, keys-only,
// the current revision on an empty prefix, ErrCompacted and ErrFutureRev.
async fn range_shapes(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let mut log = Vec::new();
    for i in 0..5 {
        c.put(
            format!("/registry/configmaps/ns/cm{i}"),
            format!("v{i}"),
            None,
        )
        .await
        .expect("put");
    }
    let first = c
        .put("/registry/configmaps/ns/cm0", "v0b", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    let get = c
        .get(
            "/registry/configmaps/ns/cm0",
            Some(GetOptions::new().with_limit(1).with_revision(first - 1)),
        )
        .await
        .expect("get at rev");
    log.push(format!(
        "get at {}: {:?} header {}",
        first - 1,
        get.kvs()
            .iter()
            .map(|kv| kv.value_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>(),
        get.header().expect("h").revision()
    ));
    let count = c
        .get(
            "/registry/configmaps/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    log.push(format!(
        "count: {} kvs {} more {}",
        count.count(),
        count.kvs().len(),
        count.more()
    ));
    let keys = c
        .get(
            "/registry/configmaps/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("keys only");
    log.push(format!(
        "keys-only: {:?} values empty {}",
        keys.kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>(),
        keys.kvs().iter().all(|kv| kv.value().is_empty())
    ));
    let empty = c
        .get(
            "/registry/secrets/",
            Some(GetOptions::new().with_prefix().with_limit(1)),
        )
        .await
        .expect("empty prefix");
    log.push(format!(
        "empty prefix: count {} header revision {} (global {first})",
        empty.count(),
        empty.header().expect("h").revision()
    ));
    let health = c.get("/registry/health", None).await.expect("health probe");
    log.push(format!("health probe: {} kvs", health.kvs().len()));
    c.compact(first - 2, None).await.expect("compact");
    for rev in [first - 3, first + 100] {
        let e = c
            .get(
                "/registry/configmaps/ns/cm0",
                Some(GetOptions::new().with_revision(rev)),
            )
            .await
            .expect_err("error");
        log.push(format!("get at {rev}: {e}"));
    }
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn range_shapes_match_etcd() {
    on_both(&[], range_shapes).await;
}

// Contract, "Range: the exact shapes" 2: paged List with `lastKey + "\x00"` continuation pinned at
// the first page's revision over 10,000 objects; `count` ignores the limit and `more` is right on
// every page, while writes continue.
async fn paged_list(url: String) -> Vec<String> {
    const OBJECTS: usize = 10_000;
    const PAGE: i64 = 500;
    put_concurrently(&url, 16, OBJECTS, |i| {
        (
            format!("/registry/pods/ns/pod-{i:05}"),
            i.to_string().into_bytes(),
        )
    })
    .await;
    // Writes continue while the list runs: creates and deletes under the same prefix.
    let churn_url = url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn_stop = stop.clone();
    let churn = tokio::spawn(async move {
        let mut c = client(&churn_url).await;
        let mut i = 0;
        while !churn_stop.load(std::sync::atomic::Ordering::Relaxed) {
            c.put(format!("/registry/pods/ns/new-{i:05}"), "x", None)
                .await
                .expect("churn put");
            c.delete(
                format!("/registry/pods/ns/pod-{:05}", i * 7 % OBJECTS),
                None,
            )
            .await
            .expect("churn delete");
            i += 1;
        }
    });
    let mut c = client(&url).await;
    let end = "/registry/pods0";
    let mut key = "/registry/pods/".to_string();
    let mut pinned = 0;
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end).with_limit(PAGE);
        if pinned != 0 {
            opts = opts.with_revision(pinned);
        }
        let r = c.get(key.clone(), Some(opts)).await.expect("page");
        if pinned == 0 {
            pinned = r.header().expect("h").revision();
        }
        // count = every key from this page's start at the pinned revision, ignoring the limit.
        let remaining = c
            .get(
                key.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_revision(pinned)
                        .with_count_only(),
                ),
            )
            .await
            .expect("count")
            .count();
        assert_eq!(
            r.count(),
            remaining,
            "page {pages}: count must ignore the limit"
        );
        assert_eq!(r.more(), remaining > PAGE, "page {pages}: more");
        assert_eq!(
            r.more(),
            (r.kvs().len() as i64) < r.count(),
            "page {pages}: hasMore = len(kvs) < count"
        );
        listed.extend(r.kvs().iter().map(|kv| kv.key().to_vec()));
        pages += 1;
        if !r.more() {
            break;
        }
        let mut next = r.kvs().last().expect("a key").key().to_vec();
        next.push(0);
        key = String::from_utf8(next).expect("utf8");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.await.expect("churn");
    let whole = c
        .get(
            "/registry/pods/",
            Some(GetOptions::new().with_range(end).with_revision(pinned)),
        )
        .await
        .expect("whole list");
    let expected: Vec<Vec<u8>> = whole.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(
        listed, expected,
        "the pages together are exactly the objects at the pinned revision"
    );
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, listed, "ascending byte order");
    vec![format!(
        "paged list: {} objects in {pages} pages, consistent at its revision",
        listed.len()
    )]
}

#[tokio::test(flavor = "multi_thread")]
async fn paged_list_over_10k_objects_is_consistent() {
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let out = paged_list(tandem.url()).await;
    println!("{out:?}");
}

async fn watch_client(url: &str) -> pb::watch_client::WatchClient<Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).expect("url");
    if let Some(tls) = tls_for(url) {
        endpoint = endpoint.tls_config(tls).expect("tls");
    }
    let channel = endpoint.connect().await.expect("connect");
    pb::watch_client::WatchClient::new(channel).max_decoding_message_size(256 << 20)
}

fn create(key: &str, end: &str, start: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
    }
}

/// A watch stream as the apiserver holds it: requests in, responses out.
struct Stream {
    tx: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    /// Opens a stream whose first request is `first`: gRPC-Go servers (etcd) send the response
    /// headers only with the first response, so a request must be queued before waiting for them.
    async fn open(
        url: &str,
        metadata: bool,
        first: pb::WatchRequest,
    ) -> Result<Self, tonic::Status> {
        let mut wc = watch_client(url).await;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tx.send(first).await.expect("queue the first request");
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if metadata {
            req.metadata_mut()
                .insert("hasleader", "true".parse().expect("metadata"));
        }
        let rx = wc.watch(req).await?.into_inner();
        Ok(Self { tx, rx })
    }

    async fn send(&self, r: pb::WatchRequest) {
        self.tx.send(r).await.expect("send");
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream")
            .expect("open")
    }
}

fn describe(r: &pb::WatchResponse) -> String {
    let events: Vec<String> = r
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            format!(
                "{}{} {}@{} create={} prev={}",
                if e.r#type == 1 { "DELETE " } else { "PUT " },
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.mod_revision,
                kv.create_revision == kv.mod_revision && e.r#type == 0,
                e.prev_kv
                    .as_ref()
                    .map_or("none".into(), |p| String::from_utf8_lossy(&p.value)
                        .to_string())
            )
        })
        .collect();
    format!(
        "id {} created {} canceled {} compact {} events {:?}",
        r.watch_id, r.created, r.canceled, r.compact_revision, events
    )
}

// Contract, "Watch": many watchers on one stream, creates answered in order, start_revision =
// rev+1, prev_kv on every non-create event, create detection, compacted start → canceled with
// compact_revision, cancel.
async fn watch_shapes(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let mut log = Vec::new();
    let rev = c
        .put("/registry/pods/ns/a", "1", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    let prefixes = [
        "/registry/pods/",
        "/registry/services/",
        "/registry/configmaps/",
    ];
    let end = |p: &str| format!("{}0", p.trim_end_matches('/'));
    let mut s = Stream::open(&url, true, create(prefixes[0], &end(prefixes[0]), rev + 1))
        .await
        .expect("watch stream");
    for prefix in &prefixes[1..] {
        s.send(create(prefix, &end(prefix), rev + 1)).await;
    }
    for _ in 0..3 {
        let r = s.next().await;
        log.push(format!("create answer: {}", describe(&r)));
    }
    c.put("/registry/pods/ns/a", "2", None)
        .await
        .expect("update");
    c.put("/registry/services/ns/svc", "s", None)
        .await
        .expect("create");
    c.delete("/registry/pods/ns/a", None).await.expect("delete");
    let mut got = Vec::new();
    while got.len() < 3 {
        let r = s.next().await;
        got.extend(r.events.iter().map(|_| describe(&r)));
    }
    got.sort();
    log.extend(got);
    s.send(pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 1,
        })),
    })
    .await;
    log.push(format!("cancel answer: {}", describe(&s.next().await)));
    let now = c
        .put("/registry/pods/ns/b", "x", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    c.compact(now, None).await.expect("compact");
    s.send(create("/registry/pods/", "/registry/pods0", rev))
        .await;
    let mut compacted = Vec::new();
    while compacted.len() < 2 {
        let r = s.next().await;
        if r.watch_id == 0 {
            continue; // the pods watcher sees /registry/pods/ns/b
        }
        compacted.push(describe(&r));
    }
    log.push(format!("compacted start: {compacted:?}"));
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_shapes_match_etcd() {
    on_both(&[], watch_shapes).await;
}

// Contract, "WatchProgressRequest": the stream's reply (watch_id -1, current revision) comes only
// once every watcher is synced; no event at or below the reported revision follows it. One
// watcher is held behind by a large historical replay.
#[tokio::test(flavor = "multi_thread")]
async fn progress_request_waits_for_a_watcher_catching_up() {
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let url = tandem.url();
    put_concurrently(&url, 8, 8_000, |i| {
        (format!("/registry/events/ns/e-{i}"), vec![b'v'; 4096])
    })
    .await;
    let mut s = Stream::open(
        &url,
        true,
        create("/registry/leases/", "/registry/leases0", 0),
    )
    .await
    .expect("stream"); // synced at once
    s.send(create("/registry/events/", "/registry/events0", 1))
        .await; // 8,000 revisions behind
    s.send(progress()).await;
    let mut last_event = 0;
    let reported = loop {
        let r = s.next().await;
        if r.watch_id == -1 && !r.created {
            break r.header.expect("header").revision;
        }
        if let Some(e) = r.events.last() {
            last_event = e.kv.as_ref().expect("kv").mod_revision;
        }
    };
    assert!(reported >= 8_001, "reported revision {reported}");
    assert_eq!(
        last_event, reported,
        "the reply waited until the lagging watcher had every event up to it"
    );
    // A write after the reply arrives with a higher revision, and nothing at or below follows.
    let mut c = client(&url).await;
    c.put("/registry/events/ns/after", "x", None)
        .await
        .expect("put");
    let r = s.next().await;
    let first = r
        .events
        .first()
        .expect("event")
        .kv
        .as_ref()
        .expect("kv")
        .mod_revision;
    assert!(
        first > reported,
        "event at {first} after progress at {reported}"
    );
}

// Contract, "Periodic progress notify": an empty response with the current revision, to each
// watcher that asked, at the configured interval.
async fn periodic_progress(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let rev = c
        .put("/registry/leases/ns/l", "1", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    let mut s = Stream::open(
        &url,
        true,
        create("/registry/leases/", "/registry/leases0", rev + 1),
    )
    .await
    .expect("stream");
    let created = s.next().await;
    let r = s.next().await;
    vec![
        format!("created: {}", describe(&created)),
        format!(
            "notification: id {} events {} revision {}",
            r.watch_id,
            r.events.len(),
            r.header.expect("header").revision
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_progress_notify_matches_etcd() {
    on_both(
        &["--experimental-watch-progress-notify-interval=1s"],
        periodic_progress,
    )
    .await;
}

// Contract, "How it connects": with `hasleader: true`, a member that knows no leader refuses with
// `etcdserver: no leader`; requests that cannot be served fail with Unavailable and etcd's
// message instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn no_leader_is_refused_with_etcds_errors() {
    // The last member of three, the other two killed, knows no leader once its election times
    // out (etcd_server_has_leader 0).
    let mut cluster = Cluster::start(Kind::Tandem, 3, &[]).expect("3 members");
    for m in &mut cluster.members[1..] {
        m.stop("KILL").expect("kill");
    }
    let tandem = &cluster.members[0];
    wait_until("the survivor to lose its leader", WAIT, || {
        metric(&tandem.url(), "etcd_server_has_leader") == 0.0
    })
    .expect("no leader");
    let err = match Stream::open(
        &tandem.url(),
        true,
        create("/registry/pods/", "/registry/pods0", 0),
    )
    .await
    {
        Err(e) => e,
        Ok(mut s) => tokio::time::timeout(WAIT, s.rx.message())
            .await
            .expect("in time")
            .expect_err("refused"),
    };
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    let mut kv = pb::kv_client::KvClient::connect(tandem.url())
        .await
        .expect("connect");
    let get = pb::RangeRequest {
        key: b"/registry/health".to_vec().into(),
        ..Default::default()
    };
    let e = tokio::time::timeout(WAIT, kv.range(get))
        .await
        .expect("no hang")
        .expect_err("no quorum read");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    let put = pb::PutRequest {
        key: b"/registry/x".to_vec().into(),
        ..Default::default()
    };
    let e = tokio::time::timeout(WAIT, kv.put(put))
        .await
        .expect("no hang")
        .expect_err("no write");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    let (code, body) = http_get(&format!("{}/health", tandem.url())).expect("health");
    assert_eq!(code, 503, "{body}");
    let (code, _) = http_get(&format!("{}/readyz", tandem.url())).expect("readyz");
    assert_eq!(code, 503);
}

// Contract, "Compaction": the cycle as the apiserver runs it — CAS, then Compact(revision of the
// previous round) — with ErrCompacted and ErrFutureRev exactly.
async fn compaction_cycle(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let mut log = Vec::new();
    let mut previous = 0;
    for round in 0..3i64 {
        for i in 0..5 {
            c.put(format!("/registry/pods/ns/p{i}"), format!("r{round}"), None)
                .await
                .expect("put");
        }
        let current = store_revision(&mut c).await;
        let cas = Txn::new()
            .when([Compare::version("compact_rev_key", CompareOp::Equal, round)])
            .and_then([TxnOp::put("compact_rev_key", current.to_string(), None)])
            .or_else([TxnOp::get("compact_rev_key", None)]);
        let won = c.txn(cas).await.expect("cas").succeeded();
        if won && previous > 0 {
            let r = c
                .compact(previous, None)
                .await
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string());
            log.push(format!("round {round}: compact({previous}) {r}"));
        }
        previous = current;
    }
    for rev in [previous - 20, previous + 1000] {
        log.push(format!(
            "compact({rev}): {}",
            c.compact(rev, None).await.expect_err("refused")
        ));
    }
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_cycle_matches_etcd() {
    on_both(&[], compaction_cycle).await;
}

// Contract, "Leases": one LeaseGrant reused across many objects; expiry deletes them through the
// log, as DELETE events with prev_kv in one revision.
async fn lease_reuse(url: String) -> Vec<String> {
    let mut c = client(&url).await;
    let lease = c.lease_grant(2, None).await.expect("grant").id();
    for i in 0..5 {
        c.put(
            format!("/registry/events/ns/e{i}"),
            format!("{i}"),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
    }
    let rev = store_revision(&mut c).await;
    let (_w, mut stream) = c
        .watch(
            "/registry/events/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .expect("watch")
        .split();
    let mut events = Vec::new();
    while events.len() < 5 {
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("expiry in time")
            .expect("stream")
            .expect("response");
        for e in r.events() {
            let kv = e.kv().expect("kv");
            events.push(format!(
                "{:?} {} at rev+{} prev {:?}",
                e.event_type(),
                kv.key_str().unwrap_or("?"),
                kv.mod_revision() - rev,
                e.prev_kv()
                    .map(|p| p.value_str().unwrap_or("?").to_string())
            ));
        }
    }
    events.sort();
    let left = c
        .get(
            "/registry/events/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("get")
        .count();
    let put = c
        .put(
            "/registry/events/late",
            "x",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map(|_| "ok".to_string())
        .unwrap_or_else(|e| e.to_string());
    events.push(format!("left {left}; put with the expired lease: {put}"));
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_reuse_and_expiry_match_etcd() {
    on_both(&[], lease_reuse).await;
}

/// A semver "major.minor.patch" (ignoring pre-release) as a comparable triple.
fn semver(v: &str) -> (u64, u64, u64) {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<u64> = core
        .split('.')
        .map(|p| p.parse().expect("numeric semver"))
        .collect();
    assert_eq!(parts.len(), 3, "{v} is not major.minor.patch");
    (parts[0], parts[1], parts[2])
}

// Contract, "Status.version gates features" and "HTTP on the client port": Status.version is a
// semver ≥ 3.5.13; /version has kubeadm's shape; /health, /livez, /readyz (with ?exclude= and
// ?serializable=) and /metrics are served next to gRPC.
#[tokio::test(flavor = "multi_thread")]
async fn version_and_http_endpoints_serve_the_apiserver_and_kubeadm() {
    let tandem = Server::start(Kind::Tandem).expect("tandem");
    let mut c = client(&tandem.url()).await;
    let status = c.status().await.expect("status");
    assert!(
        semver(status.version()) >= (3, 5, 13),
        "Status.version {}",
        status.version()
    );
    assert!(status.db_size() > 0);
    let (code, body) = http_get(&format!("{}/version", tandem.url())).expect("/version");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(semver(v["etcdserver"].as_str().expect("etcdserver")) >= (3, 5, 13));
    semver(v["etcdcluster"].as_str().expect("etcdcluster"));
    for (path, want) in [
        ("/health", "{\"health\":\"true\",\"reason\":\"\"}"),
        (
            "/health?serializable=true",
            "{\"health\":\"true\",\"reason\":\"\"}",
        ),
        (
            "/health?exclude=NOSPACE",
            "{\"health\":\"true\",\"reason\":\"\"}",
        ),
        ("/livez", "ok"),
        ("/readyz", "ok"),
        ("/readyz?exclude=linearizable_read", "ok"),
    ] {
        let (code, body) = http_get(&format!("{}{path}", tandem.url())).expect(path);
        assert_eq!((code, body.trim()), (200, want), "{path}");
    }
    let (code, body) = http_get(&format!("{}/readyz?verbose", tandem.url())).expect("verbose");
    assert_eq!(code, 200);
    assert!(body.contains("[+]linearizable_read ok"), "{body}");
    let (code, body) = http_get(&format!("{}/metrics", tandem.url())).expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "etcd_server_has_leader 1",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_version{server_version=",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    // Every etcd metric tandem exports is described exactly as etcd describes it.
    let etcd = Server::start(Kind::Etcd35).expect("etcd");
    let (_, etcd_body) = http_get(&format!("{}/metrics", etcd.url())).expect("etcd metrics");
    let helps: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("# HELP etcd_"))
        .collect();
    assert!(helps.len() >= 10, "{body}");
    for help in helps {
        assert!(
            etcd_body.lines().any(|l| l == help),
            "etcd 3.5 does not describe this metric so: {help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_matches_etcd() {
    on_both(&[], |url| async move {
        let mut out = Vec::new();
        for path in [
            "/health",
            "/health?serializable=true",
            "/health?exclude=NOSPACE",
        ] {
            let (code, body) = http_get(&format!("{url}{path}")).expect(path);
            out.push(format!("{path}: {code} {}", body.trim()));
        }
        out
    })
    .await;
}
