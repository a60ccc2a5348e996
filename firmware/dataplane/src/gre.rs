//! User-space GRE (RFC 2784) over the XCF network: how the distributor forwards a packet it
//! filtered to a target, and how the target recognises one.
//!
//! The kernel here has no GRE, so both ends do it themselves. The distributor wraps the received
//! IP packet (outer IP + ESP, untouched) in an outer IPv4 header from its XCF address to the
//! target's, protocol 47, and a 4-byte GRE header whose protocol type names the payload family
//! (0x0800 IPv4, 0x86DD IPv6). Parsing is checked: every failure is an error naming the field and
//! its offset, never a panic, whatever the bytes.

use crate::wire::{Mac, ETHERNET_LEN, ETHERTYPE_IPV4};
use dvipsec_esp::ip::{self, Family};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;
/// GRE protocol type of an IPv4 payload (an Ethernet type).
pub const PROTO_IPV4: u16 = 0x0800;
/// GRE protocol type of an IPv6 payload.
pub const PROTO_IPV6: u16 = 0x86dd;
/// Bytes of a GRE header without the optional checksum.
pub const GRE_HEADER_LEN: usize = 4;
/// Bytes of the outer IPv4 header the distributor writes.
pub const OUTER_IPV4_LEN: usize = 20;
/// Headroom a forward needs in front of the packet: outer IPv4 and GRE.
pub const ENCAP_OVERHEAD: usize = OUTER_IPV4_LEN + GRE_HEADER_LEN;

const CHECKSUM_PRESENT: u16 = 0x8000;
/// Bits 1-12 (reserved0) and 13-15 (version) of the first GRE word.
const RESERVED_AND_VERSION: u16 = 0x7fff;
const DEFAULT_TTL: u8 = 64;

/// Why a GRE packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GreError {
    /// The outer IP header is bad (truncated, a fragment, inconsistent lengths).
    #[error("outer IP header: {0}")]
    OuterIp(#[from] dvipsec_esp::EspError),
    /// The outer IP protocol is not GRE.
    #[error("outer IP protocol {0} is not GRE (47)")]
    NotGre(u8),
    /// The packet ends inside the GRE header.
    #[error("truncated GRE header at offset {offset}: need {needed} bytes, {available} left")]
    Truncated {
        /// Offset of the GRE header.
        offset: usize,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// Reserved bits or the version are not zero (RFC 2784 section 2.3 and 2.3.1).
    #[error("GRE flags word {word:#06x} at offset {offset}: reserved bits or version set")]
    ReservedBits {
        /// The first 16 bits of the header.
        word: u16,
        /// Offset of the GRE header.
        offset: usize,
    },
    /// The GRE checksum does not verify.
    #[error("GRE checksum mismatch at offset {offset}")]
    BadChecksum {
        /// Offset of the checksum field.
        offset: usize,
    },
    /// The protocol type is neither IPv4 nor IPv6.
    #[error("GRE protocol type {protocol:#06x} at offset {offset} is not IPv4 or IPv6")]
    UnsupportedProtocol {
        /// The protocol type.
        protocol: u16,
        /// Offset of the field.
        offset: usize,
    },
    /// The payload's IP version disagrees with the protocol type.
    #[error("GRE payload at offset {offset} is not the {expected} packet its protocol type says")]
    PayloadMismatch {
        /// "IPv4" or "IPv6".
        expected: &'static str,
        /// Offset of the payload.
        offset: usize,
    },
    /// The inner IP packet is bad (truncated, a fragment, inconsistent lengths).
    #[error("inner IP packet at offset {offset}: {source}")]
    InnerIp {
        /// Offset of the inner packet.
        offset: usize,
        /// What is wrong with it.
        #[source]
        source: dvipsec_esp::EspError,
    },
    /// No room in the buffer for the outer headers.
    #[error("need {needed} bytes of headroom for GRE, have {available}")]
    NoHeadroom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The wrapped packet would not fit in an IPv4 packet.
    #[error("a {0}-byte payload does not fit in one outer IPv4 packet")]
    TooLarge(usize),
}

/// A checked GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreHeader {
    /// Protocol type of the payload.
    pub protocol: u16,
    /// Length of the header (4, or 8 with the checksum).
    pub len: usize,
}

