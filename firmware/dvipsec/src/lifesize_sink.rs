//! The lifesize counts a box's data path reports, handed to the box's cluster target core,
//! which batches them into LIFESIZE messages for the distributor. Shared by `boot` (one box)
//! and the demo (every simulated target).

use std::net::IpAddr;

use dvipsec_cluster::wire::{SaRef, WireDirection};
use dvipsec_dataplane::sa_table::{LifesizeReport, LifesizeSink};

/// A sink that names each reported SA by its DVIPA's name (the core keys SAs by name, the data
/// path by address) and counts the reports it could not place.
pub struct CoreSink<'a> {
    core: &'a mut dvipsec_cluster::Target,
    served: &'a [(String, IpAddr)],
    refused: u64,
}

impl<'a> CoreSink<'a> {
    /// A sink into `core` for the DVIPAs in `served` (name, address).
    pub fn new(core: &'a mut dvipsec_cluster::Target, served: &'a [(String, IpAddr)]) -> Self {
        CoreSink {
            core,
            served,
            refused: 0,
        }
    }

    /// Reports of an address the box does not serve, or that the core refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

impl LifesizeSink for CoreSink<'_> {
    fn report(&mut self, report: LifesizeReport) {
        let Some((name, _)) = self.served.iter().find(|(_, a)| *a == report.dvipa) else {
            self.refused += 1;
            return;
        };
        let direction = match report.direction {
            dvipsec_cf::Direction::Inbound => WireDirection::Inbound,
            dvipsec_cf::Direction::Outbound => WireDirection::Outbound,
        };
        let sa = SaRef {
            dvipa: name.clone(),
            direction,
            spi: report.spi,
        };
        if self
            .core
            .count(&sa, report.usage.bytes, report.usage.packets)
            .is_err()
        {
            self.refused += 1;
        }
    }
}
