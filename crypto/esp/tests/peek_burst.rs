//! Burst peek gives, for every packet, exactly what `Sa::peek` gives: mixed bursts over several
//! SAs of every suite, both modes, IPv4 and IPv6, NAT-T, ESN, AH, damaged and truncated packets,
//! packets peeked with the wrong SA, and bursts longer than one pass.

mod common;

use common::*;
use dvipsec_esp::{
    peek_burst, peek_burst_flows, AeadAlgorithm, AeadProvider, AwsLcProvider, CryptoError,
    Direction, EspAead, EspError, IpsecProtocol, Mode, PeekFlow, PeekInfo, Sa, Suite,
    Unauthenticated, MAX_PEEK_BURST,
};
use proptest::prelude::*;

type PeekResult = Result<Unauthenticated<PeekInfo>, EspError>;

fn arb_shape() -> impl Strategy<Value = Shape> {
    (
        prop::sample::select(Suite::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..8,
    )
        .prop_map(|(suite, tunnel, v6_outer, udp_encap, esn, ah_roll)| {
            // AH exists only with the null suite's HMAC; take it one time in eight there.
            let ah = suite == Suite::NullHmacSha256 && ah_roll == 0;
            Shape {
                suite,
                protocol: if ah {
                    IpsecProtocol::Ah
                } else {
                    IpsecProtocol::Esp
                },
                mode: if tunnel {
                    Mode::Tunnel
                } else {
                    Mode::Transport
                },
                v6_outer,
                udp_encap: udp_encap && !ah,
                esn,
            }
        })
}

/// A pair of SAs with a SPI and keys of their own (index `n` in the pool).
fn numbered_pair(shape: Shape, n: u8) -> (Sa, Sa) {
    let build = |direction| {
        let mut c = config(shape, direction);
        c.spi = 0x1000 + u32::from(n);
        c.keys = keys_for(shape.suite, n.wrapping_mul(17).wrapping_add(1));
        c
    };
    (
        Sa::new(build(Direction::Outbound)).unwrap(),
        Sa::new(build(Direction::Inbound)).unwrap(),
    )
}

#[derive(Debug, Clone)]
struct PacketPlan {
    sender: usize,
    /// The SA the packet is peeked with; differs from `sender` now and then (wrong SPI).
    peeker: usize,
    v6_inner: bool,
    tcp: bool,
    flags: u8,
    payload: usize,
    damage: Vec<(prop::sample::Index, u8)>,
    cut: Option<prop::sample::Index>,
}

fn arb_packet(pool: usize) -> impl Strategy<Value = PacketPlan> {
    (
        0..pool,
        0u8..10,
        0..pool,
        any::<bool>(),
        any::<bool>(),
        any::<u8>(),
        0usize..1400,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    )
        .prop_map(
            |(sender, wrong_roll, other, v6_inner, tcp, flags, payload, damage, cut)| PacketPlan {
                sender,
                peeker: if wrong_roll == 0 { other } else { sender },
                v6_inner,
                tcp,
                flags,
                payload,
                // Most packets arrive intact: the fast path must be exercised, not only errors.
                damage: if payload % 4 == 0 { damage } else { Vec::new() },
                cut,
            },
        )
}

fn wire_for(plan: &PacketPlan, sender: &mut Sa) -> Vec<u8> {
    let protocol = if plan.tcp { TCP } else { UDP };
    // Tunnel mode may mix families; transport mode keeps the packet's own header as outer.
    let inner = if plan.v6_inner {
        ipv6(protocol, 40000, 443, plan.flags, plan.payload)
    } else {
        ipv4(protocol, 40000, 443, plan.flags, plan.payload)
    };
    let mut wire = seal(sender, &inner);
    for (at, value) in &plan.damage {
        let at = at.index(wire.len());
        wire[at] = *value;
    }
    if let Some(cut) = plan.cut {
        wire.truncate(cut.index(wire.len()));
    }
    wire
}

fn fresh_results(n: usize) -> Vec<PeekResult> {
    (0..n).map(|_| Err(EspError::DummyPacket)).collect()
}

/// Peeks the burst both ways and compares packet by packet.
fn assert_burst_matches_peek(burst: &[(&Sa, &[u8])]) -> Result<(), TestCaseError> {
    let mut results = fresh_results(burst.len());
    let written = peek_burst(burst, &mut results);
    prop_assert_eq!(written, burst.len());
    for (i, (&(sa, packet), got)) in burst.iter().zip(&results).enumerate() {
        prop_assert_eq!(got, &sa.peek(packet), "packet {} of {}", i, burst.len());
    }
    assert_flows_match_peek(burst)
}

/// The compact burst reports, for every packet, each field `Sa::peek` reports the same way (the
/// low 32 bits for the sequence number), and fails exactly where `Sa::peek` fails.
fn assert_flows_match_peek(burst: &[(&Sa, &[u8])]) -> Result<(), TestCaseError> {
    let mut flows: Vec<Result<Unauthenticated<PeekFlow>, EspError>> = (0..burst.len())
        .map(|_| Err(EspError::DummyPacket))
        .collect();
    prop_assert_eq!(peek_burst_flows(burst, &mut flows), burst.len());
    for (i, (&(sa, packet), got)) in burst.iter().zip(&flows).enumerate() {
        match (got, sa.peek(packet)) {
            (Ok(flow), Ok(info)) => {
                let (flow, info) = (flow.unverified(), info.unverified());
                prop_assert_eq!(flow.src(), info.src, "packet {}", i);
                prop_assert_eq!(flow.dst(), info.dst, "packet {}", i);
                prop_assert_eq!(flow.protocol, info.protocol, "packet {}", i);
                prop_assert_eq!(flow.src_port, info.src_port, "packet {}", i);
                prop_assert_eq!(flow.dst_port, info.dst_port, "packet {}", i);
                prop_assert_eq!(flow.tcp_flags, info.tcp_flags, "packet {}", i);
                prop_assert_eq!(flow.syn(), info.syn, "packet {}", i);
                prop_assert_eq!(
                    u64::from(flow.seq_lo),
                    info.seq & 0xffff_ffff,
                    "packet {}",
                    i
                );
            }
            (Err(got), Err(expected)) => prop_assert_eq!(got, &expected, "packet {}", i),
            (got, expected) => {
                return Err(TestCaseError::fail(format!(
                    "packet {i}: flows gave {got:?}, peek gave {expected:?}"
                )))
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn burst_equals_peek_for_every_packet(
        shapes in prop::collection::vec(arb_shape(), 1..6),
        plans in prop::collection::vec(arb_packet(6), 1..80),
    ) {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for (n, &shape) in shapes.iter().enumerate() {
            let (out, inb) = numbered_pair(shape, n as u8);
            senders.push(out);
            receivers.push(inb);
        }
        let mut wires = Vec::new();
        for plan in &plans {
            let sender = plan.sender % shapes.len();
            wires.push(wire_for(plan, &mut senders[sender]));
        }
        let burst: Vec<(&Sa, &[u8])> = plans
            .iter()
            .zip(&wires)
            .map(|(plan, wire)| (&receivers[plan.peeker % shapes.len()], wire.as_slice()))
            .collect();
        assert_burst_matches_peek(&burst)?;
    }
}

/// Four AES-128-GCM tunnel SAs, interleaved as a distributor sees them, 32 and 70 packets: every
/// packet peeks successfully and the flows are the ones sealed.
#[test]
fn interleaved_gcm_burst_reads_every_flow() {
    let shape = Shape::esp(Suite::Aes128Gcm16, Mode::Tunnel);
    let mut pairs: Vec<(Sa, Sa)> = (0..4).map(|n| numbered_pair(shape, n)).collect();
    let mut wires = Vec::new();
    for i in 0..70u16 {
        let (out, _) = &mut pairs[usize::from(i % 4)];
        let flags = if i % 5 == 0 { 0x02 } else { 0x10 };
        let inner = if i % 3 == 0 {
            ipv6(TCP, 1000 + i, 80, flags, 1300)
        } else {
            ipv4(
                if i % 2 == 0 { TCP } else { UDP },
                1000 + i,
                80,
                flags,
                1300,
            )
        };
        wires.push(seal(out, &inner));
    }
    for len in [1, MAX_PEEK_BURST, 70] {
        let burst: Vec<(&Sa, &[u8])> = wires[..len]
            .iter()
            .enumerate()
            .map(|(i, w)| (&pairs[i % 4].1, w.as_slice()))
            .collect();
        let mut results = fresh_results(len);
        assert_eq!(peek_burst(&burst, &mut results), len);
        for (i, result) in results.iter().enumerate() {
            let flow = result.as_ref().expect("peek").unverified();
            assert_eq!(flow.src_port, 1000 + i as u16, "packet {i}");
            assert_eq!(flow.spi, 0x1000 + (i % 4) as u32);
            assert_eq!(flow.syn, i % 5 == 0 && (i % 3 == 0 || i % 2 == 0));
            assert_eq!(result, &burst[i].0.peek(burst[i].1));
        }
        assert_flows_match_peek(&burst).unwrap();
    }
}

/// `out` shorter than the burst: only that many are written, the rest of the burst is left alone.
#[test]
fn short_output_writes_only_its_length() {
    let (mut out, inb) = numbered_pair(Shape::esp(Suite::Aes256Gcm16, Mode::Tunnel), 1);
    let wires: Vec<Vec<u8>> = (0..5)
        .map(|i| seal(&mut out, &ipv4(UDP, i, 53, 0, 100)))
        .collect();
    let burst: Vec<(&Sa, &[u8])> = wires.iter().map(|w| (&inb, w.as_slice())).collect();
    let mut results = fresh_results(3);
    assert_eq!(peek_burst(&burst, &mut results), 3);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap().unverified().src_port, i as u16);
    }
    assert_eq!(peek_burst(&burst[..0], &mut results), 0);
}

/// An AES-GCM provider that does not offer its block cipher to burst peek (the trait's default).
struct OpaqueProvider;

struct OpaqueAead(Box<dyn EspAead>);

impl EspAead for OpaqueAead {
    fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; 16],
    ) -> Result<(), CryptoError> {
        self.0.seal_in_place(nonce, aad, in_out, tag)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        self.0.open_in_place(nonce, aad, in_out, tag)
    }

    fn apply_keystream(
        &self,
        nonce: &[u8; 12],
        offset: usize,
        data: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.0.apply_keystream(nonce, offset, data)
    }
}

