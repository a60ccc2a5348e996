//! Error types of the ESP/AH engine.

use std::net::IpAddr;

/// A failure inside the cryptographic provider (key setup or a primitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key has the wrong length for the algorithm.
    #[error("key for {algorithm} must be {expected} bytes, got {got}")]
    KeyLength {
        /// Algorithm name.
        algorithm: &'static str,
        /// Expected key length in bytes.
        expected: usize,
        /// Supplied key length in bytes.
        got: usize,
    },
    /// The provider rejected the key or the operation.
    #[error("{operation} failed in the crypto provider")]
    Provider {
        /// What was being done.
        operation: &'static str,
    },
    /// Authentication tag did not verify.
    #[error("authentication tag mismatch")]
    TagMismatch,
}

/// Why an SA could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaError {
    /// The replay window is outside 32..=4096 (0 disables anti-replay and is also allowed).
    #[error("replay window {0} is outside 32..=4096 (or 0 to disable)")]
    ReplayWindow(u32),
    /// Key setup failed.
    #[error("key setup: {0}")]
    Key(#[from] CryptoError),
    /// An outbound tunnel-mode SA needs tunnel endpoints.
    #[error("outbound tunnel-mode SA needs tunnel endpoints")]
    MissingTunnelEndpoints,
    /// Tunnel endpoints mix IPv4 and IPv6.
    #[error("tunnel endpoints {src} and {dst} are of different address families")]
    MixedTunnelFamilies {
        /// Tunnel source.
        src: IpAddr,
        /// Tunnel destination.
        dst: IpAddr,
    },
    /// AH only carries integrity suites.
    #[error("suite {0} cannot be used with AH (only null-sha256 integrity)")]
    SuiteNotForAh(&'static str),
    /// SPI values 0..=255 are reserved (RFC 4303 section 2.1).
    #[error("SPI {0:#x} is reserved (0..=255)")]
    ReservedSpi(u32),
}

/// Why a packet could not be sealed, opened or peeked. Every variant names where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EspError {
    /// The packet ends before a field that must be there.
    #[error("truncated {layer}: need {needed} bytes at offset {offset}, packet has {len}")]
    Truncated {
        /// Header or field that did not fit.
        layer: &'static str,
        /// Offset of that layer in the packet.
        offset: usize,
        /// Bytes needed from that offset.
        needed: usize,
        /// Length of the packet.
        len: usize,
    },
    /// A header field holds a value we cannot accept.
    #[error("malformed {field} at offset {offset}: {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// Its offset in the packet.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The packet is not ESP/AH for this SA's encapsulation (e.g. IKE on port 4500, or another protocol).
    #[error("not an {expected} packet: {found}")]
    NotIpsec {
        /// What the SA expects ("ESP", "AH", "UDP-encapsulated ESP").
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// The SPI in the packet is not this SA's.
    #[error("SPI {got:#010x} at offset {offset} does not match the SA's {expected:#010x}")]
    WrongSpi {
        /// This SA's SPI.
        expected: u32,
        /// SPI in the packet.
        got: u32,
        /// Offset of the SPI field.
        offset: usize,
    },
    /// Sequence number already seen or older than the window (RFC 4303 section 3.4.3).
    #[error("replayed or too old sequence number {seq}")]
    Replay {
        /// The full (inferred) sequence number.
        seq: u64,
    },
    /// The ICV did not verify.
    #[error("ICV check failed for sequence number {seq}")]
    Authentication {
        /// The full (inferred) sequence number.
        seq: u64,
    },
    /// The padding bytes after decryption are not 1, 2, 3, ... (RFC 4303 section 2.4).
    #[error("bad ESP padding at offset {offset}")]
    BadPadding {
        /// Offset of the first bad padding byte.
        offset: usize,
    },
    /// The packet was a dummy packet (next header 59), which is dropped after verification.
    #[error("dummy packet (next header 59), dropped")]
    DummyPacket,
    /// Not enough room before the packet in the caller's buffer.
    #[error("need {needed} bytes of headroom, buffer has {available}")]
    NoHeadroom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Not enough room after the packet in the caller's buffer.
    #[error("need {needed} bytes of tailroom, buffer has {available}")]
    NoTailroom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The range given for the packet lies outside the buffer.
    #[error("packet range {start}..{end} is outside the buffer of {len} bytes")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Buffer length.
        len: usize,
    },
    /// The packet would exceed 65535 bytes after encapsulation.
    #[error("packet of {0} bytes is too large for IP")]
    TooLarge(usize),
    /// Operation not valid for the SA's direction.
    #[error("SA is {sa}, cannot {operation}")]
    WrongDirection {
        /// The SA's direction.
        sa: &'static str,
        /// What was attempted.
        operation: &'static str,
    },
    /// The sequence number space is used up (no cycling, RFC 4303 section 3.3.3); rekey.
    #[error("sequence number space exhausted, the SA must be rekeyed")]
    SequenceExhausted,
    /// Sequence number 0 is never sent.
    #[error("sequence number 0 is invalid")]
    ZeroSequence,
    /// A hard lifetime limit was reached.
    #[error("hard {0} lifetime reached, the SA must be rekeyed")]
    LifetimeExpired(&'static str),
    /// The packet is an IP fragment; reassemble before IPsec processing.
    #[error("IP fragment at offset {offset}; reassemble first")]
    Fragment {
        /// Offset of the fragment information.
        offset: usize,
    },
    /// A crypto primitive failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
}
