//! IKEv2 between the demo's remote peer and a DVIPA's distributor: one of our endpoints plays
//! the peer, another the distributor's key manager; either side can start (the distributor does
//! for NEWCONN, seed figure 11). Datagrams pass in memory; time is the scheduler's simulated
//! time.

use dvipsec_esp::Suite;
use dvipsec_ike::crypto::{EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{
    Credential, Endpoint, EndpointConfig, Event, Identity, IkeError, IkeSaId, IkeSaInfo, Lifetime,
    Mode, PeerConfig, Psk,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The pre-shared key every demo peer uses. It never leaves the key managers.
pub const DEMO_PSK: &[u8] = b"dvipsec-demo-psk-never-printed";

/// At most this many exchanges' worth of datagrams are passed per pump.
const PUMP_ROUNDS: usize = 16;

/// The ESP proposals both sides offer, with the ESP engine's suite of each (for listings).
const ESP_SUITES: [(EspSuite, Suite); 1] = [(EspSuite::AES128GCM, Suite::Aes128Gcm16)];

/// The distributor side's connection as `conn list` shows it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub esp_proposals: Vec<String>,
    pub mode: &'static str,
}

/// Addresses and names of one negotiation.
pub struct Parties {
    /// The peer's outer address and its inner (protected) host.
    pub peer_outer: IpAddr,
    pub peer_inner: IpAddr,
    pub dvipa: IpAddr,
    pub dvipa_name: String,
}

/// The two key managers of one DVIPA's peer.
pub struct KeyExchange {
    peer_side: Endpoint,
    dvipa_side: Endpoint,
    peer_socket: SocketAddr,
    dvipa_socket: SocketAddr,
    /// The distributor side's IKE SA, once established.
    pub dvipa_sa: Option<IkeSaId>,
    connection: Connection,
}

/// Events of both sides after a pump.
#[derive(Default)]
pub struct Events {
    pub peer: Vec<Event>,
    pub distributor: Vec<Event>,
}

fn peer_config(name: &str, local: String, remote: String, ts: (IpAddr, IpAddr)) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_addr: None,
        local_id: Identity::Fqdn(local),
        remote_id: Identity::Fqdn(remote),
        credential: Credential::Psk(Psk::new(DEMO_PSK)),
        ike_suites: vec![IkeSuite::AES128GCM_SHA256_X25519],
        esp_suites: ESP_SUITES.iter().map(|(suite, _)| *suite).collect(),
        local_ts: vec![TrafficSelector::host(ts.0)],
        remote_ts: vec![TrafficSelector::host(ts.1)],
        mode: Mode::Tunnel,
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    }
}

impl KeyExchange {
    pub fn new(parties: &Parties) -> Result<KeyExchange, IkeError> {
        let peer_id = format!("peer.{}.demo", parties.dvipa_name.to_lowercase());
        let dvipa_id = format!("{}.demo", parties.dvipa_name.to_lowercase());
        let peer_side = peer_config(
            "dvipa",
            peer_id.clone(),
            dvipa_id.clone(),
            (parties.peer_inner, parties.dvipa),
        );
        let dvipa_side = peer_config(
            "peer",
            dvipa_id,
            peer_id,
            (parties.dvipa, parties.peer_inner),
        );
        let connection = Connection {
            local: parties.dvipa,
            remote: parties.peer_outer,
            local_ts: dvipa_side.local_ts.iter().map(selector_text).collect(),
            remote_ts: dvipa_side.remote_ts.iter().map(selector_text).collect(),
            esp_proposals: ESP_SUITES
                .iter()
                .map(|(_, suite)| suite.name().to_owned())
                .collect(),
            mode: match dvipa_side.mode {
                Mode::Tunnel => "tunnel",
                Mode::Transport => "transport",
            },
        };
        Ok(KeyExchange {
            peer_side: Endpoint::new(EndpointConfig::new(vec![peer_side]))?,
            dvipa_side: Endpoint::new(EndpointConfig::new(vec![dvipa_side]))?,
            peer_socket: SocketAddr::new(parties.peer_outer, 500),
            dvipa_socket: SocketAddr::new(parties.dvipa, 500),
            dvipa_sa: None,
            connection,
        })
    }

