//! The load generator: the remote peer of the system under test.
//!
//! It negotiates with our own IKEv2 initiator (dvipsec-ike), builds the child SA pair in the
//! ESP engine (dvipsec-esp), then sender threads seal probe packets and send them as
//! UDP-encapsulated ESP to the gateway's port 4500 while the calling thread receives the echo
//! replies, opens them, runs IKE (rekeys included) and counts per flow.
//!
//! The sockets are opened inside the peer's namespace by a thread that enters it; a socket
//! stays in the namespace it was made in, so every other thread can use it from here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipsec_esp::{
    Direction, Mode as EspMode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap,
    MAX_HEADROOM, MAX_TAILROOM,
};
use dvipsec_ike::crypto::{DirectionKeys, EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{
    ChildSaInstalled, Credential, Endpoint, EndpointConfig, Event, Identity, IkeSaId, Lifetime,
    Mode, PeerConfig, Psk,
};
use zeroize::Zeroizing;

use super::stats::{FlowReceive, FlowStats, Histogram, ReplayCounter};
use super::wire::{self, Probe, IPV4_HEADER_LEN, UDP_HEADER_LEN};

const IKE_PORT: u16 = 500;
const NAT_T_PORT: u16 = 4500;
const NON_ESP_MARKER: [u8; 4] = [0; 4];
const PEER_NAME: &str = "gateway";
/// The receiver's window: what strongSwan's libipsec uses whatever is configured.
pub const REPLAY_WINDOW: u32 = 128;
/// How long replies still in flight are waited for after the senders stop.
const DRAIN: Duration = Duration::from_millis(400);
/// In closed-loop mode, a window that made no progress for this long is taken as lost.
const STALL: Duration = Duration::from_millis(20);
/// The first UDP source port of the flows; flow `f` uses `FLOW_PORT_BASE + f`.
const FLOW_PORT_BASE: u16 = 40_000;
const BUF_LEN: usize = 2048;

/// Why the load generator could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot open the load generator's sockets in namespace {namespace}: {reason}")]
    Sockets { namespace: String, reason: String },
    #[error("no echo came back through the tunnel within {0:?}")]
    NoEcho(Duration),
    #[error("IKE with the gateway failed: {0}")]
    Ike(String),
    #[error("the gateway did not answer IKE within {0:?}")]
    IkeTimeout(Duration),
    #[error("the ESP engine refused the negotiated child SA: {0}")]
    Esp(String),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Who the generator is and whom it talks to.
#[derive(Clone)]
pub struct PeerSpec {
    /// The namespace the generator's sockets live in.
    pub namespace: String,
    /// Outer addresses: ours, and the gateway's (the DVIPA for dvipsec).
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub psk: Zeroizing<Vec<u8>>,
    /// Inner addresses: the probes go from `inner_src` to `inner_dst:echo_port`.
    pub inner_src: Ipv4Addr,
    pub inner_dst: Ipv4Addr,
    pub echo_port: u16,
}

/// An established IKE SA with its first child SA, and the sockets it runs on.
pub struct Session {
    ike: UdpSocket,
    nat_t: UdpSocket,
    endpoint: Endpoint,
    ike_sa: IkeSaId,
    child: ChildSaInstalled,
    inner_src: Ipv4Addr,
    inner_dst: SocketAddrV4,
    /// The SA state outlives each measurement, as it would in a real peer: sequence numbers
    /// go on rising and the replay windows remember.
    outbound: Arc<OutboundGeneration>,
    inbound: HashMap<u32, (Sa, ReplayCounter)>,
    current_inbound_spi: u32,
    /// Measurements run so far: the id the next one's probes carry.
    runs: u32,
    /// How long IKE_SA_INIT to the installed child SA took.
    pub setup: Duration,
}

/// The traffic of one measurement.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Inner packet sizes, used in turn (one entry for a fixed size, a pattern for IMIX).
    pub sizes: Vec<usize>,
    pub flows: u32,
    /// Sender threads sharing the outbound SA, each taking sequence numbers from one counter
    /// (as the cluster's targets take them from the coupling facility).
    pub senders: usize,
    pub duration: Duration,
    /// Packets per second over all senders; 0 means closed loop with `inflight` outstanding.
    pub rate_pps: u64,
    pub inflight: u64,
    /// Rekey the child SA (through our IKE) this often while the traffic runs.
    pub rekey_every: Option<Duration>,
}

