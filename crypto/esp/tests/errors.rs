//! Bad input: each kind of damage gives its own error and counter, and never moves the window.

mod common;

use aws_lc_rs::hmac;
use common::*;
use dvipsec_esp::{
    Direction, EspError, IpsecProtocol, LifetimeState, Mode, Sa, SaConfig, SaError, SaKeys, Suite,
    UdpEncap,
};

fn sealed_pair(suite: Suite, mode: Mode) -> (Sa, Sa, Vec<u8>) {
    let (mut out, inb) = pair(Shape::esp(suite, mode));
    let wire = seal(&mut out, &ipv4(TCP, 1000, 80, 0x02, 50));
    (out, inb, wire)
}

#[test]
fn tampering_anywhere_after_the_header_fails_authentication() {
    for suite in Suite::ALL {
        let (_, mut inb, wire) = sealed_pair(suite, Mode::Tunnel);
        // Flip a bit in the sequence number, the IV, the payload, the trailer and the ICV.
        for at in [
            24,
            28,
            20 + 8 + suite.iv_len() + 3,
            wire.len() - 17,
            wire.len() - 1,
        ] {
            let mut bad = wire.clone();
            bad[at] ^= 0x40;
            let err = open(&mut inb, &bad).unwrap_err();
            assert!(
                matches!(err, EspError::Authentication { .. }),
                "{suite} at {at}: {err}"
            );
        }
        assert_eq!(inb.counters().auth_failures, 5, "{suite}");
        assert_eq!(
            inb.sequence(),
            0,
            "{suite}: forged packets must not move the window"
        );
        assert_eq!(
            open(&mut inb, &wire).expect("genuine packet"),
            ipv4(TCP, 1000, 80, 0x02, 50)
        );
    }
}

