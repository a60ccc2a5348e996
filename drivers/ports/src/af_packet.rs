//! AF_PACKET port with memory-mapped TPACKET rings, bound to one interface.
//!
//! One socket carries a receive ring and, right after it in the same mapping, a transmit ring.
//! A socket has one TPACKET version for both, chosen by the receive ring kind:
//!
//! - [`RxRing::Frames`] (TPACKET_V2, the default): fixed slots, one frame each. The kernel
//!   hands each slot over (`tp_status` becomes TP_STATUS_USER) as soon as the frame lands, and
//!   the socket polls readable then, so a frame waits for nobody. Slots are sized from the
//!   layout's data room, so every frame the port accepts fits one; a longer frame arrives
//!   truncated (`tp_snaplen < tp_len`) and is counted as a [`DropCause::Truncated`] drop.
//! - [`RxRing::Blocks`] (TPACKET_V3): the kernel packs frames into blocks and hands a block
//!   over when it is full or when its retire timer fires (at least 1 ms), and the socket polls
//!   readable only for a handed-over block. Fewer wake-ups under heavy load, but at moderate
//!   load every hop waits up to the timer: through the three-box site that was p99 1.77 ms
//!   against 0.59 ms on AF_XDP, which is why frames are the default.
//!
//! The transmit ring is fixed slots under either version (only the header, and so where the
//! data starts, differs). Received frames are copied once into pool buffers so the slot or
//! block goes back to the kernel at once and the loop may keep a frame as long as it likes;
//! transmitted frames are copied once into ring slots and the kernel is kicked once per burst.
//! Nothing allocates per packet.
//!
//! The kernel owns whatever it has not marked as the user's, so every status word is read
//! with acquire and written with release ordering, through atomics placed over the mapping.

mod rx_blocks;
mod rx_frames;
mod slots;
mod tx;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::buf::{BufError, BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortStats};
use crate::ifindex::IfIndexError;
use crate::mmap::Mapping;
use crate::port::{alloc_counting_empty, Burst, PacketPort};

pub use rx_blocks::parse_rx_frame;
pub use rx_frames::parse_rx_slot;

use rx_blocks::BlockRx;
use rx_frames::{FrameRx, RX_SLOT_HEADROOM};
use slots::SlotRing;
use tx::{tx_data_offset, TxRing};

/// How the kernel hands received frames over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxRing {
    /// TPACKET_V2: at least `frame_count` fixed slots, each handed over as soon as its frame
    /// lands. The slot size follows the layout's data room (see
    /// [`AfPacketConfig::rx_slot_size`]), so it is not configured.
    Frames { frame_count: u32 },
    /// TPACKET_V3: `block_count` blocks of `block_size` bytes (a multiple of the page size),
    /// each handed over when full or `timeout_ms` after its first frame.
    Blocks {
        block_size: u32,
        block_count: u32,
        timeout_ms: u32,
    },
}

/// Sizes of an AF_PACKET port's rings and pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Interface to bind to, e.g. `eth0`.
    pub interface: String,
    /// Layout of received buffers and of the pool `alloc_tx` draws from; its data room is the
    /// largest frame the port receives.
    pub layout: BufLayout,
    /// Buffers in the port's pool.
    pub pool_size: usize,
    /// The receive ring, and with it the socket's TPACKET version.
    pub rx_ring: RxRing,
    /// Bytes per transmit slot, header included: a multiple of 16 that divides the page size
    /// or is a whole number of pages.
    pub tx_frame_size: u32,
    /// Transmit slots in the ring: a multiple of the slots in one page.
    pub tx_frame_count: u32,
    /// Hand frames straight to the driver, skipping the qdisc layer (and any tc shaping).
    pub qdisc_bypass: bool,
}

/// Transmit slot size of [`AfPacketConfig::new`].
const DEFAULT_TX_FRAME_SIZE: u32 = 2048;

impl AfPacketConfig {
    /// ESP-ready buffers, a receive ring of 2048 frame slots (4 MiB with the default layout),
    /// and 512 transmit slots of 2 KiB.
    pub fn new(interface: &str) -> Self {
        AfPacketConfig {
            interface: interface.to_owned(),
            layout: BufLayout::esp_udp_tunnel_ipv4(),
            pool_size: 4096,
            rx_ring: RxRing::Frames { frame_count: 2048 },
            tx_frame_size: DEFAULT_TX_FRAME_SIZE,
            tx_frame_count: 512,
            qdisc_bypass: false,
        }
    }

