//! ESP through the crypto_aesni_gcm cryptodev (intel-ipsec-mb inside DPDK, code we did not write)
//! against the software path (aws-lc-rs): the same key, salt and sequence numbers must give the
//! same ESP bytes, and each side must open what the other sealed.
#![cfg(feature = "dpdk")]

mod common;

use std::sync::{Arc, OnceLock};

use dvipsec_dpdk::{Cryptodev, CryptodevProvider, Eal};
use dvipsec_esp::{
    AeadProvider, Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap,
    MAX_HEADROOM, MAX_TAILROOM,
};

const SIZES: &[usize] = &[20, 21, 64, 333, 576, 1420, 1500, 9000];

fn device() -> Option<Arc<Cryptodev>> {
    let eal: &'static Eal = common::eal("cryptodev", &["crypto_aesni_gcm0"])?;
    static DEVICE: OnceLock<Arc<Cryptodev>> = OnceLock::new();
    Some(Arc::clone(DEVICE.get_or_init(|| {
        Cryptodev::open(eal, "crypto_aesni_gcm0").expect("crypto_aesni_gcm0")
    })))
}

#[derive(Clone, Copy)]
enum Shape {
    Transport,
    UdpTunnel,
    TunnelEsn,
}

fn config(direction: Direction, suite: Suite, key: &[u8], shape: Shape) -> SaConfig {
    let mut c = SaConfig::new(0x0bad_cafe, direction, suite, SaKeys::new(key, &[]));
    match shape {
        Shape::Transport => {}
        Shape::UdpTunnel | Shape::TunnelEsn => {
            c.mode = Mode::Tunnel;
            c.tunnel = Some(TunnelEndpoints {
                src: "192.0.2.1".parse().unwrap(),
                dst: "198.51.100.7".parse().unwrap(),
            });
        }
    }
    if let Shape::UdpTunnel = shape {
        c.udp_encap = Some(UdpEncap {
            src_port: 4500,
            dst_port: 4500,
        });
    }
    c.esn = matches!(shape, Shape::TunnelEsn);
    c
}

fn sa(
    provider: &dyn AeadProvider,
    direction: Direction,
    suite: Suite,
    key: &[u8],
    shape: Shape,
) -> Sa {
    Sa::with_provider(config(direction, suite, key, shape), provider).expect("SA")
}

/// A buffer holding an IPv4/UDP packet of `total` bytes (at least 20) at MAX_HEADROOM.
fn packet(total: usize, fill: u8) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut p: Vec<u8> = (0..total)
        .map(|i| (i as u8).wrapping_mul(31) ^ fill)
        .collect();
    p[..20].copy_from_slice(&common::ipv4::ipv4_udp_header(total));
    if total >= 28 {
        p[20..24].copy_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    }
    let mut buf = vec![0u8; MAX_HEADROOM + total + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + total].copy_from_slice(&p);
    (buf, MAX_HEADROOM..MAX_HEADROOM + total)
}

fn seal(sa: &mut Sa, total: usize, seq: u64) -> Vec<u8> {
    let (mut buf, range) = packet(total, seq as u8);
    let sealed = sa.seal_with_seq(&mut buf, range, seq).expect("seal");
    buf[sealed.packet].to_vec()
}

fn open(sa: &mut Sa, esp: &[u8]) -> Result<Vec<u8>, dvipsec_esp::EspError> {
    let mut buf = esp.to_vec();
    let range = 0..buf.len();
    let opened = sa.open(&mut buf, range)?;
    Ok(buf[opened.packet].to_vec())
}

fn plain(total: usize, seq: u64) -> Vec<u8> {
    let (buf, range) = packet(total, seq as u8);
    buf[range].to_vec()
}

