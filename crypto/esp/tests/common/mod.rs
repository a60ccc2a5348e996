//! Packet builders and SA pairs shared by the integration tests.
#![allow(dead_code)]

use dvipsec_esp::{
    Direction, IpsecProtocol, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap,
    MAX_HEADROOM, MAX_TAILROOM,
};
use std::net::IpAddr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// Headroom and tailroom that fit ESP and AH with any option.
pub const HEAD: usize = MAX_HEADROOM;
pub const TAIL: usize = MAX_TAILROOM;

/// Deterministic key material of the right lengths for a suite.
pub fn keys_for(suite: Suite, seed: u8) -> SaKeys {
    let enc: Vec<u8> = (0..suite.enc_key_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    let auth: Vec<u8> = (0..suite.auth_key_len())
        .map(|i| seed.wrapping_mul(3).wrapping_add(i as u8))
        .collect();
    SaKeys::new(&enc, &auth)
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub suite: Suite,
    pub protocol: IpsecProtocol,
    pub mode: Mode,
    pub v6_outer: bool,
    pub udp_encap: bool,
    pub esn: bool,
}

impl Shape {
    pub fn esp(suite: Suite, mode: Mode) -> Self {
        Shape {
            suite,
            protocol: IpsecProtocol::Esp,
            mode,
            v6_outer: false,
            udp_encap: false,
            esn: false,
        }
    }
}

pub fn config(shape: Shape, direction: Direction) -> SaConfig {
    let mut c = SaConfig::new(
        0x0102_0304,
        direction,
        shape.suite,
        keys_for(shape.suite, 9),
    );
    c.protocol = shape.protocol;
    c.mode = shape.mode;
    c.esn = shape.esn;
    if shape.mode == Mode::Tunnel {
        let (src, dst): (IpAddr, IpAddr) = if shape.v6_outer {
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
        } else {
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
        };
        c.tunnel = Some(TunnelEndpoints { src, dst });
    }
    if shape.udp_encap {
        c.udp_encap = Some(UdpEncap::NAT_T);
    }
    c
}

/// An outbound and an inbound SA with the same keys.
pub fn pair(shape: Shape) -> (Sa, Sa) {
    let out = Sa::new(config(shape, Direction::Outbound)).expect("outbound SA");
    let inb = Sa::new(config(shape, Direction::Inbound)).expect("inbound SA");
    (out, inb)
}

/// IPv4 packet with a TCP or UDP header and `payload_len` bytes of payload.
pub fn ipv4(protocol: u8, sport: u16, dport: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let l4 = l4_header(protocol, sport, dport, flags);
    let total = 20 + l4.len() + payload_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[1] = 0x10;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 2]);
    p[20..20 + l4.len()].copy_from_slice(&l4);
    for (i, b) in p[20 + l4.len()..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

/// IPv6 packet with a TCP or UDP header and `payload_len` bytes of payload.
pub fn ipv6(protocol: u8, sport: u16, dport: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let l4 = l4_header(protocol, sport, dport, flags);
    let total = 40 + l4.len() + payload_len;
    let mut p = vec![0u8; total];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    p[6] = protocol;
    p[7] = 64;
    p[8..24].copy_from_slice(
        &"2001:db8:1::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p[24..40].copy_from_slice(
        &"2001:db8:2::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p[40..40 + l4.len()].copy_from_slice(&l4);
    for (i, b) in p[40 + l4.len()..].iter_mut().enumerate() {
        *b = (i * 5) as u8;
    }
    p
}

fn l4_header(protocol: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; if protocol == TCP { 20 } else { 8 }];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    if protocol == TCP {
        h[12] = 0x50;
        h[13] = flags;
    }
    h
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Places `packet` in a buffer with full headroom and tailroom; returns the buffer and range.
pub fn framed(packet: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut buf = vec![0u8; HEAD + packet.len() + TAIL];
    buf[HEAD..HEAD + packet.len()].copy_from_slice(packet);
    (buf, HEAD..HEAD + packet.len())
}

/// Seals `packet` and returns the ESP/AH packet bytes alone.
pub fn seal(sa: &mut Sa, packet: &[u8]) -> Vec<u8> {
    let (mut buf, range) = framed(packet);
    let sealed = sa.seal(&mut buf, range).expect("seal");
    buf[sealed.packet].to_vec()
}

/// Opens a wire packet; returns the decapsulated bytes or the error.
pub fn open(sa: &mut Sa, wire: &[u8]) -> Result<Vec<u8>, dvipsec_esp::EspError> {
    let mut buf = wire.to_vec();
    let len = buf.len();
    let opened = sa.open(&mut buf, 0..len)?;
    Ok(buf[opened.packet].to_vec())
}

/// What open should give back for `packet` in the given mode: the packet itself (in transport mode
/// too, because the header is rebuilt with the original protocol and length).
pub fn expected_after_open(packet: &[u8]) -> Vec<u8> {
    packet.to_vec()
}
