//! IKE SA keys (RFC 7296 section 2.14) and child SA keys (section 2.17).

use zeroize::Zeroizing;

use super::{prf_plus, EspSuite, IkeSuite, Integ, Prf};
use crate::CryptoError;

/// Keys protecting one direction of the SK payload or of an ESP SA.
#[derive(Clone)]
pub struct DirectionKeys {
    /// Encryption key; for AES-GCM the 4-byte salt follows the AES key.
    pub encr: Zeroizing<Vec<u8>>,
    /// Integrity key (empty for AEAD).
    pub integ: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DirectionKeys {{ encr: <{} bytes redacted>, integ: <{} bytes redacted> }}",
            self.encr.len(),
            self.integ.len()
        )
    }
}

/// All keys of an IKE SA.
pub struct IkeKeys {
    pub sk_d: Zeroizing<Vec<u8>>,
    /// Protects messages sent by the original initiator (SK_ei, SK_ai).
    pub initiator: DirectionKeys,
    /// Protects messages sent by the original responder (SK_er, SK_ar).
    pub responder: DirectionKeys,
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys { <redacted> }")
    }
}

/// SKEYSEED = prf(Ni | Nr, g^ir) for the first IKE SA.
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], shared: &[u8]) -> Zeroizing<Vec<u8>> {
    let nonces = [ni, nr].concat();
    prf.compute(&nonces, &[shared])
}

/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
pub fn derive_ike_keys(
    suite: &IkeSuite,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, CryptoError> {
    let prf_len = suite.prf.output_len();
    let integ_len = suite.integ.map_or(0, Integ::key_len);
    let encr_len = suite.encr.keymat_len();
    let total = 3 * prf_len + 2 * integ_len + 2 * encr_len;
    let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
    let keymat = prf_plus(suite.prf, skeyseed, &seed, total)
        .ok_or(CryptoError::Library("prf+ output too long"))?;
    let mut cursor = KeyCursor::new(&keymat);
    let sk_d = cursor.next(prf_len);
    let sk_ai = cursor.next(integ_len);
    let sk_ar = cursor.next(integ_len);
    let sk_ei = cursor.next(encr_len);
    let sk_er = cursor.next(encr_len);
    Ok(IkeKeys {
        sk_d,
        initiator: DirectionKeys {
            encr: sk_ei,
            integ: sk_ai,
        },
        responder: DirectionKeys {
            encr: sk_er,
            integ: sk_ar,
        },
        sk_pi: cursor.next(prf_len),
        sk_pr: cursor.next(prf_len),
    })
}

/// Child SA keys, named by the direction of traffic they protect.
#[derive(Debug, Clone)]
pub struct ChildKeys {
    /// Traffic from the initiator of the exchange that created the child SA to its responder.
    pub initiator_to_responder: DirectionKeys,
    pub responder_to_initiator: DirectionKeys,
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr); the initiator-to-responder keys come first,
/// encryption before integrity in each direction.
pub fn derive_child_keys(
    prf: Prf,
    sk_d: &[u8],
    suite: &EspSuite,
    pfs_shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Result<ChildKeys, CryptoError> {
    let seed = Zeroizing::new([pfs_shared.unwrap_or_default(), ni, nr].concat());
    let per_direction = suite.direction_keymat_len();
    let keymat = prf_plus(prf, sk_d, &seed, 2 * per_direction)
        .ok_or(CryptoError::Library("prf+ output too long"))?;
    let mut cursor = KeyCursor::new(&keymat);
    let encr_len = suite.encr.keymat_len();
    let integ_len = suite.integ.map_or(0, Integ::key_len);
    let mut direction = || DirectionKeys {
        encr: cursor.next(encr_len),
        integ: cursor.next(integ_len),
    };
    let initiator_to_responder = direction();
    let responder_to_initiator = direction();
    Ok(ChildKeys {
        initiator_to_responder,
        responder_to_initiator,
    })
}

/// Hands out consecutive slices of keying material; the caller sized it exactly.
struct KeyCursor<'a> {
    keymat: &'a [u8],
    at: usize,
}

impl<'a> KeyCursor<'a> {
    fn new(keymat: &'a [u8]) -> Self {
        Self { keymat, at: 0 }
    }

    fn next(&mut self, len: usize) -> Zeroizing<Vec<u8>> {
        let end = (self.at + len).min(self.keymat.len());
        let key = Zeroizing::new(self.keymat[self.at..end].to_vec());
        self.at = end;
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ike_keys_are_split_in_rfc_order() {
        let suite = IkeSuite::AES256CBC_SHA256_MODP2048;
        let seed = [1u8; 32];
        let (ni, nr) = ([2u8; 32], [3u8; 32]);
        let keys = derive_ike_keys(&suite, &seed, &ni, &nr, 0x11, 0x22).unwrap();
        let stream_seed = [&ni[..], &nr, &0x11u64.to_be_bytes(), &0x22u64.to_be_bytes()].concat();
        let stream = prf_plus(
            Prf::HmacSha256,
            &seed,
            &stream_seed,
            32 * 3 + 32 * 2 + 32 * 2,
        )
        .unwrap();
        assert_eq!(&keys.sk_d[..], &stream[0..32]);
        assert_eq!(&keys.initiator.integ[..], &stream[32..64]);
        assert_eq!(&keys.responder.integ[..], &stream[64..96]);
        assert_eq!(&keys.initiator.encr[..], &stream[96..128]);
        assert_eq!(&keys.responder.encr[..], &stream[128..160]);
        assert_eq!(&keys.sk_pi[..], &stream[160..192]);
        assert_eq!(&keys.sk_pr[..], &stream[192..224]);
    }

    #[test]
    fn gcm_keys_include_salt_and_no_integrity_key() {
        let suite = IkeSuite::AES128GCM_SHA256_X25519;
        let keys = derive_ike_keys(&suite, &[1; 32], &[2; 32], &[3; 32], 1, 2).unwrap();
        assert_eq!(keys.initiator.encr.len(), 20);
        assert!(keys.initiator.integ.is_empty());
        let child = derive_child_keys(
            Prf::HmacSha256,
            &keys.sk_d,
            &EspSuite::AES128GCM,
            None,
            &[2; 32],
            &[3; 32],
        )
        .unwrap();
        let stream = prf_plus(
            Prf::HmacSha256,
            &keys.sk_d,
            &[[2u8; 32], [3; 32]].concat(),
            40,
        )
        .unwrap();
        assert_eq!(&child.initiator_to_responder.encr[..], &stream[..20]);
        assert_eq!(&child.responder_to_initiator.encr[..], &stream[20..40]);
    }

    #[test]
    fn pfs_secret_changes_child_keys_and_debug_is_redacted() {
        let suite = EspSuite::AES256CBC_SHA256;
        let plain =
            derive_child_keys(Prf::HmacSha256, &[9; 32], &suite, None, &[1; 16], &[2; 16]).unwrap();
        let pfs = derive_child_keys(
            Prf::HmacSha256,
            &[9; 32],
            &suite,
            Some(&[7; 32]),
            &[1; 16],
            &[2; 16],
        )
        .unwrap();
        assert_ne!(
            plain.initiator_to_responder.encr,
            pfs.initiator_to_responder.encr
        );
        assert_eq!(plain.responder_to_initiator.integ.len(), 32);
        let shown = format!("{plain:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&format!("{:?}", &plain.initiator_to_responder.encr[..4])));
    }
}
