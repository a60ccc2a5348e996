//! The data plane's view of the SAs: what it looks up per packet, and nothing about how SAs get
//! there. The cluster crate's shadow SA cache (filled by SA_INSTALL over XCF) plugs in through
//! [`SaTable`]; [`ShadowSaTable`] is a plain implementation that tests and single-box setups fill
//! directly.

use dvipsec_cf::{LeaseHolder, LeasePolicy, SlotId};
use dvipsec_esp::{IpsecProtocol, Sa};
use std::collections::HashMap;
use std::net::IpAddr;

pub use dvipsec_esp::IpPrefix;

/// The dynamic filter rule an SA protects: inner addresses on the DVIPA side and the peer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    /// Our side (the DVIPA, or a prefix holding it).
    pub local: IpPrefix,
    /// The peer's side.
    pub remote: IpPrefix,
}

impl TrafficSelector {
    /// Whether an inbound packet from `src` to `dst` belongs under this rule.
    pub fn covers_inbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote.contains(src) && self.local.contains(dst)
    }

    /// Whether an outbound packet from `src` to `dst` belongs under this rule.
    pub fn covers_outbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.local.contains(src) && self.remote.contains(dst)
    }
}

/// An inbound SA as the data plane uses it.
#[derive(Debug)]
pub struct InboundSa {
    /// The SA (inbound direction). On targets its own replay window should be off (0): the
    /// window that counts is the shared one in the CF slot.
    pub sa: Sa,
    /// The DVIPA the SA belongs to.
    pub dvipa: IpAddr,
    /// The peer's outer address (the packets' source).
    pub peer: IpAddr,
    /// The filter rule the SA protects.
    pub selector: TrafficSelector,
    /// The CF slot holding the SA's shared replay window and lifesize.
    pub slot: SlotId,
    /// Bytes and packets opened since the last lifesize report.
    pub unreported: Usage,
}

/// An outbound SA as the data plane uses it.
#[derive(Debug)]
pub struct OutboundSa {
    /// The SA (outbound direction).
    pub sa: Sa,
    /// The DVIPA the SA belongs to (the outer source).
    pub dvipa: IpAddr,
    /// The peer's outer address.
    pub peer: IpAddr,
    /// The filter rule the SA protects.
    pub selector: TrafficSelector,
    /// The CF slot holding the SA's shared sequence counter.
    pub slot: SlotId,
    /// Numbers leased from the CF slot.
    pub lease: LeaseHolder,
    /// Bytes and packets sealed since the last lifesize report.
    pub unreported: Usage,
}

/// Traffic counted against an SA's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
}

impl Usage {
    /// Counts one packet of `bytes`.
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        self.packets += 1;
    }

    /// Takes the counts out, leaving zero.
    pub fn take(&mut self) -> Usage {
        std::mem::take(self)
    }
}

/// What the data plane asks of an SA store, per packet.
pub trait SaTable {
    /// Inbound lookup by (SPI, protocol, outer source address), as peek and decap do it.
    fn inbound(&mut self, spi: u32, protocol: IpsecProtocol, src: IpAddr)
        -> Option<&mut InboundSa>;
    /// Outbound lookup by the filter rule that covers a packet from `src` to `dst`.
    fn outbound(&mut self, src: IpAddr, dst: IpAddr) -> Option<&mut OutboundSa>;
    /// Calls `report` with the unreported usage of every SA that has some, and clears it.
    fn drain_usage(&mut self, report: &mut dyn FnMut(LifesizeReport));
}

/// A batch of lifesize counts for one SA and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifesizeReport {
    /// The SA's DVIPA.
    pub dvipa: IpAddr,
    /// The SA's SPI.
    pub spi: u32,
    /// Which way the traffic went.
    pub direction: dvipsec_cf::Direction,
    /// The SA's CF slot.
    pub slot: SlotId,
    /// The counts.
    pub usage: Usage,
}

/// A sink that adds reports to the SA's lifesize counters in the CF, where the distributor's
/// IKE can read the cluster-wide totals.
#[derive(Debug)]
pub struct FacilitySink<'f, F: ?Sized> {
    facility: &'f F,
    /// Reports the CF refused (slot released, fenced, state lost).
    pub failures: u64,
}

impl<'f, F: dvipsec_cf::SequenceFacility + ?Sized> FacilitySink<'f, F> {
    /// A sink writing to `facility`.
    pub fn new(facility: &'f F) -> Self {
        FacilitySink {
            facility,
            failures: 0,
        }
    }
}

impl<F: dvipsec_cf::SequenceFacility + ?Sized> LifesizeSink for FacilitySink<'_, F> {
    fn report(&mut self, report: LifesizeReport) {
        let added = self.facility.lifesize_add(
            report.slot,
            report.direction,
            report.usage.bytes,
            report.usage.packets,
        );
        if added.is_err() {
            self.failures += 1;
        }
    }
}

/// Where lifesize reports go (the cluster crate sends them to the distributor as LIFESIZE).
pub trait LifesizeSink {
    /// Takes one report.
    fn report(&mut self, report: LifesizeReport);
}

