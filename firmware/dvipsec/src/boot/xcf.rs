//! The XCF connection manager: one TCP (or mutual-TLS) stream to every other node.
//!
//! Of each pair of nodes the one whose name sorts first dials and the other accepts, so there
//! is exactly one stream per pair. A dialer binds its own XCF address; an acceptor names the
//! caller by its certificate (protected link) or by its source address (trusted link) and
//! closes streams from anyone else. Lost streams are dialled again with exponential backoff.
//! Frames that arrive come out of [`XcfManager::recv`] tagged with their sender, for the
//! distributor or target core to handle; frames for a node that is not connected are dropped
//! and counted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dvipsec_cluster::stream::{extend_zeroizing, write_frame, StreamError};
use dvipsec_cluster::tls::{node_dns_name, peer_is, XcfIdentity};
use rustls::{ClientConnection, ServerConnection, StreamOwned};
use zeroize::Zeroizing;

/// The port XCF streams use on every node's XCF address.
pub const XCF_PORT: u16 = 7410;
/// How long a stream read waits before the writer side gets a turn.
const POLL: Duration = Duration::from_millis(20);
/// How long a TLS handshake or a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest dial: an XCF LAN answers a SYN within a millisecond, a busy box within a few.
const MIN_DIAL: Duration = Duration::from_millis(100);

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XcfError {
    #[error("XCF: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("XCF: TLS setup for node {node}: {source}")]
    Tls {
        node: String,
        #[source]
        source: dvipsec_cluster::tls::TlsError,
    },
}

/// Another node of the site and where it listens.
#[derive(Debug, Clone)]
pub struct XcfPeer {
    pub node: String,
    pub addr: SocketAddr,
}

/// What the manager needs: who this node is, where it listens, whom it talks to, and the TLS
/// identity when the link is protected (`None`: the site trusts the link).
pub struct XcfSetup {
    pub node: String,
    pub listen: SocketAddr,
    pub peers: Vec<XcfPeer>,
    pub tls: Option<XcfIdentity>,
    pub backoff: Backoff,
}

/// Reconnect delays: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delays from 100 ms doubling up to `limit`, the site's takeover timeout: a box that
    /// returns is dialled within about the time its failure took to notice (with a 2 s
    /// ceiling a returning target went unheard for up to 2 s after it listened again).
    pub fn up_to(limit: Duration) -> Self {
        Backoff {
            first: Duration::from_millis(100).min(limit),
            max: limit,
        }
    }
}

/// A frame from another node.
pub struct Received {
    pub from: String,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// What the manager counts.
#[derive(Debug, Default)]
pub struct XcfCounters {
    /// Streams established (both directions, reconnects included).
    pub connected: AtomicU64,
    /// Accepted streams closed because the caller is not a node of the site.
    pub rejected: AtomicU64,
    /// Streams closed because of a bad frame or an I/O error.
    pub broken: AtomicU64,
    /// Frames dropped because their node was not connected.
    pub unsent: AtomicU64,
}

type BoxedStream = Box<dyn ReadWrite + Send>;

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A running manager; its threads stop when it is dropped.
pub struct XcfManager {
    outboxes: HashMap<String, Sender<Zeroizing<Vec<u8>>>>,
    inbox: Receiver<Received>,
    stop: Arc<AtomicBool>,
    counters: Arc<XcfCounters>,
    threads: Vec<JoinHandle<()>>,
}

/// What the per-peer threads share.
#[derive(Clone)]
struct Shared {
    me: String,
    local_ip: IpAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<XcfCounters>,
    inbox: Sender<Received>,
    tls: Option<Arc<TlsConfigs>>,
    backoff: Backoff,
}

struct TlsConfigs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl XcfManager {
    /// Listens, and starts one thread per peer plus the acceptor.
    pub fn start(setup: XcfSetup) -> Result<Self, XcfError> {
        let listener = TcpListener::bind(setup.listen).map_err(|source| XcfError::Listen {
            addr: setup.listen,
            source,
        })?;
        let tls = tls_configs(&setup)?;
        let (inbox_tx, inbox) = mpsc::channel();
        let shared = Shared {
            me: setup.node.clone(),
            local_ip: setup.listen.ip(),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(XcfCounters::default()),
            inbox: inbox_tx,
            tls,
            backoff: setup.backoff,
        };
        let mut outboxes = HashMap::new();
        let mut threads = Vec::new();
        let mut accepted_by_node = HashMap::new();
        for peer in setup.peers {
            let (out_tx, out_rx) = mpsc::channel();
            outboxes.insert(peer.node.clone(), out_tx);
            let dials = setup.node < peer.node;
            let (streams_tx, streams_rx) = mpsc::channel::<BoxedStream>();
            if !dials {
                accepted_by_node.insert(peer.node.clone(), (peer.addr.ip(), streams_tx));
            }
            let worker = PeerWorker {
                shared: shared.clone(),
                peer,
                dials,
                outbox: out_rx,
                accepted: streams_rx,
            };
            threads.push(std::thread::spawn(move || worker.run()));
        }
        let acceptor = Acceptor {
            shared: shared.clone(),
            listener,
            peers: accepted_by_node,
        };
        threads.push(std::thread::spawn(move || acceptor.run()));
        Ok(XcfManager {
            outboxes,
            inbox,
            stop: shared.stop,
            counters: shared.counters,
            threads,
        })
    }

