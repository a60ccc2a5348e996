//! IKEv2 between the demo's remote peer and a DVIPA's distributor: our initiator plays the peer,
//! our responder plays the distributor's key manager. Datagrams pass in memory; time is the
//! scheduler's simulated time.

use dvipsec_ike::crypto::{EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{
    Credential, Endpoint, EndpointConfig, Event, Identity, IkeError, IkeSaId, Lifetime, Mode,
    PeerConfig, Psk,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The pre-shared key every demo peer uses. It never leaves the key managers.
pub const DEMO_PSK: &[u8] = b"dvipsec-demo-psk-never-printed";

/// At most this many exchanges' worth of datagrams are passed per pump.
const PUMP_ROUNDS: usize = 16;

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
    initiator: Endpoint,
    responder: Endpoint,
    peer_socket: SocketAddr,
    dvipa_socket: SocketAddr,
    /// The responder's IKE SA, once established.
    pub responder_sa: Option<IkeSaId>,
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
        esp_suites: vec![EspSuite::AES128GCM],
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
        let initiator = peer_config(
            "dvipa",
            peer_id.clone(),
            dvipa_id.clone(),
            (parties.peer_inner, parties.dvipa),
        );
        let responder = peer_config(
            "peer",
            dvipa_id,
            peer_id,
            (parties.dvipa, parties.peer_inner),
        );
        Ok(KeyExchange {
            initiator: Endpoint::new(EndpointConfig::new(vec![initiator]))?,
            responder: Endpoint::new(EndpointConfig::new(vec![responder]))?,
            peer_socket: SocketAddr::new(parties.peer_outer, 500),
            dvipa_socket: SocketAddr::new(parties.dvipa, 500),
            responder_sa: None,
        })
    }

    /// The peer starts IKE_SA_INIT and IKE_AUTH (with the first child SA).
    pub fn initiate(&mut self, now: Instant) -> Result<(), IkeError> {
        self.initiator
            .initiate(now, "dvipa", self.peer_socket, self.dvipa_socket)
            .map(|_| ())
    }

    /// The distributor's key manager rekeys the child whose inbound SPI is `inbound_spi`.
    pub fn rekey_child(&mut self, now: Instant, inbound_spi: u32) -> Result<(), IkeError> {
        let id = self.responder_sa.ok_or(IkeError::NoSuchSa(0))?;
        self.responder.rekey_child(now, id, inbound_spi)
    }

    /// Runs timers, passes datagrams both ways until quiet and returns both sides' events.
    pub fn pump(&mut self, now: Instant) -> Events {
        self.initiator.handle_timeout(now);
        self.responder.handle_timeout(now);
        for _ in 0..PUMP_ROUNDS {
            let mut moved = false;
            while let Some(t) = self.initiator.poll_transmit(now) {
                self.responder
                    .handle_datagram(now, t.local, t.remote, &t.payload);
                moved = true;
            }
            while let Some(t) = self.responder.poll_transmit(now) {
                self.initiator
                    .handle_datagram(now, t.local, t.remote, &t.payload);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let events = Events {
            peer: std::iter::from_fn(|| self.initiator.poll_event()).collect(),
            distributor: std::iter::from_fn(|| self.responder.poll_event()).collect(),
        };
        for event in &events.distributor {
            if let Event::IkeSaEstablished { ike_sa, .. } = event {
                self.responder_sa = Some(*ike_sa);
            }
        }
        events
    }
}
