//! AF_XDP port: an XDP socket on one receive queue of an interface, in copy mode with
//! generic (skb) XDP, which is what works on veth and on any driver.
//!
//! Written directly against the kernel ABI (libc plus a few bpf(2) calls in `bpf.rs`) rather
//! than through a crate: `xsk-rs` would pull libxdp/libbpf and a libclang build into every
//! build of the workspace for what is five BPF instructions and four rings here.
//!
//! The UMEM (frame memory shared with the kernel) is split in two: the first half feeds the
//! fill ring for reception, the second half is a free list for transmission, refilled from
//! the completion ring. Received frames are copied once into pool buffers and their UMEM
//! frame goes straight back to the fill ring; transmitted frames are copied once into a free
//! UMEM frame. The redirect program is attached through a BPF link, so it is detached when
//! the port (or the process) goes away.

mod bpf;
pub use bpf::Steering;
mod ring;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::buf::{BufError, BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortStats};
use crate::ifindex::{interface_index, IfIndexError};
use crate::mmap::Mapping;
use crate::port::{alloc_counting_empty, Burst, PacketPort};
use ring::Ring;

/// Sizes of an AF_XDP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface to attach to.
    pub interface: String,
    /// Receive queue of the interface to serve.
    pub queue: u32,
    /// Layout of received buffers and of the pool `alloc_tx` draws from.
    pub layout: BufLayout,
    /// Buffers in the port's pool.
    pub pool_size: usize,
    /// Bytes per UMEM frame: 2048 or 4096. The kernel keeps 256 bytes of each for itself.
    pub frame_size: u32,
    /// UMEM frames, half for receive and half for transmit: a power of two.
    pub frame_count: u32,
    /// Which received frames the socket gets (the rest go to the kernel).
    pub steering: Steering,
}

impl AfXdpConfig {
    /// Queue 0, ESP-ready buffers, 4096 frames of 2 KiB.
    pub fn new(interface: &str) -> Self {
        AfXdpConfig {
            interface: interface.to_owned(),
            queue: 0,
            layout: BufLayout::esp_udp_tunnel_ipv4(),
            pool_size: 4096,
            frame_size: 2048,
            frame_count: 4096,
            steering: Steering::Everything,
        }
    }
}

/// Why an AF_XDP port could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfXdpError {
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
    /// Frame size or count outside what the kernel accepts.
    #[error("{interface}: bad UMEM geometry: {reason}")]
    BadUmem {
        interface: String,
        reason: &'static str,
    },
    /// A socket, mmap or bpf call failed (most need CAP_NET_ADMIN and CAP_BPF or root).
    #[error("{interface}: {call} failed: {source}")]
    Sys {
        interface: String,
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// The buffer pool could not be made.
    #[error("{interface}: {source}")]
    Pool {
        interface: String,
        #[source]
        source: BufError,
    },
}

/// Headroom the kernel reserves at the start of every UMEM frame it receives into.
const XDP_PACKET_HEADROOM: u32 = 256;

/// A port on one interface queue through an AF_XDP socket.
pub struct AfXdpPort {
    interface: String,
    // Drop order: detach the program first, then the rings, UMEM and sockets.
    _link: OwnedFd,
    _program: OwnedFd,
    _map: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    completion: Ring<u64>,
    umem: Mapping,
    socket: OwnedFd,
    tx_free: Vec<u64>,
    frame_size: u32,
    pool: Pool,
    stats: Arc<PortStats>,
    kernel_drops_seen: u64,
}

// SAFETY: the raw pointers inside the rings and UMEM refer to mappings owned by this port
// alone; moving the whole port to another thread moves them together. The port is not Sync.
unsafe impl Send for AfXdpPort {}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("interface", &self.interface)
            .field("umem_bytes", &self.umem.len)
            .finish()
    }
}

fn check_umem(config: &AfXdpConfig) -> Result<(), &'static str> {
    if config.frame_size != 2048 && config.frame_size != 4096 {
        return Err("frame size must be 2048 or 4096");
    }
    if config.frame_count < 4 || !config.frame_count.is_power_of_two() {
        return Err("frame count must be a power of two, at least 4");
    }
    if config.layout.data_room() + XDP_PACKET_HEADROOM as usize > config.frame_size as usize {
        return Err(
            "the buffer layout's data room does not fit a frame after the kernel's headroom",
        );
    }
    Ok(())
}

