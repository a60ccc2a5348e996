//! SA payload: proposals, transforms and transform attributes (RFC 7296 section 3.3).

use super::{read_u16, take};
use crate::ParseError;

/// Protocol of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolId {
    Ike,
    Ah,
    Esp,
    Other(u8),
}

impl ProtocolId {
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Ike,
            2 => Self::Ah,
            3 => Self::Esp,
            other => Self::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Ike => 1,
            Self::Ah => 2,
            Self::Esp => 3,
            Self::Other(value) => value,
        }
    }
}

/// Transform types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransformType {
    Encr,
    Prf,
    Integ,
    Dh,
    Esn,
    Other(u8),
}

impl TransformType {
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Encr,
            2 => Self::Prf,
            3 => Self::Integ,
            4 => Self::Dh,
            5 => Self::Esn,
            other => Self::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Encr => 1,
            Self::Prf => 2,
            Self::Integ => 3,
            Self::Dh => 4,
            Self::Esn => 5,
            Self::Other(value) => value,
        }
    }
}

/// A transform attribute; only the TV form (AF bit set) key length is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    KeyLength(u16),
    /// Any other attribute, kept as type (without the AF bit) and value.
    Other {
        attr_type: u16,
        value: Vec<u8>,
    },
}

const ATTR_KEY_LENGTH: u16 = 14;
const AF_BIT: u16 = 0x8000;

/// One transform of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub transform_type: TransformType,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    pub fn new(transform_type: TransformType, id: u16) -> Self {
        Self {
            transform_type,
            id,
            attributes: Vec::new(),
        }
    }

    pub fn with_key_length(transform_type: TransformType, id: u16, bits: u16) -> Self {
        Self {
            transform_type,
            id,
            attributes: vec![Attribute::KeyLength(bits)],
        }
    }

    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::KeyLength(bits) => Some(*bits),
            Attribute::Other { .. } => None,
        })
    }
}

/// One proposal of an SA payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

pub(super) fn parse_proposals(body: &[u8]) -> Result<Vec<Proposal>, ParseError> {
    let mut proposals = Vec::new();
    let mut at = 0;
    loop {
        let fixed = take(body, at, 8, "proposal header")?;
        let last_or_more = fixed[0];
        let length = read_u16(body, at + 2, "proposal length")? as usize;
        let proposal_bytes = take(body, at, length, "proposal")?;
        if length < 8 {
            return Err(ParseError::BadLength {
                what: "proposal length",
                offset: at + 2,
            });
        }
        proposals.push(parse_proposal(proposal_bytes).map_err(|e| super::payload_shift(e, at))?);
        at += length;
        match last_or_more {
            0 => break,
            2 => continue,
            other => {
                return Err(ParseError::InvalidValue {
                    what: "proposal last/more",
                    value: other.into(),
                    offset: at - length,
                })
            }
        }
    }
    if at != body.len() {
        return Err(ParseError::BadLength {
            what: "SA payload (trailing bytes)",
            offset: at,
        });
    }
    Ok(proposals)
}

fn parse_proposal(bytes: &[u8]) -> Result<Proposal, ParseError> {
    let number = bytes[4];
    let protocol = ProtocolId::from_u8(bytes[5]);
    let spi_size = bytes[6] as usize;
    let transform_count = bytes[7] as usize;
    let spi = take(bytes, 8, spi_size, "proposal SPI")?.to_vec();
    let mut at = 8 + spi_size;
    let mut transforms = Vec::with_capacity(transform_count);
    for index in 0..transform_count {
        let fixed = take(bytes, at, 8, "transform header")?;
        let length = read_u16(bytes, at + 2, "transform length")? as usize;
        if length < 8 {
            return Err(ParseError::BadLength {
                what: "transform length",
                offset: at + 2,
            });
        }
        let expected_marker = if index + 1 == transform_count { 0 } else { 3 };
        if fixed[0] != expected_marker {
            return Err(ParseError::InvalidValue {
                what: "transform last/more",
                value: fixed[0].into(),
                offset: at,
            });
        }
        let transform_bytes = take(bytes, at, length, "transform")?;
        let attributes =
            parse_attributes(&transform_bytes[8..]).map_err(|e| super::payload_shift(e, at + 8))?;
        transforms.push(Transform {
            transform_type: TransformType::from_u8(fixed[4]),
            id: u16::from_be_bytes([fixed[6], fixed[7]]),
            attributes,
        });
        at += length;
    }
    if at != bytes.len() {
        return Err(ParseError::BadLength {
            what: "proposal (transform count vs length)",
            offset: 2,
        });
    }
    Ok(Proposal {
        number,
        protocol,
        spi,
        transforms,
    })
}

