//! etcd's JSON gateway on the client port: `POST /v3/<service>/<method>` (and `/v3beta/...`,
//! which etcd 3.5 still rewrites to `/v3/`) with a JSON body, answered in JSON, as etcd 3.5's
//! grpc-gateway (v1) serves it. Like etcd's, this gateway is a gRPC client of the member's own
//! services: a request is decoded from the protobuf JSON mapping (proto field names, 64-bit
//! integers as strings or numbers, bytes as base64, unknown fields ignored), framed as a gRPC
//! message and handed to the same gRPC router the client port serves, so every check, error and
//! metric is the gRPC one.
//!
//! Answers: a unary call's response message as JSON; a streaming call's responses as
//! newline-delimited `{"result":...}` objects, ended by `{"error":{...}}` on a gRPC error; a
//! failed call as `{"error","code","message"}` with grpc-gateway's HTTP status for the code. A
//! streaming request body may hold several JSON objects (etcd's watch and lease keep-alive take
//! one request each); they are sent as they arrive, and the end of the body closes the
//! request stream. The `Authorization` header carries the auth token.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Buf, BufMut, BytesMut};
use etcd_api::{etcdserverpb as pb, v3electionpb as el, v3lockpb as lk};
use futures::StreamExt;
use http_body_util::BodyExt;
use tonic::{Code, Status};

/// The first JSON value of an input decoded into a request message and encoded for gRPC, and
/// the bytes it took.
type DecodeFn = fn(&[u8]) -> (Decoded, usize);
/// A gRPC response message, as JSON.
type EncodeFn = fn(&[u8]) -> Result<Vec<u8>, String>;

enum Decoded {
    Message(Bytes),
    /// The input ends before a whole JSON value.
    Incomplete,
    End,
    Invalid(String),
}

/// One method of etcd's gateway.
struct Route {
    path: &'static str,
    grpc: &'static str,
    streaming_request: bool,
    streaming_response: bool,
    decode: DecodeFn,
    encode: EncodeFn,
}

fn decode<T>(input: &[u8]) -> (Decoded, usize)
where
    T: prost::Message + serde::de::DeserializeOwned,
{
    let mut values = serde_json::Deserializer::from_slice(input).into_iter::<T>();
    let decoded = match values.next() {
        None => Decoded::End,
        Some(Ok(m)) => Decoded::Message(m.encode_to_vec().into()),
        Some(Err(e)) if e.is_eof() => Decoded::Incomplete,
        Some(Err(e)) => Decoded::Invalid(e.to_string()),
    };
    (decoded, values.byte_offset())
}

fn encode<T>(bytes: &[u8]) -> Result<Vec<u8>, String>
where
    T: prost::Message + Default + serde::Serialize,
{
    let m = T::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_vec(&m).map_err(|e| e.to_string())
}

macro_rules! route {
    ($path:literal, $grpc:literal, $req:ty, $resp:ty) => {
        route!($path, $grpc, $req, $resp, false, false)
    };
    ($path:literal, $grpc:literal, $req:ty, $resp:ty, $sreq:literal, $sresp:literal) => {
        Route {
            path: $path,
            grpc: $grpc,
            streaming_request: $sreq,
            streaming_response: $sresp,
            decode: decode::<$req>,
            encode: encode::<$resp>,
        }
    };
}

