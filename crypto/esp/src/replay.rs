//! Anti-replay window (RFC 4303 section 3.4.3) as an RFC 6479-style ring of 64-bit blocks, and
//! the receiver's inference of the high ESN bits (RFC 4303 appendix A2).

/// Smallest configurable window.
pub const MIN_WINDOW: u32 = 32;
/// Largest configurable window.
pub const MAX_WINDOW: u32 = 4096;

/// A sliding window of accepted sequence numbers.
///
/// Check with [`ReplayWindow::check`] before verifying the ICV and record with
/// [`ReplayWindow::accept`] only afterwards, so forged packets cannot move the window.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    size: u64,
    top: u64,
    blocks: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (the caller checks the 32..=4096 range).
    pub fn new(size: u32) -> Self {
        // One block more than the window needs, so sliding clears whole blocks only (RFC 6479).
        let count = (size.div_ceil(64) as usize + 1).next_power_of_two();
        ReplayWindow {
            size: u64::from(size),
            top: 0,
            blocks: vec![0; count].into_boxed_slice(),
        }
    }

    /// The configured window size.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// The highest accepted sequence number (0 before the first).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn locate(&self, seq: u64) -> (usize, u64) {
        let block = (seq >> 6) as usize & (self.blocks.len() - 1);
        (block, 1u64 << (seq & 63))
    }

    /// Whether `seq` may still be accepted (not seen, not left of the window). Does not change state.
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= self.size {
            return false;
        }
        let (block, bit) = self.locate(seq);
        self.blocks[block] & bit == 0
    }

    /// Records `seq` as received. Returns false (and changes nothing) if it is a replay.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let old_block = self.top >> 6;
            let new_block = seq >> 6;
            let clear = (new_block - old_block).min(self.blocks.len() as u64);
            for step in 1..=clear {
                let index = (old_block + step) as usize & (self.blocks.len() - 1);
                self.blocks[index] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = self.locate(seq);
        self.blocks[block] |= bit;
        true
    }

    /// Infers the full 64-bit sequence number of a packet carrying the low 32 bits `seq_lo`,
    /// relative to this window (RFC 4303 appendix A2.1).
    pub fn infer_esn(&self, seq_lo: u32) -> u64 {
        infer_esn(self.top, self.size.max(1), seq_lo)
    }
}

/// RFC 4303 appendix A2.1: pick the high half so the number lands in or right of the window.
pub fn infer_esn(top: u64, window: u64, seq_lo: u32) -> u64 {
    let top_lo = top as u32;
    let top_hi = (top >> 32) as u32;
    let bottom_lo = top_lo.wrapping_sub((window - 1) as u32);
    let seq_hi = if u64::from(top_lo) >= window - 1 {
        // The window lies in one 2^32 subspace; a number below it is from the next subspace.
        if seq_lo >= bottom_lo {
            top_hi
        } else {
            top_hi.wrapping_add(1)
        }
    } else if seq_lo >= bottom_lo && top_hi > 0 {
        // The window spans two subspaces and the number is in the lower one.
        top_hi - 1
    } else {
        top_hi
    };
    (u64::from(seq_hi) << 32) | u64::from(seq_lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_size_accepts_exactly_its_width() {
        for size in [32u32, 33, 64, 100, 128, 1000, 4095, 4096] {
            let mut w = ReplayWindow::new(size);
            let top = 10_000u64;
            assert!(w.accept(top));
            let oldest = top - u64::from(size) + 1;
            assert!(!w.check(oldest - 1), "size {size}");
            for seq in oldest..top {
                assert!(w.accept(seq), "size {size} seq {seq}");
                assert!(!w.check(seq), "size {size} seq {seq} twice");
            }
        }
    }

    #[test]
    fn sliding_far_clears_old_bits() {
        let mut w = ReplayWindow::new(64);
        for seq in 1..=64 {
            assert!(w.accept(seq));
        }
        assert!(w.accept(1_000_000));
        // Numbers whose bits were set long ago map to the same ring slots but are now fresh.
        for seq in 1_000_000 - 63..1_000_000 {
            assert!(w.check(seq), "seq {seq}");
        }
    }

    #[test]
    fn zero_is_never_accepted() {
        let mut w = ReplayWindow::new(32);
        assert!(!w.accept(0));
    }

    #[test]
    fn esn_inference_follows_rfc4303_appendix_a() {
        let hi = 5u64 << 32;
        // Window inside one subspace: numbers below it belong to the next subspace.
        assert_eq!(infer_esn(hi | 1000, 64, 990), hi | 990);
        assert_eq!(infer_esn(hi | 1000, 64, 2000), hi | 2000);
        assert_eq!(infer_esn(hi | 1000, 64, 10), (6u64 << 32) | 10);
        // Window spanning two subspaces: numbers near the top of u32 belong to the previous one.
        assert_eq!(
            infer_esn(hi | 10, 64, 0xffff_fff0),
            (4u64 << 32) | 0xffff_fff0
        );
        assert_eq!(infer_esn(hi | 10, 64, 5), hi | 5);
        assert_eq!(infer_esn(hi | 10, 64, 500), hi | 500);
        // At the very start there is no previous subspace.
        assert_eq!(infer_esn(3, 64, 0xffff_fff0), 0xffff_fff0);
    }
}
