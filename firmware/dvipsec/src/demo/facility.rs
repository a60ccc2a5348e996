//! The CF handle the demo's boxes use: the shared region, counting the sequence numbers it hands
//! out so the summary can show them next to the packets the targets sealed.

use dvipsec_cf::{
    CfError, Direction, Lifesize, Region, ReplayVerdict, SeqRange, SequenceFacility, SlotId,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A region handle that counts `fetch_add` numbers (all handles of one site share the count).
#[derive(Clone)]
pub struct CountingFacility {
    region: Region,
    issued: Arc<AtomicU64>,
}

impl CountingFacility {
    pub fn new(region: Region, issued: Arc<AtomicU64>) -> Self {
        CountingFacility { region, issued }
    }
}

impl SequenceFacility for CountingFacility {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        let range = self.region.fetch_add(slot, n)?;
        self.issued
            .fetch_add(u64::from(range.count), Ordering::Relaxed);
        Ok(range)
    }

    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.region.replay_check(slot, seq)
    }

    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.region.replay_check_and_set(slot, seq)
    }

    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        self.region.lifesize_add(slot, direction, bytes, packets)
    }

    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        self.region.lifesize_read(slot)
    }
}