/// etcd 3.5's `google.api.http` bindings, in its proto order (where two methods share a path,
/// the first is served: `/v3/maintenance/hash` is Hash, as on etcd).
static ROUTES: &[Route] = &[
    route!(
        "/v3/kv/range",
        "/etcdserverpb.KV/Range",
        pb::RangeRequest,
        pb::RangeResponse
    ),
    route!(
        "/v3/kv/put",
        "/etcdserverpb.KV/Put",
        pb::PutRequest,
        pb::PutResponse
    ),
    route!(
        "/v3/kv/deleterange",
        "/etcdserverpb.KV/DeleteRange",
        pb::DeleteRangeRequest,
        pb::DeleteRangeResponse
    ),
    route!(
        "/v3/kv/txn",
        "/etcdserverpb.KV/Txn",
        pb::TxnRequest,
        pb::TxnResponse
    ),
    route!(
        "/v3/kv/compaction",
        "/etcdserverpb.KV/Compact",
        pb::CompactionRequest,
        pb::CompactionResponse
    ),
    route!(
        "/v3/watch",
        "/etcdserverpb.Watch/Watch",
        pb::WatchRequest,
        pb::WatchResponse,
        true,
        true
    ),
    route!(
        "/v3/lease/grant",
        "/etcdserverpb.Lease/LeaseGrant",
        pb::LeaseGrantRequest,
        pb::LeaseGrantResponse
    ),
    route!(
        "/v3/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeRequest,
        pb::LeaseRevokeResponse
    ),
    route!(
        "/v3/kv/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeRequest,
        pb::LeaseRevokeResponse
    ),
    route!(
        "/v3/lease/keepalive",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        pb::LeaseKeepAliveRequest,
        pb::LeaseKeepAliveResponse,
        true,
        true
    ),
    route!(
        "/v3/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveRequest,
        pb::LeaseTimeToLiveResponse
    ),
    route!(
        "/v3/kv/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveRequest,
        pb::LeaseTimeToLiveResponse
    ),
    route!(
        "/v3/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
        pb::LeaseLeasesRequest,
        pb::LeaseLeasesResponse
    ),
    route!(
        "/v3/kv/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
        pb::LeaseLeasesRequest,
        pb::LeaseLeasesResponse
    ),
    route!(
        "/v3/cluster/member/add",
        "/etcdserverpb.Cluster/MemberAdd",
        pb::MemberAddRequest,
        pb::MemberAddResponse
    ),
    route!(
        "/v3/cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
        pb::MemberRemoveRequest,
        pb::MemberRemoveResponse
    ),
    route!(
        "/v3/cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
        pb::MemberUpdateRequest,
        pb::MemberUpdateResponse
    ),
    route!(
        "/v3/cluster/member/list",
        "/etcdserverpb.Cluster/MemberList",
        pb::MemberListRequest,
        pb::MemberListResponse
    ),
    route!(
        "/v3/cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
        pb::MemberPromoteRequest,
        pb::MemberPromoteResponse
    ),
    route!(
        "/v3/maintenance/alarm",
        "/etcdserverpb.Maintenance/Alarm",
        pb::AlarmRequest,
        pb::AlarmResponse
    ),
    route!(
        "/v3/maintenance/status",
        "/etcdserverpb.Maintenance/Status",
        pb::StatusRequest,
        pb::StatusResponse
    ),
    route!(
        "/v3/maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
        pb::DefragmentRequest,
        pb::DefragmentResponse
    ),
    route!(
        "/v3/maintenance/hash",
        "/etcdserverpb.Maintenance/Hash",
        pb::HashRequest,
        pb::HashResponse
    ),
    route!(
        "/v3/maintenance/snapshot",
        "/etcdserverpb.Maintenance/Snapshot",
        pb::SnapshotRequest,
        pb::SnapshotResponse,
        false,
        true
    ),
    route!(
        "/v3/maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
        pb::MoveLeaderRequest,
        pb::MoveLeaderResponse
    ),
    route!(
        "/v3/maintenance/downgrade",
        "/etcdserverpb.Maintenance/Downgrade",
        pb::DowngradeRequest,
        pb::DowngradeResponse
    ),
    route!(
        "/v3/auth/enable",
        "/etcdserverpb.Auth/AuthEnable",
        pb::AuthEnableRequest,
        pb::AuthEnableResponse
    ),
    route!(
        "/v3/auth/disable",
        "/etcdserverpb.Auth/AuthDisable",
        pb::AuthDisableRequest,
        pb::AuthDisableResponse
    ),
    route!(
        "/v3/auth/status",
        "/etcdserverpb.Auth/AuthStatus",
        pb::AuthStatusRequest,
        pb::AuthStatusResponse
    ),
    route!(
        "/v3/auth/authenticate",
        "/etcdserverpb.Auth/Authenticate",
        pb::AuthenticateRequest,
        pb::AuthenticateResponse
    ),
    route!(
        "/v3/auth/user/add",
        "/etcdserverpb.Auth/UserAdd",
        pb::AuthUserAddRequest,
        pb::AuthUserAddResponse
    ),
    route!(
        "/v3/auth/user/get",
        "/etcdserverpb.Auth/UserGet",
        pb::AuthUserGetRequest,
        pb::AuthUserGetResponse
    ),
    route!(
        "/v3/auth/user/list",
        "/etcdserverpb.Auth/UserList",
        pb::AuthUserListRequest,
        pb::AuthUserListResponse
    ),
    route!(
        "/v3/auth/user/delete",
        "/etcdserverpb.Auth/UserDelete",
        pb::AuthUserDeleteRequest,
        pb::AuthUserDeleteResponse
    ),
    route!(
        "/v3/auth/user/changepw",
        "/etcdserverpb.Auth/UserChangePassword",
        pb::AuthUserChangePasswordRequest,
        pb::AuthUserChangePasswordResponse
    ),
    route!(
        "/v3/auth/user/grant",
        "/etcdserverpb.Auth/UserGrantRole",
        pb::AuthUserGrantRoleRequest,
        pb::AuthUserGrantRoleResponse
    ),
    route!(
        "/v3/auth/user/revoke",
        "/etcdserverpb.Auth/UserRevokeRole",
        pb::AuthUserRevokeRoleRequest,
        pb::AuthUserRevokeRoleResponse
    ),
    route!(
        "/v3/auth/role/add",
        "/etcdserverpb.Auth/RoleAdd",
        pb::AuthRoleAddRequest,
        pb::AuthRoleAddResponse
    ),
    route!(
        "/v3/auth/role/get",
        "/etcdserverpb.Auth/RoleGet",
        pb::AuthRoleGetRequest,
        pb::AuthRoleGetResponse
    ),
    route!(
        "/v3/auth/role/list",
        "/etcdserverpb.Auth/RoleList",
        pb::AuthRoleListRequest,
        pb::AuthRoleListResponse
    ),
    route!(
        "/v3/auth/role/delete",
        "/etcdserverpb.Auth/RoleDelete",
        pb::AuthRoleDeleteRequest,
        pb::AuthRoleDeleteResponse
    ),
    route!(
        "/v3/auth/role/grant",
        "/etcdserverpb.Auth/RoleGrantPermission",
        pb::AuthRoleGrantPermissionRequest,
        pb::AuthRoleGrantPermissionResponse
    ),
    route!(
        "/v3/auth/role/revoke",
        "/etcdserverpb.Auth/RoleRevokePermission",
        pb::AuthRoleRevokePermissionRequest,
        pb::AuthRoleRevokePermissionResponse
    ),
    route!(
        "/v3/lock/lock",
        "/v3lockpb.Lock/Lock",
        lk::LockRequest,
        lk::LockResponse
    ),
    route!(
        "/v3/lock/unlock",
        "/v3lockpb.Lock/Unlock",
        lk::UnlockRequest,
        lk::UnlockResponse
    ),
    route!(
        "/v3/election/campaign",
        "/v3electionpb.Election/Campaign",
        el::CampaignRequest,
        el::CampaignResponse
    ),
    route!(
        "/v3/election/proclaim",
        "/v3electionpb.Election/Proclaim",
        el::ProclaimRequest,
        el::ProclaimResponse
    ),
    route!(
        "/v3/election/leader",
        "/v3electionpb.Election/Leader",
        el::LeaderRequest,
        el::LeaderResponse
    ),
    route!(
        "/v3/election/observe",
        "/v3electionpb.Election/Observe",
        el::LeaderRequest,
        el::LeaderResponse,
        false,
        true
    ),
    route!(
        "/v3/election/resign",
        "/v3electionpb.Election/Resign",
        el::ResignRequest,
        el::ResignResponse
    ),
];

