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
//!
//! ESP naming a known SPI from another outer source is dropped as [`TargetDrop::WrongSource`]
//! before anything is opened, so it never touches the replay window. Replay drops and ICV
//! failures are security events: each gives a line on the tracing target [`SECURITY_TARGET`],
//! at most one per SA and second ([`SecurityLog`]), time taken from the caller's `now_us`.

use crate::distributor::locate_esp_spi;
use crate::gre;
use crate::sa_table::SaTable;
use crate::wire::{self, Flow};
use dvipsec_cf::{ReplayVerdict, SequenceFacility};
use dvipsec_esp::ip;
use dvipsec_esp::{EspError, IpsecProtocol};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

/// The tracing target of security-event lines.
pub const SECURITY_TARGET: &str = "dvipsec::security";

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
    /// A shadow SA has the SPI, but for another peer: the outer source is spoofed (or the peer
    /// moved without IKE knowing). Nothing is opened and the replay window is not touched.
    WrongSource,
}

impl TargetDrop {
    /// Every cause, in counter order.
    pub const ALL: [TargetDrop; 11] = [
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
        TargetDrop::WrongSource,
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

    /// Inbound (figure 9): the IP packet at `buf[packet]`, received on `ingress`; security
    /// lines are rate-limited against the latest time a timed call passed in (prefer
    /// [`Target::inbound_at`]).
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

    /// Inbound (figure 9) received at `now_us` (the security log's clock).
    pub fn inbound_at<T: SaTable + ?Sized>(
        &mut self,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
        now_us: u64,
    ) -> Result<Delivery, TargetDrop> {
        self.paths
            .inbound_at(&self.facility, sas, ingress, buf, packet, now_us)
    }

    /// The security-event log's counts.
    pub fn security_log(&self) -> SecurityLogCounters {
        self.paths.security_log()
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
    security: SecurityLog,
    /// The latest `now_us` a timed call passed in, for [`TargetPaths::inbound`].
    latest_us: u64,
}

impl TargetPaths {
    /// Paths for the DVIPAs and XCF links in `config`.
    pub fn new(config: TargetConfig) -> Self {
        TargetPaths {
            config,
            counters: TargetCounters::default(),
            security: SecurityLog::default(),
            latest_us: 0,
        }
    }

    /// The security-event log's counts.
    pub fn security_log(&self) -> SecurityLogCounters {
        self.security.counters()
    }

    /// The counters.
    pub fn counters(&self) -> TargetCounters {
        self.counters
    }

    /// The configuration.
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// Inbound (figure 9) with `facility` for the shared replay window; security lines are
    /// rate-limited against the latest time a timed call passed in (prefer
    /// [`TargetPaths::inbound_at`]).
    pub fn inbound<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<Delivery, TargetDrop> {
        let now_us = self.latest_us;
        self.inbound_at(facility, sas, ingress, buf, packet, now_us)
    }

    /// Inbound (figure 9) received at `now_us`, with `facility` for the shared replay window.
    pub fn inbound_at<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        sas: &mut T,
        ingress: Ingress,
        buf: &mut [u8],
        packet: Range<usize>,
        now_us: u64,
    ) -> Result<Delivery, TargetDrop> {
        self.latest_us = self.latest_us.max(now_us);
        let result = self.open_inbound(facility, sas, ingress, buf, packet, now_us);
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
        self.latest_us = self.latest_us.max(now_us);
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
        now_us: u64,
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
        let Some(entry) = sas.inbound(location.spi, IpsecProtocol::Esp, location.src) else {
            if sas.knows_inbound_spi(location.spi, IpsecProtocol::Esp) {
                return Err(TargetDrop::WrongSource);
            }
            return Err(TargetDrop::UnknownSa);
        };
        let opened = match entry.sa.open(buf, esp) {
            Ok(opened) => opened,
            Err(error) => {
                let (cause, seq) = open_failure(error);
                if let Some(seq) = seq {
                    let event = SecurityEvent::for_drop(cause, &location, seq);
                    self.security.record(event, now_us);
                }
                return Err(cause);
            }
        };
        match facility.replay_check_and_set(entry.slot, opened.seq) {
            Ok(ReplayVerdict::Accepted) => {}
            Ok(_) => {
                let event = SecurityEvent::for_drop(TargetDrop::Replay, &location, opened.seq);
                self.security.record(event, now_us);
                return Err(TargetDrop::Replay);
            }
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

/// The drop cause of a failed open, with the (claimed) sequence number when it is a security
/// event.
fn open_failure(error: EspError) -> (TargetDrop, Option<u64>) {
    match error {
        EspError::Authentication { seq } => (TargetDrop::Authentication, Some(seq)),
        EspError::Replay { seq } => (TargetDrop::Replay, Some(seq)),
        _ => (TargetDrop::Malformed, None),
    }
}

/// One replay drop or ICV failure, as the security log sees it. Nothing secret: SPI,
/// addresses and the packet's (claimed, unauthenticated for ICV failures) sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityEvent {
    /// `TargetDrop::Replay` or `TargetDrop::Authentication`.
    pub cause: TargetDrop,
    /// The SA's SPI.
    pub spi: u32,
    /// The outer source (the peer).
    pub peer: IpAddr,
    /// The outer destination (the DVIPA).
    pub dvipa: IpAddr,
    /// The packet's sequence number.
    pub seq: u64,
}

impl SecurityEvent {
    fn for_drop(cause: TargetDrop, location: &crate::distributor::EspLocation, seq: u64) -> Self {
        SecurityEvent {
            cause,
            spi: location.spi,
            peer: location.src,
            dvipa: location.dst,
            seq,
        }
    }

    fn emit(&self, suppressed: u64) {
        let what = match self.cause {
            TargetDrop::Replay => "ESP replay dropped",
            _ => "ESP authentication failed",
        };
        tracing::warn!(
            target: SECURITY_TARGET,
            spi = format_args!("{:08x}", self.spi),
            peer = %self.peer,
            dvipa = %self.dvipa,
            seq = self.seq,
            suppressed,
            "{what}"
        );
    }
}

/// The security log's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityLogCounters {
    /// Lines written.
    pub lines: u64,
    /// Events not written because their SA had a line less than a second before (each is
    /// reported in the `suppressed` field of that SA's next line, if it comes).
    pub suppressed: u64,
}

/// Security lines per SA within one second.
const WINDOW_US: u64 = 1_000_000;
/// SAs whose rate state is kept; past it, SAs with no line in the last second are forgotten, and
/// if all had one the event is suppressed (the memory stays bounded under any flood).
const TRACKED_SAS: usize = 4_096;

/// Where an SA stands in its current second.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the SA's last line was written.
    started_us: u64,
    /// Events since then that gave no line.
    suppressed: u64,
}

/// Rate-limits security lines to one per SA (SPI and peer) and second; the next line carries
/// how many were suppressed in between. Sans-io: time is the `now_us` of each event.
#[derive(Debug, Default)]
pub struct SecurityLog {
    windows: HashMap<(u32, IpAddr), Window>,
    counters: SecurityLogCounters,
}

impl SecurityLog {
    /// The counts.
    pub fn counters(&self) -> SecurityLogCounters {
        self.counters
    }

