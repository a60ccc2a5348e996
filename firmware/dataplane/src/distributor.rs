//! The distributor's inbound dispatch (seed figure 8), sans-io: a burst of packets in, one
//! decision per packet out ([`Distributor::dispatch_burst`]; [`Distributor::dispatch`] is a burst
//! of one).
//!
//! Per packet: parse the outer IP header (and UDP 4500 with its non-ESP marker, which means IKE),
//! find the SA by (SPI, protocol, source), peek to the inner 5-tuple, classify the combination
//! with the seed's table, look the connection up in the DCT (a SYN to a distributed port selects
//! a target and adds an entry), check the tunnel (the inner addresses are ones this SA's filter
//! rule covers), and pre-check the sequence number against the CF's replay window without
//! updating it (RFC 4303 section 3.4.3: only the target, after the ICV verified, updates it).
//! A burst is decided in two passes: outer headers and SA lookups for every packet, then one
//! [`peek_burst_flows`] over those that found an SA (several SAs' counter blocks encrypted
//! together), then the rest of the checks packet by packet in arrival order, so every packet
//! gets the decision it would get alone.
//!
//! Peek output is unauthenticated. Here it only chooses where a packet goes: the one state it can
//! create is a bounded, half-open DCT entry that expires by itself (see [`crate::dct`]); nothing is
//! ever delivered on the strength of a peek.

use crate::dct::{Dct, DctConfig, DctCounters, FlowKey, TargetId};
use crate::sa_table::{InboundSa, SaTable};
use crate::select::{TargetLoad, TargetSelector};
use dvipsec_cf::{ReplayVerdict, SequenceFacility};
use dvipsec_esp::classify::Protection;
use dvipsec_esp::ip::{self, proto};
use dvipsec_esp::{
    classify, peek_burst_flows, Combination, EspError, IpsecProtocol, Mode, PeekFlow, Sa,
    Unauthenticated, MAX_PEEK_BURST,
};
use std::net::{IpAddr, Ipv4Addr};

/// Packets decided per pass of [`Distributor::dispatch_burst`] (longer bursts take several).
pub const DISPATCH_BURST: usize = MAX_PEEK_BURST;

/// UDP port of IKE with NAT traversal, which also carries UDP-encapsulated ESP (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// UDP port of IKE.
pub const IKE_PORT: u16 = 500;

/// A target the distributor can forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its id.
    pub id: TargetId,
    /// Its address on the XCF network (the GRE destination).
    pub xcf_address: Ipv4Addr,
}

/// A DVIPA port whose connections are distributed (VIPADISTRIBUTE ... PORT ... DESTIP ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedPort {
    /// The DVIPA.
    pub dvipa: IpAddr,
    /// Transport protocol (6 TCP, 17 UDP).
    pub protocol: u8,
    /// The port.
    pub port: u16,
    /// The targets that serve it.
    pub targets: Vec<TargetId>,
}

/// The distributor's data-plane configuration.
#[derive(Debug, Clone)]
pub struct DistributorConfig {
    /// Our address on the XCF network (the GRE source).
    pub xcf_address: Ipv4Addr,
    /// Every target.
    pub targets: Vec<TargetInfo>,
    /// The distributed ports.
    pub ports: Vec<DistributedPort>,
    /// The DCT's size and timeouts.
    pub dct: DctConfig,
    /// A target's load report older than this is ignored (µs).
    pub load_stale_after_us: u64,
    /// Treat a UDP datagram to a distributed UDP port like a SYN when no entry exists. The seed's
    /// table distributes TCP only; this extension lets a UDP service be spread the same way
    /// (the entry then ends by idle timeout).
    pub distribute_udp: bool,
}

/// Why a packet is processed by the distributor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalReason {
    /// IKE (UDP 500, or UDP 4500 with the non-ESP marker).
    Ike,
    /// Neither ESP nor IKE: ordinary traffic for the stack.
    NotIpsec,
    /// The seed's table says the combination is not distributable.
    NotDistributable,
    /// Not a SYN and no DCT entry, or not to a distributed port.
    NotDistributed,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropCause {
    /// The outer headers are malformed (or a fragment).
    Malformed,
    /// A NAT keepalive (one 0xff byte on UDP 4500): consumed.
    NatKeepalive,
    /// No SA for (SPI, protocol, source).
    UnknownSa,
    /// Peek failed (truncated or garbled ciphertext).
    PeekFailed,
    /// The inner addresses are not covered by the SA's filter rule.
    TunnelCheck,
    /// The sequence number is a replay or left of the CF's window.
    Replay,
    /// The DCT is full.
    DctFull,
    /// No target serves the port.
    NoTarget,
    /// The CF could not answer.
    Facility,
    /// An SA has the SPI, but for another peer: the outer source is spoofed (or the peer moved
    /// without IKE knowing). Dropped before peek, so no DCT entry and no replay check.
    WrongSource,
}

impl DropCause {
    /// Every cause, in counter order.
    pub const ALL: [DropCause; 10] = [
        DropCause::Malformed,
        DropCause::NatKeepalive,
        DropCause::UnknownSa,
        DropCause::PeekFailed,
        DropCause::TunnelCheck,
        DropCause::Replay,
        DropCause::DctFull,
        DropCause::NoTarget,
        DropCause::Facility,
        DropCause::WrongSource,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// What to do with one inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wrap in GRE and send over XCF to the target.
    Forward {
        /// The target.
        target: TargetId,
        /// Its XCF address.
        xcf_address: Ipv4Addr,
    },
    /// Process here.
    Local(LocalReason),
    /// Drop, counted under the cause.
    Drop(DropCause),
}

/// The distributor's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DistributorCounters {
    /// Packets peeked.
    pub peeked: u64,
    /// Packets forwarded to targets.
    pub forwarded: u64,
    /// Packets handed to local processing.
    pub local: u64,
    /// Drops by cause, indexed like [`DropCause::ALL`].
    pub drops: [u64; DropCause::ALL.len()],
}

