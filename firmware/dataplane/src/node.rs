//! The roles on packet ports: a distributor node and a target node, each a [`PollNode`] that a
//! polling loop drives. They move frames between ports and the sans-io cores; nothing here
//! allocates per packet (bursts and queues are sized at construction, buffers come from pools).
//! Being the I/O side, the nodes also time their stages per burst ([`StageCosts`]): the cores
//! read no clock.

use crate::app::{Datagram, SocketId, Sockets, ECHO_PORT};
use crate::distributor::{Decision, Distributor, DropCause, LocalReason};
use crate::frame::{in_storage, narrow};
use crate::gre::{self, EncapTemplate, FORWARD_OVERHEAD};
use crate::poll::{LoopStats, PollNode};
use crate::sa_table::{LifesizeSink, SaTable};
use crate::target::{Delivery, Ingress, Outgoing, Target, TargetConfig, TargetDrop, TargetPaths};
use crate::wire::{self, Flow, Mac, ETHERNET_LEN};
use dvipsec_cf::SequenceFacility;
use dvipsec_esp::ip::{self, Family};
use dvipsec_ports::{Burst, PacketBuf, PacketPort};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Frames taken or sent per burst.
pub const BURST: usize = 32;
/// Received bursts of at most this many frames go through the forward stage with arrays of this
/// size: the running boxes' bursts average 4 frames, and filling 32-entry arrays per burst cost
/// more than a few frames' work.
const SMALL_BURST: usize = 8;
/// Extra room a locally built datagram leaves in front of it, so ESP with a 16-byte IV fits too.
const SEND_SLACK: usize = 32;

/// A static neighbour table: the MAC address for an IP address (no ARP on the fabric).
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    entries: Vec<(IpAddr, Mac)>,
}

impl Neighbours {
    /// A table from (address, MAC) pairs.
    pub fn new(entries: Vec<(IpAddr, Mac)>) -> Self {
        Neighbours { entries }
    }

    /// The MAC of `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<Mac> {
        self.entries
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, m)| *m)
    }
}

fn push_or_flush<P: PacketPort>(port: &mut P, burst: &mut Burst, frame: PacketBuf) {
    if burst.is_full() {
        port.tx_burst(burst);
    }
    // The burst has room now.
    let _ = burst.push(frame);
}

fn prepend_ethernet(frame: &mut PacketBuf, dst: Mac, src: Mac, family: Family) -> bool {
    let Ok(head) = frame.prepend(ETHERNET_LEN) else {
        return false;
    };
    let Ok(header) = <&mut [u8; ETHERNET_LEN]>::try_from(head) else {
        return false;
    };
    wire::write_ethernet(header, dst, src, family);
    true
}

fn strip_ethernet(frame: &mut PacketBuf) -> bool {
    match wire::ip_payload(frame.data()) {
        Ok(ip) => narrow(frame, ip),
        Err(_) => false,
    }
}

/// Opens the IP packet in `frame` with `open` (a target's inbound path) and narrows the frame to
/// the inner packet; the flow when it was accepted.
fn open_frame(
    frame: &mut PacketBuf,
    open: impl FnOnce(&mut [u8], Range<usize>) -> Result<Delivery, TargetDrop>,
) -> Option<Flow> {
    let mut delivered = None;
    let opened = in_storage(
        frame,
        |bytes, range| {
            let delivery = open(bytes, range)?;
            delivered = Some(delivery.flow);
            Ok(delivery.packet)
        },
        TargetDrop::Malformed,
    );
    opened.ok().and(delivered)
}

/// Seals the IP packet in `frame` with `seal` (a target's outbound path) and frames it for the
/// peer it is for, from `own_mac`.
fn seal_for_peer(
    frame: &mut PacketBuf,
    peers: &Neighbours,
    own_mac: Mac,
    seal: impl FnOnce(&mut [u8], Range<usize>) -> Result<Outgoing, TargetDrop>,
) -> Result<(), SendError> {
    let mut peer = None;
    in_storage(
        frame,
        |bytes, range| {
            let out = seal(bytes, range)?;
            peer = Some(out.peer);
            Ok(out.packet)
        },
        TargetDrop::Seal,
    )
    .map_err(SendError::Dropped)?;
    let peer = peer.ok_or(SendError::Dropped(TargetDrop::Seal))?;
    let mac = peers.lookup(peer).ok_or(SendError::NoRoute(peer))?;
    let family = if peer.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    if !prepend_ethernet(frame, mac, own_mac, family) {
        return Err(SendError::NoBuffer);
    }
    Ok(())
}

/// A UDP datagram from the socket `socket` to `dst`, built in a fresh buffer of `port` with room
/// in front for the ESP and Ethernet headers.
fn build_datagram<P: PacketPort>(
    port: &mut P,
    sockets: &Sockets,
    socket: SocketId,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<(PacketBuf, SocketAddr), SendError> {
    let local = sockets.local_addr(socket).ok_or(SendError::UnknownSocket)?;
    let mut frame = port.alloc_tx().ok_or(SendError::NoBuffer)?;
    let room = frame.tailroom().saturating_sub(SEND_SLACK);
    let made = frame.append(SEND_SLACK).is_ok() && frame.trim_front(SEND_SLACK).is_ok();
    if !made {
        return Err(SendError::NoBuffer);
    }
    let len = {
        let space = frame.append(room).map_err(|_| SendError::NoBuffer)?;
        wire::write_udp(space, local, dst, payload)?
    };
    let _ = frame.trim_back(room - len);
    Ok((frame, local))
}

/// Counters of a node's frame handling outside the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCounters {
    /// Frames that were not IP over Ethernet.
    pub not_ip: u64,
    /// Frames with no room to grow headers, or no neighbour to send to.
    pub no_room_or_route: u64,
    /// Packets handed to local processing but the local queue was full.
    pub local_overflow: u64,
    /// Frames copied into a fresh buffer because theirs lacked headroom for the new headers.
    pub relocated: u64,
}