    /// Queues `frame` for `node`; false (and counted) when there is no such node.
    pub fn send(&self, node: &str, frame: Zeroizing<Vec<u8>>) -> bool {
        let queued = self
            .outboxes
            .get(node)
            .is_some_and(|outbox| outbox.send(frame).is_ok());
        if !queued {
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// The next frame from any node, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Received> {
        self.inbox.recv_timeout(timeout).ok()
    }

    pub fn counters(&self) -> &XcfCounters {
        &self.counters
    }
}

impl Drop for XcfManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.outboxes.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn tls_configs(setup: &XcfSetup) -> Result<Option<Arc<TlsConfigs>>, XcfError> {
    let Some(identity) = &setup.tls else {
        return Ok(None);
    };
    let tls_error = |source| XcfError::Tls {
        node: setup.node.clone(),
        source,
    };
    Ok(Some(Arc::new(TlsConfigs {
        server: identity.server_config().map_err(tls_error)?,
        client: identity.client_config().map_err(tls_error)?,
    })))
}

/// Accepts streams and hands each to the worker of the node that called.
struct Acceptor {
    shared: Shared,
    listener: TcpListener,
    peers: HashMap<String, (IpAddr, Sender<BoxedStream>)>,
}

impl Acceptor {
    fn run(self) {
        if self.listener.set_nonblocking(true).is_err() {
            return;
        }
        while !self.shared.stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((tcp, from)) => self.admit(tcp, from.ip()),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn admit(&self, tcp: TcpStream, from: IpAddr) {
        match self.identify(tcp, from) {
            Some((node, stream)) => {
                if let Some((_, handoff)) = self.peers.get(&node) {
                    let _ = handoff.send(stream);
                }
            }
            None => {
                self.shared
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The calling node and its stream, or `None` for a caller that is not one of ours.
    fn identify(&self, tcp: TcpStream, from: IpAddr) -> Option<(String, BoxedStream)> {
        let by_address = self
            .peers
            .iter()
            .find(|(_, (ip, _))| *ip == from)
            .map(|(node, _)| node.clone())?;
        prepare(&tcp).ok()?;
        let Some(tls) = &self.shared.tls else {
            short_reads(&tcp)?;
            return Some((by_address, Box::new(tcp)));
        };
        let connection = ServerConnection::new(Arc::clone(&tls.server)).ok()?;
        let mut stream = StreamOwned::new(connection, tcp);
        finish_handshake(&mut stream.conn, &mut stream.sock)?;
        if !peer_is(stream.conn.peer_certificates(), &by_address) {
            return None;
        }
        short_reads(&stream.sock)?;
        Some((by_address, Box::new(stream)))
    }
}

fn prepare(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))
}

fn finish_handshake<C, S>(connection: &mut C, tcp: &mut TcpStream) -> Option<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while connection.is_handshaking() {
        connection.complete_io(tcp).ok()?;
    }
    Some(())
}

/// Keeps the stream to one peer: dials or waits for it, then moves frames both ways.
struct PeerWorker {
    shared: Shared,
    peer: XcfPeer,
    dials: bool,
    outbox: Receiver<Zeroizing<Vec<u8>>>,
    accepted: Receiver<BoxedStream>,
}

impl PeerWorker {
    fn run(self) {
        let mut delay = self.shared.backoff.first;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let Some(stream) = self.connect() else {
                self.drop_queued();
                // Only a failed dial backs off. An acceptor waits in `connect` for the stream
                // the acceptor thread hands over; sleeping besides would leave a returning
                // caller unheard for up to the longest delay.
                if self.dials {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.shared.backoff.max);
                }
                continue;
            };
            delay = self.shared.backoff.first;
            self.shared
                .counters
                .connected
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                node = %self.shared.me,
                peer = %self.peer.node,
                tls = self.shared.tls.is_some(),
                "XCF stream up"
            );
            self.pump(stream);
        }
    }

