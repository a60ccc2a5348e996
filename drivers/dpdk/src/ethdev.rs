//! An ethdev port (any PMD: net_af_xdp, net_af_packet, net_memif, net_tap, net_ring, a NIC) as
//! a `dvipsec_ports::PacketPort`.
//!
//! The trait's buffers are `dvipsec_ports::PacketBuf`s from a Rust pool, not mbufs, so each frame
//! is copied once: on receive from the mbuf into a pool buffer (the mbuf goes back to DPDK at
//! once), on transmit from the buffer into a fresh mbuf. Handing mbufs out as `PacketBuf`s would
//! need the trait's buffer to become a backend-specific handle (an enum or a trait object over
//! the storage); that change is proposed rather than made, because every backend and the data
//! plane use `PacketBuf` directly. The kernel backends copy once as well.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use dvipsec_ports::{BufLayout, Burst, DropCause, PacketBuf, PacketPort, Pool, PortStats};

use crate::eal::Eal;
use crate::error::{DpdkError, RteError};
use crate::ffi;
use crate::mempool::{fill_mbuf, free_mbuf, MbufPool};

/// Most frames moved per DPDK burst call.
const MAX_BURST: usize = 64;
/// Shortest frame sent: an Ethernet header.
const MIN_TX_FRAME: usize = 14;
/// How many receive bursts between reads of the device's own drop counters.
const DEVICE_STATS_EVERY: u32 = 1024;

/// How to open an ethdev port.
#[derive(Debug, Clone)]
pub struct EthdevConfig {
    /// The ethdev name, for a vdev the name before its first comma (`net_af_xdp0`).
    pub device: String,
    /// Receive and transmit descriptors (DPDK may round them).
    pub descriptors: u16,
    /// Mbufs in the port's DPDK pool (receive ring plus frames in flight).
    pub mbufs: u32,
    /// Layout of the `PacketBuf`s handed to the polling loop.
    pub layout: BufLayout,
    /// How many `PacketBuf`s the port's pool holds.
    pub buffers: usize,
}

impl EthdevConfig {
    /// Defaults for `device`: 1024 descriptors, 4096 mbufs, 4096 ESP-ready buffers.
    pub fn new(device: &str) -> Self {
        EthdevConfig {
            device: device.to_owned(),
            descriptors: 1024,
            mbufs: 4096,
            layout: BufLayout::esp_udp_tunnel_ipv4(),
            buffers: 4096,
        }
    }
}

/// A started ethdev with one receive and one transmit queue.
pub struct EthdevPort {
    name: String,
    port_id: u16,
    pool: Pool,
    stats: Arc<PortStats>,
    scratch: Vec<*mut ffi::rte_mbuf>,
    tx_lens: Vec<u64>,
    rx_polls: u32,
    device_drops_seen: u64,
    // Dropped last, after the port has been stopped and closed (see Drop).
    mbufs: MbufPool,
}

// SAFETY: the port's queues are used only through &mut self, so by one thread at a time; the
// mbuf pointers in `scratch` are only meaningful during one call; the mempool is thread-safe.
unsafe impl Send for EthdevPort {}

impl std::fmt::Debug for EthdevPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthdevPort")
            .field("name", &self.name)
            .field("port_id", &self.port_id)
            .finish()
    }
}

impl EthdevPort {
    /// Configures and starts the ethdev named `config.device`.
    pub fn open(eal: &'static Eal, config: &EthdevConfig) -> Result<Self, DpdkError> {
        let port_id = find_port(&config.device)?;
        Self::start(eal, port_id, config)
    }

    pub(crate) fn start(
        eal: &'static Eal,
        port_id: u16,
        config: &EthdevConfig,
    ) -> Result<Self, DpdkError> {
        let room = mbuf_room_for(config.layout.data_room())?;
        let mbufs = MbufPool::new(eal, config.mbufs, room)?;
        let pool = Pool::new(config.layout, config.buffers).map_err(|_| DpdkError::OutOfRange {
            what: "port buffers",
            value: config.buffers,
            range: "at least 1",
        })?;
        let d = config.descriptors;
        // SAFETY: the EAL is up; port_id names an existing ethdev; the pool outlives the port
        // (it is dropped after the port is closed).
        let rc = unsafe { ffi::dvs_eth_dev_setup(port_id, mbufs.as_ptr(), d, d) };
        if rc != 0 {
            return Err(DpdkError::call(
                "configure and start ethdev",
                &config.device,
                RteError::from_code(rc),
            ));
        }
        Ok(EthdevPort {
            name: config.device.clone(),
            port_id,
            pool,
            stats: Arc::new(PortStats::default()),
            scratch: vec![std::ptr::null_mut(); MAX_BURST],
            tx_lens: Vec::with_capacity(MAX_BURST),
            rx_polls: 0,
            device_drops_seen: 0,
            mbufs,
        })
    }

    /// The DPDK port number.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Mbufs free in the port's DPDK pool (for leak checks).
    pub fn free_mbufs(&self) -> usize {
        self.mbufs.available()
    }

    /// Reads the device's own receive drops (missed, no mbuf) into the port counters.
    pub fn refresh_device_drops(&mut self) {
        let mut dropped = 0u64;
        // SAFETY: port_id is a started port; dropped is a valid out pointer.
        let rc = unsafe { ffi::dvs_eth_rx_dropped(self.port_id, &mut dropped) };
        if rc == 0 && dropped > self.device_drops_seen {
            let new = dropped - self.device_drops_seen;
            self.stats.add_drops(DropCause::KernelRxRingFull, new);
            self.device_drops_seen = dropped;
        }
    }

