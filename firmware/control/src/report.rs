//! Building blocks of the reports a box gives: one SA of a data-plane table as an [`SaEntry`]
//! (never its keys), a packet port as a [`LinkStatus`] and its [`PortMetric`], the names the
//! listings use for the ESP engine's enums, the data plane's drops and stage costs as metrics,
//! its DCT as a
//! listing and CF slots as `cf show` entries. The testbed handler, the demo's boxes and the
//! booted box share them.

use std::net::IpAddr;

use dvipsec_cf::{CfError, Lifesize, SequenceFacility, SlotId};
use dvipsec_dataplane::dct::Dct;
use dvipsec_dataplane::distributor::{Distributor, DropCause};
use dvipsec_dataplane::node::{NodeCounters, StageCost, StageCosts};
use dvipsec_dataplane::sa_table::{InboundSa, OutboundSa, ShadowSaTable, TrafficSelector};
use dvipsec_dataplane::target::{TargetCounters, TargetDrop};
use dvipsec_esp::{Direction, IpsecProtocol, LifetimeState, Mode, Sa};
use dvipsec_ports::PacketPort;

use crate::metrics::{DropMetric, PortMetric, SaMetric, StageMetric};
use crate::protocol::{CfSlot, DctFlow, DctReport, LifetimeLeft, LinkStatus, SaEntry, SaLocation};

/// `Debug` names of causes (`UnknownSa`) as metric labels (`unknown_sa`).
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A selector prefix as listings write it (`10.1.0.1/32`).
pub fn prefix_text(prefix: &dvipsec_dataplane::sa_table::IpPrefix) -> String {
    format!("{}/{}", prefix.addr, prefix.len)
}

/// "inbound" or "outbound".
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// "esp" or "ah".
pub fn protocol_name(protocol: IpsecProtocol) -> &'static str {
    match protocol {
        IpsecProtocol::Esp => "esp",
        IpsecProtocol::Ah => "ah",
    }
}

/// "tunnel" or "transport".
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Tunnel => "tunnel",
        Mode::Transport => "transport",
    }
}

/// "fresh", "soft" or "hard".
pub fn lifetime_state_name(state: LifetimeState) -> &'static str {
    match state {
        LifetimeState::Fresh => "fresh",
        LifetimeState::Soft => "soft",
        LifetimeState::Hard => "hard",
    }
}

fn lifetime_left(sa: &Sa) -> LifetimeLeft {
    let limits = sa.params().lifetime;
    let counters = sa.counters();
    LifetimeLeft {
        packets: limits
            .hard_packets
            .map(|hard| hard.saturating_sub(counters.packets)),
        bytes: limits
            .hard_bytes
            .map(|hard| hard.saturating_sub(counters.bytes)),
        seconds: None,
    }
}

/// What a listing needs of one SA of a data-plane table.
pub struct SaView<'a> {
    /// The ESP engine's SA (its counters and parameters; its keys stay inside).
    pub sa: &'a Sa,
    /// The DVIPA.
    pub dvipa: IpAddr,
    /// The remote peer's outer address.
    pub peer: IpAddr,
    /// Its traffic selector.
    pub selector: TrafficSelector,
    /// Its CF slot.
    pub slot: SlotId,
}

/// The data plane keeps inbound and outbound SAs in two types with the same listing fields;
/// one conversion serves both.
macro_rules! sa_view_from {
    ($entry:ty) => {
        impl<'a> From<&'a $entry> for SaView<'a> {
            fn from(entry: &'a $entry) -> Self {
                SaView {
                    sa: &entry.sa,
                    dvipa: entry.dvipa,
                    peer: entry.peer,
                    selector: entry.selector,
                    slot: entry.slot,
                }
            }
        }
    };
}

sa_view_from!(InboundSa);
sa_view_from!(OutboundSa);

/// The listing entry of one SA found at `location`.
pub fn sa_entry(view: SaView<'_>, location: SaLocation) -> SaEntry {
    let params = view.sa.params();
    let counters = view.sa.counters();
    SaEntry {
        spi: params.spi,
        direction: direction_name(params.direction).into(),
        protocol: protocol_name(params.protocol).into(),
        suite: params.suite.name().into(),
        mode: mode_name(params.mode).into(),
        dvipa: view.dvipa,
        peer: view.peer,
        tunnel: params.tunnel.map(|t| (t.src, t.dst)),
        udp_encap: params.udp_encap.map(|u| (u.src_port, u.dst_port)),
        local_ts: prefix_text(&view.selector.local),
        remote_ts: prefix_text(&view.selector.remote),
        bytes: counters.bytes,
        packets: counters.packets,
        replays: counters.replays,
        auth_failures: counters.auth_failures,
        lifetime_state: lifetime_state_name(view.sa.lifetime_state()).into(),
        lifetime_left: lifetime_left(view.sa),
        cf_slot: view.slot.0,
        location,
    }
}