impl DistributorCounters {
    /// Drops counted under `cause`.
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops[cause.index()]
    }
}

/// What the outer headers of an ESP packet say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspLocation {
    /// The SPI.
    pub spi: u32,
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
}

/// The distributor's dispatch state: DCT, selector, counters.
#[derive(Debug)]
pub struct Distributor {
    config: DistributorConfig,
    dct: Dct,
    selector: TargetSelector,
    counters: DistributorCounters,
    /// Targets that failed: no new connections go to them.
    down: Vec<TargetId>,
    /// The seed's table for ESP, answered once for every combination at construction.
    distributable: DistributableTable,
    /// The burst peek's results, [`DISPATCH_BURST`] of them, filled once at construction: a
    /// pass overwrites the ones it reads, instead of filling a fresh array (2 KiB) per pass.
    peeked: Vec<PeekResult>,
}

/// What the burst peek says of one packet.
type PeekResult = Result<Unauthenticated<PeekFlow>, EspError>;

/// [`is_crypto_distributable`] for ESP, looked up instead of worked out per packet: the
/// classifier is a pure function of five two-valued inputs, so 32 answers are all of it.
#[derive(Debug, Clone)]
struct DistributableTable([bool; 32]);

impl DistributableTable {
    fn new() -> Self {
        let mut answers = [false; 32];
        for (index, answer) in answers.iter_mut().enumerate() {
            let bit = |n: usize| index & (1 << n) != 0;
            let combination = Combination {
                protection: Protection::Esp,
                mode: if bit(0) {
                    Mode::Tunnel
                } else {
                    Mode::Transport
                },
                payload_is_tcp: bit(1),
                dvipa_in_outer: bit(2),
                dvipa_in_inner: bit(3),
                esp_null: bit(4),
            };
            debug_assert_eq!(Self::index(&combination), index);
            *answer = is_crypto_distributable(&combination);
        }
        DistributableTable(answers)
    }

    fn index(combination: &Combination) -> usize {
        // Exhaustive: a new mode must get its own place in the table.
        let mode = match combination.mode {
            Mode::Transport => 0,
            Mode::Tunnel => 1,
        };
        mode | usize::from(combination.payload_is_tcp) << 1
            | usize::from(combination.dvipa_in_outer) << 2
            | usize::from(combination.dvipa_in_inner) << 3
            | usize::from(combination.esp_null) << 4
    }

    /// The answer for an ESP combination (any other protection is worked out).
    fn lookup(&self, combination: &Combination) -> bool {
        if combination.protection != Protection::Esp {
            return is_crypto_distributable(combination);
        }
        self.0[Self::index(combination)]
    }
}

impl Distributor {
    /// A distributor with an empty DCT.
    pub fn new(config: DistributorConfig) -> Self {
        let ids: Vec<TargetId> = config.targets.iter().map(|t| t.id).collect();
        Distributor {
            dct: Dct::new(config.dct),
            selector: TargetSelector::new(&ids, config.load_stale_after_us),
            config,
            counters: DistributorCounters::default(),
            down: Vec::new(),
            distributable: DistributableTable::new(),
            peeked: vec![Err(NOT_PEEKED); DISPATCH_BURST],
        }
    }

    /// The target whose XCF address is `xcf_address`.
    fn target_at(&self, xcf_address: Ipv4Addr) -> Option<TargetId> {
        self.config
            .targets
            .iter()
            .find(|t| t.xcf_address == xcf_address)
            .map(|t| t.id)
    }

    /// Puts a connection a target reported (CONN_REPORT after a takeover) back in the DCT, so
    /// it keeps its target without a new SYN. False when the target is unknown or the DCT full.
    pub fn restore(&mut self, key: FlowKey, xcf_address: Ipv4Addr, now_us: u64) -> bool {
        let Some(id) = self.target_at(xcf_address) else {
            return false;
        };
        self.dct.restore(key, id, now_us).is_ok()
    }

    /// Marks the target at `xcf_address` failed (`down`) or back. A failed target's
    /// connections end (its DCT entries go) and new ones go to the others. Returns the entries
    /// ended.
    pub fn set_target_down(&mut self, xcf_address: Ipv4Addr, down: bool) -> usize {
        let Some(id) = self.target_at(xcf_address) else {
            return 0;
        };
        self.down.retain(|d| *d != id);
        if !down {
            return 0;
        }
        self.down.push(id);
        let ended: Vec<FlowKey> = self
            .dct
            .entries()
            .filter(|(_, target)| *target == id)
            .map(|(key, _)| *key)
            .collect();
        for key in &ended {
            self.dct.remove(key);
        }
        ended.len()
    }

    /// The counters.
    pub fn counters(&self) -> DistributorCounters {
        self.counters
    }

    /// The DCT's counters.
    pub fn dct_counters(&self) -> DctCounters {
        self.dct.counters()
    }

    /// The DCT (read-only).
    pub fn dct(&self) -> &Dct {
        &self.dct
    }

    /// Our XCF address.
    pub fn xcf_address(&self) -> Ipv4Addr {
        self.config.xcf_address
    }

    /// Records a target's load report.
    pub fn report_load(&mut self, target: TargetId, load: TargetLoad, now_us: u64) -> bool {
        self.selector.report_load(target, load, now_us)
    }

    /// Ends DCT entries that timed out; call now and then from the polling loop.
    pub fn expire(&mut self, now_us: u64) -> usize {
        self.dct.expire(now_us)
    }

