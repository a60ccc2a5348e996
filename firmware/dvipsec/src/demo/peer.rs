//! The demo's remote peer on the external switch: sends UDP datagrams through its current
//! outbound SA to a DVIPA and receives the replies like a real IPsec receiver would, with a
//! 128-packet replay window per inbound SA. It also counts every (SPI, sequence number) pair it
//! sees on the wire, so a number handed out twice by the CF shows up as `duplicate_seq`.

use dvipsec_dataplane::frame::{in_storage, narrow};
use dvipsec_dataplane::wire::{self, Mac, ETHERNET_LEN};
use dvipsec_esp::ip::Family;
use dvipsec_esp::{EspError, Sa, MAX_TAILROOM};
use dvipsec_ports::{Burst, FabricPort, PacketBuf, PacketPort};
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;

/// What the peer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub packets_sent: u64,
    /// Packets that opened and passed the replay window.
    pub packets_received: u64,
    pub replay_drops: u64,
    pub auth_failures: u64,
    /// (SPI, sequence number) pairs seen on the wire more than once.
    pub duplicate_seq: u64,
    /// Frames for no SA we hold, malformed frames, or sends that found no buffer.
    pub other: u64,
}

/// Room left in front of a built packet for the headers the receivers add.
const SLACK: usize = 64;

pub struct RemotePeer {
    port: FabricPort,
    mac: Mac,
    gateway_mac: Mac,
    outbound: Option<Sa>,
    /// An outbound SA negotiated by a rekey, used once the cluster holds its partner.
    staged_outbound: Option<Sa>,
    inbound: Vec<Sa>,
    seen: HashSet<(u32, u64)>,
    connections: BTreeSet<(SocketAddr, SocketAddr)>,
    counters: PeerCounters,
    tx: Burst,
    rx: Burst,
}

impl RemotePeer {
    pub fn new(port: FabricPort, mac: Mac, gateway_mac: Mac) -> Self {
        RemotePeer {
            port,
            mac,
            gateway_mac,
            outbound: None,
            staged_outbound: None,
            inbound: Vec::new(),
            seen: HashSet::new(),
            connections: BTreeSet::new(),
            counters: PeerCounters::default(),
            tx: Burst::with_capacity(64),
            rx: Burst::with_capacity(64),
        }
    }

    pub fn counters(&self) -> PeerCounters {
        self.counters
    }

    /// Distinct (source, destination) UDP flows opened.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    pub fn has_outbound(&self) -> bool {
        self.outbound.is_some()
    }

    /// A negotiated pair: replies may come on the new inbound SA at once; the new outbound SA
    /// waits for [`RemotePeer::activate_staged`] (the cluster must hold its partner first).
    pub fn stage(&mut self, outbound: Sa, inbound: Sa) {
        self.staged_outbound = Some(outbound);
        self.inbound.push(inbound);
    }

    /// Switches to the staged outbound SA, if any.
    pub fn activate_staged(&mut self) {
        if let Some(sa) = self.staged_outbound.take() {
            self.outbound = Some(sa);
        }
    }

    /// Forgets the inbound SA `spi` (it was deleted).
    pub fn remove_inbound(&mut self, spi: u32) {
        self.inbound.retain(|sa| sa.params().spi != spi);
    }

    /// Queues one datagram from `src` (our inner address) to `dst`; false when it could not be
    /// built (no SA, no buffer).
    pub fn send_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
        let sent = self.build_and_queue(src, dst, payload);
        if sent {
            self.counters.packets_sent += 1;
            self.connections.insert((src, dst));
        } else {
            self.counters.other += 1;
        }
        sent
    }

    fn build_and_queue(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
        let Some(sa) = self.outbound.as_mut() else {
            return false;
        };
        let Some(mut frame) = self.port.alloc_tx() else {
            return false;
        };
        let inner_len = if dst.is_ipv4() { 20 } else { 40 } + wire::UDP_LEN + payload.len();
        let slack = frame
            .tailroom()
            .saturating_sub(inner_len + MAX_TAILROOM)
            .min(SLACK);
        if frame.append(slack).is_err() || frame.trim_front(slack).is_err() {
            return false;
        }
        let built = match frame.append(inner_len) {
            Ok(space) => wire::write_udp(space, src, dst, payload).ok(),
            Err(_) => None,
        };
        if built != Some(inner_len) {
            return false;
        }
        let sealed = in_storage(
            &mut frame,
            |bytes, range| sa.seal(bytes, range).map(|s| s.packet),
            EspError::TooLarge(0),
        );
        if sealed.is_err() {
            return false;
        }
        let family = if dst.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let Ok(head) = frame.prepend(ETHERNET_LEN) else {
            return false;
        };
        let Ok(header) = <&mut [u8; ETHERNET_LEN]>::try_from(head) else {
            return false;
        };
        wire::write_ethernet(header, self.gateway_mac, self.mac, family);
        if self.tx.is_full() {
            self.port.tx_burst(&mut self.tx);
        }
        self.tx.push(frame).is_ok()
    }

    /// Sends what is queued.
    pub fn flush(&mut self) {
        if !self.tx.is_empty() {
            self.port.tx_burst(&mut self.tx);
        }
    }

    /// Receives and opens one burst; returns the frames taken.
    pub fn poll_rx(&mut self) -> usize {
        let mut rx = std::mem::replace(&mut self.rx, Burst::with_capacity(0));
        let count = self.port.rx_burst(&mut rx);
        for frame in rx.drain() {
            self.receive(frame);
        }
        self.rx = rx;
        count
    }

    fn receive(&mut self, mut frame: PacketBuf) {
        let ip = wire::ip_payload(frame.data()).ok();
        if !ip.is_some_and(|range| narrow(&mut frame, range)) {
            self.counters.other += 1;
            return;
        }
        let Some(index) = self.inbound_sa_for(frame.data()) else {
            self.counters.other += 1;
            return;
        };
        let sa = &mut self.inbound[index];
        let opened = in_storage(
            &mut frame,
            |bytes, range| sa.open(bytes, range).map(|o| o.packet),
            EspError::TooLarge(0),
        );
        match opened {
            Ok(()) => self.counters.packets_received += 1,
            Err(EspError::Replay { .. }) => self.counters.replay_drops += 1,
            Err(EspError::Authentication { .. }) => self.counters.auth_failures += 1,
            Err(_) => self.counters.other += 1,
        }
    }

    /// The inbound SA named by the packet's SPI (peek refuses other SPIs); records its
    /// (SPI, sequence number).
    fn inbound_sa_for(&mut self, packet: &[u8]) -> Option<usize> {
        let (index, info) = self
            .inbound
            .iter()
            .enumerate()
            .find_map(|(index, sa)| sa.peek(packet).ok().map(|p| (index, *p.unverified())))?;
        if !self.seen.insert((info.spi, info.seq)) {
            self.counters.duplicate_seq += 1;
        }
        Some(index)
    }
}
