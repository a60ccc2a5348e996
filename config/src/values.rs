//! Scalar value types of the schema that have their own textual syntax: address
//! prefixes, port sets, DESTIP lists, protocols, IKE identities and secret sources.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::located::Located;

/// An address prefix such as `198.51.100.0/24` or `2001:db8::/32`. A bare address
/// means the full-length prefix (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    pub fn host(addr: IpAddr) -> Self {
        IpNet {
            addr,
            prefix_len: max_prefix_len(&addr),
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `addr` lies inside this prefix (false across address families).
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(net)), self.prefix_len, 32)
                    == masked(u128::from(u32::from(*a)), self.prefix_len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                masked(u128::from(net), self.prefix_len, 128)
                    == masked(u128::from(*a), self.prefix_len, 128)
            }
            _ => false,
        }
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        let shorter = if self.prefix_len <= other.prefix_len {
            self
        } else {
            other
        };
        let longer = if std::ptr::eq(shorter, self) {
            other
        } else {
            self
        };
        shorter.contains(&longer.addr)
    }
}

fn masked(bits: u128, prefix_len: u8, width: u8) -> u128 {
    if prefix_len == 0 {
        return 0;
    }
    let host_bits = u32::from(width - prefix_len.min(width));
    (bits >> host_bits) << host_bits
}

/// The longest prefix for the address family of `addr` (32 or 128).
pub fn max_prefix_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("expected an IP address or prefix, found `{text}`"))?;
        let max = max_prefix_len(&addr);
        let prefix_len = match len_text {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max)
                .ok_or_else(|| format!("prefix length `{len}` must be 0..={max} for {addr}"))?,
        };
        Ok(IpNet { addr, prefix_len })
    }
}

macro_rules! serde_via_string {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl Visitor<'_> for TextVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$ty, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

serde_via_string!(IpNet, "an IP address or prefix such as 198.51.100.0/24");

/// A set of ports: every port, or an explicit list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortSet {
    #[default]
    All,
    List(Vec<Located<u32>>),
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSet::All => true,
            PortSet::List(ports) => ports.iter().any(|p| p.value == u32::from(port)),
        }
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PortSet::All => serializer.serialize_str("all"),
            PortSet::List(ports) => ports.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ports = deserialize_all_or_list(deserializer, "`all` or a list of port numbers")?;
        Ok(ports.map_or(PortSet::All, PortSet::List))
    }
}

/// Reads the word `all` (any case) as `None`, or a list as `Some`; anything else is an error
/// saying what was `expecting`. PORT sets and DESTIP share this shape.
fn deserialize_all_or_list<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct AllOrListVisitor<T> {
        expecting: &'static str,
        entries: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for AllOrListVisitor<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            if text.eq_ignore_ascii_case("all") {
                Ok(None)
            } else {
                Err(E::custom(format!(
                    "expected {}, found `{text}`",
                    self.expecting
                )))
            }
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = seq.next_element()? {
                entries.push(entry);
            }
            Ok(Some(entries))
        }
    }
    deserializer.deserialize_any(AllOrListVisitor {
        expecting,
        entries: PhantomData,
    })
}

/// The DESTIP of a VIPADISTRIBUTE: every target-capable node, or a list whose
/// entries are node names or XCF addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestIp {
    All,
    List(Vec<Located<String>>),
}

impl Serialize for DestIp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DestIp::All => serializer.serialize_str("ALL"),
            DestIp::List(entries) => entries.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for DestIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = deserialize_all_or_list(
            deserializer,
            "`ALL` or a list of node names and XCF addresses",
        )?;
        Ok(entries.map_or(DestIp::All, DestIp::List))
    }
}

/// The upper-layer protocol of an SPD selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    /// Any other IP protocol by number.
    Number(u8),
}

impl Protocol {
    const NAMED: [(&'static str, Protocol); 6] = [
        ("any", Protocol::Any),
        ("tcp", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("sctp", Protocol::Sctp),
        ("icmp", Protocol::Icmp),
        ("icmpv6", Protocol::Icmpv6),
    ];

    /// Whether selectors of this protocol carry ports.
    pub fn has_ports(&self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::Number(6 | 17 | 132)
        )
    }

    fn name(&self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(_, protocol)| protocol == self)
            .map(|(name, _)| *name)
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self, self.name()) {
            (Protocol::Number(number), _) => serializer.serialize_u8(*number),
            (_, Some(name)) => serializer.serialize_str(name),
            (_, None) => Err(serde::ser::Error::custom("protocol without a name")),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProtocolVisitor;
        impl Visitor<'_> for ProtocolVisitor {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any, tcp, udp, sctp, icmp, icmpv6 or a protocol number 0..=255")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Protocol, E> {
                Protocol::NAMED
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(text))
                    .map(|(_, protocol)| *protocol)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "unknown protocol `{text}`, expected any, tcp, udp, sctp, icmp, icmpv6 or a number 0..=255"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Protocol, E> {
                u8::try_from(number)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {number} is not in 0..=255")))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Protocol, E> {
                u64::try_from(number)
                    .map_err(|_| E::custom(format!("protocol number {number} is not in 0..=255")))
                    .and_then(|n| self.visit_u64(n))
            }
        }
        deserializer.deserialize_any(ProtocolVisitor)
    }
}

/// An IKEv2 identity (RFC 7296 section 3.5). Written as `fqdn:NAME`, `email:USER@DOMAIN`,
/// `ip:ADDRESS` or `keyid:HEX`; without a prefix an address means `ip:`, a text with `@`
/// means `email:` and anything else `fqdn:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IkeIdentity {
    Fqdn(String),
    Email(String),
    Ip(IpAddr),
    KeyId(Vec<u8>),
}

