//! Policy the key manager acts on: peers, identities, credentials, proposals and selectors.
//!
//! The site configuration (dvipsec-config) is translated into these types by the firmware; the
//! IKE crate does not read files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::crypto::{EspSuite, IkeSuite};
use crate::wire::{IdPayload, TrafficSelector};

/// An IKE identity (ID payload, RFC 7296 section 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    Ipv4(Ipv4Addr),
    Fqdn(String),
    Email(String),
    Ipv6(Ipv6Addr),
    KeyId(Vec<u8>),
}

impl Identity {
    pub fn to_payload(&self) -> IdPayload {
        let (id_type, data) = match self {
            Self::Ipv4(addr) => (1, addr.octets().to_vec()),
            Self::Fqdn(name) => (2, name.as_bytes().to_vec()),
            Self::Email(name) => (3, name.as_bytes().to_vec()),
            Self::Ipv6(addr) => (5, addr.octets().to_vec()),
            Self::KeyId(bytes) => (11, bytes.clone()),
        };
        IdPayload { id_type, data }
    }

    /// True when the received ID payload names this identity.
    pub fn matches(&self, payload: &IdPayload) -> bool {
        self.to_payload() == *payload
    }
}

/// A pre-shared key. Zeroized on drop, never shown.
#[derive(Clone)]
pub struct Psk(Zeroizing<Vec<u8>>);

impl Psk {
    pub fn new(secret: &[u8]) -> Self {
        Self(Zeroizing::new(secret.to_vec()))
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// How we authenticate ourselves and the peer. Certificates will be another variant.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credential {
    /// Shared Key Message Integrity Code (auth method 2), the same key in both directions.
    Psk(Psk),
}

/// ESP encapsulation mode of child SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Tunnel,
    Transport,
}

/// Soft and hard limits of an SA. The soft limit starts a rekey, the hard limit deletes the
/// SA. Byte and packet counts come from outside (the ESP engine, or targets' lifesize reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub soft_time: Option<Duration>,
    pub hard_time: Option<Duration>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

impl Lifetime {
    /// No limits at all.
    pub const UNLIMITED: Self = Self {
        soft_time: None,
        hard_time: None,
        soft_bytes: None,
        hard_bytes: None,
        soft_packets: None,
        hard_packets: None,
    };

    fn reached(limit: Option<u64>, used: u64) -> bool {
        limit.is_some_and(|l| used >= l)
    }

    pub fn soft_reached(&self, age: Duration, bytes: u64, packets: u64) -> bool {
        self.soft_time.is_some_and(|t| age >= t)
            || Self::reached(self.soft_bytes, bytes)
            || Self::reached(self.soft_packets, packets)
    }

    pub fn hard_reached(&self, age: Duration, bytes: u64, packets: u64) -> bool {
        self.hard_time.is_some_and(|t| age >= t)
            || Self::reached(self.hard_bytes, bytes)
            || Self::reached(self.hard_packets, packets)
    }
}

/// One remote peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Name used in events and logs.
    pub name: String,
    /// The peer's address; `None` accepts a responder-side peer from any address.
    pub remote_addr: Option<IpAddr>,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub credential: Credential,
    /// IKE SA suites in order of preference; the first one's DH group is used in KE.
    pub ike_suites: Vec<IkeSuite>,
    /// Child SA suites in order of preference.
    pub esp_suites: Vec<EspSuite>,
    /// Our side of child SAs (TSi when we initiate).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side of child SAs.
    pub remote_ts: Vec<TrafficSelector>,
    pub mode: Mode,
    /// Limits of each child SA.
    pub child_lifetime: Lifetime,
    /// Limits of the IKE SA (time only; bytes and packets do not apply).
    pub ike_lifetime: Lifetime,
}

/// Endpoint-wide settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub peers: Vec<PeerConfig>,
    /// First retransmission timeout; doubles after each retransmission.
    pub retransmit_base: Duration,
    /// Retransmissions before the exchange (and its IKE SA) is given up.
    pub retransmit_limit: u32,
    /// How long a responder keeps an IKE SA that completed IKE_SA_INIT but not IKE_AUTH.
    pub half_open_timeout: Duration,
    /// Half-open IKE SAs above which new IKE_SA_INIT requests must return a cookie.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs one peer address may hold; past it its new IKE_SA_INIT requests are
    /// dropped unanswered (counted in `Stats::half_open_peer_drops`). Checked after the
    /// cookie, so under load only an initiator that can receive at its address gets this far.
    pub max_half_open_per_peer: usize,
    /// Half-open IKE SAs in all; past it new IKE_SA_INIT requests are dropped unanswered
    /// (counted in `Stats::half_open_global_drops`). Keep it above `cookie_threshold`, or
    /// cookies are never demanded.
    pub max_half_open: usize,
    /// Peer addresses with which ESP always goes in UDP (the site's `nat_t: force`): our
    /// NAT_DETECTION_SOURCE_IP hash is made not to match, so both ends see a NAT (RFC 7296
    /// section 2.23 allows this), move to port 4500 and encapsulate.
    pub force_udp_encap: Vec<std::net::IpAddr>,
}

impl EndpointConfig {
    pub fn new(peers: Vec<PeerConfig>) -> Self {
        Self {
            peers,
            retransmit_base: Duration::from_millis(500),
            retransmit_limit: 5,
            half_open_timeout: Duration::from_secs(30),
            cookie_threshold: 64,
            // As many as the cookie threshold: one address may load us up to the point where
            // cookies start, and no further even when it answers them.
            max_half_open_per_peer: 64,
            max_half_open: 1024,
            force_udp_encap: Vec::new(),
        }
    }
}