    /// The same with buffers of `layout`, and transmit slots grown (never shrunk) to hold
    /// its largest frame under either TPACKET version.
    pub fn with_layout(mut self, layout: BufLayout) -> Self {
        let needed = tx_data_offset(Version::V3) + layout.data_room();
        let slot = slots::slot_size_for(needed, page_size());
        self.tx_frame_size = self
            .tx_frame_size
            .max(u32::try_from(slot).unwrap_or(u32::MAX));
        self.layout = layout;
        self
    }

    /// Bytes per receive slot for [`RxRing::Frames`]: the kernel's header room plus the
    /// layout's data room, rounded up to a power of two (or whole pages). `None` for blocks.
    pub fn rx_slot_size(&self) -> Option<usize> {
        match self.rx_ring {
            RxRing::Frames { .. } => Some(slots::slot_size_for(
                RX_SLOT_HEADROOM + self.layout.data_room(),
                page_size(),
            )),
            RxRing::Blocks { .. } => None,
        }
    }

    fn version(&self) -> Version {
        match self.rx_ring {
            RxRing::Frames { .. } => Version::V2,
            RxRing::Blocks { .. } => Version::V3,
        }
    }
}

/// The socket's TPACKET version, which decides the layout of both rings' headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V3,
}

impl Version {
    fn option_value(self) -> libc::c_int {
        match self {
            Version::V2 => libc::tpacket_versions::TPACKET_V2 as libc::c_int,
            Version::V3 => libc::tpacket_versions::TPACKET_V3 as libc::c_int,
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

/// Where one received frame lies in its slot (V2) or block (V3), as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrameMeta {
    /// Offset of the frame's first byte in the slot or block.
    pub data_start: usize,
    /// Bytes of the frame present in the ring.
    pub captured: usize,
    /// Length of the frame on the wire.
    pub wire_len: usize,
    /// Offset from this header to the next one in a block; 0 in a slot.
    pub next_offset: usize,
}

/// What either receive ring needs from its port to turn ring frames into pool buffers.
struct RxContext<'a> {
    ring: &'a Mapping,
    pool: &'a Pool,
    stats: &'a PortStats,
    socket: RawFd,
    version: Version,
}

impl RxContext<'_> {
    /// Copies the frame `meta` describes out of `ring_bytes` into a pool buffer, or counts
    /// why not: a malformed header or a truncated frame (longer than its slot), a frame
    /// beyond the data room, an empty pool.
    fn deliver(&self, ring_bytes: &[u8], meta: Option<RxFrameMeta>) -> Option<PacketBuf> {
        let meta = match meta {
            Some(meta) if meta.captured >= meta.wire_len => meta,
            _ => {
                self.stats.add_drops(DropCause::Truncated, 1);
                return None;
            }
        };
        if meta.captured > self.pool.layout().data_room() {
            self.stats.add_drops(DropCause::Oversize, 1);
            return None;
        }
        let Some(mut buf) = self.pool.alloc() else {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
            return None;
        };
        // Cannot fail: the length was checked against the data room just above.
        let _ = buf.set_frame(&ring_bytes[meta.data_start..meta.data_start + meta.captured]);
        Some(buf)
    }

    /// Called when the kernel flags lost frames. Best effort: failing to read the statistics
    /// must not stop reception.
    fn sync_kernel_drops(&self) {
        let _ = sync_kernel_drops(self.socket, self.version, self.stats);
    }
}

/// Adds the kernel's count of frames lost to a full receive ring to `stats` (the kernel
/// resets its count on every read). The statistics struct differs between versions.
fn sync_kernel_drops(socket: RawFd, version: Version, stats: &PortStats) -> io::Result<()> {
    let drops = match version {
        Version::V2 => {
            let mut counts = libc::tpacket_stats {
                tp_packets: 0,
                tp_drops: 0,
            };
            read_statistics(socket, &mut counts)?;
            counts.tp_drops
        }
        Version::V3 => {
            let mut counts = libc::tpacket_stats_v3 {
                tp_packets: 0,
                tp_drops: 0,
                tp_freeze_q_cnt: 0,
            };
            read_statistics(socket, &mut counts)?;
            counts.tp_drops
        }
    };
    stats.add_drops(DropCause::KernelRxRingFull, u64::from(drops));
    Ok(())
}

