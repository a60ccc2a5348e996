//! End-to-end scenarios on the in-memory fabric: a scripted peer, one distributor, two targets
//! and the CF in a shared-memory region in a temporary directory.

use dvipsec_cf::{LeaseParams, LeasePolicy, SequenceFacility};
use dvipsec_dataplane::distributor::DropCause;
use dvipsec_dataplane::gre;
use dvipsec_dataplane::poll::{self, PollNode};
use dvipsec_dataplane::sa_table::{FacilitySink, SummingSink};
use dvipsec_dataplane::target::TargetDrop;
use dvipsec_dataplane::testbed::*;
use dvipsec_dataplane::wire::{self, ETHERNET_LEN};
use dvipsec_esp::ip::Family;
use dvipsec_esp::{Direction, Sa};
use dvipsec_ports::PacketPort;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

fn site(config: TestbedConfig) -> (Testbed, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::new(&config, &dir.path().join("cf")).unwrap();
    (bed, dir)
}

fn target_macs(bed: &Testbed) -> BTreeSet<[u8; 6]> {
    (0..bed.targets.len()).map(target_mac).collect()
}

#[test]
fn echo_replies_come_straight_from_targets_with_unique_sequence_numbers() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let mut expected = BTreeSet::new();
    for round in 0..10 {
        for conn in 0..20u16 {
            let payload = format!("hello {conn} {round}");
            assert!(bed.peer.send_udp(
                Testbed::peer_socket(40_000 + conn),
                Testbed::dvipa_socket(60),
                payload.as_bytes()
            ));
            expected.insert(payload.into_bytes());
        }
        bed.settle(round * 1000, 50);
    }
    let received = bed.peer.take_received();
    let got: BTreeSet<Vec<u8>> = received.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(got, expected, "every datagram echoed once");
    assert_eq!(received.len(), 200);
    let macs = target_macs(&bed);
    for r in &received {
        assert!(macs.contains(&r.from_mac), "reply from {:02x?}", r.from_mac);
        assert_eq!(r.flow.src_port, 60);
    }
    let peer = bed.peer.counters();
    assert_eq!(peer.packets_received, 200);
    assert_eq!(
        (peer.duplicate_seq, peer.replay_drops, peer.auth_failures),
        (0, 0, 0)
    );
    // Outbound never passes the distributor: it sent nothing to the peer side and got nothing
    // back over XCF.
    assert_eq!(bed.distributor.external_port().counters().tx_packets, 0);
    assert_eq!(bed.distributor.xcf_port().counters().rx_packets, 0);
    let d = bed.distributor.distributor.counters();
    assert_eq!((d.peeked, d.forwarded), (200, 200));
    // The CF handed out exactly one number per reply.
    let next = bed
        .distributor
        .facility
        .fetch_add(bed.outbound_slot, 1)
        .unwrap();
    assert_eq!(next.first, 201);
    let echoed: u64 = bed.targets.iter().map(|t| t.echoed).sum();
    assert_eq!(echoed, 200);
}

#[test]
fn idle_connections_are_swept_by_the_polling_loop() {
    let config = TestbedConfig {
        dct: dvipsec_dataplane::DctConfig {
            idle_timeout_us: 1_000_000,
            ..Default::default()
        },
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site(config);
    for conn in 0..5u16 {
        bed.peer.send_udp(
            Testbed::peer_socket(conn + 1),
            Testbed::dvipa_socket(60),
            b"a",
        );
        bed.peer.send_udp(
            Testbed::peer_socket(conn + 1),
            Testbed::dvipa_socket(60),
            b"b",
        );
    }
    bed.settle(200_000, 10);
    assert_eq!(bed.distributor.distributor.dct().len(), 5);
    bed.settle(1_300_000, 10);
    assert_eq!(bed.distributor.distributor.dct().len(), 0);
    assert_eq!(bed.distributor.distributor.dct_counters().expired, 5);
}

#[test]
fn each_connection_lands_on_exactly_one_target() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let sockets: Vec<_> = bed
        .targets
        .iter_mut()
        .map(|t| t.bind_udp(Testbed::dvipa_socket(7000), 1024).unwrap())
        .collect();
    for packet in 0..10 {
        for conn in 0..30u16 {
            bed.peer.send_udp(
                Testbed::peer_socket(30_000 + conn),
                Testbed::dvipa_socket(7000),
                &[packet as u8; 100],
            );
        }
        bed.settle(packet * 10, 50);
    }
    let mut holders: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    let mut per_target = vec![0; bed.targets.len()];
    for (index, (target, socket)) in bed.targets.iter_mut().zip(&sockets).enumerate() {
        while let Some(datagram) = target.recv(*socket) {
            assert_eq!(datagram.payload().len(), 100);
            holders
                .entry(datagram.from.port())
                .or_default()
                .insert(index);
            per_target[index] += 1;
        }
    }
    assert_eq!(holders.len(), 30);
    for (port, targets) in &holders {
        assert_eq!(
            targets.len(),
            1,
            "connection from port {port} went to {targets:?}"
        );
    }
    assert_eq!(per_target.iter().sum::<usize>(), 300);
    assert!(
        per_target.iter().all(|&n| n > 0),
        "both targets serve: {per_target:?}"
    );
    assert_eq!(bed.distributor.distributor.dct().len(), 30);
}

