//! Small packet helpers the roles share: Ethernet framing, the inner flow of a decapsulated
//! packet, building a UDP datagram, and turning one around in place (the echo service).
//! Everything is checked and returns an error instead of panicking.

use dvipsec_esp::ip::{self, proto, Family};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// Bytes of an Ethernet header.
pub const ETHERNET_LEN: usize = 14;
/// Ethernet type of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet type of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Bytes of a UDP header.
pub const UDP_LEN: usize = 8;
/// UDP's IP protocol number.
pub const UDP: u8 = 17;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const DEFAULT_TTL: u8 = 64;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// Why a packet could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than an Ethernet header.
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Runt(usize),
    /// Not IPv4 or IPv6.
    #[error("Ethernet type {0:#06x} is not IP")]
    NotIp(u16),
    /// The IP header is bad.
    #[error("IP header: {0}")]
    Ip(#[from] dvipsec_esp::EspError),
    /// The transport header does not fit.
    #[error("truncated {layer} header at offset {offset}")]
    Truncated {
        /// "UDP" or "TCP".
        layer: &'static str,
        /// Its offset.
        offset: usize,
    },
    /// The source and destination families differ.
    #[error("source and destination address families differ")]
    MixedFamilies,
    /// The buffer is too small for the datagram.
    #[error("need {needed} bytes for the datagram, the buffer has {available}")]
    NoRoom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Not UDP (the echo service answers UDP only).
    #[error("protocol {0} is not UDP")]
    NotUdp(u8),
}

/// Reads the Ethernet header: the IP payload's range within `frame`.
pub fn ip_payload(frame: &[u8]) -> Result<Range<usize>, WireError> {
    let header = frame
        .get(..ETHERNET_LEN)
        .ok_or(WireError::Runt(frame.len()))?;
    match u16::from_be_bytes([header[12], header[13]]) {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(ETHERNET_LEN..frame.len()),
        other => Err(WireError::NotIp(other)),
    }
}

/// Writes an Ethernet header for an IP packet of `family`.
pub fn write_ethernet(header: &mut [u8; ETHERNET_LEN], dst: Mac, src: Mac, family: Family) {
    header[..6].copy_from_slice(&dst);
    header[6..12].copy_from_slice(&src);
    let ethertype = match family {
        Family::V4 => ETHERTYPE_IPV4,
        Family::V6 => ETHERTYPE_IPV6,
    };
    header[12..].copy_from_slice(&ethertype.to_be_bytes());
}

/// The inner flow of an IP packet: addresses, protocol, ports and where the payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol.
    pub protocol: u8,
    /// Source port (0 unless TCP/UDP).
    pub src_port: u16,
    /// Destination port (0 unless TCP/UDP).
    pub dst_port: u16,
    /// TCP flags, if TCP.
    pub tcp_flags: Option<u8>,
    /// The transport payload within the packet (UDP data; for TCP the segment after the ports).
    pub payload: Range<usize>,
}

/// Reads the flow of the IP `packet` (offsets relative to it).
pub fn flow(packet: &[u8]) -> Result<Flow, WireError> {
    let view = ip::parse(packet)?;
    let packet = &packet[..view.total_len];
    let (src, dst) = ip::addresses(packet, view.family);
    let at = view.header_len;
    let (src_port, dst_port, tcp_flags, payload_at) = match view.proto {
        proto::UDP => {
            let udp = packet.get(at..at + UDP_LEN).ok_or(WireError::Truncated {
                layer: "UDP",
                offset: at,
            })?;
            (be16(udp, 0), be16(udp, 2), None, at + UDP_LEN)
        }
        proto::TCP => {
            let tcp = packet.get(at..at + 20).ok_or(WireError::Truncated {
                layer: "TCP",
                offset: at,
            })?;
            let data_at = at + usize::from(tcp[12] >> 4) * 4;
            (
                be16(tcp, 0),
                be16(tcp, 2),
                Some(tcp[13]),
                data_at.min(packet.len()),
            )
        }
        _ => (0, 0, None, at),
    };
    Ok(Flow {
        src,
        dst,
        protocol: view.proto,
        src_port,
        dst_port,
        tcp_flags,
        payload: payload_at..packet.len(),
    })
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Writes an IP + UDP datagram from `src` to `dst` carrying `payload` at the start of `out`;
/// returns its length.
pub fn write_udp(
    out: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<usize, WireError> {
    let header_len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => IPV6_LEN,
        _ => return Err(WireError::MixedFamilies),
    };
    let total = header_len + UDP_LEN + payload.len();
    if total > out.len() || total > usize::from(u16::MAX) {
        return Err(WireError::NoRoom {
            needed: total,
            available: out.len().min(usize::from(u16::MAX)),
        });
    }
    let packet = &mut out[..total];
    packet[..header_len].fill(0);
    write_ip_header(packet, src.ip(), dst.ip(), total);
    let udp = header_len;
    packet[udp..udp + 2].copy_from_slice(&src.port().to_be_bytes());
    packet[udp + 2..udp + 4].copy_from_slice(&dst.port().to_be_bytes());
    packet[udp + 4..udp + 6].copy_from_slice(&((UDP_LEN + payload.len()) as u16).to_be_bytes());
    packet[udp + UDP_LEN..].copy_from_slice(payload);
    set_udp_checksum(packet, udp);
    Ok(total)
}

fn write_ip_header(packet: &mut [u8], src: IpAddr, dst: IpAddr, total: usize) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            packet[0] = 0x45;
            packet[8] = DEFAULT_TTL;
            packet[9] = proto::UDP;
            packet[12..16].copy_from_slice(&s.octets());
            packet[16..20].copy_from_slice(&d.octets());
            ip::set_total_len(packet, Family::V4, total);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            packet[0] = 0x60;
            packet[6] = proto::UDP;
            packet[7] = DEFAULT_TTL;
            packet[8..24].copy_from_slice(&s.octets());
            packet[24..40].copy_from_slice(&d.octets());
            ip::set_total_len(packet, Family::V6, total);
        }
        _ => {}
    }
}

