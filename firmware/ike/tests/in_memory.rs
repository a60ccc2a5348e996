//! Our initiator against our responder with simulated time. Useful for the state machine's
//! logic; interoperability is proved by the strongSwan tests.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dvipsec_ike::crypto::{DhGroup, EspSuite, IkeSuite};
use dvipsec_ike::wire::{notify, TrafficSelector};
use dvipsec_ike::{
    ChildSaInstalled, Credential, DeleteReason, Endpoint, EndpointConfig, Event, Identity,
    Lifetime, Mode, PeerConfig, Psk, State, Transmit,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const INITIATOR: &str = "192.0.2.1:500";
const RESPONDER: &str = "192.0.2.2:500";

fn peer(name: &str, local: &str, remote: &str, psk: &[u8]) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_addr: None,
        local_id: Identity::Email(local.into()),
        remote_id: Identity::Email(remote.into()),
        credential: Credential::Psk(Psk::new(psk)),
        ike_suites: vec![IkeSuite::AES128GCM_SHA256_X25519],
        esp_suites: vec![EspSuite::AES128GCM],
        local_ts: vec![],
        remote_ts: vec![],
        mode: Mode::Tunnel,
        child_lifetime: Lifetime::UNLIMITED,
        ike_lifetime: Lifetime::UNLIMITED,
    }
}

fn initiator_peer() -> PeerConfig {
    let mut p = peer("to-b", "a@test", "b@test", b"secret");
    p.local_ts = vec![TrafficSelector::host(ip("10.1.0.1"))];
    p.remote_ts = vec![TrafficSelector::host(ip("10.2.0.1"))];
    p
}

fn responder_peer() -> PeerConfig {
    let mut p = peer("from-a", "b@test", "a@test", b"secret");
    p.local_ts = vec![TrafficSelector::host(ip("10.2.0.1"))];
    p.remote_ts = vec![TrafficSelector::host(ip("10.1.0.1"))];
    p
}

/// Two endpoints joined by a simulated wire that can drop or rewrite datagrams.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    /// Rewrites the source address of datagrams from `a` to `b` (a NAT in front of `a`).
    nat_a: Option<SocketAddr>,
    delivered: usize,
}

impl Pair {
    fn new(a_peer: PeerConfig, b_peer: PeerConfig) -> Self {
        Self::with_configs(
            EndpointConfig::new(vec![a_peer]),
            EndpointConfig::new(vec![b_peer]),
        )
    }

    fn with_configs(a: EndpointConfig, b: EndpointConfig) -> Self {
        Self {
            a: Endpoint::new(a).unwrap(),
            b: Endpoint::new(b).unwrap(),
            now: Instant::now(),
            nat_a: None,
            delivered: 0,
        }
    }

    /// The default initiator and responder, `a`'s IKE_SA_INIT request queued, nothing delivered.
    fn initiating() -> Self {
        let mut pair = Self::new(initiator_peer(), responder_peer());
        pair.initiate();
        pair
    }

    /// `a` starts the IKE SA "to-b" toward `b`.
    fn initiate(&mut self) {
        self.a
            .initiate(self.now, "to-b", addr(INITIATOR), addr(RESPONDER))
            .unwrap();
    }

    fn take(endpoint: &mut Endpoint, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| endpoint.poll_transmit(now)).collect()
    }

    /// Delivers datagrams both ways until quiet; `drop` decides per datagram (true = lose it).
    fn pump_with(&mut self, mut drop: impl FnMut(bool, &Transmit) -> bool) {
        for _ in 0..20 {
            let from_a = Self::take(&mut self.a, self.now);
            let from_b = Self::take(&mut self.b, self.now);
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for t in from_a {
                if !drop(true, &t) {
                    let from = self.nat_a.map_or(t.local, |nat| {
                        SocketAddr::new(
                            nat.ip(),
                            if t.local.port() == 4500 {
                                4500
                            } else {
                                nat.port()
                            },
                        )
                    });
                    self.b.handle_datagram(self.now, from, t.remote, &t.payload);
                    self.delivered += 1;
                }
            }
            for t in from_b {
                if !drop(false, &t) {
                    let to = if self.nat_a.is_some() {
                        self.a_local_for(&t)
                    } else {
                        t.remote
                    };
                    self.a.handle_datagram(self.now, t.local, to, &t.payload);
                    self.delivered += 1;
                }
            }
        }
        panic!("the exchange did not settle");
    }

    /// Behind the simulated NAT, `a` always receives on its own address and the port used.
    fn a_local_for(&self, t: &Transmit) -> SocketAddr {
        SocketAddr::new(
            ip("192.0.2.1"),
            if t.remote.port() == 4500 { 4500 } else { 500 },
        )
    }

    fn pump(&mut self) {
        self.pump_with(|_, _| false);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }
}

fn events(endpoint: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| endpoint.poll_event()).collect()
}

fn children(events: &[Event]) -> Vec<&ChildSaInstalled> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaInstalled(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn established(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::IkeSaEstablished { .. }))
        .count()
}

fn assert_children_match(a: &[Event], b: &[Event]) -> (u32, u32) {
    let (ca, cb) = (children(a), children(b));
    assert_eq!((ca.len(), cb.len()), (1, 1), "one child each: {a:?} {b:?}");
    let (ca, cb) = (ca[0], cb[0]);
    assert_eq!(ca.outbound_spi, cb.inbound_spi);
    assert_eq!(ca.inbound_spi, cb.outbound_spi);
    assert_ne!(ca.inbound_spi, ca.outbound_spi);
    assert_eq!(ca.outbound_keys.encr, cb.inbound_keys.encr);
    assert_eq!(ca.outbound_keys.integ, cb.inbound_keys.integ);
    assert_eq!(ca.inbound_keys.encr, cb.outbound_keys.encr);
    assert_ne!(ca.inbound_keys.encr, ca.outbound_keys.encr);
    assert_eq!(ca.suite, cb.suite);
    assert_eq!(ca.local_ts, cb.remote_ts);
    assert_eq!(ca.remote_ts, cb.local_ts);
    (ca.inbound_spi, ca.outbound_spi)
}

