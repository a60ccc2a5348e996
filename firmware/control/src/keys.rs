//! Key export for Wireshark: the only place key material leaves a box. Keys travel in
//! [`SecretBytes`], zeroized on drop and redacted in Debug; [`wireshark_line`] writes one
//! `esp_sa` UAT record as tshark reads it on `-o uat:esp_sa:...`.

use std::net::IpAddr;

use dvipsec_esp::Suite;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Key bytes: zeroized on drop, `<redacted N bytes>` in Debug, hex on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Copies `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode(self.expose()));
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        let bytes = Zeroizing::new(
            hex::decode(text.as_str())
                .map_err(|e| serde::de::Error::custom(format!("key is not hex: {e}")))?,
        );
        Ok(SecretBytes::new(&bytes))
    }
}

/// One SA's keys and addresses, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedSa {
    /// Outer source address of its packets.
    pub src: IpAddr,
    /// Outer destination address of its packets.
    pub dst: IpAddr,
    /// SPI.
    pub spi: u32,
    /// Suite name ([`Suite::name`]).
    pub suite: String,
    /// Encryption key (AEADs: key followed by the 4-byte salt; empty for null).
    pub enc_key: SecretBytes,
    /// Integrity key (empty for AEADs).
    pub auth_key: SecretBytes,
}

/// Answer to `keys export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyExport {
    /// The SAs.
    pub sas: Vec<ExportedSa>,
}

/// Why an SA cannot be written for Wireshark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyExportError {
    /// The suite name is unknown.
    #[error("SPI 0x{spi:08x}: unknown suite {suite:?}")]
    UnknownSuite {
        /// SPI.
        spi: u32,
        /// The name.
        suite: String,
    },
    /// Wireshark's ESP dissector cannot decrypt this suite.
    #[error("SPI 0x{spi:08x}: Wireshark has no decoder for {suite}")]
    NoWiresharkDecoder {
        /// SPI.
        spi: u32,
        /// The suite.
        suite: &'static str,
    },
}

/// Wireshark's names for the suite's encryption and integrity algorithms.
fn wireshark_algorithms(suite: Suite) -> Option<(&'static str, &'static str)> {
    const GCM: &str = "AES-GCM with 16 octet ICV [RFC4106]";
    const CBC: &str = "AES-CBC [RFC3602]";
    const SHA256: &str = "HMAC-SHA-256-128 [RFC4868]";
    match suite {
        Suite::Aes128Gcm16 | Suite::Aes256Gcm16 => Some((GCM, "NULL")),
        Suite::Aes128CbcHmacSha256 | Suite::Aes256CbcHmacSha256 => Some((CBC, SHA256)),
        Suite::NullHmacSha256 => Some(("NULL", SHA256)),
        _ => None,
    }
}

fn hex_field(bytes: &[u8]) -> Zeroizing<String> {
    if bytes.is_empty() {
        Zeroizing::new(String::new())
    } else {
        Zeroizing::new(format!("0x{}", hex::encode(bytes)))
    }
}

/// The `esp_sa` UAT record of `sa`:
/// `"IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTHENTICATION","0xKEY"`.
/// The result holds keys: it is zeroized on drop.
pub fn wireshark_line(sa: &ExportedSa) -> Result<Zeroizing<String>, KeyExportError> {
    let suite = Suite::from_name(&sa.suite).ok_or_else(|| KeyExportError::UnknownSuite {
        spi: sa.spi,
        suite: sa.suite.clone(),
    })?;
    let (encryption, authentication) =
        wireshark_algorithms(suite).ok_or(KeyExportError::NoWiresharkDecoder {
            spi: sa.spi,
            suite: suite.name(),
        })?;
    let family = match sa.src {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    };
    let enc = hex_field(sa.enc_key.expose());
    let auth = hex_field(sa.auth_key.expose());
    Ok(Zeroizing::new(format!(
        "\"{family}\",\"{}\",\"{}\",\"0x{:08x}\",\"{encryption}\",\"{}\",\"{authentication}\",\"{}\"",
        sa.src,
        sa.dst,
        sa.spi,
        enc.as_str(),
        auth.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm_sa() -> ExportedSa {
        ExportedSa {
            src: "198.51.100.1".parse().unwrap(),
            dst: "203.0.113.10".parse().unwrap(),
            spi: 0x1000,
            suite: "aes128gcm16".into(),
            enc_key: SecretBytes::new(&[0xab; 20]),
            auth_key: SecretBytes::default(),
        }
    }

    #[test]
    fn gcm_line_has_the_tshark_names_and_the_key_with_salt() {
        let line = wireshark_line(&gcm_sa()).unwrap();
        let expected = format!(
            "\"IPv4\",\"198.51.100.1\",\"203.0.113.10\",\"0x00001000\",\
             \"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
            "ab".repeat(20)
        );
        assert_eq!(line.as_str(), expected);
    }

    #[test]
    fn cbc_line_names_both_algorithms() {
        let sa = ExportedSa {
            suite: "aes256cbc-sha256".into(),
            src: "2001:db8::1".parse().unwrap(),
            enc_key: SecretBytes::new(&[1; 32]),
            auth_key: SecretBytes::new(&[2; 32]),
            ..gcm_sa()
        };
        let line = wireshark_line(&sa).unwrap();
        assert!(
            line.starts_with("\"IPv6\",\"2001:db8::1\""),
            "{}",
            line.as_str()
        );
        assert!(line.contains(&format!(
            "\"AES-CBC [RFC3602]\",\"0x{}\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x{}\"",
            "01".repeat(32),
            "02".repeat(32)
        )));
    }

    #[test]
    fn chacha_and_unknown_suites_are_refused_by_name() {
        let chacha = ExportedSa {
            suite: "chacha20poly1305".into(),
            ..gcm_sa()
        };
        assert_eq!(
            wireshark_line(&chacha).unwrap_err(),
            KeyExportError::NoWiresharkDecoder {
                spi: 0x1000,
                suite: "chacha20poly1305"
            }
        );
        let unknown = ExportedSa {
            suite: "rot13".into(),
            ..gcm_sa()
        };
        assert!(matches!(
            wireshark_line(&unknown),
            Err(KeyExportError::UnknownSuite { .. })
        ));
    }

    #[test]
    fn secret_bytes_are_redacted_in_debug_and_hex_in_json() {
        let sa = gcm_sa();
        let debug = format!("{sa:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains("<redacted 20 bytes>"), "{debug}");
        let json = serde_json::to_string(&sa).unwrap();
        assert!(json.contains(&"ab".repeat(20)));
        let back: ExportedSa = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sa);
    }
}
