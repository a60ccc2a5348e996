//! The transmit ring: fixed slots under either TPACKET version (the socket has one version for
//! both rings), each frame copied once into a slot and the kernel kicked once per burst.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::slots::SlotRing;
use super::Version;
use crate::buf::PacketBuf;
use crate::counters::{DropCause, PortStats};
use crate::mmap::Mapping;
use crate::port::Burst;

/// Offsets of the fields a sender fills in, in the version's frame header.
#[derive(Debug, Clone, Copy)]
struct TxHeader {
    status: usize,
    len: usize,
    snaplen: usize,
    /// `tp_next_offset`, which V3 wants zero; V2 has no such field.
    next_offset: Option<usize>,
    /// Where frame data starts: the aligned header, without the sockaddr_ll the receive side has.
    data: usize,
}

impl TxHeader {
    const fn of(version: Version) -> Self {
        let sockaddr = std::mem::size_of::<libc::sockaddr_ll>();
        match version {
            Version::V2 => TxHeader {
                status: std::mem::offset_of!(libc::tpacket2_hdr, tp_status),
                len: std::mem::offset_of!(libc::tpacket2_hdr, tp_len),
                snaplen: std::mem::offset_of!(libc::tpacket2_hdr, tp_snaplen),
                next_offset: None,
                data: libc::TPACKET2_HDRLEN - sockaddr,
            },
            Version::V3 => TxHeader {
                status: std::mem::offset_of!(libc::tpacket3_hdr, tp_status),
                len: std::mem::offset_of!(libc::tpacket3_hdr, tp_len),
                snaplen: std::mem::offset_of!(libc::tpacket3_hdr, tp_snaplen),
                next_offset: Some(std::mem::offset_of!(libc::tpacket3_hdr, tp_next_offset)),
                data: libc::TPACKET3_HDRLEN - sockaddr,
            },
        }
    }
}

/// Where frame data starts in a transmit slot of `version`.
pub(super) const fn tx_data_offset(version: Version) -> usize {
    TxHeader::of(version).data
}

/// The transmit ring's slots and the next one to fill.
#[derive(Debug)]
pub(super) struct TxRing {
    slots: SlotRing,
    header: TxHeader,
    next: usize,
}

impl TxRing {
    pub(super) fn new(slots: SlotRing, version: Version) -> Self {
        TxRing {
            slots,
            header: TxHeader::of(version),
            next: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Largest frame a slot holds.
    pub(super) fn max_frame(&self) -> usize {
        self.slots.frame_size - self.header.data
    }

    fn slot_ptr(&self, ring: &Mapping, slot: usize) -> *mut u8 {
        // In bounds: slot < len() and the transmit ring lies inside the mapping.
        ring.base.wrapping_add(self.slots.offset(slot))
    }

    fn status<'a>(&self, ring: &'a Mapping, slot: usize) -> &'a AtomicU32 {
        let word = self.slot_ptr(ring, slot).wrapping_add(self.header.status);
        // SAFETY: the status word lies inside the live mapping `ring` (the reference cannot
        // outlive it), is 4-aligned (slots are 16-aligned, the field offset is a multiple of
        // 4), and the kernel and we only ever access it atomically.
        unsafe { AtomicU32::from_ptr(word.cast()) }
    }

    /// True when the next slot is free. A slot the kernel rejected (PACKET_LOSS marks it
    /// WRONG_FORMAT and moves on) is counted once and taken back.
    fn next_free(&self, ring: &Mapping, stats: &PortStats) -> bool {
        let status = self.status(ring, self.next);
        match status.load(Ordering::Acquire) {
            libc::TP_STATUS_AVAILABLE => true,
            libc::TP_STATUS_WRONG_FORMAT => {
                stats.add_drops(DropCause::TxRejected, 1);
                status.store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Copies `frame` (at most `max_frame()` bytes) into the next slot, which must be free,
    /// and hands the slot to the kernel.
    fn write_next(&mut self, ring: &Mapping, frame: &PacketBuf) {
        let slot = self.slot_ptr(ring, self.next);
        let len = frame.len();
        let header = self.header;
        // SAFETY: the slot is free (status AVAILABLE, seen with acquire), so the kernel does
        // not read it until we publish SEND_REQUEST; the header fields lie inside the slot
        // at 4-aligned offsets; `len` fits the slot after the header (checked by the caller);
        // source and destination cannot overlap (pool vs mapping).
        unsafe {
            std::ptr::copy_nonoverlapping(frame.data().as_ptr(), slot.add(header.data), len);
            slot.add(header.len).cast::<u32>().write(len as u32);
            slot.add(header.snaplen).cast::<u32>().write(len as u32);
            if let Some(next_offset) = header.next_offset {
                slot.add(next_offset).cast::<u32>().write(0);
            }
        }
        self.status(ring, self.next)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = self.slots.next(self.next);
    }

    /// Queues every frame of `burst` that fits a free slot, kicking the kernel when the ring
    /// fills and once at the end; the rest are dropped and counted. Returns (frames, bytes).
    pub(super) fn send(
        &mut self,
        ring: &Mapping,
        stats: &PortStats,
        socket: RawFd,
        burst: &mut Burst,
    ) -> (u64, u64) {
        let max_frame = self.max_frame();
        let (mut queued, mut bytes, mut unkicked) = (0u64, 0u64, 0usize);
        for frame in burst.drain() {
            if !crate::port::tx_length_ok(stats, frame.len(), max_frame) {
                continue;
            }
            if !self.next_free(ring, stats) && unkicked > 0 {
                kick(socket);
                unkicked = 0;
            }
            if !self.next_free(ring, stats) {
                stats.add_drops(DropCause::TxRingFull, 1);
                continue;
            }
            self.write_next(ring, &frame);
            unkicked += 1;
            queued += 1;
            bytes += frame.len() as u64;
        }
        if unkicked > 0 {
            kick(socket);
        }
        (queued, bytes)
    }
}

/// Asks the kernel to send every slot marked SEND_REQUEST, without waiting.
fn kick(socket: RawFd) {
    // SAFETY: a zero-length send with null buffer and address is how a TX_RING socket is
    // told to flush its ring; the kernel reads nothing from our memory but the ring.
    // A failure (for example ENOBUFS) leaves the slots queued for the next kick.
    unsafe {
        libc::sendto(
            socket,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_data_follows_the_versions_aligned_header() {
        assert_eq!(tx_data_offset(Version::V2), 32);
        assert_eq!(tx_data_offset(Version::V3), 48);
        let v2 = TxHeader::of(Version::V2);
        assert_eq!(
            (v2.status, v2.len, v2.snaplen, v2.next_offset),
            (0, 4, 8, None)
        );
        let v3 = TxHeader::of(Version::V3);
        assert_eq!(
            (v3.status, v3.len, v3.snaplen, v3.next_offset),
            (20, 16, 12, Some(0))
        );
    }
}
