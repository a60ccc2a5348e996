//! The probe packets of the load generator: inner IPv4/UDP packets whose payload carries the
//! flow, the flow's sequence number and the send time, so that an echo brings back everything
//! the receiver needs to count loss, reordering and latency.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
/// Measurement id (4), flow id (4), flow sequence number (8), send time in ns since the
/// measurement's start (8).
pub const PROBE_LEN: usize = 24;
/// The smallest inner packet that holds a probe.
pub const MIN_PACKET: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + PROBE_LEN;
const UDP: u8 = 17;

/// What a probe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Which measurement sent it: a late reply to an earlier one must not count in this one.
    pub run: u32,
    pub flow: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Writes an IPv4/UDP packet of exactly `len` bytes (at least [`MIN_PACKET`]) from `src` to
/// `dst` carrying `probe` into `out[..len]`. The UDP checksum is 0 (allowed over IPv4), which
/// keeps the generator's per-packet cost at the crypto.
pub fn write_probe(
    out: &mut [u8],
    len: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    probe: Probe,
) -> Result<(), String> {
    if len < MIN_PACKET || len > out.len() || len > usize::from(u16::MAX) {
        return Err(format!(
            "probe size {len} outside {MIN_PACKET}..={}",
            out.len()
        ));
    }
    let packet = &mut out[..len];
    write_ipv4_header(packet, *src.ip(), *dst.ip(), UDP, len as u16);
    let udp = &mut packet[IPV4_HEADER_LEN..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&((len - IPV4_HEADER_LEN) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let body = &mut udp[UDP_HEADER_LEN..];
    body[0..4].copy_from_slice(&probe.run.to_be_bytes());
    body[4..8].copy_from_slice(&probe.flow.to_be_bytes());
    body[8..16].copy_from_slice(&probe.seq.to_be_bytes());
    body[16..24].copy_from_slice(&probe.sent_ns.to_be_bytes());
    // The filler bytes stay whatever they were: ESP encrypts them anyway.
    Ok(())
}

/// Reads the probe from an inner IPv4/UDP packet (an echo reply); `None` for anything else.
pub fn read_probe(packet: &[u8]) -> Option<Probe> {
    let header_len = usize::from(*packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || header_len < IPV4_HEADER_LEN || *packet.get(9)? != UDP {
        return None;
    }
    let body = packet.get(header_len + UDP_HEADER_LEN..header_len + UDP_HEADER_LEN + PROBE_LEN)?;
    Some(Probe {
        run: u32::from_be_bytes(body[0..4].try_into().ok()?),
        flow: u32::from_be_bytes(body[4..8].try_into().ok()?),
        seq: u64::from_be_bytes(body[8..16].try_into().ok()?),
        sent_ns: u64::from_be_bytes(body[16..24].try_into().ok()?),
    })
}

/// Writes a 20-byte IPv4 header (DF set, TTL 64, checksum filled in) at the start of `out`.
pub fn write_ipv4_header(out: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, total: u16) {
    out[0] = 0x45;
    out[1] = 0;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[4..10].copy_from_slice(&[0, 0, 0x40, 0, 64, protocol]);
    out[10..12].copy_from_slice(&[0, 0]);
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let checksum = internet_checksum(&out[..IPV4_HEADER_LEN]);
    out[10..12].copy_from_slice(&checksum.to_be_bytes());
}

/// Writes the outer IPv4 and UDP headers a datagram had on the wire (the socket took them
/// off) into `out[..28]`, for the ESP engine, which opens whole packets.
pub fn write_outer_headers(out: &mut [u8], from: SocketAddrV4, to: SocketAddrV4, payload: usize) {
    let total = (IPV4_HEADER_LEN + UDP_HEADER_LEN + payload) as u16;
    write_ipv4_header(out, *from.ip(), *to.ip(), UDP, total);
    let udp = &mut out[IPV4_HEADER_LEN..IPV4_HEADER_LEN + UDP_HEADER_LEN];
    udp[0..2].copy_from_slice(&from.port().to_be_bytes());
    udp[2..4].copy_from_slice(&to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(total - IPV4_HEADER_LEN as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_survives_the_round_trip() {
        let mut buf = [0u8; 1500];
        let probe = Probe {
            run: 3,
            flow: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let src = "10.0.0.1:4000".parse().expect("addr");
        let dst = "10.0.0.2:60".parse().expect("addr");
        write_probe(&mut buf, 576, src, dst, probe).expect("fits");
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 576);
        assert_eq!(internet_checksum(&buf[..20]), 0, "header checksum verifies");
        assert_eq!(read_probe(&buf[..576]), Some(probe));
        assert_eq!(read_probe(&buf[..40]), None, "truncated");
        assert!(write_probe(&mut buf, MIN_PACKET - 1, src, dst, probe).is_err());
    }
}