/// Parses the GRE header at the start of `gre` (which runs to the end of the outer packet);
/// `offset` is where it sits in the packet, for error messages.
pub fn parse_header(gre: &[u8], offset: usize) -> Result<GreHeader, GreError> {
    let truncated = |needed| GreError::Truncated {
        offset,
        needed,
        available: gre.len(),
    };
    let first = gre.get(..GRE_HEADER_LEN).ok_or(truncated(GRE_HEADER_LEN))?;
    let word = u16::from_be_bytes([first[0], first[1]]);
    if word & RESERVED_AND_VERSION != 0 {
        return Err(GreError::ReservedBits { word, offset });
    }
    let protocol = u16::from_be_bytes([first[2], first[3]]);
    let len = if word & CHECKSUM_PRESENT != 0 {
        let with_checksum = gre.get(..8).ok_or(truncated(8))?;
        if with_checksum[6..8] != [0, 0] {
            return Err(GreError::ReservedBits { word, offset });
        }
        if ip::ones_complement_sum(gre, 0) != 0xffff {
            return Err(GreError::BadChecksum { offset: offset + 4 });
        }
        8
    } else {
        GRE_HEADER_LEN
    };
    Ok(GreHeader { protocol, len })
}

/// Writes a 4-byte GRE header (no checksum) for a payload of `family`.
pub fn write_header(out: &mut [u8; GRE_HEADER_LEN], family: Family) {
    let protocol = match family {
        Family::V4 => PROTO_IPV4,
        Family::V6 => PROTO_IPV6,
    };
    out[..2].copy_from_slice(&[0, 0]);
    out[2..].copy_from_slice(&protocol.to_be_bytes());
}

/// A decapsulated GRE packet: who sent it and where the inner IP packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// Outer source address (the sender's XCF address).
    pub outer_src: IpAddr,
    /// Outer destination address.
    pub outer_dst: IpAddr,
    /// Family of the inner packet.
    pub family: Family,
    /// Where the inner IP packet is within the outer one.
    pub payload: Range<usize>,
}

/// Parses an IP packet carrying GRE and finds the inner IP packet.
pub fn decapsulate(packet: &[u8]) -> Result<Decapsulated, GreError> {
    let outer = ip::parse(packet)?;
    if outer.proto != IPPROTO_GRE {
        return Err(GreError::NotGre(outer.proto));
    }
    let packet = &packet[..outer.total_len];
    let at = outer.header_len;
    let header = parse_header(&packet[at..], at)?;
    let payload_at = at + header.len;
    let (family, expected, version) = match header.protocol {
        PROTO_IPV4 => (Family::V4, "IPv4", 4),
        PROTO_IPV6 => (Family::V6, "IPv6", 6),
        protocol => {
            return Err(GreError::UnsupportedProtocol {
                protocol,
                offset: at + 2,
            })
        }
    };
    if packet.get(payload_at).map(|b| b >> 4) != Some(version) {
        return Err(GreError::PayloadMismatch {
            expected,
            offset: payload_at,
        });
    }
    let inner = ip::parse(&packet[payload_at..]).map_err(|source| GreError::InnerIp {
        offset: payload_at,
        source,
    })?;
    let (outer_src, outer_dst) = ip::addresses(packet, outer.family);
    Ok(Decapsulated {
        outer_src,
        outer_dst,
        family,
        payload: payload_at..payload_at + inner.total_len,
    })
}

/// The outer IPv4 total length of a GRE packet carrying `payload_len` bytes.
fn outer_total_len(payload_len: usize) -> Result<u16, GreError> {
    payload_len
        .checked_add(ENCAP_OVERHEAD)
        .and_then(|total| u16::try_from(total).ok())
        .ok_or(GreError::TooLarge(payload_len))
}

/// Writes outer IPv4 + GRE headers into `head` (exactly [`ENCAP_OVERHEAD`] bytes, right in front
/// of the payload) for a `payload_len`-byte IP packet of `family` from `src` to `dst`.
pub fn write_encap(
    head: &mut [u8; ENCAP_OVERHEAD],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    family: Family,
    payload_len: usize,
) -> Result<(), GreError> {
    let total16 = outer_total_len(payload_len)?;
    let (ipv4, gre) = head.split_at_mut(OUTER_IPV4_LEN);
    ipv4.fill(0);
    ipv4[0] = 0x45;
    ipv4[2..4].copy_from_slice(&total16.to_be_bytes());
    ipv4[6] = 0x40; // don't fragment
    ipv4[8] = DEFAULT_TTL;
    ipv4[9] = IPPROTO_GRE;
    ipv4[12..16].copy_from_slice(&src.octets());
    ipv4[16..20].copy_from_slice(&dst.octets());
    ip::fix_ipv4_checksum(ipv4);
    let mut gre_header = [0u8; GRE_HEADER_LEN];
    write_header(&mut gre_header, family);
    gre.copy_from_slice(&gre_header);
    Ok(())
}

/// Bytes a forwarded frame gets in front of the peer's packet: Ethernet, outer IPv4 and GRE.
pub const FORWARD_OVERHEAD: usize = ETHERNET_LEN + ENCAP_OVERHEAD;

