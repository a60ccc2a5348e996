//! The CF handle the demo's boxes use: the shared region, counting the sequence numbers it hands
//! out (site-wide, so the summary can show them next to the packets the targets sealed) and the
//! operations each box performs (for its metrics).

use dvipsec_cf::{
    CfError, Direction, Lifesize, Region, ReplayVerdict, SeqRange, SequenceFacility, SlotId,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// CF operations of one box, by kind.
#[derive(Debug, Default)]
pub struct CfOps {
    fetch_add: AtomicU64,
    replay_check: AtomicU64,
    lifesize_add: AtomicU64,
    lifesize_read: AtomicU64,
}

impl CfOps {
    /// (operation, count) in a fixed order, as metric labels.
    pub fn counts(&self) -> Vec<(String, u64)> {
        [
            ("fetch_add", &self.fetch_add),
            ("replay_check", &self.replay_check),
            ("lifesize_add", &self.lifesize_add),
            ("lifesize_read", &self.lifesize_read),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count.load(Ordering::Relaxed)))
        .collect()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A region handle that counts `fetch_add` numbers (all handles of one site share the count) and
/// the operations of the box it belongs to.
#[derive(Clone)]
pub struct CountingFacility {
    region: Region,
    issued: Arc<AtomicU64>,
    ops: Arc<CfOps>,
}

impl CountingFacility {
    pub fn new(region: Region, issued: Arc<AtomicU64>) -> Self {
        CountingFacility {
            region,
            issued,
            ops: Arc::default(),
        }
    }

    /// A handle on the same region and number count whose operations count into `ops`.
    pub fn counting_into(&self, ops: Arc<CfOps>) -> Self {
        CountingFacility {
            region: self.region.clone(),
            issued: self.issued.clone(),
            ops,
        }
    }
}

impl SequenceFacility for CountingFacility {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        bump(&self.ops.fetch_add);
        let range = self.region.fetch_add(slot, n)?;
        self.issued
            .fetch_add(u64::from(range.count), Ordering::Relaxed);
        Ok(range)
    }

    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        bump(&self.ops.replay_check);
        self.region.replay_check(slot, seq)
    }

    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        bump(&self.ops.replay_check);
        self.region.replay_check_and_set(slot, seq)
    }

    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        bump(&self.ops.lifesize_add);
        self.region.lifesize_add(slot, direction, bytes, packets)
    }

    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        bump(&self.ops.lifesize_read);
        self.region.lifesize_read(slot)
    }
}