    /// Writes a line for `event` at `now_us`, or counts it as suppressed.
    pub fn record(&mut self, event: SecurityEvent, now_us: u64) {
        let key = (event.spi, event.peer);
        if let Some(window) = self.windows.get_mut(&key) {
            if now_us.saturating_sub(window.started_us) < WINDOW_US {
                window.suppressed += 1;
                self.counters.suppressed += 1;
                return;
            }
            window.started_us = now_us;
            let suppressed = std::mem::take(&mut window.suppressed);
            self.write(&event, suppressed);
        } else if self.make_room(now_us) {
            let window = Window {
                started_us: now_us,
                suppressed: 0,
            };
            self.windows.insert(key, window);
            self.write(&event, 0);
        } else {
            self.counters.suppressed += 1;
        }
    }

    fn write(&mut self, event: &SecurityEvent, suppressed: u64) {
        self.counters.lines += 1;
        event.emit(suppressed);
    }

    /// Whether a new SA can be tracked, forgetting those whose second is over when needed.
    fn make_room(&mut self, now_us: u64) -> bool {
        if self.windows.len() >= TRACKED_SAS {
            self.windows
                .retain(|_, w| now_us.saturating_sub(w.started_us) < WINDOW_US);
        }
        self.windows.len() < TRACKED_SAS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gre::ENCAP_OVERHEAD;
    use crate::sa_table::ShadowSaTable;
    use crate::testbed::{
        selector, tunnel_sa_config, DISTRIBUTOR_XCF, DVIPA, KEY_TO_DVIPA, PEER_INNER, PEER_OUTER,
        SPI_TO_DVIPA,
    };
    use dvipsec_cf::{RegionOwner, SlotKey};
    use dvipsec_esp::ip::Family;
    use dvipsec_esp::{Direction, Sa};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    const TARGET_XCF: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);

