//! etcd's gRPC server metrics, as go-grpc-prometheus counts them for etcd: each call started
//! (`grpc_server_started_total`), each call handled with its status code
//! (`grpc_server_handled_total`, counted when the handler's last message and status leave, so a
//! watch counts when it ends), and with `--metrics=extensive` the time each took
//! (`grpc_server_handling_seconds`, Prometheus's default buckets); the messages received and
//! sent per method (`grpc_server_msg_received_total`, `_sent_total`) and the bytes
//! (`etcd_network_client_grpc_received_bytes_total`, `_sent_bytes_total`). Labels are etcd's: service,
//! method and type (`unary`, `server_stream`, `bidi_stream`) of the methods etcd serves; calls
//! to other paths are not counted.
//!
//! A layer around the client service: it reads the status from the response headers (a
//! trailers-only answer, which is how errors leave) or from the body's trailers, and counts a
//! call whose response body is dropped before its trailers as `Canceled`, as gRPC-go does when
//! the client goes away. Labels are static strings, so counting allocates nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderMap, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A method as its metrics name it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    grpc_method: &'static str,
    grpc_service: &'static str,
    grpc_type: &'static str,
}

/// A method and the status code a call of it ended with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Handled {
    grpc_code: &'static str,
    grpc_method: &'static str,
    grpc_service: &'static str,
    grpc_type: &'static str,
}

/// etcd's services and their methods with their kind (etcd's `rpc.proto`, `v3lock.proto`,
/// `v3election.proto`).
const METHODS: &[(&str, &[(&str, &str)])] = &[
    (
        "etcdserverpb.KV",
        &[
            ("Range", "unary"),
            ("Put", "unary"),
            ("DeleteRange", "unary"),
            ("Txn", "unary"),
            ("Compact", "unary"),
        ],
    ),
    ("etcdserverpb.Watch", &[("Watch", "bidi_stream")]),
    (
        "etcdserverpb.Lease",
        &[
            ("LeaseGrant", "unary"),
            ("LeaseRevoke", "unary"),
            ("LeaseKeepAlive", "bidi_stream"),
            ("LeaseTimeToLive", "unary"),
            ("LeaseLeases", "unary"),
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            ("MemberAdd", "unary"),
            ("MemberRemove", "unary"),
            ("MemberUpdate", "unary"),
            ("MemberList", "unary"),
            ("MemberPromote", "unary"),
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", "unary"),
            ("Status", "unary"),
            ("Defragment", "unary"),
            ("Hash", "unary"),
            ("HashKV", "unary"),
            ("Snapshot", "server_stream"),
            ("MoveLeader", "unary"),
            ("Downgrade", "unary"),
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            ("AuthEnable", "unary"),
            ("AuthDisable", "unary"),
            ("AuthStatus", "unary"),
            ("Authenticate", "unary"),
            ("UserAdd", "unary"),
            ("UserGet", "unary"),
            ("UserList", "unary"),
            ("UserDelete", "unary"),
            ("UserChangePassword", "unary"),
            ("UserGrantRole", "unary"),
            ("UserRevokeRole", "unary"),
            ("RoleAdd", "unary"),
            ("RoleGet", "unary"),
            ("RoleList", "unary"),
            ("RoleDelete", "unary"),
            ("RoleGrantPermission", "unary"),
            ("RoleRevokePermission", "unary"),
        ],
    ),
    ("v3lockpb.Lock", &[("Lock", "unary"), ("Unlock", "unary")]),
    (
        "v3electionpb.Election",
        &[
            ("Campaign", "unary"),
            ("Proclaim", "unary"),
            ("Leader", "unary"),
            ("Observe", "server_stream"),
            ("Resign", "unary"),
        ],
    ),
];

/// gRPC's status codes by number, named as go-grpc-prometheus names them.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The method a request path (`/service/method`) names, if etcd serves it.
fn call_of(path: &str) -> Option<Call> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (grpc_service, methods) = METHODS.iter().find(|(s, _)| *s == service)?;
    let (grpc_method, grpc_type) = methods.iter().find(|(m, _)| *m == method)?;
    Some(Call {
        grpc_method,
        grpc_service,
        grpc_type,
    })
}

