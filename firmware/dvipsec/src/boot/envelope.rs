//! What a booted box puts around each frame it sends over an XCF stream.
//!
//! One box may run both a distributor core and a target core, and each stream joins two boxes,
//! so every frame names the core it is for. The envelope also carries what a target needs to
//! attach to the distributor's coupling-facility region (its epoch and incarnation), which the
//! cluster protocol leaves to the box.
//!
//! Layout: version (1 byte), kind (1 byte), body. Kinds: 1 = cluster frame for the distributor
//! core, 2 = cluster frame for the target core, 3 = CF attach (epoch u64, incarnation u64, big
//! endian), 4 = membership frame (heartbeats).

use zeroize::Zeroizing;

const VERSION: u8 = 1;
pub const TO_DISTRIBUTOR: u8 = 1;
pub const TO_TARGET: u8 = 2;
const CF_ATTACH: u8 = 3;
pub const TO_MEMBERSHIP: u8 = 4;
const CF_ATTACH_LEN: usize = 16;

/// One decoded envelope; cluster frames borrow the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    ToDistributor(&'a [u8]),
    ToTarget(&'a [u8]),
    Membership(&'a [u8]),
    CfAttach { epoch: u64, incarnation: u64 },
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("envelope shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("envelope version {0} is not understood")]
    Version(u8),
    #[error("envelope kind {0} is not understood")]
    Kind(u8),
    #[error("CF attach body is {0} bytes, not 16")]
    AttachLength(usize),
}

/// A frame for the far box's core `kind` ([`TO_DISTRIBUTOR`], [`TO_TARGET`],
/// [`TO_MEMBERSHIP`]).
pub fn wrap(kind: u8, frame: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(frame.len() + 2));
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(frame);
    out
}

/// The CF attach message.
pub fn cf_attach(epoch: u64, incarnation: u64) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 + CF_ATTACH_LEN));
    out.extend_from_slice(&[VERSION, CF_ATTACH]);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&incarnation.to_be_bytes());
    out
}

/// Decodes an envelope.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let [version, kind, body @ ..] = bytes else {
        return Err(EnvelopeError::Short(bytes.len()));
    };
    if *version != VERSION {
        return Err(EnvelopeError::Version(*version));
    }
    match *kind {
        TO_DISTRIBUTOR => Ok(Envelope::ToDistributor(body)),
        TO_TARGET => Ok(Envelope::ToTarget(body)),
        TO_MEMBERSHIP => Ok(Envelope::Membership(body)),
        CF_ATTACH => {
            let fixed: &[u8; CF_ATTACH_LEN] = body
                .try_into()
                .map_err(|_| EnvelopeError::AttachLength(body.len()))?;
            let (epoch, incarnation) = fixed.split_at(8);
            Ok(Envelope::CfAttach {
                epoch: u64::from_be_bytes(epoch.try_into().unwrap_or_default()),
                incarnation: u64::from_be_bytes(incarnation.try_into().unwrap_or_default()),
            })
        }
        other => Err(EnvelopeError::Kind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let frame = [9u8, 8, 7];
        assert_eq!(
            decode(&wrap(TO_DISTRIBUTOR, &frame)),
            Ok(Envelope::ToDistributor(&frame[..]))
        );
        assert_eq!(
            decode(&wrap(TO_TARGET, &frame)),
            Ok(Envelope::ToTarget(&frame[..]))
        );
        assert_eq!(
            decode(&wrap(TO_MEMBERSHIP, &frame)),
            Ok(Envelope::Membership(&frame[..]))
        );
        assert_eq!(
            decode(&cf_attach(7, 0xdead_beef_0000_0001)),
            Ok(Envelope::CfAttach {
                epoch: 7,
                incarnation: 0xdead_beef_0000_0001
            })
        );
    }

    #[test]
    fn malformed_envelopes_are_refused_by_cause() {
        assert_eq!(decode(&[1]), Err(EnvelopeError::Short(1)));
        assert_eq!(decode(&[2, 1]), Err(EnvelopeError::Version(2)));
        assert_eq!(decode(&[1, 9]), Err(EnvelopeError::Kind(9)));
        assert_eq!(decode(&[1, 3, 0]), Err(EnvelopeError::AttachLength(1)));
        let mut long = cf_attach(1, 2).to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(EnvelopeError::AttachLength(17)));
    }
}