/// Both targets send on the shared outbound SA, interleaved, from their own sockets.
fn interleaved_sends(bed: &mut Testbed, packets: usize) {
    let sockets: Vec<_> = bed
        .targets
        .iter_mut()
        .map(|t| t.bind_udp(Testbed::dvipa_socket(9000), 4).unwrap())
        .collect();
    let peer = Testbed::peer_socket(5000);
    for i in 0..packets {
        let now = i as u64;
        for (target, socket) in bed.targets.iter_mut().zip(&sockets) {
            target.send_to(*socket, peer, &[7; 64], now).unwrap();
        }
        // Target 0 sends every round, target 1 holds its packets back for 8 rounds.
        bed.targets[0].flush();
        if i % 8 == 7 {
            bed.targets[1].flush();
        }
        bed.peer.poll_rx();
    }
    for target in &mut bed.targets {
        target.flush();
    }
    bed.peer.poll_rx();
}

#[test]
fn bounded_leases_keep_every_packet_inside_a_128_window() {
    let params = LeaseParams {
        peer_window: 128,
        targets: 2,
        lease_lifetime_us: 50,
        delay_jitter_us: 50,
        max_target_rate_pps: 100_000,
    };
    let config = TestbedConfig {
        lease: LeasePolicy::bounded(&params).unwrap(),
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site(config);
    interleaved_sends(&mut bed, 400);
    let peer = bed.peer.counters();
    assert_eq!(peer.packets_received, 800);
    assert_eq!((peer.duplicate_seq, peer.replay_drops), (0, 0));
}

#[test]
fn oversized_leases_do_overflow_the_peer_window() {
    // The same traffic with leases of 200 numbers: the peer's window of 128 must drop some,
    // which shows the previous test can fail.
    let config = TestbedConfig {
        lease: LeasePolicy::unchecked(200, u64::MAX),
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site(config);
    interleaved_sends(&mut bed, 400);
    let peer = bed.peer.counters();
    assert!(peer.replay_drops > 0, "{peer:?}");
    assert_eq!(peer.duplicate_seq, 0);
}

#[test]
fn a_deleted_sa_stops_traffic_and_the_drops_are_counted() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let send = |bed: &mut Testbed, n: u16| {
        for conn in 0..n {
            bed.peer.send_udp(
                Testbed::peer_socket(20_000 + conn),
                Testbed::dvipa_socket(60),
                b"ping",
            );
        }
        bed.settle(0, 50);
    };
    send(&mut bed, 10);
    assert_eq!(bed.peer.counters().packets_received, 10);
    // Targets lose the inbound SA: forwarded packets are dropped there, nothing comes back.
    for target in &mut bed.targets {
        target.sas.delete(SPI_TO_DVIPA);
    }
    send(&mut bed, 10);
    assert_eq!(bed.peer.counters().packets_received, 10);
    let unknown: u64 = bed
        .targets
        .iter()
        .map(|t| t.target.counters().dropped(TargetDrop::UnknownSa))
        .sum();
    assert_eq!(unknown, 10);
    // Deleted everywhere: the distributor stops forwarding.
    bed.delete_sa(SPI_TO_DVIPA);
    send(&mut bed, 5);
    let d = bed.distributor.distributor.counters();
    assert_eq!(d.dropped(DropCause::UnknownSa), 5);
    assert_eq!(d.forwarded, 20);
    // The outbound SA deleted: an application's datagram is held for NEWCONN, never sent.
    bed.delete_sa(SPI_TO_PEER);
    let socket = bed.targets[0]
        .bind_udp(Testbed::dvipa_socket(9000), 4)
        .unwrap();
    let held = bed.targets[0].send_to(socket, Testbed::peer_socket(1), b"x", 0);
    assert_eq!(held, Ok(dvipsec_dataplane::node::SendStatus::AwaitingSa));
    bed.settle(10_000_000, 10);
    assert_eq!(bed.targets[0].pending_timeouts, 1);
    assert_eq!(bed.peer.counters().packets_received, 10);
}

/// An ESP packet from the peer's SA, sealed outside the site with sequence number `seq`.
fn peer_esp_packet(seq: u64, payload: &[u8]) -> Vec<u8> {
    peer_esp_packet_from(PEER_INNER, seq, payload)
}

/// Like [`peer_esp_packet`] with the inner source address `src`.
fn peer_esp_packet_from(src: std::net::Ipv4Addr, seq: u64, payload: &[u8]) -> Vec<u8> {
    peer_esp_packet_to(src, 60, seq, payload)
}

/// Like [`peer_esp_packet_from`] to the DVIPA's port `dst_port`.
fn peer_esp_packet_to(src: std::net::Ipv4Addr, dst_port: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    let config = tunnel_sa_config(
        SPI_TO_DVIPA,
        Direction::Outbound,
        &KEY_TO_DVIPA,
        (PEER_OUTER, DVIPA),
    );
    let mut sa = Sa::new(config).unwrap();
    let mut buf = vec![0u8; 2048];
    let len = wire::write_udp(
        &mut buf[200..],
        std::net::SocketAddr::new(IpAddr::V4(src), 33_333),
        Testbed::dvipa_socket(dst_port),
        payload,
    )
    .unwrap();
    let sealed = sa.seal_with_seq(&mut buf, 200..200 + len, seq).unwrap();
    buf[sealed.packet].to_vec()
}

fn gre_frame(
    src_xcf: std::net::Ipv4Addr,
    dst_index: usize,
    src_mac: [u8; 6],
    esp: &[u8],
) -> Vec<u8> {
    let mut head = [0u8; gre::ENCAP_OVERHEAD];
    gre::write_encap(
        &mut head,
        src_xcf,
        target_xcf(dst_index),
        Family::V4,
        esp.len(),
    )
    .unwrap();
    let mut eth = [0u8; ETHERNET_LEN];
    wire::write_ethernet(&mut eth, target_xcf_mac(dst_index), src_mac, Family::V4);
    [&eth[..], &head[..], esp].concat()
}

fn esp_frame_to_distributor(esp: &[u8]) -> Vec<u8> {
    let mut eth = [0u8; ETHERNET_LEN];
    wire::write_ethernet(&mut eth, DISTRIBUTOR_MAC, PEER_MAC, Family::V4);
    [&eth[..], esp].concat()
}

fn inject(port: &mut dvipsec_ports::FabricPort, frame: &[u8]) {
    let mut buf = port.alloc_tx().unwrap();
    buf.set_frame(frame).unwrap();
    let mut burst = dvipsec_ports::Burst::with_capacity(1);
    burst.push(buf).unwrap();
    assert_eq!(port.tx_burst(&mut burst), 1);
}

#[test]
fn spoofed_gre_is_dropped_and_counted() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let esp = peer_esp_packet(77, b"spoofed");
    // From a stranger's XCF address on the XCF network.
    let stranger = std::net::Ipv4Addr::new(10, 9, 0, 66);
    inject(
        &mut bed.rogue_xcf,
        &gre_frame(stranger, 0, ROGUE_XCF_MAC, &esp),
    );
    // Claiming the distributor's address, but from another link.
    inject(
        &mut bed.rogue_xcf,
        &gre_frame(DISTRIBUTOR_XCF, 0, ROGUE_XCF_MAC, &esp),
    );
    bed.settle(0, 10);
    let t0 = bed.targets[0].target.counters();
    assert_eq!(t0.dropped(TargetDrop::SpoofedGre), 2);
    assert_eq!(t0.inbound_packets, 0);
    assert_eq!(bed.peer.counters().packets_received, 0);
    // The same ESP packet through the distributor is accepted: the drops above were the filter.
    let mut frame = vec![0u8; ETHERNET_LEN];
    wire::write_ethernet(
        (&mut frame[..ETHERNET_LEN]).try_into().unwrap(),
        DISTRIBUTOR_MAC,
        PEER_MAC,
        Family::V4,
    );
    frame.extend_from_slice(&esp);
    let mut peer_side = bed.targets.len();
    peer_side += 0;
    assert!(peer_side > 0);
    bed.peer
        .send_udp(Testbed::peer_socket(1), Testbed::dvipa_socket(60), b"real");
    bed.settle(0, 10);
    assert_eq!(bed.peer.counters().packets_received, 1);
}

