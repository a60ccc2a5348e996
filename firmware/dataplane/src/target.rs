//! The target's packet paths (seed figures 9 and 10), sans-io, in place on caller buffers.
//!
//! Inbound: a GRE packet is accepted without inbound filtering only when it came in on the XCF
//! port from the XCF address of one of our distributors to ours; any other GRE is refused by the filter (and
//! counted), and ESP that arrives any other way is filtered normally (its inner addresses must be
//! covered by its SA's rule). The ESP packet is opened with the shadow SA; only after the ICV
//! verified is the sequence number checked and set in the CF's shared window. Lifesize is counted
//! per SA for the next batch report.
//!
//! Outbound: filter (the rule covering the packet names the shadow SA), a sequence number from the
//! CF (one per packet or from a bounded lease), ESP sealed in place, and the packet goes straight
//! to the peer: the caller sends it on its own external port, never through the distributor.

use crate::distributor::locate_esp_spi;
use crate::gre;
use crate::sa_table::SaTable;
use crate::wire::{self, Flow};
use dvipsec_cf::{ReplayVerdict, SequenceFacility};
use dvipsec_esp::ip;
use dvipsec_esp::{EspError, IpsecProtocol};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

/// Where a packet came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The XCF port (the cluster's internal network).
    Xcf,
    /// The external port.
    External,
}

/// The target's data-plane configuration.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Our address on the XCF network.
    pub xcf_address: Ipv4Addr,
    /// The XCF addresses of the distributors whose DVIPAs this target serves (one box may serve
    /// DVIPAs of several): the only accepted GRE sources.
    pub distributor_xcf: Vec<Ipv4Addr>,
    /// The DVIPAs this target serves.
    pub dvipas: Vec<IpAddr>,
}

/// Why the target dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetDrop {
    /// Malformed headers.
    Malformed,
    /// Refused by inbound filtering (including GRE that is not from the distributor on XCF).
    Filtered,
    /// GRE from somewhere other than one of our distributors' XCF addresses on the XCF port.
    SpoofedGre,
    /// No shadow SA for (SPI, protocol, source) (never installed, or deleted).
    UnknownSa,
    /// The ICV did not verify.
    Authentication,
    /// The sequence number was already used or is left of the CF's window.
    Replay,
    /// The packet is not for a DVIPA we serve.
    NotForUs,
    /// No outbound SA covers the packet (the cluster sends NEWCONN for it).
    NoOutboundSa,
    /// The CF could not hand out a number or answer a replay check.
    Facility,
    /// Sealing failed (no room, lifetime reached, sequence space exhausted).
    Seal,
}

impl TargetDrop {
    /// Every cause, in counter order.
    pub const ALL: [TargetDrop; 10] = [
        TargetDrop::Malformed,
        TargetDrop::Filtered,
        TargetDrop::SpoofedGre,
        TargetDrop::UnknownSa,
        TargetDrop::Authentication,
        TargetDrop::Replay,
        TargetDrop::NotForUs,
        TargetDrop::NoOutboundSa,
        TargetDrop::Facility,
        TargetDrop::Seal,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// The target's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetCounters {
    /// Packets decapsulated and passed up.
    pub inbound_packets: u64,
    /// Of those, packets that came as GRE from the distributor.
    pub forwarded_in: u64,
    /// Packets sealed and handed out for sending.
    pub outbound_packets: u64,
    /// Drops by cause, indexed like [`TargetDrop::ALL`].
    pub drops: [u64; TargetDrop::ALL.len()],
}

impl TargetCounters {
    /// Drops counted under `cause`.
    pub fn dropped(&self, cause: TargetDrop) -> u64 {
        self.drops[cause.index()]
    }
}

/// A packet opened and accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The inner IP packet within the caller's buffer.
    pub packet: Range<usize>,
    /// Its flow; `flow.payload` is relative to `packet.start`.
    pub flow: Flow,
}

/// A packet sealed for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The ESP packet within the caller's buffer.
    pub packet: Range<usize>,
    /// The sequence number it carries.
    pub seq: u64,
    /// The SA's SPI.
    pub spi: u32,
    /// The peer's outer address (where to send it).
    pub peer: IpAddr,
}

/// The target's state: its packet paths and the CF handle they use.
#[derive(Debug)]
pub struct Target<F> {
    paths: TargetPaths,
    facility: F,
}

impl<F: SequenceFacility> Target<F> {
    /// A target using `facility` for sequence numbers and replay state.
    pub fn new(config: TargetConfig, facility: F) -> Self {
        Target {
            paths: TargetPaths::new(config),
            facility,
        }
    }

    /// The counters.
    pub fn counters(&self) -> TargetCounters {
        self.paths.counters()
    }

    /// The configuration.
    pub fn config(&self) -> &TargetConfig {
        self.paths.config()
    }

