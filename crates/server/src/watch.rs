//! Watches. The hub keeps the events of the most recent revisions in a bounded ring; each watch
//! stream owns its watchers and pulls the events it still owes them, from the ring when they are
//! recent and from the keyspace when a watcher is further behind (etcd's unsynced watchers). So
//! memory is bounded whatever a slow client does, and every watcher gets every event exactly
//! once, in revision order, with all events of a revision in one response.
//!
//! A `WatchProgressRequest` is answered (watch id -1, the current revision) only when every
//! watcher of the stream has been sent everything up to that revision, so no event at or below
//! the reported revision can follow it.

use futures::FutureExt;
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_api::etcdserverpb as pb;
use etcd_api::etcdserverpb::watch_create_request::FilterType;
use etcd_api::etcdserverpb::watch_request::RequestUnion;
use etcd_api::rpctypes;
use futures::Stream;
use mvcc::auth::PermType;
use mvcc::{Event, EventType, KeyRange, Store};
use prost::Message;
use replication::ApplyListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::event_to_pb;
use crate::node::{Node, HAS_LEADER_METADATA};

/// Revisions kept in the hub's ring.
const RING_REVISIONS_MAX: usize = 8_192;
/// Bytes of event data kept in the ring (keys and values, roughly).
const RING_BYTES_MAX: usize = 16 << 20;
/// Revisions one watcher is sent per step when catching up, so one slow watcher cannot starve
/// the stream's other work.
const CATCH_UP_REVISIONS_MAX: usize = 1_000;
/// Responses buffered towards one client before the stream waits for it.
const STREAM_BUFFER_RESPONSES: usize = 128;
/// etcd's watch id for responses that belong to the whole stream.
const STREAM_WATCH_ID: i64 = -1;
/// The most requests of one stream handled before its watchers are served again.
const INBOUND_BATCH_MAX: usize = 1_024;

struct Ring {
    revs: VecDeque<(i64, Arc<Vec<Event>>)>,
    bytes: usize,
}

fn event_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| {
            e.kv.key.len()
                + e.kv.value.len()
                + e.prev_kv
                    .as_ref()
                    .map_or(0, |p| p.value.len() + p.key.len())
                + 64
        })
        .sum()
}

/// The events of recent revisions, shared by every watch stream.
pub struct WatchHub {
    ring: Mutex<Ring>,
    revision: watch::Sender<i64>,
    store: Arc<Store>,
}

impl WatchHub {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let (revision, _) = watch::channel(store.current_revision());
        Arc::new(Self {
            ring: Mutex::new(Ring {
                revs: VecDeque::new(),
                bytes: 0,
            }),
            revision,
            store,
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Events of revisions `from..=to` in `range`, at most `max_revisions` of them.
    fn events(
        &self,
        range: KeyRange<'_>,
        from: i64,
        to: i64,
        max_revisions: usize,
    ) -> Result<Vec<Event>, mvcc::Error> {
        {
            let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.revs.front().is_some_and(|(first, _)| *first <= from) {
                let mut out = Vec::new();
                let skip = (from - ring.revs[0].0) as usize;
                for (rev, evs) in ring.revs.iter().skip(skip).take(max_revisions) {
                    if *rev > to {
                        break;
                    }
                    out.extend(evs.iter().filter(|e| range.contains(&e.kv.key)).cloned());
                }
                return Ok(out);
            }
        }
        self.store.events(range, from, to, true, max_revisions)
    }
}

impl ApplyListener for WatchHub {
    fn applied(&self, events: Vec<Vec<Event>>, revision: i64) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            for evs in events.into_iter().filter(|e| !e.is_empty()) {
                let rev = evs[0].kv.mod_revision;
                if let Some((last, _)) = ring.revs.back() {
                    assert_eq!(
                        rev,
                        last + 1,
                        "revisions reach the watch hub in order without gaps"
                    );
                }
                ring.bytes += event_bytes(&evs);
                ring.revs.push_back((rev, Arc::new(evs)));
            }
            while ring.revs.len() > RING_REVISIONS_MAX
                || (ring.bytes > RING_BYTES_MAX && ring.revs.len() > 1)
            {
                if let Some((_, evs)) = ring.revs.pop_front() {
                    ring.bytes -= event_bytes(&evs);
                }
            }
        }
        self.revision.send_replace(revision);
    }

    fn reset(&self, revision: i64) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            ring.revs.clear();
            ring.bytes = 0;
        }
        self.revision.send_replace(revision);
    }
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The next revision this watcher has not been sent.
    next_rev: i64,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    /// Whether anything was sent since the last progress tick.
    sent_since_tick: bool,
    /// Caught up with the store: sent one response per revision from now on. A watcher that
    /// starts in the past catches up first, in responses of up to 1,000 revisions (as etcd's
    /// unsynced watchers do).
    synced: bool,
}

impl Watcher {
    fn range(&self) -> KeyRange<'_> {
        KeyRange::new(&self.key, &self.range_end)
    }

    fn wants(&self, e: &Event) -> bool {
        match e.kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        }
    }
}