/// The per-SA metric of a listing entry.
pub fn sa_metric(sa: &SaEntry) -> SaMetric {
    SaMetric {
        spi: sa.spi,
        direction: sa.direction.clone(),
        packets: sa.packets,
        bytes: sa.bytes,
        replays: sa.replays,
        auth_failures: sa.auth_failures,
        table: match sa.location {
            SaLocation::Sad => "sad",
            SaLocation::Shadow => "shadow",
        }
        .into(),
    }
}

/// A port's status line and its metric.
pub fn port_status(port: &impl PacketPort) -> (LinkStatus, PortMetric) {
    let counters = port.counters();
    let link = LinkStatus {
        name: port.name().into(),
        up: None,
        rx_packets: counters.rx_packets,
        tx_packets: counters.tx_packets,
        drops: counters.total_drops(),
    };
    let metric = PortMetric {
        port: port.name().into(),
        rx_packets: counters.rx_packets,
        rx_bytes: counters.rx_bytes,
        tx_packets: counters.tx_packets,
        tx_bytes: counters.tx_bytes,
        drops: counters.total_drops(),
    };
    (link, metric)
}

/// The shadow SAs of a data-plane table as listing entries: inbound ones, then outbound ones.
pub fn shadow_entries(table: &ShadowSaTable) -> Vec<SaEntry> {
    let inbound = table
        .inbound_sas()
        .map(|s| sa_entry(SaView::from(s), SaLocation::Shadow));
    let outbound = table
        .outbound_sas()
        .map(|s| sa_entry(SaView::from(s), SaLocation::Shadow));
    inbound.chain(outbound).collect()
}

/// A distributor's data path holds the inbound half of each SA it distributes (to peek): the
/// replays and ICV failures found there are the SAD entry's.
pub fn add_inbound_failures(entry: &mut SaEntry, table: &ShadowSaTable) {
    let held = table
        .inbound_sas()
        .find(|s| s.sa.params().spi == entry.spi)
        .map(|s| s.sa.counters());
    if let Some(counters) = held {
        entry.replays = counters.replays;
        entry.auth_failures = counters.auth_failures;
    }
}

/// The order of `sa list`: the SAD before the shadow tables, then by DVIPA, direction and SPI.
pub fn sort_sa_entries(sas: &mut [SaEntry]) {
    sas.sort_by(|a, b| {
        let key = |e: &SaEntry| {
            (
                e.location == SaLocation::Shadow,
                e.dvipa,
                e.direction.clone(),
                e.spi,
            )
        };
        key(a).cmp(&key(b))
    });
}

/// The SAs of a data-plane table as (CF slot, DVIPA, SPI), inbound ones first.
pub fn table_slots(table: &ShadowSaTable) -> Vec<(u64, IpAddr, u32)> {
    let inbound = table
        .inbound_sas()
        .map(|s| (s.slot.0, s.dvipa, s.sa.params().spi));
    let outbound = table
        .outbound_sas()
        .map(|s| (s.slot.0, s.dvipa, s.sa.params().spi));
    inbound.chain(outbound).collect()
}

/// The `cf show` entry of one slot, from what the CF holds for it.
pub fn cf_slot(slot: u64, dvipa: IpAddr, spi: u32, lifesize: &Lifesize) -> CfSlot {
    CfSlot {
        slot,
        dvipa,
        spi,
        bytes_in: lifesize.bytes_in,
        packets_in: lifesize.packets_in,
        bytes_out: lifesize.bytes_out,
        packets_out: lifesize.packets_out,
    }
}

/// The `cf show` entries of the slots a box holds, given as (CF slot, DVIPA, SPI). A retired
/// SA's slot is released before every target has dropped the SA: such a slot has no CF state
/// left to show and is passed over; any other failure is the caller's to report.
pub fn held_cf_slots<F: SequenceFacility + ?Sized>(
    facility: &F,
    held: Vec<(u64, IpAddr, u32)>,
) -> Result<Vec<CfSlot>, (u64, CfError)> {
    let mut slots = Vec::new();
    for (slot, dvipa, spi) in held {
        match facility.lifesize_read(SlotId(slot)) {
            Ok(lifesize) => slots.push(cf_slot(slot, dvipa, spi, &lifesize)),
            Err(CfError::UnknownSlot(_)) => continue,
            Err(e) => return Err((slot, e)),
        }
    }
    Ok(slots)
}