fn establish(pair: &mut Pair) -> (Vec<Event>, Vec<Event>) {
    pair.initiate();
    pair.pump();
    (events(&mut pair.a), events(&mut pair.b))
}

#[test]
fn gcm_x25519_establishes_with_matching_child_keys() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    let (a, b) = establish(&mut pair);
    assert_eq!((established(&a), established(&b)), (1, 1));
    assert_children_match(&a, &b);
    let child = children(&a)[0];
    assert_eq!(child.outbound_keys.encr.len(), 20);
    assert!(child.outbound_keys.integ.is_empty());
    assert!(!child.udp_encapsulation);
    assert_eq!(child.mode, Mode::Tunnel);
    let listed = pair.a.ike_sas();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, State::Established);
    assert_eq!(listed[0].children.len(), 1);
    assert_eq!(pair.b.ike_sas()[0].spi_i, listed[0].spi_i);
    assert_eq!(pair.a.poll_timeout(), None, "nothing left to retransmit");
}

#[test]
fn cbc_modp2048_establishes_with_integrity_keys() {
    let mut a = initiator_peer();
    let mut b = responder_peer();
    for p in [&mut a, &mut b] {
        p.ike_suites = vec![IkeSuite::AES256CBC_SHA256_MODP2048];
        p.esp_suites = vec![EspSuite::AES256CBC_SHA256];
    }
    let mut pair = Pair::new(a, b);
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
    let child = children(&b)[0];
    assert_eq!(child.inbound_keys.encr.len(), 32);
    assert_eq!(child.inbound_keys.integ.len(), 32);
}

#[test]
fn ecp256_with_sha384_and_sha512_prfs_establish() {
    for prf in [
        dvipsec_ike::crypto::Prf::HmacSha384,
        dvipsec_ike::crypto::Prf::HmacSha512,
    ] {
        let suite = IkeSuite {
            prf,
            dh: DhGroup::Ecp256,
            ..IkeSuite::AES128GCM_SHA256_X25519
        };
        let mut a = initiator_peer();
        let mut b = responder_peer();
        a.ike_suites = vec![suite];
        b.ike_suites = vec![suite];
        let mut pair = Pair::new(a, b);
        let (a, b) = establish(&mut pair);
        assert_children_match(&a, &b);
    }
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_wanted_group() {
    let mut a = initiator_peer();
    a.ike_suites = vec![
        IkeSuite::AES128GCM_SHA256_X25519,
        IkeSuite {
            dh: DhGroup::Ecp256,
            ..IkeSuite::AES128GCM_SHA256_X25519
        },
    ];
    let mut b = responder_peer();
    b.ike_suites = vec![IkeSuite {
        dh: DhGroup::Ecp256,
        ..IkeSuite::AES128GCM_SHA256_X25519
    }];
    let mut pair = Pair::new(a, b);
    let (a, b) = establish(&mut pair);
    assert_eq!(pair.b.stats().invalid_ke_sent, 1);
    assert_children_match(&a, &b);
    assert_eq!(pair.a.ike_sas()[0].suite.dh, DhGroup::Ecp256);
}

#[test]
fn no_common_proposal_is_refused_and_the_initiator_gives_up() {
    let mut b = responder_peer();
    b.ike_suites = vec![IkeSuite::AES256CBC_SHA256_MODP2048];
    let mut pair = Pair::new(initiator_peer(), b);
    let (a, b) = establish(&mut pair);
    assert_eq!(pair.b.stats().no_proposal_chosen, 1);
    assert!(b.is_empty());
    assert!(a.iter().any(|e| matches!(
        e,
        Event::IkeSaDeleted {
            reason: DeleteReason::PeerError(notify::NO_PROPOSAL_CHOSEN),
            ..
        }
    )));
    assert!(pair.a.ike_sas().is_empty() && pair.b.ike_sas().is_empty());
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let mut b = responder_peer();
    b.credential = Credential::Psk(Psk::new(b"other secret"));
    let mut pair = Pair::new(initiator_peer(), b);
    let (a, b) = establish(&mut pair);
    assert_eq!(established(&a) + established(&b), 0);
    assert_eq!(pair.b.stats().authentication_failures, 1);
    assert!(a.iter().any(|e| matches!(
        e,
        Event::IkeSaDeleted {
            reason: DeleteReason::PeerError(notify::AUTHENTICATION_FAILED),
            ..
        }
    )));
    assert!(pair.b.ike_sas().is_empty());
}

#[test]
fn unknown_identity_fails_authentication() {
    let mut b = responder_peer();
    b.remote_id = Identity::Fqdn("someone.else".into());
    let mut pair = Pair::new(initiator_peer(), b);
    let (a, _) = establish(&mut pair);
    assert_eq!(established(&a), 0);
    assert_eq!(pair.b.stats().authentication_failures, 1);
}

#[test]
fn responder_narrows_traffic_selectors() {
    let mut a = initiator_peer();
    a.local_ts = vec![TrafficSelector::prefix(ip("10.1.0.0"), 16)];
    a.remote_ts = vec![TrafficSelector::prefix(ip("10.0.0.0"), 8)];
    let mut pair = Pair::new(a, responder_peer());
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
    let child = children(&a)[0];
    assert_eq!(child.local_ts, vec![TrafficSelector::host(ip("10.1.0.1"))]);
    assert_eq!(child.remote_ts, vec![TrafficSelector::host(ip("10.2.0.1"))]);
}

#[test]
fn disjoint_selectors_keep_the_ike_sa_without_a_child() {
    let mut a = initiator_peer();
    a.remote_ts = vec![TrafficSelector::host(ip("172.16.0.1"))];
    let mut pair = Pair::new(a, responder_peer());
    let (a, b) = establish(&mut pair);
    assert_eq!((established(&a), established(&b)), (1, 1));
    assert!(children(&a).is_empty() && children(&b).is_empty());
    assert!(a.iter().any(|e| matches!(
        e,
        Event::ChildSaRefused {
            notify: notify::TS_UNACCEPTABLE,
            ..
        }
    )));
}

#[test]
fn transport_mode_is_negotiated_when_both_want_it() {
    let mut a = initiator_peer();
    let mut b = responder_peer();
    a.mode = Mode::Transport;
    b.mode = Mode::Transport;
    let mut pair = Pair::new(a, b);
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
    assert_eq!(children(&a)[0].mode, Mode::Transport);
    assert_eq!(children(&b)[0].mode, Mode::Transport);

    let mut a_only = initiator_peer();
    a_only.mode = Mode::Transport;
    let mut pair = Pair::new(a_only, responder_peer());
    let (a, _) = establish(&mut pair);
    assert_eq!(children(&a)[0].mode, Mode::Tunnel);
}

#[test]
fn lost_auth_response_is_retransmitted_and_replayed_from_cache() {
    let mut pair = Pair::initiating();
    let mut responses_from_b = 0;
    // Lose the responder's first IKE_AUTH answer (its second datagram).
    pair.pump_with(|from_a, _| {
        if from_a {
            return false;
        }
        responses_from_b += 1;
        responses_from_b == 2
    });
    assert_eq!(established(&events(&mut pair.a)), 0);
    let deadline = pair
        .a
        .poll_timeout()
        .expect("a retransmission is scheduled");
    assert_eq!(deadline - pair.now, Duration::from_millis(500));
    pair.advance(Duration::from_millis(500));
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    assert_eq!(established(&a), 1);
    assert_eq!(
        children(&b).len(),
        1,
        "the responder installed exactly one child"
    );
    assert_eq!(pair.a.stats().retransmitted_requests, 1);
    assert_eq!(pair.b.stats().retransmitted_responses, 1);
}

#[test]
fn retransmissions_back_off_and_then_give_up() {
    let mut pair = Pair::initiating();
    let mut gaps = Vec::new();
    let mut sent = 0;
    loop {
        sent += Pair::take(&mut pair.a, pair.now).len();
        let Some(deadline) = pair.a.poll_timeout() else {
            break;
        };
        gaps.push(deadline - pair.now);
        pair.now = deadline;
        pair.a.handle_timeout(pair.now);
    }
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000]);
    assert_eq!(sent, 6, "the request and five retransmissions");
    assert!(events(&mut pair.a).iter().any(|e| matches!(
        e,
        Event::IkeSaDeleted {
            reason: DeleteReason::Timeout,
            ..
        }
    )));
    assert!(pair.a.ike_sas().is_empty());
}

