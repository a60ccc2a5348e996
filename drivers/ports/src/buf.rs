//! Packet buffers and the fixed pools they come from.
//!
//! A pool allocates all its buffers once. A [`PacketBuf`] is a handle to one of them with a
//! movable data window (like a DPDK mbuf's `data_off`/`data_len`), so headers can be pushed in
//! front and trailers appended behind without moving the payload. Dropping a `PacketBuf`
//! returns its storage to the pool it came from, whichever thread or port drops it, so a
//! buffer received on one port can be sent on another without a copy and without leaking.

use std::fmt;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// Headroom ESP tunnel mode with UDP encapsulation adds in front of an inner IPv4 packet:
/// outer IPv4 (20) + UDP (8) + ESP header (8) + GCM IV (8).
pub const ESP_UDP_TUNNEL_IPV4_HEADROOM: usize = 20 + 8 + 8 + 8;
/// Tailroom ESP adds behind the payload: up to 16 bytes of padding and trailer, and a 16-byte ICV.
pub const ESP_TAILROOM: usize = 16 + 16;
/// An outer IPv4 header and a GRE header.
const GRE_OVER_IPV4: usize = 20 + 4;
/// Largest buffer (headroom + data room + tailroom) a pool accepts: offsets are kept in `u32`
/// but no link carries more than a jumbo frame.
pub const MAX_BUFFER_SIZE: usize = 64 * 1024;
/// Smallest data room: a minimum Ethernet frame without FCS.
pub const MIN_DATA_ROOM: usize = 60;

/// How a pool's buffers are laid out: room reserved in front of and behind the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufLayout {
    headroom: usize,
    data_room: usize,
    tailroom: usize,
}

impl BufLayout {
    /// A layout with `headroom` bytes before the frame, frames up to `data_room` bytes as
    /// received, and `tailroom` bytes after them.
    pub fn new(headroom: usize, data_room: usize, tailroom: usize) -> Result<Self, BufError> {
        let total = headroom
            .checked_add(data_room)
            .and_then(|sum| sum.checked_add(tailroom));
        match total {
            Some(total) if total <= MAX_BUFFER_SIZE && data_room >= MIN_DATA_ROOM => {
                Ok(BufLayout {
                    headroom,
                    data_room,
                    tailroom,
                })
            }
            _ => Err(BufError::BadLayout {
                headroom,
                data_room,
                tailroom,
            }),
        }
    }

    /// Room for a 1514-byte Ethernet frame to be sealed in place as ESP tunnel mode in UDP
    /// over IPv4 (the Ethernet header is rewritten in place, so it needs no extra room).
    pub fn esp_udp_tunnel_ipv4() -> Self {
        BufLayout {
            headroom: round_up_to_cache_line(ESP_UDP_TUNNEL_IPV4_HEADROOM),
            data_room: 1514,
            tailroom: ESP_TAILROOM,
        }
    }

    /// The same for a port on the XCF network, whose frames are full-size peer packets with
    /// the distributor's outer IPv4 and GRE headers (24 bytes) in front.
    pub fn esp_over_gre_ipv4() -> Self {
        let mut layout = Self::esp_udp_tunnel_ipv4();
        layout.data_room += GRE_OVER_IPV4;
        layout
    }

    /// Bytes reserved in front of a freshly received or allocated frame.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Largest frame a port receives into a buffer of this layout.
    pub fn data_room(&self) -> usize {
        self.data_room
    }

    /// Bytes reserved behind a frame of `data_room` bytes.
    pub fn tailroom(&self) -> usize {
        self.tailroom
    }

    /// Size of one buffer's storage.
    pub fn buffer_size(&self) -> usize {
        self.headroom + self.data_room + self.tailroom
    }
}

fn round_up_to_cache_line(n: usize) -> usize {
    n.div_ceil(64) * 64
}

