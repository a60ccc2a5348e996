//! The in-memory fabric: ports joined inside one process, for the demo and the cluster tests.
//!
//! A [`wire`] joins two ports back to back; a [`SwitchBuilder`] joins many ports and forwards
//! by destination MAC address from a table fixed at build time (no learning, so the result
//! depends only on what is sent, in what order). Each port owns a preallocated pool. Sending
//! moves the buffer handle into a bounded ring towards the receiver: no copy and no heap
//! allocation per packet (a broadcast copies once per extra destination, into the sender's
//! pool). A full ring drops the frame and counts [`DropCause::PeerRingFull`] at the sender.
//!
//! Rings are `rtrb` single-producer/single-consumer ring buffers, one per (sender, receiver)
//! pair: a well-kept crate whose push and pop are a plain store plus one release store, with
//! no read-modify-write atomics (an MPMC queue such as `crossbeam_queue::ArrayQueue` pays a
//! compare-and-swap on each). A switch port's receiver polls its rings round-robin, so frames
//! from one sender stay in order. Pools keep an `ArrayQueue` free list, because a buffer can
//! be dropped on any thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::buf::{BufError, BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortStats};
use crate::port::{alloc_counting_empty, Burst, PacketPort};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

const ETHERNET_HEADER_LEN: usize = 14;

/// Sizes of a fabric port's pool and receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricConfig {
    /// Layout of every buffer in the port's pool.
    pub layout: BufLayout,
    /// Buffers in the port's pool.
    pub pool_size: usize,
    /// Frames each ring towards the port holds before the fabric drops (a switch port has
    /// one ring from every other port).
    pub ring_size: usize,
}

impl FabricConfig {
    /// ESP-ready buffers, 4096 per port, and a 1024-frame ring.
    pub fn esp_default() -> Self {
        FabricConfig {
            layout: BufLayout::esp_udp_tunnel_ipv4(),
            pool_size: 4096,
            ring_size: 1024,
        }
    }
}

/// Why a fabric could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// The pool could not be made.
    #[error("fabric port {port}: {source}")]
    Pool {
        port: String,
        #[source]
        source: BufError,
    },
    /// A ring must hold at least one frame.
    #[error("fabric port {port}: ring size must be at least 1")]
    EmptyRing { port: String },
    /// Two switch ports were given the same MAC address.
    #[error("switch port {port}: MAC {mac:02x?} already belongs to another port")]
    DuplicateMac { port: String, mac: Mac },
}

/// Where a port's frames go.
enum Egress {
    /// Straight to the other end of a wire.
    Wire(Producer<PacketBuf>),
    /// To the switch port owning the destination MAC (`port_by_mac` indexes `peers`), or to
    /// every peer for a group address.
    Switch {
        port_by_mac: BTreeMap<Mac, usize>,
        peers: Vec<Producer<PacketBuf>>,
    },
}

/// One port on the in-memory fabric.
pub struct FabricPort {
    name: String,
    pool: Pool,
    rx: Vec<Consumer<PacketBuf>>,
    /// The ring the next `rx_burst` starts with, so no sender is always served first.
    rx_next: usize,
    egress: Egress,
    stats: Arc<PortStats>,
}

impl std::fmt::Debug for FabricPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricPort")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("rx_queued", &self.rx_queued())
            .finish()
    }
}

fn check_ring_size(port: &str, config: &FabricConfig) -> Result<(), FabricError> {
    if config.ring_size == 0 {
        return Err(FabricError::EmptyRing {
            port: port.to_owned(),
        });
    }
    Ok(())
}

fn new_pool(port: &str, config: &FabricConfig) -> Result<Pool, FabricError> {
    Pool::new(config.layout, config.pool_size).map_err(|source| FabricError::Pool {
        port: port.to_owned(),
        source,
    })
}

/// Two ports joined back to back: what one sends, the other receives.
pub fn wire(
    name_a: &str,
    name_b: &str,
    config: FabricConfig,
) -> Result<(FabricPort, FabricPort), FabricError> {
    check_ring_size(name_a, &config)?;
    let (to_b, from_a) = RingBuffer::new(config.ring_size);
    let (to_a, from_b) = RingBuffer::new(config.ring_size);
    let a = FabricPort::new(name_a, &config, vec![from_b], Egress::Wire(to_b))?;
    let b = FabricPort::new(name_b, &config, vec![from_a], Egress::Wire(to_a))?;
    Ok((a, b))
}

/// Collects the ports of a switch, then builds them.
#[derive(Debug)]
pub struct SwitchBuilder {
    config: FabricConfig,
    ports: Vec<(String, Mac)>,
}

impl SwitchBuilder {
    /// A switch whose ports all use `config`.
    pub fn new(config: FabricConfig) -> Self {
        SwitchBuilder {
            config,
            ports: Vec::new(),
        }
    }

    /// Adds a port that receives frames sent to `mac` (and broadcasts and multicasts).
    pub fn port(mut self, name: &str, mac: Mac) -> Result<Self, FabricError> {
        if self.ports.iter().any(|(_, known)| *known == mac) {
            return Err(FabricError::DuplicateMac {
                port: name.to_owned(),
                mac,
            });
        }
        self.ports.push((name.to_owned(), mac));
        Ok(self)
    }