/// The headers a distributor puts in front of every packet it forwards to one target
/// (Ethernet, outer IPv4, GRE), made once per target: per packet only the total length, the
/// header checksum and the GRE protocol type change, so [`EncapTemplate::write`] copies the
/// template and patches those, with the checksum updated from the template's sum (RFC 1624)
/// instead of summed again over the header it just wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapTemplate {
    /// The target's XCF address (the outer destination).
    pub dst: Ipv4Addr,
    head: [u8; FORWARD_OVERHEAD],
    /// Ones' complement sum of the outer IPv4 header with zero total length and checksum.
    partial_sum: u32,
}

impl EncapTemplate {
    /// The headers from `src` (MAC `src_mac`) to `dst` (MAC `dst_mac`) on the XCF network.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, src_mac: Mac, dst_mac: Mac) -> Self {
        let mut head = [0u8; FORWARD_OVERHEAD];
        head[..6].copy_from_slice(&dst_mac);
        head[6..12].copy_from_slice(&src_mac);
        head[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ipv4 = &mut head[ETHERNET_LEN..ETHERNET_LEN + OUTER_IPV4_LEN];
        ipv4[0] = 0x45;
        ipv4[6] = 0x40; // don't fragment
        ipv4[8] = DEFAULT_TTL;
        ipv4[9] = IPPROTO_GRE;
        ipv4[12..16].copy_from_slice(&src.octets());
        ipv4[16..20].copy_from_slice(&dst.octets());
        let partial_sum = u32::from(ip::ones_complement_sum(ipv4, 0));
        let mut gre_header = [0u8; GRE_HEADER_LEN];
        write_header(&mut gre_header, Family::V4);
        head[ETHERNET_LEN + OUTER_IPV4_LEN..].copy_from_slice(&gre_header);
        EncapTemplate {
            dst,
            head,
            partial_sum,
        }
    }

