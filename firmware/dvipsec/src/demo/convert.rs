//! From a negotiated child SA to what the cluster distributes (SA_INSTALL) and what the ESP
//! engine and the data plane's SA table take.

use dvipsec_cluster::wire::{FilterRule, PortRange, Prefix, SaInstall, WireKeys};
use dvipsec_dataplane::sa_table::TrafficSelector;
use dvipsec_esp::{
    Direction, IpsecProtocol, LifetimeLimits, Mode, Sa, SaConfig, SaError, SaKeys, Suite,
    TunnelEndpoints, UdpEncap,
};
use dvipsec_ike::crypto::{DirectionKeys, Encr};
use dvipsec_ike::ChildSaInstalled;
use std::net::IpAddr;

/// The replay window of every demo SA (the peer's, and the CF slot's for inbound SAs).
pub const REPLAY_WINDOW: u32 = 128;

/// Lifetimes small enough that the demo rekeys within a second or two of traffic. Targets
/// report each 5 % of the hard limit (the site's `lifesize.threshold_percent`).
pub const DEMO_LIFETIME: LifetimeLimits = LifetimeLimits {
    soft_packets: Some(3_000),
    hard_packets: Some(20_000),
    soft_bytes: None,
    hard_bytes: None,
};

/// One negotiated child SA as seen from the DVIPA's side.
pub struct ChildPair {
    pub inbound: SaInstall,
    pub outbound: SaInstall,
}

/// The ESP suite of an IKE proposal, if the data plane has it.
fn esp_suite(child: &ChildSaInstalled) -> Option<Suite> {
    match (child.suite.encr, child.suite.integ.is_some()) {
        (Encr::AesGcm16 { key_bits: 128 }, false) => Some(Suite::Aes128Gcm16),
        (Encr::AesGcm16 { key_bits: 256 }, false) => Some(Suite::Aes256Gcm16),
        _ => None,
    }
}

fn wire_keys(keys: &DirectionKeys) -> WireKeys {
    WireKeys::new(&keys.encr, &keys.integ)
}

fn host(addr: IpAddr) -> Prefix {
    Prefix {
        addr,
        len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

/// The DVIPA side's SA_INSTALLs of a child SA the distributor's responder installed; `None`
/// when the suite is one the demo's data plane does not run.
pub fn child_pair(
    dvipa_name: &str,
    dvipa: IpAddr,
    peer_inner: IpAddr,
    child: &ChildSaInstalled,
) -> Option<ChildPair> {
    let suite = esp_suite(child)?;
    let peer = child.remote.ip();
    let filter = FilterRule {
        local: host(dvipa),
        remote: host(peer_inner),
        protocol: 0,
        local_ports: PortRange::ANY,
        remote_ports: PortRange::ANY,
    };
    let install = |direction, spi, keys: &DirectionKeys, tunnel| SaInstall {
        dvipa: dvipa_name.to_owned(),
        peer,
        cf_slot: 0,
        lifesize_percent: 0,
        spi,
        direction,
        protocol: IpsecProtocol::Esp,
        suite,
        mode: Mode::Tunnel,
        tunnel: Some(tunnel),
        udp_encap: child.udp_encapsulation.then_some(UdpEncap::NAT_T),
        replay_window: REPLAY_WINDOW,
        esn: false,
        lifetime: DEMO_LIFETIME,
        keys: wire_keys(keys),
        filters: vec![filter],
    };
    Some(ChildPair {
        inbound: install(
            Direction::Inbound,
            child.inbound_spi,
            &child.inbound_keys,
            TunnelEndpoints {
                src: peer,
                dst: child.local.ip(),
            },
        ),
        outbound: install(
            Direction::Outbound,
            child.outbound_spi,
            &child.outbound_keys,
            TunnelEndpoints {
                src: child.local.ip(),
                dst: peer,
            },
        ),
    })
}

/// The peer's own SAs of a child SA its initiator installed: (outbound, inbound).
pub fn peer_sas(child: &ChildSaInstalled) -> Result<Option<(Sa, Sa)>, SaError> {
    let Some(suite) = esp_suite(child) else {
        return Ok(None);
    };
    let config = |spi, direction, keys: &DirectionKeys, src, dst| {
        let mut config = SaConfig::new(spi, direction, suite, SaKeys::new(&keys.encr, &keys.integ));
        config.mode = Mode::Tunnel;
        config.tunnel = Some(TunnelEndpoints { src, dst });
        config.udp_encap = child.udp_encapsulation.then_some(UdpEncap::NAT_T);
        config.replay_window = REPLAY_WINDOW;
        config
    };
    let (local, remote) = (child.local.ip(), child.remote.ip());
    let outbound = Sa::new(config(
        child.outbound_spi,
        Direction::Outbound,
        &child.outbound_keys,
        local,
        remote,
    ))?;
    let inbound = Sa::new(config(
        child.inbound_spi,
        Direction::Inbound,
        &child.inbound_keys,
        remote,
        local,
    ))?;
    Ok(Some((outbound, inbound)))
}

/// The data plane's SA built from a distributed SA_INSTALL. The CF slot's shared window does the
/// replay check, so the local one is off (as on every target of the testbed).
pub fn data_plane_sa(install: &SaInstall) -> Result<Sa, SaError> {
    let mut config = install.to_sa_config();
    config.replay_window = 0;
    Sa::new(config)
}

/// The data plane's filter rule of an SA_INSTALL (its first filter; the demo has one).
pub fn selector(install: &SaInstall) -> Option<TrafficSelector> {
    let rule = install.filters.first()?;
    Some(TrafficSelector {
        local: rule.local,
        remote: rule.remote,
    })
}