/// What one measurement counted.
#[derive(Debug, Clone)]
pub struct TrafficResult {
    pub elapsed: Duration,
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub received_bytes: u64,
    pub flows: Vec<FlowStats>,
    pub latency: Histogram,
    pub replay_rejected: u64,
    pub unknown_spi: u64,
    pub open_failures: u64,
    pub rekeys_started: u64,
    pub rekeys_completed: u64,
    /// Replies to an earlier measurement that arrived during this one (not counted in it).
    pub stale: u64,
}

fn bind_sockets(namespace: &str, local: Ipv4Addr) -> Result<(UdpSocket, UdpSocket), LoadError> {
    let failed = |reason: String| LoadError::Sockets {
        namespace: namespace.to_owned(),
        reason,
    };
    let opened = dvipsec_ports::netns::run_in(namespace, move || {
        let bind = |port| UdpSocket::bind(SocketAddrV4::new(local, port));
        Ok::<_, std::io::Error>((bind(IKE_PORT)?, bind(NAT_T_PORT)?))
    })
    .map_err(|e| failed(e.to_string()))?;
    opened.map_err(|e| failed(format!("bind {local}:500/4500: {e}")))
}

fn peer_config(spec: &PeerSpec) -> PeerConfig {
    PeerConfig {
        name: PEER_NAME.into(),
        remote_addr: Some(IpAddr::V4(spec.remote)),
        local_id: spec.local_id.clone(),
        remote_id: spec.remote_id.clone(),
        credential: Credential::Psk(Psk::new(&spec.psk)),
        ike_suites: vec![IkeSuite::AES128GCM_SHA256_X25519],
        esp_suites: vec![EspSuite::AES128GCM],
        local_ts: vec![TrafficSelector::prefix(IpAddr::V4(spec.inner_src), 32)],
        remote_ts: vec![TrafficSelector::prefix(IpAddr::V4(spec.inner_dst), 32)],
        mode: Mode::Tunnel,
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    }
}

