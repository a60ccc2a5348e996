//! The fixed IKE header and the generic payload chain.

use super::{read_u16, take};
use crate::ParseError;

/// Length of the fixed IKE header.
pub const HEADER_LEN: usize = 28;
/// Major version 2, minor version 0.
pub const IKE_VERSION: u8 = 0x20;
/// Set by the original initiator of the IKE SA.
pub const FLAG_INITIATOR: u8 = 0x08;
/// Set in responses.
pub const FLAG_RESPONSE: u8 = 0x20;

/// Exchange types (RFC 7296 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exchange {
    IkeSaInit,
    IkeAuth,
    CreateChildSa,
    Informational,
    /// Any other value; such messages are dropped.
    Other(u8),
}

impl Exchange {
    pub fn from_u8(value: u8) -> Self {
        match value {
            34 => Self::IkeSaInit,
            35 => Self::IkeAuth,
            36 => Self::CreateChildSa,
            37 => Self::Informational,
            other => Self::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::IkeSaInit => 34,
            Self::IkeAuth => 35,
            Self::CreateChildSa => 36,
            Self::Informational => 37,
            Self::Other(value) => value,
        }
    }
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub next_payload: u8,
    pub exchange: Exchange,
    pub flags: u8,
    pub message_id: u32,
    /// Total message length including this header.
    pub length: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// True when the sender is the original initiator of the IKE SA.
    pub fn from_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..8].copy_from_slice(&self.spi_i.to_be_bytes());
        out[8..16].copy_from_slice(&self.spi_r.to_be_bytes());
        out[16] = self.next_payload;
        out[17] = IKE_VERSION;
        out[18] = self.exchange.to_u8();
        out[19] = self.flags;
        out[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
    }
}

/// A checked view of a whole IKE message: header fields and the payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<'a> {
    message: &'a [u8],
}

impl<'a> HeaderView<'a> {
    /// Checks the header and that the length field matches the datagram exactly.
    pub fn new_checked(message: &'a [u8]) -> Result<Self, ParseError> {
        if message.len() < HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "IKE header",
                offset: 0,
            });
        }
        let version = message[17];
        if version >> 4 != 2 {
            return Err(ParseError::BadVersion(version >> 4));
        }
        let length = u32::from_be_bytes([message[24], message[25], message[26], message[27]]);
        if length as usize != message.len() {
            return Err(ParseError::BadLength {
                what: "IKE header length",
                offset: 24,
            });
        }
        Ok(Self { message })
    }

    pub fn header(&self) -> Header {
        let m = self.message;
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&m[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Header {
            spi_i: u64_at(0),
            spi_r: u64_at(8),
            next_payload: m[16],
            exchange: Exchange::from_u8(m[18]),
            flags: m[19],
            message_id: u32::from_be_bytes([m[20], m[21], m[22], m[23]]),
            length: m.len() as u32,
        }
    }

    /// The whole message, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.message
    }

    /// Walks the payload chain that follows the header.
    pub fn payloads(&self) -> Result<Vec<RawPayload<'a>>, ParseError> {
        parse_chain(self.message, HEADER_LEN, self.message[16])
    }
}

/// One payload of a chain, still undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    pub kind: u8,
    /// The generic header's next-payload field; for SK, the type of the first inner payload.
    pub next: u8,
    pub critical: bool,
    /// Offset of the payload's generic header within the buffer that was parsed.
    pub offset: usize,
    /// The payload body, after the 4-byte generic header.
    pub body: &'a [u8],
}

/// Parses the chain of generic payloads in `buf[start..]`, beginning with type `first`.
///
/// The chain must end exactly at the end of `buf`. The SK payload (46) must be last.
pub fn parse_chain(buf: &[u8], start: usize, first: u8) -> Result<Vec<RawPayload<'_>>, ParseError> {
    let mut payloads = Vec::new();
    let mut kind = first;
    let mut at = start;
    while kind != 0 {
        let generic = take(buf, at, 4, "generic payload header")?;
        let next = generic[0];
        let critical = generic[1] & 0x80 != 0;
        let length = read_u16(buf, at + 2, "payload length")? as usize;
        if length < 4 {
            return Err(ParseError::BadLength {
                what: "payload length",
                offset: at + 2,
            });
        }
        let body = take(buf, at + 4, length - 4, "payload body")?;
        payloads.push(RawPayload {
            kind,
            next,
            critical,
            offset: at,
            body,
        });
        at += length;
        if kind == super::PayloadKind::Sk.to_u8() {
            // The SK body runs to the end of the message; its next-payload field names the
            // first inner payload, so the outer chain stops here.
            if at != buf.len() {
                return Err(ParseError::SkNotLast { offset: at });
            }
            return Ok(payloads);
        }
        kind = next;
    }
    if at != buf.len() {
        return Err(ParseError::BadLength {
            what: "payload chain (trailing bytes)",
            offset: at,
        });
    }
    Ok(payloads)
}

/// Emits a chain of payloads; returns the type of the first payload (0 if none).
pub fn emit_chain(payloads: &[super::Payload], out: &mut Vec<u8>) -> u8 {
    for (index, payload) in payloads.iter().enumerate() {
        let next = payloads.get(index + 1).map_or(0, |p| p.kind().to_u8());
        let start = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        payload.emit_body(out);
        let length = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&length.to_be_bytes());
    }
    payloads.first().map_or(0, |p| p.kind().to_u8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header() -> Header {
        Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0,
            next_payload: 0,
            exchange: Exchange::IkeSaInit,
            flags: FLAG_INITIATOR,
            message_id: 0,
            length: HEADER_LEN as u32,
        }
    }

    #[test]
    fn header_round_trips_and_checks_length() {
        let mut bytes = [0u8; HEADER_LEN];
        sample_header().emit(&mut bytes);
        let view = HeaderView::new_checked(&bytes).unwrap();
        assert_eq!(view.header(), sample_header());
        assert!(view.payloads().unwrap().is_empty());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            HeaderView::new_checked(&longer),
            Err(ParseError::BadLength { offset: 24, .. })
        ));
        assert!(matches!(
            HeaderView::new_checked(&bytes[..27]),
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn version_one_is_rejected() {
        let mut bytes = [0u8; HEADER_LEN];
        sample_header().emit(&mut bytes);
        bytes[17] = 0x10;
        assert_eq!(
            HeaderView::new_checked(&bytes).unwrap_err(),
            ParseError::BadVersion(1)
        );
    }

    #[test]
    fn chain_rejects_short_and_overlong_payload_lengths() {
        // Nonce payload (40) with length 3: below the generic header size.
        let buf = [0u8, 0, 0, 3];
        assert!(matches!(
            parse_chain(&buf, 0, 40),
            Err(ParseError::BadLength { offset: 2, .. })
        ));
        // Length 9 but only 8 bytes present.
        let buf = [0u8, 0, 0, 9, 1, 2, 3, 4];
        assert!(matches!(
            parse_chain(&buf, 0, 40),
            Err(ParseError::Truncated { offset: 4, .. })
        ));
        // Trailing garbage after the last payload.
        let buf = [0u8, 0, 0, 4, 0xff];
        assert!(matches!(
            parse_chain(&buf, 0, 40),
            Err(ParseError::BadLength { offset: 4, .. })
        ));
    }

    #[test]
    fn sk_must_be_last() {
        let buf = [40u8, 0, 0, 4, 0, 0, 0, 4];
        assert!(matches!(
            parse_chain(&buf, 0, 46),
            Err(ParseError::SkNotLast { offset: 4 })
        ));
    }
}
