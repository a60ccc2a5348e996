//! The distributor's forwarded frames, byte for byte: the headers it writes from its per-target
//! template (in place, or after copying a frame that lacked headroom) are those built field by
//! field with `wire::write_ethernet` and `gre::write_encap`, and the peer's packet behind them is
//! untouched.

use dvipsec_dataplane::gre::{self, ENCAP_OVERHEAD};
use dvipsec_dataplane::node::BURST;
use dvipsec_dataplane::poll::PollNode;
use dvipsec_dataplane::testbed::*;
use dvipsec_dataplane::wire::{self, ETHERNET_LEN};
use dvipsec_esp::ip::Family;
use dvipsec_esp::{Direction, Sa};
use dvipsec_ports::{BufLayout, Burst, FabricConfig, PacketPort};

/// A burst of sealed datagrams over 8 connections, of several sizes: the peer's ESP packets, and
/// the same as Ethernet frames to the distributor.
fn burst() -> Vec<(Vec<u8>, Vec<u8>)> {
    let config = tunnel_sa_config(
        SPI_TO_DVIPA,
        Direction::Outbound,
        &KEY_TO_DVIPA,
        (PEER_OUTER, DVIPA),
    );
    let mut sender = Sa::new(config).expect("peer SA");
    let mut buf = vec![0u8; 2048];
    (0..BURST as u64)
        .map(|i| {
            let payload = vec![i as u8; 1 + 45 * i as usize];
            let len = wire::write_udp(
                &mut buf[200..],
                Testbed::peer_socket(20_000 + i as u16 % 8),
                Testbed::dvipa_socket(60),
                &payload,
            )
            .expect("datagram");
            let esp = sender
                .seal_with_seq(&mut buf, 200..200 + len, i + 1)
                .expect("seal")
                .packet;
            let packet = buf[esp].to_vec();
            let mut frame = vec![0u8; ETHERNET_LEN];
            let header = <&mut [u8; ETHERNET_LEN]>::try_from(&mut frame[..]).expect("14 bytes");
            wire::write_ethernet(header, DISTRIBUTOR_MAC, PEER_MAC, Family::V4);
            frame.extend_from_slice(&packet);
            (packet, frame)
        })
        .collect()
}

/// The frame the distributor should send to target 0 for `packet`.
fn expected(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; ETHERNET_LEN + ENCAP_OVERHEAD];
    let (ethernet, encap) = out.split_at_mut(ETHERNET_LEN);
    wire::write_ethernet(
        ethernet.try_into().unwrap(),
        target_xcf_mac(0),
        DISTRIBUTOR_XCF_MAC,
        Family::V4,
    );
    gre::write_encap(
        encap.try_into().unwrap(),
        DISTRIBUTOR_XCF,
        target_xcf(0),
        Family::V4,
        packet.len(),
    )
    .unwrap();
    out.extend_from_slice(packet);
    out
}

/// What target 0's XCF port receives when `layout` is the external ports' layout, and the
/// frames relocated.
fn forwarded(layout: BufLayout) -> (Vec<Vec<u8>>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = TestbedConfig {
        targets: 1,
        fabric: FabricConfig {
            layout,
            ..FabricConfig::esp_default()
        },
        xcf_fabric: Some(FabricConfig::esp_default()),
        ..TestbedConfig::default()
    };
    let mut bed = Testbed::new(&config, &dir.path().join("cf")).unwrap();
    for (_, frame) in burst() {
        assert!(bed.peer.send_raw(&frame));
    }
    bed.peer.flush();
    bed.distributor.poll(1);
    let mut taken = Burst::with_capacity(BURST);
    bed.targets[0].xcf_port_mut().rx_burst(&mut taken);
    let frames = taken.drain().map(|f| f.data().to_vec()).collect();
    (frames, bed.distributor.counters().relocated)
}

fn assert_forwarded_as_built(frames: &[Vec<u8>]) {
    let packets = burst();
    assert_eq!(frames.len(), packets.len());
    for ((packet, _), frame) in packets.iter().zip(frames) {
        assert_eq!(frame, &expected(packet), "{} bytes", packet.len());
    }
}

#[test]
fn frames_with_headroom_get_the_headers_in_place() {
    let (frames, relocated) = forwarded(BufLayout::esp_udp_tunnel_ipv4());
    assert_forwarded_as_built(&frames);
    assert_eq!(relocated, 0);
}

#[test]
fn frames_short_of_headroom_are_copied_then_get_the_same_headers() {
    // 16 bytes in front, 30 once Ethernet is stripped: short of the 38 the headers need. The
    // copies come from the XCF port's pool, which has the usual headroom.
    let (frames, relocated) = forwarded(BufLayout::new(16, 1600, 32).unwrap());
    assert_forwarded_as_built(&frames);
    assert_eq!(relocated, BURST as u64);
}
