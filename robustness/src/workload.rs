//! The workload: clients that drive the apiserver's shapes of requests over a few keys, each
//! with a unique value per write, and watchers of the whole key prefix that resume after an
//! error from the revision after the last one delivered. Everything goes to the [`Recorder`].

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Event, Kv, Op, Outcome, Record, Recorder, WatchRecord, WatchResponse};

/// The keys every client works on.
pub const KEY_PREFIX: &str = "key/";
/// A request not answered within this is recorded as failed (indeterminate).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Config {
    pub clients: u32,
    pub keys: u32,
    /// Pause between one client's operations (a modest rate keeps histories small).
    pub pace: Duration,
    pub lease_ttl: i64,
    pub seed: u64,
    /// Besides the balanced clients, two clients per member that talk to that member alone:
    /// one sends only linearizable gets and ranges, the other the whole mix. A member that
    /// answers without knowing it is current (a deposed or partitioned leader) is then read
    /// from throughout a fault, while the majority side goes on taking writes; balanced
    /// clients soon all wait on a write stuck at the cut-off member, and then nothing is
    /// written for a stale read to miss.
    pub pinned: bool,
    /// Only linearizable gets and ranges (a pinned reader).
    pub reads_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            clients: 6,
            keys: 10,
            pace: Duration::from_millis(2),
            lease_ttl: 5,
            seed: 1,
            pinned: true,
            reads_only: false,
        }
    }
}

pub fn key(i: u32) -> String {
    format!("{KEY_PREFIX}{i:02}")
}

fn kv(k: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: String::from_utf8_lossy(k.value()).into_owned(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        version: k.version(),
        lease: k.lease(),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

/// Connects to every endpoint (the client balances and fails over).
pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(OP_TIMEOUT);
    Ok(Client::connect(endpoints, Some(opts)).await?)
}

async fn execute(c: &mut Client, op: &Op) -> Outcome {
    let r = tokio::time::timeout(OP_TIMEOUT, execute_inner(c, op)).await;
    match r {
        Err(_) => Outcome::Failed {
            error: "timeout".into(),
        },
        Ok(Err(e)) => Outcome::Failed {
            error: e.to_string(),
        },
        Ok(Ok(o)) => o,
    }
}

async fn execute_inner(c: &mut Client, op: &Op) -> Result<Outcome, etcd_client::Error> {
    Ok(match op {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            let r = c.put(key.as_str(), value.as_str(), opts).await?;
            Outcome::Put {
                revision: header_rev(r.header()),
            }
        }
        Op::Get { key } => {
            let r = c.get(key.as_str(), None).await?;
            Outcome::Read {
                revision: header_rev(r.header()),
                kvs: r.kvs().iter().map(kv).collect(),
            }
        }
        Op::Range { start, end } => {
            let r = c
                .get(
                    start.as_str(),
                    Some(GetOptions::new().with_range(end.as_str())),
                )
                .await?;
            Outcome::Read {
                revision: header_rev(r.header()),
                kvs: r.kvs().iter().map(kv).collect(),
            }
        }
        Op::Delete { key } => {
            let r = c.delete(key.as_str(), None).await?;
            Outcome::Delete {
                revision: header_rev(r.header()),
                deleted: r.deleted(),
            }
        }
        Op::Txn { key, expect, value } => {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *expect,
                )])
                .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let r = c.txn(txn).await?;
            let mut kvs = Vec::new();
            for op in r.op_responses() {
                if let etcd_client::TxnOpResponse::Get(g) = op {
                    kvs.extend(g.kvs().iter().map(kv));
                }
            }
            Outcome::Txn {
                revision: header_rev(r.header()),
                succeeded: r.succeeded(),
                kvs,
            }
        }
        Op::LeaseGrant { ttl } => {
            let r = c.lease_grant(*ttl, None).await?;
            Outcome::LeaseGrant {
                revision: header_rev(r.header()),
                id: r.id(),
                ttl: r.ttl(),
            }
        }
        Op::LeaseRevoke { id } => {
            let r = c.lease_revoke(*id).await?;
            Outcome::LeaseRevoke {
                revision: header_rev(r.header()),
            }
        }
        Op::LeaseKeepAlive { id } => {
            let (mut keeper, mut stream) = c.lease_keep_alive(*id).await?;
            keeper.keep_alive().await?;
            let ttl = match stream.message().await? {
                Some(r) => r.ttl(),
                None => 0,
            };
            Outcome::KeepAlive { ttl }
        }
    })
}

