//! Fixed-size frame slots grouped in blocks: the layout of a TPACKET_V2 receive ring and of
//! every transmit ring.

/// Where the slots of one ring lie in the port's mapping. A slot never spans two blocks (the
/// kernel's rule), so each block holds `frames_per_block` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotRing {
    /// Offset of the ring's first block in the mapping.
    pub(super) start: usize,
    pub(super) frame_size: usize,
    pub(super) frames_per_block: usize,
    pub(super) block_size: usize,
    pub(super) block_count: usize,
}

impl SlotRing {
    /// A ring at `start` of at least `min_frames` slots of `frame_size` bytes, in blocks of
    /// `block_size` bytes (`block_size >= frame_size > 0`); the last block is filled up.
    pub(super) fn new(
        start: usize,
        frame_size: usize,
        block_size: usize,
        min_frames: usize,
    ) -> Self {
        let frames_per_block = block_size / frame_size;
        SlotRing {
            start,
            frame_size,
            frames_per_block,
            block_size,
            block_count: min_frames.div_ceil(frames_per_block),
        }
    }

    /// Number of slots.
    pub(super) fn len(&self) -> usize {
        self.frames_per_block * self.block_count
    }

    /// Bytes the ring takes in the mapping.
    pub(super) fn bytes(&self) -> usize {
        self.block_size * self.block_count
    }

    /// Offset of slot `slot` (below `len()`) in the mapping.
    pub(super) fn offset(&self, slot: usize) -> usize {
        let block = slot / self.frames_per_block;
        let within = slot % self.frames_per_block;
        self.start + block * self.block_size + within * self.frame_size
    }

    /// The slot after `slot`, wrapping at the end of the ring.
    pub(super) fn next(&self, slot: usize) -> usize {
        (slot + 1) % self.len()
    }

    /// The PACKET_RX_RING / PACKET_TX_RING request describing this ring; `None` when a count
    /// does not fit the kernel's 32-bit fields.
    pub(super) fn request(&self) -> Option<libc::tpacket_req> {
        Some(libc::tpacket_req {
            tp_block_size: u32::try_from(self.block_size).ok()?,
            tp_block_nr: u32::try_from(self.block_count).ok()?,
            tp_frame_size: u32::try_from(self.frame_size).ok()?,
            tp_frame_nr: u32::try_from(self.len()).ok()?,
        })
    }
}

/// Smallest slot size of at least `bytes`: a power of two up to a page, so slots tile a page
/// exactly, and a whole number of pages beyond. Both are multiples of TPACKET_ALIGNMENT.
pub(super) fn slot_size_for(bytes: usize, page: usize) -> usize {
    let bytes = bytes.max(libc::TPACKET_ALIGNMENT);
    if bytes <= page {
        bytes.next_power_of_two()
    } else {
        bytes.div_ceil(page) * page
    }
}

/// The block size for slots of `frame_size` bytes: one page when slots tile a page, else one
/// slot (a whole number of pages). Either way a multiple of both the page and the slot size.
pub(super) fn block_size_for(frame_size: usize, page: usize) -> usize {
    frame_size.max(page)
}

/// True when `frame_size` can be a slot size: a multiple of TPACKET_ALIGNMENT that either
/// divides the page size or is a whole number of pages.
pub(super) fn slot_size_ok(frame_size: usize, page: usize) -> bool {
    frame_size > 0
        && frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
        && (page.is_multiple_of(frame_size) || frame_size.is_multiple_of(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn slot_sizes_tile_pages_or_are_whole_pages() {
        assert_eq!(slot_size_for(80 + 1514, PAGE), 2048);
        assert_eq!(slot_size_for(80 + 1538, PAGE), 2048);
        assert_eq!(slot_size_for(80 + 256, PAGE), 512);
        assert_eq!(slot_size_for(80 + 9014, PAGE), 3 * PAGE);
        assert_eq!(slot_size_for(PAGE, PAGE), PAGE);
        for bytes in [1, 15, 17, 1000, 4097, 20000] {
            let size = slot_size_for(bytes, PAGE);
            assert!(size >= bytes, "{bytes}");
            assert!(slot_size_ok(size, PAGE), "{bytes} -> {size}");
            let block = block_size_for(size, PAGE);
            assert!(block.is_multiple_of(PAGE) && block.is_multiple_of(size));
        }
        assert!(!slot_size_ok(1600, PAGE));
        assert!(!slot_size_ok(6144, PAGE));
        assert!(!slot_size_ok(0, PAGE));
    }

    #[test]
    fn slots_never_span_blocks_and_counts_round_up_to_whole_blocks() {
        let ring = SlotRing::new(1 << 20, 2048, PAGE, 5);
        assert_eq!(
            (ring.block_count, ring.len(), ring.bytes()),
            (3, 6, 3 * PAGE)
        );
        assert_eq!(ring.offset(0), 1 << 20);
        assert_eq!(ring.offset(1), (1 << 20) + 2048);
        assert_eq!(ring.offset(2), (1 << 20) + PAGE);
        assert_eq!(ring.next(5), 0);
        // A block with room left over after its last slot: the next slot starts a new block.
        let ring = SlotRing::new(0, 1536, PAGE, 4);
        assert_eq!(ring.frames_per_block, 2);
        assert_eq!(ring.offset(2), PAGE);
        let req = ring.request().unwrap();
        assert_eq!(
            (
                req.tp_block_size,
                req.tp_block_nr,
                req.tp_frame_size,
                req.tp_frame_nr
            ),
            (4096, 2, 1536, 4)
        );
    }
}