fn code_of(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(
        v.parse::<usize>()
            .ok()
            .and_then(|c| CODES.get(c).copied())
            .unwrap_or("Unknown"),
    )
}

/// The counters, shared by every client listener.
#[derive(Clone)]
pub struct GrpcMetrics {
    started: Family<Call, Counter>,
    /// Messages received and sent, per method (a unary call's request and answer count too).
    msg_received: Family<Call, Counter>,
    msg_sent: Family<Call, Counter>,
    handled: Family<Handled, Counter>,
    /// With `--metrics=extensive`.
    handling: Option<Family<Call, Histogram>>,
    /// Bytes of etcd's calls sent to and received from clients (gRPC's 5-byte message prefixes
    /// included; etcd counts what its codec marshals and unmarshals).
    sent_bytes: Counter,
    received_bytes: Counter,
}

fn handling_histogram() -> Histogram {
    // Prometheus's default buckets, which go-grpc-prometheus uses.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl GrpcMetrics {
    pub fn new(extensive: bool) -> Self {
        GrpcMetrics {
            started: Family::default(),
            msg_received: Family::default(),
            msg_sent: Family::default(),
            handled: Family::default(),
            handling: extensive
                .then(|| Family::new_with_constructor(handling_histogram as fn() -> Histogram)),
            sent_bytes: Counter::default(),
            received_bytes: Counter::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            self.msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            self.msg_sent.clone(),
        );
        registry.register(
            "etcd_network_client_grpc_sent_bytes",
            "The total number of bytes sent to grpc clients.",
            self.sent_bytes.clone(),
        );
        registry.register(
            "etcd_network_client_grpc_received_bytes",
            "The total number of bytes received from grpc clients.",
            self.received_bytes.clone(),
        );
        if let Some(h) = &self.handling {
            registry.register(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                h.clone(),
            );
        }
    }

    fn done(&self, call: &Call, code: &'static str, started: Instant) {
        self.handled
            .get_or_create(&Handled {
                grpc_code: code,
                grpc_method: call.grpc_method,
                grpc_service: call.grpc_service,
                grpc_type: call.grpc_type,
            })
            .inc();
        if let Some(h) = &self.handling {
            h.get_or_create(call)
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// The layer counting every call through the client service.
#[derive(Clone)]
pub struct CountCalls(pub Arc<GrpcMetrics>);

impl<S> tower::Layer<S> for CountCalls {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counting {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, B, RB> tower::Service<Request<B>> for Counting<S>
where
    S: tower::Service<Request<CountedRequest<B>>, Response = Response<RB>>,
{
    type Response = Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = CountingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let call = call_of(req.uri().path());
        if let Some(c) = &call {
            self.metrics.started.get_or_create(c).inc();
        }
        let received = call.as_ref().map(|c| Traffic {
            bytes: self.metrics.received_bytes.clone(),
            messages: self.metrics.msg_received.get_or_create(c).clone(),
            framing: Framing::default(),
        });
        let sent = call.as_ref().map(|c| Traffic {
            bytes: self.metrics.sent_bytes.clone(),
            messages: self.metrics.msg_sent.get_or_create(c).clone(),
            framing: Framing::default(),
        });
        let req = req.map(|inner| CountedRequest { inner, received });
        CountingFuture {
            inner: self.inner.call(req),
            call: call.map(|c| (c, Arc::clone(&self.metrics), Instant::now())),
            sent,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct CountingFuture<F> {
        #[pin]
        inner: F,
        call: Option<(Call, Arc<GrpcMetrics>, Instant)>,
        sent: Option<Traffic>,
    }
}

/// Where gRPC message boundaries fall in a stream of bytes: each message is a 5-byte prefix
/// (its length in bytes 1..5, big-endian), then the message.
#[derive(Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    rest: usize,
}

impl Framing {
    /// How many messages begin in `data`, the next bytes of the stream.
    fn messages_in(&mut self, mut data: &[u8]) -> u64 {
        let mut begun = 0;
        while !data.is_empty() {
            if self.rest > 0 {
                let n = self.rest.min(data.len());
                self.rest -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                begun += 1;
                let len = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.rest = u32::from_be_bytes(len) as usize;
                self.prefix_len = 0;
            }
        }
        begun
    }
}

/// One direction of a call's traffic: its bytes and its messages.
pub struct Traffic {
    bytes: Counter,
    messages: Counter,
    framing: Framing,
}

impl Traffic {
    fn count<D: bytes::Buf>(&mut self, data: &D) {
        self.bytes.inc_by(data.remaining() as u64);
        // Request and response bodies are contiguous (`Bytes`) chunks.
        let begun = self.framing.messages_in(data.chunk());
        if begun > 0 {
            self.messages.inc_by(begun);
        }
    }
}

impl<F, RB, E> std::future::Future for CountingFuture<F>
where
    F: std::future::Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<CountedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let mut call = this.call.take();
        let sent = this.sent.take();
        Poll::Ready(res.map(|resp| {
            // A trailers-only answer (how errors leave) carries its status in the headers.
            if let (Some((c, m, t)), Some(code)) = (&call, code_of(resp.headers())) {
                m.done(c, code, *t);
                call = None;
            }
            resp.map(|inner| CountedBody { inner, call, sent })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call once the status in its trailers leaves, or as
    /// `Canceled` when dropped before.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        call: Option<(Call, Arc<GrpcMetrics>, Instant)>,
        sent: Option<Traffic>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((c, m, t)) = this.project().call.take() {
                m.done(&c, "Canceled", t);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let (Some(data), Some(sent)) = (f.data_ref(), this.sent.as_mut()) {
                sent.count(data);
            }
            if let (Some(trailers), Some((c, m, t))) = (f.trailers_ref(), this.call.as_ref()) {
                m.done(c, code_of(trailers).unwrap_or("OK"), *t);
                *this.call = None;
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body of one of etcd's calls, counting the bytes received.
    pub struct CountedRequest<B> {
        #[pin]
        inner: B,
        received: Option<Traffic>,
    }
}

impl<B: http_body::Body> http_body::Body for CountedRequest<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(received)) = (&frame, this.received.as_mut()) {
            if let Some(data) = f.data_ref() {
                received.count(data);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for CountedBody<B> {
    fn default() -> Self {
        CountedBody {
            inner: B::default(),
            call: None,
            sent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_where_they_begin_whatever_the_chunks() {
        let mut stream = Vec::new();
        for len in [0usize, 3, 70_000, 1] {
            stream.push(0);
            stream.extend_from_slice(&(len as u32).to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len));
        }
        for chunk in [1, 2, 5, 6, 4096, stream.len()] {
            let mut f = Framing::default();
            let begun: u64 = stream.chunks(chunk).map(|c| f.messages_in(c)).sum();
            assert_eq!(begun, 4, "chunks of {chunk}");
            assert_eq!(
                (f.rest, f.prefix_len),
                (0, 0),
                "chunks of {chunk}: at a boundary"
            );
        }
    }

    #[test]
    fn paths_name_etcds_methods_only() {
        let c = call_of("/etcdserverpb.KV/Range").expect("Range");
        assert_eq!(
            (c.grpc_service, c.grpc_method, c.grpc_type),
            ("etcdserverpb.KV", "Range", "unary")
        );
        let w = call_of("/etcdserverpb.Watch/Watch").expect("Watch");
        assert_eq!(w.grpc_type, "bidi_stream");
        assert!(call_of("/etcdserverpb.KV/NoSuch").is_none());
        assert!(call_of("/metrics").is_none());
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().expect("value"));
        assert_eq!(code_of(&h), Some("Unavailable"));
    }
}