/// Time a node spent in one stage of its packet path, and the packets that went through it,
/// summed over bursts: divided, the cost per packet (as VPP's `show runtime` gives clocks per
/// packet per node). Bursts are timed whole, two clock reads each: a read per packet would cost
/// about as much as the work measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageCost {
    /// Nanoseconds spent in the stage.
    pub nanoseconds: u64,
    /// Packets that went through it.
    pub packets: u64,
    /// Bursts timed: packets over bursts is the mean burst, and small bursts pay the clock
    /// reads and the per-burst work over few packets.
    pub bursts: u64,
}

impl StageCost {
    /// Adds a burst of `packets` that entered the stage at `started`; empty bursts are not
    /// counted (their time is the polling loop's, not the stage's).
    fn add_burst(&mut self, started: Instant, packets: usize) {
        if packets == 0 {
            return;
        }
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanoseconds = self.nanoseconds.saturating_add(spent);
        self.packets += packets as u64;
        self.bursts += 1;
    }

    /// Mean nanoseconds per packet (None before the first packet).
    pub fn per_packet_ns(&self) -> Option<f64> {
        (self.packets > 0).then(|| self.nanoseconds as f64 / self.packets as f64)
    }
}

/// The per-stage costs of a node. A distributor fills `forward`; a target `decap` and `encap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageCosts {
    /// Distributor: from a received burst in hand to every forwarded frame queued for the XCF
    /// port (Ethernet strip, dispatch, GRE and Ethernet headers), for every frame of the burst.
    /// Not the ports' receive and send calls, and not the flows the box serves itself.
    pub forward: StageCost,
    /// Target: from a received frame in hand to its inner packet delivered to a socket or the
    /// echo service's queue (link check, GRE decap, shadow SA lookup, ESP open, CF replay
    /// update, inner checks). Not the application, not the reply.
    pub decap: StageCost,
    /// Target: the echo service's replies, from the reply turned around to the sealed frame
    /// queued for the external port (outbound SA lookup, CF sequence numbers, ESP seal,
    /// Ethernet header). Datagrams applications send one by one are not timed.
    pub encap: StageCost,
}

/// The accessors both node kinds share: their counters, their two ports and their SAs' lifesize
/// (fields `counters`, `stages`, `external`, `xcf` and `sas` in each).
macro_rules! node_accessors {
    () => {
        /// The node's own counters.
        pub fn counters(&self) -> NodeCounters {
            self.counters
        }

        /// The time spent per stage, and the packets through it.
        pub fn stage_costs(&self) -> StageCosts {
            self.stages
        }

        /// The external port (for its counters).
        pub fn external_port(&self) -> &P {
            &self.external
        }

        /// The XCF port (for its counters).
        pub fn xcf_port(&self) -> &P {
            &self.xcf
        }

        /// Hands every SA's unreported lifesize counts to `sink` (on a distributor: what it
        /// opened and sealed itself).
        pub fn report_lifesize(&mut self, sink: &mut dyn LifesizeSink) {
            self.sas.drain_usage(&mut |report| sink.report(report));
        }

        /// The XCF port, writable (to tap or inject frames in tests and diagnostics).
        pub fn xcf_port_mut(&mut self) -> &mut P {
            &mut self.xcf
        }
    };
}

/// A distributor on two ports: external (peers) and XCF (targets).
pub struct DistributorNode<P, S, F> {
    /// The dispatch core.
    pub distributor: Distributor,
    /// The SAs (the distributor's own inbound SAs).
    pub sas: S,
    /// The CF handle.
    pub facility: F,
    external: P,
    xcf: P,
    /// The forward headers to each target with a known MAC, made once (the XCF addresses and
    /// MACs are fixed for the node's life).
    forward_headers: Vec<EncapTemplate>,
    rx: Burst,
    to_xcf: Burst,
    local: Burst,
    /// Frames of the current burst the box serves itself, handled after the forward stage.
    own_rx: Burst,
    counters: NodeCounters,
    stages: StageCosts,
    stats: Arc<LoopStats>,
    last_sweep_us: u64,
    own: Option<OwnTraffic>,
}

/// The distributor box's own ESP endpoint for packets it does not distribute: the target's
/// inbound and outbound paths (with the node's SAs and CF handle), applications' sockets, the
/// echo service and the way out to peers.
struct OwnTraffic {
    paths: TargetPaths,
    sockets: Sockets,
    external_mac: Mac,
    peers: Neighbours,
    echo: bool,
    to_external: Burst,
    echoed: u64,
}

