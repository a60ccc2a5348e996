//! A scripted remote peer for tests, benchmarks and the demo: ESP with known keys (no IKE), in
//! tunnel mode over UDP 4500, on a fabric port. It receives like a real peer would: a 128-packet
//! replay window, and it counts duplicates of (SPI, sequence number) on the wire, replay drops,
//! authentication failures and which MAC addresses its packets came from.

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
    /// Frames that were not ESP for our SA, or malformed.
    pub other: u64,
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
    outbound: Sa,
    inbound: Sa,
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
        ScriptedPeer {
            port,
            outbound,
            inbound,
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
    /// sequence number. Returns false when no buffer or the seal failed.
    pub fn send_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
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
        let sa = &mut self.outbound;
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
        let _ = self.tx.push(frame);
        self.counters.packets_sent += 1;
        true
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
        if let Ok(peeked) = self.inbound.peek(frame.data()) {
            let info = peeked.unverified();
            if !self.seen.insert((info.spi, info.seq)) {
                self.counters.duplicate_seq += 1;
            }
        }
        let sa = &mut self.inbound;
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

    /// Our inner address as the SA's selectors see it is the caller's business; this is the
    /// outer address packets come from.
    pub fn outer_address(&self) -> Option<IpAddr> {
        self.outbound.params().tunnel.map(|t| t.src)
    }
}
