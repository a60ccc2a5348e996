//! Error types of the XCF link.

use thiserror::Error;

/// Why an XCF frame could not be decoded or encoded. Offsets count from the frame's first byte.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("XCF version {version} is not supported (this node speaks version {supported})")]
    UnsupportedVersion { version: u8, supported: u8 },
    #[error("unknown XCF message kind {kind} at offset 1")]
    UnknownKind { kind: u8 },
    #[error("XCF frame truncated in {field} at offset {offset}")]
    Truncated { field: &'static str, offset: usize },
    #[error("XCF frame has bytes after its end, at offset {offset}")]
    TrailingBytes { offset: usize },
    #[error("XCF frame body of {len} bytes is over the limit")]
    BodyTooLong { len: usize },
    #[error("bad value {value} for {field} at offset {offset}")]
    BadValue {
        field: &'static str,
        offset: usize,
        value: u64,
    },
    #[error("{field} at offset {offset} is not UTF-8")]
    BadUtf8 { field: &'static str, offset: usize },
    #[error("suite {suite} has no XCF code")]
    UnsupportedSuite { suite: &'static str },
    #[error("{field} is too long to encode")]
    FieldTooLong { field: &'static str },
}

/// Why the link refused a frame or a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("bad XCF frame: {0}")]
    Wire(#[from] WireError),
    #[error("frame addressed to incarnation {to}, this node is incarnation {local}")]
    NotForThisIncarnation { to: u64, local: u64 },
    #[error("frame from an old incarnation {from} of the peer (now {known})")]
    StaleSender { from: u64, known: u64 },
    #[error("SA_INSTALL carries keys and this link is neither trusted nor protected")]
    KeysOnUnprotectedLink,
    #[error("the link's sequence numbers are used up")]
    SequenceExhausted,
}