/// Computes the UDP checksum (RFC 768, with the IPv4 or IPv6 pseudo-header) of the datagram at
/// `udp_at` in the IP `packet` and writes it.
fn set_udp_checksum(packet: &mut [u8], udp_at: usize) {
    packet[udp_at + 6..udp_at + 8].fill(0);
    let udp_len = packet.len() - udp_at;
    let addresses = if packet[0] >> 4 == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    let mut pseudo = [0u8; 8];
    pseudo[..4].copy_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo[7] = proto::UDP;
    let initial = u32::from(ip::ones_complement_sum(addresses, 0))
        + u32::from(ip::ones_complement_sum(&pseudo, 0));
    let sum = !ip::ones_complement_sum(&packet[udp_at..], initial);
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
}

/// Turns the UDP datagram `packet` around in place: addresses and ports swapped, TTL reset,
/// checksums recomputed. The payload is left as it is (an echo).
pub fn reverse_udp(packet: &mut [u8]) -> Result<(), WireError> {
    let flow = flow(packet)?;
    if flow.protocol != proto::UDP {
        return Err(WireError::NotUdp(flow.protocol));
    }
    let view = ip::parse(packet)?;
    let packet = &mut packet[..view.total_len];
    match view.family {
        Family::V4 => {
            let (src, dst) = (flow.src, flow.dst);
            write_addresses_v4(packet, dst, src);
            packet[8] = DEFAULT_TTL;
            ip::fix_ipv4_checksum(packet);
        }
        Family::V6 => {
            let mut src = [0u8; 16];
            src.copy_from_slice(&packet[8..24]);
            packet.copy_within(24..40, 8);
            packet[24..40].copy_from_slice(&src);
            packet[7] = DEFAULT_TTL;
        }
    }
    let udp = view.header_len;
    packet[udp..udp + 2].copy_from_slice(&flow.dst_port.to_be_bytes());
    packet[udp + 2..udp + 4].copy_from_slice(&flow.src_port.to_be_bytes());
    set_udp_checksum(packet, udp);
    Ok(())
}

fn write_addresses_v4(packet: &mut [u8], src: IpAddr, dst: IpAddr) {
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
        packet[12..16].copy_from_slice(&s.octets());
        packet[16..20].copy_from_slice(&d.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_datagram_reads_back_and_checksums_verify() {
        for (src, dst) in [
            (addr("10.1.0.1:4000"), addr("203.0.113.10:60")),
            (addr("[2001:db8::1]:4000"), addr("[2001:db8::a]:60")),
        ] {
            let mut buf = [0u8; 128];
            let len = write_udp(&mut buf, src, dst, b"hello").unwrap();
            let f = flow(&buf[..len]).unwrap();
            assert_eq!((f.src, f.dst), (src.ip(), dst.ip()));
            assert_eq!((f.src_port, f.dst_port, f.protocol), (4000, 60, 17));
            assert_eq!(&buf[f.payload.clone()], b"hello");
            reverse_udp(&mut buf[..len]).unwrap();
            let back = flow(&buf[..len]).unwrap();
            assert_eq!((back.src, back.dst), (dst.ip(), src.ip()));
            assert_eq!((back.src_port, back.dst_port), (60, 4000));
        }
    }

    #[test]
    fn short_or_mixed_input_is_an_error() {
        let mut buf = [0u8; 30];
        assert!(matches!(
            write_udp(&mut buf, addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[0; 10]),
            Err(WireError::NoRoom { needed: 38, .. })
        ));
        assert_eq!(
            write_udp(&mut buf, addr("10.0.0.1:1"), addr("[::1]:2"), b""),
            Err(WireError::MixedFamilies)
        );
        assert_eq!(ip_payload(&[0; 10]), Err(WireError::Runt(10)));
        let mut frame = [0u8; 20];
        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(ip_payload(&frame), Err(WireError::NotIp(0x0806)));
    }
}