    struct Bench {
        paths: TargetPaths,
        sas: ShadowSaTable,
        cf: RegionOwner,
        peer: Sa,
        _dir: tempfile::TempDir,
    }

    fn bench() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let cf = RegionOwner::create(&dir.path().join("cf"), 4).unwrap();
        let dvipa = IpAddr::V4(DVIPA);
        let key = SlotKey {
            dvipa,
            spi: SPI_TO_DVIPA,
        };
        let slot = cf.allocate(key, 128).unwrap();
        let sa = |direction| {
            let config =
                tunnel_sa_config(SPI_TO_DVIPA, direction, &KEY_TO_DVIPA, (PEER_OUTER, DVIPA));
            Sa::new(config).unwrap()
        };
        let mut sas = ShadowSaTable::new();
        let peer = IpAddr::V4(PEER_OUTER);
        sas.try_install_inbound(sa(Direction::Inbound), dvipa, peer, selector(), slot)
            .unwrap();
        let paths = TargetPaths::new(TargetConfig {
            xcf_address: TARGET_XCF,
            distributor_xcf: vec![DISTRIBUTOR_XCF],
            dvipas: vec![dvipa],
        });
        Bench {
            paths,
            sas,
            cf,
            peer: sa(Direction::Outbound),
            _dir: dir,
        }
    }