/// How the distributor box serves the traffic it does not distribute.
#[derive(Debug, Clone)]
pub struct LocalService {
    /// The DVIPAs (and XCF address) the box terminates ESP for itself.
    pub config: TargetConfig,
    /// The MAC of the box's external port (the source of its replies).
    pub external_mac: Mac,
    /// Peers' outer addresses and the MACs to send to.
    pub peers: Neighbours,
    /// Whether the echo service answers on every DVIPA's port 60.
    pub echo: bool,
}

/// How often the distributor sweeps timed-out DCT entries.
const DCT_SWEEP_INTERVAL_US: u64 = 100_000;

impl<P: PacketPort, S: SaTable, F: SequenceFacility> DistributorNode<P, S, F> {
    /// A node; `target_macs` maps targets' XCF addresses to their XCF port MACs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        distributor: Distributor,
        sas: S,
        facility: F,
        external: P,
        xcf: P,
        xcf_mac: Mac,
        target_macs: Neighbours,
        local_queue: usize,
    ) -> Self {
        DistributorNode {
            sas,
            facility,
            external,
            forward_headers: forward_headers(&distributor, xcf_mac, &target_macs),
            distributor,
            xcf,
            rx: Burst::with_capacity(BURST),
            to_xcf: Burst::with_capacity(BURST),
            local: Burst::with_capacity(local_queue),
            own_rx: Burst::with_capacity(BURST),
            counters: NodeCounters::default(),
            stages: StageCosts::default(),
            stats: Arc::default(),
            last_sweep_us: 0,
            own: None,
        }
    }

    /// Decapsulates ESP that is not distributed (no DCT entry, not a distributed port, or not
    /// distributable) on this box with the target's paths, instead of queueing it. IKE and
    /// non-IPsec packets still go to [`DistributorNode::local_queue`].
    pub fn serve_locally(&mut self, service: LocalService) {
        self.own = Some(OwnTraffic {
            paths: TargetPaths::new(service.config),
            sockets: Sockets::default(),
            external_mac: service.external_mac,
            peers: service.peers,
            echo: service.echo,
            to_external: Burst::with_capacity(BURST),
            echoed: 0,
        });
    }

    /// The counters of the box's own inbound and outbound ESP (None unless serving locally).
    pub fn local_counters(&self) -> Option<crate::target::TargetCounters> {
        self.own.as_ref().map(|own| own.paths.counters())
    }

    /// Echo replies the box sent itself.
    pub fn local_echoed(&self) -> u64 {
        self.own.as_ref().map_or(0, |own| own.echoed)
    }

    /// Binds a UDP socket on the box itself to `local` (a DVIPA it serves locally).
    pub fn bind_udp(
        &mut self,
        local: SocketAddr,
        queue: usize,
    ) -> Result<SocketId, crate::app::BindError> {
        let own = self
            .own
            .as_mut()
            .filter(|own| own.paths.config().dvipas.contains(&local.ip()))
            .ok_or(crate::app::BindError::NotDvipa(local.ip()))?;
        own.sockets.bind(local, queue)
    }

    /// The oldest datagram queued on a socket of the box.
    pub fn recv(&mut self, socket: SocketId) -> Option<Datagram> {
        self.own.as_mut()?.sockets.recv(socket)
    }

    /// Sends `payload` from a socket of the box to `dst`, sealed with a sequence number from the
    /// CF, queued for the external port (sent by the next poll).
    pub fn send_to(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        payload: &[u8],
        now_us: u64,
    ) -> Result<(), SendError> {
        let own = self.own.as_mut().ok_or(SendError::UnknownSocket)?;
        let (frame, _) = build_datagram(&mut self.external, &own.sockets, socket, dst, payload)?;
        self.seal_own(frame, now_us)
    }

    fn seal_own(&mut self, mut frame: PacketBuf, now_us: u64) -> Result<(), SendError> {
        let own = self.own.as_mut().ok_or(SendError::UnknownSocket)?;
        let (facility, sas, paths) = (&self.facility, &mut self.sas, &mut own.paths);
        seal_for_peer(&mut frame, &own.peers, own.external_mac, |bytes, range| {
            paths.outbound(facility, sas, bytes, range, now_us)
        })?;
        push_or_flush(&mut self.external, &mut own.to_external, frame);
        Ok(())
    }

    /// Opens ESP that stays on this box and hands it to a socket or the echo service.
    fn process_own(&mut self, mut frame: PacketBuf, now_us: u64) {
        let Some(own) = self.own.as_mut() else {
            return;
        };
        let (facility, sas, paths) = (&self.facility, &mut self.sas, &mut own.paths);
        let Some(flow) = open_frame(&mut frame, |bytes, range| {
            paths.inbound_at(facility, sas, Ingress::External, bytes, range, now_us)
        }) else {
            return;
        };
        if own.echo && flow.dst_port == ECHO_PORT && flow.protocol == wire::UDP {
            if wire::reverse_udp(frame.data_mut()).is_ok() && self.seal_own(frame, now_us).is_ok() {
                if let Some(own) = self.own.as_mut() {
                    own.echoed += 1;
                }
            }
        } else {
            own.sockets.deliver(frame, &flow);
        }
    }

    /// Frames waiting for local processing (IKE, non-distributed traffic), IP packets.
    pub fn local_queue(&mut self) -> &mut Burst {
        &mut self.local
    }

    /// Gives the ports back (the box changes role: frames still queued are dropped).
    pub fn into_ports(self) -> (P, P) {
        (self.external, self.xcf)
    }

    node_accessors!();

    /// The forward stage over one received burst: strips Ethernet from every frame, dispatches
    /// the IP packets together, then acts on each decision in arrival order. Frames the box
    /// serves itself wait in `own_rx`.
    fn forward_burst(&mut self, rx: &mut Burst, now_us: u64) {
        if rx.len() <= SMALL_BURST {
            self.forward_burst_in::<SMALL_BURST>(rx, now_us);
        } else {
            self.forward_burst_in::<BURST>(rx, now_us);
        }
    }

    /// [`DistributorNode::forward_burst`] with per-burst arrays of `N` entries; frames past `N`
    /// are counted as not IP.
    #[inline(always)]
    fn forward_burst_in<const N: usize>(&mut self, rx: &mut Burst, now_us: u64) {
        let mut is_ip = [false; N];
        for (frame, ip) in rx.frames_mut().iter_mut().zip(is_ip.iter_mut()) {
            *ip = strip_ethernet(frame);
        }
        let mut decisions = [Decision::Drop(DropCause::Malformed); N];
        let mut packets: [&[u8]; N] = [&[]; N];
        let mut count = 0;
        for (frame, _) in rx.frames().iter().zip(is_ip).filter(|(_, ip)| *ip) {
            packets[count] = frame.data();
            count += 1;
        }
        self.distributor.dispatch_burst(
            &self.sas,
            &self.facility,
            &packets[..count],
            now_us,
            &mut decisions[..count],
        );
        let wrapped = self.wrap_forwarded(rx, &decisions[..count], is_ip);
        if self.forward_whole_burst(rx, &wrapped) {
            return;
        }
        let per_frame = per_frame(&decisions[..count], is_ip);
        for (index, frame) in rx.drain().enumerate() {
            let decision = per_frame.get(index).copied().flatten();
            let wrap = wrapped.get(index).copied().unwrap_or(Wrapped::NotForwarded);
            match (decision, wrap) {
                (None, _) => self.counters.not_ip += 1,
                (Some(_), Wrapped::Done) => push_or_flush(&mut self.xcf, &mut self.to_xcf, frame),
                (Some(_), Wrapped::Dropped) => {}
                (Some(Decision::Forward { xcf_address, .. }), Wrapped::NeedsRoom) => {
                    self.forward(frame, xcf_address)
                }
                (Some(decision), _) => self.act(frame, decision, now_us),
            }
        }
    }

    /// The usual burst: every frame wrapped for XCF and nothing queued before it. The burst
    /// becomes the XCF queue as it is (two vectors swapped) instead of each frame being moved
    /// across; the emptied queue receives the next burst.
    #[inline(always)]
    fn forward_whole_burst<const N: usize>(
        &mut self,
        rx: &mut Burst,
        wrapped: &[Wrapped; N],
    ) -> bool {
        let whole = self.to_xcf.is_empty()
            && rx.len() <= N
            && wrapped[..rx.len()].iter().all(|w| *w == Wrapped::Done);
        if whole {
            std::mem::swap(rx, &mut self.to_xcf);
        }
        whole
    }

    /// Writes the forward headers of the burst's frames to forward where they lie, so that
    /// afterwards each frame is moved once, into its queue (every move of a frame through calls
    /// cost a stalled reload).
    // Inlined, as `per_frame`: returned through memory, the per-burst arrays cost 1-3 ns a packet.
    #[inline(always)]
    fn wrap_forwarded<const N: usize>(
        &mut self,
        rx: &mut Burst,
        decisions: &[Decision],
        is_ip: [bool; N],
    ) -> [Wrapped; N] {
        let mut wrapped = [Wrapped::NotForwarded; N];
        // The IP frames' decisions in order; the others have none.
        let mut decided = decisions.iter();
        let frames = rx.frames_mut().iter_mut().zip(is_ip).zip(&mut wrapped);
        for ((frame, _), wrap) in frames.filter(|((_, ip), _)| *ip) {
            if let Some(&Decision::Forward { xcf_address, .. }) = decided.next() {
                if !self.serves_itself(xcf_address) {
                    *wrap = wrap_in_place(
                        &self.forward_headers,
                        &mut self.counters,
                        frame,
                        xcf_address,
                    );
                }
            }
        }
        wrapped
    }

    /// The box is a target of its own DVIPA: it serves such flows itself, no GRE to itself.
    fn serves_itself(&self, xcf_address: Ipv4Addr) -> bool {
        self.own.is_some() && xcf_address == self.distributor.xcf_address()
    }

    fn act(&mut self, frame: PacketBuf, decision: Decision, now_us: u64) {
        match decision {
            // The box is a target of its own DVIPA: no GRE to itself, it serves the flow here.
            Decision::Forward { xcf_address, .. } if self.serves_itself(xcf_address) => {
                self.defer_own(frame, now_us)
            }
            Decision::Forward { xcf_address, .. } => self.forward(frame, xcf_address),
            Decision::Local(LocalReason::NotDistributed | LocalReason::NotDistributable)
                if self.own.is_some() =>
            {
                self.defer_own(frame, now_us)
            }
            Decision::Local(_) => {
                if self.local.push(frame).is_err() {
                    self.counters.local_overflow += 1;
                }
            }
            Decision::Drop(_) => {}
        }
    }

    /// Keeps a frame the box serves itself for after the forward stage (a target's work, not
    /// forwarding); the queue has room for a whole burst, so serving it at once never happens
    /// unless the receive burst was larger.
    fn defer_own(&mut self, frame: PacketBuf, now_us: u64) {
        if let Err(frame) = self.own_rx.push(frame) {
            self.process_own(frame, now_us);
        }
    }

    fn serve_own(&mut self, now_us: u64) {
        let mut own_rx = std::mem::replace(&mut self.own_rx, Burst::with_capacity(0));
        for frame in own_rx.drain() {
            self.process_own(frame, now_us);
        }
        self.own_rx = own_rx;
    }

    fn forward(&mut self, frame: PacketBuf, target: Ipv4Addr) {
        let Some(headers) = self
            .forward_headers
            .iter()
            .find(|h| h.dst == target)
            .copied()
        else {
            self.counters.no_room_or_route += 1;
            return;
        };
        let Some(mut frame) = self.with_headroom(frame, FORWARD_OVERHEAD) else {
            self.counters.no_room_or_route += 1;
            return;
        };
        let Some(family) = gre::family_of(frame.data()) else {
            self.counters.not_ip += 1;
            return;
        };
        let len = frame.len();
        let wrapped = frame
            .prepend(FORWARD_OVERHEAD)
            .ok()
            .and_then(|head| <&mut [u8; FORWARD_OVERHEAD]>::try_from(head).ok())
            .is_some_and(|head| headers.write(head, family, len).is_ok());
        if !wrapped {
            self.counters.no_room_or_route += 1;
            return;
        }
        push_or_flush(&mut self.xcf, &mut self.to_xcf, frame);
    }
}

