//! Run-to-completion polling: a node takes a burst in, processes every packet to the end, sends
//! bursts out, and repeats; one node per core, pinned when asked. Per-core counters are plain
//! atomics that only the loop's own thread writes (once per burst), so readers never take a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Something a polling loop drives.
pub trait PollNode {
    /// Does one round at `now_us`: receive bursts, process them, send. Returns the packets handled.
    fn poll(&mut self, now_us: u64) -> usize;
    /// The loop's counters.
    fn loop_stats(&self) -> &Arc<LoopStats>;
}

/// Per-core loop counters.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Rounds that found no packet.
    pub idle_rounds: AtomicU64,
    /// Packets handled.
    pub packets: AtomicU64,
}

impl LoopStats {
    /// Records one round that handled `packets`.
    pub fn record_round(&self, packets: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        if packets == 0 {
            self.idle_rounds.fetch_add(1, Ordering::Relaxed);
        } else {
            self.packets.fetch_add(packets as u64, Ordering::Relaxed);
        }
    }

    /// Packets handled so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
}

/// Why a loop could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The core does not exist or the thread could not be pinned to it.
    #[error("could not pin the polling thread to core {0}")]
    Pin(usize),
}

/// Polls `node` until `stop` is set, on the calling thread, pinned to `core` when given. Time
/// is microseconds since the loop started. Returns the rounds run.
pub fn run<N: PollNode + ?Sized>(
    node: &mut N,
    core: Option<usize>,
    stop: &AtomicBool,
) -> Result<u64, PollError> {
    if let Some(index) = core {
        let id = core_affinity::CoreId { id: index };
        if !core_affinity::set_for_current(id) {
            return Err(PollError::Pin(index));
        }
    }
    let start = Instant::now();
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now_us = start.elapsed().as_micros() as u64;
        let handled = node.poll(now_us);
        node.loop_stats().record_round(handled);
        rounds += 1;
        if handled == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(rounds)
}
