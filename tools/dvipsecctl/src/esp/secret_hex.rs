//! Key material given on the command line, kept out of every message.
//!
//! clap echoes a rejected value in its error, so keys are taken as opaque text (the parser
//! never fails) and decoded here, with errors that state only lengths and positions.

use std::convert::Infallible;
use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A hex key exactly as typed; wiped on drop; Debug shows only its length.
#[derive(Clone)]
pub struct SecretHex(Zeroizing<String>);

impl SecretHex {
    /// clap value parser: accepts anything, so clap never prints the text back.
    pub fn from_arg(text: &str) -> Result<Self, Infallible> {
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// Decodes the hex digits (an optional `0x` prefix is allowed) into wiped-on-drop bytes.
    pub fn decode(&self, flag: &'static str) -> Result<Zeroizing<Vec<u8>>, KeyHexError> {
        let text = self.0.trim();
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if !digits.len().is_multiple_of(2) {
            return Err(KeyHexError::OddLength {
                flag,
                digits: digits.len(),
            });
        }
        if let Some(position) = digits.bytes().position(|b| !b.is_ascii_hexdigit()) {
            return Err(KeyHexError::NotHex {
                flag,
                position: position + 1,
            });
        }
        let mut bytes = Zeroizing::new(vec![0u8; digits.len() / 2]);
        hex::decode_to_slice(digits, bytes.as_mut_slice())
            .map_err(|_| KeyHexError::NotHex { flag, position: 0 })?;
        Ok(bytes)
    }
}

impl fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHex(<redacted, {} chars>)", self.0.len())
    }
}

impl Zeroize for SecretHex {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// Why a key flag could not be decoded. Never contains key text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyHexError {
    /// A character is not a hex digit.
    #[error("{flag}: character {position} is not a hex digit")]
    NotHex {
        /// The flag, e.g. `--key`.
        flag: &'static str,
        /// 1-based position of the first bad character after any `0x`.
        position: usize,
    },
    /// An odd number of hex digits.
    #[error("{flag}: odd number of hex digits ({digits})")]
    OddLength {
        /// The flag.
        flag: &'static str,
        /// Number of digits.
        digits: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_or_without_prefix() {
        let key = SecretHex::from_arg("0xA0b1").unwrap();
        assert_eq!(key.decode("--key").unwrap().as_slice(), &[0xa0, 0xb1]);
        let key = SecretHex::from_arg("00ff").unwrap();
        assert_eq!(key.decode("--key").unwrap().as_slice(), &[0x00, 0xff]);
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let secret = "0123456789abcdeZ";
        let key = SecretHex::from_arg(secret).unwrap();
        let err = key.decode("--auth-key").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--auth-key: character 16 is not a hex digit"
        );
        assert!(!format!("{key:?}").contains("0123"));
        let err = SecretHex::from_arg("abc")
            .unwrap()
            .decode("--key")
            .unwrap_err();
        assert_eq!(err.to_string(), "--key: odd number of hex digits (3)");
    }
}
