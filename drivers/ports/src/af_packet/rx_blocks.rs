//! TPACKET_V3 receive: the kernel packs many frames into a block and hands the whole block
//! over when it is full or when its retire timer (at least 1 ms) fires; the socket polls
//! readable only for a handed-over block. Good for batching, costly for latency at low load.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{RxContext, RxFrameMeta};
use crate::counters::DropCause;
use crate::mmap::Mapping;
use crate::port::Burst;

/// Position in the receive block currently being read.
#[derive(Debug, Clone, Copy)]
struct BlockCursor {
    remaining: u32,
    offset: usize,
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

/// The receive blocks, the one being read and where in it.
#[derive(Debug)]
pub(super) struct BlockRx {
    block_size: usize,
    block_count: usize,
    current: usize,
    cursor: Option<BlockCursor>,
}

impl BlockRx {
    pub(super) fn new(block_size: usize, block_count: usize) -> Self {
        BlockRx {
            block_size,
            block_count,
            current: 0,
            cursor: None,
        }
    }

    pub(super) fn block_count(&self) -> usize {
        self.block_count
    }

    fn block_ptr(&self, ring: &Mapping, block: usize) -> *mut libc::tpacket_block_desc {
        // In bounds: block < block_count, and the receive ring is the mapping's first part.
        ring.base.wrapping_add(block * self.block_size).cast()
    }

    fn block_status<'a>(&self, ring: &'a Mapping, block: usize) -> &'a AtomicU32 {
        let desc = self.block_ptr(ring, block);
        // SAFETY: the block descriptor lies inside the live mapping `ring`, `block_status`
        // is a 4-aligned u32 the kernel and we only ever access atomically, and the
        // reference cannot outlive the mapping.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status)) }
    }

    /// True when a block is being read or the kernel has handed the next one over.
    pub(super) fn has_ready(&self, ring: &Mapping) -> bool {
        self.cursor.is_some()
            || self
                .block_status(ring, self.current)
                .load(Ordering::Acquire)
                & libc::TP_STATUS_USER
                != 0
    }

    /// Starts reading the current block if the kernel has handed it over.
    fn open_block(&self, ctx: &RxContext<'_>) -> Option<BlockCursor> {
        let status = self
            .block_status(ctx.ring, self.current)
            .load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        if status & libc::TP_STATUS_LOSING != 0 {
            ctx.sync_kernel_drops();
        }
        let desc = self.block_ptr(ctx.ring, self.current);
        // SAFETY: the acquire load above saw TP_STATUS_USER, so the kernel has finished
        // writing this block header and will not touch the block until we release it.
        let header = unsafe { std::ptr::addr_of!((*desc).hdr.bh1).read() };
        Some(BlockCursor {
            remaining: header.num_pkts,
            offset: header.offset_to_first_pkt as usize,
        })
    }

    fn release_block(&mut self, ring: &Mapping) {
        self.block_status(ring, self.current)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.current = (self.current + 1) % self.block_count;
        self.cursor = None;
    }

    /// The current receive block as bytes.
    fn block_bytes<'a>(&self, ring: &'a Mapping) -> &'a [u8] {
        let block = self.block_ptr(ring, self.current).cast::<u8>();
        // SAFETY: the block lies inside the live mapping, and callers only use this while
        // the kernel has handed the block to us (TP_STATUS_USER seen with acquire): the
        // kernel does not write it until `release_block`, which callers run only after the
        // last use of the slice.
        unsafe { std::slice::from_raw_parts(block.cast_const(), self.block_size) }
    }

    /// Reads the frame at `cursor` into a pool buffer; returns the next cursor and the frame
    /// (or `None` with the drop counted). A malformed header ends the block.
    fn take_frame(
        &self,
        ctx: &RxContext<'_>,
        cursor: BlockCursor,
    ) -> (Option<BlockCursor>, Option<crate::buf::PacketBuf>) {
        let block = self.block_bytes(ctx.ring);
        let Some(meta) = parse_rx_frame(block, cursor.offset) else {
            ctx.stats
                .add_drops(DropCause::Truncated, u64::from(cursor.remaining));
            return (None, None);
        };
        let next = (cursor.remaining > 1).then(|| BlockCursor {
            remaining: cursor.remaining - 1,
            offset: cursor.offset + meta.next_offset,
        });
        (next, ctx.deliver(block, Some(meta)))
    }

    /// Moves frames of handed-over blocks into `burst` (until it is full), giving each block
    /// back once read.
    pub(super) fn receive(&mut self, ctx: &RxContext<'_>, burst: &mut Burst) {
        while !burst.is_full() {
            let cursor = match self.cursor.or_else(|| self.open_block(ctx)) {
                Some(cursor) if cursor.remaining > 0 => cursor,
                Some(_) => {
                    self.release_block(ctx.ring);
                    continue;
                }
                None => break,
            };
            let (next, frame) = self.take_frame(ctx, cursor);
            match next {
                Some(next) => self.cursor = Some(next),
                None => self.release_block(ctx.ring),
            }
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
}