/// Why a buffer or pool operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufError {
    /// The layout is too large or leaves no room for a minimum frame.
    #[error("bad buffer layout: headroom {headroom}, data room {data_room}, tailroom {tailroom} (total at most {MAX_BUFFER_SIZE}, data room at least {MIN_DATA_ROOM})")]
    BadLayout {
        headroom: usize,
        data_room: usize,
        tailroom: usize,
    },
    /// A pool must hold at least one buffer.
    #[error("a buffer pool needs at least one buffer")]
    EmptyPool,
    /// Not enough room in front of the data.
    #[error("need {wanted} bytes of headroom, {available} left")]
    NoHeadroom { wanted: usize, available: usize },
    /// Not enough room behind the data.
    #[error("need {wanted} bytes of tailroom, {available} left")]
    NoTailroom { wanted: usize, available: usize },
    /// Asked to remove more bytes than the frame holds.
    #[error("cannot trim {wanted} bytes from a {len}-byte frame")]
    TrimTooLong { wanted: usize, len: usize },
}

struct PoolShared {
    free: ArrayQueue<Box<[u8]>>,
    layout: BufLayout,
}

/// A fixed set of equally sized buffers, all allocated up front. Cheap to clone (shared).
#[derive(Clone)]
pub struct Pool {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("layout", &self.shared.layout)
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .finish()
    }
}

impl Pool {
    /// Allocates `count` buffers of `layout`.
    pub fn new(layout: BufLayout, count: usize) -> Result<Self, BufError> {
        if count == 0 {
            return Err(BufError::EmptyPool);
        }
        let free = ArrayQueue::new(count);
        for _ in 0..count {
            // The queue was sized for exactly `count` entries, so this push cannot fail.
            let _ = free.push(vec![0u8; layout.buffer_size()].into_boxed_slice());
        }
        Ok(Pool {
            shared: Arc::new(PoolShared { free, layout }),
        })
    }

    /// Takes a buffer with an empty frame at the layout's headroom, or `None` when all are in use.
    pub fn alloc(&self) -> Option<PacketBuf> {
        let storage = self.shared.free.pop()?;
        Some(PacketBuf {
            storage: Some(storage),
            start: self.shared.layout.headroom,
            len: 0,
            pool: Arc::clone(&self.shared),
        })
    }

    /// The layout of every buffer in this pool.
    pub fn layout(&self) -> BufLayout {
        self.shared.layout
    }

    /// How many buffers the pool owns in total.
    pub fn capacity(&self) -> usize {
        self.shared.free.capacity()
    }

    /// How many buffers are free right now.
    pub fn available(&self) -> usize {
        self.shared.free.len()
    }
}

/// One frame in a pool buffer. Returns to its pool when dropped.
pub struct PacketBuf {
    // Always `Some` until `drop` takes it out.
    storage: Option<Box<[u8]>>,
    start: usize,
    len: usize,
    pool: Arc<PoolShared>,
}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Frames can carry plaintext; show only their geometry.
        f.debug_struct("PacketBuf")
            .field("headroom", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        if let Some(storage) = self.storage.take() {
            // The free queue holds every buffer of the pool, so there is always room.
            let _ = self.pool.free.push(storage);
        }
    }
}

impl PacketBuf {
    fn storage(&self) -> &[u8] {
        self.storage.as_deref().unwrap_or(&[])
    }