    /// Decides what to do with the inbound IP `packet` received at `now_us`: a burst of one.
    pub fn dispatch<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        sas: &mut T,
        facility: &F,
        packet: &[u8],
        now_us: u64,
    ) -> Decision {
        let mut decision = [Decision::Drop(DropCause::Malformed)];
        self.dispatch_burst(&*sas, facility, &[packet], now_us, &mut decision);
        decision[0]
    }

    /// Decides what to do with each inbound IP packet of `packets`, received at `now_us`, into
    /// `out` (the same index); returns how many were decided, `min(packets.len(), out.len())`.
    /// Each decision and the counters are those of [`Distributor::dispatch`] called on the
    /// packets one after the other; the peeks are done together. Allocates nothing.
    pub fn dispatch_burst<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        sas: &T,
        facility: &F,
        packets: &[&[u8]],
        now_us: u64,
        out: &mut [Decision],
    ) -> usize {
        let count = packets.len().min(out.len());
        let passes = packets[..count]
            .chunks(DISPATCH_BURST)
            .zip(out[..count].chunks_mut(DISPATCH_BURST));
        for (chunk, decisions) in passes {
            self.dispatch_pass(sas, facility, chunk, now_us, decisions);
            for decision in decisions.iter() {
                self.count(*decision);
            }
        }
        count
    }

    fn count(&mut self, decision: Decision) {
        match decision {
            Decision::Forward { .. } => self.counters.forwarded += 1,
            Decision::Local(_) => self.counters.local += 1,
            Decision::Drop(cause) => self.counters.drops[cause.index()] += 1,
        }
    }

    /// One pass over at most [`DISPATCH_BURST`] packets. The first loop changes no state (it
    /// only reads headers and SAs), so deciding the peeked packets afterwards, in order, gives
    /// each the DCT and selector state it would have met alone.
    fn dispatch_pass<T: SaTable + ?Sized, F: SequenceFacility + ?Sized>(
        &mut self,
        sas: &T,
        facility: &F,
        packets: &[&[u8]],
        now_us: u64,
        out: &mut [Decision],
    ) {
        // Per packet to peek: its SA entry, outer destination and index in `out`.
        let mut found: [Option<(&InboundSa, IpAddr, usize)>; DISPATCH_BURST] =
            [None; DISPATCH_BURST];
        // `peek_burst_flows` wants the pairs contiguous; the array is filled with the first
        // pair found, only as a placeholder for the slots past `to_peek`.
        let mut pairs: Option<[(&Sa, &[u8]); DISPATCH_BURST]> = None;
        let mut to_peek = 0;
        let mut last = None;
        for (index, (&packet, decision)) in packets.iter().zip(out.iter_mut()).enumerate() {
            match find_sa(sas, packet, &mut last) {
                Ok((entry, outer_dst)) => {
                    let pair = (&entry.sa, packet);
                    pairs.get_or_insert([pair; DISPATCH_BURST])[to_peek] = pair;
                    found[to_peek] = Some((entry, outer_dst, index));
                    to_peek += 1;
                }
                Err(early) => *decision = early,
            }
        }
        let Some(pairs) = pairs else {
            return;
        };
        self.counters.peeked += to_peek as u64;
        // Taken out for the pass (three words moved), so that `decide` may borrow `self`. The
        // peek writes every slot it is given, so no result of an earlier pass is read.
        let mut flows = std::mem::take(&mut self.peeked);
        peek_burst_flows(&pairs[..to_peek], &mut flows[..to_peek]);
        for (slot, peeked) in found[..to_peek].iter().zip(&flows) {
            let Some((entry, outer_dst, index)) = *slot else {
                continue;
            };
            let decision = match peeked {
                Ok(flow) => self.decide(facility, entry, outer_dst, flow.unverified(), now_us),
                Err(_) => Decision::Drop(DropCause::PeekFailed),
            };
            if let Some(out) = out.get_mut(index) {
                *out = decision;
            }
        }
        self.peeked = flows;
    }

    /// Everything after the peek, for one packet whose SA is `entry`.
    fn decide<F: SequenceFacility + ?Sized>(
        &mut self,
        facility: &F,
        entry: &InboundSa,
        outer_dst: IpAddr,
        flow: &PeekFlow,
        now_us: u64,
    ) -> Decision {
        let params = entry.sa.params();
        let (src, dst) = (flow.src(), flow.dst());
        let udp_as_connection = self.config.distribute_udp && flow.protocol == proto::UDP;
        let combination = Combination {
            protection: Protection::Esp,
            mode: params.mode,
            payload_is_tcp: flow.protocol == proto::TCP || udp_as_connection,
            dvipa_in_outer: outer_dst == entry.dvipa,
            dvipa_in_inner: dst == entry.dvipa,
            esp_null: !params.suite.encrypts(),
        };
        if !self.distributable.lookup(&combination) {
            return Decision::Local(LocalReason::NotDistributable);
        }
        if !entry.selector.covers_inbound(src, dst) {
            return Decision::Drop(DropCause::TunnelCheck);
        }
        let key = FlowKey {
            src,
            dst,
            protocol: flow.protocol,
            src_port: flow.src_port,
            dst_port: flow.dst_port,
        };
        let target = match self.steer(key, flow.tcp_flags, flow.syn(), now_us) {
            Ok(target) => target,
            Err(decision) => return decision,
        };
        // The burst peek reports the header's low 32 bits; the SA infers the high half (ESN)
        // from its window exactly as a single peek does.
        let seq = entry.sa.infer_sequence(flow.seq_lo);
        match facility.replay_check(entry.slot, seq) {
            Ok(ReplayVerdict::Accepted) => {}
            Ok(_) => return Decision::Drop(DropCause::Replay),
            Err(_) => return Decision::Drop(DropCause::Facility),
        }
        match self.config.targets.iter().find(|t| t.id == target) {
            Some(info) => Decision::Forward {
                target,
                xcf_address: info.xcf_address,
            },
            None => Decision::Drop(DropCause::NoTarget),
        }
    }

    /// The DCT part of figure 8: an existing entry, or a new one for a SYN to a distributed port.
    fn steer(
        &mut self,
        key: FlowKey,
        tcp_flags: Option<u8>,
        syn: bool,
        now_us: u64,
    ) -> Result<TargetId, Decision> {
        if let Some(target) = self.dct.touch(&key, tcp_flags, now_us) {
            return Ok(target);
        }
        let opens = syn || (self.config.distribute_udp && key.protocol == proto::UDP);
        let port =
            self.config.ports.iter().find(|p| {
                p.dvipa == key.dst && p.protocol == key.protocol && p.port == key.dst_port
            });
        let Some(port) = port.filter(|_| opens) else {
            return Err(Decision::Local(LocalReason::NotDistributed));
        };
        let eligible: Vec<TargetId>;
        let targets = if self.down.is_empty() {
            &port.targets
        } else {
            eligible = port
                .targets
                .iter()
                .filter(|t| !self.down.contains(t))
                .copied()
                .collect();
            &eligible
        };
        let Some(target) = self.selector.select(targets, now_us) else {
            return Err(Decision::Drop(DropCause::NoTarget));
        };
        self.dct
            .insert(key, target, now_us)
            .map_err(|_| Decision::Drop(DropCause::DctFull))?;
        Ok(target)
    }
}