/// Each frame's decision, from those of its IP frames in order; None for a frame that is not
/// IP (or past the burst's size).
#[inline(always)]
fn per_frame<const N: usize>(decisions: &[Decision], is_ip: [bool; N]) -> [Option<Decision>; N] {
    let mut per_frame = [None; N];
    let mut decided = decisions.iter();
    for (slot, _) in per_frame.iter_mut().zip(is_ip).filter(|(_, ip)| *ip) {
        *slot = decided.next().copied();
    }
    per_frame
}

/// What [`wrap_in_place`] did to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrapped {
    /// Not a frame to forward: untouched.
    NotForwarded,
    /// Its forward headers are written: send it.
    Done,
    /// Too little headroom for the headers: it must be copied to a roomier buffer first.
    NeedsRoom,
    /// It cannot be forwarded (no route, not IP, too large): counted, to be dropped.
    Dropped,
}

/// Writes the forward headers to `target` in front of `frame` where it lies, counting in
/// `counters` what cannot be forwarded (the checks in the order of `DistributorNode::forward`,
/// which a frame short of headroom still takes).
fn wrap_in_place(
    headers: &[EncapTemplate],
    counters: &mut NodeCounters,
    frame: &mut PacketBuf,
    target: Ipv4Addr,
) -> Wrapped {
    let Some(headers) = headers.iter().find(|h| h.dst == target) else {
        counters.no_room_or_route += 1;
        return Wrapped::Dropped;
    };
    if frame.headroom() < FORWARD_OVERHEAD {
        return Wrapped::NeedsRoom;
    }
    let Some(family) = gre::family_of(frame.data()) else {
        counters.not_ip += 1;
        return Wrapped::Dropped;
    };
    let len = frame.len();
    let wrapped = frame
        .prepend(FORWARD_OVERHEAD)
        .ok()
        .and_then(|head| <&mut [u8; FORWARD_OVERHEAD]>::try_from(head).ok())
        .is_some_and(|head| headers.write(head, family, len).is_ok());
    if wrapped {
        Wrapped::Done
    } else {
        counters.no_room_or_route += 1;
        Wrapped::Dropped
    }
}

