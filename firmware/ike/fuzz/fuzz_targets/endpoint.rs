//! The state machine: random, truncated and SPI-forged datagrams fed to a responder that has a
//! half-open IKE SA and to an initiator waiting for its IKE_SA_INIT response, then time runs
//! out. Nothing may panic; installed state must stay consistent.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dvipsec_ike::crypto::{EspSuite, IkeSuite};
use dvipsec_ike::wire::TrafficSelector;
use dvipsec_ike::{Credential, Endpoint, EndpointConfig, Identity, Lifetime, Mode, PeerConfig, Psk};
use libfuzzer_sys::fuzz_target;

fn peer(name: &str, local: &str, remote: &str, local_ts: &str, remote_ts: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_addr: None,
        local_id: Identity::Email(local.into()),
        remote_id: Identity::Email(remote.into()),
        credential: Credential::Psk(Psk::new(b"fuzz")),
        ike_suites: vec![
            IkeSuite::AES128GCM_SHA256_X25519,
            IkeSuite::AES256CBC_SHA256_MODP2048,
        ],
        esp_suites: vec![EspSuite::AES128GCM, EspSuite::AES256CBC_SHA256],
        local_ts: vec![TrafficSelector::host(local_ts.parse().unwrap())],
        remote_ts: vec![TrafficSelector::host(remote_ts.parse().unwrap())],
        mode: Mode::Tunnel,
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    }
}

fn drain(endpoint: &mut Endpoint, now: Instant) {
    while endpoint.poll_transmit(now).is_some() {}
    while endpoint.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let a_addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:500".parse().unwrap();
    let now = Instant::now();
    let mut a = Endpoint::new(EndpointConfig::new(vec![peer(
        "b", "a@x", "b@x", "10.0.0.1", "10.0.0.2",
    )]))
    .unwrap();
    let mut b = Endpoint::new(EndpointConfig::new(vec![peer(
        "a", "b@x", "a@x", "10.0.0.2", "10.0.0.1",
    )]))
    .unwrap();
    a.initiate(now, "b", a_addr, b_addr).unwrap();
    let request = a.poll_transmit(now).unwrap();
    b.handle_datagram(now, a_addr, b_addr, &request.payload);
    let response = b.poll_transmit(now).unwrap();
    let spis = &response.payload[..16];

    let mut forged = body.to_vec();
    if selector & 1 == 1 && forged.len() >= 16 {
        // Wrong or right SPIs on arbitrary content.
        forged[..16].copy_from_slice(spis);
    }
    if selector & 2 == 2 && forged.len() >= 28 {
        // A length field that agrees with the datagram, so the payload parsers are reached.
        let len = (forged.len() as u32).to_be_bytes();
        forged[24..28].copy_from_slice(&len);
        forged[17] = 0x20;
    }
    if selector & 4 == 4 {
        b.handle_datagram(now, a_addr, b_addr, &forged);
    } else {
        a.handle_datagram(now, b_addr, a_addr, &forged);
    }
    drain(&mut a, now);
    drain(&mut b, now);
    let later = now + Duration::from_secs(120);
    a.handle_timeout(later);
    b.handle_timeout(later);
    drain(&mut a, later);
    drain(&mut b, later);
    assert!(b.ike_sas().len() <= 1);
});
