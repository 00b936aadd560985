//! The scale the apiserver produces: 100 resource watchers on one stream plus 1,000 more (one per
//! object), 10,000 objects of 1–10 KiB, a steady stream of updates, and a consistent list taken
//! while the writes continue. Asserts that every watcher gets exactly its events, in order, and
//! that the list is exactly the objects at its revision. Prints the figures recorded in
//! docs/kubernetes.md (events/s delivered, worst watcher lag, peak RSS); it asserts none of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_api::etcdserverpb as pb;
use etcd_api::etcdserverpb::watch_request::RequestUnion;
use etcd_client::{Client, GetOptions};
use etcd_compat_tests::*;

const RESOURCES: usize = 100;
const OBJECTS: usize = 10_000;
const KEY_WATCHERS: usize = 1_000;
const UPDATES: usize = 5_000;
const WRITERS: usize = 16;
const WAIT: Duration = Duration::from_secs(120);

fn key(i: usize) -> String {
    format!("/registry/r{:02}/ns/obj-{i:05}", i % RESOURCES)
}

fn size(i: usize) -> usize {
    1024 + (i * 7919) % (9 * 1024)
}

fn watch_create(key: String, end: String, start: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into_bytes().into(),
            range_end: end.into_bytes().into(),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })),
    }
}

fn rss_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eleven_hundred_watchers_on_one_stream_under_steady_writes() {
    let server = Server::start(Kind::Tandem).expect("tandem");
    let url = server.url();

    // 10,000 objects of 1–10 KiB over 100 resources.
    put_concurrently(&url, WRITERS, OBJECTS, |i| (key(i), vec![b'o'; size(i)])).await;
    let mut c = Client::connect([url.clone()], None).await.expect("connect");
    let start = c
        .get(
            "/registry/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    assert_eq!(start.count() as usize, OBJECTS);
    let base = start.header().expect("h").revision();

    // One stream: 100 resource watchers, then 1,000 single-object watchers.
    let mut wc = pb::watch_client::WatchClient::connect(url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(2048);
    let mut ranges: Vec<(String, String)> = (0..RESOURCES)
        .map(|r| (format!("/registry/r{r:02}/"), format!("/registry/r{r:02}0")))
        .collect();
    ranges.extend((0..KEY_WATCHERS).map(|i| (key(i * (OBJECTS / KEY_WATCHERS)), String::new())));
    for (k, e) in &ranges {
        tx.send(watch_create(k.clone(), e.clone(), base + 1))
            .await
            .expect("create");
    }
    let mut stream = wc
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let mut created = 0;
    while created < ranges.len() {
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("open");
        assert!(r.created, "creates are answered first, in order");
        assert_eq!(r.watch_id as usize, created, "creates answered in order");
        created += 1;
    }

    // A steady stream of updates; the time each revision was acknowledged, for the lag figure.
    let acked: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let expected: Arc<Mutex<BTreeMap<i64, String>>> = Arc::default();
    let began = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, acked, expected) = (url.clone(), acked.clone(), expected.clone());
            tokio::spawn(async move {
                let mut c = Client::connect([url], None).await.expect("connect");
                for n in (w..UPDATES).step_by(WRITERS) {
                    let i = (n * 104_729) % OBJECTS;
                    let r = c
                        .put(key(i), vec![b'u'; size(n)], None)
                        .await
                        .expect("update");
                    let rev = r.header().expect("h").revision();
                    acked.lock().expect("acked").insert(rev, Instant::now());
                    expected.lock().expect("expected").insert(rev, key(i));
                }
            })
        })
        .collect();

    // A consistent list of one resource while the writes continue.
    let list = c
        .get(
            "/registry/r07/",
            Some(GetOptions::new().with_range("/registry/r070")),
        )
        .await
        .expect("list");
    let list_rev = list.header().expect("h").revision();

    // Read the stream until every watcher has every event.
    let mut per_watcher: Vec<Vec<(i64, String)>> = vec![Vec::new(); ranges.len()];
    let mut delivered = 0usize;
    let mut worst_lag = Duration::ZERO;
    let mut writers_done = false;
    let mut writers = Some(writers);
    loop {
        if !writers_done {
            if let Some(ws) = writers.as_ref() {
                if ws.iter().all(|w| w.is_finished()) {
                    for w in writers.take().expect("writers") {
                        w.await.expect("writer");
                    }
                    writers_done = true;
                }
            }
        }
        if writers_done {
            let want: usize = {
                let exp = expected.lock().expect("expected");
                exp.values()
                    .map(|k| {
                        ranges
                            .iter()
                            .filter(|(s, e)| {
                                if e.is_empty() {
                                    s == k
                                } else {
                                    k >= s && k < e
                                }
                            })
                            .count()
                    })
                    .sum()
            };
            if delivered == want {
                break;
            }
            assert!(delivered < want, "more events than writes");
        }
        let r = match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
            Ok(m) => m.expect("stream").expect("open"),
            Err(_) => continue,
        };
        for e in &r.events {
            let kv = e.kv.as_ref().expect("kv");
            assert!(e.prev_kv.is_some(), "prev_kv on every update");
            if let Some(t) = acked.lock().expect("acked").get(&kv.mod_revision) {
                worst_lag = worst_lag.max(t.elapsed());
            }
            per_watcher[r.watch_id as usize].push((
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).to_string(),
            ));
            delivered += 1;
        }
        assert!(began.elapsed() < WAIT * 3, "events stopped arriving");
    }
    let elapsed = began.elapsed();

    // Every watcher got exactly the writes in its range, in revision order.
    let exp = expected.lock().expect("expected").clone();
    for (w, (s, e)) in ranges.iter().enumerate() {
        let want: Vec<(i64, String)> = exp
            .iter()
            .filter(|(_, k)| {
                if e.is_empty() {
                    *k == s
                } else {
                    k.as_str() >= s.as_str() && k.as_str() < e.as_str()
                }
            })
            .map(|(r, k)| (*r, k.clone()))
            .collect();
        assert_eq!(per_watcher[w], want, "watcher {w} ({s})");
    }

    // The list is exactly resource r07 at its revision: the preload plus the updates up to it.
    let mut at_rev: BTreeMap<String, i64> = BTreeMap::new();
    for i in (0..OBJECTS).filter(|i| i % RESOURCES == 7) {
        at_rev.insert(key(i), 0);
    }
    let listed: BTreeMap<String, i64> = list
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().expect("utf8").to_string(), kv.mod_revision()))
        .collect();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        at_rev.keys().collect::<Vec<_>>()
    );
    for (rev, k) in exp.range(..=list_rev) {
        if at_rev.contains_key(k) {
            at_rev.insert(k.clone(), *rev);
        }
    }
    for (k, rev) in &at_rev {
        if *rev > 0 {
            assert_eq!(listed[k], *rev, "{k} at the list's revision {list_rev}");
        } else {
            assert!(listed[k] <= base, "{k} unchanged since the preload");
        }
    }

    let rss = rss_peak_kib(server.pid());
    println!(
        "scale: {} watchers on one stream, {OBJECTS} objects, {UPDATES} updates by {WRITERS} writers: \
         {delivered} events delivered in {:.2}s ({:.0} events/s), worst watcher lag {:.1} ms, peak RSS {} MiB",
        ranges.len(),
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        worst_lag.as_secs_f64() * 1000.0,
        rss / 1024
    );
}
