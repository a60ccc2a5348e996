//! Anti-replay window arithmetic (RFC 4303 section 3.4.3), sans-io.
//!
//! Two forms of the same window:
//!
//! * [`ReplayState`], a plain value owned by one thread (the networked CF server keeps one per
//!   slot behind its lock, and tests use it as the reference model). The state is the highest
//!   sequence number accepted (`top`) and a ring of bits: the bit of sequence number `s` is bit
//!   `s % RING_BITS`. Only numbers in `(top - window, top]` are meaningful, and
//!   `window <= RING_BITS`, so two live numbers never share a bit.
//! * [`SharedWindow`], the same window in atomics that several processes update at once without a
//!   lock (the shared-memory region). See its documentation for the argument that every number is
//!   accepted at most once.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::facility::ReplayVerdict;

/// Number of 64-bit words in the ring of a [`ReplayState`].
pub const REPLAY_WORDS: usize = 64;
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
    pub fn check_and_set(&mut self, seq: u64, window: u32) -> ReplayVerdict {
        let verdict = self.check(seq, window);
        if verdict != ReplayVerdict::Accepted {
            return verdict;
        }
        if seq > self.top {
            let old_top = self.top;
            self.top = seq;
            self.clear_between(old_top, seq);
        }
        let (word, mask) = position(seq);
        self.words[word] |= mask;
        verdict
    }

    /// Clears the bits of `(from, to]`.
    fn clear_between(&mut self, from: u64, to: u64) {
        if to - from >= RING_BITS {
            self.words = [0; REPLAY_WORDS];
            return;
        }
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
            seq += run;
        }
    }
}

/// Sequence numbers marked by one word of a [`SharedWindow`]: the low half of the word holds
/// their bits, the high half a tag naming which block of numbers the bits belong to.
const SHARED_BLOCK: u64 = 32;
/// Words in a [`SharedWindow`] (17 cache lines). A window of `w` numbers spans at most
/// `w / 32 + 1` blocks; with at least one block more than that, a word is only ever reused by a
/// block whose numbers are all out of the window of the number that reuses it.
pub const SHARED_WORDS: usize = 136;
const SHARED_RING: u64 = SHARED_WORDS as u64;
const BLOCK_BITS_MASK: u64 = (1 << SHARED_BLOCK) - 1;

// The reuse argument of `SharedWindow` needs `SHARED_WORDS * 32 >= MAX_REPLAY_WINDOW + 32`.
const _: () = assert!(SHARED_RING * SHARED_BLOCK >= MAX_REPLAY_WINDOW as u64 + SHARED_BLOCK);

/// Where a number lives in a [`SharedWindow`].
#[derive(Debug, Clone, Copy)]
struct SharedPosition {
    word: usize,
    /// The high half of a word whose bits belong to this number's block.
    tag: u64,
    bit: u64,
}

fn shared_position(seq: u64) -> SharedPosition {
    let block = seq / SHARED_BLOCK;
    SharedPosition {
        word: (block % SHARED_RING) as usize,
        // Truncated to 32 bits: two blocks share word and tag only 2^32 * 136 blocks apart.
        tag: (block / SHARED_RING) << SHARED_BLOCK,
        bit: 1 << (seq % SHARED_BLOCK),
    }
}

fn tag_of(word: u64) -> u64 {
    word & !BLOCK_BITS_MASK
}

/// `seq` lies left of the window that ends at `top`.
fn too_old(seq: u64, top: u64, window: u32) -> bool {
    seq <= top && top - seq >= u64::from(window)
}