struct Gateway {
    grpc: Router,
    /// The largest request body read (the gRPC limit of the client port).
    max_body: usize,
}

/// The gateway's routes, calling `grpc` (the client port's gRPC router) for each request.
pub fn router(grpc: Router, max_body: usize) -> Router {
    let state = Arc::new(Gateway { grpc, max_body });
    Router::new()
        .route("/v3/{*method}", axum::routing::any(serve))
        .route("/v3beta/{*method}", axum::routing::any(serve))
        .with_state(state)
}

/// etcd's CORS headers (`--cors` defaults to `*`) on its HTTP answers, and `OPTIONS` answered
/// with them alone, as etcd's access controller does.
pub async fn cors(req: Request, next: axum::middleware::Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

/// Go's `http.Error` answer for a path or method the gateway does not serve.
fn plain(status: StatusCode) -> Response {
    let mut r = (
        status,
        format!("{}\n", status.canonical_reason().unwrap_or_default()),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// grpc-gateway's error body, its fields in its order.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: i32,
    message: &'a str,
}

/// Whether `path` is one of the gateway's (`/v3/...`, `/v3beta/...`).
pub(crate) fn is_gateway_path(path: &str) -> bool {
    path.starts_with("/v3/") || path.starts_with("/v3beta/")
}

/// A failed unary call: `{"error","code","message"}`.
pub(crate) fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        code: status.code() as i32,
        message: status.message(),
    };
    let body = serde_json::to_vec(&body).expect("a struct of strings and numbers");
    json_response(http_status(status.code()), body)
}