#[test]
fn forged_high_sequence_number_does_not_block_genuine_packets() {
    let (mut out, mut inb) = pair(Shape::esp(Suite::Aes128Gcm16, Mode::Transport));
    let genuine = seal(&mut out, &ipv4(UDP, 1, 2, 0, 10));
    let mut forged = genuine.clone();
    forged[24..28].copy_from_slice(&1_000_000u32.to_be_bytes());
    assert!(matches!(
        open(&mut inb, &forged),
        Err(EspError::Authentication { seq: 1_000_000 })
    ));
    assert!(open(&mut inb, &genuine).is_ok());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for suite in Suite::ALL {
        let (_, mut inb, wire) = sealed_pair(suite, Mode::Transport);
        for len in 0..wire.len() {
            let mut cut = wire[..len].to_vec();
            // Keep the IP length consistent with the cut so the ESP layer itself sees the truncation.
            if len >= 4 {
                cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            let err = open(&mut inb, &cut).unwrap_err();
            assert!(
                matches!(
                    err,
                    EspError::Truncated { .. }
                        | EspError::Malformed { .. }
                        | EspError::Authentication { .. }
                ),
                "{suite} len {len}: {err}"
            );
            assert!(inb.peek(&cut).is_err() || len > 20 + 8 + suite.iv_len() + 16);
        }
        assert_eq!(inb.sequence(), 0);
    }
}

#[test]
fn ip_length_beyond_the_buffer_is_malformed() {
    let (_, mut inb, mut wire) = sealed_pair(Suite::Aes128Gcm16, Mode::Transport);
    let claimed = (wire.len() + 1) as u16;
    wire[2..4].copy_from_slice(&claimed.to_be_bytes());
    assert!(matches!(
        open(&mut inb, &wire),
        Err(EspError::Malformed {
            field: "IPv4 total length",
            offset: 2,
            ..
        })
    ));
    assert_eq!(inb.counters().malformed, 1);
}

#[test]
fn wrong_spi_is_reported_with_both_values() {
    let (_, mut inb, mut wire) = sealed_pair(Suite::ChaCha20Poly1305, Mode::Tunnel);
    wire[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(
        open(&mut inb, &wire),
        Err(EspError::WrongSpi {
            expected: 0x0102_0304,
            got: 0xdead_beef,
            offset: 20
        })
    );
    assert!(matches!(inb.peek(&wire), Err(EspError::WrongSpi { .. })));
    assert_eq!(inb.counters().malformed, 1);
}

#[test]
fn replays_and_too_old_numbers_are_dropped_and_counted() {
    let mut shape = Shape::esp(Suite::Aes256Gcm16, Mode::Transport);
    shape.esn = false;
    let (mut out, mut inb) = pair(shape);
    let packet = ipv4(UDP, 5, 6, 0, 20);
    let wires: Vec<Vec<u8>> = (1..=300).map(|_| seal(&mut out, &packet)).collect();
    // Deliver 300 first, then numbers left of the 128-packet window, at its edge, inside it, and again.
    assert!(open(&mut inb, &wires[299]).is_ok());
    assert_eq!(open(&mut inb, &wires[0]), Err(EspError::Replay { seq: 1 }));
    assert_eq!(
        open(&mut inb, &wires[171]),
        Err(EspError::Replay { seq: 172 })
    );
    assert!(
        open(&mut inb, &wires[172]).is_ok(),
        "173 = 300 - 128 + 1 is the oldest inside the window"
    );
    assert!(open(&mut inb, &wires[199]).is_ok());
    assert_eq!(
        open(&mut inb, &wires[199]),
        Err(EspError::Replay { seq: 200 })
    );
    assert_eq!(
        open(&mut inb, &wires[299]),
        Err(EspError::Replay { seq: 300 })
    );
    assert_eq!(inb.counters().replays, 4);
    assert_eq!(inb.counters().packets, 3);
    assert_eq!(inb.replay_check(250), Ok(250));
    assert_eq!(inb.replay_check(200), Err(EspError::Replay { seq: 200 }));
}

/// Null encryption lets the test write any padding and re-sign the packet with its own HMAC.
#[test]
fn bad_padding_after_a_valid_icv_is_its_own_error() {
    let (mut out, mut inb) = pair(Shape::esp(Suite::NullHmacSha256, Mode::Transport));
    let packet = ipv4(UDP, 1, 2, 0, 9); // 17 bytes of payload -> 1 byte of padding
    let mut wire = seal(&mut out, &packet);
    let icv_at = wire.len() - 16;
    assert_eq!(
        &wire[icv_at - 3..icv_at],
        &[1, 1, 17],
        "pad 1, pad length 1, next header UDP"
    );
    wire[icv_at - 3] = 9; // padding must be 1
    let key = hmac::Key::new(hmac::HMAC_SHA256, &keys_auth(Suite::NullHmacSha256));
    let tag = hmac::sign(&key, &wire[20..icv_at]);
    wire[icv_at..].copy_from_slice(&tag.as_ref()[..16]);
    assert_eq!(
        open(&mut inb, &wire),
        Err(EspError::BadPadding { offset: icv_at - 3 })
    );
    assert_eq!(inb.counters().bad_trailer, 1);
    assert_eq!(inb.counters().auth_failures, 0);
}

/// The auth key `keys_for` makes (mirrors common::keys_for).
fn keys_auth(suite: Suite) -> Vec<u8> {
    (0..suite.auth_key_len())
        .map(|i| 9u8.wrapping_mul(3).wrapping_add(i as u8))
        .collect()
}

#[test]
fn ike_and_keepalives_on_port_4500_are_not_esp() {
    let mut shape = Shape::esp(Suite::Aes128Gcm16, Mode::Tunnel);
    shape.udp_encap = true;
    let (_, mut inb) = pair(shape);
    for (body, found) in [
        (vec![0, 0, 0, 0, 1, 2, 3, 4], "IKE (non-ESP marker)"),
        (vec![0xff], "NAT-keepalive"),
    ] {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        p.extend_from_slice(&[0x11, 0x94, 0x11, 0x94, 0, (8 + body.len()) as u8, 0, 0]);
        p.extend_from_slice(&body);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(
            open(&mut inb, &p),
            Err(EspError::NotIpsec {
                expected: "UDP-encapsulated ESP",
                found
            })
        );
    }
}

#[test]
fn fragments_are_refused() {
    let (_, mut inb, mut wire) = sealed_pair(Suite::Aes128Gcm16, Mode::Transport);
    wire[6] |= 0x20; // more fragments
    assert_eq!(open(&mut inb, &wire), Err(EspError::Fragment { offset: 6 }));
}

#[test]
fn sealing_needs_room_and_an_outbound_sa() {
    let (mut out, mut inb) = pair(Shape::esp(Suite::Aes128CbcHmacSha256, Mode::Tunnel));
    let packet = ipv4(TCP, 1, 2, 0, 10);
    let mut tight = packet.clone();
    let len = tight.len();
    assert!(matches!(
        out.seal(&mut tight, 0..len),
        Err(EspError::NoHeadroom { .. })
    ));
    let mut no_tail = vec![0u8; HEAD + len];
    no_tail[HEAD..].copy_from_slice(&packet);
    assert!(matches!(
        out.seal(&mut no_tail, HEAD..HEAD + len),
        Err(EspError::NoTailroom { .. })
    ));
    let (mut buf, range) = framed(&packet);
    assert!(matches!(
        inb.seal(&mut buf, range.clone()),
        Err(EspError::WrongDirection { .. })
    ));
    assert!(matches!(
        out.open(&mut buf, range),
        Err(EspError::WrongDirection { .. })
    ));
    let beyond = buf.len() + 1;
    assert!(matches!(
        out.seal(&mut buf, 10..beyond),
        Err(EspError::BadRange { .. })
    ));
}

#[test]
fn sequence_numbers_do_not_cycle_without_esn() {
    let (mut out, _) = pair(Shape::esp(Suite::Aes128Gcm16, Mode::Transport));
    let (mut buf, range) = framed(&ipv4(UDP, 1, 2, 0, 1));
    out.set_last_sequence(u64::from(u32::MAX));
    assert_eq!(
        out.seal(&mut buf, range.clone()),
        Err(EspError::SequenceExhausted)
    );
    assert_eq!(
        out.seal_with_seq(&mut buf, range, 0),
        Err(EspError::ZeroSequence)
    );
}

#[test]
fn hard_lifetime_stops_the_sa_and_soft_flags_it() {
    let mut c = config(
        Shape::esp(Suite::Aes128Gcm16, Mode::Transport),
        Direction::Outbound,
    );
    c.lifetime.soft_packets = Some(2);
    c.lifetime.hard_packets = Some(3);
    let mut out = Sa::new(c).expect("SA");
    let packet = ipv4(UDP, 1, 2, 0, 1);
    seal(&mut out, &packet);
    assert_eq!(out.lifetime_state(), LifetimeState::Fresh);
    seal(&mut out, &packet);
    assert_eq!(out.lifetime_state(), LifetimeState::Soft);
    seal(&mut out, &packet);
    assert_eq!(out.lifetime_state(), LifetimeState::Hard);
    let (mut buf, range) = framed(&packet);
    assert_eq!(
        out.seal(&mut buf, range),
        Err(EspError::LifetimeExpired("packet"))
    );
}

#[test]
fn bad_configurations_are_refused() {
    let keys = || SaKeys::new(&[0; 20], &[]);
    let base = || SaConfig::new(0x1000, Direction::Inbound, Suite::Aes128Gcm16, keys());
    for window in [1, 31, 4097] {
        let mut c = base();
        c.replay_window = window;
        assert_eq!(Sa::new(c).unwrap_err(), SaError::ReplayWindow(window));
    }
    for window in [0, 32, 4096] {
        let mut c = base();
        c.replay_window = window;
        assert!(Sa::new(c).is_ok(), "window {window}");
    }
    let mut c = base();
    c.spi = 255;
    assert_eq!(Sa::new(c).unwrap_err(), SaError::ReservedSpi(255));
    let c = SaConfig::new(
        0x1000,
        Direction::Inbound,
        Suite::Aes128Gcm16,
        SaKeys::new(&[0; 16], &[]),
    );
    assert!(matches!(Sa::new(c).unwrap_err(), SaError::Key(_)));
    let mut c = base();
    c.protocol = IpsecProtocol::Ah;
    assert_eq!(
        Sa::new(c).unwrap_err(),
        SaError::SuiteNotForAh("aes128gcm16")
    );
    let mut c = base();
    c.direction = Direction::Outbound;
    c.mode = Mode::Tunnel;
    assert_eq!(Sa::new(c).unwrap_err(), SaError::MissingTunnelEndpoints);
    let mut c = base();
    c.udp_encap = Some(UdpEncap::NAT_T);
    assert!(Sa::new(c).is_ok());
}

#[test]
fn keys_never_show_in_debug_output() {
    let keys = SaKeys::new(&[0xab; 20], &[0xcd; 32]);
    let text = format!("{keys:?}");
    assert!(
        !text.contains("ab") && !text.contains("171") && !text.contains("cd"),
        "{text}"
    );
    assert!(text.contains("redacted 20 bytes"));
    let sa = Sa::new(SaConfig::new(
        0x1000,
        Direction::Inbound,
        Suite::Aes128Gcm16,
        SaKeys::new(&[0xab; 20], &[]),
    ))
    .unwrap();
    let text = format!("{sa:?}");
    assert!(!text.contains("ab, ab") && !text.contains("171"), "{text}");
}

#[test]
fn ah_detects_changes_to_immutable_fields_but_not_mutable_ones() {
    for v6 in [false, true] {
        let mut shape = Shape::esp(Suite::NullHmacSha256, Mode::Transport);
        shape.protocol = IpsecProtocol::Ah;
        shape.v6_outer = v6;
        let (mut out, mut inb) = pair(shape);
        let packet = if v6 {
            ipv6(TCP, 1, 2, 0, 30)
        } else {
            ipv4(TCP, 1, 2, 0, 30)
        };
        let wire = seal(&mut out, &packet);
        let mut mutated = wire.clone();
        if v6 {
            mutated[1] ^= 0xff; // traffic class / flow label
            mutated[7] = 1; // hop limit
        } else {
            mutated[1] = 0xb8; // TOS
            mutated[8] = 1; // TTL
            mutated[10] ^= 0xff; // checksum
        }
        assert!(
            open(&mut inb, &mutated).is_ok(),
            "v6 {v6}: mutable fields are zeroed for the ICV"
        );
        let mut changed_src = seal(&mut out, &packet);
        changed_src[if v6 { 9 } else { 13 }] ^= 1;
        assert!(matches!(
            open(&mut inb, &changed_src),
            Err(EspError::Authentication { .. })
        ));
        let mut changed_payload = seal(&mut out, &packet);
        let last = changed_payload.len() - 1;
        changed_payload[last] ^= 1;
        assert!(matches!(
            open(&mut inb, &changed_payload),
            Err(EspError::Authentication { .. })
        ));
    }
}