/// The forward headers from the distributor's XCF port to every target whose MAC is known.
fn forward_headers(
    distributor: &Distributor,
    xcf_mac: Mac,
    target_macs: &Neighbours,
) -> Vec<EncapTemplate> {
    target_macs
        .entries
        .iter()
        .filter_map(|(address, mac)| match address {
            IpAddr::V4(target) => Some(EncapTemplate::new(
                distributor.xcf_address(),
                *target,
                xcf_mac,
                *mac,
            )),
            IpAddr::V6(_) => None,
        })
        .collect()
}

impl<P: PacketPort, S: SaTable, F: SequenceFacility> DistributorNode<P, S, F> {
    /// The frame itself when it has `needed` bytes of headroom, else a copy in a fresh buffer
    /// of the XCF port (a frame that came over the in-memory fabric keeps the sender's layout).
    fn with_headroom(&mut self, frame: PacketBuf, needed: usize) -> Option<PacketBuf> {
        if frame.headroom() >= needed {
            return Some(frame);
        }
        let mut copy = self.xcf.alloc_tx()?;
        copy.set_frame(frame.data()).ok()?;
        self.counters.relocated += 1;
        (copy.headroom() >= needed).then_some(copy)
    }
}

impl<P: PacketPort, S: SaTable, F: SequenceFacility> PollNode for DistributorNode<P, S, F> {
    fn poll(&mut self, now_us: u64) -> usize {
        let mut rx = std::mem::replace(&mut self.rx, Burst::with_capacity(0));
        let received = self.external.rx_burst(&mut rx);
        if !rx.is_empty() {
            let started = Instant::now();
            let frames = rx.len();
            self.forward_burst(&mut rx, now_us);
            self.stages.forward.add_burst(started, frames);
            self.serve_own(now_us);
        }
        self.rx = rx;
        if !self.to_xcf.is_empty() {
            self.xcf.tx_burst(&mut self.to_xcf);
        }
        if let Some(own) = self.own.as_mut().filter(|own| !own.to_external.is_empty()) {
            self.external.tx_burst(&mut own.to_external);
        }
        if now_us.saturating_sub(self.last_sweep_us) >= DCT_SWEEP_INTERVAL_US {
            self.last_sweep_us = now_us;
            self.distributor.expire(now_us);
        }
        received
    }