#[test]
fn half_open_responder_state_expires() {
    let mut pair = Pair::initiating();
    // Deliver only the IKE_SA_INIT request.
    let first = Pair::take(&mut pair.a, pair.now).remove(0);
    pair.b
        .handle_datagram(pair.now, first.local, first.remote, &first.payload);
    assert_eq!(pair.b.ike_sas()[0].state, State::InitReplied);
    pair.advance(Duration::from_secs(31));
    assert!(pair.b.ike_sas().is_empty());
}

#[test]
fn duplicate_init_request_gets_the_same_response() {
    let mut pair = Pair::initiating();
    let request = Pair::take(&mut pair.a, pair.now).remove(0);
    pair.b
        .handle_datagram(pair.now, request.local, request.remote, &request.payload);
    pair.b
        .handle_datagram(pair.now, request.local, request.remote, &request.payload);
    let answers = Pair::take(&mut pair.b, pair.now);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].payload, answers[1].payload);
    assert_eq!(pair.b.ike_sas().len(), 1);
}

#[test]
fn delete_from_the_initiator_removes_both_sides() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    let (a, b) = establish(&mut pair);
    let (spi_in, spi_out) = assert_children_match(&a, &b);
    let id = pair.a.ike_sas()[0].id;
    pair.a.delete_ike_sa(pair.now, id).unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    assert!(a.iter().any(|e| matches!(e, Event::ChildSaDeleted { inbound_spi, outbound_spi, .. } if *inbound_spi == spi_in && *outbound_spi == spi_out)));
    assert!(a.iter().any(|e| matches!(
        e,
        Event::IkeSaDeleted {
            reason: DeleteReason::LocalDelete,
            ..
        }
    )));
    assert!(b.iter().any(|e| matches!(
        e,
        Event::IkeSaDeleted {
            reason: DeleteReason::PeerDelete,
            ..
        }
    )));
    assert!(pair.a.ike_sas().is_empty() && pair.b.ike_sas().is_empty());
}

#[test]
fn liveness_check_is_answered_and_unanswered_one_deletes() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    establish(&mut pair);
    let id = pair.a.ike_sas()[0].id;
    pair.a.check_liveness(pair.now, id).unwrap();
    pair.pump();
    assert!(events(&mut pair.a).is_empty());
    assert_eq!(pair.a.poll_timeout(), None);
    // Now the peer is gone.
    pair.a.check_liveness(pair.now, id).unwrap();
    let _ = Pair::take(&mut pair.a, pair.now);
    for _ in 0..6 {
        let deadline = pair.a.poll_timeout().unwrap();
        pair.now = deadline;
        pair.a.handle_timeout(pair.now);
        let _ = Pair::take(&mut pair.a, pair.now);
    }
    let a = events(&mut pair.a);
    assert_eq!(children(&a).len(), 0);
    assert!(a.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. })));
    assert!(pair.a.ike_sas().is_empty());
}

