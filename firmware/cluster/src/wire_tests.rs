//! Codec tests: encode -> decode identity over generated messages, and bad input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dvipsec_esp::{
    Direction, IpsecProtocol, LifetimeLimits, Mode, Suite, TunnelEndpoints, UdpEncap,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::wire::capacity_hint;
use crate::wire::*;
use crate::WireError;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9é-]{0,40}"
}

fn sa_ref() -> impl Strategy<Value = SaRef> {
    (name(), any::<bool>(), any::<u32>()).prop_map(|(dvipa, out, spi)| SaRef {
        dvipa,
        direction: if out {
            WireDirection::Outbound
        } else {
            WireDirection::Inbound
        },
        spi,
    })
}

fn flow() -> impl Strategy<Value = Flow> {
    (ip(), ip(), any::<u8>(), any::<u16>(), any::<u16>()).prop_map(
        |(local, remote, protocol, local_port, remote_port)| Flow {
            local,
            remote,
            protocol,
            local_port,
            remote_port,
        },
    )
}

fn ports() -> impl Strategy<Value = PortRange> {
    (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange {
        low: a.min(b),
        high: a.max(b),
    })
}

fn prefix() -> impl Strategy<Value = Prefix> {
    (ip(), any::<u8>()).prop_map(|(addr, len)| {
        let max = if addr.is_ipv4() { 33 } else { 129 };
        Prefix {
            addr,
            len: len % max,
        }
    })
}

fn filter() -> impl Strategy<Value = FilterRule> {
    (prefix(), prefix(), any::<u8>(), ports(), ports()).prop_map(
        |(local, remote, protocol, local_ports, remote_ports)| FilterRule {
            local,
            remote,
            protocol,
            local_ports,
            remote_ports,
        },
    )
}