#[test]
fn lifesize_is_counted_per_sa_and_direction() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    for conn in 0..40u16 {
        bed.peer.send_udp(
            Testbed::peer_socket(conn + 1),
            Testbed::dvipa_socket(60),
            &[1; 50],
        );
    }
    bed.settle(0, 50);
    let mut sink = SummingSink::default();
    for target in &mut bed.targets {
        target.report_lifesize(&mut sink);
    }
    let inbound = sink.total(SPI_TO_DVIPA, dvipsec_cf::Direction::Inbound);
    let outbound = sink.total(SPI_TO_PEER, dvipsec_cf::Direction::Outbound);
    // Inner IPv4 (20) + UDP (8) + 50 bytes, each way.
    assert_eq!((inbound.packets, inbound.bytes), (40, 40 * 78));
    assert_eq!((outbound.packets, outbound.bytes), (40, 40 * 78));
    // Reported counts are cleared.
    let mut again = SummingSink::default();
    for target in &mut bed.targets {
        target.report_lifesize(&mut again);
    }
    assert_eq!(again.reports, 0);
    // Into the CF: the cluster-wide totals per slot.
    for conn in 0..10u16 {
        bed.peer.send_udp(
            Testbed::peer_socket(conn + 1),
            Testbed::dvipa_socket(60),
            &[1; 50],
        );
    }
    bed.settle(1, 50);
    let region = bed.distributor.facility.region().clone();
    let mut sink = FacilitySink::new(&region);
    for target in &mut bed.targets {
        target.report_lifesize(&mut sink);
    }
    assert_eq!(sink.failures, 0);
    let inbound = region.lifesize_read(bed.inbound_slot).unwrap();
    let outbound = region.lifesize_read(bed.outbound_slot).unwrap();
    assert_eq!((inbound.packets_in, inbound.bytes_in), (10, 780));
    assert_eq!((outbound.packets_out, outbound.bytes_out), (10, 780));
}

