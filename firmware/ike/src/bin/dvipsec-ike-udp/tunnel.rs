//! A user-space tunnel endpoint behind our ESP: it answers ICMP echo requests that arrive
//! through a child SA and can send its own echo requests to the peer's inner address.
//!
//! The ESP engine works on whole IP packets, while this loop gets only UDP payloads from its
//! socket: received ESP gets a synthetic outer IPv4 and UDP header before `open`, and sealed
//! packets lose theirs before `send_to`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dvipsec_esp::{
    Direction, Mode as EspMode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap,
    MAX_HEADROOM, MAX_TAILROOM,
};
use dvipsec_ike::crypto::{Encr, EspSuite};
use dvipsec_ike::ChildSaInstalled;

const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// One child SA pair in the ESP engine.
struct ChildPair {
    inbound: Sa,
    outbound: Sa,
    remote: SocketAddr,
}

/// The child SAs by inbound SPI, and the newest one for sending.
#[derive(Default)]
pub struct Tunnel {
    children: HashMap<u32, ChildPair>,
    newest: Option<u32>,
    pings_sent: u16,
}

fn esp_suite(suite: &EspSuite) -> Option<Suite> {
    match (suite.encr, suite.integ.is_some()) {
        (Encr::AesGcm16 { key_bits: 128 }, false) => Some(Suite::Aes128Gcm16),
        (Encr::AesGcm16 { key_bits: 256 }, false) => Some(Suite::Aes256Gcm16),
        (Encr::AesCbc { key_bits: 128 }, true) => Some(Suite::Aes128CbcHmacSha256),
        (Encr::AesCbc { key_bits: 256 }, true) => Some(Suite::Aes256CbcHmacSha256),
        _ => None,
    }
}

fn sa_config(child: &ChildSaInstalled, direction: Direction) -> Result<SaConfig, String> {
    let suite = esp_suite(&child.suite).ok_or("suite not supported by the ESP engine")?;
    let (spi, keys, src, dst) = match direction {
        Direction::Inbound => (
            child.inbound_spi,
            &child.inbound_keys,
            child.remote,
            child.local,
        ),
        Direction::Outbound => (
            child.outbound_spi,
            &child.outbound_keys,
            child.local,
            child.remote,
        ),
    };
    let mut config = SaConfig::new(spi, direction, suite, SaKeys::new(&keys.encr, &keys.integ));
    config.mode = EspMode::Tunnel;
    config.tunnel = Some(TunnelEndpoints {
        src: src.ip(),
        dst: dst.ip(),
    });
    if child.udp_encapsulation {
        config.udp_encap = Some(UdpEncap {
            src_port: src.port(),
            dst_port: dst.port(),
        });
    }
    Ok(config)
}

impl Tunnel {
    pub fn install(&mut self, child: &ChildSaInstalled) -> Result<(), String> {
        let inbound = Sa::new(sa_config(child, Direction::Inbound)?).map_err(|e| e.to_string())?;
        let outbound =
            Sa::new(sa_config(child, Direction::Outbound)?).map_err(|e| e.to_string())?;
        self.children.insert(
            child.inbound_spi,
            ChildPair {
                inbound,
                outbound,
                remote: child.remote,
            },
        );
        self.newest = Some(child.inbound_spi);
        Ok(())
    }

    pub fn remove(&mut self, inbound_spi: u32) {
        self.children.remove(&inbound_spi);
        if self.newest == Some(inbound_spi) {
            self.newest = self.children.keys().next().copied();
        }
    }

    /// Packets opened and sealed over all current child SAs.
    pub fn counts(&self) -> (u64, u64) {
        self.children.values().fold((0, 0), |(i, o), c| {
            (
                i + c.inbound.counters().packets,
                o + c.outbound.counters().packets,
            )
        })
    }

