//! Algorithm suites for the IKE SA and for child SAs, and their SA payload transforms.

use super::{DhGroup, Prf};
use crate::wire::{Proposal, ProtocolId, Transform, TransformType};

const ENCR_AES_CBC: u16 = 12;
const ENCR_AES_GCM_16: u16 = 20;
const AUTH_HMAC_SHA2_256_128: u16 = 12;
const ESN_NONE: u16 = 0;

/// Encryption transforms (transform type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encr {
    /// AES-GCM with a 16-octet ICV (RFC 5282 for IKE, RFC 4106 for ESP).
    AesGcm16 { key_bits: u16 },
    /// AES-CBC (RFC 3602); needs an integrity transform.
    AesCbc { key_bits: u16 },
}

impl Encr {
    fn transform(self) -> Transform {
        match self {
            Self::AesGcm16 { key_bits } => {
                Transform::with_key_length(TransformType::Encr, ENCR_AES_GCM_16, key_bits)
            }
            Self::AesCbc { key_bits } => {
                Transform::with_key_length(TransformType::Encr, ENCR_AES_CBC, key_bits)
            }
        }
    }

    /// Keying material length: the AES key plus, for GCM, the 4-byte salt.
    pub fn keymat_len(self) -> usize {
        match self {
            Self::AesGcm16 { key_bits } => usize::from(key_bits / 8) + 4,
            Self::AesCbc { key_bits } => usize::from(key_bits / 8),
        }
    }

    pub fn is_aead(self) -> bool {
        matches!(self, Self::AesGcm16 { .. })
    }
}

/// Integrity transforms (transform type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Integ {
    /// HMAC-SHA-256 truncated to 128 bits (RFC 4868).
    HmacSha256_128,
}

impl Integ {
    fn transform(self) -> Transform {
        match self {
            Self::HmacSha256_128 => Transform::new(TransformType::Integ, AUTH_HMAC_SHA2_256_128),
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 32,
        }
    }

    pub fn icv_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 16,
        }
    }
}

/// The algorithms of one IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub prf: Prf,
    pub dh: DhGroup,
}

impl IkeSuite {
    /// aes128gcm16-prfsha256-x25519.
    pub const AES128GCM_SHA256_X25519: Self = Self {
        encr: Encr::AesGcm16 { key_bits: 128 },
        integ: None,
        prf: Prf::HmacSha256,
        dh: DhGroup::Curve25519,
    };
    /// aes256-sha256-modp2048.
    pub const AES256CBC_SHA256_MODP2048: Self = Self {
        encr: Encr::AesCbc { key_bits: 256 },
        integ: Some(Integ::HmacSha256_128),
        prf: Prf::HmacSha256,
        dh: DhGroup::Modp2048,
    };

    /// The proposal offering exactly this suite.
    pub fn proposal(&self, number: u8, spi: Vec<u8>) -> Proposal {
        let mut transforms = vec![self.encr.transform()];
        transforms.push(Transform::new(TransformType::Prf, self.prf.transform_id()));
        transforms.extend(self.integ.map(Integ::transform));
        transforms.push(Transform::new(TransformType::Dh, self.dh.id()));
        Proposal {
            number,
            protocol: ProtocolId::Ike,
            spi,
            transforms,
        }
    }

    /// True when `proposal` offers every transform of this suite (and no integrity transform
    /// is demanded where the suite has none).
    pub fn is_offered_by(&self, proposal: &Proposal) -> bool {
        proposal.protocol == ProtocolId::Ike
            && offers(proposal, &self.encr.transform())
            && offers(
                proposal,
                &Transform::new(TransformType::Prf, self.prf.transform_id()),
            )
            && integ_matches(proposal, self.integ)
            && offers(proposal, &Transform::new(TransformType::Dh, self.dh.id()))
    }
}

/// The algorithms of one ESP child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspSuite {
    pub encr: Encr,
    pub integ: Option<Integ>,
    /// The DH group for perfect forward secrecy in CREATE_CHILD_SA; not used in IKE_AUTH.
    pub pfs: Option<DhGroup>,
}

