//! Typed payload bodies (RFC 7296 sections 3.3 to 3.16).

use super::proposal::{emit_proposals, parse_proposals, Proposal};
use super::selector::TsPayload;
use super::take;
use crate::ParseError;

/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;

/// Payload type numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadKind {
    Sa,
    Ke,
    IdI,
    IdR,
    Cert,
    CertReq,
    Auth,
    Nonce,
    Notify,
    Delete,
    Vendor,
    TsI,
    TsR,
    Sk,
    Cp,
    Eap,
    Other(u8),
}

impl PayloadKind {
    pub fn from_u8(value: u8) -> Self {
        match value {
            33 => Self::Sa,
            34 => Self::Ke,
            35 => Self::IdI,
            36 => Self::IdR,
            37 => Self::Cert,
            38 => Self::CertReq,
            39 => Self::Auth,
            40 => Self::Nonce,
            41 => Self::Notify,
            42 => Self::Delete,
            43 => Self::Vendor,
            44 => Self::TsI,
            45 => Self::TsR,
            46 => Self::Sk,
            47 => Self::Cp,
            48 => Self::Eap,
            other => Self::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Sa => 33,
            Self::Ke => 34,
            Self::IdI => 35,
            Self::IdR => 36,
            Self::Cert => 37,
            Self::CertReq => 38,
            Self::Auth => 39,
            Self::Nonce => 40,
            Self::Notify => 41,
            Self::Delete => 42,
            Self::Vendor => 43,
            Self::TsI => 44,
            Self::TsR => 45,
            Self::Sk => 46,
            Self::Cp => 47,
            Self::Eap => 48,
            Self::Other(value) => value,
        }
    }
}

/// Key Exchange payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KePayload {
    pub group: u16,
    pub data: Vec<u8>,
}

/// Identification payload (IDi or IDr); `body()` is what the AUTH computation signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    pub id_type: u8,
    pub data: Vec<u8>,
}

impl IdPayload {
    /// The payload body as it appears on the wire: type, three reserved bytes, data.
    pub fn body(&self) -> Vec<u8> {
        let mut body = vec![self.id_type, 0, 0, 0];
        body.extend_from_slice(&self.data);
        body
    }
}

/// Authentication payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPayload {
    pub method: u8,
    pub data: Vec<u8>,
}

/// Notify payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub notify_type: u16,
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notify about the IKE SA itself (no protocol, no SPI).
    pub fn ike(notify_type: u16, data: Vec<u8>) -> Self {
        Self {
            protocol: 0,
            spi: Vec::new(),
            notify_type,
            data,
        }
    }

    pub fn is_error(&self) -> bool {
        self.notify_type < super::notify::FIRST_STATUS_TYPE
    }
}

/// Delete payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePayload {
    pub protocol: u8,
    pub spi_size: u8,
    pub spis: Vec<Vec<u8>>,
}

/// A decoded payload. Payloads we do not interpret (CERT, CERTREQ, V, CP, EAP, unknown
/// non-critical ones) keep their raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke(KePayload),
    IdI(IdPayload),
    IdR(IdPayload),
    Auth(AuthPayload),
    Nonce(Vec<u8>),
    Notify(NotifyPayload),
    Delete(DeletePayload),
    TsI(TsPayload),
    TsR(TsPayload),
    /// A payload kept as raw bytes (vendor ID, configuration, certificates, unknown).
    Opaque {
        kind: u8,
        body: Vec<u8>,
    },
}

impl Payload {
    pub fn kind(&self) -> PayloadKind {
        match self {
            Self::Sa(_) => PayloadKind::Sa,
            Self::Ke(_) => PayloadKind::Ke,
            Self::IdI(_) => PayloadKind::IdI,
            Self::IdR(_) => PayloadKind::IdR,
            Self::Auth(_) => PayloadKind::Auth,
            Self::Nonce(_) => PayloadKind::Nonce,
            Self::Notify(_) => PayloadKind::Notify,
            Self::Delete(_) => PayloadKind::Delete,
            Self::TsI(_) => PayloadKind::TsI,
            Self::TsR(_) => PayloadKind::TsR,
            Self::Opaque { kind, .. } => PayloadKind::from_u8(*kind),
        }
    }