/// One client stream and its watchers.
struct StreamState {
    node: Arc<Node>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    progress_requested: bool,
    /// The stream's credentials (its metadata and connection), checked at each create.
    metadata: tonic::metadata::MetadataMap,
    conn: Option<crate::conn::ConnInfo>,
}

/// The output side closed: the client went away.
struct Closed;

impl StreamState {
    async fn send(&self, r: pb::WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(r)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.node.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    async fn handle(&mut self, req: pb::WatchRequest, current: i64) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c, current).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    let mut r = self.response(c.watch_id, current);
                    r.canceled = true;
                    self.send(r).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest, current: i64) -> Result<(), Closed> {
        let mut r = self.response(STREAM_WATCH_ID, current);
        r.created = true;
        if !self.permitted(&c) {
            r.watch_id = c.watch_id;
            r.canceled = true;
            r.cancel_reason = rpctypes::PERMISSION_DENIED.message.into();
            return self.send(r).await;
        }
        let empty_range =
            !c.range_end.is_empty() && c.range_end.as_ref() != [0u8] && c.key >= c.range_end;
        if empty_range {
            r.canceled = true;
            r.cancel_reason = "mvcc: watcher range is empty".into();
            return self.send(r).await;
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                r.canceled = true;
                r.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
                return self.send(r).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        r.watch_id = id;
        self.send(r).await?;
        // etcd's compacted revision is -1 until the first compaction, so a negative start
        // revision is cancelled with -1 then. (etcd leaves a watch from exactly -1 silent
        // forever; tandem cancels it like any other negative start.)
        let compacted = match self.node.store.compacted_revision() {
            0 => -1,
            c => c,
        };
        if c.start_revision < 0 || (c.start_revision != 0 && c.start_revision < compacted) {
            let mut r = self.response(id, current);
            r.canceled = true;
            r.compact_revision = compacted;
            return self.send(r).await;
        }
        let filters: Vec<i32> = c.filters.clone();
        self.watchers.insert(
            id,
            Watcher {
                key: c.key.to_vec(),
                range_end: c.range_end.to_vec(),
                next_rev: if c.start_revision == 0 {
                    current + 1
                } else if crate::mutants::on("watch-from-rev-minus-1") {
                    c.start_revision - 1
                } else {
                    c.start_revision
                },
                prev_kv: c.prev_kv,
                progress_notify: c.progress_notify,
                no_put: filters.contains(&(FilterType::Noput as i32)),
                no_delete: filters.contains(&(FilterType::Nodelete as i32)),
                fragment: c.fragment,
                sent_since_tick: false,
                synced: c.start_revision == 0 || c.start_revision > current,
            },
        );
        Ok(())
    }

    /// etcd's `isWatchPermitted`, on the range as the client asked it: a watch from a key to
    /// the end (`range_end` "\0") is checked as that range (etcd 3.5.1 checked only its first
    /// key, so a permission on one key watched every key after it).
    fn permitted(&self, c: &pb::WatchCreateRequest) -> bool {
        if !self.node.store.auth_enabled() {
            return true;
        }
        let auth = self.node.store.auth();
        if !auth.enabled {
            return true;
        }
        let Ok(caller) = self
            .node
            .tokens
            .caller(&auth, &self.metadata, self.conn.as_ref())
        else {
            return false;
        };
        // etcd watches from "\0" when no key is given.
        let key: &[u8] = if c.key.is_empty() { &[0] } else { &c.key };
        auth.check_op(&caller, key, &c.range_end, PermType::Read)
            .is_ok()
    }

    fn behind(&self, current: i64) -> bool {
        self.watchers.values().any(|w| w.next_rev <= current)
    }

    /// Sends every watcher the events it is owed up to `current` (a bounded step for each).
    async fn deliver(&mut self, current: i64) -> Result<(), Closed> {
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_rev <= current)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            let from = w.next_rev;
            let to = current.min(from.saturating_add(CATCH_UP_REVISIONS_MAX as i64 - 1));
            let events = match self
                .node
                .hub
                .events(w.range(), from, to, CATCH_UP_REVISIONS_MAX)
            {
                Ok(evs) => evs,
                Err(mvcc::Error::Compacted) => {
                    self.watchers.remove(&id);
                    let mut r = self.response(id, current);
                    r.canceled = true;
                    r.compact_revision = self.node.store.compacted_revision();
                    self.send(r).await?;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading watch history");
                    let _ = self.out.send(Err(crate::errors::from_mvcc(e))).await;
                    return Err(Closed);
                }
            };
            let (prev_kv, fragment, synced) = (w.prev_kv, w.fragment, w.synced);
            let wanted: Vec<&Event> = events.iter().filter(|e| w.wants(e)).collect();
            // `to - from + 1` revisions fit the read limit, so everything up to `to` was read.
            let next = to + 1;
            if synced {
                for group in wanted.chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision) {
                    self.send_batch(
                        id,
                        group.iter().map(|e| event_to_pb(e, prev_kv)).collect(),
                        fragment,
                        current,
                    )
                    .await?;
                }
            } else if !wanted.is_empty() {
                self.send_batch(
                    id,
                    wanted.iter().map(|e| event_to_pb(e, prev_kv)).collect(),
                    fragment,
                    current,
                )
                .await?;
            }
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = next;
                w.synced |= next > current;
                if !wanted.is_empty() {
                    w.sent_since_tick = true;
                }
            }
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        id: i64,
        events: Vec<etcd_api::mvccpb::Event>,
        fragment: bool,
        current: i64,
    ) -> Result<(), Closed> {
        let limit = self.node.config.max_request_bytes as usize;
        let mut r = self.response(id, current);
        r.events = events;
        // etcd's rule: fragment only a response of two or more events that reaches the limit;
        // each piece takes events until adding one more would reach it.
        if !fragment || r.encoded_len() < limit || r.events.len() < 2 {
            return self.send(r).await;
        }
        let events = std::mem::take(&mut r.events);
        let mut piece = self.response(id, current);
        piece.fragment = true;
        for e in events {
            piece.events.push(e);
            if piece.events.len() > 1 && piece.encoded_len() >= limit {
                let last = piece.events.pop();
                let next = self.response(id, current);
                self.send(std::mem::replace(&mut piece, next)).await?;
                piece.fragment = true;
                piece.events.extend(last);
            }
        }
        piece.fragment = false;
        self.send(piece).await
    }

    /// Periodic progress: an empty response to each synced watcher that asked for progress
    /// notifications and was sent nothing since the last tick.
    async fn progress_tick(&mut self, current: i64) -> Result<(), Closed> {
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && !w.sent_since_tick && w.next_rev > current)
            .map(|(id, _)| *id)
            .collect();
        for w in self.watchers.values_mut() {
            w.sent_since_tick = false;
        }
        for id in due {
            self.send(self.response(id, current)).await?;
        }
        Ok(())
    }
}

