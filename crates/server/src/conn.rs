//! The connections a listener serves: plain TCP, or TLS over TCP for an `https://` listen URL;
//! a unix socket for `unix://` and `unixs://` (TLS) URLs, as etcd serves them.
//! TLS handshakes run off the accept loop, each in a task of its own, so that a slow or
//! hostile client holds up no other; a refused handshake is logged as etcd logs it ("rejected
//! connection"). What tonic learns of a connection ([`ConnInfo`]) is the peer's address and the
//! common name of its verified certificate (etcd's certificate-based user).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tonic::transport::server::Connected;

/// How many handshaken connections may wait for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// A bound listen URL.
pub struct Listener {
    pub socket: Socket,
    /// Served over TLS (`https://`, `unixs://`).
    pub secure: bool,
}

/// What a listen URL binds.
pub enum Socket {
    Tcp(TcpListener),
    /// A unix socket at this path (etcd's `unix://host:port` names a file `host:port`).
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    /// The address, for logs.
    pub fn describe(&self) -> String {
        match &self.socket {
            Socket::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
            Socket::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tls::ServerStream<TcpStream>>),
    Unix(UnixStream),
    UnixTls(Box<tls::ServerStream<UnixStream>>),
}

/// What a request learns of its connection (in its extensions).
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The common name of the client's verified certificate (TLS with client certificates).
    pub common_name: Option<String>,
}

impl Conn {
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Conn::Plain(s) => s.peer_addr().ok(),
            Conn::Tls(s) => s.get_ref().0.peer_addr().ok(),
            Conn::Unix(_) | Conn::UnixTls(_) => None,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let verified = match self {
            Conn::Plain(_) | Conn::Unix(_) => None,
            Conn::Tls(s) => s.get_ref().1.peer_certificates(),
            Conn::UnixTls(s) => s.get_ref().1.peer_certificates(),
        };
        let common_name = verified
            .and_then(|c| c.first())
            .and_then(|c| tls::common_name(c.as_ref()));
        ConnInfo {
            remote: self.peer_addr(),
            common_name,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Conn::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::UnixTls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, b))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::UnixTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// The connections accepted on `listener` (TCP_NODELAY set on TCP), through `tls` when given.
pub fn connections(
    listener: Listener,
    tls: Option<Arc<tls::ServerTls>>,
) -> BoxStream<'static, io::Result<Conn>> {
    match (listener.socket, tls) {
        (Socket::Tcp(l), tls) => {
            let tcp = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            match tls {
                None => tcp.map(|c| c.map(Conn::Plain)).boxed(),
                Some(tls) => handshaken(
                    tcp,
                    tls,
                    |s: &TcpStream| s.peer_addr().ok(),
                    |t| Conn::Tls(Box::new(t)),
                ),
            }
        }
        (Socket::Unix(l, _), tls) => {
            let unix = tokio_stream::wrappers::UnixListenerStream::new(l);
            match tls {
                None => unix.map(|c| c.map(Conn::Unix)).boxed(),
                Some(tls) => handshaken(unix, tls, |_| None, |t| Conn::UnixTls(Box::new(t))),
            }
        }
    }
}

/// The connections of `accepted` once their TLS handshakes succeed, each handshaken in a task
/// of its own; refusals are logged.
fn handshaken<S, A>(
    accepted: A,
    tls: Arc<tls::ServerTls>,
    remote_of: fn(&S) -> Option<SocketAddr>,
    wrap: fn(tls::ServerStream<S>) -> Conn,
) -> BoxStream<'static, io::Result<Conn>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: futures::Stream<Item = io::Result<S>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let stream = tokio::select! {
                () = tx.closed() => return,
                next = accepted.next() => match next {
                    None => return,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "accepting a connection");
                        continue;
                    }
                    Some(Ok(s)) => s,
                },
            };
            let (tx, tls) = (tx.clone(), Arc::clone(&tls));
            tokio::spawn(async move {
                let remote = remote_of(&stream);
                match tls.accept(stream, remote.map(|a| a.ip())).await {
                    Ok(s) => {
                        let _ = tx.send(Ok(wrap(s))).await;
                    }
                    // A peer that closed before its handshake (a port probe) is no news.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(remote_addr = ?remote, "closed before its TLS handshake");
                    }
                    Err(e) => tracing::warn!(
                        remote_addr = %remote.map_or_else(|| "unknown".into(), |a| a.to_string()),
                        error = %e,
                        "rejected connection"
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}