    /// Builds the switch; the ports come back in the order they were added.
    pub fn build(self) -> Result<Vec<FabricPort>, FabricError> {
        let count = self.ports.len();
        if let Some((name, _)) = self.ports.first() {
            check_ring_size(name, &self.config)?;
        }
        let mut producers: Vec<Vec<Producer<PacketBuf>>> = (0..count).map(|_| Vec::new()).collect();
        let mut consumers: Vec<Vec<Consumer<PacketBuf>>> = (0..count).map(|_| Vec::new()).collect();
        for (sender, towards) in producers.iter_mut().enumerate() {
            for receiver in (0..count).filter(|&r| r != sender) {
                let (producer, consumer) = RingBuffer::new(self.config.ring_size);
                towards.push(producer);
                consumers[receiver].push(consumer);
            }
        }
        let ports = self.ports.iter().zip(producers).zip(consumers);
        ports
            .enumerate()
            .map(|(own, (((name, _), peers), rx))| {
                let port_by_mac = self.peer_table(own);
                let egress = Egress::Switch { port_by_mac, peers };
                FabricPort::new(name, &self.config, rx, egress)
            })
            .collect()
    }

    /// MAC address to index among port `own`'s peers (every port but itself, in order).
    fn peer_table(&self, own: usize) -> BTreeMap<Mac, usize> {
        self.ports
            .iter()
            .enumerate()
            .filter(|&(index, _)| index != own)
            .enumerate()
            .map(|(peer, (_, (_, mac)))| (*mac, peer))
            .collect()
    }
}

/// The destination MAC of an Ethernet frame, or `None` when it is shorter than a header.
fn destination_mac(frame: &PacketBuf) -> Option<Mac> {
    let header = frame.data().get(..ETHERNET_HEADER_LEN)?;
    let mut mac = [0; 6];
    mac.copy_from_slice(&header[..6]);
    Some(mac)
}

/// Frames and bytes put on the fabric by one `tx_burst`.
#[derive(Default)]
struct Sent {
    packets: u64,
    bytes: u64,
}

impl Sent {
    fn record(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

impl FabricPort {
    fn new(
        name: &str,
        config: &FabricConfig,
        rx: Vec<Consumer<PacketBuf>>,
        egress: Egress,
    ) -> Result<Self, FabricError> {
        Ok(FabricPort {
            name: name.to_owned(),
            pool: new_pool(name, config)?,
            rx,
            rx_next: 0,
            egress,
            stats: Arc::default(),
        })
    }

    /// The port's buffer pool (also where its floods copy into).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Frames waiting in this port's receive rings.
    pub fn rx_queued(&self) -> usize {
        self.rx.iter().map(Consumer::slots).sum()
    }

    fn push_to(
        stats: &PortStats,
        ring: &mut Producer<PacketBuf>,
        frame: PacketBuf,
        sent: &mut Sent,
    ) {
        let len = frame.len();
        match ring.push(frame) {
            Ok(()) => sent.record(len),
            Err(PushError::Full(_dropped)) => stats.add_drops(DropCause::PeerRingFull, 1),
        }
    }

    fn send_one(&mut self, frame: PacketBuf, sent: &mut Sent) {
        let stats = &self.stats;
        match &mut self.egress {
            Egress::Wire(ring) => Self::push_to(stats, ring, frame, sent),
            Egress::Switch { port_by_mac, peers } => {
                let Some(dst_mac) = destination_mac(&frame) else {
                    stats.add_drops(DropCause::Runt, 1);
                    return;
                };
                if dst_mac[0] & 1 == 1 {
                    flood(stats, &self.pool, peers, frame, sent);
                    return;
                }
                match port_by_mac.get(&dst_mac) {
                    Some(&peer) => Self::push_to(stats, &mut peers[peer], frame, sent),
                    None => stats.add_drops(DropCause::NoRoute, 1),
                }
            }
        }
    }
}

/// Sends a group-addressed frame to every peer: copies for all but the last, which gets
/// the original.
fn flood(
    stats: &PortStats,
    pool: &Pool,
    peers: &mut [Producer<PacketBuf>],
    frame: PacketBuf,
    sent: &mut Sent,
) {
    let Some((last, others)) = peers.split_last_mut() else {
        stats.add_drops(DropCause::NoRoute, 1);
        return;
    };
    for ring in others {
        match copy_of(pool, &frame) {
            Some(copy) => FabricPort::push_to(stats, ring, copy, sent),
            None => stats.add_drops(DropCause::PoolEmpty, 1),
        }
    }
    FabricPort::push_to(stats, last, frame, sent);
}

fn copy_of(pool: &Pool, frame: &PacketBuf) -> Option<PacketBuf> {
    let mut copy = pool.alloc()?;
    copy.set_frame(frame.data()).ok()?;
    Some(copy)
}

impl PacketPort for FabricPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> BufLayout {
        self.pool.layout()
    }

    /// An exhausted pool counts as a [`DropCause::PoolEmpty`] drop: the frame never gets built.
    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        alloc_counting_empty(&self.pool, &self.stats)
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let (mut packets, mut bytes) = (0, 0);
        let rings = self.rx.len();
        for step in 0..rings {
            let ring = &mut self.rx[(self.rx_next + step) % rings];
            while !burst.is_full() {
                let Ok(frame) = ring.pop() else { break };
                bytes += frame.len() as u64;
                packets += 1;
                // Cannot fail: the loop stops when the burst is full.
                let _ = burst.push(frame);
            }
        }
        if rings > 0 {
            self.rx_next = (self.rx_next + 1) % rings;
        }
        self.stats.add_rx(packets, bytes);
        packets as usize
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut sent = Sent::default();
        for frame in burst.drain() {
            self.send_one(frame, &mut sent);
        }
        self.stats.add_tx(sent.packets, sent.bytes);
        sent.packets as usize
    }

    fn stats(&self) -> &Arc<PortStats> {
        &self.stats
    }
}
