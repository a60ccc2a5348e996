//! The interface the data path uses, whichever facility (shared memory or network) is behind it.

use std::net::IpAddr;

use crate::error::CfError;

/// Opaque identity of a slot, valid for one allocation: once the slot is released the id stops
/// working even if the storage is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u64);

/// The SA a slot belongs to: the DVIPA and the SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub dvipa: IpAddr,
    pub spi: u32,
}

/// A run of consecutive sequence numbers `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub first: u64,
    pub count: u32,
}

impl SeqRange {
    /// The numbers of the range in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> {
        self.first..self.first + u64::from(self.count)
    }
}

/// Outcome of an anti-replay check (RFC 4303 section 3.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// New and inside (or ahead of) the window.
    Accepted,
    /// Already seen.
    Replayed,
    /// Left of the window.
    TooOld,
    /// Sequence number zero is never sent.
    Zero,
}

/// Traffic direction of a lifesize counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The lifesize counters of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifesize {
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
}

/// What the data path needs from the coupling facility.
pub trait SequenceFacility {
    /// Takes `n` consecutive outbound sequence numbers of the slot.
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError>;
    /// Checks `seq` against the inbound window without changing it (the distributor's check
    /// before forwarding: peek output is unauthenticated and must not move the window).
    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError>;
    /// Checks and marks `seq`; call only after the ICV verified.
    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError>;
    /// Adds to the lifesize counters of one direction.
    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError>;
    /// Reads the lifesize counters.
    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError>;
    /// Fails with [`CfError::Fenced`] once a newer owner fenced this handle's epoch, for
    /// callers that hand out numbers they took earlier (leases) and must stop at the fence.
    /// Facilities that cannot tell cheaply (the networked one: a round trip) say Ok; their
    /// next `fetch_add` fails instead.
    fn check_epoch(&self) -> Result<(), CfError> {
        Ok(())
    }
}