#[test]
fn esp_that_bypasses_the_distributor_is_filtered_normally() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    // Straight to a target's external port: not GRE from the distributor, so the inner packet
    // must pass the SA's filter rule.
    let to_target = |esp: &[u8]| {
        let mut eth = [0u8; ETHERNET_LEN];
        wire::write_ethernet(&mut eth, target_mac(0), PEER_MAC, Family::V4);
        [&eth[..], esp].concat()
    };
    let good = peer_esp_packet_from(PEER_INNER, 900, b"direct");
    let stranger = peer_esp_packet_from(std::net::Ipv4Addr::new(10, 7, 7, 7), 901, b"direct");
    bed.peer.send_raw(&to_target(&stranger));
    bed.settle(0, 10);
    let t0 = bed.targets[0].target.counters();
    assert_eq!(t0.dropped(TargetDrop::Filtered), 1);
    assert_eq!(bed.peer.counters().packets_received, 0);
    bed.peer.send_raw(&to_target(&good));
    bed.settle(0, 10);
    let t0 = bed.targets[0].target.counters();
    assert_eq!((t0.inbound_packets, t0.forwarded_in), (1, 0));
    assert_eq!(bed.peer.counters().packets_received, 1);
}

#[test]
fn replayed_packet_is_refused_after_the_first_copy_verified() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let frame = esp_frame_to_distributor(&peer_esp_packet(500, b"once"));
    // The same packet twice, one after the other (a replay on the wire).
    for _ in 0..2 {
        bed.peer.send_raw(&frame);
        bed.settle(0, 10);
    }
    assert_eq!(bed.peer.counters().packets_received, 1);
    let d = bed.distributor.distributor.counters();
    // The distributor's pre-check does not update the window, so it forwarded the first copy;
    // the target set the CF window after the ICV verified, so the second copy stops at the
    // distributor's pre-check.
    assert_eq!(d.forwarded, 1);
    assert_eq!(d.dropped(DropCause::Replay), 1);
}