/// A sink that sums reports per (SPI, direction); for tests and tables.
#[derive(Debug, Default, Clone)]
pub struct SummingSink {
    totals: HashMap<(u32, bool), Usage>,
    /// How many reports arrived.
    pub reports: u64,
}

impl SummingSink {
    /// The summed usage of `spi` in `direction`.
    pub fn total(&self, spi: u32, direction: dvipsec_cf::Direction) -> Usage {
        let key = (spi, direction == dvipsec_cf::Direction::Inbound);
        self.totals.get(&key).copied().unwrap_or_default()
    }
}

impl LifesizeSink for SummingSink {
    fn report(&mut self, report: LifesizeReport) {
        let key = (
            report.spi,
            report.direction == dvipsec_cf::Direction::Inbound,
        );
        let total = self.totals.entry(key).or_default();
        total.bytes += report.usage.bytes;
        total.packets += report.usage.packets;
        self.reports += 1;
    }
}

/// A plain SA table: inbound SAs by (SPI, protocol, peer), outbound SAs in install order.
#[derive(Debug, Default)]
pub struct ShadowSaTable {
    inbound: HashMap<(u32, u8, IpAddr), InboundSa>,
    outbound: Vec<OutboundSa>,
}

fn protocol_number(protocol: IpsecProtocol) -> u8 {
    match protocol {
        IpsecProtocol::Esp => 50,
        IpsecProtocol::Ah => 51,
    }
}

impl ShadowSaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs (or replaces) an inbound SA.
    pub fn install_inbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
    ) {
        let params = *sa.params();
        let key = (params.spi, protocol_number(params.protocol), peer);
        self.inbound.insert(
            key,
            InboundSa {
                sa,
                dvipa,
                peer,
                selector,
                slot,
                unreported: Usage::default(),
            },
        );
    }

    /// Installs an outbound SA taking sequence numbers from `slot` under `policy`. A newer SA
    /// for the same rule is found first (rekey: the new SA takes over at once).
    pub fn install_outbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
        policy: LeasePolicy,
    ) {
        let spi = sa.params().spi;
        self.outbound.retain(|o| o.sa.params().spi != spi);
        self.outbound.insert(
            0,
            OutboundSa {
                sa,
                dvipa,
                peer,
                selector,
                slot,
                lease: LeaseHolder::new(policy),
                unreported: Usage::default(),
            },
        );
    }

    /// Deletes every SA with `spi` (either direction). Returns how many were removed.
    pub fn delete(&mut self, spi: u32) -> usize {
        let before = self.inbound.len() + self.outbound.len();
        self.inbound.retain(|key, _| key.0 != spi);
        self.outbound.retain(|o| o.sa.params().spi != spi);
        before - self.inbound.len() - self.outbound.len()
    }

    /// The inbound SAs, in no particular order; for operator listings.
    pub fn inbound_sas(&self) -> impl Iterator<Item = &InboundSa> + '_ {
        self.inbound.values()
    }

    /// The outbound SAs, newest first; for operator listings.
    pub fn outbound_sas(&self) -> impl Iterator<Item = &OutboundSa> + '_ {
        self.outbound.iter()
    }
}

impl SaTable for ShadowSaTable {
    fn inbound(
        &mut self,
        spi: u32,
        protocol: IpsecProtocol,
        src: IpAddr,
    ) -> Option<&mut InboundSa> {
        self.inbound.get_mut(&(spi, protocol_number(protocol), src))
    }

    fn outbound(&mut self, src: IpAddr, dst: IpAddr) -> Option<&mut OutboundSa> {
        self.outbound
            .iter_mut()
            .find(|o| o.selector.covers_outbound(src, dst))
    }

    fn drain_usage(&mut self, report: &mut dyn FnMut(LifesizeReport)) {
        for entry in self.inbound.values_mut() {
            if entry.unreported.packets > 0 {
                report(LifesizeReport {
                    dvipa: entry.dvipa,
                    spi: entry.sa.params().spi,
                    direction: dvipsec_cf::Direction::Inbound,
                    slot: entry.slot,
                    usage: entry.unreported.take(),
                });
            }
        }
        for entry in &mut self.outbound {
            if entry.unreported.packets > 0 {
                report(LifesizeReport {
                    dvipa: entry.dvipa,
                    spi: entry.sa.params().spi,
                    direction: dvipsec_cf::Direction::Outbound,
                    slot: entry.slot,
                    usage: entry.unreported.take(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_by_their_length_and_family() {
        let net = IpPrefix {
            addr: "10.1.0.0".parse().unwrap(),
            len: 16,
        };
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.1.0.1".parse().unwrap()));
        let any6 = IpPrefix {
            addr: "::".parse().unwrap(),
            len: 0,
        };
        assert!(any6.contains("2001:db8::1".parse().unwrap()));
        let host = IpPrefix::host("2001:db8::1".parse().unwrap());
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
    }
}
