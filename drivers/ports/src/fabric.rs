//! The in-memory fabric: ports joined inside one process, for the demo and the cluster tests.
//!
//! A [`wire`] joins two ports back to back; a [`SwitchBuilder`] joins many ports and forwards
//! by destination MAC address from a table fixed at build time (no learning, so the result
//! depends only on what is sent, in what order). Each port owns a bounded receive ring and a
//! preallocated pool. Sending moves the buffer handle into the peer's ring: no copy and no
//! allocation per packet (a broadcast copies once per extra destination, into the sender's
//! pool). A full ring drops the frame and counts [`DropCause::PeerRingFull`] at the sender.
//!
//! Rings are `crossbeam_queue::ArrayQueue`: a bounded, lock-free, preallocated MPMC queue from
//! a well-kept crate. MPMC rather than an SPSC ring such as `rtrb` because a switch port's ring
//! has one producer per other port; and a free list that any thread returns buffers to needs
//! the same, so one queue type serves both.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::buf::{BufError, BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortStats};
use crate::port::{Burst, PacketPort};

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
    /// Frames the port's receive ring holds before the fabric drops.
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

type Ring = Arc<ArrayQueue<PacketBuf>>;

struct SwitchTable {
    port_by_mac: BTreeMap<Mac, usize>,
    rings: Vec<Ring>,
}

enum Egress {
    Wire(Ring),
    Switch { table: Arc<SwitchTable>, own: usize },
}

/// One port on the in-memory fabric.
pub struct FabricPort {
    name: String,
    pool: Pool,
    rx: Ring,
    egress: Egress,
    stats: Arc<PortStats>,
}

impl std::fmt::Debug for FabricPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricPort")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("rx_queued", &self.rx.len())
            .finish()
    }
}

fn new_ring(port: &str, config: &FabricConfig) -> Result<Ring, FabricError> {
    if config.ring_size == 0 {
        return Err(FabricError::EmptyRing {
            port: port.to_owned(),
        });
    }
    Ok(Arc::new(ArrayQueue::new(config.ring_size)))
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
    let ring_a = new_ring(name_a, &config)?;
    let ring_b = new_ring(name_b, &config)?;
    let a = FabricPort {
        name: name_a.to_owned(),
        pool: new_pool(name_a, &config)?,
        rx: Arc::clone(&ring_a),
        egress: Egress::Wire(Arc::clone(&ring_b)),
        stats: Arc::default(),
    };
    let b = FabricPort {
        name: name_b.to_owned(),
        pool: new_pool(name_b, &config)?,
        rx: ring_b,
        egress: Egress::Wire(ring_a),
        stats: Arc::default(),
    };
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
        let mut rings = Vec::with_capacity(self.ports.len());
        let mut port_by_mac = BTreeMap::new();
        for (index, (name, mac)) in self.ports.iter().enumerate() {
            rings.push(new_ring(name, &self.config)?);
            port_by_mac.insert(*mac, index);
        }
        let table = Arc::new(SwitchTable { port_by_mac, rings });
        self.ports
            .iter()
            .enumerate()
            .map(|(own, (name, _))| {
                Ok(FabricPort {
                    name: name.clone(),
                    pool: new_pool(name, &self.config)?,
                    rx: Arc::clone(&table.rings[own]),
                    egress: Egress::Switch {
                        table: Arc::clone(&table),
                        own,
                    },
                    stats: Arc::default(),
                })
            })
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
    /// The port's buffer pool (also where its floods copy into).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Frames waiting in this port's receive ring.
    pub fn rx_queued(&self) -> usize {
        self.rx.len()
    }

    fn push_to(&self, ring: &Ring, frame: PacketBuf, sent: &mut Sent) {
        let len = frame.len();
        match ring.push(frame) {
            Ok(()) => sent.record(len),
            Err(_dropped) => self.stats.add_drops(DropCause::PeerRingFull, 1),
        }
    }

    fn switch_one(&self, table: &SwitchTable, own: usize, frame: PacketBuf, sent: &mut Sent) {
        let Some(dst_mac) = destination_mac(&frame) else {
            self.stats.add_drops(DropCause::Runt, 1);
            return;
        };
        let is_group = dst_mac[0] & 1 == 1;
        if is_group {
            self.flood(table, own, frame, sent);
            return;
        }
        match table.port_by_mac.get(&dst_mac) {
            Some(&index) => self.push_to(&table.rings[index], frame, sent),
            None => self.stats.add_drops(DropCause::NoRoute, 1),
        }
    }

    fn flood(&self, table: &SwitchTable, own: usize, frame: PacketBuf, sent: &mut Sent) {
        let mut remaining = (0..table.rings.len()).filter(|&i| i != own).peekable();
        while let Some(index) = remaining.next() {
            if remaining.peek().is_none() {
                // The last destination gets the original frame, saving one copy.
                self.push_to(&table.rings[index], frame, sent);
                return;
            }
            match self.copy_of(&frame) {
                Some(copy) => self.push_to(&table.rings[index], copy, sent),
                None => self.stats.add_drops(DropCause::PoolEmpty, 1),
            }
        }
    }

    fn copy_of(&self, frame: &PacketBuf) -> Option<PacketBuf> {
        let mut copy = self.pool.alloc()?;
        copy.set_frame(frame.data()).ok()?;
        Some(copy)
    }
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
        let frame = self.pool.alloc();
        if frame.is_none() {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
        }
        frame
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let (mut packets, mut bytes) = (0, 0);
        while !burst.is_full() {
            let Some(frame) = self.rx.pop() else { break };
            bytes += frame.len() as u64;
            packets += 1;
            // Cannot fail: the loop stops when the burst is full.
            let _ = burst.push(frame);
        }
        self.stats.add_rx(packets, bytes);
        packets as usize
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut sent = Sent::default();
        for frame in burst.drain() {
            match &self.egress {
                Egress::Wire(ring) => self.push_to(ring, frame, &mut sent),
                Egress::Switch { table, own } => self.switch_one(table, *own, frame, &mut sent),
            }
        }
        self.stats.add_tx(sent.packets, sent.bytes);
        sent.packets as usize
    }

    fn stats(&self) -> &Arc<PortStats> {
        &self.stats
    }
}
