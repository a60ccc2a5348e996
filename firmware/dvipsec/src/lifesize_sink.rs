//! The lifesize counts a box's data path reports: added to the SAs' CF slots, and handed to
//! the box's cluster target core, which batches them into LIFESIZE messages for the
//! distributor. Shared by `boot` (one box) and the demo (every simulated target).

use std::net::IpAddr;

use dvipsec_cluster::wire::{SaRef, WireDirection};
use dvipsec_dataplane::sa_table::{FacilitySink, LifesizeReport, LifesizeSink};

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

/// Where a box's data path reports go: the CF slot's totals (what `cf show` reads) and the
/// box's target core (LIFESIZE to the distributor's IKE, what starts a rekey).
pub struct CfAndCoreSink<'a, F: ?Sized> {
    cf: FacilitySink<'a, F>,
    core: CoreSink<'a>,
}

impl<'a, F: dvipsec_cf::SequenceFacility + ?Sized> CfAndCoreSink<'a, F> {
    /// A sink into `facility` and `core` for the DVIPAs in `served` (name, address).
    pub fn new(
        facility: &'a F,
        core: &'a mut dvipsec_cluster::Target,
        served: &'a [(String, IpAddr)],
    ) -> Self {
        CfAndCoreSink {
            cf: FacilitySink::new(facility),
            core: CoreSink::new(core, served),
        }
    }

    /// Reports the core could not place ([`CoreSink::refused`]).
    pub fn refused_by_core(&self) -> u64 {
        self.core.refused()
    }

    /// Reports the CF refused (a slot released with a retired SA, a fenced handle).
    pub fn refused_by_cf(&self) -> u64 {
        self.cf.failures
    }
}

impl<F: dvipsec_cf::SequenceFacility + ?Sized> LifesizeSink for CfAndCoreSink<'_, F> {
    fn report(&mut self, report: LifesizeReport) {
        self.cf.report(report);
        self.core.report(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_cf::SlotId;
    use dvipsec_cluster::LinkSecurity;
    use dvipsec_config::SiteConfig;
    use dvipsec_dataplane::sa_table::Usage;
    use std::path::Path;
    use std::time::Duration;

    fn report(dvipa: IpAddr) -> LifesizeReport {
        LifesizeReport {
            dvipa,
            spi: 0x1234,
            direction: dvipsec_cf::Direction::Inbound,
            slot: SlotId(1),
            usage: Usage {
                bytes: 100,
                packets: 1,
            },
        }
    }

    #[test]
    fn reports_the_core_cannot_place_are_counted_as_refused() {
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/figure4.yaml");
        let config = SiteConfig::load(site).unwrap();
        let view = config.node_view("MVS2").unwrap();
        let mut core =
            dvipsec_cluster::Target::new(&view, 1, LinkSecurity::Trusted, Duration::ZERO);
        let served: Vec<(String, IpAddr)> = view
            .serves
            .iter()
            .map(|s| (s.dvipa.clone(), s.address))
            .collect();
        let (_, address) = served.first().cloned().expect("MVS2 serves a DVIPA");
        let mut sink = CoreSink::new(&mut core, &served);
        assert_eq!(sink.refused(), 0);
        // An address the box does not serve: the sink cannot name it.
        sink.report(report(IpAddr::from([192, 0, 2, 99])));
        assert_eq!(sink.refused(), 1);
        // A served DVIPA, but an SA the core was never given: the core refuses it.
        sink.report(report(address));
        assert_eq!(sink.refused(), 2);
    }
}
