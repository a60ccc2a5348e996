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
    /// [`SaTable::inbound`] for reading only: the distributor holds the SAs of a whole burst at
    /// once while it peeks them together.
    fn inbound_shared(&self, spi: u32, protocol: IpsecProtocol, src: IpAddr) -> Option<&InboundSa>;
    /// Whether an inbound SA with this SPI and protocol exists for any source. A packet naming
    /// it from a source that [`SaTable::inbound`] does not find is spoofed, not merely unknown.
    fn knows_inbound_spi(&self, spi: u32, protocol: IpsecProtocol) -> bool;
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

/// How many SAs a [`ShadowSaTable`] holds at most. An install past a bound is refused and
/// counted; an installed SA is never evicted to make room (that would let whoever can get SAs
/// installed take a working peer's traffic down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaLimits {
    /// SAs in all, inbound and outbound together.
    pub max_sas: usize,
    /// SAs (inbound and outbound together) with one peer outer address.
    pub max_sas_per_peer: usize,
}

impl Default for SaLimits {
    /// Room for 16k peers with a child SA pair each through a rekey (four SAs), and for one
    /// peer with 256 such pairs.
    fn default() -> Self {
        SaLimits {
            max_sas: 65_536,
            max_sas_per_peer: 1_024,
        }
    }
}

/// Why an install was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The table holds `max_sas`.
    #[error("SA table full: {limit} SAs installed")]
    TableFull {
        /// The bound.
        limit: usize,
    },
    /// The peer holds `max_sas_per_peer`.
    #[error("peer {peer} already has {limit} SAs installed")]
    PeerFull {
        /// The peer's outer address.
        peer: IpAddr,
        /// The bound.
        limit: usize,
    },
}

/// Installs a [`ShadowSaTable`] refused, by bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaTableCounters {
    /// Refused because the table held `max_sas`.
    pub refused_table_full: u64,
    /// Refused because the peer held `max_sas_per_peer`.
    pub refused_peer_full: u64,
}

/// A plain SA table: inbound SAs by (SPI, protocol, peer), outbound SAs in install order,
/// within [`SaLimits`].
#[derive(Debug, Default)]
pub struct ShadowSaTable {
    inbound: HashMap<(u32, u8, IpAddr), InboundSa, SaHasher>,
    outbound: Vec<OutboundSa>,
    limits: SaLimits,
    counters: SaTableCounters,
    /// SAs per peer outer address, both directions (for the per-peer bound).
    per_peer: HashMap<IpAddr, usize, SaHasher>,
    /// Inbound SAs per (SPI, protocol), whatever their peer (for spoofed-source detection).
    inbound_spis: HashMap<(u32, u8), usize, SaHasher>,
}

/// The SA tables' hash: aHash with random keys. Every packet's first lookup goes through it
/// (the distributor's once per run of one SA in a burst, the target's per packet), and std's
/// SipHash cost some 16 ns a lookup here. A received SPI is attacker-chosen, but only IKE puts
/// keys in these tables (our own random SPIs, bounded by [`SaLimits`]): a forged SPI can only
/// miss, it cannot lengthen a probe chain.
type SaHasher = ahash::RandomState;

/// One more SA under `key`.
fn index_add<K: std::hash::Hash + Eq>(index: &mut HashMap<K, usize, SaHasher>, key: K) {
    *index.entry(key).or_default() += 1;
}

/// One SA fewer under `key`; the key goes when none are left.
fn index_remove<K: std::hash::Hash + Eq>(index: &mut HashMap<K, usize, SaHasher>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut entry) = index.entry(key) {
        *entry.get_mut() -= 1;
        if *entry.get() == 0 {
            entry.remove();
        }
    }
}

fn protocol_number(protocol: IpsecProtocol) -> u8 {
    match protocol {
        IpsecProtocol::Esp => 50,
        IpsecProtocol::Ah => 51,
    }
}

impl ShadowSaTable {
    /// An empty table with the default [`SaLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with these bounds.
    pub fn with_limits(limits: SaLimits) -> Self {
        ShadowSaTable {
            limits,
            ..Self::default()
        }
    }

    /// The bounds.
    pub fn limits(&self) -> SaLimits {
        self.limits
    }

    /// The refused installs.
    pub fn counters(&self) -> SaTableCounters {
        self.counters
    }

    /// SAs installed, both directions.
    pub fn len(&self) -> usize {
        self.inbound.len() + self.outbound.len()
    }

    /// Whether no SA is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that one SA more for `peer` fits once the SAs of `replaced` (peers of SAs this
    /// install replaces) are gone; counts a refusal.
    fn admit(&mut self, peer: IpAddr, replaced: &[IpAddr]) -> Result<(), InstallError> {
        let limit = self.limits.max_sas;
        if self.len() - replaced.len() >= limit {
            self.counters.refused_table_full += 1;
            return Err(InstallError::TableFull { limit });
        }
        let limit = self.limits.max_sas_per_peer;
        let held = self.per_peer.get(&peer).copied().unwrap_or(0);
        let freed = replaced.iter().filter(|p| **p == peer).count();
        if held - freed >= limit {
            self.counters.refused_peer_full += 1;
            return Err(InstallError::PeerFull { peer, limit });
        }
        Ok(())
    }