fn set_xdp_option<T>(fd: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live plain-data option of exactly the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_xdp_option<T>(fd: libc::c_int, name: libc::c_int, value: &mut T) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live plain-data buffer of exactly `len` bytes, valid for writes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            name,
            std::ptr::from_mut(value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_xsk(fd: libc::c_int, ifindex: u32, queue: u32) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: libc::XDP_COPY,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `addr` is a valid sockaddr_xdp for the whole call and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AfXdpPort {
    /// Opens a port on `config.interface`, queue `config.queue`, in the calling thread's
    /// network namespace, and attaches the redirect program (generic XDP). Needs root.
    pub fn open(config: &AfXdpConfig) -> Result<Self, AfXdpError> {
        let interface = config.interface.clone();
        check_umem(config).map_err(|reason| AfXdpError::BadUmem {
            interface: interface.clone(),
            reason,
        })?;
        let ifindex = interface_index(&interface).map_err(|err| match err {
            IfIndexError::BadName => AfXdpError::BadInterfaceName(interface.clone()),
            IfIndexError::Missing(source) => AfXdpError::NoSuchInterface {
                interface: interface.clone(),
                source,
            },
        })?;
        let pool =
            Pool::new(config.layout, config.pool_size).map_err(|source| AfXdpError::Pool {
                interface: interface.clone(),
                source,
            })?;
        let sys = |call: &'static str| {
            let interface = interface.clone();
            move |source| AfXdpError::Sys {
                interface,
                call,
                source,
            }
        };
        let half = config.frame_count / 2;
        let umem_len = config.frame_count as usize * config.frame_size as usize;
        let umem = Mapping::new(None, umem_len, 0).map_err(sys("mmap UMEM"))?;
        let socket = open_xdp_socket().map_err(sys("socket(AF_XDP)"))?;
        let fd = socket.as_raw_fd();
        let registration = libc::xdp_umem_reg {
            addr: umem.base as u64,
            len: umem_len as u64,
            chunk_size: config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        set_xdp_option(fd, libc::XDP_UMEM_REG, &registration).map_err(sys("XDP_UMEM_REG"))?;
        for (option, call) in [
            (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (libc::XDP_RX_RING, "XDP_RX_RING"),
            (libc::XDP_TX_RING, "XDP_TX_RING"),
        ] {
            set_xdp_option(fd, option, &half).map_err(sys(call))?;
        }
        // SAFETY: xdp_mmap_offsets is plain data; all-zero is valid and the kernel fills it.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        get_xdp_option(fd, libc::XDP_MMAP_OFFSETS, &mut offsets)
            .map_err(sys("XDP_MMAP_OFFSETS"))?;
        let rx = Ring::map(fd, half, &offsets.rx, libc::XDP_PGOFF_RX_RING)
            .map_err(sys("mmap rx ring"))?;
        let tx = Ring::map(fd, half, &offsets.tx, libc::XDP_PGOFF_TX_RING)
            .map_err(sys("mmap tx ring"))?;
        let mut fill = Ring::map(
            fd,
            half,
            &offsets.fr,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        )
        .map_err(sys("mmap fill ring"))?;
        let completion = Ring::map(
            fd,
            half,
            &offsets.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )
        .map_err(sys("mmap completion ring"))?;
        let frame = u64::from(config.frame_size);
        for index in 0..u64::from(half) {
            fill.write(index * frame);
        }
        fill.submit();
        let tx_free = (u64::from(half)..u64::from(config.frame_count))
            .map(|index| index * frame)
            .collect();
        bind_xsk(fd, ifindex, config.queue).map_err(sys("bind"))?;
        let map = bpf::create_xsk_map(config.queue + 1).map_err(sys("bpf map create"))?;
        bpf::set_map_entry(map.as_raw_fd(), config.queue, fd).map_err(sys("bpf map update"))?;
        let program = bpf::load_redirect_program(map.as_raw_fd(), config.steering)
            .map_err(sys("bpf program load"))?;
        let link = bpf::attach_xdp(program.as_raw_fd(), ifindex, bpf::XDP_FLAGS_SKB_MODE)
            .map_err(sys("bpf link create (attach XDP)"))?;
        Ok(AfXdpPort {
            interface,
            _link: link,
            _program: program,
            _map: map,
            rx,
            tx,
            fill,
            completion,
            umem,
            socket,
            tx_free,
            frame_size: config.frame_size,
            pool,
            stats: Arc::default(),
            kernel_drops_seen: 0,
        })
    }

    /// Waits up to `timeout` for a received frame; true when one is ready.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        if self.rx.available() > 0 {
            return Ok(true);
        }
        crate::poll::wait_readable(self.socket.as_raw_fd(), timeout)
    }

    /// Adds frames the kernel dropped for this socket (full rx ring, empty fill ring, bad
    /// descriptors) since the last call to the port's counters.
    pub fn sync_kernel_drops(&mut self) -> io::Result<()> {
        // SAFETY: xdp_statistics is plain data; all-zero is valid and the kernel fills it.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        get_xdp_option(self.socket.as_raw_fd(), libc::XDP_STATISTICS, &mut stats)?;
        let total = stats.rx_dropped + stats.rx_ring_full + stats.rx_invalid_descs;
        let new = total.saturating_sub(self.kernel_drops_seen);
        self.kernel_drops_seen = total;
        self.stats.add_drops(DropCause::KernelRxRingFull, new);
        Ok(())
    }

    /// The port's buffer pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The UMEM bytes `addr..addr+len`, if they lie inside the UMEM.
    fn umem_slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        if start.checked_add(len)? > self.umem.len {
            return None;
        }
        // SAFETY: the range is inside the live UMEM mapping (checked above), and the frame
        // was handed to us by the rx ring, so the kernel does not write it until we put its
        // address back on the fill ring, which happens after this borrow ends.
        Some(unsafe { std::slice::from_raw_parts(self.umem.base.add(start).cast_const(), len) })
    }

    fn receive_one(&mut self, desc: libc::xdp_desc) -> Option<PacketBuf> {
        let len = desc.len as usize;
        let Some(bytes) = self.umem_slice(desc.addr, len) else {
            self.stats.add_drops(DropCause::Truncated, 1);
            return None;
        };
        if len > self.pool.layout().data_room() {
            self.stats.add_drops(DropCause::Oversize, 1);
            return None;
        }
        let Some(mut buf) = self.pool.alloc() else {
            self.stats.add_drops(DropCause::PoolEmpty, 1);
            return None;
        };
        // Cannot fail: the length was checked against the data room above.
        let _ = buf.set_frame(bytes);
        Some(buf)
    }

    fn reclaim_completed(&mut self) {
        let done = self.completion.available();
        for _ in 0..done {
            let addr = self.completion.read();
            self.tx_free.push(addr);
        }
        if done > 0 {
            self.completion.release();
        }
    }

    fn kick_tx(&self) {
        // SAFETY: a zero-length send with null buffer and address is how an XDP socket is
        // told to process its tx ring; the kernel reads only the rings and UMEM. A failure
        // (EAGAIN, EBUSY, ENOBUFS) leaves the descriptors queued for the next kick.
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

    /// A free UMEM frame and a free tx slot, kicking the kernel once if there are none.
    fn claim_tx_frame(&mut self, queued: u32) -> Option<u64> {
        if self.tx_free.is_empty() || self.tx.free_slots() == 0 {
            if queued > 0 {
                self.tx.submit();
                self.kick_tx();
            }
            self.reclaim_completed();
        }
        if self.tx.free_slots() == 0 {
            return None;
        }
        self.tx_free.pop()
    }

    fn write_tx_frame(&mut self, addr: u64, frame: &PacketBuf) {
        let start = addr as usize;
        // SAFETY: `addr` is a UMEM frame from our free list (so the kernel is not using it)
        // and the caller checked that the frame fits in one UMEM frame; the source is a
        // pool buffer, which cannot overlap the UMEM.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.data().as_ptr(),
                self.umem.base.add(start),
                frame.len(),
            );
        }
        self.tx.write(libc::xdp_desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        });
    }
}