impl AeadProvider for OpaqueProvider {
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn EspAead>, CryptoError> {
        Ok(Box::new(OpaqueAead(
            AwsLcProvider.new_aead(algorithm, key)?,
        )))
    }
}

/// SAs whose AEAD keeps its block cipher to itself still peek correctly in a burst, mixed with
/// SAs whose AEAD offers it.
#[test]
fn provider_without_block_cipher_falls_back_per_packet() {
    let shape = Shape::esp(Suite::Aes128Gcm16, Mode::Tunnel);
    let opaque_cfg = |direction| config(shape, direction);
    let mut opaque_out =
        Sa::with_provider(opaque_cfg(Direction::Outbound), &OpaqueProvider).unwrap();
    let opaque_in = Sa::with_provider(opaque_cfg(Direction::Inbound), &OpaqueProvider).unwrap();
    let (mut plain_out, plain_in) = numbered_pair(shape, 3);
    let mut wires = Vec::new();
    for i in 0..10u16 {
        let sender = if i % 2 == 0 {
            &mut opaque_out
        } else {
            &mut plain_out
        };
        wires.push(seal(sender, &ipv4(TCP, i, 22, 0x02, 500)));
    }
    let burst: Vec<(&Sa, &[u8])> = wires
        .iter()
        .enumerate()
        .map(|(i, w)| {
            (
                if i % 2 == 0 { &opaque_in } else { &plain_in },
                w.as_slice(),
            )
        })
        .collect();
    let mut results = fresh_results(burst.len());
    peek_burst(&burst, &mut results);
    for (i, result) in results.iter().enumerate() {
        let flow = result.as_ref().expect("peek").unverified();
        assert_eq!(flow.src_port, i as u16);
        assert!(flow.syn);
    }
    assert_flows_match_peek(&burst).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Small AES-GCM tunnel packets whose ciphertext ends around the three blocks the burst reads
    /// at fixed offsets (an inner IPv4 or IPv6 header with UDP or TCP and 0 to 40 payload bytes),
    /// damaged now and then: the burst answers exactly as `Sa::peek` on either side of the
    /// boundary.
    #[test]
    fn burst_equals_peek_around_the_three_block_head(
        shape in arb_shape(),
        aes256 in any::<bool>(),
        plans in prop::collection::vec(arb_packet(1), 1..40),
        payloads in prop::collection::vec(0usize..40, 40),
    ) {
        let shape = Shape {
            suite: if aes256 { Suite::Aes256Gcm16 } else { Suite::Aes128Gcm16 },
            protocol: IpsecProtocol::Esp,
            mode: Mode::Tunnel,
            ..shape
        };
        let (mut sender, receiver) = numbered_pair(shape, 0);
        let wires: Vec<Vec<u8>> = plans
            .iter()
            .zip(&payloads)
            .map(|(plan, &payload)| wire_for(&PacketPlan { payload, ..plan.clone() }, &mut sender))
            .collect();
        let burst: Vec<(&Sa, &[u8])> = wires.iter().map(|w| (&receiver, w.as_slice())).collect();
        assert_burst_matches_peek(&burst)?;
    }
}
