//! etcd's JSON gateway (`/v3/...`), compared with etcd 3.5.1 by curl, body for body after
//! normalization: KV, txn, compaction, watch and lease keep-alive streams, leases, the cluster,
//! maintenance (snapshot as a stream), locks and elections, authentication with the token in the
//! `Authorization` header, `/v3beta/`, and the errors (etcd's JSON error bodies and HTTP
//! statuses, a path the gateway does not serve, a method other than POST, a body that is not a
//! request).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_compat_tests::{etcdutl_bin, http_get, normalize, wait_until, Kind, Server};

/// Fields whose values differ between two servers without meaning anything: hashes, sizes,
/// versions, tokens, the random part of lock and election keys.
const VOLATILE: &[&str] = &[
    "hash",
    "version_status",
    "version",
    "token",
    "dbSize",
    "dbSizeInUse",
    "raftIndex",
    "raftAppliedIndex",
    "lease",
];

fn normalized(body: &str, keys_are_volatile: bool) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return normalize(body);
    };
    scrub(&mut v, keys_are_volatile);
    normalize(&serde_json::to_string(&v).expect("json"))
}

/// Fields of etcd 3.6's StatusResponse that tandem fills (in gRPC as well) and etcd 3.5.1's
/// older message does not have.
const NEWER_THAN_3_5: &[&str] = &["dbSizeQuota", "downgradeInfo", "storageVersion"];

fn scrub(v: &mut serde_json::Value, keys_are_volatile: bool) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !NEWER_THAN_3_5.contains(&k.as_str()));
            for (k, v) in m.iter_mut() {
                let volatile = VOLATILE.contains(&k.as_str())
                    // `version` is a key's version in a key-value, the server's in a status.
                    && !(k == "version" && v.as_str().is_some_and(|s| s.parse::<u64>().is_ok()))
                    || (keys_are_volatile && k == "key");
                if volatile && !v.is_object() {
                    *v = Value::String("<volatile>".into());
                } else {
                    scrub(v, keys_are_volatile);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| scrub(v, keys_are_volatile)),
        _ => {}
    }
}

/// One recorded exchange of a scenario.
struct Gateway {
    url: String,
    lines: Vec<String>,
    token: Option<String>,
}

struct Answer {
    status: String,
    content_type: String,
    body: String,
}

fn curl(url: &str, path: &str, body: Option<&str>, token: Option<&str>, get: bool) -> Answer {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
    ]);
    if !get {
        c.args(["-X", "POST"]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: {t}")]);
    }
    c.arg(format!("{url}{path}"));
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    Answer {
        status: status.to_string(),
        content_type: content_type.to_string(),
        body: body.to_string(),
    }
}

impl Gateway {
    fn new(server: &Server) -> Self {
        Self {
            url: server.url(),
            lines: Vec::new(),
            token: None,
        }
    }

    fn record(&mut self, what: String, a: &Answer, body: String) {
        self.lines
            .push(format!("{what}\n[{} {}]\n{body}", a.status, a.content_type));
    }

    /// POSTs `body` to `path` and records the status, content type and normalized body.
    fn post(&mut self, path: &str, body: &str) -> serde_json::Value {
        self.post_with(path, body, false)
    }

    /// As `post`, with keys (lock and election keys hold a lease id) normalized away.
    fn post_keys_volatile(&mut self, path: &str, body: &str) -> serde_json::Value {
        self.post_with(path, body, true)
    }