/// What a result slot holds before the burst peek first writes it (never read).
const NOT_PEEKED: EspError = EspError::Truncated {
    layer: "not peeked",
    offset: 0,
    needed: 0,
    len: 0,
};

/// The SA a burst's previous packet found, by (SPI, outer source).
type LastSa<'t> = Option<(u32, IpAddr, &'t InboundSa)>;

/// The checks before peek: the outer headers, then the SA by (SPI, protocol, source). The SA
/// entry and the outer destination, or the decision for a packet that goes no further. A burst
/// mostly holds runs of one SA's packets: `last` spares the table lookup (a keyed hash, a third
/// of the dispatch's time) for a packet with the previous one's SPI and source. The table does
/// not change during a burst, so the answer is the lookup's.
fn find_sa<'t, T: SaTable + ?Sized>(
    sas: &'t T,
    packet: &[u8],
    last: &mut LastSa<'t>,
) -> Result<(&'t InboundSa, IpAddr), Decision> {
    let outer = locate_esp_spi(packet)?;
    if let Some((spi, src, entry)) = *last {
        if spi == outer.spi && src == outer.src {
            return Ok((entry, outer.dst));
        }
    }
    match sas.inbound_shared(outer.spi, IpsecProtocol::Esp, outer.src) {
        Some(entry) => {
            *last = Some((outer.spi, outer.src, entry));
            Ok((entry, outer.dst))
        }
        None if sas.knows_inbound_spi(outer.spi, IpsecProtocol::Esp) => {
            Err(Decision::Drop(DropCause::WrongSource))
        }
        None => Err(Decision::Drop(DropCause::UnknownSa)),
    }
}

/// Finds the SPI of an ESP or UDP-encapsulated ESP packet, or says why there is none. Inlined:
/// returned through memory, its answer cost a stalled reload per packet.
#[inline]
pub(crate) fn locate_esp_spi(packet: &[u8]) -> Result<EspLocation, Decision> {
    let view = ip::parse(packet).map_err(|_| Decision::Drop(DropCause::Malformed))?;
    let packet = &packet[..view.total_len];
    let (src, dst) = ip::addresses(packet, view.family);
    let at = view.header_len;
    let spi_at = match view.proto {
        proto::ESP => at,
        proto::UDP => {
            let udp = packet
                .get(at..at + 8)
                .ok_or(Decision::Drop(DropCause::Malformed))?;
            let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
            if dst_port == IKE_PORT {
                return Err(Decision::Local(LocalReason::Ike));
            }
            if dst_port != NAT_T_PORT {
                return Err(Decision::Local(LocalReason::NotIpsec));
            }
            let body = &packet[at + 8..];
            if body == [0xff] {
                return Err(Decision::Drop(DropCause::NatKeepalive));
            }
            if body.len() >= 4 && body[..4] == [0, 0, 0, 0] {
                return Err(Decision::Local(LocalReason::Ike));
            }
            at + 8
        }
        _ => return Err(Decision::Local(LocalReason::NotIpsec)),
    };
    let spi_bytes = packet
        .get(spi_at..spi_at + 4)
        .ok_or(Decision::Drop(DropCause::Malformed))?;
    let spi = u32::from_be_bytes([spi_bytes[0], spi_bytes[1], spi_bytes[2], spi_bytes[3]]);
    Ok(EspLocation { spi, src, dst })
}