    /// Decodes a payload body. `offset` is where the body starts in the message, for errors.
    pub fn decode(
        kind: u8,
        critical: bool,
        body: &[u8],
        offset: usize,
    ) -> Result<Self, ParseError> {
        let located = |e: ParseError| super::payload_shift(e, offset);
        Ok(match PayloadKind::from_u8(kind) {
            PayloadKind::Sa => Self::Sa(parse_proposals(body).map_err(located)?),
            PayloadKind::Ke => Self::Ke(parse_ke(body).map_err(located)?),
            PayloadKind::IdI => Self::IdI(parse_id(body).map_err(located)?),
            PayloadKind::IdR => Self::IdR(parse_id(body).map_err(located)?),
            PayloadKind::Auth => Self::Auth(parse_auth(body).map_err(located)?),
            PayloadKind::Nonce => Self::Nonce(parse_nonce(body).map_err(located)?),
            PayloadKind::Notify => Self::Notify(parse_notify(body).map_err(located)?),
            PayloadKind::Delete => Self::Delete(parse_delete(body).map_err(located)?),
            PayloadKind::TsI => Self::TsI(TsPayload::parse(body).map_err(located)?),
            PayloadKind::TsR => Self::TsR(TsPayload::parse(body).map_err(located)?),
            PayloadKind::Other(unknown) if critical => {
                return Err(ParseError::UnsupportedCritical {
                    kind: unknown,
                    offset,
                })
            }
            _ => Self::Opaque {
                kind,
                body: body.to_vec(),
            },
        })
    }

    /// Appends the payload body (without the generic header) to `out`.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(proposals) => emit_proposals(proposals, out),
            Self::Ke(ke) => {
                out.extend_from_slice(&ke.group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ke.data);
            }
            Self::IdI(id) | Self::IdR(id) => out.extend_from_slice(&id.body()),
            Self::Auth(auth) => {
                out.extend_from_slice(&[auth.method, 0, 0, 0]);
                out.extend_from_slice(&auth.data);
            }
            Self::Nonce(nonce) => out.extend_from_slice(nonce),
            Self::Notify(n) => {
                out.extend_from_slice(&[n.protocol, n.spi.len() as u8]);
                out.extend_from_slice(&n.notify_type.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.extend_from_slice(&[d.protocol, d.spi_size]);
                out.extend_from_slice(&(d.spis.len() as u16).to_be_bytes());
                for spi in &d.spis {
                    out.extend_from_slice(spi);
                }
            }
            Self::TsI(ts) | Self::TsR(ts) => ts.emit(out),
            Self::Opaque { body, .. } => out.extend_from_slice(body),
        }
    }
}

fn parse_ke(body: &[u8]) -> Result<KePayload, ParseError> {
    let fixed = take(body, 0, 4, "KE header")?;
    Ok(KePayload {
        group: u16::from_be_bytes([fixed[0], fixed[1]]),
        data: body[4..].to_vec(),
    })
}

fn parse_id(body: &[u8]) -> Result<IdPayload, ParseError> {
    let fixed = take(body, 0, 4, "ID header")?;
    Ok(IdPayload {
        id_type: fixed[0],
        data: body[4..].to_vec(),
    })
}

fn parse_auth(body: &[u8]) -> Result<AuthPayload, ParseError> {
    let fixed = take(body, 0, 4, "AUTH header")?;
    Ok(AuthPayload {
        method: fixed[0],
        data: body[4..].to_vec(),
    })
}

/// RFC 7296 section 3.9: nonces are 16 to 256 octets.
fn parse_nonce(body: &[u8]) -> Result<Vec<u8>, ParseError> {
    if !(16..=256).contains(&body.len()) {
        return Err(ParseError::BadLength {
            what: "nonce (16..=256 bytes)",
            offset: 0,
        });
    }
    Ok(body.to_vec())
}

