//! The distributor's forward stage alone, for profiling (`valgrind --tool=callgrind`, `perf
//! record`) and for a quick timing: the same 32 sealed 1420-byte datagrams (8 connections) are
//! replayed into the distributor's external port round after round, and what it forwards is
//! taken off the target's XCF port unread. No target decap or peer sealing runs, so a profile of
//! this program is the forward stage plus the fabric's copies.
//!
//! `cargo run --release -p dvipsec-dataplane --example forward_cost [ROUNDS] [FRAMES]` prints the
//! stage's ns per packet (from the node's own stage timer) and the frames relocated for lack of
//! headroom. FRAMES (1..=32, default 32) is the burst size; the running boxes average about 4.

use dvipsec_dataplane::node::BURST;
use dvipsec_dataplane::poll::PollNode;
use dvipsec_dataplane::testbed::*;
use dvipsec_dataplane::wire::{self, ETHERNET_LEN};
use dvipsec_esp::ip::Family;
use dvipsec_esp::{Direction, Sa};
use dvipsec_ports::{Burst, PacketPort};

const INNER_LEN: usize = 1420;
const PAYLOAD: usize = INNER_LEN - 20 - 8;
const CONNECTIONS: u16 = 8;

/// The burst as Ethernet frames from the peer to the distributor, sequence numbers 1..=32.
fn frames() -> Vec<Vec<u8>> {
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
            let len = wire::write_udp(
                &mut buf[200..],
                Testbed::peer_socket(20_000 + i as u16 % CONNECTIONS),
                Testbed::dvipa_socket(60),
                &[0x5a; PAYLOAD],
            )
            .expect("datagram");
            let esp = sender
                .seal_with_seq(&mut buf, 200..200 + len, i + 1)
                .expect("seal")
                .packet;
            let mut frame = vec![0u8; ETHERNET_LEN];
            let header = <&mut [u8; ETHERNET_LEN]>::try_from(&mut frame[..]).expect("14 bytes");
            wire::write_ethernet(header, DISTRIBUTOR_MAC, PEER_MAC, Family::V4);
            frame.extend_from_slice(&buf[esp]);
            frame
        })
        .collect()
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TestbedConfig {
        targets: 1,
        ..TestbedConfig::default()
    };
    let mut bed = Testbed::new(&config, &dir.path().join("cf")).expect("site");
    let burst: usize = std::env::args()
        .nth(2)
        .and_then(|f| f.parse().ok())
        .filter(|f| (1..=BURST).contains(f))
        .unwrap_or(BURST);
    let frames = &frames()[..burst];
    let mut taken = Burst::with_capacity(BURST);
    let mut forwarded = 0u64;
    for round in 0..rounds {
        for frame in frames {
            assert!(bed.peer.send_raw(frame), "no buffer for the peer");
        }
        bed.peer.flush();
        bed.distributor.poll(round + 1);
        forwarded += bed.targets[0].xcf_port_mut().rx_burst(&mut taken) as u64;
        taken.drain().for_each(drop);
    }
    let stage = bed.distributor.stage_costs().forward;
    assert_eq!(
        forwarded,
        rounds * burst as u64,
        "a frame was not forwarded"
    );
    println!(
        "forward stage: {:.1} ns/packet over {} packets; relocated {}",
        stage.per_packet_ns().unwrap_or(0.0),
        stage.packets,
        bed.distributor.counters().relocated
    );
}
