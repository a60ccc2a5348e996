//! Address prefixes of traffic selectors and filter rules: the one type the cluster link carries
//! in SA_INSTALL and the data plane matches packets against.

use std::net::{IpAddr, Ipv4Addr};

/// An address prefix: `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl IpPrefix {
    /// A prefix covering exactly `addr`.
    pub fn host(addr: IpAddr) -> IpPrefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    /// Every IPv4 address.
    pub fn any_v4() -> IpPrefix {
        IpPrefix {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            len: 0,
        }
    }

    /// Whether `addr` falls inside the prefix (never across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_match(
                u128::from(u32::from(net)),
                u128::from(u32::from(a)),
                32,
                self.len,
            ),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_match(u128::from(net), u128::from(a), 128, self.len)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, addr: u128, bits: u8, len: u8) -> bool {
    let len = len.min(bits);
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str, len: u8) -> IpPrefix {
        IpPrefix {
            addr: text.parse().unwrap(),
            len,
        }
    }

    #[test]
    fn contains_matches_the_leading_bits_only() {
        let net = prefix("192.0.2.0", 24);
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        let v6 = prefix("2001:db8::", 32);
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn hosts_any_and_families() {
        let host = IpPrefix::host("198.51.100.10".parse().unwrap());
        assert_eq!(host.len, 32);
        assert!(host.contains("198.51.100.10".parse().unwrap()));
        assert!(!host.contains("198.51.100.11".parse().unwrap()));
        assert!(IpPrefix::any_v4().contains("203.0.113.9".parse().unwrap()));
        assert!(!IpPrefix::any_v4().contains("2001:db8::1".parse().unwrap()));
        assert!(!prefix("::", 0).contains("192.0.2.1".parse().unwrap()));
        assert_eq!(IpPrefix::host("2001:db8::1".parse().unwrap()).len, 128);
    }
}
