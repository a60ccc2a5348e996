//! Per-port counters: packets and bytes each way, and drops by cause.
//!
//! Only the port's own polling loop writes them (once per burst, not per packet); any thread
//! may read a snapshot through a shared [`PortStats`] handle, for example a live table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a port dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropCause {
    /// The peer's receive ring (in-memory fabric) was full.
    PeerRingFull,
    /// No free buffer in the port's pool to receive into.
    PoolEmpty,
    /// The frame is larger than the buffer's data room or the ring's frame slot.
    Oversize,
    /// The kernel handed over only part of the frame.
    Truncated,
    /// Too short to carry an Ethernet header.
    Runt,
    /// A switch has no port for the destination MAC address.
    NoRoute,
    /// The kernel's transmit ring had no free slot.
    TxRingFull,
    /// The kernel rejected a frame in the transmit ring.
    TxRejected,
    /// The kernel dropped frames because the receive ring was full (from its statistics).
    KernelRxRingFull,
}

impl DropCause {
    /// Every cause, in counter order.
    pub const ALL: [DropCause; 9] = [
        DropCause::PeerRingFull,
        DropCause::PoolEmpty,
        DropCause::Oversize,
        DropCause::Truncated,
        DropCause::Runt,
        DropCause::NoRoute,
        DropCause::TxRingFull,
        DropCause::TxRejected,
        DropCause::KernelRxRingFull,
    ];

    fn index(self) -> usize {
        match self {
            DropCause::PeerRingFull => 0,
            DropCause::PoolEmpty => 1,
            DropCause::Oversize => 2,
            DropCause::Truncated => 3,
            DropCause::Runt => 4,
            DropCause::NoRoute => 5,
            DropCause::TxRingFull => 6,
            DropCause::TxRejected => 7,
            DropCause::KernelRxRingFull => 8,
        }
    }
}

/// Live counters of one port, shared between the port and its readers.
#[derive(Debug, Default)]
pub struct PortStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropCause::ALL.len()],
}

fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl PortStats {
    /// Counts `packets` frames of `bytes` bytes in total received.
    pub fn add_rx(&self, packets: u64, bytes: u64) {
        add(&self.rx_packets, packets);
        add(&self.rx_bytes, bytes);
    }

    /// Counts `packets` frames of `bytes` bytes in total sent.
    pub fn add_tx(&self, packets: u64, bytes: u64) {
        add(&self.tx_packets, packets);
        add(&self.tx_bytes, bytes);
    }

    /// Counts `n` frames dropped for `cause`.
    pub fn add_drops(&self, cause: DropCause, n: u64) {
        add(&self.drops[cause.index()], n);
    }

    /// A consistent-enough copy of every counter (each one read atomically).
    pub fn snapshot(&self) -> PortCounters {
        let mut drops = [0; DropCause::ALL.len()];
        for (slot, counter) in drops.iter_mut().zip(&self.drops) {
            *slot = counter.load(Ordering::Relaxed);
        }
        PortCounters {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            drops,
        }
    }
}

/// A snapshot of a port's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    drops: [u64; DropCause::ALL.len()],
}

impl PortCounters {
    /// Frames dropped for `cause`.
    pub fn drops(&self, cause: DropCause) -> u64 {
        self.drops[cause.index()]
    }

    /// Frames dropped for any cause.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_every_counter() {
        let stats = PortStats::default();
        stats.add_rx(3, 300);
        stats.add_tx(2, 120);
        for (n, cause) in DropCause::ALL.iter().enumerate() {
            stats.add_drops(*cause, n as u64 + 1);
        }
        let snap = stats.snapshot();
        assert_eq!((snap.rx_packets, snap.rx_bytes), (3, 300));
        assert_eq!((snap.tx_packets, snap.tx_bytes), (2, 120));
        for (n, cause) in DropCause::ALL.iter().enumerate() {
            assert_eq!(snap.drops(*cause), n as u64 + 1, "{cause:?}");
        }
        assert_eq!(snap.total_drops(), (1..=9).sum::<u64>());
    }
}
