//! Data-plane benchmarks, compared as ratios within one run:
//! - `cluster/echo_1420`: in-process cluster throughput, peer -> distributor -> target -> peer
//!   (the echo service), 32 datagrams of 1420-byte inner packets per iteration; includes the
//!   scripted peer's own seal and open.
//! - `per_packet_1420/distributor_forward`: the distributor's cost per forwarded packet (find SA,
//!   peek, classify, DCT, tunnel check, CF replay pre-check, GRE headers).
//! - `per_packet_1420/distributor_peek_only` and `cf_replay_pre_check_only`: two parts of the
//!   forward cost, to see where it goes.
//! - `per_packet_1420/target_decap`: the target's cost per decap (GRE check, shadow SA lookup,
//!   ESP open with ICV, CF replay check-and-set, inner flow).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dvipsec_cf::SequenceFacility;
use dvipsec_dataplane::gre::{self, ENCAP_OVERHEAD};
use dvipsec_dataplane::sa_table::SaTable;
use dvipsec_dataplane::target::Ingress;
use dvipsec_dataplane::testbed::*;
use dvipsec_dataplane::wire;
use dvipsec_esp::ip::Family;
use dvipsec_esp::{Direction, IpsecProtocol, Sa};
use std::hint::black_box;
use std::net::IpAddr;

const INNER_LEN: usize = 1420;
const PAYLOAD: usize = INNER_LEN - 20 - 8;
const BURST: usize = 32;

fn peer_sa() -> Sa {
    let config = tunnel_sa_config(
        SPI_TO_DVIPA,
        Direction::Outbound,
        &KEY_TO_DVIPA,
        (PEER_OUTER, DVIPA),
    );
    Sa::new(config).expect("peer SA")
}

/// Seals a 1420-byte inner datagram with `seq` into `buf` (headroom 200); returns the ESP range.
fn sealed(sa: &mut Sa, buf: &mut [u8], seq: u64) -> std::ops::Range<usize> {
    let len = wire::write_udp(
        &mut buf[200..],
        Testbed::peer_socket(40_000),
        Testbed::dvipa_socket(7000),
        &[0x5a; PAYLOAD],
    )
    .expect("datagram");
    sa.seal_with_seq(buf, 200..200 + len, seq)
        .expect("seal")
        .packet
}

fn cluster(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).expect("site");
    bed.peer.keep_received = false;
    let payload = [0x33u8; PAYLOAD];
    let mut group = c.benchmark_group("cluster");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut now = 0u64;
    group.bench_function("echo_1420", |b| {
        b.iter(|| {
            for conn in 0..BURST as u16 {
                let queued = bed.peer.send_udp(
                    Testbed::peer_socket(20_000 + conn),
                    Testbed::dvipa_socket(60),
                    &payload,
                );
                assert!(queued, "the peer could not build a packet");
            }
            now += 1;
            bed.settle(now, 16);
        })
    });
    group.finish();
    let counters = bed.peer.counters();
    assert_eq!(
        counters.packets_sent, counters.packets_received,
        "{counters:?}"
    );
    assert_eq!(counters.replay_drops + counters.duplicate_seq, 0);
}

fn per_packet(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).expect("site");
    let mut sender = peer_sa();
    let mut buf = vec![0u8; 2048];
    let esp = sealed(&mut sender, &mut buf, 1);
    let packet = buf[esp].to_vec();
    let mut group = c.benchmark_group("per_packet_1420");
    group.throughput(Throughput::Elements(1));
    let node = &mut bed.distributor;
    group.bench_function("distributor_forward", |b| {
        b.iter(|| {
            let decision =
                node.distributor
                    .dispatch(&mut node.sas, &node.facility, black_box(&packet), 1);
            let mut head = [0u8; ENCAP_OVERHEAD];
            gre::write_encap(
                &mut head,
                DISTRIBUTOR_XCF,
                target_xcf(0),
                Family::V4,
                packet.len(),
            )
            .expect("encap");
            black_box((decision, head))
        })
    });
    // Parts of the distributor's cost: peek alone, and the CF's replay pre-check alone.
    let inbound = node
        .sas
        .inbound(SPI_TO_DVIPA, IpsecProtocol::Esp, IpAddr::V4(PEER_OUTER))
        .expect("installed SA");
    let slot = inbound.slot;
    group.bench_function("distributor_peek_only", |b| {
        b.iter(|| black_box(inbound.sa.peek(black_box(&packet)).is_ok()))
    });
    group.bench_function("cf_replay_pre_check_only", |b| {
        b.iter(|| black_box(node.facility.replay_check(slot, black_box(1))))
    });
    let target = &mut bed.targets[0];
    let mut seq = 1u64;
    let mut frame = vec![0u8; 2048];
    group.bench_function("target_decap", |b| {
        b.iter_batched_ref(
            || {
                seq += 1;
                let esp = sealed(&mut sender, &mut frame, seq);
                let mut out = vec![0u8; 2048];
                let len = esp.len();
                let start = 200;
                let mut head = [0u8; ENCAP_OVERHEAD];
                gre::write_encap(&mut head, DISTRIBUTOR_XCF, target_xcf(0), Family::V4, len)
                    .expect("encap");
                out[start..start + ENCAP_OVERHEAD].copy_from_slice(&head);
                out[start + ENCAP_OVERHEAD..start + ENCAP_OVERHEAD + len]
                    .copy_from_slice(&frame[esp]);
                (out, start..start + ENCAP_OVERHEAD + len)
            },
            |(out, range)| {
                let delivered =
                    target
                        .target
                        .inbound(&mut target.sas, Ingress::Xcf, out, range.clone());
                assert!(delivered.is_ok(), "{delivered:?}");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, cluster, per_packet);
criterion_main!(benches);
