//! AF_PACKET port with TPACKET_V3 memory-mapped rings, bound to one interface.
//!
//! One socket, version TPACKET_V3, carries both rings in one mapping: the receive ring is
//! block-based (the kernel fills a block with many frames and hands the whole block over;
//! a partly filled block is handed over after `rx_block_timeout_ms`), the transmit ring
//! comes right after it and is frame-based (V3 transmit uses fixed slots, as V2 does).
//! Received frames are copied once into pool buffers so the block goes back to the kernel at
//! once and the loop may keep a frame as long as it likes; transmitted frames are copied once
//! into ring slots and the kernel is kicked once per burst.
//!
//! The kernel owns whatever it has not marked as the user's, so every status word is read
//! with acquire and written with release ordering, through atomics placed over the mapping.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::buf::{BufError, BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortStats};
use crate::ifindex::IfIndexError;
use crate::mmap::Mapping;
use crate::port::{alloc_counting_empty, Burst, PacketPort};

/// Where frame data starts in a transmit slot: the aligned `tpacket3_hdr`.
const TX_DATA_OFFSET: usize = libc::TPACKET3_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();

/// Sizes of an AF_PACKET port's rings and pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Interface to bind to, e.g. `eth0`.
    pub interface: String,
    /// Layout of received buffers and of the pool `alloc_tx` draws from.
    pub layout: BufLayout,
    /// Buffers in the port's pool.
    pub pool_size: usize,
    /// Bytes per receive block: a multiple of the page size.
    pub rx_block_size: u32,
    /// Receive blocks in the ring.
    pub rx_block_count: u32,
    /// How long the kernel waits before handing over a partly filled block.
    pub rx_block_timeout_ms: u32,
    /// Bytes per transmit slot, header included: a multiple of 16 that divides the page size.
    pub tx_frame_size: u32,
    /// Transmit slots in the ring: a multiple of the slots in one page.
    pub tx_frame_count: u32,
    /// Hand frames straight to the driver, skipping the qdisc layer (and any tc shaping).
    pub qdisc_bypass: bool,
}

impl AfPacketConfig {
    /// ESP-ready buffers, a 4 MiB receive ring in 64 KiB blocks retired after 1 ms, and 512
    /// transmit slots of 2 KiB.
    pub fn new(interface: &str) -> Self {
        AfPacketConfig {
            interface: interface.to_owned(),
            layout: BufLayout::esp_udp_tunnel_ipv4(),
            pool_size: 4096,
            rx_block_size: 1 << 16,
            rx_block_count: 64,
            rx_block_timeout_ms: 1,
            tx_frame_size: 2048,
            tx_frame_count: 512,
            qdisc_bypass: false,
        }
    }
}

/// Why an AF_PACKET port could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfPacketError {
    /// The interface name cannot be an interface name.
    #[error("interface name {0:?} is not valid (1 to 15 bytes, no NUL)")]
    BadInterfaceName(String),
    /// No interface of that name in this network namespace.
    #[error("no interface named {interface} in this network namespace: {source}")]
    NoSuchInterface {
        interface: String,
        #[source]
        source: io::Error,
    },
    /// A socket call failed (most need CAP_NET_RAW).
    #[error("{interface}: {call} failed: {source}")]
    Sys {
        interface: String,
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// The ring sizes do not fit the kernel's rules.
    #[error("{interface}: bad ring geometry: {reason}")]
    BadRing {
        interface: String,
        reason: &'static str,
    },
    /// The buffer pool could not be made.
    #[error("{interface}: {source}")]
    Pool {
        interface: String,
        #[source]
        source: BufError,
    },
}
/// Position in the receive block currently being read.
#[derive(Debug, Clone, Copy)]
struct BlockCursor {
    remaining: u32,
    offset: usize,
}