fn parse_notify(body: &[u8]) -> Result<NotifyPayload, ParseError> {
    let fixed = take(body, 0, 4, "notify header")?;
    let spi_size = fixed[1] as usize;
    let notify_type = u16::from_be_bytes([fixed[2], fixed[3]]);
    let spi = take(body, 4, spi_size, "notify SPI")?;
    Ok(NotifyPayload {
        protocol: fixed[0],
        spi: spi.to_vec(),
        notify_type,
        data: body[4 + spi_size..].to_vec(),
    })
}

fn parse_delete(body: &[u8]) -> Result<DeletePayload, ParseError> {
    let fixed = take(body, 0, 4, "delete header")?;
    let spi_size = fixed[1] as usize;
    let count = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
    if spi_size * count != body.len() - 4 {
        return Err(ParseError::BadLength {
            what: "delete SPI list",
            offset: 2,
        });
    }
    let spis = if spi_size == 0 {
        Vec::new()
    } else {
        body[4..].chunks(spi_size).map(<[u8]>::to_vec).collect()
    };
    Ok(DeletePayload {
        protocol: fixed[0],
        spi_size: fixed[1],
        spis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(payload: Payload) {
        let mut body = Vec::new();
        payload.emit_body(&mut body);
        let decoded = Payload::decode(payload.kind().to_u8(), false, &body, 0).unwrap();
        assert_eq!(decoded, payload);
    }

    #[test]
    fn payloads_round_trip() {
        round_trip(Payload::Ke(KePayload {
            group: 31,
            data: vec![9; 32],
        }));
        round_trip(Payload::IdI(IdPayload {
            id_type: 3,
            data: b"a@test".to_vec(),
        }));
        round_trip(Payload::Auth(AuthPayload {
            method: 2,
            data: vec![1; 32],
        }));
        round_trip(Payload::Nonce(vec![7; 32]));
        round_trip(Payload::Notify(NotifyPayload {
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            notify_type: super::super::notify::REKEY_SA,
            data: vec![],
        }));
        round_trip(Payload::Delete(DeletePayload {
            protocol: 3,
            spi_size: 4,
            spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
        }));
    }

    #[test]
    fn notify_bytes_match_rfc_layout() {
        let mut body = Vec::new();
        Payload::Notify(NotifyPayload::ike(
            super::super::notify::COOKIE,
            vec![0xaa; 4],
        ))
        .emit_body(&mut body);
        assert_eq!(body, [0, 0, 0x40, 0x06, 0xaa, 0xaa, 0xaa, 0xaa]);
    }

    #[test]
    fn short_bodies_are_errors_with_offsets() {
        assert!(matches!(
            Payload::decode(34, false, &[0, 31], 100),
            Err(ParseError::Truncated { offset: 100, .. })
        ));
        assert!(matches!(
            Payload::decode(40, false, &[0; 15], 50),
            Err(ParseError::BadLength { offset: 50, .. })
        ));
        // Notify claims a 4-byte SPI but has 2 bytes.
        assert!(matches!(
            Payload::decode(41, false, &[3, 4, 0x40, 0x09, 1, 2], 10),
            Err(ParseError::Truncated { offset: 14, .. })
        ));
        // Delete claims three 4-byte SPIs but carries one.
        assert!(matches!(
            Payload::decode(42, false, &[3, 4, 0, 3, 1, 2, 3, 4], 0),
            Err(ParseError::BadLength { .. })
        ));
    }

    #[test]
    fn unknown_critical_payload_is_rejected_and_noncritical_kept() {
        assert_eq!(
            Payload::decode(200, true, &[1], 8).unwrap_err(),
            ParseError::UnsupportedCritical {
                kind: 200,
                offset: 8
            }
        );
        assert_eq!(
            Payload::decode(200, false, &[1], 8).unwrap(),
            Payload::Opaque {
                kind: 200,
                body: vec![1]
            }
        );
    }
}
