//! The connections a listener serves: plain TCP, or TLS over TCP for an `https://` listen URL.
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
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

/// How many handshaken connections may wait for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// A bound listen URL.
pub struct Listener {
    pub tcp: TcpListener,
    /// Served over TLS (`https://`).
    pub secure: bool,
}

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let common_name = match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::common_name(c.as_ref())),
        };
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// The connections accepted on `listener` (TCP_NODELAY set), through `tls` when given.
pub fn connections(
    listener: TcpListener,
    tls: Option<Arc<tls::ServerTls>>,
) -> BoxStream<'static, io::Result<Conn>> {
    let tcp = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let Some(tls) = tls else {
        return tcp.map(|c| c.map(Conn::Plain)).boxed();
    };
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        let mut tcp = std::pin::pin!(tcp);
        loop {
            let stream = tokio::select! {
                () = tx.closed() => return,
                next = tcp.next() => match next {
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
                let remote = stream.peer_addr().ok();
                match tls.accept(stream, remote.map(|a| a.ip())).await {
                    Ok(s) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
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
