//! From a child SA the distributor's IKE negotiated to the two SA_INSTALLs the cluster
//! distributes, and from an SA_INSTALL to the data plane's SA.
//!
//! The filter rule of each SA is the negotiated traffic selectors (first pair), so a target
//! accepts exactly what IKE agreed and nothing broader; selectors that are not a single prefix
//! are refused rather than widened.

use std::net::IpAddr;

use dvipsec_cluster::wire::{FilterRule, PortRange, SaInstall, WireKeys};
use dvipsec_dataplane::sa_table::TrafficSelector as DataPlaneSelector;
use dvipsec_esp::{
    AeadProvider, Direction, IpPrefix, IpsecProtocol, LifetimeLimits, Mode, Sa, SaError, Suite,
    TunnelEndpoints, UdpEncap,
};
use dvipsec_ike::crypto::{DirectionKeys, Encr, EspSuite, Integ};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::ChildSaInstalled;

/// Why a negotiated child SA cannot be distributed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    #[error("ESP suite {0:?} has no data-plane implementation")]
    Suite(EspSuite),
    #[error("the child SA has no traffic selectors")]
    NoSelector,
    #[error("traffic selector {0}..{1} is not a single prefix")]
    NotAPrefix(IpAddr, IpAddr),
}

/// What the distributor knows about a DVIPA when a child SA arrives.
#[derive(Debug, Clone)]
pub struct ChildContext<'a> {
    pub dvipa_name: &'a str,
    pub replay_window: u32,
    pub lifetime: LifetimeLimits,
}

/// The DVIPA side's inbound and outbound SA_INSTALL of one child SA.
pub struct ChildPair {
    pub inbound: SaInstall,
    pub outbound: SaInstall,
}

/// The data-plane suite of a negotiated ESP suite.
pub fn esp_suite(suite: &EspSuite) -> Result<Suite, ChildError> {
    match (suite.encr, suite.integ) {
        (Encr::AesGcm16 { key_bits: 128 }, None) => Ok(Suite::Aes128Gcm16),
        (Encr::AesGcm16 { key_bits: 256 }, None) => Ok(Suite::Aes256Gcm16),
        (Encr::AesCbc { key_bits: 128 }, Some(Integ::HmacSha256_128)) => {
            Ok(Suite::Aes128CbcHmacSha256)
        }
        (Encr::AesCbc { key_bits: 256 }, Some(Integ::HmacSha256_128)) => {
            Ok(Suite::Aes256CbcHmacSha256)
        }
        _ => Err(ChildError::Suite(*suite)),
    }
}

/// The prefix an address range covers exactly, if it is one.
pub fn range_prefix(start: IpAddr, end: IpAddr) -> Result<IpPrefix, ChildError> {
    let not_prefix = || ChildError::NotAPrefix(start, end);
    let (low, high, bits) = match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return Err(not_prefix()),
    };
    let span = high.checked_sub(low).ok_or_else(not_prefix)?;
    // A prefix spans 2^k - 1 and starts on a multiple of 2^k.
    let size = span.checked_add(1);
    let host_bits = match size {
        None => 128,
        Some(size) if size.is_power_of_two() => size.trailing_zeros(),
        Some(_) => return Err(not_prefix()),
    };
    if host_bits > bits || (host_bits < 128 && low & ((1u128 << host_bits) - 1) != 0) {
        return Err(not_prefix());
    }
    Ok(IpPrefix {
        addr: start,
        len: u8::try_from(bits - host_bits).map_err(|_| not_prefix())?,
    })
}

fn ports(selector: &TrafficSelector) -> PortRange {
    PortRange {
        low: selector.start_port,
        high: selector.end_port,
    }
}

/// The filter rule of a child: our first selector is local, the peer's first is remote.
pub fn filter_rule(child: &ChildSaInstalled) -> Result<FilterRule, ChildError> {
    let local = child.local_ts.first().ok_or(ChildError::NoSelector)?;
    let remote = child.remote_ts.first().ok_or(ChildError::NoSelector)?;
    // A protocol on either side narrows the rule; IKE makes both sides agree.
    let protocol = if local.ip_protocol != 0 {
        local.ip_protocol
    } else {
        remote.ip_protocol
    };
    Ok(FilterRule {
        local: range_prefix(local.start_addr, local.end_addr)?,
        remote: range_prefix(remote.start_addr, remote.end_addr)?,
        protocol,
        local_ports: ports(local),
        remote_ports: ports(remote),
    })
}