    fn post_with(&mut self, path: &str, body: &str, keys_volatile: bool) -> serde_json::Value {
        let a = curl(&self.url, path, Some(body), self.token.as_deref(), false);
        // A request naming a lock or election key shows it as it does in answers.
        let shown = if keys_volatile {
            normalized(body, true)
        } else {
            body.to_string()
        };
        let text = a
            .body
            .lines()
            .map(|l| normalized(l, keys_volatile))
            .collect::<Vec<_>>()
            .join("\n");
        self.record(format!("POST {path} {shown}"), &a, text);
        serde_json::from_str(a.body.lines().next().unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }

    /// A body the gateway cannot decode: the HTTP status and the error's gRPC code must match;
    /// the message is the JSON decoder's own (Go's on etcd).
    fn post_undecodable(&mut self, path: &str, body: &str) {
        let a = curl(&self.url, path, Some(body), None, false);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        let same = v["error"] == v["message"] && v["error"].is_string();
        self.record(
            format!("POST {path} {body} (undecodable)"),
            &a,
            format!("code {} error=message {same}", v["code"]),
        );
    }

    /// A streaming call kept open until `lines` lines have arrived, then ended by the client.
    fn stream(
        &mut self,
        dir: &Path,
        path: &str,
        body: &str,
        (ready, lines): (usize, usize),
        during: impl FnOnce(&mut Self),
    ) {
        let out = dir.join(format!("stream-{}", self.lines.len()));
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-X", "POST", "--data-binary", body, "-o"])
            .arg(&out)
            .args(["-w", "\n%{http_code} %{content_type}"])
            .arg(format!("{}{path}", self.url))
            .stdout(Stdio::null())
            .spawn()
            .expect("curl");
        let count = |with: &str| {
            std::fs::read_to_string(&out)
                .map(|s| {
                    s.lines()
                        .filter(|l| l.starts_with('{') && l.contains(with))
                        .count()
                })
                .unwrap_or(0)
        };
        // `during` runs once `ready` watchers are created.
        wait_until("the stream's watchers", Duration::from_secs(10), || {
            count(r#""created":true"#) >= ready
        })
        .expect("watchers created");
        during(self);
        wait_until("the stream's answers", Duration::from_secs(10), || {
            count("") >= lines
        })
        .expect("stream answers");
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&out).expect("stream output");
        // Each watcher's answers in order; how two watchers' answers interleave, and the
        // revision a history batch is sent at, depend on timing (etcd syncs unsynced watchers
        // every 100 ms, tandem at once).
        let mut answers: Vec<(String, String)> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                let id = v["result"]["watch_id"].to_string();
                if let Some(h) = v["result"]["header"].as_object_mut() {
                    h.remove("revision");
                }
                (id, normalized(&v.to_string(), false))
            })
            .collect();
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        let answers: Vec<String> = answers.into_iter().map(|(_, l)| l).collect();
        self.lines
            .push(format!("STREAM {path} {body}\n{}", answers.join("\n")));
    }
}

/// The snapshot stream's blobs, put together, are a database `etcdutl snapshot status` reads
/// (etcd 3.6, whose version tandem reports, also sends a header and version in each answer).
fn snapshot(g: &mut Gateway, dir: &Path) {
    use base64::Engine;
    let a = curl(&g.url, "/v3/maintenance/snapshot", Some("{}"), None, false);
    let mut db = Vec::new();
    for line in a.body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON answer");
        let blob = v["result"]["blob"]
            .as_str()
            .expect("a blob in every answer");
        db.extend(
            base64::engine::general_purpose::STANDARD
                .decode(blob)
                .expect("base64"),
        );
    }
    let file = dir.join("gateway.db");
    std::fs::write(&file, &db).expect("write snapshot");
    let out = Command::new(etcdutl_bin())
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .expect("etcdutl");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    g.record(
        "POST /v3/maintenance/snapshot".into(),
        &a,
        format!("etcdutl snapshot status: revision {}", status["revision"]),
    );
}