#[test]
fn polling_loops_on_threads_carry_the_traffic() {
    let (bed, _dir) = site(TestbedConfig::default());
    let Testbed {
        mut peer,
        mut distributor,
        mut targets,
        ..
    } = bed;
    let stop = AtomicBool::new(false);
    // Pinned to the machine's cores when it has them (pinning is optional in tests).
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let core = |i: usize| (!cores.is_empty()).then(|| cores[i % cores.len()].id);
    std::thread::scope(|scope| {
        let stop = &stop;
        let distributor = &mut distributor;
        scope.spawn(move || poll::run(distributor, core(0), stop).unwrap());
        for (i, target) in targets.iter_mut().enumerate() {
            let pin = core(i + 1);
            scope.spawn(move || poll::run(target, pin, stop).unwrap());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for conn in 0..100u16 {
            peer.send_udp(
                Testbed::peer_socket(10_000 + conn),
                Testbed::dvipa_socket(60),
                b"threaded",
            );
            peer.flush();
        }
        while peer.counters().packets_received < 100 && std::time::Instant::now() < deadline {
            peer.poll_rx();
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let counters = peer.counters();
    assert_eq!(counters.packets_received, 100, "{counters:?}");
    assert_eq!((counters.duplicate_seq, counters.replay_drops), (0, 0));
    let handled: u64 = targets.iter().map(|t| t.loop_stats().packets()).sum();
    assert_eq!(handled, 100);
    assert_eq!(distributor.loop_stats().packets(), 100);
}

#[test]
fn full_size_packets_are_forwarded_without_copies() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    // A 1420-byte inner packet: the largest that fits a 1514-byte frame after ESP in UDP.
    let payload = [0x33u8; 1420 - 28];
    for round in 0..20u64 {
        for conn in 0..32u16 {
            assert!(bed.peer.send_udp(
                Testbed::peer_socket(20_000 + conn),
                Testbed::dvipa_socket(60),
                &payload
            ));
        }
        bed.settle(round, 16);
    }
    let peer = bed.peer.counters();
    assert_eq!((peer.packets_sent, peer.packets_received), (640, 640));
    assert!(bed
        .peer
        .take_received()
        .iter()
        .all(|r| r.payload == payload));
    assert_eq!(bed.distributor.counters().relocated, 0);
}

#[test]
fn target_originated_traffic_waits_for_its_sa_then_goes_out() {
    use dvipsec_dataplane::node::{NewconnRequest, SendStatus};
    let (mut bed, _dir) = site(TestbedConfig::default());
    bed.delete_sa(SPI_TO_PEER);
    let target = &mut bed.targets[0];
    target.set_newconn_timeout(1_000);
    let socket = target.bind_udp(Testbed::dvipa_socket(9100), 4).unwrap();
    let status = target
        .send_to(socket, Testbed::peer_socket(443), b"first", 0)
        .unwrap();
    assert_eq!(status, SendStatus::AwaitingSa);
    target
        .send_to(socket, Testbed::peer_socket(443), b"second", 1)
        .unwrap();
    // Another flow to the same peer waits for the same SA: no second request.
    target
        .send_to(socket, Testbed::peer_socket(8443), b"third", 2)
        .unwrap();
    let requests: Vec<NewconnRequest> = target.take_newconn_requests().collect();
    assert_eq!(
        requests,
        [NewconnRequest {
            local: IpAddr::V4(DVIPA),
            remote: IpAddr::V4(PEER_INNER),
            protocol: 17,
            local_port: 9100,
            remote_port: 443,
        }],
        "one NEWCONN per peer"
    );
    bed.settle(10, 5);
    assert_eq!(bed.peer.counters().packets_received, 0, "held while no SA");
    // The distributor's IKE negotiated an SA and the cluster link installed it.
    let config = tunnel_sa_config(
        SPI_TO_PEER,
        Direction::Outbound,
        &KEY_TO_PEER,
        (DVIPA, PEER_OUTER),
    );
    let slot = bed.outbound_slot;
    bed.targets[0].sas.install_outbound(
        Sa::new(config).unwrap(),
        IpAddr::V4(DVIPA),
        IpAddr::V4(PEER_OUTER),
        selector(),
        slot,
        LeasePolicy::per_packet(),
    );
    bed.settle(20, 5);
    let got: Vec<Vec<u8>> = bed
        .peer
        .take_received()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(
        got,
        [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
    );
    assert_eq!(bed.targets[0].pending_released, 3);
}

#[test]
fn held_traffic_times_out_cleanly_when_no_sa_arrives() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    bed.delete_sa(SPI_TO_PEER);
    let target = &mut bed.targets[0];
    target.set_newconn_timeout(1_000);
    let socket = target.bind_udp(Testbed::dvipa_socket(9100), 4).unwrap();
    target
        .send_to(socket, Testbed::peer_socket(443), b"lost", 0)
        .unwrap();
    bed.settle(999, 5);
    assert_eq!(bed.targets[0].pending(), 1);
    bed.settle(1_000, 5);
    assert_eq!(bed.targets[0].pending(), 0);
    assert_eq!(bed.targets[0].pending_timeouts, 1);
    assert_eq!(bed.peer.counters().packets_received, 0);
}

#[test]
fn a_target_takes_gre_from_each_of_its_distributors_and_from_no_one_else() {
    use dvipsec_dataplane::node::DistributorLink;
    let second = DistributorLink {
        xcf: std::net::Ipv4Addr::new(10, 9, 0, 2),
        mac: [2, 0, 0, 0, 1, 0x11],
    };
    let third = DistributorLink {
        xcf: std::net::Ipv4Addr::new(10, 9, 0, 3),
        mac: [2, 0, 0, 0, 1, 0x12],
    };
    let config = TestbedConfig {
        other_distributors: vec![second],
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site(config);
    // The testbed's own distributor and the second one are both accepted.
    let accepted = [
        (DISTRIBUTOR_XCF, DISTRIBUTOR_XCF_MAC),
        (second.xcf, second.mac),
    ];
    for (seq, (xcf, mac)) in (1..).zip(accepted) {
        let esp = peer_esp_packet(seq, b"from a distributor");
        inject(&mut bed.rogue_xcf, &gre_frame(xcf, 0, mac, &esp));
    }
    bed.settle(0, 10);
    let t0 = bed.targets[0].target.counters();
    assert_eq!(t0.forwarded_in, 2);
    assert_eq!(t0.dropped(TargetDrop::SpoofedGre), 0);
    // A third distributor, and a known address on another distributor's link, are refused.
    let refused = [(third.xcf, third.mac), (second.xcf, DISTRIBUTOR_XCF_MAC)];
    for (seq, (xcf, mac)) in (10..).zip(refused) {
        let esp = peer_esp_packet(seq, b"spoofed");
        inject(&mut bed.rogue_xcf, &gre_frame(xcf, 0, mac, &esp));
    }
    bed.settle(20, 10);
    let t0 = bed.targets[0].target.counters();
    assert_eq!(t0.dropped(TargetDrop::SpoofedGre), 2);
    assert_eq!(t0.forwarded_in, 2);
}

/// A pair of SAs as a rekey would give the peer: new SPIs and keys.
fn rekeyed_peer_pair() -> (Sa, Sa) {
    let sa = |spi, direction, key: &[u8], tunnel| {
        Sa::new(tunnel_sa_config(spi, direction, key, tunnel)).unwrap()
    };
    let outbound = sa(
        0x1100,
        Direction::Outbound,
        &[0x33; 20],
        (PEER_OUTER, DVIPA),
    );
    let inbound = sa(0x2100, Direction::Inbound, &[0x44; 20], (DVIPA, PEER_OUTER));
    (outbound, inbound)
}

fn unknown_spi_drops(bed: &Testbed) -> u64 {
    bed.distributor
        .distributor
        .counters()
        .dropped(DropCause::UnknownSa)
}

#[test]
fn the_scripted_peer_switches_to_a_staged_pair_only_when_told() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let echo = |bed: &mut Testbed, now_us| {
        assert!(bed.peer.send_udp(
            Testbed::peer_socket(5000),
            Testbed::dvipa_socket(60),
            b"ping"
        ));
        bed.settle(now_us, 10);
    };
    let (outbound, inbound) = rekeyed_peer_pair();
    bed.peer.stage(outbound, inbound);
    // Staged: the peer still sends on its old SA, and the reply opens on its old inbound SA.
    echo(&mut bed, 0);
    assert_eq!(bed.peer.counters().packets_received, 1);
    // Without its old inbound SA the next reply opens nowhere.
    bed.peer.remove_inbound(SPI_TO_PEER);
    echo(&mut bed, 100);
    let counters = bed.peer.counters();
    assert_eq!((counters.packets_received, counters.other), (1, 1));
    // Activated: the peer sends on the new SPI, which this site never installed.
    let unknown_before = unknown_spi_drops(&bed);
    echo(&mut bed, 200);
    let unknown_after = unknown_spi_drops(&bed);
    assert_eq!(
        unknown_after, unknown_before,
        "staged SA used before activation"
    );
    bed.peer.activate_staged();
    echo(&mut bed, 300);
    let unknown_now = unknown_spi_drops(&bed);
    assert_eq!(unknown_now, unknown_after + 1);
    assert_eq!(bed.peer.counters().packets_sent, 4);
    assert_eq!(bed.peer.counters().send_failures, 0);
}

/// A UDP port of the DVIPA that the testbed does not distribute.
const UNDISTRIBUTED_PORT: u16 = 8000;

/// A site whose distributor box can also answer what it serves itself.
fn site_answering_locally(config: TestbedConfig) -> (Testbed, tempfile::TempDir) {
    let lease = config.lease;
    let (mut bed, dir) = site(config);
    bed.install_distributor_outbound_sa(lease).unwrap();
    (bed, dir)
}

/// No target received anything over XCF or from outside, and the distributor forwarded nothing.
fn assert_no_target_saw_anything(bed: &Testbed) {
    for (i, target) in bed.targets.iter().enumerate() {
        assert_eq!(target.xcf_port().counters().rx_packets, 0, "target {i}");
        assert_eq!(
            target.external_port().counters().rx_packets,
            0,
            "target {i}"
        );
        assert_eq!(target.target.counters().inbound_packets, 0, "target {i}");
    }
    assert_eq!(bed.distributor.distributor.counters().forwarded, 0);
    assert_eq!(bed.distributor.xcf_port().counters().tx_packets, 0);
}

#[test]
fn undistributed_esp_is_served_on_the_distributor_box_and_answered_with_a_cf_number() {
    let (mut bed, _dir) = site_answering_locally(TestbedConfig::default());
    let socket = bed
        .distributor
        .bind_udp(Testbed::dvipa_socket(UNDISTRIBUTED_PORT), 8)
        .unwrap();
    assert!(bed.peer.send_udp(
        Testbed::peer_socket(41_000),
        Testbed::dvipa_socket(UNDISTRIBUTED_PORT),
        b"to the distributor box"
    ));
    bed.settle(0, 10);
    let datagram = bed.distributor.recv(socket).expect("delivered on the box");
    assert_eq!(datagram.payload(), b"to the distributor box");
    assert_eq!(datagram.from, Testbed::peer_socket(41_000));
    assert!(bed.distributor.recv(socket).is_none());
    assert_no_target_saw_anything(&bed);
    assert!(bed.distributor.local_queue().is_empty());
    let d = bed.distributor.distributor.counters();
    assert_eq!(d.local, 1);
    let own = bed.distributor.local_counters().unwrap();
    assert_eq!(own.inbound_packets, 1);

    bed.distributor
        .send_to(socket, datagram.from, b"reply from the box", 10)
        .unwrap();
    bed.settle(10, 10);
    let received = bed.peer.take_received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].payload, b"reply from the box");
    assert_eq!(received[0].from_mac, DISTRIBUTOR_MAC);
    assert_eq!(received[0].flow.src_port, UNDISTRIBUTED_PORT);
    assert_eq!(received[0].flow.dst_port, 41_000);
    assert_eq!(
        bed.distributor.local_counters().unwrap().outbound_packets,
        1
    );
    // A target answering next continues the same CF sequence: no number is used twice.
    assert!(bed.peer.send_udp(
        Testbed::peer_socket(41_001),
        Testbed::dvipa_socket(60),
        b"to a target"
    ));
    bed.settle(20, 10);
    let peer = bed.peer.counters();
    assert_eq!(peer.packets_received, 2);
    assert_eq!(
        (peer.duplicate_seq, peer.replay_drops, peer.auth_failures),
        (0, 0, 0)
    );
    let next = bed
        .distributor
        .facility
        .fetch_add(bed.outbound_slot, 1)
        .unwrap();
    assert_eq!(next.first, 3, "the box and the target took numbers 1 and 2");
}

#[test]
fn undistributed_echo_is_answered_by_the_distributor_box_itself() {
    let config = TestbedConfig {
        udp_ports: vec![7000],
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site_answering_locally(config);
    assert!(bed.peer.send_udp(
        Testbed::peer_socket(42_000),
        Testbed::dvipa_socket(60),
        b"echo here"
    ));
    bed.settle(0, 10);
    let received = bed.peer.take_received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].payload, b"echo here");
    assert_eq!(received[0].from_mac, DISTRIBUTOR_MAC);
    assert_eq!(bed.distributor.local_echoed(), 1);
    assert_no_target_saw_anything(&bed);
}