#[test]
fn nat_in_front_of_the_initiator_moves_both_to_port_4500() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    pair.nat_a = Some(addr("198.51.100.7:40000"));
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
    let child_a = children(&a)[0];
    let child_b = children(&b)[0];
    assert!(child_a.udp_encapsulation && child_b.udp_encapsulation);
    assert_eq!(child_a.remote.port(), 4500);
    assert_eq!(child_b.remote, addr("198.51.100.7:4500"));
    assert_eq!(child_b.local.port(), 4500);
}

/// `nat_t: force` on either side: no NAT on the wire, yet both ends see one, move to port 4500
/// and put ESP in UDP; without it (the test above without a NAT) they do not.
#[test]
fn forced_udp_encapsulation_works_from_either_side_without_a_nat() {
    for forcing_responder in [true, false] {
        let mut a_config = EndpointConfig::new(vec![initiator_peer()]);
        let mut b_config = EndpointConfig::new(vec![responder_peer()]);
        if forcing_responder {
            b_config.force_udp_encap = vec![addr(INITIATOR).ip()];
        } else {
            a_config.force_udp_encap = vec![addr(RESPONDER).ip()];
        }
        let mut pair = Pair::with_configs(a_config, b_config);
        let (a, b) = establish(&mut pair);
        assert_children_match(&a, &b);
        let (child_a, child_b) = (children(&a)[0], children(&b)[0]);
        assert!(child_a.udp_encapsulation && child_b.udp_encapsulation);
        assert_eq!(child_a.remote.port(), 4500);
        assert_eq!(child_b.local.port(), 4500);
    }
    let mut plain = Pair::new(initiator_peer(), responder_peer());
    let (a, _) = establish(&mut plain);
    assert!(!children(&a)[0].udp_encapsulation);
}

#[test]
fn cookies_are_demanded_under_load_and_honoured() {
    let mut b_config = EndpointConfig::new(vec![responder_peer()]);
    b_config.cookie_threshold = 0;
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    let (a, b) = establish(&mut pair);
    assert_eq!(pair.b.stats().cookies_sent, 1);
    assert_children_match(&a, &b);
}

#[test]
fn init_flood_triggers_cookies_and_established_sa_survives() {
    let mut b_config = EndpointConfig::new(vec![responder_peer()]);
    b_config.cookie_threshold = 8;
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    let (a, b) = establish(&mut pair);
    let (spi_in, _) = assert_children_match(&a, &b);
    // A flood of IKE_SA_INIT requests from many source ports: a fresh initiator per port.
    let mut flooder = Endpoint::new(EndpointConfig::new(vec![initiator_peer()])).unwrap();
    for port in 0..100u16 {
        let from = SocketAddr::new(ip("203.0.113.9"), 10_000 + port);
        flooder
            .initiate(pair.now, "to-b", from, addr(RESPONDER))
            .unwrap();
        let request = flooder.poll_transmit(pair.now).unwrap();
        pair.b
            .handle_datagram(pair.now, from, request.remote, &request.payload);
    }
    let answered = Pair::take(&mut pair.b, pair.now).len();
    assert_eq!(answered, 100);
    assert_eq!(pair.b.stats().cookies_sent, 100 - 8);
    let listed = pair.b.ike_sas();
    assert_eq!(
        listed.len(),
        1 + 8,
        "only the threshold's worth of half-open SAs"
    );
    assert!(listed
        .iter()
        .any(|sa| sa.state == State::Established && sa.children[0].outbound_spi == spi_in));
    // The established SA still works: a liveness check from b is answered.
    let established_id = listed
        .iter()
        .find(|sa| sa.state == State::Established)
        .unwrap()
        .id;
    pair.b.check_liveness(pair.now, established_id).unwrap();
    pair.pump();
    assert!(
        pair.b.poll_timeout().is_some_and(|t| t > pair.now),
        "only half-open expiry left"
    );
    assert_eq!(pair.b.stats().retransmitted_requests, 0);
}

#[test]
fn garbage_and_truncated_messages_are_counted_not_fatal() {
    let mut pair = Pair::initiating();
    let request = Pair::take(&mut pair.a, pair.now).remove(0);
    let (from, to) = (request.local, request.remote);
    for cut in 0..request.payload.len() {
        pair.b
            .handle_datagram(pair.now, from, to, &request.payload[..cut]);
    }
    pair.b.handle_datagram(pair.now, from, to, &[0xff; 3]);
    assert_eq!(pair.b.stats().malformed, request.payload.len() as u64 + 1);
    assert!(pair.b.ike_sas().is_empty());
    // The intact request still works afterwards, and so does the rest of the exchange.
    pair.b.handle_datagram(pair.now, from, to, &request.payload);
    pair.pump();
    assert_eq!(established(&events(&mut pair.a)), 1);
    // A flipped bit in a protected message is an integrity failure, and the SA stays.
    let id = pair.a.ike_sas()[0].id;
    pair.a.check_liveness(pair.now, id).unwrap();
    let mut probe = Pair::take(&mut pair.a, pair.now).remove(0);
    let last = probe.payload.len() - 1;
    probe.payload[last] ^= 1;
    pair.b
        .handle_datagram(pair.now, probe.local, probe.remote, &probe.payload);
    assert_eq!(pair.b.stats().integrity_failures, 1);
    assert_eq!(pair.b.ike_sas()[0].state, State::Established);
    // A message whose initiator SPI is not the IKE SA's is counted too.
    probe.payload[0] ^= 0x55;
    pair.b
        .handle_datagram(pair.now, probe.local, probe.remote, &probe.payload);
    assert_eq!(pair.b.stats().spi_mismatch, 1);
}

