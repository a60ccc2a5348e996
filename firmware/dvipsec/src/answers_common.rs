//! The pieces of control answers that a booted box ([`crate::boot`]) and a demo box
//! ([`crate::demo`]) build alike: SAD entries from what the cluster core distributed and the
//! use its targets reported, IKE SA entries, key export records, the `sa list` and slot
//! listings that join the SAD with a data-plane table, and the refusals' errors. What needs
//! only the data plane's types lives in [`dvipsec_control::report`].
//!
//! Nothing here carries keys except [`exported`].

use std::net::IpAddr;

use dvipsec_cluster::lifesize::Usage;
use dvipsec_cluster::wire::SaInstall;
use dvipsec_config::OwnedDvipa;
use dvipsec_control::keys::{ExportedSa, SecretBytes};
use dvipsec_control::protocol::{
    ControlError, IkeSaEntry, LifetimeLeft, SaEntry, SaListReport, SaLocation,
};
use dvipsec_control::report::{
    add_inbound_failures, direction_name, mode_name, prefix_text, protocol_name, shadow_entries,
    sort_sa_entries, table_slots,
};
use dvipsec_dataplane::sa_table::ShadowSaTable;
use dvipsec_esp::{Direction, LifetimeLimits};
use dvipsec_ike::{IkeSaInfo, State};

/// A request the box cannot answer in its role or configuration.
pub fn unsupported(request: &str, reason: String) -> ControlError {
    ControlError::Unsupported {
        request: request.into(),
        reason,
    }
}

/// A request the box refused or failed to answer.
pub fn failed(request: &str, reason: String) -> ControlError {
    ControlError::Failed {
        request: request.into(),
        reason,
    }
}

/// Where an SA stands against its limits, from the use the targets reported.
pub fn lifetime_state(limits: &LifetimeLimits, usage: Usage) -> &'static str {
    let reached = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
    if reached(limits.hard_packets, usage.packets) || reached(limits.hard_bytes, usage.bytes) {
        "hard"
    } else if reached(limits.soft_packets, usage.packets) || reached(limits.soft_bytes, usage.bytes)
    {
        "soft"
    } else {
        "fresh"
    }
}

/// A SAD entry: the SA as distributed (never its keys) and the use its targets reported.
pub fn sad_entry(install: &SaInstall, dvipa: IpAddr, usage: Usage) -> SaEntry {
    let limits = &install.lifetime;
    let filter = install.filters.first();
    SaEntry {
        spi: install.spi,
        direction: direction_name(install.direction).into(),
        protocol: protocol_name(install.protocol).into(),
        suite: install.suite.name().into(),
        mode: mode_name(install.mode).into(),
        dvipa,
        peer: install.peer,
        tunnel: install.tunnel.map(|t| (t.src, t.dst)),
        udp_encap: install.udp_encap.map(|u| (u.src_port, u.dst_port)),
        local_ts: filter.map(|f| prefix_text(&f.local)).unwrap_or_default(),
        remote_ts: filter.map(|f| prefix_text(&f.remote)).unwrap_or_default(),
        bytes: usage.bytes,
        packets: usage.packets,
        replays: 0,
        auth_failures: 0,
        lifetime_state: lifetime_state(limits, usage).into(),
        lifetime_left: LifetimeLeft {
            packets: limits.hard_packets.map(|h| h.saturating_sub(usage.packets)),
            bytes: limits.hard_bytes.map(|h| h.saturating_sub(usage.bytes)),
            seconds: None,
        },
        cf_slot: install.cf_slot,
        location: SaLocation::Sad,
    }
}

/// The SAD entries of the DVIPA called `name` (at `address`) in a distributor's cluster core;
/// `held` is the distributor's own data-plane table, whose inbound SAs count the replays and
/// ICV failures.
pub fn sad_entries(
    core: &dvipsec_cluster::Distributor,
    name: &str,
    address: IpAddr,
    held: Option<&ShadowSaTable>,
) -> Vec<SaEntry> {
    core.sas(name)
        .iter()
        .map(|install| {
            let usage = core.usage(&install.sa_ref()).unwrap_or_default();
            let mut entry = sad_entry(install, address, usage);
            if let Some(table) = held {
                add_inbound_failures(&mut entry, table);
            }
            entry
        })
        .collect()
}

/// `sa list`: the SAD entries, then the shadow SAs of `table`, in the listing's order.
pub fn sa_list(mut sas: Vec<SaEntry>, table: Option<&ShadowSaTable>) -> SaListReport {
    if let Some(table) = table {
        sas.extend(shadow_entries(table));
    }
    sort_sa_entries(&mut sas);
    SaListReport { sas }
}

/// The SAs of the DVIPA called `name` (at `address`) in a distributor's cluster core as
/// (CF slot, DVIPA, SPI).
pub fn sad_slots(
    core: &dvipsec_cluster::Distributor,
    name: &str,
    address: IpAddr,
) -> Vec<(u64, IpAddr, u32)> {
    core.sas(name)
        .iter()
        .map(|s| (s.cf_slot, address, s.spi))
        .collect()
}