    fn storage_mut(&mut self) -> &mut [u8] {
        self.storage.as_deref_mut().unwrap_or(&mut [])
    }

    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        &self.storage()[self.start..self.start + self.len]
    }

    /// The frame's bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.start, self.start + self.len);
        &mut self.storage_mut()[start..end]
    }

    /// Length of the frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Free bytes behind the frame.
    pub fn tailroom(&self) -> usize {
        self.storage().len() - self.start - self.len
    }

    /// The layout of the pool this buffer belongs to.
    pub fn layout(&self) -> BufLayout {
        self.pool.layout
    }

    /// Grows the frame by `n` bytes at the front and returns them (for a new outer header).
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.start {
            return Err(BufError::NoHeadroom {
                wanted: n,
                available: self.start,
            });
        }
        self.start -= n;
        self.len += n;
        let start = self.start;
        Ok(&mut self.storage_mut()[start..start + n])
    }

    /// Grows the frame by `n` bytes at the back and returns them (for a trailer or ICV).
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        let available = self.tailroom();
        if n > available {
            return Err(BufError::NoTailroom {
                wanted: n,
                available,
            });
        }
        let old_end = self.start + self.len;
        self.len += n;
        Ok(&mut self.storage_mut()[old_end..old_end + n])
    }

    /// Removes `n` bytes from the front of the frame (to strip a header).
    pub fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        self.check_trim(n)?;
        self.start += n;
        self.len -= n;
        Ok(())
    }

    /// Removes `n` bytes from the back of the frame (to strip a trailer).
    pub fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        self.check_trim(n)?;
        self.len -= n;
        Ok(())
    }

    fn check_trim(&self, n: usize) -> Result<(), BufError> {
        if n > self.len {
            return Err(BufError::TrimTooLong {
                wanted: n,
                len: self.len,
            });
        }
        Ok(())
    }

    /// Empties the frame and puts its start back at the layout's headroom.
    pub fn reset(&mut self) {
        self.start = self.pool.layout.headroom;
        self.len = 0;
    }

    /// Replaces the frame with a copy of `bytes`, starting at the layout's headroom.
    pub fn set_frame(&mut self, bytes: &[u8]) -> Result<(), BufError> {
        self.reset();
        self.append(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_pool(count: usize) -> Pool {
        let layout = BufLayout::new(16, 64, 8).unwrap();
        Pool::new(layout, count).unwrap()
    }

    #[test]
    fn esp_layout_has_room_for_udp_encapsulated_tunnel() {
        let layout = BufLayout::esp_udp_tunnel_ipv4();
        assert!(layout.headroom() >= 44);
        assert!(layout.tailroom() >= 32);
        assert_eq!(layout.data_room(), 1514);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(matches!(
            BufLayout::new(0, 10, 0),
            Err(BufError::BadLayout { .. })
        ));
        assert!(BufLayout::new(usize::MAX, 64, 1).is_err());
        assert!(BufLayout::new(0, MAX_BUFFER_SIZE + 1, 0).is_err());
        assert_eq!(
            Pool::new(BufLayout::new(0, 64, 0).unwrap(), 0).unwrap_err(),
            BufError::EmptyPool
        );
    }

    #[test]
    fn buffers_return_to_their_pool_when_dropped() {
        let pool = small_pool(2);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.available(), 0);
        drop(a);
        assert_eq!(pool.available(), 1);
        drop(b);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn prepend_and_append_use_head_and_tail_room() {
        let pool = small_pool(1);
        let mut buf = pool.alloc().unwrap();
        buf.set_frame(b"payload").unwrap();
        assert_eq!(buf.headroom(), 16);
        buf.prepend(4).unwrap().copy_from_slice(b"HDR:");
        buf.append(3).unwrap().copy_from_slice(b"ICV");
        assert_eq!(buf.data(), b"HDR:payloadICV");
        assert_eq!(buf.headroom(), 12);
        assert_eq!(buf.tailroom(), 16 + 64 + 8 - 12 - 14);
        buf.trim_front(4).unwrap();
        buf.trim_back(3).unwrap();
        assert_eq!(buf.data(), b"payload");
    }

    #[test]
    fn running_out_of_room_is_an_error_and_leaves_the_frame_alone() {
        let pool = small_pool(1);
        let mut buf = pool.alloc().unwrap();
        buf.set_frame(&[7; 60]).unwrap();
        assert_eq!(
            buf.prepend(17).unwrap_err(),
            BufError::NoHeadroom {
                wanted: 17,
                available: 16
            }
        );
        assert_eq!(
            buf.append(13).unwrap_err(),
            BufError::NoTailroom {
                wanted: 13,
                available: 12
            }
        );
        assert_eq!(
            buf.trim_front(61).unwrap_err(),
            BufError::TrimTooLong {
                wanted: 61,
                len: 60
            }
        );
        assert_eq!(buf.data(), &[7; 60][..]);
    }

    #[test]
    fn reset_restores_the_headroom() {
        let pool = small_pool(1);
        let mut buf = pool.alloc().unwrap();
        buf.set_frame(b"abc").unwrap();
        buf.prepend(10).unwrap();
        buf.reset();
        assert!(buf.is_empty());
        assert_eq!(buf.headroom(), 16);
    }

    #[test]
    fn debug_shows_no_frame_bytes() {
        let pool = small_pool(1);
        let mut buf = pool.alloc().unwrap();
        buf.set_frame(b"secret-plaintext").unwrap();
        let shown = format!("{buf:?}");
        assert!(!shown.contains("115"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