fn wire_keys(keys: &DirectionKeys) -> WireKeys {
    WireKeys::new(&keys.encr, &keys.integ)
}

/// The SA_INSTALLs (CF slot still 0: the cluster core assigns it) of a child SA.
pub fn child_pair(
    context: &ChildContext<'_>,
    child: &ChildSaInstalled,
) -> Result<ChildPair, ChildError> {
    let suite = esp_suite(&child.suite)?;
    let filter = filter_rule(child)?;
    let peer = child.remote.ip();
    let ours = child.local.ip();
    let tunnel = matches!(child.mode, dvipsec_ike::Mode::Tunnel);
    let install = |direction, spi, keys: &DirectionKeys, endpoints| SaInstall {
        dvipa: context.dvipa_name.to_owned(),
        peer,
        cf_slot: 0,
        lifesize_percent: 0,
        spi,
        direction,
        protocol: IpsecProtocol::Esp,
        suite,
        mode: if tunnel {
            Mode::Tunnel
        } else {
            Mode::Transport
        },
        tunnel: tunnel.then_some(endpoints),
        udp_encap: child.udp_encapsulation.then_some(UdpEncap::NAT_T),
        replay_window: context.replay_window,
        esn: false,
        lifetime: context.lifetime,
        keys: wire_keys(keys),
        filters: vec![filter],
    };
    Ok(ChildPair {
        inbound: install(
            Direction::Inbound,
            child.inbound_spi,
            &child.inbound_keys,
            TunnelEndpoints {
                src: peer,
                dst: ours,
            },
        ),
        outbound: install(
            Direction::Outbound,
            child.outbound_spi,
            &child.outbound_keys,
            TunnelEndpoints {
                src: ours,
                dst: peer,
            },
        ),
    })
}

/// The data plane's SA of a distributed SA_INSTALL, its ciphers from `provider` (software
/// when `None`). The CF slot's shared window does the replay check, so the SA's own window is
/// off.
pub fn data_plane_sa(
    install: &SaInstall,
    provider: Option<&dyn AeadProvider>,
) -> Result<Sa, SaError> {
    let mut config = install.to_sa_config();
    config.replay_window = 0;
    match provider {
        Some(provider) => Sa::with_provider(config, provider),
        None => Sa::new(config),
    }
}

/// The data plane's selector of an SA_INSTALL (its first filter rule).
pub fn data_plane_selector(install: &SaInstall) -> Option<DataPlaneSelector> {
    let rule = install.filters.first()?;
    Some(DataPlaneSelector {
        local: rule.local,
        remote: rule.remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn ranges_that_are_prefixes_become_prefixes() {
        let host = range_prefix(v4(198, 51, 100, 10), v4(198, 51, 100, 10));
        assert_eq!(host.map(|p| p.len), Ok(32));
        let net = range_prefix(v4(203, 0, 113, 0), v4(203, 0, 113, 255));
        assert_eq!(net.map(|p| (p.addr, p.len)), Ok((v4(203, 0, 113, 0), 24)));
        let all = range_prefix(v4(0, 0, 0, 0), v4(255, 255, 255, 255));
        assert_eq!(all.map(|p| p.len), Ok(0));
        let all6 = range_prefix(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        );
        assert_eq!(all6.map(|p| p.len), Ok(0));
    }

    #[test]
    fn ranges_that_are_not_prefixes_are_refused_not_widened() {
        for (start, end) in [
            (v4(10, 0, 0, 1), v4(10, 0, 0, 2)),
            (v4(10, 0, 0, 0), v4(10, 0, 0, 2)),
            (v4(10, 0, 0, 5), v4(10, 0, 0, 4)),
            (v4(10, 0, 0, 128), v4(10, 0, 1, 127)),
        ] {
            assert_eq!(
                range_prefix(start, end),
                Err(ChildError::NotAPrefix(start, end))
            );
        }
        let mixed = range_prefix(v4(10, 0, 0, 0), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(mixed.is_err());
    }

    #[test]
    fn suites_map_to_the_data_plane_or_are_refused() {
        assert_eq!(esp_suite(&EspSuite::AES128GCM), Ok(Suite::Aes128Gcm16));
        let cbc = EspSuite {
            encr: Encr::AesCbc { key_bits: 256 },
            integ: Some(Integ::HmacSha256_128),
            pfs: None,
        };
        assert_eq!(esp_suite(&cbc), Ok(Suite::Aes256CbcHmacSha256));
        let cbc_without_integrity = EspSuite { integ: None, ..cbc };
        assert!(esp_suite(&cbc_without_integrity).is_err());
    }
}