    /// Opens one UDP-encapsulated ESP payload; returns what to send back (an echo reply) and
    /// whether the packet was an echo reply to us.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        local: SocketAddr,
        esp: &[u8],
    ) -> Result<(Option<Vec<u8>>, bool), String> {
        let spi = esp
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("short ESP packet")?;
        let child = self
            .children
            .get_mut(&spi)
            .ok_or_else(|| format!("no child SA with SPI {spi:08x}"))?;
        let mut packet = outer_headers(from, local, esp.len())?;
        packet.extend_from_slice(esp);
        let len = packet.len();
        let opened = child
            .inbound
            .open(&mut packet, 0..len)
            .map_err(|e| e.to_string())?;
        let inner = &packet[opened.packet];
        if is_icmp(inner, ICMP_ECHO_REPLY) {
            return Ok((None, true));
        }
        if !is_icmp(inner, ICMP_ECHO_REQUEST) {
            return Ok((None, false));
        }
        let reply = echo_reply(inner);
        Ok((Some(seal(&mut child.outbound, &reply)?), false))
    }

    /// An echo request from `src` to `dst` through the newest child SA, as UDP payload, and
    /// where to send it.
    pub fn ping(&mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<(Vec<u8>, SocketAddr), String> {
        let spi = self.newest.ok_or("no child SA")?;
        let child = self.children.get_mut(&spi).ok_or("no child SA")?;
        self.pings_sent = self.pings_sent.wrapping_add(1);
        let request = echo_request(src, dst, self.pings_sent);
        Ok((seal(&mut child.outbound, &request)?, child.remote))
    }
}

fn seal(outbound: &mut Sa, inner: &[u8]) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
    let sealed = outbound
        .seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
        .map_err(|e| e.to_string())?;
    // Drop the outer IPv4 and UDP headers: the socket adds its own.
    let start = sealed.packet.start + IPV4_HEADER_LEN + UDP_HEADER_LEN;
    buf.get(start..sealed.packet.end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "sealed packet shorter than its headers".into())
}

/// The IPv4 and UDP headers the datagram had on the wire (the socket stripped them).
fn outer_headers(from: SocketAddr, local: SocketAddr, payload: usize) -> Result<Vec<u8>, String> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), local.ip()) else {
        return Err("IPv6 outer addresses are not supported by this loop".into());
    };
    let total = u16::try_from(IPV4_HEADER_LEN + UDP_HEADER_LEN + payload)
        .map_err(|_| "datagram too long")?;
    let mut header = ipv4_header(src, dst, 17, total);
    header.extend_from_slice(&from.port().to_be_bytes());
    header.extend_from_slice(&local.port().to_be_bytes());
    header.extend_from_slice(&(total - IPV4_HEADER_LEN as u16).to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    Ok(header)
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, total: u16) -> Vec<u8> {
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&dst.octets());
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn is_icmp(packet: &[u8], icmp_type: u8) -> bool {
    packet.len() >= IPV4_HEADER_LEN + 8
        && packet[0] == 0x45
        && packet[9] == ICMP
        && packet[IPV4_HEADER_LEN] == icmp_type
}

fn addr_at(packet: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
}

fn icmp_packet(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, rest: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, 0, 0, 0];
    icmp.extend_from_slice(rest);
    let checksum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let total = (IPV4_HEADER_LEN + icmp.len()) as u16;
    let mut packet = ipv4_header(src, dst, ICMP, total);
    packet.extend_from_slice(&icmp);
    packet
}

/// The echo reply to an echo request: addresses swapped, same identifier, sequence and data.
fn echo_reply(request: &[u8]) -> Vec<u8> {
    let total = usize::from(u16::from_be_bytes([request[2], request[3]])).min(request.len());
    let rest = &request[IPV4_HEADER_LEN + 4..total.max(IPV4_HEADER_LEN + 4)];
    icmp_packet(
        addr_at(request, 16),
        addr_at(request, 12),
        ICMP_ECHO_REPLY,
        rest,
    )
}

fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, sequence: u16) -> Vec<u8> {
    let mut rest = vec![0x1d, 0x1e];
    rest.extend_from_slice(&sequence.to_be_bytes());
    rest.extend_from_slice(b"dvipsec echo through ESP");
    icmp_packet(src, dst, ICMP_ECHO_REQUEST, &rest)
}