/// An anti-replay window in shared atomics, checked and updated by several processes at once
/// without a lock: `top` (the highest number accepted or being accepted) and
/// [`SHARED_WORDS`] tagged words. A number's block is `seq / 32`; the block lives in word
/// `block % 136`, whose high half holds the block's tag (`block / 136`) and whose low half the
/// bits of the block's accepted numbers. A word holding another block's tag holds nothing for
/// this block, so moving the window never clears bits: the first number accepted in a block
/// replaces the older block's word in one compare-and-swap.
///
/// # Every number is accepted at most once
///
/// * Check-and-set raises `top` to `seq` *before* it marks the bit, and marks with a
///   compare-and-swap (release). A reader that loads a word (acquire) and then `top` therefore
///   sees a `top` at least as high as every number marked in that word.
/// * A word moves only to a *newer* block: when the loaded word holds another tag and `seq` is
///   inside the window of the `top` loaded after it, the word's block cannot be newer (a newer
///   block sharing the word is at least 136 blocks ahead, which would put `seq` more than
///   `window` behind `top`), so it is older, and every number in it is more than `window` behind
///   `seq <= top`.
/// * So once a number's bit is set, its word either still holds its block with the bit set
///   (`Replayed`) or holds a newer block, and then `top` is more than `window` ahead (`TooOld`).
///   No sequence of updates brings the bit back to clear.
///
/// Tags are 32 bits, so a word untouched while the numbers moved on by 2^32 * 136 * 32 (about
/// 1.9 * 10^13) could look like it holds the new block's bits. The only effect is numbers
/// wrongly reported `Replayed` (drops); an alias of a *newer* block is caught by `top` as above.
///
/// A process that dies between raising `top` and marking leaves a window that moved for a
/// number nobody accepted: older numbers may be dropped, nothing is accepted twice.
///
/// # The pre-check may be stale
///
/// [`SharedWindow::check`] is two loads and no retry: against a concurrent check-and-set it may
/// answer from before or after it. That is safe because the check only decides whether the
/// distributor forwards the packet; the target's [`SharedWindow::check_and_set`], made only after
/// the ICV verified (design invariant 3), is the authoritative one. A stale `Accepted` forwards a
/// packet the target then rejects; a stale `Replayed`/`TooOld` can only come from a number another
/// process really accepted (bits and `top` only ever move forward), so it drops a packet the
/// target would have rejected, or one that fell out of the window meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct SharedWindow<'a> {
    top: &'a AtomicU64,
    words: &'a [AtomicU64; SHARED_WORDS],
}

impl<'a> SharedWindow<'a> {
    /// The window kept in `top` and `words` (all zero: nothing accepted yet).
    pub fn new(top: &'a AtomicU64, words: &'a [AtomicU64; SHARED_WORDS]) -> Self {
        SharedWindow { top, words }
    }

    /// Forgets everything (a slot given to a new SA). Not for a window in use.
    pub fn reset(&self) {
        for word in self.words {
            word.store(0, Ordering::Relaxed);
        }
        self.top.store(0, Ordering::Release);
    }

    /// The verdict for `seq` under `window`, without changing anything; may be stale against a
    /// concurrent [`Self::check_and_set`] (see the type's documentation for why that is safe).
    pub fn check(&self, seq: u64, window: u32) -> ReplayVerdict {
        if seq == 0 {
            return ReplayVerdict::Zero;
        }
        let top = self.top.load(Ordering::Acquire);
        if seq > top {
            return ReplayVerdict::Accepted;
        }
        if too_old(seq, top, window) {
            return ReplayVerdict::TooOld;
        }
        let at = shared_position(seq);
        let word = self.words[at.word].load(Ordering::Acquire);
        if tag_of(word) == at.tag && word & at.bit != 0 {
            ReplayVerdict::Replayed
        } else {
            ReplayVerdict::Accepted
        }
    }

    /// Checks `seq` and, when accepted, marks it; call only after the ICV verified.
    pub fn check_and_set(&self, seq: u64, window: u32) -> ReplayVerdict {
        if seq == 0 {
            return ReplayVerdict::Zero;
        }
        let top = self.top.load(Ordering::Acquire);
        if too_old(seq, top, window) {
            return ReplayVerdict::TooOld;
        }
        if seq > top {
            // Before the mark: see "Every number is accepted at most once".
            self.top.fetch_max(seq, Ordering::AcqRel);
        }
        self.mark(seq, window)
    }

