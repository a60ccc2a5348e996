//! Coupling-facility slots for distributed SAs, from the shared region of `dvipsec-cf`.

use std::sync::Arc;

use dvipsec_cf::{RegionOwner, SlotId, SlotKey};
use dvipsec_esp::Direction;

use crate::distributor::{DistributorError, SlotAllocator, SlotRequest};

/// The widest replay window a CF slot holds: the region's own limit, so the two cannot drift.
pub const CF_MAX_REPLAY_WINDOW: u32 = dvipsec_cf::replay::MAX_REPLAY_WINDOW;
/// The window given to slots that do not check replay (outbound SAs, anti-replay off).
const UNUSED_WINDOW: u32 = 32;

/// Allocates slots in a CF region this stack owns. The slot id in SA_INSTALL is the region's
/// [`SlotId`], so targets use it directly.
pub struct CfSlots {
    owner: Arc<RegionOwner>,
}

impl CfSlots {
    pub fn new(owner: Arc<RegionOwner>) -> CfSlots {
        CfSlots { owner }
    }
}

impl SlotAllocator for CfSlots {
    fn allocate(&mut self, request: &SlotRequest) -> Result<u64, DistributorError> {
        let window = match (request.direction, request.replay_window) {
            (Direction::Outbound, _) | (_, 0) => UNUSED_WINDOW,
            (_, window) if window > CF_MAX_REPLAY_WINDOW => {
                return Err(DistributorError::WindowTooWide { window })
            }
            (_, window) => window,
        };
        let key = SlotKey {
            dvipa: request.dvipa,
            spi: request.spi,
        };
        let slot = self.owner.allocate(key, window).map_err(cf_error)?;
        Ok(slot.0)
    }

    fn release(&mut self, slot: u64) -> Result<(), DistributorError> {
        self.owner.release(SlotId(slot)).map_err(cf_error)
    }
}

fn cf_error(source: dvipsec_cf::CfError) -> DistributorError {
    DistributorError::Cf {
        source: Arc::new(source),
    }
}
