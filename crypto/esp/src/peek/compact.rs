//! The compact result of a burst peek: only what the distributor routes by (inner 5-tuple, TCP
//! flags) and the header's low 32 sequence bits for its replay pre-check. The outer header and the
//! SPI are left out: the distributor already has them, and copying them per packet costs time.

use super::PeekInfo;
use crate::ip::Family;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Inner source and destination addresses as raw bytes, tagged by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowAddrs {
    /// IPv4 source and destination.
    V4 {
        /// Source address bytes.
        src: [u8; 4],
        /// Destination address bytes.
        dst: [u8; 4],
    },
    /// IPv6 source and destination.
    V6 {
        /// Source address bytes.
        src: [u8; 16],
        /// Destination address bytes.
        dst: [u8; 16],
    },
}

impl FlowAddrs {
    /// The addresses of the plain IP header at the start of `header` (at least 20 or 40 bytes).
    #[inline(always)]
    pub(super) fn read(header: &[u8], family: Family) -> Self {
        match family {
            Family::V4 => FlowAddrs::V4 {
                src: fixed(header, 12),
                dst: fixed(header, 16),
            },
            Family::V6 => FlowAddrs::V6 {
                src: fixed(header, 8),
                dst: fixed(header, 24),
            },
        }
    }

    /// From a pair of `IpAddr`s; a mixed pair (never produced by peek) is kept as IPv6, with the
    /// IPv4 one mapped.
    fn from_ip(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => FlowAddrs::V4 {
                src: src.octets(),
                dst: dst.octets(),
            },
            (src, dst) => FlowAddrs::V6 {
                src: as_v6(src).octets(),
                dst: as_v6(dst).octets(),
            },
        }
    }
}

fn as_v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// `N` bytes of `header` from `at`; the caller has checked the header's length.
#[inline(always)]
fn fixed<const N: usize>(header: &[u8], at: usize) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&header[at..at + N]);
    bytes
}

/// What a burst peek reports per packet (see [`crate::peek_burst_flows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekFlow {
    /// Inner source and destination (the outer ones in transport mode).
    pub addrs: FlowAddrs,
    /// Inner transport protocol.
    pub protocol: u8,
    /// Source port (0 unless TCP or UDP).
    pub src_port: u16,
    /// Destination port (0 unless TCP or UDP).
    pub dst_port: u16,
    /// TCP flags byte (byte 13 of the TCP header), if TCP.
    pub tcp_flags: Option<u8>,
    /// The sequence number field of the ESP (or AH) header: the low 32 bits only. With ESN the
    /// caller infers the high half (its replay pre-check does, from its window), so the burst does
    /// not read the SA's replay state.
    pub seq_lo: u32,
}

impl PeekFlow {
    /// Inner source address.
    pub fn src(&self) -> IpAddr {
        match self.addrs {
            FlowAddrs::V4 { src, .. } => Ipv4Addr::from(src).into(),
            FlowAddrs::V6 { src, .. } => Ipv6Addr::from(src).into(),
        }
    }

    /// Inner destination address.
    pub fn dst(&self) -> IpAddr {
        match self.addrs {
            FlowAddrs::V4 { dst, .. } => Ipv4Addr::from(dst).into(),
            FlowAddrs::V6 { dst, .. } => Ipv6Addr::from(dst).into(),
        }
    }

    /// A connection request: TCP with SYN set and ACK clear (as [`PeekInfo::syn`]).
    pub fn syn(&self) -> bool {
        self.tcp_flags
            .is_some_and(|f| f & super::TCP_SYN != 0 && f & super::TCP_ACK == 0)
    }

    /// The compact form of a full peek result.
    pub(super) fn from_info(info: &PeekInfo) -> Self {
        PeekFlow {
            addrs: FlowAddrs::from_ip(info.src, info.dst),
            protocol: info.protocol,
            src_port: info.src_port,
            dst_port: info.dst_port,
            tcp_flags: info.tcp_flags,
            // The low half of the full number is the header's field.
            seq_lo: info.seq as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_at_their_header_offsets() {
        let mut v4 = [0u8; 20];
        v4[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let flow = FlowAddrs::read(&v4, Family::V4);
        assert_eq!(
            flow,
            FlowAddrs::V4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2]
            }
        );
        let mut v6 = [0u8; 40];
        v6[8] = 0x20;
        v6[39] = 7;
        let FlowAddrs::V6 { src, dst } = FlowAddrs::read(&v6, Family::V6) else {
            panic!("not v6");
        };
        assert_eq!((src[0], src[15], dst[15]), (0x20, 0, 7));
    }

    #[test]
    fn from_info_keeps_every_reported_field() {
        let info = PeekInfo {
            spi: 0x1234,
            seq: 0x0000_0003_8000_0001,
            outer_src: "192.0.2.1".parse().unwrap(),
            outer_dst: "192.0.2.2".parse().unwrap(),
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: 443,
            tcp_flags: Some(0x02),
            syn: true,
        };
        let flow = PeekFlow::from_info(&info);
        assert_eq!(flow.src(), info.src);
        assert_eq!(flow.dst(), info.dst);
        assert_eq!(flow.seq_lo, 0x8000_0001);
        assert_eq!(
            (flow.protocol, flow.src_port, flow.dst_port, flow.tcp_flags),
            (6, 40000, 443, Some(0x02))
        );
        assert!(flow.syn());
    }
}