/// Whether `events` report the child SA with inbound SPI `spi` deleted.
fn child_deleted(events: &[Event], spi: u32) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::ChildSaDeleted { inbound_spi, .. } if *inbound_spi == spi))
}

fn rekeyed(events: &[Event]) -> Vec<(u32, u32, &ChildSaInstalled)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed {
                old_inbound_spi,
                old_outbound_spi,
                new,
            } => Some((*old_inbound_spi, *old_outbound_spi, new)),
            _ => None,
        })
        .collect()
}

fn child_rekey_round(a_pfs: bool) {
    let mut a = initiator_peer();
    let mut b = responder_peer();
    let pfs_suite = EspSuite {
        pfs: Some(DhGroup::Curve25519),
        ..EspSuite::AES128GCM
    };
    a.esp_suites = if a_pfs {
        vec![pfs_suite]
    } else {
        vec![EspSuite::AES128GCM]
    };
    b.esp_suites = vec![EspSuite::AES128GCM, pfs_suite];
    let mut pair = Pair::new(a, b);
    let (a, b) = establish(&mut pair);
    let (old_in, old_out) = assert_children_match(&a, &b);
    let old_key = children(&a)[0].outbound_keys.encr.clone();
    let id = pair.a.ike_sas()[0].id;
    pair.a.rekey_child(pair.now, id, old_in).unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    let (ra, rb) = (rekeyed(&a), rekeyed(&b));
    assert_eq!((ra.len(), rb.len()), (1, 1), "{a:?} {b:?}");
    assert_eq!((ra[0].0, ra[0].1), (old_in, old_out));
    assert_eq!((rb[0].0, rb[0].1), (old_out, old_in));
    let (na, nb) = (ra[0].2, rb[0].2);
    assert_eq!(na.outbound_spi, nb.inbound_spi);
    assert_eq!(na.inbound_spi, nb.outbound_spi);
    assert_eq!(na.outbound_keys.encr, nb.inbound_keys.encr);
    assert_eq!(na.inbound_keys.encr, nb.outbound_keys.encr);
    assert_ne!(na.outbound_keys.encr, old_key);
    assert_eq!(nb.suite.pfs.is_some(), a_pfs);
    // The old child is deleted on both sides afterwards.
    for (events, inbound) in [(&a, old_in), (&b, old_out)] {
        assert!(child_deleted(events, inbound));
    }
    let listed_a = pair.a.ike_sas();
    assert_eq!(listed_a[0].children.len(), 1);
    assert_eq!(listed_a[0].children[0].inbound_spi, na.inbound_spi);
    assert_eq!(pair.b.ike_sas()[0].children.len(), 1);
}

#[test]
fn child_rekey_without_pfs_replaces_the_child_on_both_sides() {
    child_rekey_round(false);
}

#[test]
fn child_rekey_with_pfs_replaces_the_child_on_both_sides() {
    child_rekey_round(true);
}

#[test]
fn child_rekey_with_a_pfs_group_the_peer_lacks_is_refused_and_keeps_the_old_child() {
    let mut a = initiator_peer();
    a.esp_suites = vec![EspSuite {
        pfs: Some(DhGroup::Ecp256),
        ..EspSuite::AES128GCM
    }];
    let mut pair = Pair::new(a, responder_peer());
    let (a, b) = establish(&mut pair);
    let (old_in, _) = assert_children_match(&a, &b);
    let id = pair.a.ike_sas()[0].id;
    pair.a.rekey_child(pair.now, id, old_in).unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    assert!(a.iter().any(|e| matches!(
        e,
        Event::ChildSaRefused {
            notify: notify::NO_PROPOSAL_CHOSEN,
            ..
        }
    )));
    assert_eq!(pair.a.ike_sas()[0].children[0].inbound_spi, old_in);
    assert_eq!(pair.b.ike_sas()[0].children.len(), 1);
}

#[test]
fn an_additional_child_is_created() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    establish(&mut pair);
    let id = pair.a.ike_sas()[0].id;
    pair.a.create_child(pair.now, id).unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    assert_children_match(&a, &b);
    assert_eq!(pair.a.ike_sas()[0].children.len(), 2);
    assert_eq!(pair.b.ike_sas()[0].children.len(), 2);
}

#[test]
fn rekeying_an_unknown_child_is_an_error() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    establish(&mut pair);
    let id = pair.a.ike_sas()[0].id;
    assert!(matches!(
        pair.a.rekey_child(pair.now, id, 0xdead_beef),
        Err(dvipsec_ike::IkeError::NoSuchChild(0xdead_beef))
    ));
}