/// The Watch gRPC service.
pub struct WatchService {
    pub node: Arc<Node>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        self.node.check_has_leader(&request)?;
        let needs_leader = request
            .metadata()
            .get(HAS_LEADER_METADATA)
            .is_some_and(|v| v.as_bytes() == b"true");
        let metadata = request.metadata().clone();
        let conn = request.extensions().get::<crate::conn::ConnInfo>().cloned();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_RESPONSES);
        let state = StreamState {
            metadata,
            conn,
            node: Arc::clone(&self.node),
            out: tx,
            watchers: BTreeMap::new(),
            next_id: 0,
            progress_requested: false,
        };
        tokio::spawn(run_stream(state, inbound, needs_leader));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn run_stream(
    mut s: StreamState,
    mut inbound: Streaming<pb::WatchRequest>,
    needs_leader: bool,
) {
    let mut revisions = s.node.hub.subscribe();
    let mut status = s.node.status_changes();
    let interval = s.node.config.progress_notify_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // etcd cancels `hasleader` streams after about three election timeouts without a leader.
    let leaderless_max = Duration::from_millis(3 * s.node.config.election_timeout_ms);
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    // A client that closes its side of the stream (etcd's JSON gateway does after the requests
    // in its body) still gets its events, as from etcd: the stream ends when the client goes.
    let mut inbound_open = true;
    loop {
        let current = *revisions.borrow_and_update();
        let behind = s.behind(current);
        let leader_deadline = leaderless_since.map(|t| t + leaderless_max);
        tokio::select! {
            biased;
            msg = inbound.message(), if inbound_open => match msg {
                Ok(Some(req)) => {
                    let current = *revisions.borrow();
                    if s.handle(req, current).await.is_err() { return; }
                    // Take every request already here before walking the watchers once: a
                    // burst of creates (an apiserver starting its watches) is then linear,
                    // not quadratic, and is read as fast as it arrives.
                    for _ in 1..INBOUND_BATCH_MAX {
                        match inbound.message().now_or_never() {
                            Some(Ok(Some(req))) => {
                                if s.handle(req, current).await.is_err() { return; }
                            }
                            Some(Ok(None)) => {
                                inbound_open = false;
                                break;
                            }
                            Some(Err(_)) => return,
                            None => break,
                        }
                    }
                }
                Ok(None) => inbound_open = false,
                Err(_) => return,
            },
            () = s.out.closed(), if !inbound_open => return,
            _ = std::future::ready(()), if behind => {}
            r = revisions.changed() => if r.is_err() { return },
            _ = ticker.tick() => {
                let current = *revisions.borrow();
                if s.progress_tick(current).await.is_err() { return; }
            }
            r = status.changed(), if needs_leader => {
                if r.is_err() { return; }
                let has_leader = status.borrow().leader.is_some();
                leaderless_since = match (has_leader, leaderless_since) {
                    (true, _) => None,
                    (false, None) => Some(tokio::time::Instant::now()),
                    (false, since) => since,
                };
            }
            _ = sleep_until_opt(leader_deadline) => {
                let _ = s.out.send(Err(etcd_api::rpctypes::NO_LEADER.status())).await;
                return;
            }
        }
        let current = *revisions.borrow();
        if s.deliver(current).await.is_err() {
            return;
        }
        if s.progress_requested && !s.behind(current) {
            s.progress_requested = false;
            if s.send(s.response(STREAM_WATCH_ID, current)).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
