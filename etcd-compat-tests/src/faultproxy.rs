//! A TCP fault proxy on every directed peer link of a tandem cluster. Member `i` dials member
//! `j` at a port of its own (`route(i, j)`, handed to `i` through tandem's
//! `TANDEM_TEST_PEER_ROUTES`), so the proxy knows who sends on every connection and can treat
//! each direction of traffic between two members apart: pass it, delay it, blackhole it (stop
//! forwarding without losing a byte, as a dropped-packet partition does to TCP: the bytes come
//! through once the link heals, if the connection is still open) or drop it (close every
//! connection carrying it and refuse new ones). A connection from `i` to `j` carries `i → j`
//! requests and `j → i` answers; a fault on the flow `i → j` applies to both connections
//! between the two. No root and no network namespaces are needed, and a delay costs no
//! throughput: bytes are stamped when read and written once their time has come.
//!
//! The proxy runs on a thread and a runtime of its own, so a synchronous benchmark and an async
//! test can both hold one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// tandem's test seam naming the proxy's routes (`raft::network::PEER_ROUTES_ENV`).
pub const PEER_ROUTES_ENV: &str = "TANDEM_TEST_PEER_ROUTES";

/// What happens to the bytes one member sends another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Flow {
    #[default]
    Pass,
    /// Each byte arrives this long after it was sent.
    Delay(Duration),
    /// Nothing is forwarded (and nothing lost) until the flow passes again.
    Blackhole,
    /// Every connection carrying the flow is closed; new ones are closed at once.
    Drop,
}

/// The largest read forwarded at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks read and not yet written, per direction of a connection (a delayed flow holds up to
/// this many in memory).
const CHUNKS_IN_FLIGHT_MAX: usize = 1024;

/// Flows by (from, to); a missing flow passes.
type Flows = HashMap<(usize, usize), Flow>;

pub struct FaultProxy {
    routes: HashMap<(usize, usize), SocketAddr>,
    flows: Arc<watch::Sender<Flows>>,
    /// The proxy's current settings, kept to change one flow at a time.
    current: Mutex<Flows>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy for members whose peer ports listen at `targets` (member `i` at `targets[i]`),
    /// with a listener for every ordered pair of distinct members.
    pub fn start(targets: &[SocketAddr]) -> Result<FaultProxy> {
        let mut listeners = Vec::new();
        let mut routes = HashMap::new();
        for from in 0..targets.len() {
            for (to, target) in targets.iter().enumerate().filter(|(to, _)| *to != from) {
                let l =
                    std::net::TcpListener::bind("127.0.0.1:0").context("binding a proxy port")?;
                l.set_nonblocking(true)?;
                routes.insert((from, to), l.local_addr()?);
                listeners.push((from, to, *target, l));
            }
        }
        let (flows, _) = watch::channel(Flows::new());
        let flows = Arc::new(flows);
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = flows.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (from, to, target, l) in listeners {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(accept(l, from, to, target, shared.subscribe()));
                            }
                            Err(e) => eprintln!("fault proxy: a listener failed: {e}"),
                        }
                    }
                    let _ = stop.await;
                });
            })?;
        Ok(FaultProxy {
            routes,
            flows,
            current: Mutex::new(Flows::new()),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address member `from` dials to reach member `to`.
    pub fn route(&self, from: usize, to: usize) -> SocketAddr {
        self.routes[&(from, to)]
    }

    /// The value of `TANDEM_TEST_PEER_ROUTES` for member `from`, whose peers advertise
    /// `peer_urls` (member `j` at `peer_urls[j]`).
    pub fn routes_env(&self, from: usize, peer_urls: &[String]) -> String {
        let routes: Vec<String> = (0..peer_urls.len())
            .filter(|&to| to != from)
            .map(|to| format!("{}={}", peer_urls[to], self.route(from, to)))
            .collect();
        routes.join(",")
    }

    /// Sets what happens to the bytes `from` sends `to`.
    pub fn set(&self, from: usize, to: usize, flow: Flow) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.insert((from, to), flow);
        self.flows.send_replace(current.clone());
    }

    /// Both directions between `a` and `b`.
    pub fn set_both(&self, a: usize, b: usize, flow: Flow) {
        self.set(a, b, flow);
        self.set(b, a, flow);
    }

    /// Every flow to and from member `i`.
    pub fn set_member(&self, i: usize, flow: Flow) {
        for j in self.members().filter(|&j| j != i) {
            self.set_both(i, j, flow);
        }
    }

    /// Blackholes the link between `a` and `b` both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.set_both(a, b, Flow::Blackhole);
    }

    /// Blackholes every link of member `i`.
    pub fn cut_from_peers(&self, i: usize) {
        self.set_member(i, Flow::Blackhole);
    }

    /// Every flow passes again.
    pub fn heal(&self) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.clear();
        self.flows.send_replace(Flows::new());
    }

    fn members(&self) -> impl Iterator<Item = usize> {
        let n = self.routes.keys().map(|(f, _)| f + 1).max().unwrap_or(0);
        0..n
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts `from`'s connections to `to` and forwards each to `target`.
async fn accept(
    l: TcpListener,
    from: usize,
    to: usize,
    target: SocketAddr,
    flows: watch::Receiver<Flows>,
) {
    loop {
        let Ok((inbound, _)) = l.accept().await else {
            continue;
        };
        if flow(&flows, from, to) == Flow::Drop || flow(&flows, to, from) == Flow::Drop {
            continue; // closed at once
        }
        let flows = flows.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return; // the member is down: the dialer sees its connection closed
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_r, in_w) = inbound.into_split();
            let (out_r, out_w) = outbound.into_split();
            // Either direction ending (end of stream, an error, a dropped flow) closes both.
            tokio::select! {
                _ = pipe(in_r, out_w, flows.clone(), from, to) => {}
                _ = pipe(out_r, in_w, flows, to, from) => {}
            }
        });
    }
}