impl fmt::Display for IkeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IkeIdentity::Fqdn(name) => write!(f, "fqdn:{name}"),
            IkeIdentity::Email(address) => write!(f, "email:{address}"),
            IkeIdentity::Ip(addr) => write!(f, "ip:{addr}"),
            IkeIdentity::KeyId(bytes) => write!(f, "keyid:{}", hex::encode(bytes)),
        }
    }
}

impl FromStr for IkeIdentity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("fqdn", name)) => parse_fqdn(name),
            Some(("email", address)) => parse_email(address),
            Some(("ip", addr)) => addr
                .parse()
                .map(IkeIdentity::Ip)
                .map_err(|_| format!("`{addr}` is not an IP address")),
            Some(("keyid", hex_text)) => match hex::decode(hex_text) {
                Ok(bytes) if !bytes.is_empty() => Ok(IkeIdentity::KeyId(bytes)),
                _ => Err(format!("key id `{hex_text}` must be non-empty hex")),
            },
            _ => guess_identity(text),
        }
    }
}

fn guess_identity(text: &str) -> Result<IkeIdentity, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        Ok(IkeIdentity::Ip(addr))
    } else if text.contains('@') {
        parse_email(text)
    } else {
        parse_fqdn(text)
    }
}

fn parse_fqdn(name: &str) -> Result<IkeIdentity, String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if valid {
        Ok(IkeIdentity::Fqdn(name.to_owned()))
    } else {
        Err(format!(
            "`{name}` is not a valid FQDN identity (letters, digits, `.` and `-`)"
        ))
    }
}

fn parse_email(address: &str) -> Result<IkeIdentity, String> {
    match address.split_once('@') {
        Some((user, domain))
            if !user.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.chars().any(char::is_whitespace) =>
        {
            Ok(IkeIdentity::Email(address.to_owned()))
        }
        _ => Err(format!(
            "`{address}` is not a valid email identity (USER@DOMAIN)"
        )),
    }
}

serde_via_string!(
    IkeIdentity,
    "an IKE identity such as fqdn:vpn.example.net or email:ops@example.net"
);

/// Where a secret (a PSK or a key) is read from: `env:NAME` or `file:PATH` (a relative
/// path is relative to the YAML file). The secret itself never appears in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// The start of every secret-source syntax error. Such errors are rendered without a
/// source snippet, because the offending line may hold a secret written inline.
pub(crate) const SECRET_SOURCE_ERROR: &str = "a secret must come from";

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl FromStr for SecretSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("env", name)) if is_env_var_name(name) => Ok(SecretSource::Env(name.to_owned())),
            Some(("file", path)) if !path.is_empty() => Ok(SecretSource::File(PathBuf::from(path))),
            // Never echo the text: it may be a secret pasted in by mistake.
            _ => Err(format!(
                "{SECRET_SOURCE_ERROR} `env:NAME` (NAME of letters, digits and `_`) or `file:PATH`; secrets written inline are not accepted"
            )),
        }
    }
}

fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

serde_via_string!(SecretSource, "a secret source: env:NAME or file:PATH");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain_and_overlap() {
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        assert!(net.contains(&"198.51.100.77".parse().unwrap()));
        assert!(!net.contains(&"198.51.101.1".parse().unwrap()));
        assert!(!net.contains(&"2001:db8::1".parse().unwrap()));
        let inner: IpNet = "198.51.100.128/25".parse().unwrap();
        assert!(net.overlaps(&inner) && inner.overlaps(&net));
        let other: IpNet = "198.51.101.0/24".parse().unwrap();
        assert!(!net.overlaps(&other));
        let everything: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(&"203.0.113.9".parse().unwrap()));
        assert!("2001:db8::/129".parse::<IpNet>().is_err());
        assert_eq!("2001:db8::1".parse::<IpNet>().unwrap().prefix_len, 128);
    }

    #[test]
    fn identities_parse_with_and_without_prefix() {
        assert_eq!(
            "vpn.example.net".parse::<IkeIdentity>().unwrap(),
            IkeIdentity::Fqdn("vpn.example.net".into())
        );
        assert_eq!(
            "ops@example.net".parse::<IkeIdentity>().unwrap(),
            IkeIdentity::Email("ops@example.net".into())
        );
        assert_eq!(
            "192.0.2.1".parse::<IkeIdentity>().unwrap(),
            IkeIdentity::Ip("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            "keyid:0a0b".parse::<IkeIdentity>().unwrap(),
            IkeIdentity::KeyId(vec![10, 11])
        );
        assert!("fqdn:bad name".parse::<IkeIdentity>().is_err());
        assert!("email:@x".parse::<IkeIdentity>().is_err());
        let id = IkeIdentity::Email("a@b".into());
        assert_eq!(id.to_string().parse::<IkeIdentity>().unwrap(), id);
    }

    #[test]
    fn secret_sources_reject_inline_text_without_echoing_it() {
        assert_eq!(
            "env:DVIPSEC_PSK".parse::<SecretSource>().unwrap(),
            SecretSource::Env("DVIPSEC_PSK".into())
        );
        assert_eq!(
            "file:psk/a.psk".parse::<SecretSource>().unwrap(),
            SecretSource::File("psk/a.psk".into())
        );
        let err = "hunter2hunter2".parse::<SecretSource>().unwrap_err();
        assert!(err.starts_with(SECRET_SOURCE_ERROR));
        assert!(!err.contains("hunter2"));
        assert!("env:1BAD".parse::<SecretSource>().is_err());
        assert!("file:".parse::<SecretSource>().is_err());
    }
}