fn parse_attributes(mut bytes: &[u8]) -> Result<Vec<Attribute>, ParseError> {
    let mut attributes = Vec::new();
    let mut at = 0;
    while !bytes.is_empty() {
        let attr_word = read_u16(bytes, 0, "attribute type")?;
        let field = read_u16(bytes, 2, "attribute value")?;
        let attr_type = attr_word & !AF_BIT;
        let consumed = if attr_word & AF_BIT != 0 {
            attributes.push(if attr_type == ATTR_KEY_LENGTH {
                Attribute::KeyLength(field)
            } else {
                Attribute::Other {
                    attr_type,
                    value: field.to_be_bytes().to_vec(),
                }
            });
            4
        } else {
            let value = take(bytes, 4, field as usize, "attribute value")
                .map_err(|e| super::payload_shift(e, at))?;
            attributes.push(Attribute::Other {
                attr_type,
                value: value.to_vec(),
            });
            4 + field as usize
        };
        bytes = &bytes[consumed..];
        at += consumed;
    }
    Ok(attributes)
}

pub(super) fn emit_proposals(proposals: &[Proposal], out: &mut Vec<u8>) {
    for (index, proposal) in proposals.iter().enumerate() {
        let start = out.len();
        let more = if index + 1 == proposals.len() { 0 } else { 2 };
        out.extend_from_slice(&[more, 0, 0, 0, proposal.number, proposal.protocol.to_u8()]);
        out.push(proposal.spi.len() as u8);
        out.push(proposal.transforms.len() as u8);
        out.extend_from_slice(&proposal.spi);
        for (t_index, transform) in proposal.transforms.iter().enumerate() {
            emit_transform(transform, t_index + 1 == proposal.transforms.len(), out);
        }
        let length = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&length.to_be_bytes());
    }
}

fn emit_transform(transform: &Transform, last: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[if last { 0 } else { 3 }, 0, 0, 0]);
    out.extend_from_slice(&[transform.transform_type.to_u8(), 0]);
    out.extend_from_slice(&transform.id.to_be_bytes());
    for attribute in &transform.attributes {
        match attribute {
            Attribute::KeyLength(bits) => {
                out.extend_from_slice(&(AF_BIT | ATTR_KEY_LENGTH).to_be_bytes());
                out.extend_from_slice(&bits.to_be_bytes());
            }
            Attribute::Other { attr_type, value } => {
                out.extend_from_slice(&attr_type.to_be_bytes());
                out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    let length = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm_x25519() -> Proposal {
        Proposal {
            number: 1,
            protocol: ProtocolId::Ike,
            spi: Vec::new(),
            transforms: vec![
                Transform::with_key_length(TransformType::Encr, 20, 128),
                Transform::new(TransformType::Prf, 5),
                Transform::new(TransformType::Dh, 31),
            ],
        }
    }

    #[test]
    fn proposal_bytes_match_rfc_layout() {
        let mut out = Vec::new();
        emit_proposals(&[gcm_x25519()], &mut out);
        let expected: Vec<u8> = [
            &[0u8, 0, 0, 36, 1, 1, 0, 3][..],
            &[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 0, 128],
            &[3, 0, 0, 8, 2, 0, 0, 5],
            &[0, 0, 0, 8, 4, 0, 0, 31],
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(parse_proposals(&out).unwrap(), vec![gcm_x25519()]);
    }

    #[test]
    fn several_proposals_with_spis_round_trip() {
        let mut esp = gcm_x25519();
        esp.number = 2;
        esp.protocol = ProtocolId::Esp;
        esp.spi = vec![0xc0, 1, 2, 3];
        esp.transforms.push(Transform {
            transform_type: TransformType::Other(240),
            id: 9,
            attributes: vec![Attribute::Other {
                attr_type: 7,
                value: vec![1, 2, 3],
            }],
        });
        let proposals = vec![gcm_x25519(), esp];
        let mut out = Vec::new();
        emit_proposals(&proposals, &mut out);
        assert_eq!(parse_proposals(&out).unwrap(), proposals);
    }

    #[test]
    fn inconsistent_counts_are_errors() {
        let mut out = Vec::new();
        emit_proposals(&[gcm_x25519()], &mut out);
        let mut more_transforms = out.clone();
        more_transforms[7] = 4;
        assert!(parse_proposals(&more_transforms).is_err());
        let mut fewer_transforms = out.clone();
        fewer_transforms[7] = 2;
        assert!(parse_proposals(&fewer_transforms).is_err());
        let mut bad_marker = out.clone();
        bad_marker[0] = 1;
        assert!(matches!(
            parse_proposals(&bad_marker),
            Err(ParseError::InvalidValue { .. })
        ));
        for cut in 0..out.len() {
            assert!(parse_proposals(&out[..cut]).is_err(), "cut at {cut}");
        }
    }
}