/// What one client remembers between operations: the last mod revision it saw per key (for
/// its optimistic updates) and its leases.
struct ClientState {
    mod_revs: Vec<i64>,
    /// Leases this client keeps alive (and may revoke).
    leases: Vec<i64>,
    /// Leases it attaches keys to but never keeps alive: they expire.
    abandoned: Vec<i64>,
    seq: u64,
}

fn choose(rng: &mut StdRng, cfg: &Config, id: u32, st: &mut ClientState) -> Op {
    let k = rng.gen_range(0..cfg.keys);
    let key = key(k);
    st.seq += 1;
    let value = format!("c{id}-{}", st.seq);
    if cfg.reads_only {
        return match rng.gen_range(0..2) {
            0 => Op::Get { key },
            _ => Op::Range {
                start: KEY_PREFIX.to_string(),
                end: prefix_end(KEY_PREFIX),
            },
        };
    }
    match rng.gen_range(0..100) {
        0..=24 => Op::Put {
            key,
            value,
            lease: 0,
        },
        25..=29 if !st.leases.is_empty() || !st.abandoned.is_empty() => {
            // Keys of each lease's own, so that other writes do not detach them before it ends.
            let all: Vec<i64> = st.leases.iter().chain(&st.abandoned).copied().collect();
            let lease = all[rng.gen_range(0..all.len())];
            Op::Put {
                key: format!("{KEY_PREFIX}lease-{lease:x}-{}", rng.gen_range(0..3)),
                value,
                lease,
            }
        }
        30..=49 => Op::Get { key },
        50..=57 => Op::Range {
            start: KEY_PREFIX.to_string(),
            end: prefix_end(KEY_PREFIX),
        },
        58..=79 => Op::Txn {
            key,
            expect: st.mod_revs[k as usize],
            value,
        },
        80..=85 => Op::Delete { key },
        86..=87 if st.leases.len() < 3 => Op::LeaseGrant { ttl: cfg.lease_ttl },
        89..=96 if !st.leases.is_empty() => Op::LeaseKeepAlive {
            id: st.leases[rng.gen_range(0..st.leases.len())],
        },
        97..=99 if !st.leases.is_empty() => {
            let i = rng.gen_range(0..st.leases.len());
            Op::LeaseRevoke {
                id: st.leases.remove(i),
            }
        }
        _ => Op::Get { key },
    }
}

fn remember(st: &mut ClientState, op: &Op, outcome: &Outcome) {
    let idx = |key: &str| key[KEY_PREFIX.len()..].parse::<usize>().ok();
    match (op, outcome) {
        (
            Op::Txn { key, .. },
            Outcome::Txn {
                succeeded: true,
                revision,
                ..
            },
        )
        | (Op::Put { key, .. }, Outcome::Put { revision }) => {
            if let Some(i) = idx(key) {
                st.mod_revs[i] = *revision;
            }
        }
        (Op::Get { key }, Outcome::Read { kvs, .. })
        | (Op::Txn { key, .. }, Outcome::Txn { kvs, .. }) => {
            if let Some(i) = idx(key) {
                st.mod_revs[i] = kvs.first().map_or(0, |kv| kv.mod_revision);
            }
        }
        (Op::Delete { key }, Outcome::Delete { .. }) => {
            if let Some(i) = idx(key) {
                st.mod_revs[i] = 0;
            }
        }
        // Every other lease is left to expire.
        (Op::LeaseGrant { .. }, Outcome::LeaseGrant { id, .. }) if st.seq.is_multiple_of(2) => {
            st.abandoned.truncate(2);
            st.abandoned.insert(0, *id);
        }
        (Op::LeaseGrant { .. }, Outcome::LeaseGrant { id, .. }) => st.leases.push(*id),
        (Op::LeaseKeepAlive { id }, Outcome::KeepAlive { ttl }) if *ttl <= 0 => {
            st.leases.retain(|l| l != id)
        }
        _ => {}
    }
}

/// One client: operations one after another until `stop` is set.
pub async fn run_client(
    endpoints: Vec<String>,
    cfg: Config,
    id: u32,
    rec: Recorder,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003) + u64::from(id));
    let mut st = ClientState {
        mod_revs: vec![0; cfg.keys as usize],
        leases: Vec::new(),
        abandoned: Vec::new(),
        seq: 0,
    };
    let mut client = None;
    while !*stop.borrow() {
        if client.is_none() {
            client = connect(&endpoints).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await; // pacing, not waiting on a condition
                continue;
            }
        }
        let c = client.as_mut().expect("connected");
        let op = choose(&mut rng, &cfg, id, &mut st);
        let call = rec.now();
        let outcome = execute(c, &op).await;
        let ret = rec.now();
        remember(&mut st, &op, &outcome);
        rec.op(Record {
            client: id,
            call,
            ret,
            op,
            outcome,
        });
        tokio::time::sleep(cfg.pace).await; // pacing
    }
}