impl EspSuite {
    pub const AES128GCM: Self = Self {
        encr: Encr::AesGcm16 { key_bits: 128 },
        integ: None,
        pfs: None,
    };
    pub const AES256CBC_SHA256: Self = Self {
        encr: Encr::AesCbc { key_bits: 256 },
        integ: Some(Integ::HmacSha256_128),
        pfs: None,
    };

    /// The proposal for this suite with our inbound SPI. `with_dh` adds the PFS group.
    pub fn proposal(&self, number: u8, spi: u32, with_dh: bool) -> Proposal {
        let mut transforms = vec![self.encr.transform()];
        transforms.extend(self.integ.map(Integ::transform));
        if with_dh {
            if let Some(group) = self.pfs {
                transforms.push(Transform::new(TransformType::Dh, group.id()));
            }
        }
        transforms.push(Transform::new(TransformType::Esn, ESN_NONE));
        Proposal {
            number,
            protocol: ProtocolId::Esp,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }

    /// True when `proposal` offers this suite. A DH transform is required only when `with_dh`
    /// and the suite has a PFS group.
    pub fn is_offered_by(&self, proposal: &Proposal, with_dh: bool) -> bool {
        let dh_ok = match (with_dh, self.pfs) {
            (true, Some(group)) => offers(proposal, &Transform::new(TransformType::Dh, group.id())),
            _ => true,
        };
        proposal.protocol == ProtocolId::Esp
            && proposal.spi.len() == 4
            && offers(proposal, &self.encr.transform())
            && integ_matches(proposal, self.integ)
            && offers(proposal, &Transform::new(TransformType::Esn, ESN_NONE))
            && dh_ok
    }

    /// Total child keying material for one direction: encryption then integrity key.
    pub fn direction_keymat_len(&self) -> usize {
        self.encr.keymat_len() + self.integ.map_or(0, Integ::key_len)
    }
}

fn offers(proposal: &Proposal, wanted: &Transform) -> bool {
    proposal.transforms.iter().any(|t| t == wanted)
}

fn integ_matches(proposal: &Proposal, integ: Option<Integ>) -> bool {
    match integ {
        Some(integ) => offers(proposal, &integ.transform()),
        // AEAD: integrity must be absent or NONE (id 0).
        None => proposal
            .transforms
            .iter()
            .all(|t| t.transform_type != TransformType::Integ || t.id == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_match_their_own_proposals_only() {
        let gcm = IkeSuite::AES128GCM_SHA256_X25519;
        let cbc = IkeSuite::AES256CBC_SHA256_MODP2048;
        assert!(gcm.is_offered_by(&gcm.proposal(1, vec![])));
        assert!(cbc.is_offered_by(&cbc.proposal(1, vec![])));
        assert!(!gcm.is_offered_by(&cbc.proposal(1, vec![])));
        assert!(!cbc.is_offered_by(&gcm.proposal(1, vec![])));
        let esp = EspSuite::AES128GCM;
        assert!(esp.is_offered_by(&esp.proposal(1, 0x1234, false), false));
        assert!(!EspSuite::AES256CBC_SHA256.is_offered_by(&esp.proposal(1, 7, false), false));
        // A GCM offer that also carries an integrity transform does not match the AEAD suite.
        let mut with_integ = esp.proposal(1, 7, false);
        with_integ
            .transforms
            .push(Integ::HmacSha256_128.transform());
        assert!(!esp.is_offered_by(&with_integ, false));
    }

    #[test]
    fn pfs_group_is_required_only_when_asked() {
        let pfs = EspSuite {
            pfs: Some(DhGroup::Curve25519),
            ..EspSuite::AES128GCM
        };
        let without_dh = pfs.proposal(1, 9, false);
        assert!(pfs.is_offered_by(&without_dh, false));
        assert!(!pfs.is_offered_by(&without_dh, true));
        assert!(pfs.is_offered_by(&pfs.proposal(1, 9, true), true));
    }
}
