//! Policy from the site configuration: each `protect` entry of a DVIPA's SPD becomes one
//! [`PeerConfig`] with the entry's peer, identities, pre-shared key, ESP proposals, selectors,
//! mode and lifetimes.
//!
//! The site file does not name IKE SA proposals yet, so every peer gets [`DEFAULT_IKE_SUITES`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use dvipsec_config::{
    Action, DvipaConfig, IkeIdentity, IpNet, Located, PortSet, Position, Proposal, Protocol,
    SecretError, SiteConfig, SpdEntry,
};
use thiserror::Error;

use crate::config::{Credential, Identity, Lifetime, Mode, PeerConfig, Psk};
use crate::crypto::{Encr, EspSuite, IkeSuite, Integ};
use crate::wire::TrafficSelector;

/// IKE SA suites offered and accepted for every peer, in order of preference.
pub const DEFAULT_IKE_SUITES: [IkeSuite; 2] = [
    IkeSuite::AES128GCM_SHA256_X25519,
    IkeSuite::AES256CBC_SHA256_MODP2048,
];

/// Why the site configuration cannot become IKE policy; names the entry and its position.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("no DVIPA named {0:?} in the site configuration")]
    NoSuchDvipa(String),
    #[error("SPD entry {entry:?} at {at}: no peer named {peer:?}")]
    NoSuchPeer {
        entry: String,
        at: Position,
        peer: String,
    },
    #[error("SPD entry {entry:?} at {at}: protect entries need a peer")]
    MissingPeer { entry: String, at: Position },
    #[error("SPD entry {entry:?} at {at}: none of its proposals can be negotiated by IKE yet")]
    NoUsableProposal { entry: String, at: Position },
    #[error("SPD entry {entry:?} at {at}: extended sequence numbers cannot be negotiated yet")]
    EsnNotSupported { entry: String, at: Position },
    #[error("peer {peer:?}: cannot read its pre-shared key")]
    Secret {
        peer: String,
        #[source]
        source: SecretError,
    },
}

/// The IKE peers of one DVIPA. `secrets_dir` is where relative secret paths start (the
/// directory of the site file).
pub fn peers_for_dvipa(
    site: &SiteConfig,
    dvipa: &str,
    secrets_dir: &Path,
) -> Result<Vec<PeerConfig>, PolicyError> {
    let dvipa = site
        .dvipas
        .iter()
        .find(|d| d.name.value == dvipa)
        .ok_or_else(|| PolicyError::NoSuchDvipa(dvipa.to_owned()))?;
    dvipa
        .policy
        .iter()
        .filter(|entry| entry.action.value == Action::Protect)
        .map(|entry| peer_for_entry(site, dvipa, entry, secrets_dir))
        .collect()
}

fn peer_for_entry(
    site: &SiteConfig,
    dvipa: &DvipaConfig,
    entry: &SpdEntry,
    secrets_dir: &Path,
) -> Result<PeerConfig, PolicyError> {
    let located = |e: &SpdEntry| (e.name.value.clone(), e.name.at);
    let (name, at) = located(entry);
    let peer_name = entry.peer.as_ref().ok_or(PolicyError::MissingPeer {
        entry: name.clone(),
        at,
    })?;
    let peer = site
        .peers
        .iter()
        .find(|p| p.name.value == peer_name.value)
        .ok_or_else(|| PolicyError::NoSuchPeer {
            entry: name.clone(),
            at: peer_name.at,
            peer: peer_name.value.clone(),
        })?;
    if entry.esn.value {
        return Err(PolicyError::EsnNotSupported {
            entry: name,
            at: entry.esn.at,
        });
    }
    let psk = peer
        .psk
        .value
        .read(secrets_dir)
        .map_err(|source| PolicyError::Secret {
            peer: peer.name.value.clone(),
            source,
        })?;
    let local_net = entry
        .local
        .as_ref()
        .map_or_else(|| IpNet::host(dvipa.define.address.value), |l| l.value);
    let protocol = ip_protocol(entry.protocol.value);
    Ok(PeerConfig {
        name: format!("{}/{}", dvipa.name.value, name),
        remote_addr: Some(peer.address.value),
        local_id: identity(&peer.local_id.value),
        remote_id: identity(&peer.remote_id.value),
        credential: Credential::Psk(Psk::new(psk.expose())),
        ike_suites: DEFAULT_IKE_SUITES.to_vec(),
        esp_suites: esp_suites(entry)?,
        local_ts: selectors(local_net, protocol, &entry.local_ports.value),
        remote_ts: selectors(entry.remote.value, protocol, &entry.remote_ports.value),
        mode: match entry.mode.as_ref().map(|m| m.value) {
            Some(dvipsec_config::Mode::Transport) => Mode::Transport,
            _ => Mode::Tunnel,
        },
        child_lifetime: lifetime(entry),
        ike_lifetime: Lifetime::UNLIMITED,
    })
}