    /// Copies one received mbuf into a pool buffer; `None` (counted) when it cannot.
    fn take_frame(&self, m: NonNull<ffi::rte_mbuf>) -> Option<PacketBuf> {
        let Some(mut buf) = self.pool.alloc() else {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
            return None;
        };
        // SAFETY: m is a received mbuf we own until freed by the caller.
        let len = unsafe { ffi::dvs_pktmbuf_pkt_len(m.as_ptr()) } as usize;
        let Ok(dst) = buf.append(len) else {
            self.stats.add_drops(DropCause::Oversize, 1);
            return None;
        };
        // SAFETY: dst is `len` writable bytes; copy_out writes at most `len` and checks it.
        let copied = unsafe { ffi::dvs_pktmbuf_copy_out(m.as_ptr(), dst.as_mut_ptr(), len) };
        if copied != len as i64 {
            self.stats.add_drops(DropCause::Truncated, 1);
            return None;
        }
        Some(buf)
    }

    /// Copies a frame into a fresh mbuf at the end of `scratch[..queued]`; false (counted) if not.
    fn queue_frame(&mut self, frame: &PacketBuf, queued: usize) -> bool {
        let len = frame.len();
        if len < MIN_TX_FRAME {
            self.stats.add_drops(DropCause::Runt, 1);
            return false;
        }
        if len > self.mbufs.usable_room() {
            self.stats.add_drops(DropCause::Oversize, 1);
            return false;
        }
        let Some(m) = self.mbufs.alloc() else {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
            return false;
        };
        // SAFETY: m is a fresh mbuf we own.
        if !unsafe { fill_mbuf(m, frame.data()) } {
            // SAFETY: m is ours and not queued.
            unsafe { free_mbuf(m) };
            self.stats.add_drops(DropCause::Oversize, 1);
            return false;
        }
        self.scratch[queued] = m.as_ptr();
        self.tx_lens.push(len as u64);
        true
    }

    /// Hands `scratch[..queued]` to the device; frees and counts what it refuses.
    fn flush(&mut self, queued: usize) -> usize {
        if queued == 0 {
            return 0;
        }
        // SAFETY: scratch[..queued] are mbufs we own; the device takes ownership of the first
        // `sent` of them.
        let sent = usize::from(unsafe {
            ffi::dvs_eth_tx_burst(self.port_id, 0, self.scratch.as_mut_ptr(), queued as u16)
        });
        for &m in &self.scratch[sent..queued] {
            if let Some(m) = NonNull::new(m) {
                // SAFETY: the device did not take these; they are still ours.
                unsafe { free_mbuf(m) };
            }
        }
        let bytes: u64 = self.tx_lens[..sent].iter().sum();
        self.stats.add_tx(sent as u64, bytes);
        self.stats
            .add_drops(DropCause::TxRingFull, (queued - sent) as u64);
        self.tx_lens.clear();
        sent
    }
}

impl PacketPort for EthdevPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> BufLayout {
        self.pool.layout()
    }

    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let want = burst.room().min(MAX_BURST);
        if want == 0 {
            return 0;
        }
        // SAFETY: scratch has room for MAX_BURST pointers and want <= MAX_BURST; the device
        // writes `got` mbufs that become ours.
        let got = usize::from(unsafe {
            ffi::dvs_eth_rx_burst(self.port_id, 0, self.scratch.as_mut_ptr(), want as u16)
        });
        let (mut packets, mut bytes) = (0u64, 0u64);
        for i in 0..got {
            let Some(m) = NonNull::new(self.scratch[i]) else {
                continue;
            };
            let frame = self.take_frame(m);
            // SAFETY: m was received by us and its bytes are copied out (or dropped).
            unsafe { free_mbuf(m) };
            if let Some(frame) = frame {
                bytes += frame.len() as u64;
                packets += 1;
                // Cannot fail: at most burst.room() frames were asked for.
                let _ = burst.push(frame);
            }
        }
        self.stats.add_rx(packets, bytes);
        self.rx_polls = self.rx_polls.wrapping_add(1);
        if self.rx_polls.is_multiple_of(DEVICE_STATS_EVERY) {
            self.refresh_device_drops();
        }
        packets as usize
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut sent = 0;
        let mut queued = 0;
        for frame in burst.drain() {
            if self.queue_frame(&frame, queued) {
                queued += 1;
            }
            if queued == MAX_BURST {
                sent += self.flush(queued);
                queued = 0;
            }
        }
        sent + self.flush(queued)
    }

    fn stats(&self) -> &Arc<PortStats> {
        &self.stats
    }
}

impl Drop for EthdevPort {
    fn drop(&mut self) {
        // SAFETY: the port was started by us; stopping and closing releases its queues' mbufs
        // back to `mbufs` before that pool is freed (it is dropped after this body).
        unsafe {
            ffi::dvs_eth_dev_stop(self.port_id);
            ffi::dvs_eth_dev_close(self.port_id);
        }
    }
}

fn find_port(device: &str) -> Result<u16, DpdkError> {
    let name = CString::new(device).map_err(|_| DpdkError::NulInName(device.to_owned()))?;
    let mut port_id = 0u16;
    // SAFETY: name is a valid C string; port_id is a valid out pointer.
    let rc = unsafe { ffi::dvs_eth_dev_get_port_by_name(name.as_ptr(), &mut port_id) };
    if rc != 0 {
        return Err(DpdkError::NoSuchPort(device.to_owned()));
    }
    Ok(port_id)
}

/// Mbuf data room (with DPDK's 128-byte headroom) for frames of `frame_room` bytes.
fn mbuf_room_for(frame_room: usize) -> Result<u16, DpdkError> {
    let wanted = frame_room.max(2048) + 128;
    u16::try_from(wanted).map_err(|_| DpdkError::OutOfRange {
        what: "frame room",
        value: frame_room,
        range: "at most 65407 bytes",
    })
}