fn read_statistics<T: Copy>(socket: RawFd, out: &mut T) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `out` and `len` are valid for writes, `len` holds the buffer's size, and `T`
    // is a plain-data statistics struct the kernel fills (at most `len` bytes).
    let rc = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (out as *mut T).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The receive ring as read: frames or blocks.
#[derive(Debug)]
enum RxState {
    Frames(FrameRx),
    Blocks(BlockRx),
}

/// Both rings' places in the mapping, checked against the kernel's rules.
#[derive(Debug)]
struct Geometry {
    version: Version,
    rx: RxGeometry,
    tx: SlotRing,
}

#[derive(Debug)]
enum RxGeometry {
    Frames(SlotRing),
    Blocks(libc::tpacket_req3),
}

impl RxGeometry {
    /// Bytes the receive ring takes at the start of the mapping.
    fn bytes(&self) -> usize {
        match self {
            RxGeometry::Frames(slots) => slots.bytes(),
            RxGeometry::Blocks(req) => req.tp_block_size as usize * req.tp_block_nr as usize,
        }
    }
}

/// Lays the rings out for `config`, or says which kernel rule they break.
fn geometry(config: &AfPacketConfig) -> Result<Geometry, &'static str> {
    let page = page_size();
    let version = config.version();
    let rx = rx_geometry(config, page)?;
    let tx = tx_geometry(config, version, page, rx.bytes())?;
    Ok(Geometry { version, rx, tx })
}

/// The receive ring, at the start of the mapping.
fn rx_geometry(config: &AfPacketConfig, page: usize) -> Result<RxGeometry, &'static str> {
    match config.rx_ring {
        RxRing::Frames { frame_count } => {
            if frame_count == 0 {
                return Err("the receive ring needs at least one frame slot");
            }
            let frame_size =
                slots::slot_size_for(RX_SLOT_HEADROOM + config.layout.data_room(), page);
            let block_size = slots::block_size_for(frame_size, page);
            let slots = SlotRing::new(0, frame_size, block_size, frame_count as usize);
            slots.request().ok_or("too many receive slots")?;
            Ok(RxGeometry::Frames(slots))
        }
        RxRing::Blocks {
            block_size,
            block_count,
            timeout_ms,
        } => {
            let block = block_size as usize;
            if block == 0 || !block.is_multiple_of(page) || block_count == 0 {
                return Err(
                    "receive blocks must be a non-zero multiple of the page size, at least one",
                );
            }
            Ok(RxGeometry::Blocks(block_request(
                block_size,
                block_count,
                timeout_ms,
            )))
        }
    }
}

/// The transmit ring, at `start` (right after the receive ring).
fn tx_geometry(
    config: &AfPacketConfig,
    version: Version,
    page: usize,
    start: usize,
) -> Result<SlotRing, &'static str> {
    let frame_size = config.tx_frame_size as usize;
    if frame_size <= tx_data_offset(version) || !slots::slot_size_ok(frame_size, page) {
        return Err(
            "transmit slots must be a multiple of 16 dividing the page size or a whole \
             number of pages, longer than the header",
        );
    }
    let block_size = slots::block_size_for(frame_size, page);
    let per_block = (block_size / frame_size) as u32;
    if config.tx_frame_count == 0 || !config.tx_frame_count.is_multiple_of(per_block) {
        return Err("transmit slot count must be a non-zero multiple of the slots per page");
    }
    let slots = SlotRing::new(
        start,
        frame_size,
        block_size,
        config.tx_frame_count as usize,
    );
    slots.request().ok_or("too many transmit slots")?;
    Ok(slots)
}

fn block_request(block_size: u32, block_count: u32, timeout_ms: u32) -> libc::tpacket_req3 {
    // The frame size is nominal for V3 receive (frames are packed), but the kernel checks it.
    let frame_size = 2048.min(block_size);
    libc::tpacket_req3 {
        tp_block_size: block_size,
        tp_block_nr: block_count,
        tp_frame_size: frame_size,
        tp_frame_nr: block_size / frame_size * block_count,
        tp_retire_blk_tov: timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    }
}

/// A V3 socket takes its ring requests as `tpacket_req3` (the extra fields zero for slots).
fn slots_request3(req: libc::tpacket_req) -> libc::tpacket_req3 {
    libc::tpacket_req3 {
        tp_block_size: req.tp_block_size,
        tp_block_nr: req.tp_block_nr,
        tp_frame_size: req.tp_frame_size,
        tp_frame_nr: req.tp_frame_nr,
        tp_retire_blk_tov: 0,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    }
}