fn ike_rekey_round(from_initiator: bool) {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    let (a, b) = establish(&mut pair);
    let (child_in, _) = assert_children_match(&a, &b);
    let old_a = pair.a.ike_sas()[0].clone();
    let old_b = pair.b.ike_sas()[0].clone();
    if from_initiator {
        pair.a.rekey_ike(pair.now, old_a.id).unwrap();
    } else {
        pair.b.rekey_ike(pair.now, old_b.id).unwrap();
    }
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    for (events, old) in [(&a, old_a.id), (&b, old_b.id)] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::IkeSaRekeyed { old: o, .. } if *o == old)),
            "{events:?}"
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::IkeSaDeleted { ike_sa, .. } if *ike_sa == old)));
        assert!(!events
            .iter()
            .any(|e| matches!(e, Event::ChildSaDeleted { .. })));
    }
    let (new_a, new_b) = (pair.a.ike_sas(), pair.b.ike_sas());
    assert_eq!((new_a.len(), new_b.len()), (1, 1));
    assert_eq!(
        (new_a[0].spi_i, new_a[0].spi_r),
        (new_b[0].spi_i, new_b[0].spi_r)
    );
    assert_ne!(new_a[0].spi_i, old_a.spi_i);
    assert_eq!(new_a[0].children[0].inbound_spi, child_in);
    // The rekey initiator is the new IKE SA's initiator (RFC 7296 2.18).
    let expected = if from_initiator {
        dvipsec_ike::Role::Initiator
    } else {
        dvipsec_ike::Role::Responder
    };
    assert_eq!(new_a[0].role, expected);
    // The new IKE SA works: a liveness check from each side is answered, and it can be deleted.
    pair.a.check_liveness(pair.now, new_a[0].id).unwrap();
    pair.pump();
    pair.b.check_liveness(pair.now, new_b[0].id).unwrap();
    pair.pump();
    assert_eq!(pair.a.poll_timeout(), None);
    assert_eq!(pair.b.poll_timeout(), None);
    pair.b.delete_ike_sa(pair.now, new_b[0].id).unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    assert!(child_deleted(&a, child_in));
    assert!(pair.a.ike_sas().is_empty() && pair.b.ike_sas().is_empty());
}

#[test]
fn ike_rekey_from_the_initiator_moves_children_to_the_new_sa() {
    ike_rekey_round(true);
}

#[test]
fn ike_rekey_from_the_responder_moves_children_to_the_new_sa() {
    ike_rekey_round(false);
}

fn with_lifetimes(child: Lifetime, ike: Lifetime) -> Pair {
    let mut a = initiator_peer();
    a.child_lifetime = child;
    a.ike_lifetime = ike;
    Pair::new(a, responder_peer())
}

/// A pair with those lifetimes on `a`, established, its child SAs checked to match; returns the
/// pair and `a`'s child SPIs (inbound, outbound).
fn established_with_lifetimes(child: Lifetime, ike: Lifetime) -> (Pair, (u32, u32)) {
    let mut pair = with_lifetimes(child, ike);
    let (a, b) = establish(&mut pair);
    let spis = assert_children_match(&a, &b);
    (pair, spis)
}

#[test]
fn soft_time_limit_rekeys_the_child_and_hard_limit_is_never_reached() {
    let child = Lifetime {
        soft_time: Some(Duration::from_secs(100)),
        hard_time: Some(Duration::from_secs(120)),
        ..Lifetime::UNLIMITED
    };
    let (mut pair, (old_in, _)) = established_with_lifetimes(child, Lifetime::UNLIMITED);
    let start = pair.now;
    assert_eq!(
        pair.a.poll_timeout(),
        Some(start + Duration::from_secs(100))
    );
    pair.advance(Duration::from_secs(99));
    assert!(
        Pair::take(&mut pair.a, pair.now).is_empty(),
        "nothing before the soft limit"
    );
    pair.advance(Duration::from_secs(1));
    pair.pump();
    let a = events(&mut pair.a);
    let rekeys = rekeyed(&a);
    assert_eq!(rekeys.len(), 1);
    assert_eq!(rekeys[0].0, old_in);
    assert!(child_deleted(&a, old_in));
    // The new child's own soft limit is next.
    assert_eq!(
        pair.a.poll_timeout(),
        Some(pair.now + Duration::from_secs(100))
    );
}

#[test]
fn soft_byte_limit_rekeys_and_stale_reports_do_not_lower_totals() {
    let child = Lifetime {
        soft_bytes: Some(1_000_000),
        ..Lifetime::UNLIMITED
    };
    let (mut pair, (old_in, _)) = established_with_lifetimes(child, Lifetime::UNLIMITED);
    let id = pair.a.ike_sas()[0].id;
    pair.a
        .report_child_usage(pair.now, id, old_in, 999_999, 10)
        .unwrap();
    assert!(Pair::take(&mut pair.a, pair.now).is_empty());
    assert_eq!(pair.a.ike_sas()[0].children[0].bytes, 999_999);
    pair.a
        .report_child_usage(pair.now, id, old_in, 5, 1)
        .unwrap();
    assert_eq!(pair.a.ike_sas()[0].children[0].bytes, 999_999);
    pair.a
        .report_child_usage(pair.now, id, old_in, 1_000_000, 11)
        .unwrap();
    pair.pump();
    assert_eq!(rekeyed(&events(&mut pair.a)).len(), 1);
    assert!(matches!(
        pair.a.report_child_usage(pair.now, id, old_in, 1, 1),
        Err(dvipsec_ike::IkeError::NoSuchChild(_))
    ));
}

#[test]
fn hard_packet_limit_deletes_the_child_on_both_sides() {
    let child = Lifetime {
        hard_packets: Some(1000),
        ..Lifetime::UNLIMITED
    };
    let (mut pair, (old_in, old_out)) = established_with_lifetimes(child, Lifetime::UNLIMITED);
    let id = pair.a.ike_sas()[0].id;
    pair.a
        .report_child_usage(pair.now, id, old_in, 0, 1000)
        .unwrap();
    pair.pump();
    let a = events(&mut pair.a);
    let b = events(&mut pair.b);
    assert!(rekeyed(&a).is_empty());
    assert!(child_deleted(&a, old_in));
    assert!(child_deleted(&b, old_out));
    assert!(pair.a.ike_sas()[0].children.is_empty());
    assert!(pair.b.ike_sas()[0].children.is_empty());
}

