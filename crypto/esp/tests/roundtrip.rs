//! Seal then open gives back the packet, for every suite, mode, family, encapsulation and ESN
//! setting; peek reads the same flow as the plaintext; proptest over random packets and sizes.

mod common;

use common::*;
use dvipsec_esp::{IpsecProtocol, Mode, Suite};
use proptest::prelude::*;

fn shapes() -> Vec<Shape> {
    let mut all = Vec::new();
    for suite in Suite::ALL {
        for mode in [Mode::Transport, Mode::Tunnel] {
            for v6_outer in [false, true] {
                for udp_encap in [false, true] {
                    for esn in [false, true] {
                        all.push(Shape {
                            suite,
                            protocol: IpsecProtocol::Esp,
                            mode,
                            v6_outer,
                            udp_encap,
                            esn,
                        });
                    }
                }
            }
        }
    }
    for mode in [Mode::Transport, Mode::Tunnel] {
        for v6_outer in [false, true] {
            for esn in [false, true] {
                all.push(Shape {
                    suite: Suite::NullHmacSha256,
                    protocol: IpsecProtocol::Ah,
                    mode,
                    v6_outer,
                    udp_encap: false,
                    esn,
                });
            }
        }
    }
    all
}

/// In transport mode the outer family is the packet's own.
fn packet_for(shape: &Shape, protocol: u8, flags: u8, payload: usize) -> Vec<u8> {
    let v6_inner = if shape.mode == Mode::Transport {
        shape.v6_outer
    } else {
        !shape.v6_outer
    };
    if v6_inner {
        ipv6(protocol, 40000, 443, flags, payload)
    } else {
        ipv4(protocol, 40000, 443, flags, payload)
    }
}

fn outer_protocol(wire: &[u8]) -> u8 {
    if wire[0] >> 4 == 4 {
        wire[9]
    } else {
        wire[6]
    }
}

#[test]
fn every_shape_round_trips_and_peeks_the_inner_flow() {
    for shape in shapes() {
        let (mut out, mut inb) = pair(shape);
        for (protocol, flags) in [(TCP, 0x02u8), (TCP, 0x12), (UDP, 0)] {
            for payload in [0usize, 1, 13, 100, 1300] {
                let packet = packet_for(&shape, protocol, flags, payload);
                let wire = seal(&mut out, &packet);
                let expected_outer = match (shape.protocol, shape.udp_encap) {
                    (IpsecProtocol::Ah, _) => 51,
                    (_, true) => 17,
                    (_, false) => 50,
                };
                assert_eq!(outer_protocol(&wire), expected_outer, "{shape:?}");
                assert_eq!(wire[0] >> 4 == 6, shape.v6_outer, "{shape:?}");
                let peek = inb.peek(&wire).expect("peek").into_unverified();
                assert_eq!(peek.protocol, protocol, "{shape:?}");
                assert_eq!((peek.src_port, peek.dst_port), (40000, 443), "{shape:?}");
                assert_eq!(peek.syn, flags == 0x02, "{shape:?}");
                assert_eq!(peek.seq, out.sequence(), "{shape:?}");
                let opened = open(&mut inb, &wire).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
                assert_eq!(opened, packet, "{shape:?} payload {payload}");
            }
        }
        assert_eq!(inb.counters().packets, 15, "{shape:?}");
    }
}

#[test]
fn esn_crosses_the_32_bit_boundary() {
    for suite in Suite::ALL {
        let mut shape = Shape::esp(suite, Mode::Tunnel);
        shape.esn = true;
        let (mut out, mut inb) = pair(shape);
        out.set_last_sequence(u64::from(u32::MAX) - 2);
        inb.set_replay_top(u64::from(u32::MAX) - 3);
        let packet = ipv4(UDP, 1, 2, 0, 64);
        for _ in 0..6 {
            let wire = seal(&mut out, &packet);
            assert_eq!(open(&mut inb, &wire).expect("open"), packet, "{suite}");
        }
        assert_eq!(inb.sequence(), (1u64 << 32) + 3, "{suite}");
    }
}

#[test]
fn esn_high_bits_are_covered_by_the_icv() {
    for suite in Suite::ALL {
        let mut shape = Shape::esp(suite, Mode::Transport);
        shape.esn = true;
        let (mut out, mut inb) = pair(shape);
        // Same low 32 bits, but the sender is one 2^32 epoch ahead of what the receiver infers.
        out.set_last_sequence((1u64 << 32) + 9);
        let wire = seal(&mut out, &ipv4(TCP, 1, 2, 0x10, 10));
        let err = open(&mut inb, &wire).unwrap_err();
        assert_eq!(
            err,
            dvipsec_esp::EspError::Authentication { seq: 10 },
            "{suite}"
        );
    }
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    let all = shapes();
    (0..all.len()).prop_map(move |i| all[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn seal_then_open_is_identity(
        shape in arb_shape(),
        tcp in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        sport in any::<u16>(),
        dport in any::<u16>(),
        seq in 1u64..u64::from(u32::MAX),
    ) {
        let (mut out, mut inb) = pair(shape);
        let protocol = if tcp { TCP } else { UDP };
        let mut packet = packet_for(&shape, protocol, 0x18, payload.len());
        let l4_at = if packet[0] >> 4 == 4 { 20 } else { 40 };
        packet[l4_at..l4_at + 2].copy_from_slice(&sport.to_be_bytes());
        packet[l4_at + 2..l4_at + 4].copy_from_slice(&dport.to_be_bytes());
        let data_at = packet.len() - payload.len();
        packet[data_at..].copy_from_slice(&payload);
        let (mut buf, range) = framed(&packet);
        let sealed = out.seal_with_seq(&mut buf, range, seq).unwrap();
        prop_assert_eq!(sealed.seq, seq);
        let wire = buf[sealed.packet].to_vec();
        let peek = inb.peek(&wire).unwrap().into_unverified();
        prop_assert_eq!((peek.src_port, peek.dst_port, peek.protocol), (sport, dport, protocol));
        let opened = open(&mut inb, &wire).unwrap();
        prop_assert_eq!(opened, packet);
        prop_assert_eq!(inb.sequence(), seq);
    }
}

/// IPv6 with a hop-by-hop options header: ESP goes after it and its next-header byte is the one
/// rewritten, both ways.
#[test]
fn ipv6_extension_headers_stay_in_front_of_esp() {
    let plain = ipv6(TCP, 7, 8, 0x02, 40);
    let mut packet = plain[..40].to_vec();
    packet[6] = 0; // hop-by-hop follows
    packet.extend_from_slice(&[TCP, 0, 5, 2, 0, 0, 1, 0]); // next TCP, len 0, router alert, PadN
    packet.extend_from_slice(&plain[40..]);
    let payload_len = (packet.len() - 40) as u16;
    packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
    for suite in Suite::ALL {
        let mut shape = Shape::esp(suite, Mode::Transport);
        shape.v6_outer = true;
        let (mut out, mut inb) = pair(shape);
        let wire = seal(&mut out, &packet);
        assert_eq!(
            wire[6], 0,
            "{suite}: the fixed header still points at hop-by-hop"
        );
        assert_eq!(wire[40], 50, "{suite}: hop-by-hop now points at ESP");
        let flow = inb.peek(&wire).unwrap().into_unverified();
        assert_eq!(
            (flow.protocol, flow.dst_port, flow.syn),
            (TCP, 8, true),
            "{suite}"
        );
        assert_eq!(open(&mut inb, &wire).unwrap(), packet, "{suite}");
    }
}