/// A port on one interface through an AF_PACKET socket with TPACKET_V3 rings.
pub struct AfPacketPort {
    interface: String,
    // Field order matters: the mapping must go before the socket is closed.
    ring: Mapping,
    socket: OwnedFd,
    pool: Pool,
    stats: Arc<PortStats>,
    rx_block_size: usize,
    rx_block_count: usize,
    rx_block: usize,
    rx_cursor: Option<BlockCursor>,
    tx_base: usize,
    tx_frame_size: usize,
    tx_frame_count: usize,
    tx_next: usize,
}

// SAFETY: the raw pointer in `ring` refers to a mapping owned by this port alone; no other
// value aliases it, so moving the port (mapping and socket together) to another thread is
// sound. The port is not `Sync`: it is used by one polling loop at a time.
unsafe impl Send for AfPacketPort {}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("interface", &self.interface)
            .field("rx_blocks", &self.rx_block_count)
            .field("tx_slots", &self.tx_frame_count)
            .finish()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects; it only returns a value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

fn interface_index(name: &str) -> Result<u32, AfPacketError> {
    crate::ifindex::interface_index(name).map_err(|err| match err {
        IfIndexError::BadName => AfPacketError::BadInterfaceName(name.to_owned()),
        IfIndexError::Missing(source) => AfPacketError::NoSuchInterface {
            interface: name.to_owned(),
            source,
        },
    })
}

fn check_geometry(config: &AfPacketConfig) -> Result<(), &'static str> {
    let page = page_size();
    let rx_block = config.rx_block_size as usize;
    let tx_frame = config.tx_frame_size as usize;
    if rx_block == 0 || !rx_block.is_multiple_of(page) || config.rx_block_count == 0 {
        return Err("receive blocks must be a non-zero multiple of the page size, at least one");
    }
    if tx_frame <= TX_DATA_OFFSET
        || !tx_frame.is_multiple_of(libc::TPACKET_ALIGNMENT)
        || !page.is_multiple_of(tx_frame)
    {
        return Err(
            "transmit slots must be a multiple of 16 dividing the page size, beyond the header",
        );
    }
    let per_page = (page / tx_frame) as u32;
    if config.tx_frame_count == 0 || !config.tx_frame_count.is_multiple_of(per_page) {
        return Err("transmit slot count must be a non-zero multiple of the slots per page");
    }
    Ok(())
}