#[test]
fn hard_limit_reached_while_busy_acts_after_the_answer() {
    let child = Lifetime {
        hard_packets: Some(10),
        ..Lifetime::UNLIMITED
    };
    let (mut pair, (old_in, _)) = established_with_lifetimes(child, Lifetime::UNLIMITED);
    let id = pair.a.ike_sas()[0].id;
    pair.a.check_liveness(pair.now, id).unwrap();
    pair.a
        .report_child_usage(pair.now, id, old_in, 0, 10)
        .unwrap();
    // Only the liveness request is out; the delete waits for its answer.
    assert_eq!(Pair::take(&mut pair.a, pair.now).len(), 1);
    let retransmit_at = pair.a.poll_timeout().unwrap();
    assert!(retransmit_at > pair.now);
    // Deliver the retransmission and its answer; the delete follows the answer at once.
    pair.now = retransmit_at;
    pair.a.handle_timeout(pair.now);
    pair.pump();
    assert!(pair.a.ike_sas()[0].children.is_empty());
    assert!(pair.b.ike_sas()[0].children.is_empty());
}

#[test]
fn ike_soft_limit_rekeys_the_ike_sa_and_hard_limit_deletes_it() {
    let ike = Lifetime {
        soft_time: Some(Duration::from_secs(3600)),
        hard_time: Some(Duration::from_secs(4000)),
        ..Lifetime::UNLIMITED
    };
    let (mut pair, _) = established_with_lifetimes(Lifetime::UNLIMITED, ike);
    let old = pair.a.ike_sas()[0].id;
    pair.advance(Duration::from_secs(3600));
    pair.pump();
    let a = events(&mut pair.a);
    assert!(a
        .iter()
        .any(|e| matches!(e, Event::IkeSaRekeyed { old: o, .. } if *o == old)));
    let new = pair.a.ike_sas()[0].id;
    assert_ne!(new, old);
    assert_eq!(pair.b.ike_sas().len(), 1);
    // The new IKE SA was created now; its own soft limit is an hour away, not the old hard one.
    assert_eq!(
        pair.a.poll_timeout(),
        Some(pair.now + Duration::from_secs(3600))
    );

    // Without a soft limit, the hard limit deletes the IKE SA and its children.
    let hard_only = Lifetime {
        hard_time: Some(Duration::from_secs(50)),
        ..Lifetime::UNLIMITED
    };
    let mut pair = with_lifetimes(Lifetime::UNLIMITED, hard_only);
    establish(&mut pair);
    pair.advance(Duration::from_secs(50));
    pair.pump();
    let a = events(&mut pair.a);
    assert!(a.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. })));
    assert!(pair.a.ike_sas().is_empty() && pair.b.ike_sas().is_empty());
}

#[test]
fn responder_picks_the_configuration_whose_selectors_fit() {
    // Two configurations for the same peer identity, as the site policy makes one per SPD
    // entry; the initiator's selectors fit only the second.
    let mut other_entry = responder_peer();
    other_entry.name = "from-a/other".into();
    other_entry.remote_ts = vec![TrafficSelector::host(ip("10.9.9.9"))];
    let b_config = EndpointConfig::new(vec![other_entry, responder_peer()]);
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
    assert!(b
        .iter()
        .any(|e| matches!(e, Event::IkeSaEstablished { peer, .. } if peer == "from-a")));
}

/// A fresh initiator at `from` sends one IKE_SA_INIT request to `b`; returns b's answers.
fn init_from(pair: &mut Pair, from: SocketAddr) -> Vec<Transmit> {
    let mut initiator = Endpoint::new(EndpointConfig::new(vec![initiator_peer()])).unwrap();
    initiator
        .initiate(pair.now, "to-b", from, addr(RESPONDER))
        .unwrap();
    let request = initiator.poll_transmit(pair.now).unwrap();
    pair.b
        .handle_datagram(pair.now, from, request.remote, &request.payload);
    Pair::take(&mut pair.b, pair.now)
}

fn half_open(endpoint: &Endpoint) -> usize {
    endpoint
        .ike_sas()
        .iter()
        .filter(|sa| sa.state == State::InitReplied)
        .count()
}

/// The established pair's SA still answers a liveness check with nothing retransmitted.
fn assert_established_sa_works(pair: &mut Pair) {
    let id = pair
        .a
        .ike_sas()
        .iter()
        .find(|sa| sa.state == State::Established)
        .expect("a's IKE SA is established")
        .id;
    let answered_before = pair.delivered;
    pair.a.check_liveness(pair.now, id).unwrap();
    pair.pump();
    assert_eq!(pair.delivered, answered_before + 2, "request and response");
    assert_eq!(pair.a.stats().retransmitted_requests, 0);
    assert!(events(&mut pair.a).is_empty(), "nothing deleted on a");
    assert!(events(&mut pair.b).is_empty(), "nothing deleted on b");
}

#[test]
fn half_open_sas_per_peer_address_are_bounded_and_free_up_on_expiry() {
    let mut b_config = EndpointConfig::new(vec![responder_peer()]);
    b_config.max_half_open_per_peer = 3;
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    establish(&mut pair);
    let flooder = ip("203.0.113.9");
    let answered: usize = (0..10u16)
        .map(|port| init_from(&mut pair, SocketAddr::new(flooder, 20_000 + port)).len())
        .sum();
    assert_eq!(answered, 3, "the rest is dropped unanswered");
    assert_eq!(pair.b.stats().half_open_peer_drops, 7);
    assert_eq!(pair.b.stats().half_open_global_drops, 0);
    assert_eq!(half_open(&pair.b), 3);
    // Another address is not held back by this one's bound, and the established SA works.
    assert_eq!(init_from(&mut pair, addr("203.0.113.10:500")).len(), 1);
    assert_established_sa_works(&mut pair);
    // Once the half-open SAs expire the address may start again.
    pair.advance(Duration::from_secs(31));
    assert_eq!(half_open(&pair.b), 0);
    assert_eq!(
        init_from(&mut pair, SocketAddr::new(flooder, 30_000)).len(),
        1
    );
    assert_eq!(pair.b.stats().half_open_peer_drops, 7);
}