    fn loop_stats(&self) -> &Arc<LoopStats> {
        &self.stats
    }
}

/// Why an application's send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The socket id is unknown.
    #[error("unknown socket")]
    UnknownSocket,
    /// No free buffer in the port's pool.
    #[error("no free packet buffer")]
    NoBuffer,
    /// The datagram could not be built (too large, mixed families).
    #[error("datagram: {0}")]
    Build(#[from] wire::WireError),
    /// The outbound path refused it (no SA, CF failure, seal failure).
    #[error("outbound path dropped it: {0:?}")]
    Dropped(TargetDrop),
    /// No MAC address for the peer.
    #[error("no route to {0}")]
    NoRoute(IpAddr),
}

/// A target on two ports: external (to peers, outbound) and XCF (from the distributor).
pub struct TargetNode<P, S, F> {
    /// The target core.
    pub target: Target<F>,
    /// The shadow SAs.
    pub sas: S,
    /// The applications' sockets.
    pub sockets: Sockets,
    external: P,
    xcf: P,
    external_mac: Mac,
    peers: Neighbours,
    echo: bool,
    distributor_links: Vec<DistributorLink>,
    rx: Burst,
    to_external: Burst,
    /// Datagrams of the current burst for the echo service, answered after the decap stage.
    to_echo: Burst,
    counters: NodeCounters,
    stages: StageCosts,
    stats: Arc<LoopStats>,
    /// Echo replies sent.
    pub echoed: u64,
    pending: VecDeque<Pending>,
    newconn: Vec<NewconnRequest>,
    newconn_timeout_us: u64,
    /// Held packets released once their SA arrived.
    pub pending_released: u64,
    /// Held packets dropped because no SA arrived in time.
    pub pending_timeouts: u64,
    /// The connections this box serves (what CONN_REPORT tells a new distributor).
    connections: ConnectionTable,
}

/// One connection a target served: the inner 5-tuple as the peer sent it (the DCT's key, so
/// that a new distributor puts it back as it was).
pub type ServedConnection = crate::dct::FlowKey;

/// The most connections a target remembers for CONN_REPORT; past it new ones are not
/// remembered (they are placed anew by a new distributor) and nothing is allocated.
const CONNECTIONS_REMEMBERED: usize = 4096;

/// Connections served, with when each was last seen. Sized once: no allocation per packet.
/// Touched for every decapsulated packet, so it hashes as the DCT does (whole words, aHash):
/// std's SipHash of the key's fields was a tenth of the decap stage.
#[derive(Debug)]
struct ConnectionTable {
    seen: std::collections::HashMap<ServedConnection, u64, crate::dct::FlowHasher>,
}

impl Default for ConnectionTable {
    fn default() -> Self {
        ConnectionTable {
            seen: std::collections::HashMap::with_capacity_and_hasher(
                CONNECTIONS_REMEMBERED,
                crate::dct::FlowHasher::new(),
            ),
        }
    }
}

impl ConnectionTable {
    fn seen(&mut self, flow: &Flow, now_us: u64) {
        let key = ServedConnection {
            src: flow.src,
            dst: flow.dst,
            protocol: flow.protocol,
            src_port: flow.src_port,
            dst_port: flow.dst_port,
        };
        if let Some(last) = self.seen.get_mut(&key) {
            *last = now_us;
        } else if self.seen.len() < CONNECTIONS_REMEMBERED {
            self.seen.insert(key, now_us);
        }
    }

    /// Those to `dvipa` seen within `idle_us`; older ones are forgotten on the way.
    fn recent(&self, dvipa: IpAddr, now_us: u64, idle_us: u64) -> Vec<ServedConnection> {
        self.seen
            .iter()
            .filter(|(c, last)| c.dst == dvipa && now_us.saturating_sub(**last) <= idle_us)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// Packets an application sent before any SA covered them, held while NEWCONN runs.
const PENDING_CAPACITY: usize = 64;

/// A packet held until its outbound SA arrives (seed figure 11).
struct Pending {
    frame: PacketBuf,
    deadline_us: u64,
}

/// One distributor's end of the XCF link: its XCF address and the MAC of its XCF port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistributorLink {
    pub xcf: Ipv4Addr,
    pub mac: Mac,
}

/// A request for the distributor to negotiate an SA (the cluster link sends it as NEWCONN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewconnRequest {
    /// Our side: the DVIPA.
    pub local: IpAddr,
    /// The remote address the application wants to reach.
    pub remote: IpAddr,
    /// The flow's IP protocol (17: the applications' sockets are UDP).
    pub protocol: u8,
    /// Our port.
    pub local_port: u16,
    /// The remote port.
    pub remote_port: u16,
}