fn event(e: &etcd_client::Event) -> Option<(i64, Event)> {
    let k = e.kv()?;
    Some((
        k.mod_revision(),
        Event {
            put: e.event_type() == etcd_client::EventType::Put,
            kv: kv(k),
            prev_kv: e.prev_kv().map(kv),
        },
    ))
}

fn timed_out(deadline: Option<tokio::time::Instant>) -> bool {
    deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
}

/// How long a watcher may take, once the run has ended, to deliver every revision up to the
/// final one.
pub const CATCH_UP: Duration = Duration::from_secs(10);

/// A watcher of every key from `from`; on an error it records the stream and resumes from the
/// revision after the last event delivered (a new stream). When `target` becomes the run's
/// final revision, it goes on until it has delivered every event up to it (within
/// [`CATCH_UP`], else its last record says how far behind it stayed), then returns.
pub async fn run_watcher(
    endpoints: Vec<String>,
    id: u32,
    from: i64,
    rec: Recorder,
    mut target: tokio::sync::watch::Receiver<Option<i64>>,
) {
    let mut next = from;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let goal = *target.borrow();
        if let Some(goal) = goal {
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + CATCH_UP);
            if next > goal {
                return;
            }
        }
        let mut record = WatchRecord {
            client: id,
            start: KEY_PREFIX.to_string(),
            end: prefix_end(KEY_PREFIX),
            start_revision: next,
            responses: Vec::new(),
            behind: None,
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(next);
        let stream = match connect(&endpoints).await {
            Ok(mut c) => c.watch(KEY_PREFIX, Some(opts)).await.ok(),
            Err(_) => None,
        };
        let Some(mut stream) = stream else {
            if timed_out(deadline) {
                record.behind = goal;
                rec.watch(record);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // pacing reconnects
            continue;
        };
        loop {
            let wait_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + CATCH_UP);
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = target.changed(), if deadline.is_none() => {
                    // The run has ended: catch up on this stream.
                    deadline = Some(tokio::time::Instant::now() + CATCH_UP);
                    if (*target.borrow()).is_some_and(|g| next > g) {
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wait_until), if deadline.is_some() => break,
            };
            let Ok(Some(resp)) = msg else { break };
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter_map(event)
                .map(|e| e.1)
                .collect();
            if let Some(last) = events.last() {
                next = last.kv.mod_revision + 1;
            }
            record.responses.push(WatchResponse {
                received: rec.now(),
                revision: header_rev(resp.header()),
                events,
                canceled: resp.canceled(),
                compact_revision: resp.compact_revision(),
            });
            let done = (*target.borrow()).is_some_and(|g| next > g);
            if resp.canceled() || done {
                break;
            }
        }
        let goal = *target.borrow();
        let caught_up = goal.is_some_and(|g| next > g);
        if goal.is_some() && !caught_up && timed_out(deadline) {
            record.behind = goal;
            rec.watch(record);
            return;
        }
        rec.watch(record);
        if caught_up {
            return;
        }
    }
}

/// The end of the range of keys with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    if let Some(last) = b.last_mut() {
        *last += 1;
    }
    String::from_utf8(b).expect("ascii prefix")
}

/// The whole revision history: every event on the key prefix from revision 1 up to `last`,
/// read with one watch from `endpoint`.
pub async fn read_truth(endpoint: &str, last: i64) -> anyhow::Result<Vec<(i64, Event)>> {
    let mut c = connect(&[endpoint.to_string()]).await?;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(1);
    let mut stream = c.watch(KEY_PREFIX, Some(opts)).await?;
    let mut out = Vec::new();
    let mut reached = last <= 1;
    while !reached {
        let resp = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("the history watch stalled before revision {last}"))??
            .ok_or_else(|| anyhow::anyhow!("the history watch ended"))?;
        if resp.canceled() {
            anyhow::bail!("the history watch was cancelled: {}", resp.cancel_reason());
        }
        for ev in resp.events().iter().filter_map(event) {
            reached |= ev.0 >= last;
            if ev.0 <= last {
                out.push(ev);
            }
        }
    }
    Ok(out)
}