#[test]
fn replayed_undistributed_packet_is_dropped_after_the_first_copy_verified() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let socket = bed
        .distributor
        .bind_udp(Testbed::dvipa_socket(UNDISTRIBUTED_PORT), 8)
        .unwrap();
    let frame = esp_frame_to_distributor(&peer_esp_packet_to(
        PEER_INNER,
        UNDISTRIBUTED_PORT,
        700,
        b"once",
    ));
    for _ in 0..2 {
        bed.peer.send_raw(&frame);
        bed.settle(0, 10);
    }
    assert_eq!(bed.distributor.recv(socket).unwrap().payload(), b"once");
    assert!(bed.distributor.recv(socket).is_none(), "replay delivered");
    let own = bed.distributor.local_counters().unwrap();
    assert_eq!(own.inbound_packets, 1);
    assert_eq!(own.dropped(TargetDrop::Replay), 1);
    // The CF's shared window recorded it: a target would refuse it too.
    let verdict = bed
        .distributor
        .facility
        .replay_check(bed.inbound_slot, 700)
        .unwrap();
    assert_ne!(verdict, dvipsec_cf::ReplayVerdict::Accepted);
    assert_no_target_saw_anything(&bed);
}

#[test]
fn forged_undistributed_packet_is_dropped_counted_and_leaves_the_window_alone() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let socket = bed
        .distributor
        .bind_udp(Testbed::dvipa_socket(UNDISTRIBUTED_PORT), 8)
        .unwrap();
    let genuine = peer_esp_packet_to(PEER_INNER, UNDISTRIBUTED_PORT, 900, b"genuine");
    let mut forged = genuine.clone();
    // Flip a bit of the ICV (the packet's last bytes).
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    bed.peer.send_raw(&esp_frame_to_distributor(&forged));
    bed.settle(0, 10);
    assert!(bed.distributor.recv(socket).is_none(), "forgery delivered");
    let own = bed.distributor.local_counters().unwrap();
    assert_eq!(own.dropped(TargetDrop::Authentication), 1);
    assert_eq!(own.inbound_packets, 0);
    let verdict = bed
        .distributor
        .facility
        .replay_check(bed.inbound_slot, 900)
        .unwrap();
    assert_eq!(verdict, dvipsec_cf::ReplayVerdict::Accepted);
    // The genuine packet with the same number still gets through.
    bed.peer.send_raw(&esp_frame_to_distributor(&genuine));
    bed.settle(0, 10);
    assert_eq!(bed.distributor.recv(socket).unwrap().payload(), b"genuine");
    assert_no_target_saw_anything(&bed);
}