impl AfPacketPort {
    /// Opens a port on `config.interface` in the calling thread's network namespace.
    /// Needs CAP_NET_RAW.
    pub fn open(config: &AfPacketConfig) -> Result<Self, AfPacketError> {
        let interface = config.interface.clone();
        check_geometry(config).map_err(|reason| AfPacketError::BadRing {
            interface: interface.clone(),
            reason,
        })?;
        let index = interface_index(&interface)?;
        let pool =
            Pool::new(config.layout, config.pool_size).map_err(|source| AfPacketError::Pool {
                interface: interface.clone(),
                source,
            })?;
        let sys = |call: &'static str| {
            let interface = interface.clone();
            move |source| AfPacketError::Sys {
                interface,
                call,
                source,
            }
        };
        let socket = open_socket().map_err(sys("socket(AF_PACKET)"))?;
        let fd = socket.as_raw_fd();
        set_option(
            fd,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V3 as libc::c_int,
        )
        .map_err(sys("PACKET_VERSION"))?;
        set_option(fd, libc::PACKET_LOSS, 1).map_err(sys("PACKET_LOSS"))?;
        set_option(fd, libc::PACKET_IGNORE_OUTGOING, 1).map_err(sys("PACKET_IGNORE_OUTGOING"))?;
        if config.qdisc_bypass {
            set_option(fd, libc::PACKET_QDISC_BYPASS, 1).map_err(sys("PACKET_QDISC_BYPASS"))?;
        }
        let rx_req = rx_ring_request(config);
        set_option(fd, libc::PACKET_RX_RING, rx_req).map_err(sys("PACKET_RX_RING"))?;
        let tx_req = tx_ring_request(config);
        set_option(fd, libc::PACKET_TX_RING, tx_req).map_err(sys("PACKET_TX_RING"))?;
        let rx_len = rx_req.tp_block_size as usize * rx_req.tp_block_nr as usize;
        let tx_len = tx_req.tp_block_size as usize * tx_req.tp_block_nr as usize;
        let ring = Mapping::new(Some(fd), rx_len + tx_len, 0).map_err(sys("mmap"))?;
        bind_to(fd, index).map_err(sys("bind"))?;
        Ok(AfPacketPort {
            interface,
            ring,
            socket,
            pool,
            stats: Arc::default(),
            rx_block_size: rx_req.tp_block_size as usize,
            rx_block_count: rx_req.tp_block_nr as usize,
            rx_block: 0,
            rx_cursor: None,
            tx_base: rx_len,
            tx_frame_size: tx_req.tp_frame_size as usize,
            tx_frame_count: tx_req.tp_frame_nr as usize,
            tx_next: 0,
        })
    }

    /// Waits up to `timeout` for a received block; true when one is ready.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        if self.rx_cursor.is_some() || self.block_is_users(self.rx_block) {
            return Ok(true);
        }
        crate::poll::wait_readable(self.socket.as_raw_fd(), timeout)
    }

    /// Adds the kernel's count of frames lost to a full receive ring to the port's counters
    /// (the kernel resets its count on every read).
    pub fn sync_kernel_drops(&mut self) -> io::Result<()> {
        let mut stats = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: `stats` and `len` are valid for writes and `len` holds the buffer's size.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::addr_of_mut!(stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.stats
            .add_drops(DropCause::KernelRxRingFull, u64::from(stats.tp_drops));
        Ok(())
    }

    /// The port's buffer pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn block_ptr(&self, block: usize) -> *mut libc::tpacket_block_desc {
        // In bounds: block < rx_block_count, and the receive ring is the mapping's first part.
        self.ring
            .base
            .wrapping_add(block * self.rx_block_size)
            .cast()
    }

    fn block_status(&self, block: usize) -> &AtomicU32 {
        let desc = self.block_ptr(block);
        // SAFETY: the block descriptor lies inside our live mapping, `block_status` is a
        // 4-aligned u32 the kernel and we only ever access atomically, and the reference
        // cannot outlive `self`, which owns the mapping.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status)) }
    }

    fn block_is_users(&self, block: usize) -> bool {
        self.block_status(block).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Starts reading the current block if the kernel has handed it over.
    fn open_block(&mut self) -> Option<BlockCursor> {
        let status = self.block_status(self.rx_block).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        if status & libc::TP_STATUS_LOSING != 0 {
            // Best effort: failing to read the statistics must not stop reception.
            let _ = self.sync_kernel_drops();
        }
        let desc = self.block_ptr(self.rx_block);
        // SAFETY: the acquire load above saw TP_STATUS_USER, so the kernel has finished
        // writing this block header and will not touch the block until we release it.
        let header = unsafe { std::ptr::addr_of!((*desc).hdr.bh1).read() };
        Some(BlockCursor {
            remaining: header.num_pkts,
            offset: header.offset_to_first_pkt as usize,
        })
    }

    fn release_block(&mut self) {
        self.block_status(self.rx_block)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.rx_block = (self.rx_block + 1) % self.rx_block_count;
        self.rx_cursor = None;
    }

    /// The current receive block as bytes.
    fn rx_block_bytes(&self) -> &[u8] {
        let block = self.block_ptr(self.rx_block).cast::<u8>();
        // SAFETY: the block lies inside our live mapping, and callers only use this while
        // the kernel has handed the block to us (TP_STATUS_USER seen with acquire): the
        // kernel does not write it until `release_block`, which needs `&mut self` and so
        // cannot run while this borrow lives.
        unsafe { std::slice::from_raw_parts(block.cast_const(), self.rx_block_size) }
    }

    /// Reads the frame at `cursor` into a pool buffer; returns the next cursor and the frame
    /// (or `None` with the drop counted). A malformed header ends the block.
    fn take_frame(&self, cursor: BlockCursor) -> (Option<BlockCursor>, Option<PacketBuf>) {
        let block = self.rx_block_bytes();
        let Some(meta) = parse_rx_frame(block, cursor.offset) else {
            self.stats
                .add_drops(DropCause::Truncated, u64::from(cursor.remaining));
            return (None, None);
        };
        let next = (cursor.remaining > 1).then(|| BlockCursor {
            remaining: cursor.remaining - 1,
            offset: cursor.offset + meta.next_offset,
        });
        if meta.captured < meta.wire_len {
            self.stats.add_drops(DropCause::Truncated, 1);
            return (next, None);
        }
        if meta.captured > self.pool.layout().data_room() {
            self.stats.add_drops(DropCause::Oversize, 1);
            return (next, None);
        }
        let Some(mut buf) = self.pool.alloc() else {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
            return (next, None);
        };
        // Cannot fail: the length was checked against the data room just above.
        let _ = buf.set_frame(&block[meta.data_start..meta.data_start + meta.captured]);
        (next, Some(buf))
    }

    fn tx_slot(&self, slot: usize) -> *mut libc::tpacket3_hdr {
        // In bounds: slot < tx_frame_count and the transmit ring follows the receive ring.
        self.ring
            .base
            .wrapping_add(self.tx_base + slot * self.tx_frame_size)
            .cast()
    }

    fn tx_status(&self, slot: usize) -> &AtomicU32 {
        let header = self.tx_slot(slot);
        // SAFETY: the slot header lies inside our live mapping, `tp_status` is a 4-aligned
        // u32 shared with the kernel and only accessed atomically, and the reference cannot
        // outlive `self`.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*header).tp_status)) }
    }

    /// True when the next transmit slot is free. A slot the kernel rejected (PACKET_LOSS marks
    /// it WRONG_FORMAT and moves on) is counted once and taken back.
    fn tx_slot_free(&self) -> bool {
        let status = self.tx_status(self.tx_next);
        match status.load(Ordering::Acquire) {
            libc::TP_STATUS_AVAILABLE => true,
            libc::TP_STATUS_WRONG_FORMAT => {
                self.stats.add_drops(DropCause::TxRejected, 1);
                status.store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    fn write_tx_slot(&mut self, frame: &PacketBuf) {
        let header = self.tx_slot(self.tx_next);
        let len = frame.len();
        // SAFETY: the slot is free (status AVAILABLE, seen with acquire), so the kernel does
        // not read it until we publish SEND_REQUEST; `len` fits the slot after the header
        // (checked by the caller); source and destination cannot overlap (pool vs mapping).
        unsafe {
            let data = header.cast::<u8>().add(TX_DATA_OFFSET);
            std::ptr::copy_nonoverlapping(frame.data().as_ptr(), data, len);
            std::ptr::addr_of_mut!((*header).tp_len).write(len as u32);
            std::ptr::addr_of_mut!((*header).tp_snaplen).write(len as u32);
            std::ptr::addr_of_mut!((*header).tp_next_offset).write(0);
        }
        self.tx_status(self.tx_next)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_next = (self.tx_next + 1) % self.tx_frame_count;
    }

    /// Asks the kernel to send every slot marked SEND_REQUEST, without waiting.
    fn kick_tx(&self) {
        // SAFETY: a zero-length send with null buffer and address is how a TX_RING socket is
        // told to flush its ring; the kernel reads nothing from our memory but the ring.
        // A failure (for example ENOBUFS) leaves the slots queued for the next kick.
        unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            );
        }
    }
}

/// Where one received frame lies in its TPACKET_V3 block, as its `tpacket3_hdr` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrameMeta {
    /// Offset of the frame's first byte in the block.
    pub data_start: usize,
    /// Bytes of the frame present in the block.
    pub captured: usize,
    /// Length of the frame on the wire.
    pub wire_len: usize,
    /// Offset from this header to the next one.
    pub next_offset: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the `tpacket3_hdr` at `offset` of a receive block; `None` unless the header and the
/// frame it describes both lie inside the block.
pub fn parse_rx_frame(block: &[u8], offset: usize) -> Option<RxFrameMeta> {
    let header_len = std::mem::size_of::<libc::tpacket3_hdr>();
    let header = block.get(offset..offset.checked_add(header_len)?)?;
    let next_offset = u32_at(header, 0)? as usize;
    let captured = u32_at(header, 12)? as usize;
    let wire_len = u32_at(header, 16)? as usize;
    let mac = u16::from_ne_bytes([header[24], header[25]]);
    let data_start = offset.checked_add(usize::from(mac))?;
    if data_start.checked_add(captured)? > block.len() {
        return None;
    }
    Some(RxFrameMeta {
        data_start,
        captured,
        wire_len,
        next_offset,
    })
}

fn open_socket() -> io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until it is bound to the interface below.
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T: Copy>(fd: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: `value` is a plain-data option value living on the stack for the whole call,
    // and the length passed is its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn rx_ring_request(config: &AfPacketConfig) -> libc::tpacket_req3 {
    // The frame size is nominal for V3 receive (frames are packed), but the kernel checks it.
    let frame_size = 2048;
    libc::tpacket_req3 {
        tp_block_size: config.rx_block_size,
        tp_block_nr: config.rx_block_count,
        tp_frame_size: frame_size,
        tp_frame_nr: config.rx_block_size / frame_size * config.rx_block_count,
        tp_retire_blk_tov: config.rx_block_timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    }
}

fn tx_ring_request(config: &AfPacketConfig) -> libc::tpacket_req3 {
    // One page per block keeps slots contiguous: slot i is at i * frame size.
    let block_size = page_size() as u32;
    let per_block = block_size / config.tx_frame_size;
    libc::tpacket_req3 {
        tp_block_size: block_size,
        tp_block_nr: config.tx_frame_count / per_block,
        tp_frame_size: config.tx_frame_size,
        tp_frame_nr: config.tx_frame_count,
        tp_retire_blk_tov: 0,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    }
}

fn bind_to(fd: libc::c_int, index: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value we then fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = index as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll for the whole call and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PacketPort for AfPacketPort {
    /// The socket polls readable once the kernel hands a receive block (AF_PACKET) or ring
    /// entry (AF_XDP) to us.
    fn readiness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.socket.as_fd())
    }

    fn name(&self) -> &str {
        &self.interface
    }

    fn layout(&self) -> BufLayout {
        self.pool.layout()
    }

    /// An exhausted pool counts as a [`DropCause::PoolEmpty`] drop: the frame never gets built.
    fn alloc_tx(&mut self) -> Option<PacketBuf> {
        alloc_counting_empty(&self.pool, &self.stats)
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let (mut packets, mut bytes) = (0u64, 0u64);
        while !burst.is_full() {
            let cursor = match self.rx_cursor.or_else(|| self.open_block()) {
                Some(cursor) if cursor.remaining > 0 => cursor,
                Some(_) => {
                    self.release_block();
                    continue;
                }
                None => break,
            };
            let (next, frame) = self.take_frame(cursor);
            match next {
                Some(next) => self.rx_cursor = Some(next),
                None => self.release_block(),
            }
            if let Some(frame) = frame {
                packets += 1;
                bytes += frame.len() as u64;
                // Cannot fail: the loop runs only while the burst has room.
                let _ = burst.push(frame);
            }
        }
        self.stats.add_rx(packets, bytes);
        packets as usize
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let max_frame = self.tx_frame_size - TX_DATA_OFFSET;
        let (mut queued, mut bytes, mut unkicked) = (0u64, 0u64, 0usize);
        for frame in burst.drain() {
            if !crate::port::tx_length_ok(&self.stats, frame.len(), max_frame) {
                continue;
            }
            if !self.tx_slot_free() && unkicked > 0 {
                self.kick_tx();
                unkicked = 0;
            }
            if !self.tx_slot_free() {
                self.stats.add_drops(DropCause::TxRingFull, 1);
                continue;
            }
            self.write_tx_slot(&frame);
            unkicked += 1;
            queued += 1;
            bytes += frame.len() as u64;
        }
        if unkicked > 0 {
            self.kick_tx();
        }
        self.stats.add_tx(queued, bytes);
        queued as usize
    }

    fn stats(&self) -> &Arc<PortStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_geometry_is_checked_before_any_socket_call() {
        let mut config = AfPacketConfig::new("lo");
        config.rx_block_size = 1000;
        let err = AfPacketPort::open(&config).unwrap_err();
        assert!(matches!(err, AfPacketError::BadRing { .. }), "{err}");
        let mut config = AfPacketConfig::new("lo");
        config.tx_frame_size = 40;
        assert!(matches!(
            AfPacketPort::open(&config),
            Err(AfPacketError::BadRing { .. })
        ));
        let mut config = AfPacketConfig::new("lo");
        config.tx_frame_count = 3;
        assert!(matches!(
            AfPacketPort::open(&config),
            Err(AfPacketError::BadRing { .. })
        ));
    }

    #[test]
    fn bad_or_missing_interfaces_are_named_in_the_error() {
        let err = AfPacketPort::open(&AfPacketConfig::new("a-name-far-too-long")).unwrap_err();
        assert!(matches!(err, AfPacketError::BadInterfaceName(_)), "{err}");
        let err = AfPacketPort::open(&AfPacketConfig::new("nosuchif0")).unwrap_err();
        assert!(
            matches!(err, AfPacketError::NoSuchInterface { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("nosuchif0"));
    }

    fn header(next: u32, snaplen: u32, len: u32, mac: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; std::mem::size_of::<libc::tpacket3_hdr>()];
        bytes[0..4].copy_from_slice(&next.to_ne_bytes());
        bytes[12..16].copy_from_slice(&snaplen.to_ne_bytes());
        bytes[16..20].copy_from_slice(&len.to_ne_bytes());
        bytes[24..26].copy_from_slice(&mac.to_ne_bytes());
        bytes
    }

    #[test]
    fn rx_headers_are_read_at_the_kernels_offsets() {
        let mut block = vec![0u8; 256];
        block[16..16 + 48].copy_from_slice(&header(128, 60, 64, 66));
        let meta = parse_rx_frame(&block, 16).unwrap();
        assert_eq!(
            meta,
            RxFrameMeta {
                data_start: 82,
                captured: 60,
                wire_len: 64,
                next_offset: 128
            }
        );
    }

    #[test]
    fn rx_headers_pointing_outside_the_block_are_refused() {
        let mut block = vec![0u8; 256];
        block[..48].copy_from_slice(&header(0, 200, 200, 66));
        assert_eq!(parse_rx_frame(&block, 0), None, "frame runs past the end");
        assert_eq!(
            parse_rx_frame(&block, 240),
            None,
            "header runs past the end"
        );
        assert_eq!(
            parse_rx_frame(&block, usize::MAX - 8),
            None,
            "offset overflows"
        );
        block[..48].copy_from_slice(&header(0, 190, 190, 66));
        assert!(parse_rx_frame(&block, 0).is_some(), "exactly fits");
    }

    #[test]
    fn transmit_data_follows_the_aligned_v3_header() {
        assert_eq!(TX_DATA_OFFSET, 48);
    }
}