impl Session {
    /// Opens the sockets in the peer's namespace and negotiates an IKE SA and a child SA.
    pub fn negotiate(spec: &PeerSpec, timeout: Duration) -> Result<Self, LoadError> {
        let started = Instant::now();
        let (ike, nat_t) = bind_sockets(&spec.namespace, spec.local)?;
        ike.set_nonblocking(true)?;
        nat_t.set_nonblocking(true)?;
        let config = EndpointConfig::new(vec![peer_config(spec)]);
        let mut endpoint = Endpoint::new(config).map_err(|e| LoadError::Ike(e.to_string()))?;
        let local = SocketAddr::new(IpAddr::V4(spec.local), IKE_PORT);
        let remote = SocketAddr::new(IpAddr::V4(spec.remote), IKE_PORT);
        endpoint
            .initiate(Instant::now(), PEER_NAME, local, remote)
            .map_err(|e| LoadError::Ike(e.to_string()))?;
        let mut established = None;
        let mut buf = vec![0u8; BUF_LEN * 32];
        while started.elapsed() < timeout {
            let now = Instant::now();
            pump_ike(&ike, &nat_t, &mut endpoint, &mut buf, now);
            while let Some(event) = endpoint.poll_event() {
                match event {
                    Event::IkeSaEstablished { ike_sa, .. } => established = Some(ike_sa),
                    Event::ChildSaInstalled(child) => {
                        let ike_sa = established.unwrap_or(child.ike_sa);
                        // From here on the receiver waits on port 4500 with a timeout, and the
                        // senders (sharing the socket) block rather than drop on a full buffer.
                        nat_t.set_nonblocking(false)?;
                        nat_t.set_read_timeout(Some(Duration::from_millis(10)))?;
                        let outbound = OutboundGeneration::of(&child)?;
                        let mut inbound = HashMap::new();
                        inbound.insert(
                            child.inbound_spi,
                            (inbound_sa(&child)?, ReplayCounter::new(REPLAY_WINDOW)),
                        );
                        return Ok(Session {
                            outbound,
                            inbound,
                            current_inbound_spi: child.inbound_spi,
                            runs: 0,
                            ike,
                            nat_t,
                            endpoint,
                            ike_sa,
                            child,
                            inner_src: spec.inner_src,
                            inner_dst: SocketAddrV4::new(spec.inner_dst, spec.echo_port),
                            setup: started.elapsed(),
                        });
                    }
                    Event::ChildSaRefused { notify, .. } => {
                        return Err(LoadError::Ike(format!(
                            "the gateway refused the child SA (notify {notify})"
                        )))
                    }
                    Event::IkeSaDeleted { reason, .. } => {
                        return Err(LoadError::Ike(format!("IKE SA deleted: {reason:?}")))
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(LoadError::IkeTimeout(timeout))
    }

    /// Sends light traffic on `flows` flows until every probe of a round comes back: the
    /// gateway may install the child SA (dvipsec: on its targets) a moment after IKE ends.
    /// Returns how long that took.
    pub fn warm_up(&mut self, flows: u32, timeout: Duration) -> Result<Duration, LoadError> {
        let started = Instant::now();
        let round = Traffic {
            sizes: vec![wire::MIN_PACKET],
            flows,
            senders: 1,
            duration: Duration::from_millis(200),
            rate_pps: u64::from(flows) * 10,
            inflight: 1,
            rekey_every: None,
        };
        while started.elapsed() < timeout {
            let result = self.run(&round, &|_| {})?;
            if result.sent > 0 && result.received >= result.sent {
                return Ok(started.elapsed());
            }
        }
        Err(LoadError::NoEcho(timeout))
    }

    /// Runs `traffic` and counts it. `tick` is called about every 100 ms with the time
    /// elapsed, for a progress bar.
    pub fn run(
        &mut self,
        traffic: &Traffic,
        tick: &dyn Fn(Duration),
    ) -> Result<TrafficResult, LoadError> {
        let shared = Arc::new(Shared::new(traffic, Arc::clone(&self.outbound)));
        let base = Instant::now();
        let senders: Vec<_> = (0..traffic.senders.max(1))
            .map(|index| {
                let sender = Sender {
                    index,
                    run_id: self.runs,
                    socket: self.nat_t.try_clone()?,
                    shared: Arc::clone(&shared),
                    traffic: traffic.clone(),
                    src: self.inner_src,
                    dst: self.inner_dst,
                    gateway: self.child.remote,
                    base,
                };
                Ok(std::thread::spawn(move || sender.run()))
            })
            .collect::<Result<_, std::io::Error>>()?;
        let mut receiver = Receiver::new(self, traffic)?;
        self.runs = self.runs.wrapping_add(1);
        let outcome = receiver.run(self, traffic, &shared, base, tick);
        shared.stop.store(true, Ordering::Relaxed);
        let mut send_errors = 0;
        for handle in senders {
            send_errors += handle.join().unwrap_or(0);
        }
        let result = receiver.finish(&shared, traffic.duration, send_errors);
        self.outbound = shared.current_outbound();
        self.current_inbound_spi = receiver.current_inbound_spi;
        self.inbound = std::mem::take(&mut receiver.inbound);
        outcome.map(|()| result)
    }
}

/// Feeds every waiting IKE datagram to the endpoint and sends what it wants sent. Port 4500
/// datagrams without the non-ESP marker are ESP and are left alone here (during negotiation
/// none arrive).
fn pump_ike(
    ike: &UdpSocket,
    nat_t: &UdpSocket,
    endpoint: &mut Endpoint,
    buf: &mut [u8],
    now: Instant,
) {
    for (socket, marker) in [(ike, false), (nat_t, true)] {
        let Ok(local) = socket.local_addr() else {
            continue;
        };
        while let Ok((len, from)) = socket.recv_from(buf) {
            let datagram = &buf[..len];
            let message = if marker {
                match datagram.strip_prefix(&NON_ESP_MARKER) {
                    Some(message) => message,
                    None => continue,
                }
            } else {
                datagram
            };
            endpoint.handle_datagram(now, from, local, message);
        }
    }
    drive_ike(ike, nat_t, endpoint, now);
}

/// Timers and transmissions of the IKE endpoint.
fn drive_ike(ike: &UdpSocket, nat_t: &UdpSocket, endpoint: &mut Endpoint, now: Instant) {
    if endpoint.poll_timeout().is_some_and(|t| t <= now) {
        endpoint.handle_timeout(now);
    }
    while let Some(transmit) = endpoint.poll_transmit(now) {
        // A lost IKE datagram is retransmitted by the endpoint's timer.
        let _ = if transmit.local.port() == NAT_T_PORT {
            let framed = [&NON_ESP_MARKER[..], &transmit.payload].concat();
            nat_t.send_to(&framed, transmit.remote)
        } else {
            ike.send_to(&transmit.payload, transmit.remote)
        };
    }
}

fn sa_config(
    spi: u32,
    direction: Direction,
    keys: &DirectionKeys,
    src: SocketAddr,
    dst: SocketAddr,
) -> SaConfig {
    let mut config = SaConfig::new(
        spi,
        direction,
        Suite::Aes128Gcm16,
        SaKeys::new(&keys.encr, &keys.integ),
    );
    config.mode = EspMode::Tunnel;
    config.tunnel = Some(TunnelEndpoints {
        src: src.ip(),
        dst: dst.ip(),
    });
    config.udp_encap = Some(UdpEncap {
        src_port: src.port(),
        dst_port: dst.port(),
    });
    // The generator counts replays itself (a real receiver's window, see ReplayCounter) and
    // still wants the late packets' latency and order: the engine's own check stays off.
    config.replay_window = 0;
    config
}

fn check_child(child: &ChildSaInstalled) -> Result<(), LoadError> {
    if !child.udp_encapsulation {
        return Err(LoadError::Esp(
            "the gateway did not choose UDP encapsulation; the generator sends ESP in UDP only"
                .into(),
        ));
    }
    if child.suite != EspSuite::AES128GCM {
        return Err(LoadError::Esp(format!(
            "negotiated {:?}, the generator runs AES-128-GCM",
            child.suite
        )));
    }
    Ok(())
}

fn inbound_sa(child: &ChildSaInstalled) -> Result<Sa, LoadError> {
    check_child(child)?;
    let config = sa_config(
        child.inbound_spi,
        Direction::Inbound,
        &child.inbound_keys,
        child.remote,
        child.local,
    );
    Sa::new(config).map_err(|e| LoadError::Esp(e.to_string()))
}

/// The outbound SA the senders use, with its shared sequence counter. A rekey publishes a new
/// generation; senders pick it up between packets.
struct OutboundGeneration {
    config: SaConfig,
    next_seq: AtomicU64,
}

impl OutboundGeneration {
    fn of(child: &ChildSaInstalled) -> Result<Arc<Self>, LoadError> {
        check_child(child)?;
        let config = sa_config(
            child.outbound_spi,
            Direction::Outbound,
            &child.outbound_keys,
            child.local,
            child.remote,
        );
        // Built once here so that a config the engine refuses fails the run, not a sender.
        Sa::new(config.clone()).map_err(|e| LoadError::Esp(e.to_string()))?;
        Ok(Arc::new(OutboundGeneration {
            config,
            next_seq: AtomicU64::new(1),
        }))
    }
}

/// What the senders and the receiver share.
struct Shared {
    stop: AtomicBool,
    sent_per_flow: Vec<AtomicU64>,
    sent_total: AtomicU64,
    received_total: AtomicU64,
    /// Closed loop: packets given up as lost, so that the window opens again.
    forgiven: AtomicU64,
    outbound: Mutex<Arc<OutboundGeneration>>,
    generation: AtomicU64,
}

impl Shared {
    fn new(traffic: &Traffic, outbound: Arc<OutboundGeneration>) -> Self {
        Shared {
            stop: AtomicBool::new(false),
            sent_per_flow: (0..traffic.flows.max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            sent_total: AtomicU64::new(0),
            received_total: AtomicU64::new(0),
            forgiven: AtomicU64::new(0),
            outbound: Mutex::new(outbound),
            generation: AtomicU64::new(0),
        }
    }

    fn current_outbound(&self) -> Arc<OutboundGeneration> {
        match self.outbound.lock() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn publish_outbound(&self, next: Arc<OutboundGeneration>) {
        match self.outbound.lock() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// One sender thread: seals probes of its flows and sends them.
struct Sender {
    index: usize,
    run_id: u32,
    socket: UdpSocket,
    shared: Arc<Shared>,
    traffic: Traffic,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    gateway: SocketAddr,
    base: Instant,
}

impl Sender {
    /// Sends until told to stop; returns the number of failed sends.
    fn run(self) -> u64 {
        let senders = self.traffic.senders.max(1);
        let flows: Vec<u32> = (0..self.traffic.flows.max(1))
            .filter(|f| *f as usize % senders == self.index)
            .collect();
        if flows.is_empty() {
            return 0;
        }
        let interval = (self.traffic.rate_pps > 0)
            .then(|| Duration::from_secs_f64(senders as f64 / self.traffic.rate_pps as f64));
        let mut generation = self.shared.generation.load(Ordering::Acquire);
        let mut current = self.shared.current_outbound();
        let Ok(mut sa) = Sa::new(current.config.clone()) else {
            return 0;
        };
        let mut buf = vec![0u8; MAX_HEADROOM + BUF_LEN + MAX_TAILROOM];
        let (mut errors, mut count) = (0u64, 0usize);
        let mut next_at = Instant::now();
        let mut stalled_since: Option<Instant> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(step) = interval {
                next_at = self.pace(next_at, step);
            } else if !self.window_open(&mut stalled_since) {
                continue;
            }
            let seen = self.shared.generation.load(Ordering::Acquire);
            if seen != generation {
                generation = seen;
                current = self.shared.current_outbound();
                match Sa::new(current.config.clone()) {
                    Ok(next) => sa = next,
                    Err(_) => return errors,
                }
            }
            // Every flow runs through the whole size pattern: were the size picked by `count`
            // alone, a pattern whose length shares a factor with the flow count would give
            // some flows only some sizes.
            let flow = flows[count % flows.len()];
            let size = self.traffic.sizes[(count / flows.len()) % self.traffic.sizes.len()];
            count += 1;
            if !self.send_one(&mut sa, &current, &mut buf, flow, size) {
                errors += 1;
            }
        }
        errors
    }

    /// Open loop: waits for the next slot of the paced schedule.
    fn pace(&self, next_at: Instant, step: Duration) -> Instant {
        while Instant::now() < next_at {
            if next_at - Instant::now() > Duration::from_micros(200) {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        next_at + step
    }

    /// Closed loop: true when fewer than `inflight` packets are outstanding. A window that
    /// stays full for [`STALL`] is written off as lost, so loss cannot stop the run.
    fn window_open(&self, stalled_since: &mut Option<Instant>) -> bool {
        let sent = self.shared.sent_total.load(Ordering::Relaxed);
        let received = self.shared.received_total.load(Ordering::Relaxed);
        let forgiven = self.shared.forgiven.load(Ordering::Relaxed);
        let outstanding = sent.saturating_sub(received + forgiven);
        if outstanding < self.traffic.inflight.max(1) {
            *stalled_since = None;
            return true;
        }
        let since = *stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= STALL {
            self.shared
                .forgiven
                .store(sent.saturating_sub(received), Ordering::Relaxed);
            *stalled_since = None;
        } else {
            // Sleeping, not spinning: on these 2-core machines a spinning generator takes the
            // CPU the gateway needs to drain the window.
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    }

    fn send_one(
        &self,
        sa: &mut Sa,
        generation: &OutboundGeneration,
        buf: &mut [u8],
        flow: u32,
        size: usize,
    ) -> bool {
        let flow_seq = self.shared.sent_per_flow[flow as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let probe = Probe {
            run: self.run_id,
            flow,
            seq: flow_seq,
            sent_ns: self.base.elapsed().as_nanos() as u64,
        };
        let src = SocketAddrV4::new(self.src, FLOW_PORT_BASE.wrapping_add(flow as u16));
        let inner = MAX_HEADROOM..MAX_HEADROOM + size;
        if wire::write_probe(&mut buf[inner.clone()], size, src, self.dst, probe).is_err() {
            return false;
        }
        let esp_seq = generation.next_seq.fetch_add(1, Ordering::Relaxed);
        let Ok(sealed) = sa.seal_with_seq(buf, inner, esp_seq) else {
            return false;
        };
        self.shared.sent_total.fetch_add(1, Ordering::Relaxed);
        // The socket adds the outer IPv4 and UDP headers itself.
        let start = sealed.packet.start + IPV4_HEADER_LEN + UDP_HEADER_LEN;
        self.socket
            .send_to(&buf[start..sealed.packet.end], self.gateway)
            .is_ok()
    }
}

/// The receiving side: the calling thread opens replies and runs IKE.
struct Receiver {
    inbound: HashMap<u32, (Sa, ReplayCounter)>,
    flows: Vec<FlowReceive>,
    unknown_spi: u64,
    open_failures: u64,
    rekeys_started: u64,
    rekeys_completed: u64,
    current_inbound_spi: u32,
    /// Replay rejections counted before this measurement.
    replay_before: u64,
    /// The id this measurement's probes carry, and replies to earlier ones that came late.
    run_id: u32,
    stale: u64,
}

fn replay_total(inbound: &HashMap<u32, (Sa, ReplayCounter)>) -> u64 {
    inbound.values().map(|(_, counter)| counter.rejected).sum()
}

impl Receiver {
    fn new(session: &mut Session, traffic: &Traffic) -> Result<Self, LoadError> {
        let inbound = std::mem::take(&mut session.inbound);
        Ok(Receiver {
            flows: vec![FlowReceive::default(); traffic.flows.max(1) as usize],
            unknown_spi: 0,
            open_failures: 0,
            rekeys_started: 0,
            rekeys_completed: 0,
            current_inbound_spi: session.current_inbound_spi,
            replay_before: replay_total(&inbound),
            run_id: session.runs,
            stale: 0,
            inbound,
        })
    }

    fn run(
        &mut self,
        session: &mut Session,
        traffic: &Traffic,
        shared: &Shared,
        base: Instant,
        tick: &dyn Fn(Duration),
    ) -> Result<(), LoadError> {
        let mut buf = vec![0u8; MAX_HEADROOM + BUF_LEN + MAX_TAILROOM];
        let mut last_tick = Instant::now();
        let mut next_rekey = traffic.rekey_every.map(|every| base + every);
        let stop_at = base + traffic.duration;
        let drain_until = stop_at + DRAIN;
        loop {
            let now = Instant::now();
            if now >= stop_at {
                shared.stop.store(true, Ordering::Relaxed);
            }
            if now >= drain_until {
                return Ok(());
            }
            if next_rekey.is_some_and(|at| now >= at && now < stop_at) {
                self.start_rekey(session, now);
                next_rekey = traffic.rekey_every.map(|every| now + every);
            }
            self.receive_one(session, shared, &mut buf, base)?;
            drive_ike(&session.ike, &session.nat_t, &mut session.endpoint, now);
            self.handle_events(session, shared)?;
            if last_tick.elapsed() >= Duration::from_millis(100) {
                last_tick = Instant::now();
                tick(base.elapsed().min(traffic.duration));
            }
        }
    }

    fn start_rekey(&mut self, session: &mut Session, now: Instant) {
        let started = session
            .endpoint
            .rekey_child(now, session.ike_sa, self.current_inbound_spi);
        if started.is_ok() {
            self.rekeys_started += 1;
        }
    }

    /// Receives at most one datagram (waiting up to the socket's timeout) and handles it.
    fn receive_one(
        &mut self,
        session: &mut Session,
        shared: &Shared,
        buf: &mut [u8],
        base: Instant,
    ) -> Result<(), LoadError> {
        let headers = IPV4_HEADER_LEN + UDP_HEADER_LEN;
        let start = MAX_HEADROOM - headers;
        let (len, from) = match session.nat_t.recv_from(&mut buf[MAX_HEADROOM..]) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        let datagram = &buf[MAX_HEADROOM..MAX_HEADROOM + len];
        if let Some(message) = datagram.strip_prefix(&NON_ESP_MARKER) {
            let local = session.nat_t.local_addr()?;
            let message = message.to_vec();
            session
                .endpoint
                .handle_datagram(Instant::now(), from, local, &message);
            return Ok(());
        }
        if len < 8 {
            return Ok(()); // NAT keepalive or runt: nothing to count
        }
        let spi = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]);
        let Some((sa, replay)) = self.inbound.get_mut(&spi) else {
            self.unknown_spi += 1;
            return Ok(());
        };
        let (SocketAddr::V4(from), SocketAddr::V4(local)) = (from, session.nat_t.local_addr()?)
        else {
            self.open_failures += 1;
            return Ok(());
        };
        wire::write_outer_headers(&mut buf[start..MAX_HEADROOM], from, local, len);
        let Ok(opened) = sa.open(buf, start..MAX_HEADROOM + len) else {
            self.open_failures += 1;
            return Ok(());
        };
        replay.observe(opened.seq);
        let inner = &buf[opened.packet];
        let Some(probe) = wire::read_probe(inner) else {
            return Ok(());
        };
        if probe.run != self.run_id {
            self.stale += 1;
            return Ok(());
        }
        let Some(flow) = self.flows.get_mut(probe.flow as usize) else {
            return Ok(());
        };
        let now_ns = base.elapsed().as_nanos() as u64;
        flow.record(probe.seq, inner.len(), now_ns.saturating_sub(probe.sent_ns));
        shared.received_total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn handle_events(&mut self, session: &mut Session, shared: &Shared) -> Result<(), LoadError> {
        while let Some(event) = session.endpoint.poll_event() {
            match event {
                Event::ChildSaRekeyed { new, .. } => {
                    self.inbound.insert(
                        new.inbound_spi,
                        (inbound_sa(&new)?, ReplayCounter::new(REPLAY_WINDOW)),
                    );
                    shared.publish_outbound(OutboundGeneration::of(&new)?);
                    self.current_inbound_spi = new.inbound_spi;
                    self.rekeys_completed += 1;
                }
                Event::IkeSaRekeyed { new, .. } => session.ike_sa = new,
                Event::IkeSaDeleted { reason, .. } => {
                    return Err(LoadError::Ike(format!(
                        "the IKE SA went away during the run: {reason:?}"
                    )))
                }
                // A deleted child's SPI stays known, so late packets on it count as
                // received; its replay tally stays in the total.
                _ => {}
            }
        }
        Ok(())
    }

    fn finish(&self, shared: &Shared, elapsed: Duration, send_errors: u64) -> TrafficResult {
        let mut latency = Histogram::default();
        let flows: Vec<FlowStats> = self
            .flows
            .iter()
            .enumerate()
            .map(|(index, receive)| {
                latency.merge(&receive.latency);
                let sent = shared.sent_per_flow[index].load(Ordering::Relaxed);
                FlowStats::finish(index as u32, sent, receive)
            })
            .collect();
        TrafficResult {
            elapsed,
            sent: shared.sent_total.load(Ordering::Relaxed),
            send_errors,
            received: self.flows.iter().map(|f| f.received).sum(),
            received_bytes: self.flows.iter().map(|f| f.bytes).sum(),
            flows,
            latency,
            replay_rejected: replay_total(&self.inbound) - self.replay_before,
            unknown_spi: self.unknown_spi,
            open_failures: self.open_failures,
            rekeys_started: self.rekeys_started,
            rekeys_completed: self.rekeys_completed,
            stale: self.stale,
        }
    }
}