/// The `dct list` answer of a distributor: counts and every flow, sorted by destination then
/// source.
pub fn dct_report(dct: &Dct) -> DctReport {
    let counters = dct.counters();
    let mut flows: Vec<DctFlow> = dct
        .entries()
        .map(|(key, target)| DctFlow {
            src: key.src,
            src_port: key.src_port,
            dst: key.dst,
            dst_port: key.dst_port,
            protocol: key.protocol,
            target: target.0,
        })
        .collect();
    flows.sort_by_key(|f| (f.dst, f.dst_port, f.src, f.src_port, f.protocol));
    DctReport {
        entries: dct.len() as u64,
        capacity: dct.capacity() as u64,
        added: counters.added,
        full_drops: counters.full_drops,
        expired: counters.expired,
        closed: counters.closed,
        flows,
    }
}

/// A drop count of `stage`; `cause` is the `Debug` name of the cause (`NotIp`), written as a
/// label (`not_ip`).
pub fn drop_metric(stage: &str, cause: &str, count: u64) -> DropMetric {
    DropMetric {
        stage: stage.into(),
        cause: snake_case(cause),
        count,
    }
}

/// The drops of `stage`, given as (`Debug` name of the cause, count).
pub fn stage_drops<'a>(
    stage: &str,
    counts: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<DropMetric> {
    counts
        .into_iter()
        .map(|(cause, count)| drop_metric(stage, cause, count))
        .collect()
}

/// The drops of a node's frame handling (before any role sees the frame).
pub fn node_drops(counters: NodeCounters) -> Vec<DropMetric> {
    stage_drops(
        "node",
        [
            ("NotIp", counters.not_ip),
            ("NoRoomOrRoute", counters.no_room_or_route),
            ("LocalOverflow", counters.local_overflow),
        ],
    )
}

fn stage_metric(stage: &str, cost: StageCost) -> StageMetric {
    StageMetric {
        stage: stage.into(),
        nanoseconds: cost.nanoseconds,
        packets: cost.packets,
        bursts: cost.bursts,
    }
}

/// A distributor node's stage: forwarding.
pub fn distributor_stages(costs: StageCosts) -> Vec<StageMetric> {
    vec![stage_metric("forward", costs.forward)]
}

/// A target node's stages: decapsulation and encapsulation.
pub fn target_stages(costs: StageCosts) -> Vec<StageMetric> {
    vec![
        stage_metric("decap", costs.decap),
        stage_metric("encap", costs.encap),
    ]
}

/// A target's drops, by cause.
pub fn target_drops(counters: &TargetCounters) -> Vec<DropMetric> {
    TargetDrop::ALL
        .iter()
        .map(|cause| drop_metric("target", &format!("{cause:?}"), counters.dropped(*cause)))
        .collect()
}

/// A distributor's drops, by cause, then those of a full DCT.
pub fn distributor_drops(distributor: &Distributor) -> Vec<DropMetric> {
    let counters = distributor.counters();
    let mut drops: Vec<DropMetric> = DropCause::ALL
        .iter()
        .map(|cause| {
            drop_metric(
                "distributor",
                &format!("{cause:?}"),
                counters.dropped(*cause),
            )
        })
        .collect();
    let dct = distributor.dct_counters();
    drops.push(drop_metric("dct", "Full", dct.full_drops));
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_names_become_snake_case_labels() {
        assert_eq!(snake_case("UnknownSa"), "unknown_sa");
        assert_eq!(snake_case("Replay"), "replay");
        assert_eq!(snake_case("NoSaForFlow"), "no_sa_for_flow");
    }

    #[test]
    fn node_drops_carry_their_stage_and_label() {
        let counters = NodeCounters {
            not_ip: 1,
            no_room_or_route: 2,
            local_overflow: 3,
            ..NodeCounters::default()
        };
        let drops: Vec<(String, String, u64)> = node_drops(counters)
            .into_iter()
            .map(|d| (d.stage, d.cause, d.count))
            .collect();
        assert_eq!(
            drops,
            [
                ("node".into(), "not_ip".into(), 1),
                ("node".into(), "no_room_or_route".into(), 2),
                ("node".into(), "local_overflow".into(), 3),
            ]
        );
    }

    #[test]
    fn each_role_reports_its_own_stages() {
        let cost = |nanoseconds, packets| StageCost {
            nanoseconds,
            packets,
            bursts: 7,
        };
        let costs = StageCosts {
            forward: cost(1, 2),
            decap: cost(3, 4),
            encap: cost(5, 6),
        };
        let flat = |stages: Vec<StageMetric>| -> Vec<(String, u64, u64, u64)> {
            stages
                .into_iter()
                .map(|s| (s.stage, s.nanoseconds, s.packets, s.bursts))
                .collect()
        };
        assert_eq!(
            flat(distributor_stages(costs)),
            [("forward".into(), 1, 2, 7)]
        );
        assert_eq!(
            flat(target_stages(costs)),
            [("decap".into(), 3, 4, 7), ("encap".into(), 5, 6, 7)]
        );
    }
}