    /// The distributor side's connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The distributor side's IKE SAs (no keys: the endpoint's listing carries none).
    pub fn dvipa_ike_sas(&self) -> Vec<IkeSaInfo> {
        self.dvipa_side.ike_sas()
    }

    /// The peer starts IKE_SA_INIT and IKE_AUTH (with the first child SA).
    pub fn initiate_from_peer(&mut self, now: Instant) -> Result<(), IkeError> {
        self.peer_side
            .initiate(now, "dvipa", self.peer_socket, self.dvipa_socket)
            .map(|_| ())
    }

    /// The distributor's key manager negotiates a child SA with the peer (NEWCONN): a new IKE
    /// SA when there is none, else a CREATE_CHILD_SA on the existing one.
    pub fn initiate_from_dvipa(&mut self, now: Instant) -> Result<(), IkeError> {
        match self.dvipa_sa {
            Some(id) => self.dvipa_side.create_child(now, id),
            None => self
                .dvipa_side
                .initiate(now, "peer", self.dvipa_socket, self.peer_socket)
                .map(|_| ()),
        }
    }

    /// The distributor's key manager rekeys the child whose inbound SPI is `inbound_spi`.
    pub fn rekey_child(&mut self, now: Instant, inbound_spi: u32) -> Result<(), IkeError> {
        let id = self.dvipa_sa.ok_or(IkeError::NoSuchSa(0))?;
        self.dvipa_side.rekey_child(now, id, inbound_spi)
    }

    /// Runs timers, passes datagrams both ways until quiet and returns both sides' events.
    pub fn pump(&mut self, now: Instant) -> Events {
        self.peer_side.handle_timeout(now);
        self.dvipa_side.handle_timeout(now);
        for _ in 0..PUMP_ROUNDS {
            let mut moved = false;
            while let Some(t) = self.peer_side.poll_transmit(now) {
                self.dvipa_side
                    .handle_datagram(now, t.local, t.remote, &t.payload);
                moved = true;
            }
            while let Some(t) = self.dvipa_side.poll_transmit(now) {
                self.peer_side
                    .handle_datagram(now, t.local, t.remote, &t.payload);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let events = Events {
            peer: std::iter::from_fn(|| self.peer_side.poll_event()).collect(),
            distributor: std::iter::from_fn(|| self.dvipa_side.poll_event()).collect(),
        };
        for event in &events.distributor {
            match event {
                Event::IkeSaEstablished { ike_sa, .. } => self.dvipa_sa = Some(*ike_sa),
                Event::IkeSaRekeyed { new, .. } => self.dvipa_sa = Some(*new),
                Event::IkeSaDeleted { ike_sa, .. } if self.dvipa_sa == Some(*ike_sa) => {
                    self.dvipa_sa = None
                }
                _ => {}
            }
        }
        events
    }
}

/// A traffic selector as `conn list` writes it: `ADDR/LEN` for a host, else `START-END`, with
/// the protocol and port range when they are not "any".
fn selector_text(ts: &TrafficSelector) -> String {
    let addresses = if ts.start_addr == ts.end_addr {
        let len = if ts.start_addr.is_ipv4() { 32 } else { 128 };
        format!("{}/{len}", ts.start_addr)
    } else {
        format!("{}-{}", ts.start_addr, ts.end_addr)
    };
    let any_port = ts.start_port == 0 && ts.end_port == u16::MAX;
    match (ts.ip_protocol, any_port) {
        (0, true) => addresses,
        (protocol, true) => format!("{addresses}[{protocol}]"),
        (protocol, false) => format!("{addresses}[{protocol}/{}-{}]", ts.start_port, ts.end_port),
    }
}