    /// The second half of [`Self::check_and_set`], once `top >= seq`: sets the bit unless the
    /// number is used or has meanwhile fallen out of the window. Another process may have moved
    /// the window any distance since `top` was read, which is why `top` is read again here.
    fn mark(&self, seq: u64, window: u32) -> ReplayVerdict {
        let at = shared_position(seq);
        let cell = &self.words[at.word];
        let mut word = cell.load(Ordering::Acquire);
        loop {
            if too_old(seq, self.top.load(Ordering::Acquire), window) {
                return ReplayVerdict::TooOld;
            }
            let marked = if tag_of(word) == at.tag {
                if word & at.bit != 0 {
                    return ReplayVerdict::Replayed;
                }
                word | at.bit
            } else {
                at.tag | at.bit
            };
            match cell.compare_exchange_weak(word, marked, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return ReplayVerdict::Accepted,
                Err(current) => word = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReplayVerdict::*;

    #[test]
    fn accepts_new_rejects_duplicates_and_old() {
        let mut state = ReplayState::default();
        assert_eq!(state.check_and_set(0, 64), Zero);
        assert_eq!(state.check_and_set(5, 64), Accepted);
        assert_eq!(state.check_and_set(5, 64), Replayed);
        assert_eq!(state.check_and_set(3, 64), Accepted);
        assert_eq!(state.check_and_set(3, 64), Replayed);
        assert_eq!(state.check_and_set(200, 64), Accepted);
        assert_eq!(state.check_and_set(136, 64), TooOld);
        assert_eq!(state.check_and_set(137, 64), Accepted);
        assert_eq!(state.check_and_set(137, 64), Replayed);
    }

    #[test]
    fn check_does_not_mark() {
        let mut state = ReplayState::default();
        assert_eq!(state.check(9, 32), Accepted);
        assert_eq!(state.check(9, 32), Accepted);
        assert_eq!(state.check_and_set(9, 32), Accepted);
        assert_eq!(state.check(9, 32), Replayed);
    }

    #[test]
    fn moving_the_window_clears_reused_bits() {
        let mut state = ReplayState::default();
        for seq in 1..=1024 {
            assert_eq!(state.check_and_set(seq, 1024), Accepted);
        }
        // Number 1025 shares its bit with 1, which must have been cleared.
        assert_eq!(state.check_and_set(1025, 1024), Accepted);
        assert_eq!(state.check_and_set(1025 + 70, 1024), Accepted);
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
        for window in [32u32, 64, 100, 128, 1024, 4096] {
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
                assert_eq!(state.check_and_set(seq, window), expected);
                if expected == Accepted {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }

    /// Backing store for a [`SharedWindow`] in a test.
    struct Cells {
        top: AtomicU64,
        words: [AtomicU64; SHARED_WORDS],
    }

    impl Cells {
        fn new() -> Self {
            Cells {
                top: AtomicU64::new(0),
                words: std::array::from_fn(|_| AtomicU64::new(0)),
            }
        }

        fn window(&self) -> SharedWindow<'_> {
            SharedWindow::new(&self.top, &self.words)
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Alone, the shared window answers exactly as the plain ring, check and check-and-set,
    /// including jumps far ahead (which leave old tags in the words).
    #[test]
    fn shared_window_matches_the_plain_ring() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        for window in [1u32, 32, 33, 64, 128, 1000, 1024, 4095, 4096] {
            let cells = Cells::new();
            let shared = cells.window();
            let mut plain = ReplayState::default();
            for round in 0..40_000u32 {
                let draw = xorshift(&mut rng);
                let spread = u64::from(window) + 200;
                let seq = match draw % 100 {
                    0 => plain.top + 5000 + draw % 100_000,
                    1..=50 => (plain.top + 3).saturating_sub(draw % spread),
                    _ => plain.top + 1 + draw % 40,
                };
                assert_eq!(
                    shared.check(seq, window),
                    plain.check(seq, window),
                    "check of {seq}, window {window}, round {round}"
                );
                assert_eq!(
                    shared.check_and_set(seq, window),
                    plain.check_and_set(seq, window),
                    "check-and-set of {seq}, window {window}, round {round}"
                );
            }
        }
    }

    #[test]
    fn shared_window_edges_at_4096() {
        let cells = Cells::new();
        let shared = cells.window();
        assert_eq!(shared.check_and_set(0, 4096), Zero);
        assert_eq!(shared.check(0, 4096), Zero);
        assert_eq!(shared.check_and_set(10_000, 4096), Accepted);
        // (top - 4096, top] is the window: 5905 is its left edge, 5904 just outside.
        assert_eq!(shared.check(5905, 4096), Accepted);
        assert_eq!(shared.check(5904, 4096), TooOld);
        assert_eq!(shared.check_and_set(5904, 4096), TooOld);
        assert_eq!(shared.check_and_set(5905, 4096), Accepted);
        assert_eq!(shared.check_and_set(5905, 4096), Replayed);
        assert_eq!(shared.check(5905, 4096), Replayed);
        // Moving the top by one pushes the left edge out.
        assert_eq!(shared.check_and_set(10_001, 4096), Accepted);
        assert_eq!(shared.check(5905, 4096), TooOld);
        assert_eq!(shared.check_and_set(5906, 4096), Accepted);
        // Numbers near the end of the 64-bit space.
        assert_eq!(shared.check_and_set(u64::MAX, 4096), Accepted);
        assert_eq!(shared.check_and_set(u64::MAX, 4096), Replayed);
        assert_eq!(shared.check_and_set(u64::MAX - 4095, 4096), Accepted);
        assert_eq!(shared.check_and_set(u64::MAX - 4096, 4096), TooOld);
    }

    /// A process that read `top` while its number was in the window and is delayed before
    /// marking: meanwhile the window moved on and a newer block took over the number's word.
    /// The late mark must not replace that newer block (its numbers would become new again).
    #[test]
    fn a_delayed_mark_never_replaces_a_newer_block() {
        let cells = Cells::new();
        let shared = cells.window();
        let window = 4096;
        let old = 100;
        assert_eq!(shared.check_and_set(old + 1, window), Accepted);
        // The delayed process checked `old` here (inside the window) and then stalled.
        assert_eq!(shared.check(old, window), Accepted);
        let newer = old + SHARED_RING * SHARED_BLOCK;
        assert_eq!(shared_position(newer).word, shared_position(old).word);
        assert_eq!(shared.check_and_set(newer, window), Accepted);
        assert_eq!(shared.mark(old, window), TooOld);
        assert_eq!(shared.check_and_set(newer, window), Replayed);
    }

    #[test]
    fn shared_window_reset_forgets() {
        let cells = Cells::new();
        let shared = cells.window();
        assert_eq!(shared.check_and_set(77, 64), Accepted);
        shared.reset();
        assert_eq!(shared.check(77, 64), Accepted);
        assert_eq!(shared.check_and_set(3, 64), Accepted);
        assert_eq!(shared.check_and_set(3, 64), Replayed);
    }

    /// Threads race on overlapping numbers, out of order and far ahead, while others pre-check:
    /// no number is accepted twice, and every accepted number is then seen as used.
    #[test]
    fn racing_threads_accept_each_number_at_most_once() {
        // One race is short; several make a lost mark very likely to show.
        for _ in 0..8 {
            race_threads_once();
        }
    }

    fn race_threads_once() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 30_000;
        let cells = Cells::new();
        let window = 4096;
        // Start the setters together, so that they collide rather than run one after another.
        let start = std::sync::Barrier::new(THREADS as usize);
        let accepted: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let checkers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let shared = cells.window();
                        let mut seq = 1;
                        for _ in 0..PER_THREAD {
                            seq = (seq * 7 + 3) % (PER_THREAD * 2) + 1;
                            std::hint::black_box(shared.check(seq, window));
                        }
                    })
                })
                .collect();
            let setters: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (cells, start) = (&cells, &start);
                    scope.spawn(move || {
                        let shared = cells.window();
                        start.wait();
                        let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (thread + 1);
                        let mut mine = Vec::new();
                        for i in 1..=PER_THREAD {
                            // Everyone walks the same numbers with jitter, so they collide.
                            let jitter = xorshift(&mut rng) % 4;
                            let seq = (i + jitter).saturating_sub(2).max(1);
                            if shared.check_and_set(seq, window) == Accepted {
                                mine.push(seq);
                            }
                        }
                        mine
                    })
                })
                .collect();
            for checker in checkers {
                checker.join().unwrap();
            }
            setters.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let all: Vec<u64> = accepted.into_iter().flatten().collect();
        let unique: std::collections::BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a number was accepted twice");
        assert!(unique.len() as u64 > PER_THREAD / 2, "too few accepted");
        let shared = cells.window();
        for seq in unique {
            assert_ne!(shared.check_and_set(seq, window), Accepted, "{seq}");
        }
    }
}
