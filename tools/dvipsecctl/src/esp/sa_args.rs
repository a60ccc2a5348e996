//! The SA flags shared by `esp seal`, `esp open` and `esp peek`.

use std::net::IpAddr;

use clap::{Args, ValueEnum};
use dvipsec_esp::Suite;

use super::secret_hex::SecretHex;

/// ESP mode of the SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// ESP header inserted after the packet's own IP header.
    Transport,
    /// The whole packet is carried inside a new outer IP header.
    Tunnel,
}

/// UDP encapsulation ports (RFC 3948), given as `SPORT:DPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncapArg {
    /// UDP source port of the encapsulating header.
    pub sport: u16,
    /// UDP destination port of the encapsulating header.
    pub dport: u16,
}

impl UdpEncapArg {
    /// clap value parser for `SPORT:DPORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (sport, dport) = text
            .split_once(':')
            .ok_or_else(|| "expected SPORT:DPORT, e.g. 4500:4500".to_owned())?;
        let port = |p: &str, which: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("{which} port {p:?} is not a number from 0 to 65535"))
        };
        Ok(Self {
            sport: port(sport, "source")?,
            dport: port(dport, "destination")?,
        })
    }
}

/// clap value parser for `--suite`: any suite name the engine knows.
pub fn parse_suite(text: &str) -> Result<Suite, String> {
    Suite::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = Suite::ALL.iter().map(|s| s.name()).collect();
        format!("unknown suite; one of {}", names.join(", "))
    })
}

/// clap value parser for numbers given in decimal or as `0x` hex (SPIs are usually hex).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(digits) => u64::from_str_radix(digits, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| "expected a decimal or 0x-prefixed hex number".to_owned())
}

/// clap value parser for the 32-bit SPI.
pub fn parse_spi(text: &str) -> Result<u32, String> {
    let value = parse_u64(text)?;
    u32::try_from(value).map_err(|_| "the SPI is a 32-bit number".to_owned())
}

/// The security association, as flags. Keys are never printed.
#[derive(Args, Debug)]
pub struct SaArgs {
    /// Security Parameter Index (decimal or 0x hex).
    #[arg(long, value_parser = parse_spi)]
    pub spi: u32,

    /// seal: the sequence number of the first packet, later packets get the next ones
    /// (default 1). open/peek: the highest sequence number the receiver has already accepted
    /// (default 0: none). With --esn this is the full 64-bit number.
    #[arg(long, value_parser = parse_u64)]
    pub seq: Option<u64>,

    /// Extended sequence numbers (RFC 4303 appendix A): 64-bit counters, high half in the ICV.
    #[arg(long)]
    pub esn: bool,

    /// Transform suite: aes128gcm16, aes256gcm16, chacha20poly1305, aes128cbc-sha256,
    /// aes256cbc-sha256 or null-sha256.
    #[arg(long, value_parser = parse_suite)]
    pub suite: Suite,

    /// Encryption key in hex; for the AEADs the key followed by the 4-byte salt.
    #[arg(long, value_name = "HEX", value_parser = SecretHex::from_arg)]
    pub key: Option<SecretHex>,

    /// Integrity key in hex (HMAC-SHA-256: 32 bytes), for the CBC and null suites.
    #[arg(long = "auth-key", value_name = "HEX", value_parser = SecretHex::from_arg)]
    pub auth_key: Option<SecretHex>,

    /// ESP mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Transport)]
    pub mode: ModeArg,

    /// Outer source address in tunnel mode.
    #[arg(long)]
    pub tunnel_src: Option<IpAddr>,

    /// Outer destination address in tunnel mode.
    #[arg(long)]
    pub tunnel_dst: Option<IpAddr>,

    /// UDP-encapsulated ESP (RFC 3948), e.g. 4500:4500.
    #[arg(long, value_name = "SPORT:DPORT", value_parser = UdpEncapArg::parse)]
    pub udp_encap: Option<UdpEncapArg>,

    /// Anti-replay window of the receiving SA (32 to 4096).
    #[arg(long, default_value_t = 64)]
    pub replay_window: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_encap_needs_two_ports() {
        assert_eq!(
            UdpEncapArg::parse("4500:4501").unwrap(),
            UdpEncapArg {
                sport: 4500,
                dport: 4501
            }
        );
        assert!(UdpEncapArg::parse("4500").is_err());
        assert!(UdpEncapArg::parse("4500:70000").is_err());
    }

    #[test]
    fn numbers_in_decimal_or_hex() {
        assert_eq!(parse_u64("0x100000001").unwrap(), 0x1_0000_0001);
        assert_eq!(parse_u64("42").unwrap(), 42);
        assert!(parse_u64("0xZZ").is_err());
        assert_eq!(parse_spi("0xdeadbeef").unwrap(), 0xdead_beef);
        assert!(parse_spi("0x100000000").is_err());
    }

    #[test]
    fn suite_names_come_from_the_engine() {
        assert_eq!(parse_suite("aes128gcm16").unwrap(), Suite::Aes128Gcm16);
        assert_eq!(parse_suite("null-sha256").unwrap(), Suite::NullHmacSha256);
        assert!(parse_suite("aes128gcm8")
            .unwrap_err()
            .contains("aes256cbc-sha256"));
    }
}
