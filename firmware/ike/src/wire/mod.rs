//! The IKEv2 wire format (RFC 7296 section 3): header, payload chain and payload bodies.
//!
//! Parsing never panics: [`HeaderView::new_checked`] validates the lengths once, and the payload
//! iterator checks each generic header before yielding its body. Typed payloads are decoded from
//! those bodies and emitted back with [`Payload::emit_body`].

use crate::ParseError;

mod header;
mod payload;
mod proposal;
mod selector;

pub use header::{
    emit_chain, parse_chain, Exchange, Header, HeaderView, RawPayload, FLAG_INITIATOR,
    FLAG_RESPONSE, HEADER_LEN, IKE_VERSION,
};
pub use payload::{
    AuthPayload, DeletePayload, IdPayload, KePayload, NotifyPayload, Payload, PayloadKind,
    GENERIC_HEADER_LEN,
};
pub use proposal::{Attribute, Proposal, ProtocolId, Transform, TransformType};
pub use selector::{narrow, TrafficSelector, TsPayload};

/// Notify message types used here (RFC 7296 section 3.10.1 and RFC 3948/7383 registrations).
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// Types below this value report errors; the rest carry status.
    pub const FIRST_STATUS_TYPE: u16 = 16384;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
}

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
fn read_u16(buf: &[u8], at: usize, what: &'static str) -> Result<u16, ParseError> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(ParseError::Truncated { what, offset: at }),
    }
}

/// Returns `buf[at..at + len]` or a truncation error naming `what`.
fn take<'a>(
    buf: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    at.checked_add(len)
        .and_then(|end| buf.get(at..end))
        .ok_or(ParseError::Truncated { what, offset: at })
}

/// Moves an error's offset from body-relative to message-relative.
pub(crate) fn payload_shift(error: ParseError, base: usize) -> ParseError {
    match error {
        ParseError::Truncated { what, offset } => ParseError::Truncated {
            what,
            offset: offset + base,
        },
        ParseError::BadLength { what, offset } => ParseError::BadLength {
            what,
            offset: offset + base,
        },
        ParseError::InvalidValue {
            what,
            value,
            offset,
        } => ParseError::InvalidValue {
            what,
            value,
            offset: offset + base,
        },
        other => other,
    }
}