fn check_suite(device: &Arc<Cryptodev>, suite: Suite, key: &[u8], shape: Shape) {
    let offload = CryptodevProvider::new(Arc::clone(device));
    let software = dvipsec_esp::AwsLcProvider;
    let mut hw_out = sa(&offload, Direction::Outbound, suite, key, shape);
    let mut sw_out = sa(&software, Direction::Outbound, suite, key, shape);
    // With ESN the receiver infers the high 32 bits from its window: start it near them.
    let high = if matches!(shape, Shape::TunnelEsn) {
        7 << 32
    } else {
        0
    };
    let inbound = |provider: &dyn AeadProvider| {
        let mut s = sa(provider, Direction::Inbound, suite, key, shape);
        s.set_replay_top(high);
        s
    };
    let mut hw_in = inbound(&offload);
    let mut sw_in = inbound(&software);
    for (i, &total) in SIZES.iter().enumerate() {
        let seq = high + 1 + i as u64 * 3;
        let from_hw = seal(&mut hw_out, total, seq);
        let from_sw = seal(&mut sw_out, total, seq);
        assert_eq!(
            from_hw, from_sw,
            "{total}-byte packet, seq {seq}: ESP differs"
        );
        // Both directions: each side opens what the other sealed. Transport mode rewrites the
        // IP header (length, protocol, checksum), so both openings must agree with each other
        // and with the original past the IP header.
        let by_hw = open(&mut hw_in, &from_sw).expect("cryptodev opens software ESP");
        let mut again = from_hw.clone();
        let by_sw = open(&mut sw_in, &again).expect("software opens cryptodev ESP");
        assert_eq!(by_hw, by_sw, "{total}: openings differ");
        assert_eq!(
            by_hw[20..],
            plain(total, seq)[20..],
            "{total}: payload differs"
        );
        // A flipped ciphertext bit is refused by the device's tag check and leaves no plaintext.
        let last = again.len() - 20;
        again[last] ^= 1;
        let mut fresh = inbound(&offload);
        assert!(
            open(&mut fresh, &again).is_err(),
            "{total}: tampered ESP accepted"
        );
    }
}

#[test]
fn aes128_gcm_esp_is_byte_identical_to_software_in_every_shape() {
    let Some(device) = device() else { return };
    let key: Vec<u8> = (1..=20).collect();
    for shape in [Shape::Transport, Shape::UdpTunnel, Shape::TunnelEsn] {
        check_suite(&device, Suite::Aes128Gcm16, &key, shape);
    }
}

#[test]
fn aes256_gcm_esp_is_byte_identical_to_software() {
    let Some(device) = device() else { return };
    let key: Vec<u8> = (100..136).collect();
    check_suite(&device, Suite::Aes256Gcm16, &key, Shape::UdpTunnel);
}

#[test]
fn peek_through_the_cryptodev_matches_software_peek() {
    let Some(device) = device() else { return };
    let key = [9u8; 20];
    let offload = CryptodevProvider::new(device);
    let mut out = sa(
        &dvipsec_esp::AwsLcProvider,
        Direction::Outbound,
        Suite::Aes128Gcm16,
        &key,
        Shape::UdpTunnel,
    );
    let hw_in = sa(
        &offload,
        Direction::Inbound,
        Suite::Aes128Gcm16,
        &key,
        Shape::UdpTunnel,
    );
    let sw_in = sa(
        &dvipsec_esp::AwsLcProvider,
        Direction::Inbound,
        Suite::Aes128Gcm16,
        &key,
        Shape::UdpTunnel,
    );
    let esp = seal(&mut out, 200, 42);
    let hw = hw_in.peek(&esp).expect("cryptodev peek");
    let sw = sw_in.peek(&esp).expect("software peek");
    assert_eq!(
        format!("{:?}", hw.unverified()),
        format!("{:?}", sw.unverified())
    );
    assert_eq!(hw.unverified().seq, 42);
}

#[test]
fn chacha_is_refused_by_the_cryptodev_provider() {
    let Some(device) = device() else { return };
    let offload = CryptodevProvider::new(device);
    let err = offload
        .new_aead(dvipsec_esp::AeadAlgorithm::ChaCha20Poly1305, &[0; 32])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("AES-GCM only"), "{err}");
    let err = offload
        .new_aead(dvipsec_esp::AeadAlgorithm::Aes128Gcm, &[0; 15])
        .err()
        .expect("short key refused");
    assert!(err.to_string().contains("16"), "{err}");
}