#[test]
fn ike_still_waits_in_the_local_queue_for_the_stack() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    let mut ike = vec![0u8; 128];
    let len = wire::write_udp(
        &mut ike,
        std::net::SocketAddr::new(IpAddr::V4(PEER_OUTER), 500),
        std::net::SocketAddr::new(IpAddr::V4(DVIPA), 500),
        &[0x42; 40],
    )
    .unwrap();
    bed.peer.send_raw(&esp_frame_to_distributor(&ike[..len]));
    bed.settle(0, 10);
    assert_eq!(bed.distributor.local_queue().len(), 1);
    let own = bed.distributor.local_counters().unwrap();
    assert_eq!(own.inbound_packets, 0);
    assert_eq!(own.drops.iter().sum::<u64>(), 0);
    assert_no_target_saw_anything(&bed);
}

#[test]
fn what_the_distributor_box_serves_itself_counts_toward_lifesize() {
    let config = TestbedConfig {
        udp_ports: vec![7000],
        ..TestbedConfig::default()
    };
    let (mut bed, _dir) = site_answering_locally(config);
    for conn in 0..5u16 {
        assert!(bed.peer.send_udp(
            Testbed::peer_socket(conn + 1),
            Testbed::dvipa_socket(60),
            &[1; 50],
        ));
    }
    bed.settle(0, 20);
    assert_eq!(bed.peer.counters().packets_received, 5);
    let mut sink = SummingSink::default();
    bed.distributor.report_lifesize(&mut sink);
    let inbound = sink.total(SPI_TO_DVIPA, dvipsec_cf::Direction::Inbound);
    let outbound = sink.total(SPI_TO_PEER, dvipsec_cf::Direction::Outbound);
    // Inner IPv4 (20) + UDP (8) + 50 bytes, each way.
    assert_eq!((inbound.packets, inbound.bytes), (5, 5 * 78));
    assert_eq!((outbound.packets, outbound.bytes), (5, 5 * 78));
    let mut targets = SummingSink::default();
    for target in &mut bed.targets {
        target.report_lifesize(&mut targets);
    }
    assert_eq!(targets.reports, 0);
}