fn identity(id: &IkeIdentity) -> Identity {
    match id {
        IkeIdentity::Fqdn(name) => Identity::Fqdn(name.clone()),
        IkeIdentity::Email(name) => Identity::Email(name.clone()),
        IkeIdentity::Ip(IpAddr::V4(v4)) => Identity::Ipv4(*v4),
        IkeIdentity::Ip(IpAddr::V6(v6)) => Identity::Ipv6(*v6),
        IkeIdentity::KeyId(bytes) => Identity::KeyId(bytes.clone()),
    }
}

fn ip_protocol(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Any => 0,
        Protocol::Icmp => 1,
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmpv6 => 58,
        Protocol::Sctp => 132,
        Protocol::Number(n) => n,
    }
}

/// One selector per listed port (or one for all ports).
fn selectors(net: IpNet, ip_protocol: u8, ports: &PortSet) -> Vec<TrafficSelector> {
    let base = TrafficSelector {
        ip_protocol,
        ..TrafficSelector::prefix(net.addr, net.prefix_len)
    };
    match ports {
        PortSet::All => vec![base],
        PortSet::List(list) => list
            .iter()
            .filter_map(|p| u16::try_from(p.value).ok())
            .map(|port| TrafficSelector {
                start_port: port,
                end_port: port,
                ..base
            })
            .collect(),
    }
}

/// The entry's ESP proposals that IKE can negotiate; the others (ChaCha20-Poly1305, null, AH)
/// are left out. Without a proposal list, AES-128-GCM.
fn esp_suites(entry: &SpdEntry) -> Result<Vec<EspSuite>, PolicyError> {
    let wanted: Vec<Proposal> = entry.proposals.as_ref().map_or_else(
        || vec![Proposal::Aes128Gcm16],
        |list| {
            list.value
                .iter()
                .map(|p: &Located<Proposal>| p.value)
                .collect()
        },
    );
    let suites: Vec<EspSuite> = wanted.into_iter().filter_map(esp_suite).collect();
    if suites.is_empty() {
        return Err(PolicyError::NoUsableProposal {
            entry: entry.name.value.clone(),
            at: entry.proposals.as_ref().map_or(entry.name.at, |p| p.at),
        });
    }
    Ok(suites)
}

fn esp_suite(proposal: Proposal) -> Option<EspSuite> {
    let (encr, integ) = match proposal {
        Proposal::Aes128Gcm16 => (Encr::AesGcm16 { key_bits: 128 }, None),
        Proposal::Aes256Gcm16 => (Encr::AesGcm16 { key_bits: 256 }, None),
        Proposal::Aes128CbcSha256 => (Encr::AesCbc { key_bits: 128 }, Some(Integ::HmacSha256_128)),
        Proposal::Aes256CbcSha256 => (Encr::AesCbc { key_bits: 256 }, Some(Integ::HmacSha256_128)),
        _ => return None,
    };
    Some(EspSuite {
        encr,
        integ,
        pfs: None,
    })
}

