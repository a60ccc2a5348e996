//! Anti-replay window arithmetic (RFC 4303 section 3.4.3), sans-io.
//!
//! The state is the highest sequence number accepted (`top`) and a ring of bits: the bit of
//! sequence number `s` is bit `s % RING_BITS`. Only numbers in `(top - window, top]` are
//! meaningful, and `window <= RING_BITS`, so two live numbers never share a bit.
//!
//! When the window moves, `top` is written before the bits of the new numbers are cleared.
//! A writer that dies half way therefore leaves stale bits that make new numbers look replayed
//! (packets dropped), never old bits cleared under an old `top` (a replay accepted).

use crate::facility::ReplayVerdict;

/// Number of 64-bit words in the ring.
pub const REPLAY_WORDS: usize = 16;
/// Bits in the ring, and the largest window a slot may use.
pub const MAX_REPLAY_WINDOW: u32 = (REPLAY_WORDS * 64) as u32;
const RING_BITS: u64 = MAX_REPLAY_WINDOW as u64;

/// The replay state of one SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayState {
    pub top: u64,
    pub words: [u64; REPLAY_WORDS],
}

impl Default for ReplayState {
    fn default() -> Self {
        ReplayState {
            top: 0,
            words: [0; REPLAY_WORDS],
        }
    }
}

/// Which bits of the ring changed in a check-and-set, so that a shared copy can be updated
/// word by word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayUpdate {
    pub verdict: ReplayVerdict,
    pub top_changed: bool,
    /// Bit i set: word i changed.
    pub words_changed: u32,
}

fn position(seq: u64) -> (usize, u64) {
    let bit = seq % RING_BITS;
    ((bit / 64) as usize, 1u64 << (bit % 64))
}

impl ReplayState {
    /// A state that rejects every number up to and including `top` (used after a restart, when
    /// only a lower bound of what was accepted is known).
    pub fn all_seen_up_to(top: u64) -> Self {
        ReplayState {
            top,
            words: [u64::MAX; REPLAY_WORDS],
        }
    }

    /// The verdict for `seq` under `window`, without changing anything.
    pub fn check(&self, seq: u64, window: u32) -> ReplayVerdict {
        if seq == 0 {
            return ReplayVerdict::Zero;
        }
        if seq > self.top {
            return ReplayVerdict::Accepted;
        }
        if self.top - seq >= u64::from(window) {
            return ReplayVerdict::TooOld;
        }
        let (word, mask) = position(seq);
        if self.words[word] & mask != 0 {
            ReplayVerdict::Replayed
        } else {
            ReplayVerdict::Accepted
        }
    }

    /// Checks `seq` and, when accepted, records it (moving the window if `seq` is ahead).
    pub fn check_and_set(&mut self, seq: u64, window: u32) -> ReplayUpdate {
        let verdict = self.check(seq, window);
        let mut update = ReplayUpdate {
            verdict,
            top_changed: false,
            words_changed: 0,
        };
        if verdict != ReplayVerdict::Accepted {
            return update;
        }
        if seq > self.top {
            let old_top = self.top;
            self.top = seq;
            update.top_changed = true;
            update.words_changed |= self.clear_between(old_top, seq);
        }
        let (word, mask) = position(seq);
        self.words[word] |= mask;
        update.words_changed |= 1 << word;
        update
    }

    /// Clears the bits of `(from, to]`; returns the mask of words touched.
    fn clear_between(&mut self, from: u64, to: u64) -> u32 {
        if to - from >= RING_BITS {
            self.words = [0; REPLAY_WORDS];
            return u32::MAX >> (32 - REPLAY_WORDS);
        }
        let mut changed = 0u32;
        let mut seq = from + 1;
        while seq <= to {
            let (word, mask) = position(seq);
            let bits_left_in_word = 64 - (seq % 64);
            let run = bits_left_in_word.min(to - seq + 1);
            let run_mask = if run == 64 {
                u64::MAX
            } else {
                ((1u64 << run) - 1) * mask
            };
            self.words[word] &= !run_mask;
            changed |= 1 << word;
            seq += run;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReplayVerdict::*;

    #[test]
    fn accepts_new_rejects_duplicates_and_old() {
        let mut state = ReplayState::default();
        assert_eq!(state.check_and_set(0, 64).verdict, Zero);
        assert_eq!(state.check_and_set(5, 64).verdict, Accepted);
        assert_eq!(state.check_and_set(5, 64).verdict, Replayed);
        assert_eq!(state.check_and_set(3, 64).verdict, Accepted);
        assert_eq!(state.check_and_set(3, 64).verdict, Replayed);
        assert_eq!(state.check_and_set(200, 64).verdict, Accepted);
        assert_eq!(state.check_and_set(136, 64).verdict, TooOld);
        assert_eq!(state.check_and_set(137, 64).verdict, Accepted);
        assert_eq!(state.check_and_set(137, 64).verdict, Replayed);
    }

    #[test]
    fn check_does_not_mark() {
        let mut state = ReplayState::default();
        assert_eq!(state.check(9, 32), Accepted);
        assert_eq!(state.check(9, 32), Accepted);
        assert_eq!(state.check_and_set(9, 32).verdict, Accepted);
        assert_eq!(state.check(9, 32), Replayed);
    }

    #[test]
    fn moving_the_window_clears_reused_bits() {
        let mut state = ReplayState::default();
        for seq in 1..=1024 {
            assert_eq!(state.check_and_set(seq, 1024).verdict, Accepted);
        }
        // Number 1025 shares its bit with 1, which must have been cleared.
        assert_eq!(state.check_and_set(1025, 1024).verdict, Accepted);
        assert_eq!(state.check_and_set(1025 + 70, 1024).verdict, Accepted);
        for seq in 1026..1095 {
            assert_eq!(state.check(seq, 1024), Accepted, "seq {seq}");
        }
    }

    #[test]
    fn restart_state_rejects_everything_below_the_bound() {
        let state = ReplayState::all_seen_up_to(500);
        assert_eq!(state.check(500, 128), Replayed);
        assert_eq!(state.check(450, 128), Replayed);
        assert_eq!(state.check(100, 128), TooOld);
        assert_eq!(state.check(501, 128), Accepted);
    }

    /// Reference model: the set of accepted numbers.
    #[test]
    fn matches_a_set_model() {
        use std::collections::BTreeSet;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for window in [32u32, 64, 100, 128, 1024] {
            let mut state = ReplayState::default();
            let mut seen = BTreeSet::new();
            let mut top = 0u64;
            for _ in 0..20_000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let step = rng % 300;
                let seq = (top + 40).saturating_sub(step).max(1);
                let expected = if seq + u64::from(window) <= top {
                    TooOld
                } else if seen.contains(&seq) {
                    Replayed
                } else {
                    Accepted
                };
                assert_eq!(state.check_and_set(seq, window).verdict, expected);
                if expected == Accepted {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }
}