#[test]
fn half_open_sas_in_all_are_bounded() {
    let mut b_config = EndpointConfig::new(vec![responder_peer()]);
    b_config.max_half_open = 4;
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    establish(&mut pair);
    let answered: usize = (1..=10u8)
        .map(|host| init_from(&mut pair, SocketAddr::new([198, 51, 100, host].into(), 500)).len())
        .sum();
    assert_eq!(answered, 4);
    assert_eq!(pair.b.stats().half_open_global_drops, 6);
    assert_eq!(pair.b.stats().half_open_peer_drops, 0);
    assert_eq!(half_open(&pair.b), 4);
    assert_eq!(
        pair.b.ike_sas().len(),
        1 + 4,
        "the established SA was not evicted"
    );
    assert_established_sa_works(&mut pair);
}

#[test]
fn cookies_come_first_and_the_peer_bound_holds_for_initiators_that_return_them() {
    let mut b_config = EndpointConfig::new(vec![responder_peer()]);
    b_config.cookie_threshold = 2;
    b_config.max_half_open_per_peer = 4;
    let mut pair = Pair::with_configs(EndpointConfig::new(vec![initiator_peer()]), b_config);
    let from_ip = ip("203.0.113.9");
    for port in 0..8u16 {
        let from = SocketAddr::new(from_ip, 40_000 + port);
        let mut initiator = Endpoint::new(EndpointConfig::new(vec![initiator_peer()])).unwrap();
        initiator
            .initiate(pair.now, "to-b", from, addr(RESPONDER))
            .unwrap();
        let request = initiator.poll_transmit(pair.now).unwrap();
        let cookies_before = pair.b.stats().cookies_sent;
        pair.b
            .handle_datagram(pair.now, from, request.remote, &request.payload);
        let answers = Pair::take(&mut pair.b, pair.now);
        if pair.b.stats().cookies_sent > cookies_before {
            // The initiator retries with the cookie; b's answer to that is not needed here.
            initiator.handle_datagram(pair.now, answers[0].local, from, &answers[0].payload);
            let retry = initiator.poll_transmit(pair.now).unwrap();
            pair.b
                .handle_datagram(pair.now, from, retry.remote, &retry.payload);
            let _ = Pair::take(&mut pair.b, pair.now);
        }
    }
    let stats = pair.b.stats();
    // Two without cookies; every later initiator was asked for one, returned it, and only two
    // of those fit under the bound of four from this address.
    assert_eq!(stats.cookies_sent, 6);
    assert_eq!(half_open(&pair.b), 4);
    assert_eq!(stats.half_open_peer_drops, 4);
    // The legitimate initiator from its own address still gets through (with a cookie).
    let (a, b) = establish(&mut pair);
    assert_children_match(&a, &b);
}

#[test]
fn forged_ike_spis_are_dropped_counted_and_the_established_sa_keeps_working() {
    let mut pair = Pair::new(initiator_peer(), responder_peer());
    establish(&mut pair);
    let id = pair.a.ike_sas()[0].id;
    pair.a.check_liveness(pair.now, id).unwrap();
    let probe = Pair::take(&mut pair.a, pair.now).remove(0);
    let forged = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = probe.payload.clone();
        edit(&mut bytes);
        bytes
    };
    // To b (the responder): a responder SPI that no IKE SA has, then the right responder SPI
    // with another initiator SPI.
    let unknown_r = forged(&|m| m[8..16].copy_from_slice(&[0xab; 8]));
    let mismatch_i = forged(&|m| m[0..8].copy_from_slice(&[0xcd; 8]));
    for bytes in [&unknown_r, &mismatch_i] {
        pair.b
            .handle_datagram(pair.now, probe.local, probe.remote, bytes);
    }
    assert_eq!(
        (pair.b.stats().unknown_spi, pair.b.stats().spi_mismatch),
        (1, 1)
    );
    // To a (the initiator), dressed as b's responses: an initiator SPI a never chose, then a's
    // own initiator SPI with a forged responder SPI.
    let as_response = |m: &mut Vec<u8>| m[19] = 0x20;
    let unknown_i = forged(&|m| {
        as_response(m);
        m[0..8].copy_from_slice(&[0xef; 8]);
    });
    let mismatch_r = forged(&|m| {
        as_response(m);
        m[8..16].copy_from_slice(&[0x12; 8]);
    });
    for bytes in [&unknown_i, &mismatch_r] {
        pair.a
            .handle_datagram(pair.now, probe.remote, probe.local, bytes);
    }
    assert_eq!(
        (pair.a.stats().unknown_spi, pair.a.stats().spi_mismatch),
        (1, 1)
    );
    // None of them reached an IKE SA: no integrity check ran, nothing was answered.
    assert_eq!(
        pair.a.stats().integrity_failures + pair.b.stats().integrity_failures,
        0
    );
    assert!(Pair::take(&mut pair.b, pair.now).is_empty());
    // The real probe is answered, and the SA goes on working.
    pair.b
        .handle_datagram(pair.now, probe.local, probe.remote, &probe.payload);
    pair.pump();
    assert_eq!(pair.a.poll_timeout(), None, "the probe was answered");
    assert_established_sa_works(&mut pair);
    assert_eq!(pair.a.ike_sas()[0].state, State::Established);
    assert_eq!(pair.b.ike_sas()[0].state, State::Established);
}