/// Asks for a ring of fixed slots (`option` is PACKET_RX_RING or PACKET_TX_RING) in the
/// request struct `version` expects.
fn request_slots(
    fd: RawFd,
    option: libc::c_int,
    version: Version,
    slots: &SlotRing,
) -> io::Result<()> {
    let req = slots
        .request()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    match version {
        Version::V2 => set_option(fd, option, req),
        Version::V3 => set_option(fd, option, slots_request3(req)),
    }
}

/// A port on one interface through an AF_PACKET socket with TPACKET rings.
pub struct AfPacketPort {
    interface: String,
    // Field order matters: the mapping must go before the socket is closed.
    ring: Mapping,
    socket: OwnedFd,
    pool: Pool,
    stats: Arc<PortStats>,
    version: Version,
    rx: RxState,
    tx: TxRing,
}

// SAFETY: the raw pointer in `ring` refers to a mapping owned by this port alone; no other
// value aliases it, so moving the port (mapping and socket together) to another thread is
// sound. The port is not `Sync`: it is used by one polling loop at a time.
unsafe impl Send for AfPacketPort {}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("AfPacketPort");
        out.field("interface", &self.interface);
        match &self.rx {
            RxState::Frames(frames) => out.field("rx_slots", &frames.slots().len()),
            RxState::Blocks(blocks) => out.field("rx_blocks", &blocks.block_count()),
        };
        out.field("tx_slots", &self.tx.len()).finish()
    }
}

impl AfPacketPort {
    /// Opens a port on `config.interface` in the calling thread's network namespace.
    /// Needs CAP_NET_RAW.
    pub fn open(config: &AfPacketConfig) -> Result<Self, AfPacketError> {
        let interface = config.interface.clone();
        let geometry = geometry(config).map_err(|reason| AfPacketError::BadRing {
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
        let version = geometry.version;
        set_option(fd, libc::PACKET_VERSION, version.option_value())
            .map_err(sys("PACKET_VERSION"))?;
        set_option(fd, libc::PACKET_LOSS, 1).map_err(sys("PACKET_LOSS"))?;
        set_option(fd, libc::PACKET_IGNORE_OUTGOING, 1).map_err(sys("PACKET_IGNORE_OUTGOING"))?;
        if config.qdisc_bypass {
            set_option(fd, libc::PACKET_QDISC_BYPASS, 1).map_err(sys("PACKET_QDISC_BYPASS"))?;
        }
        let len = geometry.rx.bytes() + geometry.tx.bytes();
        let rx = match geometry.rx {
            RxGeometry::Frames(slots) => {
                request_slots(fd, libc::PACKET_RX_RING, version, &slots)
                    .map_err(sys("PACKET_RX_RING"))?;
                RxState::Frames(FrameRx::new(slots))
            }
            RxGeometry::Blocks(req) => {
                set_option(fd, libc::PACKET_RX_RING, req).map_err(sys("PACKET_RX_RING"))?;
                RxState::Blocks(BlockRx::new(
                    req.tp_block_size as usize,
                    req.tp_block_nr as usize,
                ))
            }
        };
        request_slots(fd, libc::PACKET_TX_RING, version, &geometry.tx)
            .map_err(sys("PACKET_TX_RING"))?;
        let ring = Mapping::new(Some(fd), len, 0).map_err(sys("mmap"))?;
        bind_to(fd, index).map_err(sys("bind"))?;
        Ok(AfPacketPort {
            interface,
            ring,
            socket,
            pool,
            stats: Arc::default(),
            version,
            rx,
            tx: TxRing::new(geometry.tx, version),
        })
    }

    /// True when a received frame (or block) is ready to be read.
    fn rx_ready(&self) -> bool {
        match &self.rx {
            RxState::Frames(frames) => frames.next_is_users(&self.ring),
            RxState::Blocks(blocks) => blocks.has_ready(&self.ring),
        }
    }

    /// Waits up to `timeout` for a received frame (a frame slot, or a whole block under
    /// [`RxRing::Blocks`]); true when one is ready.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        if self.rx_ready() {
            return Ok(true);
        }
        crate::poll::wait_readable(self.socket.as_raw_fd(), timeout)
    }

    /// Adds the kernel's count of frames lost to a full receive ring to the port's counters
    /// (the kernel resets its count on every read).
    pub fn sync_kernel_drops(&mut self) -> io::Result<()> {
        sync_kernel_drops(self.socket.as_raw_fd(), self.version, &self.stats)
    }

