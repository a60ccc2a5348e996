//! The burst interface every backend implements.
//!
//! Buffers are owned by ports' pools (see [`crate::buf`]): `rx_burst` fills a [`Burst`] with
//! port-owned buffers that go back to their pool when the loop drops them; `tx_burst` takes
//! buffers from any pool (a fresh one from [`PacketPort::alloc_tx`], or a received one being
//! forwarded) and empties the burst. Nothing allocates per packet: a `Burst` has a fixed
//! capacity and pools are preallocated. This is the DPDK mbuf model rather than smoltcp's
//! per-packet tokens, because the ESP engine must seal in place in the headroom/tailroom and
//! a polling loop wants whole bursts.
//!
//! The fabric moves buffers without copying. The kernel backends copy each frame once
//! between their shared memory (TPACKET blocks, AF_XDP UMEM) and pool buffers, so ring slots
//! go back to the kernel at once and a loop may hold a frame as long as it likes; handing out
//! UMEM frames themselves as buffers would save that copy but is not done.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::buf::{BufLayout, PacketBuf, Pool};
use crate::counters::{DropCause, PortCounters, PortStats};

/// A fixed-capacity batch of frames. Never grows after creation.
#[derive(Debug)]
pub struct Burst {
    frames: Vec<PacketBuf>,
    capacity: usize,
}

impl Burst {
    /// An empty burst for at most `capacity` frames (allocated once, here).
    pub fn with_capacity(capacity: usize) -> Self {
        Burst {
            frames: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a frame, or hands it back when the burst is full.
    pub fn push(&mut self, frame: PacketBuf) -> Result<(), PacketBuf> {
        if self.is_full() {
            return Err(frame);
        }
        self.frames.push(frame);
        Ok(())
    }

    /// How many frames it holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when no more frames fit.
    pub fn is_full(&self) -> bool {
        self.frames.len() >= self.capacity
    }

    /// How many more frames fit.
    pub fn room(&self) -> usize {
        self.capacity - self.frames.len()
    }

    /// The most frames it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[PacketBuf] {
        &self.frames
    }

    /// The frames, writable in place.
    pub fn frames_mut(&mut self) -> &mut [PacketBuf] {
        &mut self.frames
    }

    /// Takes every frame out, in order, leaving the burst empty (its capacity stays).
    pub fn drain(&mut self) -> std::vec::Drain<'_, PacketBuf> {
        self.frames.drain(..)
    }

    /// Keeps only the frames `keep` accepts; the others go back to their pools.
    pub fn retain(&mut self, keep: impl FnMut(&PacketBuf) -> bool) {
        self.frames.retain(keep);
    }

    /// Drops every frame (back to their pools).
    pub fn clear(&mut self) {
        self.frames.clear();
    }
}

/// Shortest frame a kernel port sends: an Ethernet header.
pub(crate) const MIN_TX_FRAME: usize = 14;

/// True when a frame of `len` bytes can go out of a kernel port whose slots hold `max`
/// bytes; otherwise counts the drop (the kernel would reject it, or it does not fit).
pub(crate) fn tx_length_ok(stats: &PortStats, len: usize, max: usize) -> bool {
    if len < MIN_TX_FRAME {
        stats.add_drops(DropCause::Runt, 1);
        return false;
    }
    if len > max {
        stats.add_drops(DropCause::Oversize, 1);
        return false;
    }
    true
}

/// A port that receives and sends Ethernet frames in bursts.
pub trait PacketPort {
    /// A name for logs and tables (the interface name for kernel ports).
    fn name(&self) -> &str;

    /// The layout of the buffers this port receives into and allocates for transmit.
    fn layout(&self) -> BufLayout;

    /// A free buffer from this port's pool, empty at the layout's headroom; `None` when the
    /// pool is exhausted.
    fn alloc_tx(&mut self) -> Option<PacketBuf>;

    /// Receives up to `burst.room()` frames, appending them to `burst`; returns how many.
    /// Never blocks.
    fn rx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Sends every frame of `burst` in order and leaves it empty; returns how many were sent.
    /// Frames that cannot be sent are dropped and counted by cause. Never blocks.
    fn tx_burst(&mut self, burst: &mut Burst) -> usize;

    /// The port's live counters, shareable with other threads.
    fn stats(&self) -> &Arc<PortStats>;

    /// A descriptor that polls readable when frames wait to be received, so an idle loop can
    /// block instead of spinning; `None` for a port that can only be polled (DPDK, the fabric).
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// A snapshot of the port's counters.
    fn counters(&self) -> PortCounters {
        self.stats().snapshot()
    }
}

/// A buffer from `pool` for a frame to send; an exhausted pool counts as a
/// [`DropCause::PoolEmpty`] drop in `stats`, since the frame never gets built. Every backend's
/// `alloc_tx` is this.
pub(crate) fn alloc_counting_empty(pool: &Pool, stats: &PortStats) -> Option<PacketBuf> {
    let frame = pool.alloc();
    if frame.is_none() {
        stats.add_drops(DropCause::PoolEmpty, 1);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Pool;

    #[test]
    fn kernel_tx_lengths_are_checked_at_both_ends() {
        let stats = PortStats::default();
        assert!(!tx_length_ok(&stats, 13, 100));
        assert!(tx_length_ok(&stats, 14, 100));
        assert!(tx_length_ok(&stats, 100, 100));
        assert!(!tx_length_ok(&stats, 101, 100));
        let counters = stats.snapshot();
        assert_eq!(counters.drops(DropCause::Runt), 1);
        assert_eq!(counters.drops(DropCause::Oversize), 1);
    }

    #[test]
    fn burst_refuses_frames_beyond_its_capacity() {
        let pool = Pool::new(BufLayout::new(0, 64, 0).unwrap(), 3).unwrap();
        let mut burst = Burst::with_capacity(2);
        burst.push(pool.alloc().unwrap()).unwrap();
        burst.push(pool.alloc().unwrap()).unwrap();
        assert!(burst.is_full());
        assert_eq!(burst.room(), 0);
        assert!(burst.push(pool.alloc().unwrap()).is_err());
        assert_eq!(pool.available(), 1, "refused frame went back to the pool");
        burst.clear();
        assert_eq!(pool.available(), 3);
        assert_eq!(burst.capacity(), 2);
    }
}