/// Packets through the targets' decap and encap stages, summed over the targets.
fn targets_decap_and_encap(bed: &Testbed) -> (u64, u64) {
    bed.targets.iter().fold((0, 0), |(decap, encap), t| {
        let costs = t.stage_costs();
        (decap + costs.decap.packets, encap + costs.encap.packets)
    })
}

#[test]
fn stages_count_every_packet_through_them_and_their_time() {
    let (mut bed, _dir) = site(TestbedConfig::default());
    // Nothing received yet: polling empty ports counts nothing.
    bed.settle(0, 5);
    assert_eq!(bed.distributor.stage_costs(), Default::default());
    for conn in 0..20u16 {
        assert!(bed.peer.send_udp(
            Testbed::peer_socket(43_000 + conn),
            Testbed::dvipa_socket(60),
            b"timed"
        ));
    }
    bed.settle(10, 20);
    let forward = bed.distributor.stage_costs().forward;
    assert_eq!(forward.packets, 20);
    assert!(forward.nanoseconds > 0);
    assert!(
        (1..=20).contains(&forward.bursts),
        "20 frames came in at least one burst: {forward:?}"
    );
    // The distributor has no forwarding work left to time once the burst is gone.
    bed.settle(20, 5);
    assert_eq!(bed.distributor.stage_costs().forward, forward);
    assert_eq!(targets_decap_and_encap(&bed), (20, 20));
    for target in &bed.targets {
        let costs = target.stage_costs();
        assert_eq!(costs.forward, Default::default(), "targets forward nothing");
        if costs.decap.packets > 0 {
            assert!(costs.decap.nanoseconds > 0 && costs.encap.nanoseconds > 0);
        }
    }
    assert_eq!(bed.peer.take_received().len(), 20);
    // A datagram for an application (port 7000, not the echo service): decapsulated, not
    // answered, so not encapsulated.
    assert!(bed.peer.send_udp(
        Testbed::peer_socket(44_000),
        Testbed::dvipa_socket(7000),
        b"to the application"
    ));
    bed.settle(30, 20);
    assert_eq!(targets_decap_and_encap(&bed), (21, 20));
    let forward_after = bed.distributor.stage_costs().forward;
    assert_eq!(forward_after.packets, 21);
    assert_eq!(
        forward_after.bursts,
        forward.bursts + 1,
        "one more burst of one"
    );
}