/// The slots a box holds: those of its SAD (`sad`) and those of its data-plane table, sorted,
/// each slot once.
pub fn held_slots(
    mut sad: Vec<(u64, IpAddr, u32)>,
    table: Option<&ShadowSaTable>,
) -> Vec<(u64, IpAddr, u32)> {
    if let Some(table) = table {
        sad.extend(table_slots(table));
    }
    sad.sort();
    sad.dedup_by_key(|s| s.0);
    sad
}

/// strongSwan's names for IKE SA states.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::InitSent | State::AuthSent | State::InitReplied => "CONNECTING",
        State::Established => "ESTABLISHED",
        State::Deleting => "DELETING",
        State::Dead => "DESTROYING",
    }
}

/// The `ike list` entry of one IKE SA, listed under `name`.
pub fn ike_sa_entry(name: String, info: &IkeSaInfo) -> IkeSaEntry {
    IkeSaEntry {
        name,
        state: state_name(info.state).into(),
        local: info.local.ip(),
        remote: info.remote.ip(),
        initiator_spi: format!("{:016x}", info.spi_i),
        responder_spi: format!("{:016x}", info.spi_r),
        children: info
            .children
            .iter()
            .map(|c| (c.inbound_spi, c.outbound_spi))
            .collect(),
    }
}

/// The key export record of an SA of `dvipa`: its outer addresses (the tunnel's, else the
/// DVIPA and the peer in the SA's direction) and its keys.
pub fn exported(install: &SaInstall, dvipa: IpAddr) -> ExportedSa {
    let (src, dst) = match (install.tunnel, install.direction) {
        (Some(tunnel), _) => (tunnel.src, tunnel.dst),
        (None, Direction::Inbound) => (install.peer, dvipa),
        (None, Direction::Outbound) => (dvipa, install.peer),
    };
    ExportedSa {
        src,
        dst,
        spi: install.spi,
        suite: install.suite.name().into(),
        enc_key: SecretBytes::new(install.keys.expose_enc()),
        auth_key: SecretBytes::new(install.keys.expose_auth()),
    }
}

/// The configured owner of the DVIPA at `dvipa`, or the refusal of a takeover of an address
/// that is no DVIPA of the site.
pub fn site_dvipa<'v>(
    views: impl IntoIterator<Item = &'v dvipsec_config::NodeView>,
    dvipa: IpAddr,
) -> Result<&'v OwnedDvipa, ControlError> {
    views
        .into_iter()
        .find_map(|v| v.owns.iter().find(|o| o.address == dvipa))
        .ok_or_else(|| failed("takeover", format!("{dvipa} is not a DVIPA of this site")))
}

/// A DVIPA's backup chain as refusals name it: `MVS4 (rank 1), MVS2 (rank 2)`, or `none`.
pub fn backups_text(owner: &OwnedDvipa) -> String {
    let backups: Vec<String> = owner
        .backups
        .iter()
        .map(|b| format!("{} (rank {})", b.node, b.rank))
        .collect();
    if backups.is_empty() {
        "none".to_owned()
    } else {
        backups.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LifetimeLimits = LifetimeLimits {
        soft_packets: Some(3_000),
        hard_packets: Some(20_000),
        soft_bytes: None,
        hard_bytes: Some(1_000_000),
    };

    fn used(packets: u64, bytes: u64) -> Usage {
        Usage { bytes, packets }
    }

    #[test]
    fn lifetime_state_follows_the_reported_use() {
        assert_eq!(lifetime_state(&LIMITS, used(0, 0)), "fresh");
        assert_eq!(lifetime_state(&LIMITS, used(2_999, 0)), "fresh");
        assert_eq!(lifetime_state(&LIMITS, used(3_000, 0)), "soft");
        assert_eq!(lifetime_state(&LIMITS, used(20_000, 0)), "hard");
        // Any hard limit reached makes the SA hard, whatever the soft ones say.
        assert_eq!(lifetime_state(&LIMITS, used(10, 1_000_000)), "hard");
        let unlimited = LifetimeLimits {
            soft_packets: None,
            hard_packets: None,
            soft_bytes: None,
            hard_bytes: None,
        };
        assert_eq!(
            lifetime_state(&unlimited, used(u64::MAX, u64::MAX)),
            "fresh"
        );
    }

    #[test]
    fn ike_states_use_strongswans_words() {
        assert_eq!(state_name(State::Established), "ESTABLISHED");
        for connecting in [State::InitSent, State::AuthSent, State::InitReplied] {
            assert_eq!(state_name(connecting), "CONNECTING");
        }
        assert_eq!(state_name(State::Deleting), "DELETING");
        assert_eq!(state_name(State::Dead), "DESTROYING");
    }

    #[test]
    fn held_slots_are_sorted_and_listed_once() {
        let a = IpAddr::from([10, 0, 0, 1]);
        let held = held_slots(vec![(7, a, 0x70), (3, a, 0x30), (7, a, 0x70)], None);
        assert_eq!(held, [(3, a, 0x30), (7, a, 0x70)]);
    }
}
