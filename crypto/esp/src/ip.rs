//! Minimal IPv4/IPv6 header views used by ESP/AH: where the payload starts, which byte holds the
//! protocol/next-header, and the length fields to fix after encapsulation.

use crate::error::EspError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers used here.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// IPv4-in-IP.
    pub const IPV4: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6-in-IP.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// ESP.
    pub const ESP: u8 = 50;
    /// AH.
    pub const AH: u8 = 51;
    /// No next header (ESP dummy packets).
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
}

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Where things are in an IP header.
#[derive(Debug, Clone, Copy)]
pub struct IpView {
    /// IP version.
    pub family: Family,
    /// Offset of the byte holding the protocol of the payload (IPv4 protocol, or the last next-header).
    pub proto_at: usize,
    /// The protocol of the payload.
    pub proto: u8,
    /// Bytes of IP header, including IPv6 extension headers walked over.
    pub header_len: usize,
    /// Length of the packet as its header says (never more than the slice).
    pub total_len: usize,
}

#[cold]
pub(crate) fn truncated(layer: &'static str, offset: usize, needed: usize, len: usize) -> EspError {
    EspError::Truncated {
        layer,
        offset,
        needed,
        len,
    }
}

#[inline]
pub(crate) fn need(
    packet: &[u8],
    layer: &'static str,
    offset: usize,
    needed: usize,
) -> Result<(), EspError> {
    if packet.len() < offset.saturating_add(needed) {
        return Err(truncated(layer, offset, needed, packet.len()));
    }
    Ok(())
}

// One bounds check and one load per field: these run several times per packet.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    let mut bytes = [0u8; 2];
    bytes.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(bytes)
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(bytes)
}

/// Parses the IP header at the start of `packet`, walking IPv6 hop-by-hop, routing and destination
/// options headers. Fragments are rejected.
#[inline]
pub fn parse(packet: &[u8]) -> Result<IpView, EspError> {
    let view = parse_header_only(packet)?;
    if view.total_len > packet.len() {
        let (field, offset) = match view.family {
            Family::V4 => ("IPv4 total length", 2),
            Family::V6 => ("IPv6 payload length", 4),
        };
        return Err(EspError::Malformed {
            field,
            offset,
            reason: "larger than the packet",
        });
    }
    Ok(view)
}

/// Like [`parse`] for a packet prefix: the header must be complete, the payload need not be.
/// `total_len` is what the header declares.
#[inline]
pub fn parse_header_only(packet: &[u8]) -> Result<IpView, EspError> {
    need(packet, "IP header", 0, 1)?;
    match packet[0] >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => Err(EspError::Malformed {
            field: "IP version",
            offset: 0,
            reason: "neither 4 nor 6",
        }),
    }
}

#[inline]
fn parse_v4(packet: &[u8]) -> Result<IpView, EspError> {
    need(packet, "IPv4 header", 0, 20)?;
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(EspError::Malformed {
            field: "IPv4 IHL",
            offset: 0,
            reason: "less than 5 words",
        });
    }
    need(packet, "IPv4 options", 0, header_len)?;
    let total_len = usize::from(be16(packet, 2));
    if total_len < header_len {
        return Err(EspError::Malformed {
            field: "IPv4 total length",
            offset: 2,
            reason: "smaller than the header",
        });
    }
    if be16(packet, 6) & 0x3fff != 0 {
        return Err(EspError::Fragment { offset: 6 });
    }
    Ok(IpView {
        family: Family::V4,
        proto_at: 9,
        proto: packet[9],
        header_len,
        total_len,
    })
}

fn parse_v6(packet: &[u8]) -> Result<IpView, EspError> {
    need(packet, "IPv6 header", 0, 40)?;
    let total_len = 40 + usize::from(be16(packet, 4));
    let mut proto_at = 6;
    let mut at = 40;
    loop {
        let next = packet[proto_at];
        match next {
            proto::HOPOPT | proto::ROUTING | proto::DSTOPTS => {
                let within = &packet[..total_len.min(packet.len())];
                need(within, "IPv6 extension header", at, 8)?;
                let len = (usize::from(packet[at + 1]) + 1) * 8;
                need(within, "IPv6 extension header", at, len)?;
                proto_at = at;
                at += len;
            }
            proto::FRAGMENT => return Err(EspError::Fragment { offset: at }),
            _ => {
                return Ok(IpView {
                    family: Family::V6,
                    proto_at,
                    proto: next,
                    header_len: at,
                    total_len,
                })
            }
        }
    }
}