fn lifetime(entry: &SpdEntry) -> Lifetime {
    let Some(limits) = &entry.lifetime else {
        return Lifetime::UNLIMITED;
    };
    let soft_hard = |limit: &Option<dvipsec_config::Limit>| {
        limit
            .as_ref()
            .map_or((None, None), |l| (Some(l.soft.value), Some(l.hard.value)))
    };
    let (soft_seconds, hard_seconds) = soft_hard(&limits.seconds);
    let (soft_bytes, hard_bytes) = soft_hard(&limits.bytes);
    let (soft_packets, hard_packets) = soft_hard(&limits.packets);
    Lifetime {
        soft_time: soft_seconds.map(Duration::from_secs),
        hard_time: hard_seconds.map(Duration::from_secs),
        soft_bytes,
        hard_bytes,
        soft_packets,
        hard_packets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples");

    /// The figure 4 example with its pre-shared keys read from the example secret file.
    fn figure4() -> SiteConfig {
        let text = std::fs::read_to_string(format!("{EXAMPLES}/figure4.yaml"))
            .expect("the config crate ships figure4.yaml")
            .replace(
                "env:DVIPSEC_PSK_BRANCH_A",
                "file:secrets/EXAMPLE-branch.psk",
            )
            .replace(
                "env:DVIPSEC_PSK_BRANCH_B",
                "file:secrets/EXAMPLE-branch.psk",
            );
        SiteConfig::from_str_named(&text, "figure4.yaml").expect("figure4.yaml is valid")
    }

    fn dvipa_with_entry(site: &SiteConfig, entry: &str) -> String {
        site.dvipas
            .iter()
            .find(|d| d.policy.iter().any(|e| e.name.value == entry))
            .map(|d| d.name.value.clone())
            .expect("entry exists")
    }

    #[test]
    fn protect_entry_becomes_a_peer_with_its_selectors_and_lifetimes() {
        let site = figure4();
        let dvipa = dvipa_with_entry(&site, "app-a");
        let peers = peers_for_dvipa(&site, &dvipa, Path::new(EXAMPLES)).unwrap();
        assert_eq!(peers.len(), 1, "only the protect entry");
        let peer = &peers[0];
        assert_eq!(peer.name, format!("{dvipa}/app-a"));
        assert_eq!(peer.remote_addr, Some("203.0.113.10".parse().unwrap()));
        assert_eq!(
            peer.remote_id,
            Identity::Fqdn("branch-a.example.net".into())
        );
        assert_eq!(peer.local_id, Identity::Fqdn("dva1.example.com".into()));
        assert_eq!(
            peer.esp_suites,
            vec![
                EspSuite::AES128GCM,
                EspSuite {
                    encr: Encr::AesGcm16 { key_bits: 256 },
                    integ: None,
                    pfs: None
                }
            ]
        );
        assert_eq!(peer.mode, Mode::Tunnel);
        assert_eq!(peer.local_ts.len(), 1);
        assert_eq!(peer.local_ts[0].ip_protocol, 6);
        assert_eq!(
            (peer.local_ts[0].start_port, peer.local_ts[0].end_port),
            (60, 60)
        );
        assert_eq!(
            peer.remote_ts,
            vec![TrafficSelector {
                ip_protocol: 6,
                ..TrafficSelector::prefix("203.0.113.0".parse().unwrap(), 24)
            }]
        );
        assert_eq!(
            peer.child_lifetime.soft_time,
            Some(Duration::from_secs(3240))
        );
        assert_eq!(peer.child_lifetime.hard_bytes, Some(1_000_000_000));
        assert_eq!(peer.child_lifetime.soft_packets, Some(900_000));
        let Credential::Psk(psk) = &peer.credential;
        let expected =
            std::fs::read_to_string(format!("{EXAMPLES}/secrets/EXAMPLE-branch.psk")).unwrap();
        assert_eq!(psk.secret(), expected.trim_end_matches('\n').as_bytes());
    }

    #[test]
    fn esn_entry_is_refused_with_its_position() {
        let site = figure4();
        let dvipa = dvipa_with_entry(&site, "app-b");
        let error = peers_for_dvipa(&site, &dvipa, Path::new(EXAMPLES)).unwrap_err();
        match &error {
            PolicyError::EsnNotSupported { entry, at } => {
                assert_eq!(entry, "app-b");
                assert!(at.line > 0, "{error}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_secret_and_unknown_dvipa_are_named() {
        let text = std::fs::read_to_string(format!("{EXAMPLES}/figure4.yaml")).unwrap();
        let text = text.replace("env:DVIPSEC_PSK_BRANCH_A", "file:secrets/no-such.psk");
        let site = SiteConfig::from_str_named(&text, "figure4.yaml").unwrap();
        let dvipa = dvipa_with_entry(&site, "app-a");
        let error = peers_for_dvipa(&site, &dvipa, Path::new(EXAMPLES)).unwrap_err();
        assert!(
            matches!(&error, PolicyError::Secret { peer, .. } if peer == "branch-a"),
            "{error}"
        );
        assert!(matches!(
            peers_for_dvipa(&site, "nope", Path::new(EXAMPLES)),
            Err(PolicyError::NoSuchDvipa(_))
        ));
    }

    #[test]
    fn only_negotiable_proposals_are_kept() {
        assert_eq!(esp_suite(Proposal::Chacha20Poly1305), None);
        assert_eq!(esp_suite(Proposal::AhSha256), None);
        assert_eq!(
            esp_suite(Proposal::Aes256CbcSha256),
            Some(EspSuite::AES256CBC_SHA256)
        );
    }
}