fn flow(flows: &watch::Receiver<Flows>, from: usize, to: usize) -> Flow {
    flows.borrow().get(&(from, to)).copied().unwrap_or_default()
}

/// Forwards what `from` sends `to` on one connection, as the flow says, until either side
/// closes or the flow drops.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut flows: watch::Receiver<Flows>,
    from: usize,
    to: usize,
) {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let mut drop_watch = flows.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let delay = match flow(&flows, from, to) {
                Flow::Drop => return,
                Flow::Blackhole => {
                    if flows.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Flow::Delay(d) => d,
                Flow::Pass => Duration::ZERO,
            };
            let n = tokio::select! {
                n = r.read(&mut buf) => n,
                changed = flows.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // A dropped flow in either direction closes the connection, even while bytes wait.
    let dropped = async move {
        loop {
            if flow(&drop_watch, from, to) == Flow::Drop
                || flow(&drop_watch, to, from) == Flow::Drop
            {
                return;
            }
            if drop_watch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = dropped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// An echo server standing in for member 1's peer port.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn proxy() -> FaultProxy {
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        FaultProxy::start(&[unused, echo()]).unwrap()
    }

    fn round_trip(s: &mut std::net::TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn passes_bytes_both_ways() {
        let p = proxy();
        let mut s = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        assert_eq!(round_trip(&mut s, b"hello").unwrap(), b"hello");
    }

    #[test]
    fn delays_each_direction() {
        let p = proxy();
        p.set(0, 1, Flow::Delay(Duration::from_millis(150)));
        p.set(1, 0, Flow::Delay(Duration::from_millis(100)));
        let mut s = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        let t = Instant::now();
        assert_eq!(round_trip(&mut s, b"x").unwrap(), b"x");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "round trip took {took:?}"
        );
        assert!(
            took < Duration::from_millis(1000),
            "round trip took {took:?}"
        );
    }

    #[test]
    fn a_blackhole_holds_bytes_until_healed() {
        let p = proxy();
        let mut s = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        assert_eq!(round_trip(&mut s, b"before").unwrap(), b"before");
        p.cut(0, 1);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            round_trip(&mut s, b"during").is_err(),
            "bytes crossed a blackhole"
        );
        p.heal();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = vec![0u8; 6];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, b"during", "the held bytes arrive once healed");
    }

    #[test]
    fn one_way_blackhole_stops_only_answers() {
        let p = proxy();
        p.set(1, 0, Flow::Blackhole);
        let mut s = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(round_trip(&mut s, b"x").is_err(), "the answer crossed");
    }

    #[test]
    fn a_dropped_flow_closes_connections() {
        let p = proxy();
        let mut s = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        assert_eq!(round_trip(&mut s, b"x").unwrap(), b"x");
        p.set(1, 0, Flow::Drop);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "still open");
        let mut again = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            round_trip(&mut again, b"y").is_err(),
            "a new connection passed"
        );
        p.heal();
        let mut healed = std::net::TcpStream::connect(p.route(0, 1)).unwrap();
        assert_eq!(round_trip(&mut healed, b"z").unwrap(), b"z");
    }
}