    /// Writes the headers into `head` (right in front of the payload) for a `payload_len`-byte
    /// IP packet of `family`: the same bytes as [`wire::write_ethernet`] and [`write_encap`].
    ///
    /// [`wire::write_ethernet`]: crate::wire::write_ethernet
    pub fn write(
        &self,
        head: &mut [u8; FORWARD_OVERHEAD],
        family: Family,
        payload_len: usize,
    ) -> Result<(), GreError> {
        let total16 = outer_total_len(payload_len)?;
        let mut sum = self.partial_sum + u32::from(total16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        // Built on the stack and stored with one copy: the frame's headroom is usually not in
        // cache, and reading it back (as summing the header there did) waits for the line.
        let mut out = self.head;
        let ipv4 = ETHERNET_LEN;
        out[ipv4 + 2..ipv4 + 4].copy_from_slice(&total16.to_be_bytes());
        out[ipv4 + 10..ipv4 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        if family == Family::V6 {
            out[FORWARD_OVERHEAD - 2..].copy_from_slice(&PROTO_IPV6.to_be_bytes());
        }
        *head = out;
        Ok(())
    }
}

/// The family of the IP packet `payload` (by its version nibble).
pub fn family_of(payload: &[u8]) -> Option<Family> {
    match payload.first().map(|b| b >> 4) {
        Some(4) => Some(Family::V4),
        Some(6) => Some(Family::V6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_v4() -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[192, 0, 2, 1]);
        p[16..20].copy_from_slice(&[192, 0, 2, 2]);
        ip::fix_ipv4_checksum(&mut p);
        p
    }

    fn wrapped(inner: &[u8]) -> Vec<u8> {
        let mut head = [0u8; ENCAP_OVERHEAD];
        write_encap(
            &mut head,
            Ipv4Addr::new(10, 9, 0, 1),
            Ipv4Addr::new(10, 9, 0, 2),
            Family::V4,
            inner.len(),
        )
        .unwrap();
        [&head[..], inner].concat()
    }

    #[test]
    fn encap_then_decap_finds_the_inner_packet() {
        let inner = inner_v4();
        let packet = wrapped(&inner);
        let d = decapsulate(&packet).unwrap();
        assert_eq!(&packet[d.payload.clone()], &inner[..]);
        assert_eq!(d.outer_src, "10.9.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(d.outer_dst, "10.9.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(d.family, Family::V4);
        // The outer IPv4 header checksum is right (sums to all ones).
        assert_eq!(ip::ones_complement_sum(&packet[..20], 0), 0xffff);
        assert_eq!(&packet[20..24], &[0, 0, 0x08, 0x00]);
    }

    #[test]
    fn checksum_variant_is_verified() {
        let inner = inner_v4();
        let mut gre = vec![0x80, 0, 0x08, 0x00, 0, 0, 0, 0];
        gre.extend_from_slice(&inner);
        let sum = !ip::ones_complement_sum(&gre, 0);
        gre[4..6].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            parse_header(&gre, 20).unwrap(),
            GreHeader {
                protocol: PROTO_IPV4,
                len: 8
            }
        );
        gre[30] ^= 1;
        assert_eq!(
            parse_header(&gre, 20),
            Err(GreError::BadChecksum { offset: 24 })
        );
    }

    #[test]
    fn bad_headers_are_refused_with_their_offset() {
        let inner = inner_v4();
        let mut packet = wrapped(&inner);
        packet[21] = 0x01; // version 1 (PPTP-style)
        assert!(matches!(
            decapsulate(&packet),
            Err(GreError::ReservedBits { offset: 20, .. })
        ));
        let mut packet = wrapped(&inner);
        packet[22..24].copy_from_slice(&0x6558u16.to_be_bytes());
        assert_eq!(
            decapsulate(&packet),
            Err(GreError::UnsupportedProtocol {
                protocol: 0x6558,
                offset: 22
            })
        );
        let mut packet = wrapped(&inner);
        packet[22..24].copy_from_slice(&PROTO_IPV6.to_be_bytes());
        assert_eq!(
            decapsulate(&packet),
            Err(GreError::PayloadMismatch {
                expected: "IPv6",
                offset: 24
            })
        );
        let mut packet = wrapped(&inner);
        packet[9] = 17;
        assert_eq!(decapsulate(&packet), Err(GreError::NotGre(17)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let packet = wrapped(&inner_v4());
        for len in 0..packet.len() {
            let mut cut = packet[..len].to_vec();
            if len >= 4 {
                // Make the IP length agree so the GRE layer itself sees the short packet.
                cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            assert!(decapsulate(&cut).is_err(), "length {len}");
        }
    }

    /// What the forward path wrote before templates: Ethernet, then `write_encap`.
    fn headers_written_field_by_field(
        template: (Ipv4Addr, Ipv4Addr, Mac, Mac),
        family: Family,
        len: usize,
    ) -> [u8; FORWARD_OVERHEAD] {
        let (src, dst, src_mac, dst_mac) = template;
        let mut out = [0u8; FORWARD_OVERHEAD];
        let (ethernet, encap) = out.split_at_mut(ETHERNET_LEN);
        crate::wire::write_ethernet(ethernet.try_into().unwrap(), dst_mac, src_mac, Family::V4);
        write_encap(encap.try_into().unwrap(), src, dst, family, len).unwrap();
        out
    }

    #[test]
    fn template_writes_the_same_headers_as_building_them() {
        let ends = [
            (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 10)),
            (
                Ipv4Addr::new(255, 255, 255, 254),
                Ipv4Addr::new(255, 255, 0, 255),
            ),
            (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(0, 0, 0, 1)),
        ];
        let (src_mac, dst_mac) = ([2, 0, 0, 0, 0, 0x11], [2, 0, 0, 0, 0, 0x20]);
        for (src, dst) in ends {
            let template = EncapTemplate::new(src, dst, src_mac, dst_mac);
            assert_eq!(template.dst, dst);
            // Lengths whose sums carry into the top bits as well as ordinary ones.
            let lengths = [0, 1, 20, 1420, 1500, 40_000, 65_511];
            for (family, len) in [Family::V4, Family::V6]
                .into_iter()
                .flat_map(|f| lengths.map(|l| (f, l)))
            {
                let mut head = [0xa5u8; FORWARD_OVERHEAD];
                template.write(&mut head, family, len).unwrap();
                let expected =
                    headers_written_field_by_field((src, dst, src_mac, dst_mac), family, len);
                assert_eq!(head, expected, "{src} -> {dst}, {family:?}, {len} bytes");
                let ipv4 = &head[ETHERNET_LEN..ETHERNET_LEN + OUTER_IPV4_LEN];
                assert_eq!(ip::ones_complement_sum(ipv4, 0), 0xffff);
            }
        }
    }

    #[test]
    fn template_refuses_what_does_not_fit_in_ipv4() {
        let any = Ipv4Addr::LOCALHOST;
        let template = EncapTemplate::new(any, any, [0; 6], [0; 6]);
        let mut head = [0u8; FORWARD_OVERHEAD];
        assert_eq!(
            template.write(&mut head, Family::V4, 65_512),
            Err(GreError::TooLarge(65_512))
        );
        assert_eq!(head, [0u8; FORWARD_OVERHEAD], "nothing written on refusal");
    }

    #[test]
    fn oversize_payload_is_refused() {
        let mut head = [0u8; ENCAP_OVERHEAD];
        let src = Ipv4Addr::LOCALHOST;
        assert_eq!(
            write_encap(&mut head, src, src, Family::V4, 65_535),
            Err(GreError::TooLarge(65_535))
        );
    }
}