    fn connect(&self) -> Option<BoxedStream> {
        if !self.dials {
            return self.accepted.recv_timeout(POLL).ok();
        }
        let tcp = self.dial().ok()?;
        prepare(&tcp).ok()?;
        let Some(tls) = &self.shared.tls else {
            short_reads(&tcp)?;
            return Some(Box::new(tcp));
        };
        let name = node_dns_name(&self.peer.node).ok()?;
        let connection = ClientConnection::new(Arc::clone(&tls.client), name).ok()?;
        let mut stream = StreamOwned::new(connection, tcp);
        finish_handshake(&mut stream.conn, &mut stream.sock)?;
        short_reads(&stream.sock)?;
        Some(Box::new(stream))
    }

    /// A TCP stream from this node's own XCF address, so the acceptor can tell who calls.
    fn dial(&self) -> std::io::Result<TcpStream> {
        let domain = match self.peer.addr {
            SocketAddr::V4(_) => socket2::Domain::IPV4,
            SocketAddr::V6(_) => socket2::Domain::IPV6,
        };
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(self.shared.local_ip, 0).into())?;
        socket.connect_timeout(&self.peer.addr.into(), self.dial_timeout())?;
        Ok(socket.into())
    }

    /// No longer than the longest redial delay: a box that is away leaves the SYN unanswered
    /// and the kernel would send it again only after a second, the next dial comes sooner.
    /// Not under [`MIN_DIAL`] either, however short the site's takeover timeout.
    fn dial_timeout(&self) -> Duration {
        self.shared.backoff.max.clamp(MIN_DIAL, CONNECT_TIMEOUT)
    }

    /// Frames queued while there is no stream cannot wait for one: the cores resend what
    /// must arrive (the reliable link above this layer).
    fn drop_queued(&self) {
        let dropped = self.outbox.try_iter().count() as u64;
        self.shared
            .counters
            .unsent
            .fetch_add(dropped, Ordering::Relaxed);
    }

    /// Moves frames until the stream breaks or the manager stops.
    fn pump(&self, mut stream: BoxedStream) {
        let mut splitter = LengthSplitter::default();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if self.exchange(&mut stream, &mut splitter).is_err() {
                self.shared.counters.broken.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.shared.me, peer = %self.peer.node, "XCF stream lost");
                return;
            }
        }
    }

    fn exchange(
        &self,
        stream: &mut BoxedStream,
        splitter: &mut LengthSplitter,
    ) -> Result<(), StreamError> {
        for frame in self.outbox.try_iter() {
            let len = u32::try_from(frame.len())
                .ok()
                .filter(|len| *len <= MAX_FRAME)
                .ok_or(StreamError::Closed)?;
            let mut prefixed = Zeroizing::new(Vec::with_capacity(frame.len() + 4));
            prefixed.extend_from_slice(&len.to_be_bytes());
            prefixed.extend_from_slice(&frame);
            write_frame(stream, &prefixed)?;
        }
        while let Some(bytes) = splitter.read(stream)? {
            let received = Received {
                from: self.peer.node.clone(),
                bytes,
            };
            if self.shared.inbox.send(received).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The largest frame a stream carries; a longer length poisons the stream.
const MAX_FRAME: u32 = 1 << 20;

/// Splits a stream into frames, each a 4-byte big-endian length and that many bytes. The
/// stream is byte-transparent: what the box sends (see `envelope`) is its business.
#[derive(Default)]
struct LengthSplitter {
    buf: Zeroizing<Vec<u8>>,
}

impl LengthSplitter {
    /// The next whole frame already buffered.
    fn next_frame(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StreamError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if len > MAX_FRAME {
            return Err(StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("XCF frame of {len} bytes is over the limit"),
            )));
        }
        let end = 4 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let frame = Zeroizing::new(self.buf[4..end].to_vec());
        let rest = Zeroizing::new(self.buf[end..].to_vec());
        self.buf = rest;
        Ok(Some(frame))
    }

    /// Reads what is available (a read timeout ends the wait) and returns the next frame.
    fn read<S: Read>(&mut self, stream: &mut S) -> Result<Option<Zeroizing<Vec<u8>>>, StreamError> {
        if let Some(frame) = self.next_frame()? {
            return Ok(Some(frame));
        }
        let mut chunk = Zeroizing::new([0u8; 4096]);
        match stream.read(chunk.as_mut()) {
            Ok(0) => Err(StreamError::Closed),
            Ok(n) => {
                extend_zeroizing(&mut self.buf, &chunk[..n]);
                self.next_frame()
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Short reads from now on, so the writer side is served often.
fn short_reads(tcp: &TcpStream) -> Option<()> {
    tcp.set_read_timeout(Some(POLL)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_cluster::wire::{Frame, Message};
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(10);

    fn free_addr(ip: &str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.local_addr().unwrap()
    }

    /// A plain TCP stream to `to` from the IPv4 address `source` (any port).
    fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket.connect(&to.into()).unwrap();
        socket.into()
    }

    fn hello(node: &str) -> Zeroizing<Vec<u8>> {
        let frame = Frame {
            from_incarnation: 7,
            to_incarnation: 0,
            seq: 0,
            message: Message::Hello {
                node: node.to_owned(),
            },
        };
        frame.encode().unwrap()
    }

    fn setup(node: &str, listen: SocketAddr, peers: &[(&str, SocketAddr)], tls: bool) -> XcfSetup {
        XcfSetup {
            node: node.to_owned(),
            listen,
            peers: peers
                .iter()
                .map(|(node, addr)| XcfPeer {
                    node: (*node).to_owned(),
                    addr: *addr,
                })
                .collect(),
            tls: tls.then(|| {
                XcfIdentity::from_site_key("xcftest", node, b"site key 0123456789").unwrap()
            }),
            backoff: Backoff {
                first: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
        }
    }

    /// Sends hellos from `from` to `to` until `receiver` gets one; returns its sender's name
    /// and the node named inside.
    fn deliver(
        from: &XcfManager,
        from_node: &str,
        to: &str,
        receiver: &XcfManager,
    ) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            from.send(to, hello(from_node));
            if let Some(received) = receiver.recv(Duration::from_millis(100)) {
                let frame = Frame::decode(&received.bytes).unwrap();
                let Message::Hello { node } = frame.message else {
                    panic!("not a hello");
                };
                return (received.from, node);
            }
        }
        panic!("no frame from {from_node} reached {to}");
    }

    fn pair(ip_a: &str, ip_b: &str, tls: bool) -> (XcfManager, XcfManager) {
        let (a, b) = (free_addr(ip_a), free_addr(ip_b));
        let ma = XcfManager::start(setup("a", a, &[("b", b)], tls)).unwrap();
        let mb = XcfManager::start(setup("b", b, &[("a", a)], tls)).unwrap();
        (ma, mb)
    }

    #[test]
    fn trusted_link_carries_frames_both_ways() {
        let (a, b) = pair("127.0.1.1", "127.0.1.2", false);
        assert_eq!(deliver(&a, "a", "b", &b), ("a".to_owned(), "a".to_owned()));
        assert_eq!(deliver(&b, "b", "a", &a), ("b".to_owned(), "b".to_owned()));
    }

    #[test]
    fn protected_link_carries_frames_both_ways_over_mutual_tls() {
        let (a, b) = pair("127.0.2.1", "127.0.2.2", true);
        assert_eq!(deliver(&a, "a", "b", &b), ("a".to_owned(), "a".to_owned()));
        assert_eq!(deliver(&b, "b", "a", &a), ("b".to_owned(), "b".to_owned()));
        assert_eq!(b.counters().rejected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dialler_reconnects_after_the_peer_restarts() {
        let (a_addr, b_addr) = (free_addr("127.0.3.1"), free_addr("127.0.3.2"));
        let a = XcfManager::start(setup("a", a_addr, &[("b", b_addr)], false)).unwrap();
        let b = XcfManager::start(setup("b", b_addr, &[("a", a_addr)], false)).unwrap();
        deliver(&a, "a", "b", &b);
        drop(b);
        let b = XcfManager::start(setup("b", b_addr, &[("a", a_addr)], false)).unwrap();
        assert_eq!(deliver(&a, "a", "b", &b).0, "a");
        assert!(a.counters().connected.load(Ordering::Relaxed) >= 2);
        assert!(a.counters().broken.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn an_acceptor_takes_a_late_callers_stream_at_once() {
        let (a_addr, b_addr) = (free_addr("127.0.6.1"), free_addr("127.0.6.2"));
        // "b" accepts from "a". Its dial backoff is long: waiting for a caller must not sleep
        // through it (a restarted box was heard 1.6 s after its boot).
        let mut b_setup = setup("b", b_addr, &[("a", a_addr)], false);
        b_setup.backoff = Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(2),
        };
        let b = XcfManager::start(b_setup).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let a = XcfManager::start(setup("a", a_addr, &[("b", b_addr)], false)).unwrap();
        let started = Instant::now();
        deliver(&a, "a", "b", &b);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(600),
            "the acceptor took the stream after {waited:?}"
        );
    }

    #[test]
    fn a_dial_to_a_box_that_drops_syns_gives_up_within_the_longest_delay() {
        let (a_addr, b_addr) = (free_addr("127.0.7.1"), free_addr("127.0.7.2"));
        // "b" is away: its listener's one-place queue is full, so the kernel drops SYNs.
        let away =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        away.bind(&b_addr.into()).unwrap();
        away.listen(0).unwrap();
        let filler = connect_from([127, 0, 7, 9], b_addr);
        let a = XcfManager::start(setup("a", a_addr, &[("b", b_addr)], false)).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        // "b" is back. A dial still waiting for its SYN's answer would be answered only at
        // the kernel's next retransmission (3 s after the first SYN).
        let (first, _) = away.accept().unwrap();
        drop((first, filler));
        let back = Instant::now();
        away.set_nonblocking(true).unwrap();
        let deadline = back + WAIT;
        let from = loop {
            if let Ok((_, from)) = away.accept() {
                break from;
            }
            assert!(Instant::now() < deadline, "a never dialled again");
            std::thread::sleep(Duration::from_millis(5));
        };
        let waited = back.elapsed();
        assert_eq!(from.as_socket().map(|s| s.ip()), Some(a_addr.ip()));
        // Test backoff: at most 200 ms, so a dial every 400 ms at worst.
        assert!(
            waited < Duration::from_millis(600),
            "a dialled again {waited:?} after b was back"
        );
        drop(a);
    }

    #[test]
    fn backoff_follows_the_takeover_timeout() {
        let site = Backoff::up_to(Duration::from_millis(500));
        assert_eq!(site.first, Duration::from_millis(100));
        assert_eq!(site.max, Duration::from_millis(500));
        let short = Backoff::up_to(Duration::from_millis(40));
        assert_eq!(
            (short.first, short.max),
            (Duration::from_millis(40), Duration::from_millis(40))
        );
    }

    #[test]
    fn a_caller_that_is_not_a_node_is_turned_away() {
        let (a_addr, b_addr) = (free_addr("127.0.4.1"), free_addr("127.0.4.2"));
        let b = XcfManager::start(setup("b", b_addr, &[("a", a_addr)], false)).unwrap();
        let mut stranger = connect_from([127, 0, 4, 9], b_addr);
        stranger.set_read_timeout(Some(WAIT)).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(stranger.read(&mut byte).unwrap_or(0), 0, "stream closed");
        // The acceptor may close the stream a moment before it counts the refusal.
        let deadline = Instant::now() + WAIT;
        while b.counters().rejected.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "refusal not counted");
            std::thread::sleep(POLL);
        }
        assert_eq!(b.counters().rejected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_bad_frame_header_breaks_only_that_stream() {
        let (a_addr, b_addr) = (free_addr("127.0.5.1"), free_addr("127.0.5.2"));
        let b = XcfManager::start(setup("b", b_addr, &[("a", a_addr)], false)).unwrap();
        let mut impostor = connect_from([127, 0, 5, 1], b_addr);
        impostor.write_all(&[0xff; 64]).unwrap();
        let deadline = Instant::now() + WAIT;
        while b.counters().broken.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "bad header not noticed");
            std::thread::sleep(POLL);
        }
        let a = XcfManager::start(setup("a", a_addr, &[("b", b_addr)], false)).unwrap();
        assert_eq!(deliver(&a, "a", "b", &b).0, "a");
    }
}