/// What happened to an application's datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Sealed and queued for the next burst.
    Queued,
    /// No SA covers it yet: held while NEWCONN asks the distributor for one.
    AwaitingSa,
}

impl<P: PacketPort, S: SaTable, F: SequenceFacility> TargetNode<P, S, F> {
    /// A node; `peers` maps peers' outer addresses to the MAC to send to. `echo` turns on the
    /// built-in echo service on every DVIPA's port 60.
    pub fn new(
        target: Target<F>,
        sas: S,
        external: P,
        xcf: P,
        external_mac: Mac,
        peers: Neighbours,
        echo: bool,
    ) -> Self {
        TargetNode {
            target,
            sas,
            sockets: Sockets::default(),
            external,
            xcf,
            external_mac,
            peers,
            echo,
            distributor_links: Vec::new(),
            rx: Burst::with_capacity(BURST),
            to_external: Burst::with_capacity(BURST),
            to_echo: Burst::with_capacity(BURST),
            counters: NodeCounters::default(),
            stages: StageCosts::default(),
            stats: Arc::default(),
            echoed: 0,
            pending: VecDeque::with_capacity(PENDING_CAPACITY),
            newconn: Vec::with_capacity(PENDING_CAPACITY),
            newconn_timeout_us: 5_000_000,
            pending_released: 0,
            pending_timeouts: 0,
            connections: ConnectionTable::default(),
        }
    }

    /// Gives the ports back (the box changes role: frames still queued are dropped).
    pub fn into_ports(self) -> (P, P) {
        (self.external, self.xcf)
    }

    /// How long a packet waits for its SA before it is dropped (default 5 s).
    pub fn set_newconn_timeout(&mut self, timeout_us: u64) {
        self.newconn_timeout_us = timeout_us;
    }