/// The seed's table: the connection may go to a target and the target may do the crypto.
fn is_crypto_distributable(combination: &Combination) -> bool {
    let answer = classify(combination);
    answer.sysplex_distributable && answer.crypto_distributable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dct::tcp_flags::{FIN, SYN};
    use crate::sa_table::ShadowSaTable;
    use crate::testbed::{
        selector, tunnel_sa_config, DVIPA, KEY_TO_DVIPA, PEER_INNER, PEER_OUTER, SPI_TO_DVIPA,
    };
    use dvipsec_cf::{RegionOwner, SlotKey};
    use dvipsec_esp::{Direction, Sa, UdpEncap};

    #[test]
    fn distributable_table_answers_as_the_classifier_does() {
        let table = DistributableTable::new();
        let mut seen = [0u32; 2];
        for index in 0..32usize {
            let bit = |n: usize| index & (1 << n) != 0;
            for protection in [Protection::Esp, Protection::Ah, Protection::AhEsp] {
                let combination = Combination {
                    protection,
                    mode: if bit(0) {
                        Mode::Tunnel
                    } else {
                        Mode::Transport
                    },
                    payload_is_tcp: bit(1),
                    dvipa_in_outer: bit(2),
                    dvipa_in_inner: bit(3),
                    esp_null: bit(4),
                };
                let answer = table.lookup(&combination);
                assert_eq!(
                    answer,
                    is_crypto_distributable(&combination),
                    "{combination:?}"
                );
                seen[usize::from(answer)] += 1;
            }
        }
        // The table is not trivially one answer.
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    const ACK_ONLY: u8 = 0x10;
    const ACK: u8 = ACK_ONLY;

    struct Bench {
        distributor: Distributor,
        sas: ShadowSaTable,
        cf: RegionOwner,
        sender: Sa,
        _dir: tempfile::TempDir,
    }

    fn sa_with(direction: Direction, udp_encap: Option<UdpEncap>) -> Sa {
        let mut config =
            tunnel_sa_config(SPI_TO_DVIPA, direction, &KEY_TO_DVIPA, (PEER_OUTER, DVIPA));
        config.udp_encap = udp_encap;
        Sa::new(config).unwrap()
    }

    fn bench() -> Bench {
        bench_with(Some(UdpEncap::NAT_T))
    }

    fn bench_with(udp_encap: Option<UdpEncap>) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let cf = RegionOwner::create(&dir.path().join("cf"), 4).unwrap();
        let dvipa = IpAddr::V4(DVIPA);
        let slot = cf
            .allocate(
                SlotKey {
                    dvipa,
                    spi: SPI_TO_DVIPA,
                },
                128,
            )
            .unwrap();
        let mut sas = ShadowSaTable::new();
        sas.install_inbound(
            sa_with(Direction::Inbound, udp_encap),
            dvipa,
            IpAddr::V4(PEER_OUTER),
            selector(),
            slot,
        );
        let targets = [TargetId(0), TargetId(1)];
        let config = DistributorConfig {
            xcf_address: Ipv4Addr::new(10, 9, 0, 1),
            targets: targets
                .iter()
                .map(|&id| TargetInfo {
                    id,
                    xcf_address: Ipv4Addr::new(10, 9, 0, 10 + id.0 as u8),
                })
                .collect(),
            ports: vec![DistributedPort {
                dvipa,
                protocol: proto::TCP,
                port: 60,
                targets: targets.to_vec(),
            }],
            dct: DctConfig {
                capacity: 4,
                idle_timeout_us: 1_000,
                half_open_timeout_us: 100,
                fin_linger_us: 50,
            },
            load_stale_after_us: 1_000_000,
            distribute_udp: false,
        };
        Bench {
            distributor: Distributor::new(config),
            sas,
            cf,
            sender: sa_with(Direction::Outbound, udp_encap),
            _dir: dir,
        }
    }

    /// An inner IPv4 + TCP segment from `src` to the DVIPA, sealed with sequence number `seq`.
    fn tcp(b: &mut Bench, src: Ipv4Addr, sport: u16, dport: u16, flags: u8, seq: u64) -> Vec<u8> {
        tcp_with(&mut b.sender, src, sport, dport, flags, seq)
    }

    /// [`tcp`] sealed by `sender`.
    fn tcp_with(
        sender: &mut Sa,
        src: Ipv4Addr,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u64,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 300];
        let inner = &mut buf[100..140];
        inner[0] = 0x45;
        inner[2..4].copy_from_slice(&40u16.to_be_bytes());
        inner[8] = 64;
        inner[9] = proto::TCP;
        inner[12..16].copy_from_slice(&src.octets());
        inner[16..20].copy_from_slice(&DVIPA.octets());
        ip::fix_ipv4_checksum(inner);
        inner[20..22].copy_from_slice(&sport.to_be_bytes());
        inner[22..24].copy_from_slice(&dport.to_be_bytes());
        inner[32] = 5 << 4;
        inner[33] = flags;
        let sealed = sender.seal_with_seq(&mut buf, 100..140, seq).unwrap();
        buf[sealed.packet].to_vec()
    }

    fn dispatch(b: &mut Bench, packet: &[u8], now: u64) -> Decision {
        b.distributor.dispatch(&mut b.sas, &b.cf, packet, now)
    }

    fn forwarded_to(decision: Decision) -> Option<TargetId> {
        match decision {
            Decision::Forward { target, .. } => Some(target),
            _ => None,
        }
    }

    #[test]
    fn syn_selects_a_target_and_the_connection_sticks_to_it() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 1);
        let target = forwarded_to(dispatch(&mut b, &syn, 0)).unwrap();
        for seq in 2..10 {
            let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, seq);
            assert_eq!(forwarded_to(dispatch(&mut b, &ack, seq)), Some(target));
        }
        // A second connection goes to the other target (round-robin without load reports).
        let other = tcp(&mut b, PEER_INNER, 1001, 60, SYN, 20);
        assert_ne!(forwarded_to(dispatch(&mut b, &other, 20)), Some(target));
        assert_eq!(b.distributor.counters().peeked, 10);
    }

    #[test]
    fn a_restored_connection_keeps_its_target_without_a_syn() {
        let mut b = bench();
        let key = FlowKey {
            src: IpAddr::V4(PEER_INNER),
            dst: IpAddr::V4(DVIPA),
            protocol: proto::TCP,
            src_port: 1000,
            dst_port: 60,
        };
        let second = Ipv4Addr::new(10, 9, 0, 11);
        assert!(!b.distributor.restore(key, Ipv4Addr::new(10, 9, 0, 99), 0));
        assert!(b.distributor.restore(key, second, 0));
        let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 1);
        assert_eq!(forwarded_to(dispatch(&mut b, &ack, 1)), Some(TargetId(1)));
    }

    #[test]
    fn a_failed_target_loses_its_connections_and_gets_no_new_ones() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 1);
        let failed = forwarded_to(dispatch(&mut b, &syn, 0)).unwrap();
        let address = Ipv4Addr::new(10, 9, 0, 10 + failed.0 as u8);
        assert_eq!(b.distributor.set_target_down(address, true), 1);
        // The connection ended with its target: a later segment is no longer forwarded.
        let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 2);
        assert_eq!(forwarded_to(dispatch(&mut b, &ack, 2)), None);
        for (port, seq) in [(1001, 3), (1002, 4), (1003, 5)] {
            let syn = tcp(&mut b, PEER_INNER, port, 60, SYN, seq);
            let target = forwarded_to(dispatch(&mut b, &syn, seq)).unwrap();
            assert_ne!(target, failed, "a new connection went to the failed target");
        }
        // Back up, it is chosen again.
        b.distributor.set_target_down(address, false);
        let chosen: Vec<_> = [(1004, 6), (1005, 7)]
            .into_iter()
            .filter_map(|(port, seq)| {
                let syn = tcp(&mut b, PEER_INNER, port, 60, SYN, seq);
                forwarded_to(dispatch(&mut b, &syn, seq))
            })
            .collect();
        assert!(chosen.contains(&failed), "{chosen:?}");
    }

    #[test]
    fn plain_esp_without_udp_is_dispatched_too() {
        let mut b = bench_with(None);
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 1);
        assert_eq!(syn[9], proto::ESP);
        let target = forwarded_to(dispatch(&mut b, &syn, 0));
        assert!(target.is_some());
        let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 2);
        assert_eq!(forwarded_to(dispatch(&mut b, &ack, 1)), target);
    }

    #[test]
    fn non_syn_without_entry_and_undistributed_ports_are_local() {
        let mut b = bench();
        let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 1);
        assert_eq!(
            dispatch(&mut b, &ack, 0),
            Decision::Local(LocalReason::NotDistributed)
        );
        let syn_elsewhere = tcp(&mut b, PEER_INNER, 1000, 80, SYN, 2);
        assert_eq!(
            dispatch(&mut b, &syn_elsewhere, 0),
            Decision::Local(LocalReason::NotDistributed)
        );
        assert!(b.distributor.dct().is_empty());
    }

    #[test]
    fn fin_ends_the_connection_after_the_linger() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 1);
        dispatch(&mut b, &syn, 0);
        let ack = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 2);
        dispatch(&mut b, &ack, 10);
        let fin = tcp(&mut b, PEER_INNER, 1000, 60, FIN | ACK, 3);
        assert!(forwarded_to(dispatch(&mut b, &fin, 20)).is_some());
        let late = tcp(&mut b, PEER_INNER, 1000, 60, ACK_ONLY, 4);
        assert_eq!(
            dispatch(&mut b, &late, 100),
            Decision::Local(LocalReason::NotDistributed)
        );
        assert_eq!(b.distributor.dct_counters().closed, 1);
    }

    #[test]
    fn tunnel_check_refuses_inner_addresses_outside_the_rule() {
        let mut b = bench();
        let stranger = tcp(&mut b, Ipv4Addr::new(10, 7, 7, 7), 1000, 60, SYN, 1);
        assert_eq!(
            dispatch(&mut b, &stranger, 0),
            Decision::Drop(DropCause::TunnelCheck)
        );
        assert!(
            b.distributor.dct().is_empty(),
            "no entry for a refused packet"
        );
        assert_eq!(b.distributor.counters().dropped(DropCause::TunnelCheck), 1);
    }

    #[test]
    fn replay_pre_check_does_not_move_the_window() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 7);
        let slot = b
            .sas
            .inbound(SPI_TO_DVIPA, IpsecProtocol::Esp, IpAddr::V4(PEER_OUTER))
            .unwrap()
            .slot;
        // Twice: the pre-check alone never marks the number as seen.
        assert!(forwarded_to(dispatch(&mut b, &syn, 0)).is_some());
        assert!(forwarded_to(dispatch(&mut b, &syn, 1)).is_some());
        // Once a target verified it and set the window, it is a replay.
        assert_eq!(
            b.cf.replay_check_and_set(slot, 7).unwrap(),
            ReplayVerdict::Accepted
        );
        assert_eq!(dispatch(&mut b, &syn, 2), Decision::Drop(DropCause::Replay));
    }

    #[test]
    fn ike_keepalives_unknown_spis_and_garbage_are_sorted_out() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 1);
        // UDP 4500 with the non-ESP marker: IKE.
        let mut ike = syn.clone();
        ike[28..32].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(dispatch(&mut b, &ike, 0), Decision::Local(LocalReason::Ike));
        // A NAT keepalive: one 0xff byte.
        let mut keepalive = syn[..29].to_vec();
        keepalive[2..4].copy_from_slice(&29u16.to_be_bytes());
        keepalive[28] = 0xff;
        assert_eq!(
            dispatch(&mut b, &keepalive, 0),
            Decision::Drop(DropCause::NatKeepalive)
        );
        let mut unknown = syn.clone();
        unknown[28..32].copy_from_slice(&0x9999u32.to_be_bytes());
        assert_eq!(
            dispatch(&mut b, &unknown, 0),
            Decision::Drop(DropCause::UnknownSa)
        );
        assert_eq!(
            dispatch(&mut b, &syn[..10], 0),
            Decision::Drop(DropCause::Malformed)
        );
        for len in 0..syn.len() {
            let mut cut = syn[..len].to_vec();
            if len >= 4 {
                cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            let decision = dispatch(&mut b, &cut, 0);
            // Cut inside the inner IP/TCP headers: peek cannot read the flow. Cut only in the
            // ICV: peek still steers it (the target's ICV check drops it).
            if len < 20 + 8 + 8 + 8 + 40 {
                assert!(forwarded_to(decision).is_none(), "length {len}");
            }
        }
    }

    /// The ESP packet with its outer IPv4 source replaced (header checksum fixed).
    fn from_source(packet: &[u8], src: Ipv4Addr) -> Vec<u8> {
        let mut spoofed = packet.to_vec();
        spoofed[12..16].copy_from_slice(&src.octets());
        ip::fix_ipv4_checksum(&mut spoofed[..20]);
        spoofed
    }

    #[test]
    fn a_known_spi_from_the_wrong_source_is_dropped_before_peek_and_the_window() {
        let mut b = bench();
        let syn = tcp(&mut b, PEER_INNER, 1000, 60, SYN, 9);
        let spoofed = from_source(&syn, Ipv4Addr::new(192, 0, 2, 66));
        assert_eq!(
            dispatch(&mut b, &spoofed, 0),
            Decision::Drop(DropCause::WrongSource)
        );
        let counters = b.distributor.counters();
        assert_eq!(counters.dropped(DropCause::WrongSource), 1);
        assert_eq!(counters.dropped(DropCause::UnknownSa), 0);
        assert_eq!(counters.peeked, 0, "not peeked");
        assert!(b.distributor.dct().is_empty(), "no DCT entry");
        // An SPI that no SA has stays an unknown SA, whatever the source.
        let mut unknown = spoofed.clone();
        unknown[28..32].copy_from_slice(&0x9999u32.to_be_bytes());
        assert_eq!(
            dispatch(&mut b, &unknown, 0),
            Decision::Drop(DropCause::UnknownSa)
        );
        // The real packet with the same number is still forwarded: the window did not move.
        assert!(forwarded_to(dispatch(&mut b, &syn, 1)).is_some());
    }

    #[test]
    fn forged_syns_fill_only_the_bounded_table_and_expire() {
        let mut b = bench();
        // Forged SYNs pass peek (it cannot tell), so each makes a half-open entry, up to the bound.
        for port in 0..10u16 {
            let syn = tcp(
                &mut b,
                PEER_INNER,
                2000 + port,
                60,
                SYN,
                100 + u64::from(port),
            );
            dispatch(&mut b, &syn, 0);
        }
        assert_eq!(b.distributor.dct().len(), 4);
        assert_eq!(b.distributor.counters().dropped(DropCause::DctFull), 6);
        // Nobody confirms them; they are gone after the half-open timeout.
        assert_eq!(b.distributor.expire(100), 4);
        let syn = tcp(&mut b, PEER_INNER, 3000, 60, SYN, 500);
        assert!(forwarded_to(dispatch(&mut b, &syn, 100)).is_some());
    }

    #[test]
    fn load_reports_steer_new_connections() {
        let mut b = bench();
        b.distributor
            .report_load(TargetId(1), TargetLoad { weight: 10 }, 0);
        b.distributor
            .report_load(TargetId(0), TargetLoad { weight: 0 }, 0);
        for port in 0..4u16 {
            let syn = tcp(
                &mut b,
                PEER_INNER,
                4000 + port,
                60,
                SYN,
                1 + u64::from(port),
            );
            assert_eq!(forwarded_to(dispatch(&mut b, &syn, 1)), Some(TargetId(1)));
        }
    }

    /// The second SA of [`mixed_bench`]: ESN, from another peer.
    const SPI_ESN: u32 = 0x3000;
    const ESN_PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// Where the ESN SA's numbers are: past the first 2^32.
    const ESN_BASE: u64 = 1 << 32;
    /// Numbers the CF has already seen (a target verified them): replays.
    const SEEN_PLAIN: [u64; 2] = [5, 7];
    const SEEN_ESN: u64 = ESN_BASE + 40;

    fn esn_sa(direction: Direction) -> Sa {
        let mut config = tunnel_sa_config(SPI_ESN, direction, &KEY_TO_DVIPA, (ESN_PEER, DVIPA));
        config.esn = true;
        Sa::new(config).unwrap()
    }

    /// [`bench`] with a second inbound SA (ESN, its window past 2^32, another peer) and some
    /// numbers of both SAs already seen in the CF.
    fn mixed_bench() -> (Bench, Sa) {
        let mut b = bench();
        let dvipa = IpAddr::V4(DVIPA);
        let slot =
            b.cf.allocate(
                SlotKey {
                    dvipa,
                    spi: SPI_ESN,
                },
                128,
            )
            .unwrap();
        let mut inbound = esn_sa(Direction::Inbound);
        inbound.set_replay_top(ESN_BASE + 50);
        b.sas
            .install_inbound(inbound, dvipa, IpAddr::V4(ESN_PEER), selector(), slot);
        b.cf.replay_check_and_set(slot, SEEN_ESN).unwrap();
        let plain_slot = b
            .sas
            .inbound(SPI_TO_DVIPA, IpsecProtocol::Esp, IpAddr::V4(PEER_OUTER))
            .unwrap()
            .slot;
        for seq in SEEN_PLAIN {
            b.cf.replay_check_and_set(plain_slot, seq).unwrap();
        }
        (b, esn_sa(Direction::Outbound))
    }

    /// A small deterministic generator (xorshift64), so a failing case can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// One packet of a mixed burst: either SA, SYN or not, distributed port or not, an inner
    /// source the rule refuses, a spoofed outer source, an unknown SPI, IKE, a keepalive,
    /// garbage, a cut packet, or numbers the CF has seen.
    fn mixed_packet(rng: &mut Rng, plain: &mut Sa, esn: &mut Sa) -> Vec<u8> {
        let sport = 1000 + rng.below(6) as u16;
        let dport = if rng.below(5) == 0 { 80 } else { 60 };
        let flags = [SYN, ACK, FIN | ACK, SYN | ACK][rng.below(4) as usize];
        let src = if rng.below(12) == 0 {
            Ipv4Addr::new(10, 7, 7, 7)
        } else {
            PEER_INNER
        };
        let packet = if rng.below(3) == 0 {
            tcp_with(esn, src, sport, dport, flags, ESN_BASE + 30 + rng.below(30))
        } else {
            tcp_with(plain, src, sport, dport, flags, 1 + rng.below(10))
        };
        match rng.below(14) {
            0 => from_source(&packet, Ipv4Addr::new(192, 0, 2, 66)),
            1 => {
                let mut unknown = packet;
                unknown[28..32].copy_from_slice(&0x9999u32.to_be_bytes());
                unknown
            }
            2 => {
                let mut ike = packet;
                ike[28..32].copy_from_slice(&[0, 0, 0, 0]);
                ike
            }
            3 => (0..rng.below(80)).map(|_| rng.next() as u8).collect(),
            4 => {
                let len = 20 + rng.below(packet.len() as u64 - 20) as usize;
                let mut cut = packet[..len].to_vec();
                cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                ip::fix_ipv4_checksum(&mut cut[..20]);
                cut
            }
            _ => packet,
        }
    }

    /// Everything a dispatch can change, to compare two distributors.
    fn state(d: &Distributor) -> (DistributorCounters, DctCounters, Vec<(FlowKey, TargetId)>) {
        let mut entries: Vec<_> = d.dct().entries().map(|(k, t)| (*k, t)).collect();
        entries.sort_by_key(|(k, _)| (k.src, k.dst, k.protocol, k.src_port, k.dst_port));
        (d.counters(), d.dct_counters(), entries)
    }

    #[test]
    fn a_burst_decides_exactly_what_single_dispatches_decide() {
        let mut kinds = std::collections::HashSet::new();
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (mut burst, mut esn_sender) = mixed_bench();
            let (mut single, _) = mixed_bench();
            for round in 0..4u64 {
                // Up to 40: past one pass of 32 too.
                let count = 1 + rng.below(40) as usize;
                let packets: Vec<Vec<u8>> = (0..count)
                    .map(|_| mixed_packet(&mut rng, &mut burst.sender, &mut esn_sender))
                    .collect();
                let views: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
                let now = round * 40;
                let mut decided = vec![Decision::Drop(DropCause::Facility); count + 3];
                let written = burst.distributor.dispatch_burst(
                    &burst.sas,
                    &burst.cf,
                    &views,
                    now,
                    &mut decided,
                );
                assert_eq!(written, count);
                let one_by_one: Vec<Decision> = views
                    .iter()
                    .map(|p| dispatch(&mut single, p, now))
                    .collect();
                assert_eq!(
                    decided[..count],
                    one_by_one[..],
                    "seed {seed} round {round}"
                );
                assert_eq!(
                    state(&burst.distributor),
                    state(&single.distributor),
                    "seed {seed} round {round}"
                );
                kinds.extend(one_by_one.iter().map(std::mem::discriminant));
                burst.distributor.expire(now + 20);
                single.distributor.expire(now + 20);
            }
        }
        assert_eq!(kinds.len(), 3, "forwards, locals and drops all seen");
    }

    #[test]
    fn mixed_bursts_reach_every_check() {
        // The generator above must reach the checks it claims to compare.
        let mut rng = Rng(7);
        let (mut b, mut esn_sender) = mixed_bench();
        let mut seen = std::collections::HashSet::new();
        for round in 0..30u64 {
            let packets: Vec<Vec<u8>> = (0..32)
                .map(|_| mixed_packet(&mut rng, &mut b.sender, &mut esn_sender))
                .collect();
            let views: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
            let mut out = [Decision::Drop(DropCause::Facility); 32];
            b.distributor
                .dispatch_burst(&b.sas, &b.cf, &views, round * 40, &mut out);
            seen.extend(out.iter().map(|d| match d {
                Decision::Forward { .. } => "forward".to_string(),
                other => format!("{other:?}"),
            }));
            b.distributor.expire(round * 40 + 20);
        }
        for expected in [
            "forward",
            "Local(Ike)",
            "Local(NotDistributed)",
            "Drop(Malformed)",
            "Drop(UnknownSa)",
            "Drop(WrongSource)",
            "Drop(PeekFailed)",
            "Drop(TunnelCheck)",
            "Drop(Replay)",
            "Drop(DctFull)",
        ] {
            assert!(
                seen.contains(expected),
                "{expected} never decided: {seen:?}"
            );
        }
    }

    #[test]
    fn the_esn_high_half_is_inferred_for_the_replay_pre_check() {
        let (mut b, mut esn_sender) = mixed_bench();
        // The CF saw 2^32 + 40. The header carries only 41: read as 41 it would be far left of
        // the window (a replay); inferred from the SA's window it is 2^32 + 41, new.
        let fresh = tcp_with(&mut esn_sender, PEER_INNER, 1000, 60, SYN, SEEN_ESN + 1);
        let replayed = tcp_with(&mut esn_sender, PEER_INNER, 1001, 60, SYN, SEEN_ESN);
        let mut out = [Decision::Drop(DropCause::Facility); 2];
        b.distributor
            .dispatch_burst(&b.sas, &b.cf, &[&fresh, &replayed], 0, &mut out);
        assert!(forwarded_to(out[0]).is_some(), "{:?}", out[0]);
        assert_eq!(out[1], Decision::Drop(DropCause::Replay));
    }
}