    /// The port's buffer pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
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
    /// The socket polls readable once the kernel hands a receive slot (frames) or block
    /// (blocks) to us.
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
        let ctx = RxContext {
            ring: &self.ring,
            pool: &self.pool,
            stats: &self.stats,
            socket: self.socket.as_raw_fd(),
            version: self.version,
        };
        let before = burst.len();
        match &mut self.rx {
            RxState::Frames(frames) => frames.receive(&ctx, burst),
            RxState::Blocks(blocks) => blocks.receive(&ctx, burst),
        }
        let received = &burst.frames()[before..];
        let bytes = received.iter().map(|frame| frame.len() as u64).sum();
        self.stats.add_rx(received.len() as u64, bytes);
        received.len()
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let socket = self.socket.as_raw_fd();
        let (queued, bytes) = self.tx.send(&self.ring, &self.stats, socket, burst);
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
        config.rx_ring = RxRing::Blocks {
            block_size: 1000,
            block_count: 4,
            timeout_ms: 1,
        };
        let err = AfPacketPort::open(&config).unwrap_err();
        assert!(matches!(err, AfPacketError::BadRing { .. }), "{err}");
        let mut config = AfPacketConfig::new("lo");
        config.rx_ring = RxRing::Frames { frame_count: 0 };
        assert!(matches!(
            AfPacketPort::open(&config),
            Err(AfPacketError::BadRing { .. })
        ));
        let mut config = AfPacketConfig::new("lo");
        config.tx_frame_size = 32;
        assert!(
            matches!(
                AfPacketPort::open(&config),
                Err(AfPacketError::BadRing { .. })
            ),
            "32 bytes is only the V2 header"
        );
        let mut config = AfPacketConfig::new("lo");
        config.tx_frame_size = 1600;
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

    #[test]
    fn frame_slots_follow_the_layouts_largest_frame() {
        let page = page_size();
        let config = AfPacketConfig::new("x");
        assert_eq!(config.version(), Version::V2, "frames are the default");
        let slot = config.rx_slot_size().unwrap();
        assert!(slot >= RX_SLOT_HEADROOM + 1514, "{slot}");
        let jumbo = BufLayout::new(64, 9000 + 14 + 24, 32).unwrap();
        let config = AfPacketConfig::new("x").with_layout(jumbo);
        let slot = config.rx_slot_size().unwrap();
        assert!(
            slot >= RX_SLOT_HEADROOM + 9038 && slot.is_multiple_of(page),
            "{slot}"
        );
        let geometry = geometry(&config).unwrap();
        let RxGeometry::Frames(rx) = geometry.rx else {
            panic!("frames expected");
        };
        assert_eq!((rx.frame_size, rx.frames_per_block), (slot, 1));
        assert!(rx.len() >= 2048);
        assert!(
            config.tx_frame_size as usize >= tx_data_offset(Version::V3) + 9038,
            "transmit slots grew with the layout"
        );
        assert_eq!(
            geometry.tx.start,
            rx.bytes(),
            "transmit ring follows receive ring"
        );
        let small = AfPacketConfig::new("x").with_layout(BufLayout::new(0, 64, 0).unwrap());
        assert_eq!(small.tx_frame_size, DEFAULT_TX_FRAME_SIZE, "never shrunk");
    }

    #[test]
    fn frames_longer_than_the_ring_holds_are_dropped_as_truncated() {
        let pool = Pool::new(BufLayout::new(0, 256, 0).unwrap(), 2).unwrap();
        let stats = PortStats::default();
        let ring = Mapping::new(None, 4096, 0).unwrap();
        let ctx = RxContext {
            ring: &ring,
            pool: &pool,
            stats: &stats,
            socket: -1,
            version: Version::V2,
        };
        let bytes = [7u8; 512];
        let meta = |captured, wire_len| {
            Some(RxFrameMeta {
                data_start: 66,
                captured,
                wire_len,
                next_offset: 0,
            })
        };
        assert!(ctx.deliver(&bytes, meta(300, 1000)).is_none());
        assert!(ctx.deliver(&bytes, None).is_none());
        assert!(ctx.deliver(&bytes, meta(300, 300)).is_none());
        let frame = ctx.deliver(&bytes, meta(100, 100)).unwrap();
        assert_eq!(frame.data(), &bytes[66..166]);
        let counters = stats.snapshot();
        assert_eq!(counters.drops(DropCause::Truncated), 2);
        assert_eq!(counters.drops(DropCause::Oversize), 1);
    }
}
