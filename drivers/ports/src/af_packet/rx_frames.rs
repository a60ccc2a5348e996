//! TPACKET_V2 receive: one fixed slot per frame, each handed to user space (its `tp_status`
//! set to TP_STATUS_USER) as soon as the frame lands, and the socket polls readable then.

use std::sync::atomic::{AtomicU32, Ordering};

use super::slots::SlotRing;
use super::{RxContext, RxFrameMeta};
use crate::mmap::Mapping;
use crate::port::Burst;

/// Most bytes the kernel puts in front of a frame in a V2 receive slot: the header and the
/// sockaddr_ll, padded so the network header behind a MAC header of up to 16 bytes starts
/// 16-aligned (the kernel's `macoff`, 66 for Ethernet).
pub(super) const RX_SLOT_HEADROOM: usize =
    (libc::TPACKET2_HDRLEN + 16).next_multiple_of(libc::TPACKET_ALIGNMENT);

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Reads the `tpacket2_hdr` at the start of a receive slot; `None` unless the frame it
/// describes lies inside the slot. `next_offset` is 0: slots are fixed.
pub fn parse_rx_slot(slot: &[u8]) -> Option<RxFrameMeta> {
    let wire_len = u32_at(slot, std::mem::offset_of!(libc::tpacket2_hdr, tp_len))? as usize;
    let captured = u32_at(slot, std::mem::offset_of!(libc::tpacket2_hdr, tp_snaplen))? as usize;
    let mac = u16_at(slot, std::mem::offset_of!(libc::tpacket2_hdr, tp_mac))?;
    let data_start = usize::from(mac);
    if data_start < std::mem::size_of::<libc::tpacket2_hdr>()
        || data_start.checked_add(captured)? > slot.len()
    {
        return None;
    }
    Some(RxFrameMeta {
        data_start,
        captured,
        wire_len,
        next_offset: 0,
    })
}

/// The receive slots and the next one the kernel will hand over.
#[derive(Debug)]
pub(super) struct FrameRx {
    slots: SlotRing,
    next: usize,
}

impl FrameRx {
    pub(super) fn new(slots: SlotRing) -> Self {
        FrameRx { slots, next: 0 }
    }

    pub(super) fn slots(&self) -> &SlotRing {
        &self.slots
    }

    fn status<'a>(&self, ring: &'a Mapping) -> &'a AtomicU32 {
        let offset =
            self.slots.offset(self.next) + std::mem::offset_of!(libc::tpacket2_hdr, tp_status);
        // SAFETY: the status word lies inside the live mapping `ring` (the reference cannot
        // outlive it), is 4-aligned (slots are 16-aligned, the field is first), and the
        // kernel and we only ever access it atomically.
        unsafe { AtomicU32::from_ptr(ring.base.wrapping_add(offset).cast()) }
    }

    /// The status of the next slot, read with acquire.
    fn next_status(&self, ring: &Mapping) -> u32 {
        self.status(ring).load(Ordering::Acquire)
    }

    /// True when the kernel has handed the next slot over.
    pub(super) fn next_is_users(&self, ring: &Mapping) -> bool {
        self.next_status(ring) & libc::TP_STATUS_USER != 0
    }

    /// The next slot as bytes.
    fn slot_bytes<'a>(&self, ring: &'a Mapping) -> &'a [u8] {
        let slot = ring.base.wrapping_add(self.slots.offset(self.next));
        // SAFETY: the slot lies inside the live mapping and callers only use this once the
        // acquire load of its status saw TP_STATUS_USER: the kernel does not write the slot
        // again until `release_next` stores TP_STATUS_KERNEL, which callers do only after
        // the last use of the slice.
        unsafe { std::slice::from_raw_parts(slot.cast_const(), self.slots.frame_size) }
    }

    fn release_next(&mut self, ring: &Mapping) {
        self.status(ring)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = self.slots.next(self.next);
    }

    /// Moves the frames the kernel has handed over into `burst` (until it is full), giving
    /// each slot back at once.
    pub(super) fn receive(&mut self, ctx: &RxContext<'_>, burst: &mut Burst) {
        while !burst.is_full() {
            let status = self.next_status(ctx.ring);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            if status & libc::TP_STATUS_LOSING != 0 {
                ctx.sync_kernel_drops();
            }
            let slot = self.slot_bytes(ctx.ring);
            let frame = ctx.deliver(slot, parse_rx_slot(slot));
            self.release_next(ctx.ring);
            if let Some(frame) = frame {
                // Cannot fail: the loop runs only while the burst has room.
                let _ = burst.push(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(len: u32, snaplen: u32, mac: u16, size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        bytes[4..8].copy_from_slice(&len.to_ne_bytes());
        bytes[8..12].copy_from_slice(&snaplen.to_ne_bytes());
        bytes[12..14].copy_from_slice(&mac.to_ne_bytes());
        bytes
    }

    #[test]
    fn the_slot_headroom_covers_the_kernels_ethernet_offset() {
        // The kernel puts an Ethernet frame at TPACKET_ALIGN(52 + 16) - 14 = 66.
        assert_eq!(RX_SLOT_HEADROOM, 80);
        assert_eq!(RX_SLOT_HEADROOM - 14, 66);
    }

    #[test]
    fn v2_headers_are_read_at_the_kernels_offsets() {
        let meta = parse_rx_slot(&slot(1514, 1400, 66, 2048)).unwrap();
        assert_eq!(
            meta,
            RxFrameMeta {
                data_start: 66,
                captured: 1400,
                wire_len: 1514,
                next_offset: 0
            }
        );
    }

    #[test]
    fn v2_frames_outside_the_slot_or_over_the_header_are_refused() {
        assert_eq!(
            parse_rx_slot(&slot(2000, 1983, 66, 2048)),
            None,
            "past the end"
        );
        assert!(
            parse_rx_slot(&slot(2000, 1982, 66, 2048)).is_some(),
            "exactly fits"
        );
        assert_eq!(
            parse_rx_slot(&slot(60, 60, 8, 2048)),
            None,
            "inside the header"
        );
        assert_eq!(
            parse_rx_slot(&[0u8; 10]),
            None,
            "slot shorter than a header"
        );
    }
}