    /// The peer's ESP packet (UDP from its inner address to the DVIPA's port 60) numbered `seq`.
    fn esp(b: &mut Bench, seq: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 400];
        let src = SocketAddr::new(IpAddr::V4(PEER_INNER), 5000);
        let dst = SocketAddr::new(IpAddr::V4(DVIPA), 60);
        let len = wire::write_udp(&mut buf[100..], src, dst, b"security").unwrap();
        let sealed = b.peer.seal_with_seq(&mut buf, 100..100 + len, seq).unwrap();
        buf[sealed.packet].to_vec()
    }

    /// `esp` in GRE from `src` to `dst`.
    fn gre(esp: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut head = [0u8; ENCAP_OVERHEAD];
        gre::write_encap(&mut head, src, dst, Family::V4, esp.len()).unwrap();
        [&head[..], esp].concat()
    }

    fn receive(
        b: &mut Bench,
        ingress: Ingress,
        packet: &[u8],
        now_us: u64,
    ) -> Result<Delivery, TargetDrop> {
        let mut buf = packet.to_vec();
        let len = buf.len();
        b.paths
            .inbound_at(&b.cf, &mut b.sas, ingress, &mut buf, 0..len, now_us)
    }

    #[test]
    fn gre_from_off_the_xcf_network_or_not_from_a_distributor_is_spoofed() {
        let mut b = bench();
        let packet = esp(&mut b, 1);
        let refused = [
            // Not on the XCF network at all, arriving from outside.
            (Ingress::External, Ipv4Addr::new(192, 0, 2, 50), TARGET_XCF),
            // Not on the XCF network, on the XCF port.
            (Ingress::Xcf, Ipv4Addr::new(192, 0, 2, 50), TARGET_XCF),
            // On the XCF network, but no distributor of ours.
            (Ingress::Xcf, Ipv4Addr::new(10, 9, 0, 66), TARGET_XCF),
            // Our distributor's address, but from the external port.
            (Ingress::External, DISTRIBUTOR_XCF, TARGET_XCF),
            // Our distributor, but to another box.
            (Ingress::Xcf, DISTRIBUTOR_XCF, Ipv4Addr::new(10, 9, 0, 11)),
        ];
        for (ingress, src, dst) in refused {
            let spoofed = gre(&packet, src, dst);
            assert_eq!(
                receive(&mut b, ingress, &spoofed, 0),
                Err(TargetDrop::SpoofedGre)
            );
        }
        assert_eq!(b.paths.counters().dropped(TargetDrop::SpoofedGre), 5);
        // None of them reached the window: the same packet from the distributor is delivered.
        let genuine = gre(&packet, DISTRIBUTOR_XCF, TARGET_XCF);
        assert!(receive(&mut b, Ingress::Xcf, &genuine, 0).is_ok());
        assert_eq!(b.paths.counters().forwarded_in, 1);
    }

    #[test]
    fn a_known_spi_from_the_wrong_source_is_dropped_and_leaves_the_window_alone() {
        let mut b = bench();
        let packet = esp(&mut b, 5);
        let mut spoofed = packet.clone();
        spoofed[12..16].copy_from_slice(&[192, 0, 2, 66]);
        ip::fix_ipv4_checksum(&mut spoofed[..20]);
        let forwarded = gre(&spoofed, DISTRIBUTOR_XCF, TARGET_XCF);
        assert_eq!(
            receive(&mut b, Ingress::External, &spoofed, 0),
            Err(TargetDrop::WrongSource)
        );
        assert_eq!(
            receive(&mut b, Ingress::Xcf, &forwarded, 0),
            Err(TargetDrop::WrongSource)
        );
        let counters = b.paths.counters();
        assert_eq!(counters.dropped(TargetDrop::WrongSource), 2);
        assert_eq!(counters.dropped(TargetDrop::UnknownSa), 0);
        // Number 5 is still unused in the CF's window: the genuine packet is delivered.
        assert!(receive(&mut b, Ingress::External, &packet, 0).is_ok());
        assert_eq!(
            receive(&mut b, Ingress::External, &packet, 1),
            Err(TargetDrop::Replay)
        );
    }

    /// One line's fields as (name, value).
    type Line = Vec<(String, String)>;

    /// Security lines seen by a subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<Line>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl tracing::Subscriber for Lines {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if event.metadata().target() == SECURITY_TARGET {
                let mut fields = Vec::new();
                event.record(&mut Fields(&mut fields));
                self.0.lock().unwrap().push(fields);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    impl Lines {
        fn field(&self, line: usize, name: &str) -> String {
            let lines = self.0.lock().unwrap();
            let found = lines[line].iter().find(|(n, _)| n == name);
            found.map(|(_, v)| v.clone()).unwrap_or_default()
        }

        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[test]
    fn replay_and_icv_lines_are_limited_to_one_per_sa_and_second() {
        let lines = Lines::default();
        let mut b = bench();
        tracing::subscriber::with_default(lines.clone(), || {
            let first = esp(&mut b, 1);
            assert!(receive(&mut b, Ingress::External, &first, 0).is_ok());
            // Ten replays within one second: one line.
            for now in 0..10 {
                assert_eq!(
                    receive(&mut b, Ingress::External, &first, now),
                    Err(TargetDrop::Replay)
                );
            }
            assert_eq!(lines.count(), 1, "{:?}", b.paths.security_log());
            // A second later: the next line says how many were left out.
            assert!(receive(&mut b, Ingress::External, &first, 1_000_000).is_err());
            assert_eq!(lines.count(), 2);
            assert_eq!(lines.field(1, "suppressed"), "9");
            // An ICV failure on the same SA shares its limit.
            let mut forged = esp(&mut b, 2);
            let last = forged.len() - 1;
            forged[last] ^= 1;
            for now in [1_000_001, 2_000_001] {
                let drop = receive(&mut b, Ingress::External, &forged, now);
                assert_eq!(drop, Err(TargetDrop::Authentication));
            }
        });
        assert_eq!(lines.count(), 3);
        assert_eq!(lines.field(2, "suppressed"), "1");
        assert_eq!(lines.field(2, "message"), "ESP authentication failed");
        assert_eq!(lines.field(2, "spi"), format!("{SPI_TO_DVIPA:08x}"));
        assert_eq!(lines.field(2, "peer"), PEER_OUTER.to_string());
        assert_eq!(lines.field(2, "seq"), "2");
        let names: Vec<String> = lines.0.lock().unwrap()[2]
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(
            names,
            ["message", "spi", "peer", "dvipa", "seq", "suppressed"],
            "no key material"
        );
        let counts = b.paths.security_log();
        assert_eq!((counts.lines, counts.suppressed), (3, 10));
    }

    #[test]
    fn the_security_log_tracks_a_bounded_number_of_sas() {
        let mut log = SecurityLog::default();
        let event = |spi| SecurityEvent {
            cause: TargetDrop::Replay,
            spi,
            peer: IpAddr::V4(PEER_OUTER),
            dvipa: IpAddr::V4(DVIPA),
            seq: 1,
        };
        let flood = TRACKED_SAS as u32 + 10;
        // A subscriber of its own: the line callsite is then never registered as unwanted while
        // the other test's subscriber is being set up on another thread.
        let lines = Lines::default();
        tracing::subscriber::with_default(lines.clone(), || {
            for spi in 0..flood {
                log.record(event(spi), 0);
            }
            assert_eq!(log.windows.len(), TRACKED_SAS);
            // A second later the old windows are over and make room for new SAs.
            log.record(event(flood), WINDOW_US);
        });
        let counts = log.counters();
        assert_eq!(
            (counts.lines, counts.suppressed),
            (TRACKED_SAS as u64 + 1, 10)
        );
        assert_eq!(lines.count(), TRACKED_SAS + 1);
        assert_eq!(log.windows.len(), 1);
    }
}