    /// Inbound (figure 9): the IP packet at `buf[packet]`, received on `ingress`.
    pub fn inbound<T: SaTable + ?Sized>(
        &mut self,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<Delivery, TargetDrop> {
        self.paths
            .inbound(&self.facility, sas, ingress, buf, packet)
    }

    /// Outbound (figure 10): seals the IP packet at `buf[packet]` (with headroom before it and
    /// tailroom after it) for the peer, at `now_us` (for the lease's expiry).
    pub fn outbound<T: SaTable + ?Sized>(
        &mut self,
        sas: &mut T,
        buf: &mut [u8],
        packet: Range<usize>,
        now_us: u64,
    ) -> Result<Outgoing, TargetDrop> {
        self.paths
            .outbound(&self.facility, sas, buf, packet, now_us)
    }
}

/// The target's packet paths and counters without a CF handle of their own: a [`Target`] lends
/// them its handle, and a distributor that processes non-distributable packets itself lends
/// them the handle it already holds, so both boxes share one inbound and one outbound path.
#[derive(Debug)]
pub struct TargetPaths {
    config: TargetConfig,
    counters: TargetCounters,
}

impl TargetPaths {
    /// Paths for the DVIPAs and XCF links in `config`.
    pub fn new(config: TargetConfig) -> Self {
        TargetPaths {
            config,
            counters: TargetCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> TargetCounters {
        self.counters
    }

    /// The configuration.
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// Inbound (figure 9) with `facility` for the shared replay window.
    pub fn inbound<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<Delivery, TargetDrop> {
        let result = self.open_inbound(facility, sas, ingress, buf, packet);
        self.count(&result.as_ref().map(|_| ()), |c| c.inbound_packets += 1);
        result
    }

    /// Outbound (figure 10) with sequence numbers from `facility`.
    pub fn outbound<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        sas: &mut T,
        buf: &mut [u8],
        packet: Range<usize>,
        now_us: u64,
    ) -> Result<Outgoing, TargetDrop> {
        let result = seal_outbound(facility, sas, buf, packet, now_us);
        self.count(&result.as_ref().map(|_| ()), |c| c.outbound_packets += 1);
        result
    }

    fn count(&mut self, result: &Result<(), &TargetDrop>, ok: impl FnOnce(&mut TargetCounters)) {
        match result {
            Ok(()) => ok(&mut self.counters),
            Err(cause) => self.counters.drops[cause.index()] += 1,
        }
    }

    fn open_inbound<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<Delivery, TargetDrop> {
        let bytes = buf.get(packet.clone()).ok_or(TargetDrop::Malformed)?;
        let view = ip::parse(bytes).map_err(|_| TargetDrop::Malformed)?;
        let (esp, bypass) = if view.proto == gre::IPPROTO_GRE {
            (self.accept_gre(ingress, bytes, packet.start)?, true)
        } else {
            (packet.start..packet.start + view.total_len, false)
        };
        let location = locate_esp_spi(&buf[esp.clone()]).map_err(|_| TargetDrop::Filtered)?;
        if !self.config.dvipas.contains(&location.dst) {
            return Err(TargetDrop::NotForUs);
        }
        let entry = sas
            .inbound(location.spi, IpsecProtocol::Esp, location.src)
            .ok_or(TargetDrop::UnknownSa)?;
        let opened = entry.sa.open(buf, esp).map_err(open_failure)?;
        match facility.replay_check_and_set(entry.slot, opened.seq) {
            Ok(ReplayVerdict::Accepted) => {}
            Ok(_) => return Err(TargetDrop::Replay),
            Err(_) => return Err(TargetDrop::Facility),
        }
        entry.unreported.add(opened.packet.len());
        let flow = wire::flow(&buf[opened.packet.clone()]).map_err(|_| TargetDrop::Malformed)?;
        if !bypass && !entry.selector.covers_inbound(flow.src, flow.dst) {
            return Err(TargetDrop::Filtered);
        }
        if !self.config.dvipas.contains(&flow.dst) {
            return Err(TargetDrop::NotForUs);
        }
        if bypass {
            self.counters.forwarded_in += 1;
        }
        Ok(Delivery {
            packet: opened.packet,
            flow,
        })
    }

    /// GRE is taken (and filtering bypassed) only from one of our distributors, to us, on the
    /// XCF port.
    fn accept_gre(
        &self,
        ingress: Ingress,
        bytes: &[u8],
        base: usize,
    ) -> Result<Range<usize>, TargetDrop> {
        let decap = gre::decapsulate(bytes).map_err(|_| TargetDrop::Malformed)?;
        let from_distributor = match decap.outer_src {
            IpAddr::V4(src) => self.config.distributor_xcf.contains(&src),
            IpAddr::V6(_) => false,
        } && decap.outer_dst == IpAddr::V4(self.config.xcf_address);
        if ingress != Ingress::Xcf || !from_distributor {
            return Err(TargetDrop::SpoofedGre);
        }
        Ok(base + decap.payload.start..base + decap.payload.end)
    }
}

fn seal_outbound<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
    facility: &F,
    sas: &mut T,
    buf: &mut [u8],
    packet: Range<usize>,
    now_us: u64,
) -> Result<Outgoing, TargetDrop> {
    let bytes = buf.get(packet.clone()).ok_or(TargetDrop::Malformed)?;
    let view = ip::parse(bytes).map_err(|_| TargetDrop::Malformed)?;
    let (src, dst) = ip::addresses(bytes, view.family);
    let entry = sas.outbound(src, dst).ok_or(TargetDrop::NoOutboundSa)?;
    let slot = entry.slot;
    let seq = entry
        .lease
        .next(now_us, |n| facility.fetch_add(slot, n))
        .map_err(|_| TargetDrop::Facility)?;
    let inner_len = packet.len();
    let sealed = entry
        .sa
        .seal_with_seq(buf, packet, seq)
        .map_err(|_| TargetDrop::Seal)?;
    entry.unreported.add(inner_len);
    Ok(Outgoing {
        packet: sealed.packet,
        seq,
        spi: entry.sa.params().spi,
        peer: entry.peer,
    })
}

fn open_failure(error: EspError) -> TargetDrop {
    match error {
        EspError::Authentication { .. } => TargetDrop::Authentication,
        EspError::Replay { .. } => TargetDrop::Replay,
        _ => TargetDrop::Malformed,
    }
}