    /// Takes the NEWCONN requests raised since the last call.
    pub fn take_newconn_requests(&mut self) -> std::vec::Drain<'_, NewconnRequest> {
        self.newconn.drain(..)
    }

    /// The connections to `dvipa` this box served within the last `idle_us` before `now_us`:
    /// (peer-side address and port, DVIPA port, protocol).
    pub fn connections(&self, dvipa: IpAddr, now_us: u64, idle_us: u64) -> Vec<ServedConnection> {
        self.connections.recent(dvipa, now_us, idle_us)
    }

    /// Packets waiting for an SA.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    node_accessors!();

    /// Matches the link as well as the address (the seed's check against spoofing): a frame on
    /// the XCF port counts as coming over the XCF link only when its source MAC and its outer
    /// IPv4 source are those of one of `links` (the distributors whose DVIPAs this box serves).
    /// Anything else is treated like external traffic. With no links set, the port alone counts.
    pub fn set_distributor_link(&mut self, links: &[DistributorLink]) {
        self.distributor_links = links.to_vec();
    }

    /// Binds a UDP socket to `local` (a DVIPA of this target) with a queue of `queue` datagrams.
    pub fn bind_udp(
        &mut self,
        local: SocketAddr,
        queue: usize,
    ) -> Result<SocketId, crate::app::BindError> {
        if !self.target.config().dvipas.contains(&local.ip()) {
            return Err(crate::app::BindError::NotDvipa(local.ip()));
        }
        self.sockets.bind(local, queue)
    }

    /// The oldest datagram queued on a socket.
    pub fn recv(&mut self, socket: SocketId) -> Option<Datagram> {
        self.sockets.recv(socket)
    }

    /// Sends `payload` from a socket to `dst` through the outbound path (queued for the next
    /// burst; call [`TargetNode::flush`] or let the loop send it).
    pub fn send_to(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        payload: &[u8],
        now_us: u64,
    ) -> Result<SendStatus, SendError> {
        let (frame, local) =
            build_datagram(&mut self.external, &self.sockets, socket, dst, payload)?;
        if self.sas.outbound(local.ip(), dst.ip()).is_none() {
            return self.hold_for_sa(frame, local, dst, now_us);
        }
        self.seal_and_queue(frame, now_us)
            .map(|()| SendStatus::Queued)
    }

    /// Figure 11: no SA for this peer yet. Hold the packet and ask for one, once per address
    /// pair (the SA covers the pair), naming the flow that asked first.
    fn hold_for_sa(
        &mut self,
        frame: PacketBuf,
        local: SocketAddr,
        remote: SocketAddr,
        now_us: u64,
    ) -> Result<SendStatus, SendError> {
        if self.pending.len() >= PENDING_CAPACITY {
            return Err(SendError::Dropped(TargetDrop::NoOutboundSa));
        }
        self.pending.push_back(Pending {
            frame,
            deadline_us: now_us.saturating_add(self.newconn_timeout_us),
        });
        let request = NewconnRequest {
            local: local.ip(),
            remote: remote.ip(),
            protocol: wire::UDP,
            local_port: local.port(),
            remote_port: remote.port(),
        };
        let asked = self
            .newconn
            .iter()
            .any(|r| r.local == request.local && r.remote == request.remote);
        if !asked && self.newconn.len() < PENDING_CAPACITY {
            self.newconn.push(request);
        }
        Ok(SendStatus::AwaitingSa)
    }

    /// Releases held packets whose SA arrived; drops those whose time ran out.
    fn release_pending(&mut self, now_us: u64) {
        for _ in 0..self.pending.len() {
            let Some(held) = self.pending.pop_front() else {
                break;
            };
            let covered = ip::parse(held.frame.data()).ok().is_some_and(|view| {
                let (src, dst) = ip::addresses(held.frame.data(), view.family);
                self.sas.outbound(src, dst).is_some()
            });
            if covered {
                if self.seal_and_queue(held.frame, now_us).is_ok() {
                    self.pending_released += 1;
                }
            } else if now_us >= held.deadline_us {
                self.pending_timeouts += 1;
            } else {
                self.pending.push_back(held);
            }
        }
    }

    /// Sends what is queued for the external port.
    pub fn flush(&mut self) {
        if !self.to_external.is_empty() {
            self.external.tx_burst(&mut self.to_external);
        }
    }

    fn seal_and_queue(&mut self, mut frame: PacketBuf, now_us: u64) -> Result<(), SendError> {
        let (target, sas) = (&mut self.target, &mut self.sas);
        seal_for_peer(
            &mut frame,
            &self.peers,
            self.external_mac,
            |bytes, range| target.outbound(sas, bytes, range, now_us),
        )?;
        push_or_flush(&mut self.external, &mut self.to_external, frame);
        Ok(())
    }

    fn handle(&mut self, mut frame: PacketBuf, ingress: Ingress, now_us: u64) {
        let ingress = self.link_check(&frame, ingress);
        if !strip_ethernet(&mut frame) {
            self.counters.not_ip += 1;
            return;
        }
        let (target, sas) = (&mut self.target, &mut self.sas);
        let Some(flow) = open_frame(&mut frame, |bytes, range| {
            target.inbound_at(sas, ingress, bytes, range, now_us)
        }) else {
            return;
        };
        self.connections.seen(&flow, now_us);
        if self.echo && flow.dst_port == ECHO_PORT && flow.protocol == 17 {
            // Answered after the decap stage; the queue holds a whole burst.
            if let Err(frame) = self.to_echo.push(frame) {
                self.echo_back(frame, now_us);
            }
        } else {
            self.sockets.deliver(frame, &flow);
        }
    }

    /// The encap stage: the echo service's replies to the burst just decapsulated.
    fn answer_echoes(&mut self, now_us: u64) {
        if self.to_echo.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut to_echo = std::mem::replace(&mut self.to_echo, Burst::with_capacity(0));
        let replies = to_echo.len();
        for frame in to_echo.drain() {
            self.echo_back(frame, now_us);
        }
        self.to_echo = to_echo;
        self.stages.encap.add_burst(started, replies);
    }

    fn link_check(&self, frame: &PacketBuf, ingress: Ingress) -> Ingress {
        if ingress != Ingress::Xcf || self.distributor_links.is_empty() {
            return ingress;
        }
        let data = frame.data();
        let source_mac = data.get(6..12);
        let is_ipv4 = data.get(12..14) == Some(&[0x08, 0x00][..]);
        let outer_source = data
            .get(ETHERNET_LEN + 12..ETHERNET_LEN + 16)
            .filter(|_| is_ipv4)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        let known = self
            .distributor_links
            .iter()
            .any(|link| source_mac == Some(&link.mac[..]) && outer_source == Some(link.xcf));
        if known {
            ingress
        } else {
            Ingress::External
        }
    }

    fn echo_back(&mut self, mut frame: PacketBuf, now_us: u64) {
        if wire::reverse_udp(frame.data_mut()).is_err() {
            return;
        }
        if self.seal_and_queue(frame, now_us).is_ok() {
            self.echoed += 1;
        }
    }

    fn receive_from(&mut self, ingress: Ingress, now_us: u64) -> usize {
        let mut rx = std::mem::replace(&mut self.rx, Burst::with_capacity(0));
        let received = match ingress {
            Ingress::Xcf => self.xcf.rx_burst(&mut rx),
            Ingress::External => self.external.rx_burst(&mut rx),
        };
        if !rx.is_empty() {
            let started = Instant::now();
            let frames = rx.len();
            for frame in rx.drain() {
                self.handle(frame, ingress, now_us);
            }
            self.stages.decap.add_burst(started, frames);
        }
        self.rx = rx;
        self.answer_echoes(now_us);
        received
    }
}

impl<P: PacketPort, S: SaTable, F: SequenceFacility> PollNode for TargetNode<P, S, F> {
    fn poll(&mut self, now_us: u64) -> usize {
        let handled =
            self.receive_from(Ingress::Xcf, now_us) + self.receive_from(Ingress::External, now_us);
        if !self.pending.is_empty() {
            self.release_pending(now_us);
        }
        self.flush();
        handled
    }

    fn loop_stats(&self) -> &Arc<LoopStats> {
        &self.stats
    }
}
