//! A scripted remote peer for tests, benchmarks and the demo: ESP in tunnel mode over UDP 4500,
//! on a fabric port, with SAs it is given (known keys, or keys an IKE run negotiated). It swaps
//! SAs the way a rekeying peer does: a new pair can be staged (its inbound SA takes replies at
//! once, its outbound SA waits until activated) and old inbound SAs removed. It receives like a
//! real peer would: a 128-packet replay window per inbound SA, and it counts duplicates of
//! (SPI, sequence number) on the wire, replay drops, authentication failures and which MAC
//! addresses its packets came from.

use crate::frame::{in_storage, narrow};
use crate::wire::{self, Flow, Mac, ETHERNET_LEN};
use dvipsec_esp::ip::Family;
use dvipsec_esp::{EspError, Sa, MAX_TAILROOM};
use dvipsec_ports::{Burst, PacketPort};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Extra headroom left in front of a built packet.
const SLACK: usize = 64;

/// What the peer counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounters {
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received that opened and passed the replay window.
    pub packets_received: u64,
    /// Packets the 128-packet window refused.
    pub replay_drops: u64,
    /// Packets whose ICV failed.
    pub auth_failures: u64,
    /// Packets whose (SPI, sequence number) was seen on the wire before.
    pub duplicate_seq: u64,
    /// Frames that were not ESP for one of our inbound SAs, or malformed.
    pub other: u64,
    /// Datagrams that could not be sent (no outbound SA, no buffer, or the seal failed).
    pub send_failures: u64,
}

/// A datagram the peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Source MAC of the frame (which box sent it).
    pub from_mac: Mac,
    /// The inner flow.
    pub flow: Flow,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// The scripted peer.
pub struct ScriptedPeer<P> {
    port: P,
    outbound: Option<Sa>,
    /// An outbound SA of a rekey, used once [`ScriptedPeer::activate_staged`] is called.
    staged_outbound: Option<Sa>,
    inbound: Vec<Sa>,
    mac: Mac,
    gateway_mac: Mac,
    seen: HashSet<(u32, u64)>,
    counters: PeerCounters,
    rx: Burst,
    tx: Burst,
    /// Keep received datagrams in [`ScriptedPeer::take_received`] (off for benchmarks).
    pub keep_received: bool,
    received: Vec<Received>,
}

impl<P: PacketPort> ScriptedPeer<P> {
    /// A peer on `port` sending with `outbound` (tunnel mode, UDP-encapsulated, to the DVIPA) to
    /// `gateway_mac` (the distributor), receiving with `inbound` (window 128).
    pub fn new(port: P, outbound: Sa, inbound: Sa, mac: Mac, gateway_mac: Mac) -> Self {
        let mut peer = ScriptedPeer::unkeyed(port, mac, gateway_mac);
        peer.install(outbound, inbound);
        peer
    }

    /// A peer with no SA yet (it sends nothing until [`ScriptedPeer::install`] or a staged pair
    /// is activated).
    pub fn unkeyed(port: P, mac: Mac, gateway_mac: Mac) -> Self {
        ScriptedPeer {
            port,
            outbound: None,
            staged_outbound: None,
            inbound: Vec::new(),
            mac,
            gateway_mac,
            seen: HashSet::new(),
            counters: PeerCounters::default(),
            rx: Burst::with_capacity(64),
            tx: Burst::with_capacity(64),
            keep_received: true,
            received: Vec::new(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> PeerCounters {
        self.counters
    }

    /// Sends on `outbound` from now on and takes replies on `inbound` too.
    pub fn install(&mut self, outbound: Sa, inbound: Sa) {
        self.outbound = Some(outbound);
        self.inbound.push(inbound);
    }

    /// A rekeyed pair, make before break: replies may come on the new inbound SA at once; the
    /// new outbound SA waits for [`ScriptedPeer::activate_staged`] (until the other side holds
    /// its partner everywhere).
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

    /// Forgets the inbound SA `spi` (it was replaced or deleted).
    pub fn remove_inbound(&mut self, spi: u32) {
        self.inbound.retain(|sa| sa.params().spi != spi);
    }

    /// Whether the peer has an outbound SA to send on.
    pub fn has_outbound(&self) -> bool {
        self.outbound.is_some()
    }

    /// The port (for its counters).
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, writable (to tap raw frames).
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Takes the datagrams received so far.
    pub fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }

    /// Queues one UDP datagram from `src` (our inner address) to `dst`, sealed with the next
    /// sequence number. Returns false (and counts a send failure) when there is no outbound SA
    /// or buffer, or the seal failed.
    pub fn send_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
        let sent = self.build_and_queue(src, dst, payload);
        if sent {
            self.counters.packets_sent += 1;
        } else {
            self.counters.send_failures += 1;
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
        let header = if dst.is_ipv4() { 20 } else { 40 };
        let inner_len = header + wire::UDP_LEN + payload.len();
        // Leave the receiver's forwarding headroom too (a NIC would hand it a fresh buffer),
        // as far as the ESP trailer still fits behind the packet.
        let spare = frame.tailroom().saturating_sub(inner_len + MAX_TAILROOM);
        let slack = spare.min(SLACK);
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

    /// Queues a raw Ethernet frame (for tests that replay or forge packets).
    pub fn send_raw(&mut self, frame: &[u8]) -> bool {
        let Some(mut buf) = self.port.alloc_tx() else {
            return false;
        };
        if buf.set_frame(frame).is_err() {
            return false;
        }
        if self.tx.is_full() {
            self.port.tx_burst(&mut self.tx);
        }
        self.tx.push(buf).is_ok()
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

    fn receive(&mut self, mut frame: dvipsec_ports::PacketBuf) {
        let mut from_mac = [0u8; 6];
        match frame.data().get(6..12) {
            Some(mac) => from_mac.copy_from_slice(mac),
            None => {
                self.counters.other += 1;
                return;
            }
        }
        let ip = wire::ip_payload(frame.data()).ok();
        if !ip.is_some_and(|r| narrow(&mut frame, r)) {
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
            Err(EspError::Replay { .. }) => return self.counters.replay_drops += 1,
            Err(EspError::Authentication { .. }) => return self.counters.auth_failures += 1,
            Err(_) => return self.counters.other += 1,
        }
        if self.keep_received {
            if let Ok(flow) = wire::flow(frame.data()) {
                let payload = frame.data()[flow.payload.clone()].to_vec();
                self.received.push(Received {
                    from_mac,
                    flow,
                    payload,
                });
            }
        }
    }

    /// The inbound SA named by the packet's SPI (peek refuses other SPIs); records its
    /// (SPI, sequence number) as seen on the wire.
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

    /// Our inner address as the SA's selectors see it is the caller's business; this is the
    /// outer address packets come from (none before an outbound SA is installed).
    pub fn outer_address(&self) -> Option<IpAddr> {
        self.outbound
            .as_ref()
            .and_then(|sa| sa.params().tunnel.map(|t| t.src))
    }
}