    /// Installs (or replaces) an inbound SA; a refusal past the bounds is only counted (see
    /// [`ShadowSaTable::try_install_inbound`] to learn of it).
    pub fn install_inbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
    ) {
        let _counted = self.try_install_inbound(sa, dvipa, peer, selector, slot);
    }

    /// Installs (or replaces) an inbound SA, or refuses it past the bounds (counted). Replacing
    /// an SA with the same (SPI, protocol, peer) always fits.
    pub fn try_install_inbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
    ) -> Result<(), InstallError> {
        let params = *sa.params();
        let key = (params.spi, protocol_number(params.protocol), peer);
        let replaced: &[IpAddr] = if self.inbound.contains_key(&key) {
            std::slice::from_ref(&peer)
        } else {
            &[]
        };
        self.admit(peer, replaced)?;
        if replaced.is_empty() {
            index_add(&mut self.per_peer, peer);
            index_add(&mut self.inbound_spis, (key.0, key.1));
        }
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
        Ok(())
    }

    /// Installs an outbound SA taking sequence numbers from `slot` under `policy`. A newer SA
    /// for the same rule is found first (rekey: the new SA takes over at once). A refusal past
    /// the bounds is only counted (see [`ShadowSaTable::try_install_outbound`] to learn of it).
    pub fn install_outbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
        policy: LeasePolicy,
    ) {
        let _counted = self.try_install_outbound(sa, dvipa, peer, selector, slot, policy);
    }

    /// Installs an outbound SA (replacing one with the same SPI), or refuses it past the bounds
    /// (counted); the replaced SA stays when the new one is refused.
    pub fn try_install_outbound(
        &mut self,
        sa: Sa,
        dvipa: IpAddr,
        peer: IpAddr,
        selector: TrafficSelector,
        slot: SlotId,
        policy: LeasePolicy,
    ) -> Result<(), InstallError> {
        let spi = sa.params().spi;
        let replaced: Vec<IpAddr> = self
            .outbound
            .iter()
            .filter(|o| o.sa.params().spi == spi)
            .map(|o| o.peer)
            .collect();
        self.admit(peer, &replaced)?;
        for old in replaced {
            index_remove(&mut self.per_peer, old);
        }
        index_add(&mut self.per_peer, peer);
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
        Ok(())
    }

    /// Deletes every SA with `spi` (either direction). Returns how many were removed.
    pub fn delete(&mut self, spi: u32) -> usize {
        let before = self.len();
        let (per_peer, inbound_spis) = (&mut self.per_peer, &mut self.inbound_spis);
        self.inbound.retain(|key, _| {
            let keep = key.0 != spi;
            if !keep {
                index_remove(per_peer, key.2);
                index_remove(inbound_spis, (key.0, key.1));
            }
            keep
        });
        self.outbound.retain(|o| {
            let keep = o.sa.params().spi != spi;
            if !keep {
                index_remove(per_peer, o.peer);
            }
            keep
        });
        before - self.len()
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

    fn inbound_shared(&self, spi: u32, protocol: IpsecProtocol, src: IpAddr) -> Option<&InboundSa> {
        self.inbound.get(&(spi, protocol_number(protocol), src))
    }

    fn knows_inbound_spi(&self, spi: u32, protocol: IpsecProtocol) -> bool {
        self.inbound_spis
            .contains_key(&(spi, protocol_number(protocol)))
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
    use crate::testbed::{selector, tunnel_sa_config, DVIPA, KEY_TO_DVIPA, PEER_OUTER};
    use dvipsec_esp::Direction;
    use std::net::Ipv4Addr;

    const OTHER_PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

    fn sa(spi: u32, direction: Direction) -> Sa {
        Sa::new(tunnel_sa_config(
            spi,
            direction,
            &KEY_TO_DVIPA,
            (PEER_OUTER, DVIPA),
        ))
        .unwrap()
    }

    fn install_in(table: &mut ShadowSaTable, spi: u32, peer: Ipv4Addr) -> Result<(), InstallError> {
        let sa = sa(spi, Direction::Inbound);
        let (dvipa, peer) = (IpAddr::V4(DVIPA), IpAddr::V4(peer));
        table.try_install_inbound(sa, dvipa, peer, selector(), SlotId(spi.into()))
    }

    fn install_out(
        table: &mut ShadowSaTable,
        spi: u32,
        peer: Ipv4Addr,
    ) -> Result<(), InstallError> {
        let sa = sa(spi, Direction::Outbound);
        let (dvipa, peer) = (IpAddr::V4(DVIPA), IpAddr::V4(peer));
        let policy = LeasePolicy::per_packet();
        table.try_install_outbound(sa, dvipa, peer, selector(), SlotId(spi.into()), policy)
    }

    fn finds_inbound(table: &mut ShadowSaTable, spi: u32, peer: Ipv4Addr) -> bool {
        table
            .inbound(spi, IpsecProtocol::Esp, IpAddr::V4(peer))
            .is_some()
    }

    #[test]
    fn installs_past_the_table_bound_are_refused_counted_and_evict_nothing() {
        let mut table = ShadowSaTable::with_limits(SaLimits {
            max_sas: 3,
            max_sas_per_peer: 10,
        });
        for spi in 0x1001..=0x1002 {
            install_in(&mut table, spi, PEER_OUTER).unwrap();
        }
        install_out(&mut table, 0x1003, PEER_OUTER).unwrap();
        assert_eq!(
            install_in(&mut table, 0x1004, OTHER_PEER),
            Err(InstallError::TableFull { limit: 3 })
        );
        assert_eq!(
            install_out(&mut table, 0x1005, OTHER_PEER),
            Err(InstallError::TableFull { limit: 3 })
        );
        // The plain install refuses the same way, and is counted too.
        let sa = sa(0x1006, Direction::Inbound);
        let (dvipa, peer) = (IpAddr::V4(DVIPA), IpAddr::V4(OTHER_PEER));
        table.install_inbound(sa, dvipa, peer, selector(), SlotId(0x1006));
        assert_eq!(table.counters().refused_table_full, 3);
        assert_eq!(table.len(), 3);
        assert!(
            finds_inbound(&mut table, 0x1001, PEER_OUTER)
                && finds_inbound(&mut table, 0x1002, PEER_OUTER)
        );
        assert!(!finds_inbound(&mut table, 0x1004, OTHER_PEER));
        // Replacing an installed SA takes no more room, so it fits at the bound.
        install_in(&mut table, 0x1002, PEER_OUTER).unwrap();
        install_out(&mut table, 0x1003, PEER_OUTER).unwrap();
        assert_eq!(table.len(), 3);
        // A delete makes room again.
        assert_eq!(table.delete(0x1001), 1);
        install_in(&mut table, 0x1004, OTHER_PEER).unwrap();
        assert_eq!(table.counters().refused_table_full, 3);
    }

    #[test]
    fn installs_past_the_peer_bound_are_refused_and_other_peers_still_fit() {
        let mut table = ShadowSaTable::with_limits(SaLimits {
            max_sas: 100,
            max_sas_per_peer: 2,
        });
        install_in(&mut table, 0x1001, PEER_OUTER).unwrap();
        install_out(&mut table, 0x1002, PEER_OUTER).unwrap();
        let refused = InstallError::PeerFull {
            peer: IpAddr::V4(PEER_OUTER),
            limit: 2,
        };
        assert_eq!(install_in(&mut table, 0x1003, PEER_OUTER), Err(refused));
        assert_eq!(install_out(&mut table, 0x1004, PEER_OUTER), Err(refused));
        let counters = table.counters();
        assert_eq!(
            (counters.refused_peer_full, counters.refused_table_full),
            (2, 0)
        );
        install_in(&mut table, 0x1003, OTHER_PEER).unwrap();
        install_out(&mut table, 0x1004, OTHER_PEER).unwrap();
        // Moving another peer's outbound SPI to a full peer is refused; once that peer has room
        // the move frees the other peer's place.
        install_out(&mut table, 0x1004, PEER_OUTER).unwrap_err();
        assert_eq!(table.delete(0x1002), 1);
        install_out(&mut table, 0x1004, PEER_OUTER).unwrap();
        install_in(&mut table, 0x1005, OTHER_PEER).unwrap();
        assert_eq!(table.len(), 4);
        assert!(finds_inbound(&mut table, 0x1001, PEER_OUTER));
    }

    #[test]
    fn an_inbound_spi_is_known_whatever_its_source_until_deleted() {
        let mut table = ShadowSaTable::new();
        assert_eq!(table.limits(), SaLimits::default());
        install_in(&mut table, 0x1007, PEER_OUTER).unwrap();
        install_in(&mut table, 0x1007, OTHER_PEER).unwrap();
        assert!(table.knows_inbound_spi(0x1007, IpsecProtocol::Esp));
        assert!(!table.knows_inbound_spi(0x1007, IpsecProtocol::Ah));
        assert!(!table.knows_inbound_spi(0x1008, IpsecProtocol::Esp));
        assert!(!finds_inbound(
            &mut table,
            0x1007,
            Ipv4Addr::new(192, 0, 2, 99)
        ));
        assert_eq!(table.delete(0x1007), 2);
        assert!(!table.knows_inbound_spi(0x1007, IpsecProtocol::Esp));
        assert!(table.is_empty());
    }

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