impl PacketPort for AfXdpPort {
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
        let ready = (self.rx.available() as usize).min(burst.room());
        let (mut packets, mut bytes) = (0u64, 0u64);
        for _ in 0..ready {
            let desc = self.rx.read();
            let frame = self.receive_one(desc);
            // Every rx frame came from the fill ring, which has a slot for each of them.
            self.fill.write(desc.addr & !u64::from(self.frame_size - 1));
            if let Some(frame) = frame {
                packets += 1;
                bytes += frame.len() as u64;
                // Cannot fail: at most `burst.room()` frames are read.
                let _ = burst.push(frame);
            }
        }
        if ready > 0 {
            self.rx.release();
            self.fill.submit();
        }
        self.stats.add_rx(packets, bytes);
        packets as usize
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.reclaim_completed();
        let max_frame = self.frame_size as usize;
        let (mut queued, mut bytes) = (0u32, 0u64);
        for frame in burst.drain() {
            if !crate::port::tx_length_ok(&self.stats, frame.len(), max_frame) {
                continue;
            }
            let Some(addr) = self.claim_tx_frame(queued) else {
                self.stats.add_drops(DropCause::TxRingFull, 1);
                continue;
            };
            self.write_tx_frame(addr, &frame);
            queued += 1;
            bytes += frame.len() as u64;
        }
        if queued > 0 {
            self.tx.submit();
            self.kick_tx();
        }
        self.stats.add_tx(u64::from(queued), bytes);
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
    fn umem_geometry_is_checked_before_any_system_call() {
        let mut config = AfXdpConfig::new("lo");
        config.frame_size = 3000;
        assert!(matches!(
            AfXdpPort::open(&config),
            Err(AfXdpError::BadUmem { .. })
        ));
        let mut config = AfXdpConfig::new("lo");
        config.frame_count = 1000;
        assert!(matches!(
            AfXdpPort::open(&config),
            Err(AfXdpError::BadUmem { .. })
        ));
    }

    #[test]
    fn missing_interfaces_are_named_in_the_error() {
        let err = AfXdpPort::open(&AfXdpConfig::new("nosuchif0")).unwrap_err();
        assert!(matches!(err, AfXdpError::NoSuchInterface { .. }), "{err}");
        assert!(err.to_string().contains("nosuchif0"));
    }
}