/// grpc-gateway's stream error, its fields in its order.
#[derive(serde::Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

#[derive(serde::Serialize)]
struct StreamErrorChunk<'a> {
    error: StreamError<'a>,
}

/// A failed streaming call, as one chunk of the stream.
fn error_chunk(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let chunk = StreamErrorChunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or_default(),
        },
    };
    let mut body = serde_json::to_vec(&chunk).expect("a struct of strings and numbers");
    body.push(b'\n');
    body
}

fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

async fn serve(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let path = req.uri().path();
    let path = path
        .strip_prefix("/v3beta/")
        .map_or_else(|| path.to_string(), |rest| format!("/v3/{rest}"));
    let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
        return plain(StatusCode::NOT_FOUND);
    };
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED);
    }
    let (parts, body) = req.into_parts();
    let mut grpc = axum::http::Request::builder()
        .method(Method::POST)
        .uri(route.grpc)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    if let Some(token) = parts.headers.get(header::AUTHORIZATION) {
        grpc = grpc.header(header::AUTHORIZATION, token);
    }
    let grpc_body = if route.streaming_request {
        match streaming_request(route, body).await {
            Ok(b) => b,
            Err(e) => {
                // grpc-gateway opens the stream before it reads the body, then closes it and
                // answers a first request it cannot decode as a plain error.
                let empty = grpc
                    .body(Body::empty())
                    .expect("a gRPC request from valid parts");
                drop(tower::ServiceExt::oneshot(gw.grpc.clone(), empty).await);
                return error_response(&Status::unknown(e));
            }
        }
    } else {
        let bytes = match axum::body::to_bytes(body, gw.max_body).await {
            Ok(b) => b,
            Err(e) => return error_response(&Status::invalid_argument(e.to_string())),
        };
        // Only the first value counts; an empty body is an empty request, as in grpc-gateway.
        let message = match (route.decode)(&bytes).0 {
            Decoded::Message(m) => m,
            Decoded::End => Bytes::new(),
            Decoded::Incomplete => {
                return error_response(&Status::invalid_argument("unexpected EOF"))
            }
            Decoded::Invalid(e) => return error_response(&Status::invalid_argument(e)),
        };
        Body::from(frame(&message))
    };
    let grpc = grpc
        .body(grpc_body)
        .expect("a gRPC request from valid parts");
    let resp = match tower::ServiceExt::oneshot(gw.grpc.clone(), grpc).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if route.streaming_response {
        stream_response(route, resp)
    } else {
        unary_response(route, resp).await
    }
}

/// The next request of a streaming body, decoded and encoded for gRPC; `Ok(None)` at its end.
async fn next_request(
    route: &Route,
    buf: &mut BytesMut,
    input: &mut axum::body::BodyDataStream,
) -> Result<Option<Bytes>, String> {
    loop {
        match (route.decode)(buf) {
            (Decoded::Message(m), used) => {
                buf.advance(used);
                return Ok(Some(m));
            }
            (Decoded::Invalid(e), _) => return Err(e),
            (Decoded::End | Decoded::Incomplete, _) => match input.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                _ if buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                _ => return Err("unexpected EOF".into()),
            },
        }
    }
}

