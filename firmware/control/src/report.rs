//! Building blocks of the reports a box gives: one SA of a data-plane table as an [`SaEntry`]
//! (never its keys), a packet port as a [`LinkStatus`] and its [`PortMetric`], and the names the
//! listings use for the ESP engine's enums. The testbed handler and the demo's boxes share them.

use std::net::IpAddr;

use dvipsec_cf::SlotId;
use dvipsec_dataplane::sa_table::{InboundSa, OutboundSa, TrafficSelector};
use dvipsec_esp::{Direction, IpsecProtocol, LifetimeState, Mode, Sa};
use dvipsec_ports::PacketPort;

use crate::metrics::{PortMetric, SaMetric};
use crate::protocol::{LifetimeLeft, LinkStatus, SaEntry, SaLocation};

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

impl<'a> From<&'a InboundSa> for SaView<'a> {
    fn from(entry: &'a InboundSa) -> Self {
        SaView {
            sa: &entry.sa,
            dvipa: entry.dvipa,
            peer: entry.peer,
            selector: entry.selector,
            slot: entry.slot,
        }
    }
}

impl<'a> From<&'a OutboundSa> for SaView<'a> {
    fn from(entry: &'a OutboundSa) -> Self {
        SaView {
            sa: &entry.sa,
            dvipa: entry.dvipa,
            peer: entry.peer,
            selector: entry.selector,
            slot: entry.slot,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_names_become_snake_case_labels() {
        assert_eq!(snake_case("UnknownSa"), "unknown_sa");
        assert_eq!(snake_case("Replay"), "replay");
        assert_eq!(snake_case("NoSaForFlow"), "no_sa_for_flow");
    }
}
