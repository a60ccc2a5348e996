//! Traffic selector payloads (RFC 7296 section 3.13) and their intersection (narrowing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{read_u16, take};
use crate::ParseError;

const TS_IPV4_ADDR_RANGE: u8 = 7;
const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One traffic selector: an address range, a port range and an IP protocol (0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}

impl TrafficSelector {
    /// All traffic to and from one address.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: addr,
            end_addr: addr,
        }
    }

    /// All traffic of a prefix, e.g. `10.0.0.0/8`.
    pub fn prefix(addr: IpAddr, prefix_len: u8) -> Self {
        let (start_addr, end_addr) = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len.min(32)))
                    .unwrap_or(0);
                (
                    IpAddr::V4(Ipv4Addr::from(bits & mask)),
                    IpAddr::V4(Ipv4Addr::from(bits | !mask)),
                )
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len.min(128)))
                    .unwrap_or(0);
                (
                    IpAddr::V6(Ipv6Addr::from(bits & mask)),
                    IpAddr::V6(Ipv6Addr::from(bits | !mask)),
                )
            }
        };
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr,
            end_addr,
        }
    }

    /// The selector covering what both `self` and `other` cover, if anything.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let ip_protocol = match (self.ip_protocol, other.ip_protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        let start_addr = max_addr(self.start_addr, other.start_addr)?;
        let end_addr = min_addr(self.end_addr, other.end_addr)?;
        if start_port > end_port || start_addr > end_addr {
            return None;
        }
        Some(Self {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        })
    }

    /// True when `self` covers all of `other`.
    pub fn contains(&self, other: &Self) -> bool {
        self.intersect(other) == Some(*other)
    }
}

fn max_addr(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    same_family(a, b).then(|| a.max(b))
}

fn min_addr(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    same_family(a, b).then(|| a.min(b))
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Intersects every offered selector with every allowed one (narrowing, RFC 7296 2.9).
pub fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut result: Vec<TrafficSelector> = Vec::new();
    for offer in offered {
        for allow in allowed {
            if let Some(common) = offer.intersect(allow) {
                if !result.contains(&common) {
                    result.push(common);
                }
            }
        }
    }
    result
}

/// A TSi or TSr payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsPayload {
    pub selectors: Vec<TrafficSelector>,
}

impl TsPayload {
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let fixed = take(body, 0, 4, "TS header")?;
        let count = fixed[0] as usize;
        let mut at = 4;
        let mut selectors = Vec::with_capacity(count);
        for _ in 0..count {
            let ts_header = take(body, at, 4, "traffic selector header")?;
            let ts_type = ts_header[0];
            let length = read_u16(body, at + 2, "traffic selector length")? as usize;
            let addr_len = match ts_type {
                TS_IPV4_ADDR_RANGE => 4,
                TS_IPV6_ADDR_RANGE => 16,
                other => {
                    return Err(ParseError::InvalidValue {
                        what: "traffic selector type",
                        value: other.into(),
                        offset: at,
                    })
                }
            };
            if length != 8 + 2 * addr_len {
                return Err(ParseError::BadLength {
                    what: "traffic selector length",
                    offset: at + 2,
                });
            }
            let selector = take(body, at, length, "traffic selector")?;
            selectors.push(TrafficSelector {
                ip_protocol: selector[1],
                start_port: u16::from_be_bytes([selector[4], selector[5]]),
                end_port: u16::from_be_bytes([selector[6], selector[7]]),
                start_addr: addr_from(&selector[8..8 + addr_len]),
                end_addr: addr_from(&selector[8 + addr_len..]),
            });
            at += length;
        }
        if at != body.len() {
            return Err(ParseError::BadLength {
                what: "TS payload (selector count vs length)",
                offset: at,
            });
        }
        Ok(Self { selectors })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.selectors.len() as u8, 0, 0, 0]);
        for ts in &self.selectors {
            let (ts_type, length) = match ts.start_addr {
                IpAddr::V4(_) => (TS_IPV4_ADDR_RANGE, 16u16),
                IpAddr::V6(_) => (TS_IPV6_ADDR_RANGE, 40u16),
            };
            out.extend_from_slice(&[ts_type, ts.ip_protocol]);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(&ts.start_port.to_be_bytes());
            out.extend_from_slice(&ts.end_port.to_be_bytes());
            push_addr(ts.start_addr, out);
            push_addr(ts.end_addr, out);
        }
    }
}

fn addr_from(bytes: &[u8]) -> IpAddr {
    match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        Err(_) => {
            let mut v6 = [0u8; 16];
            v6.copy_from_slice(&bytes[..16]);
            IpAddr::V6(Ipv6Addr::from(v6))
        }
    }
}

fn push_addr(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn selector_bytes_match_rfc_layout_and_round_trip() {
        let payload = TsPayload {
            selectors: vec![TrafficSelector::host(v4("10.1.0.1"))],
        };
        let mut out = Vec::new();
        payload.emit(&mut out);
        assert_eq!(
            out,
            [1, 0, 0, 0, 7, 0, 0, 16, 0, 0, 0xff, 0xff, 10, 1, 0, 1, 10, 1, 0, 1]
        );
        assert_eq!(TsPayload::parse(&out).unwrap(), payload);
        let v6 = TsPayload {
            selectors: vec![TrafficSelector::prefix("2001:db8::".parse().unwrap(), 32)],
        };
        let mut out6 = Vec::new();
        v6.emit(&mut out6);
        assert_eq!(TsPayload::parse(&out6).unwrap(), v6);
        for cut in 0..out.len() {
            assert!(TsPayload::parse(&out[..cut]).is_err());
        }
    }

    #[test]
    fn narrowing_takes_the_intersection() {
        let wide = TrafficSelector::prefix(v4("10.0.0.0"), 8);
        let host = TrafficSelector::host(v4("10.2.3.4"));
        let elsewhere = TrafficSelector::host(v4("192.0.2.1"));
        assert_eq!(narrow(&[wide], &[host]), vec![host]);
        assert_eq!(narrow(&[host], &[wide]), vec![host]);
        assert!(narrow(&[elsewhere], &[wide]).is_empty());
        let udp = TrafficSelector {
            ip_protocol: 17,
            start_port: 500,
            end_port: 500,
            ..wide
        };
        let tcp = TrafficSelector {
            ip_protocol: 6,
            ..wide
        };
        assert_eq!(wide.intersect(&udp), Some(udp));
        assert_eq!(udp.intersect(&tcp), None);
        assert!(wide.contains(&host) && !host.contains(&wide));
        let v6 = TrafficSelector::host("2001:db8::1".parse().unwrap());
        assert_eq!(wide.intersect(&v6), None);
    }

    #[test]
    fn prefix_bounds() {
        let ts = TrafficSelector::prefix(v4("10.1.2.3"), 24);
        assert_eq!(ts.start_addr, v4("10.1.2.0"));
        assert_eq!(ts.end_addr, v4("10.1.2.255"));
        let all = TrafficSelector::prefix(v4("10.1.2.3"), 0);
        assert_eq!(all.end_addr, v4("255.255.255.255"));
    }
}