/// The request stream: JSON values sent on as gRPC messages as they arrive; an error if the
/// first cannot be decoded (a later one ends the stream, as in grpc-gateway).
async fn streaming_request(route: &'static Route, body: Body) -> Result<Body, String> {
    let mut input = body.into_data_stream();
    let mut buf = BytesMut::new();
    let first = next_request(route, &mut buf, &mut input).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    if let Some(first) = first {
        let _ = tx.send(Ok(frame(&first))).await;
        tokio::spawn(async move {
            while let Ok(Some(m)) = next_request(route, &mut buf, &mut input).await {
                if tx.send(Ok(frame(&m))).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// Reads gRPC messages from a response body: each message, then the call's status.
struct Messages {
    body: Body,
    buf: BytesMut,
    status: Option<Status>,
}

impl Messages {
    fn new(resp: Response) -> Self {
        let (parts, body) = resp.into_parts();
        // A trailers-only answer carries the status in its headers.
        let status = Status::from_header_map(&parts.headers);
        Self {
            body,
            buf: BytesMut::new(),
            status,
        }
    }

    /// The next message, `Ok(None)` at the end of a successful call, or the call's error.
    async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
            if let Some(s) = self.status.take() {
                return if s.code() == Code::Ok {
                    Ok(None)
                } else {
                    Err(s)
                };
            }
            match self.body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(f) => {
                        let trailers = f.into_trailers().unwrap_or_default();
                        self.status = Some(status_of(&trailers));
                    }
                },
                Some(Err(e)) => return Err(Status::unavailable(e.to_string())),
                None => self.status = Some(Status::unknown("a gRPC answer without a status")),
            }
        }
    }
}

fn status_of(trailers: &HeaderMap) -> Status {
    Status::from_header_map(trailers)
        .unwrap_or_else(|| Status::unknown("a gRPC answer without a status"))
}

async fn unary_response(route: &Route, resp: Response) -> Response {
    let mut messages = Messages::new(resp);
    let message = match messages.next().await {
        Ok(Some(m)) => m,
        Ok(None) => return error_response(&Status::internal("no response message")),
        Err(s) => return error_response(&s),
    };
    // The call's status comes after its message.
    if let Err(s) = messages.next().await {
        return error_response(&s);
    }
    match (route.encode)(&message) {
        Ok(json) => {
            let mut r = json_response(StatusCode::OK, json);
            r.headers_mut().insert(
                "grpc-metadata-content-type",
                HeaderValue::from_static("application/grpc"),
            );
            r
        }
        Err(e) => error_response(&Status::internal(e)),
    }
}

/// A streaming answer: `{"result":...}` lines, ended by an error line if the call fails. A call
/// refused before it started streaming answers with the error's HTTP status (grpc-gateway has
/// written no header yet then); one refused later can only end its stream.
fn stream_response(route: &'static Route, resp: Response) -> Response {
    let messages = Messages::new(resp);
    let status = match &messages.status {
        Some(s) if s.code() != Code::Ok => http_status(s.code()),
        _ => StatusCode::OK,
    };
    let lines = futures::stream::unfold(Some(messages), move |state| async move {
        let mut messages = state?;
        match messages.next().await {
            Ok(Some(m)) => {
                let line = match (route.encode)(&m) {
                    Ok(json) => {
                        let mut line = Vec::with_capacity(json.len() + 12);
                        line.extend_from_slice(b"{\"result\":");
                        line.extend_from_slice(&json);
                        line.extend_from_slice(b"}\n");
                        line
                    }
                    Err(e) => return Some((error_chunk(&Status::internal(e)), None)),
                };
                Some((line, Some(messages)))
            }
            Ok(None) => None,
            Err(s) => Some((error_chunk(&s), None)),
        }
    })
    .map(|line| Ok::<_, std::convert::Infallible>(Bytes::from(line)));
    let mut r = json_response(status, Vec::new());
    *r.body_mut() = Body::from_stream(lines);
    if status == StatusCode::OK {
        r.headers_mut().insert(
            "grpc-metadata-content-type",
            HeaderValue::from_static("application/grpc"),
        );
    }
    r
}