fn scenario(server: &Server) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = Gateway::new(server);
    // KV.
    g.post("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    g.post(
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
    );
    g.post("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    g.post("/v3/kv/range", r#"{"key":"Zm9v","count_only":true}"#);
    g.post("/v3/kv/range", r#"{"key":"bm8="}"#);
    g.post("/v3/kv/range", r#"{"key":"Zm9v","revision":100}"#);
    g.post("/v3/kv/range", r#"{"key":"Zm9v","revision":"3"}"#);
    g.post("/v3/kv/range", "");
    g.post(
        "/v3/kv/range",
        r#"{"key":"Zm9v","no_such_field":1} and more"#,
    );
    g.post("/v3beta/kv/range", r#"{"key":"Zm9v"}"#);
    g.post(
        "/v3/kv/range",
        r#"{"key":"AA==","range_end":"AA==","sort_order":"DESCEND","sort_target":"MOD","limit":1}"#,
    );
    g.post_undecodable("/v3/kv/range", r#"{"key":1}"#);
    g.post_undecodable("/v3/kv/range", "garbage");
    g.post("/v3/kv/nosuch", "{}");
    let a = curl(&g.url, "/v3/kv/range", None, None, true);
    g.record("GET /v3/kv/range".into(), &a, a.body.clone());
    g.post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"YQ==","value":"MQ=="}}],"failure":[{"request_delete_range":{"key":"Zm9v"}}]}"#,
    );
    g.post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"GREATER","target":"VERSION","version":"5"}],"success":[],"failure":[{"request_delete_range":{"key":"YQ==","prev_kv":true}}]}"#,
    );
    g.post("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#);
    g.post("/v3/kv/compaction", r#"{"revision":2}"#);
    g.post("/v3/kv/compaction", r#"{"revision":2}"#);
    g.post("/v3/kv/range", r#"{"key":"Zm9v","revision":1}"#);
    // Watch: two watchers on one stream (two JSON objects in the body), history and a new put.
    g.stream(
        dir.path(),
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v","start_revision":3}}{"create_request":{"key":"Yg==","range_end":"Yw=="}}"#,
        (2, 4),
        |g| {
            // Both watchers are created before the put.
            g.post("/v3/kv/put", r#"{"key":"Yg==","value":"Mg=="}"#);
        },
    );
    g.post_undecodable("/v3/watch", "xx");
    // Leases.
    g.post("/v3/lease/grant", r#"{"TTL":60,"ID":5}"#);
    g.post("/v3/lease/grant", r#"{"TTL":60,"ID":5}"#);
    g.post("/v3/kv/put", r#"{"key":"bA==","value":"MQ==","lease":5}"#);
    g.post("/v3/lease/keepalive", r#"{"ID":5}"#);
    g.post("/v3/lease/timetolive", r#"{"ID":5,"keys":true}"#);
    g.post("/v3/kv/lease/timetolive", r#"{"ID":"5"}"#);
    g.post("/v3/lease/leases", "{}");
    g.post("/v3/kv/lease/leases", "{}");
    g.post("/v3/lease/revoke", r#"{"ID":5}"#);
    g.post("/v3/kv/lease/revoke", r#"{"ID":"5"}"#);
    g.post("/v3/lease/timetolive", r#"{"ID":5}"#);
    // The cluster and maintenance.
    g.post("/v3/cluster/member/list", "{}");
    g.post("/v3/cluster/member/list", r#"{"linearizable":true}"#);
    g.post("/v3/maintenance/status", "{}");
    g.post("/v3/maintenance/hash", "{}");
    g.post("/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    g.post("/v3/maintenance/transfer-leadership", r#"{"targetID":1}"#);
    snapshot(&mut g, dir.path());
    // Locks and elections.
    let lock = g.post_keys_volatile("/v3/lock/lock", r#"{"name":"bXlsb2Nr"}"#);
    let key = lock["key"].as_str().unwrap_or_default().to_string();
    g.post_keys_volatile("/v3/lock/unlock", &format!(r#"{{"key":"{key}"}}"#));
    g.post("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#);
    let won = g.post_keys_volatile(
        "/v3/election/campaign",
        r#"{"name":"ZWw=","value":"djE=","lease":7}"#,
    );
    g.post_keys_volatile("/v3/election/leader", r#"{"name":"ZWw="}"#);
    g.post("/v3/election/leader", r#"{"name":"bm9uZQ=="}"#);
    let leader = won["leader"].to_string();
    g.post_keys_volatile(
        "/v3/election/proclaim",
        &format!(r#"{{"leader":{leader},"value":"djI="}}"#),
    );
    g.post_keys_volatile("/v3/election/leader", r#"{"name":"ZWw="}"#);
    g.post_keys_volatile("/v3/election/resign", &format!(r#"{{"leader":{leader}}}"#));
    g.post("/v3/election/leader", r#"{"name":"ZWw="}"#);
    // Authentication: the token in the Authorization header.
    g.post(
        "/v3/auth/user/add",
        r#"{"name":"root","password":"rootpw"}"#,
    );
    g.post("/v3/auth/role/add", r#"{"name":"root"}"#);
    g.post("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#);
    g.post(
        "/v3/auth/user/add",
        r#"{"name":"alice","password":"alicepw"}"#,
    );
    g.post("/v3/auth/role/add", r#"{"name":"reader"}"#);
    g.post(
        "/v3/auth/role/grant",
        r#"{"name":"reader","perm":{"permType":"READ","key":"Zm9v","range_end":"Zm9w"}}"#,
    );
    g.post("/v3/auth/user/grant", r#"{"user":"alice","role":"reader"}"#);
    g.post("/v3/auth/enable", "{}");
    g.post("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    g.post(
        "/v3/auth/authenticate",
        r#"{"name":"alice","password":"wrong"}"#,
    );
    let auth = g.post(
        "/v3/auth/authenticate",
        r#"{"name":"alice","password":"alicepw"}"#,
    );
    g.token = auth["token"].as_str().map(str::to_string);
    g.post("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    g.post("/v3/kv/put", r#"{"key":"Zm9v","value":"eA=="}"#);
    g.post("/v3/auth/role/get", r#"{"role":"reader"}"#);
    g.post("/v3/auth/user/list", "{}");
    g.token = Some("not-a-token".into());
    g.post("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    let root = g.post(
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"rootpw"}"#,
    );
    g.token = root["token"].as_str().map(str::to_string);
    g.post("/v3/auth/user/list", "{}");
    g.post("/v3/auth/role/list", "{}");
    g.post("/v3/auth/user/get", r#"{"name":"alice"}"#);
    g.post("/v3/auth/status", "{}");
    g.post("/v3/auth/disable", "{}");
    g.token = None;
    g.post("/v3/auth/status", "{}");
    g.lines
}

#[test]
fn the_json_gateway_answers_as_etcd_3_5() {
    let etcd = Server::start_with(Kind::Etcd35, &[]).expect("etcd");
    let tandem = Server::start_with(Kind::Tandem, &[]).expect("tandem");
    let reference = scenario(&etcd);
    let ours = scenario(&tandem);
    if std::env::var_os("TANDEM_SHOW_TRANSCRIPT").is_some() {
        println!("{}", reference.join("\n"));
    }
    for (i, (a, b)) in reference.iter().zip(&ours).enumerate() {
        assert_eq!(
            a, b,
            "step {i} differs: etcd 3.5.1 (left) vs tandem (right)"
        );
    }
    assert_eq!(reference.len(), ours.len());
    // Gateway calls are gRPC calls: counted in grpc_server_* as etcd counts them.
    for method in [
        "Range",
        "Put",
        "Txn",
        "Watch",
        "LeaseGrant",
        "Lock",
        "Authenticate",
    ] {
        assert_eq!(
            started(&tandem, method),
            started(&etcd, method),
            "grpc_server_started_total for {method}: tandem (left), etcd 3.5.1 (right)"
        );
    }
}

/// `grpc_server_started_total` for `method`, summed over services and types.
fn started(server: &Server, method: &str) -> u64 {
    let (_, metrics) = http_get(&format!("{}/metrics", server.url())).expect("/metrics");
    let label = format!("grpc_method=\"{method}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
