//! Error types of the IKE crate.

use thiserror::Error;

/// A malformed IKE message: what was wrong and at which byte offset of the message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer ends before a field that the format requires.
    #[error("truncated {what} at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    /// A length field disagrees with the bytes available or with the format.
    #[error("bad length in {what} at offset {offset}")]
    BadLength { what: &'static str, offset: usize },
    /// The major version is not 2.
    #[error("unsupported IKE major version {0}")]
    BadVersion(u8),
    /// A payload that RFC 7296 requires us to understand is unknown and marked critical.
    #[error("unsupported critical payload type {kind} at offset {offset}")]
    UnsupportedCritical { kind: u8, offset: usize },
    /// The encrypted payload is not the last payload of the message.
    #[error("SK payload is not the last payload (offset {offset})")]
    SkNotLast { offset: usize },
    /// A field has a value the format does not allow.
    #[error("invalid {what} value {value} at offset {offset}")]
    InvalidValue {
        what: &'static str,
        value: u32,
        offset: usize,
    },
}

/// A failure of an IKE cryptographic operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The peer's Diffie-Hellman public value is malformed or outside the group.
    #[error("invalid Diffie-Hellman public value for group {group}")]
    InvalidPublicValue { group: u16 },
    /// The SK payload failed its integrity check or was badly padded.
    #[error("SK payload failed decryption or integrity check")]
    Integrity,
    /// The SK payload is too short or not a whole number of cipher blocks.
    #[error("SK payload has a bad length ({0} bytes)")]
    BadCiphertextLength(usize),
    /// A key had the wrong length for the chosen algorithm, or the library refused it.
    #[error("cryptographic library rejected the operation: {0}")]
    Library(&'static str),
}

/// A refusal by the state machine to act on a local request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IkeError {
    /// No peer configuration has that name.
    #[error("no peer named {0:?} in the configuration")]
    UnknownPeer(String),
    /// The peer configuration lacks something initiation needs.
    #[error("peer {peer:?} cannot initiate: {reason}")]
    NotInitiable { peer: String, reason: &'static str },
    /// No IKE SA has that SPI.
    #[error("no IKE SA with SPI {0:016x}")]
    NoSuchSa(u64),
    /// The IKE SA is not established or already has a request outstanding.
    #[error("IKE SA {0:016x} is busy or not established")]
    Busy(u64),
    /// The IKE SA has no child SA with that inbound SPI.
    #[error("no child SA with inbound SPI {0:08x}")]
    NoSuchChild(u32),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