/// Sets the length field of the IP header at the start of `packet` for a packet of `total_len`
/// bytes, and fixes the IPv4 header checksum.
pub fn set_total_len(packet: &mut [u8], family: Family, total_len: usize) {
    match family {
        Family::V4 => {
            packet[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
            fix_ipv4_checksum(packet);
        }
        Family::V6 => {
            packet[4..6].copy_from_slice(&((total_len - 40) as u16).to_be_bytes());
        }
    }
}

/// Recomputes the IPv4 header checksum in place.
pub fn fix_ipv4_checksum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[10] = 0;
    packet[11] = 0;
    let sum = ones_complement_sum(&packet[..header_len], 0);
    packet[10..12].copy_from_slice(&(!sum).to_be_bytes());
}

/// The folded 16-bit ones' complement sum of `data` (as big-endian 16-bit words, an odd last
/// byte padded with zero), added to `initial`.
///
/// The data is summed four bytes at a time in the machine's byte order and the folded sum
/// swapped once: the ones' complement sum does not depend on byte order or on how the words are
/// grouped before folding (RFC 1071, section 2). Word by word in network order it was the
/// largest single cost of turning a 1400-byte datagram around.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut words = data.chunks_exact(4);
    // Each word is below 2^32: a u64 holds the sum of far more than any packet's words.
    let mut native: u64 = (&mut words)
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let mut last = [0u8; 4];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    native += u64::from(u32::from_ne_bytes(last));
    // In network order: swapped on a little-endian machine, as it is on a big-endian one.
    let data_sum = u16::from_be(fold(native));
    fold(u64::from(data_sum) + u64::from(initial))
}

/// Folds a sum of 16-bit words to 16 bits with end-around carries.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Source and destination addresses of the IP header at the start of `packet` (already parsed).
#[inline(always)]
pub fn addresses(packet: &[u8], family: Family) -> (IpAddr, IpAddr) {
    match family {
        Family::V4 => {
            let mut s = [0u8; 4];
            let mut d = [0u8; 4];
            s.copy_from_slice(&packet[12..16]);
            d.copy_from_slice(&packet[16..20]);
            (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into())
        }
        Family::V6 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&packet[8..24]);
            d.copy_from_slice(&packet[24..40]);
            (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into())
        }
    }
}

/// Writes the IPv6 UDP checksum of the UDP datagram at `udp_at`. The pseudo-header takes the
/// source from the IPv6 header and the destination from `packet[dst_at..dst_at + 16]`: the final
/// destination found by [`pseudo_header_destination_at`].
pub fn fix_udp6_checksum(packet: &mut [u8], udp_at: usize, dst_at: usize) {
    let udp_len = packet.len() - udp_at;
    packet[udp_at + 6] = 0;
    packet[udp_at + 7] = 0;
    let source = ones_complement_sum(&packet[8..24], 0);
    let destination = ones_complement_sum(&packet[dst_at..dst_at + 16], u32::from(source));
    let mut pseudo = u32::from(destination);
    pseudo += (udp_len as u32 >> 16) + (udp_len as u32 & 0xffff) + u32::from(proto::UDP);
    let sum = !ones_complement_sum(&packet[udp_at..], pseudo);
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
}

/// Offset of the destination address an upper-layer checksum's pseudo-header uses for the IPv6
/// packet whose headers (fixed and extension) are `packet[..header_len]`, as [`parse`] walked
/// them. RFC 8200 section 8.1: with a Routing header that still has segments left, the originating
/// node uses the final destination, found in the Routing header; otherwise the Destination field.
pub fn pseudo_header_destination_at(packet: &[u8], header_len: usize) -> Result<usize, EspError> {
    const DESTINATION_FIELD: usize = 24;
    let mut next = packet.get(6).copied();
    let mut at = 40;
    while at < header_len {
        need(packet, "IPv6 extension header", at, 8)?;
        if next == Some(proto::ROUTING) && packet[at + 3] != 0 {
            return final_hop_at(packet, at);
        }
        next = Some(packet[at]);
        at += (usize::from(packet[at + 1]) + 1) * 8;
    }
    Ok(DESTINATION_FIELD)
}

/// Where the final destination is in the Routing header at `at` (segments left > 0).
fn final_hop_at(packet: &[u8], at: usize) -> Result<usize, EspError> {
    let addresses = usize::from(packet[at + 1]) / 2;
    let unusable = |reason| EspError::Malformed {
        field: "IPv6 routing header",
        offset: at,
        reason,
    };
    if addresses == 0 {
        return Err(unusable("segments left but no address"));
    }
    let first = at + 8;
    let final_at = match packet[at + 2] {
        // Type 0 (RFC 2460) and type 2 (RFC 6275): the last address is the final destination.
        0 | 2 => first + (addresses - 1) * 16,
        // Segment Routing (RFC 8754 section 2): Segment List[0] is the last segment.
        4 => first,
        _ => return Err(unusable("routing type whose final destination is unknown")),
    };
    need(packet, "IPv6 routing header", final_at, 16)?;
    Ok(final_at)
}