fn install() -> impl Strategy<Value = SaInstall> {
    let head = (
        name(),
        ip(),
        any::<u64>(),
        1u8..=100,
        any::<u32>(),
        any::<bool>(),
    );
    let params = (
        0usize..Suite::ALL.len(),
        any::<bool>(),
        any::<bool>(),
        option::of((ip(), ip())),
        option::of((any::<u16>(), any::<u16>())),
        any::<u32>(),
        any::<bool>(),
    );
    let limits = vec(option::of(any::<u64>()), 4);
    let rest = (
        vec(any::<u8>(), 0..40),
        vec(any::<u8>(), 0..40),
        vec(filter(), 0..4),
    );
    (head, params, limits, rest).prop_map(
        |(
            (dvipa, peer, cf_slot, lifesize_percent, spi, outbound),
            (suite, ah, tunnel_mode, tunnel, udp, replay_window, esn),
            limits,
            (enc, auth, filters),
        )| SaInstall {
            dvipa,
            peer,
            cf_slot,
            lifesize_percent,
            spi,
            direction: if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            protocol: if ah {
                IpsecProtocol::Ah
            } else {
                IpsecProtocol::Esp
            },
            suite: Suite::ALL[suite],
            mode: if tunnel_mode {
                Mode::Tunnel
            } else {
                Mode::Transport
            },
            tunnel: tunnel.map(|(src, dst)| TunnelEndpoints { src, dst }),
            udp_encap: udp.map(|(src_port, dst_port)| UdpEncap { src_port, dst_port }),
            replay_window,
            esn,
            lifetime: LifetimeLimits {
                soft_packets: limits[0],
                hard_packets: limits[1],
                soft_bytes: limits[2],
                hard_bytes: limits[3],
            },
            keys: WireKeys::new(&enc, &auth),
            filters,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    let vipa =
        (name(), ip(), vec(any::<u16>(), 0..5)).prop_map(|(dvipa, address, ports)| VipaEntry {
            dvipa,
            address,
            ports,
        });
    let lifesize = (sa_ref(), any::<u64>(), any::<u64>())
        .prop_map(|(sa, bytes, packets)| LifesizeEntry { sa, bytes, packets });
    let outcome = prop_oneof![
        Just(NewConnOutcome::Installed),
        Just(NewConnOutcome::Refused),
        Just(NewConnOutcome::NegotiationFailed)
    ];
    prop_oneof![
        name().prop_map(|node| Message::Hello { node }),
        vec(vipa, 0..4).prop_map(Message::VipaList),
        install().prop_map(|i| Message::SaInstall(Box::new(i))),
        sa_ref().prop_map(Message::SaDelete),
        vec(lifesize, 0..4).prop_map(Message::Lifesize),
        (any::<u32>(), name(), flow()).prop_map(|(request_id, dvipa, flow)| {
            Message::NewConnRequest(NewConnRequest {
                request_id,
                dvipa,
                flow,
            })
        }),
        (any::<u32>(), outcome).prop_map(|(request_id, outcome)| Message::NewConnResponse {
            request_id,
            outcome
        }),
        (name(), vec(flow(), 0..4)).prop_map(|(dvipa, flows)| Message::ConnReport {
            dvipa,
            connections: flows.into_iter().map(|flow| Connection { flow }).collect(),
        }),
        (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
            |(cpu_percent, connections, shadow_sas)| {
                Message::TargetLoad(TargetLoad {
                    cpu_percent,
                    connections,
                    shadow_sas,
                })
            }
        ),
        Just(Message::Heartbeat),
        any::<u32>().prop_map(|seq| Message::Ack { seq }),
        (
            vec((name(), any::<u32>()), 0..4),
            vec((name(), any::<u64>()), 0..3)
        )
            .prop_map(|(seen, owns)| Message::HeartbeatView(HeartbeatView {
                seen: seen
                    .into_iter()
                    .map(|(node, heard_ms_ago)| MemberSeen { node, heard_ms_ago })
                    .collect(),
                owns: owns
                    .into_iter()
                    .map(|(dvipa, cf_epoch)| OwnerClaim { dvipa, cf_epoch })
                    .collect(),
            })),
        (name(), any::<u64>())
            .prop_map(|(dvipa, cf_epoch)| Message::Takeover(TakeoverNotice { dvipa, cf_epoch })),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), any::<u64>(), 1u32.., message()).prop_map(|(from, to, seq, message)| Frame {
        from_incarnation: from,
        to_incarnation: to,
        seq: if message.kind().is_reliable() { seq } else { 0 },
        message,
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(frame in frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(frame_len(&bytes).unwrap(), Some(bytes.len()));
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn frames_with_keys_are_encoded_without_growing(install in install()) {
        let frame = Frame { from_incarnation: 1, to_incarnation: 2, seq: 3, message: Message::SaInstall(Box::new(install)) };
        let bytes = frame.encode().unwrap();
        prop_assert!(bytes.len() <= bytes.capacity());
        prop_assert_eq!(bytes.capacity(), capacity_hint(&frame.message), "the buffer grew");
    }

    #[test]
    fn every_truncation_is_an_error(frame in frame()) {
        let bytes = frame.encode().unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(Frame::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        let _ = Frame::decode(&bytes);
        let _ = frame_len(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(frame in frame(), at in any::<usize>(), value in any::<u8>()) {
        let mut bytes = frame.encode().unwrap().to_vec();
        let at = at % bytes.len();
        bytes[at] = value;
        let _ = Frame::decode(&bytes);
    }
}

/// The encoded heartbeat frame between incarnations `from` and `to` (sequence 0).
pub(crate) fn heartbeat_between(from: u64, to: u64) -> Vec<u8> {
    Frame {
        from_incarnation: from,
        to_incarnation: to,
        seq: 0,
        message: Message::Heartbeat,
    }
    .encode()
    .unwrap()
    .to_vec()
}

fn heartbeat() -> Vec<u8> {
    heartbeat_between(7, 9)
}

#[test]
fn unknown_version_is_named() {
    let mut bytes = heartbeat();
    bytes[0] = 2;
    let err = Frame::decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        WireError::UnsupportedVersion {
            version: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn unknown_kind_and_trailing_bytes_are_errors() {
    let mut bytes = heartbeat();
    bytes[1] = 99;
    assert_eq!(
        Frame::decode(&bytes).unwrap_err(),
        WireError::UnknownKind { kind: 99 }
    );
    let mut bytes = heartbeat();
    bytes.push(0);
    assert_eq!(
        Frame::decode(&bytes).unwrap_err(),
        WireError::TrailingBytes { offset: HEADER_LEN }
    );
}

#[test]
fn a_sequenced_heartbeat_is_refused() {
    let mut bytes = heartbeat();
    bytes[27] = 1;
    assert!(matches!(
        Frame::decode(&bytes),
        Err(WireError::BadValue {
            field: "header.seq",
            ..
        })
    ));
}

#[test]
fn a_forged_count_is_refused_before_allocating() {
    let mut bytes = Frame {
        from_incarnation: 1,
        to_incarnation: 2,
        seq: 3,
        message: Message::Lifesize(Vec::new()),
    }
    .encode()
    .unwrap()
    .to_vec();
    bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Frame::decode(&bytes).unwrap_err(),
        WireError::BadValue {
            field: "lifesize.entries",
            offset: HEADER_LEN,
            value: u64::from(u32::MAX)
        }
    );
}

#[test]
fn body_length_over_the_limit_is_refused_from_the_header() {
    let mut bytes = heartbeat();
    bytes[4..8].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_be_bytes());
    assert_eq!(
        frame_len(&bytes).unwrap_err(),
        WireError::BodyTooLong {
            len: MAX_BODY_LEN + 1
        }
    );
}

#[test]
fn keys_are_redacted_in_debug() {
    let keys = WireKeys::new(&[0xAB; 20], &[0xCD; 32]);
    let shown = format!("{keys:?}");
    assert!(shown.contains("redacted 20 bytes"), "{shown}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
        "{shown}"
    );
}

#[test]
fn install_builds_an_esp_sa() {
    let install = SaInstall {
        dvipa: "DVA1".into(),
        peer: "203.0.113.10".parse().unwrap(),
        cf_slot: 4,
        lifesize_percent: 5,
        spi: 0x1234,
        direction: Direction::Outbound,
        protocol: IpsecProtocol::Esp,
        suite: Suite::Aes128Gcm16,
        mode: Mode::Tunnel,
        tunnel: Some(TunnelEndpoints {
            src: "198.51.100.10".parse().unwrap(),
            dst: "203.0.113.10".parse().unwrap(),
        }),
        udp_encap: None,
        replay_window: 128,
        esn: false,
        lifetime: LifetimeLimits::default(),
        keys: WireKeys::new(&[7; 20], &[]),
        filters: Vec::new(),
    };
    let sa = dvipsec_esp::Sa::new(install.to_sa_config()).unwrap();
    assert_eq!(sa.params().spi, 0x1234);
    assert_eq!(sa.params().mode, Mode::Tunnel);
    let mut wrong = install.clone();
    wrong.keys = WireKeys::new(&[7; 3], &[]);
    assert!(dvipsec_esp::Sa::new(wrong.to_sa_config()).is_err());
}

#[test]
fn the_original_heartbeat_is_byte_for_byte_unchanged() {
    // What a node without heartbeat views sends, written out by hand.
    let mut old = vec![1, 10, 0, 0, 0, 0, 0, 0];
    old.extend_from_slice(&7u64.to_be_bytes());
    old.extend_from_slice(&9u64.to_be_bytes());
    old.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(heartbeat(), old);
    assert_eq!(Frame::decode(&old).unwrap().message, Message::Heartbeat);
}

#[test]
fn a_heartbeat_view_is_a_heartbeat_with_a_body() {
    let view = Message::HeartbeatView(HeartbeatView {
        seen: vec![
            MemberSeen {
                node: "MVS1".into(),
                heard_ms_ago: 40,
            },
            MemberSeen {
                node: "MVS3".into(),
                heard_ms_ago: MemberSeen::NEVER,
            },
        ],
        owns: vec![OwnerClaim {
            dvipa: "DVB1".into(),
            cf_epoch: 2,
        }],
    });
    assert_eq!(view.kind(), Kind::Heartbeat);
    assert!(!view.kind().is_reliable());
    let frame = Frame {
        from_incarnation: 7,
        to_incarnation: 9,
        seq: 0,
        message: view,
    };
    let bytes = frame.encode().unwrap();
    assert_eq!(bytes[1], 10, "same kind code as the original heartbeat");
    // count, ("MVS1", 40), ("MVS3", NEVER): 4 + 2 * (1 + 4 + 4); count, ("DVB1", 2): 4 + 5 + 8.
    assert_eq!(bytes.len(), HEADER_LEN + 22 + 17);
    assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    let mut cut = bytes[..bytes.len() - 1].to_vec();
    cut[4..8].copy_from_slice(&38u32.to_be_bytes());
    assert!(matches!(
        Frame::decode(&cut),
        Err(WireError::Truncated {
            field: "heartbeat.owns.cf_epoch",
            ..
        })
    ));
}

#[test]
fn takeover_is_sequenced_and_round_trips() {
    let message = Message::Takeover(TakeoverNotice {
        dvipa: "DVA1".into(),
        cf_epoch: 3,
    });
    assert!(message.kind().is_reliable());
    let frame = Frame {
        from_incarnation: 1,
        to_incarnation: 2,
        seq: 5,
        message,
    };
    let bytes = frame.encode().unwrap();
    assert_eq!(bytes[1], 12);
    assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    let mut unsequenced = bytes.to_vec();
    unsequenced[24..28].copy_from_slice(&[0; 4]);
    assert!(Frame::decode(&unsequenced).is_err());
}
