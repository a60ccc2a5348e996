//! Diffie-Hellman groups 14 (MODP 2048), 19 (ECP 256) and 31 (Curve25519).
//!
//! X25519 and P-256 use aws-lc-rs. MODP 2048 uses crypto-bigint's constant-time Montgomery
//! exponentiation, because aws-lc-rs exposes no modular exponentiation.

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Odd, U2048, U512};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// RFC 3526 group 14 prime.
const MODP2048_PRIME: Odd<U2048> = Odd::<U2048>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF"
));
const MODP2048_LEN: usize = 256;
/// Private exponent length: 512 bits, twice the 2048-bit group's security strength (RFC 3526).
const MODP_EXPONENT_LEN: usize = 64;

/// A Diffie-Hellman group (transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DhGroup {
    Modp2048,
    Ecp256,
    Curve25519,
}

impl DhGroup {
    pub fn id(self) -> u16 {
        match self {
            Self::Modp2048 => 14,
            Self::Ecp256 => 19,
            Self::Curve25519 => 31,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            14 => Some(Self::Modp2048),
            19 => Some(Self::Ecp256),
            31 => Some(Self::Curve25519),
            _ => None,
        }
    }

    /// Length of the KE payload's data for this group.
    pub fn public_len(self) -> usize {
        match self {
            Self::Modp2048 => MODP2048_LEN,
            Self::Ecp256 => 64,
            Self::Curve25519 => 32,
        }
    }

    /// Generates a fresh private value.
    pub fn generate(self) -> Result<DhPrivate, CryptoError> {
        let secret = match self {
            Self::Modp2048 => {
                let exponent = Zeroizing::new(super::random_bytes(MODP_EXPONENT_LEN)?);
                Secret::Modp(Box::new(ModpExponent::from_bytes(&exponent)))
            }
            Self::Ecp256 => Secret::Ec(
                agreement::PrivateKey::generate(&agreement::ECDH_P256)
                    .map_err(|_| CryptoError::Library("P-256 key generation"))?,
            ),
            Self::Curve25519 => Secret::Ec(
                agreement::PrivateKey::generate(&agreement::X25519)
                    .map_err(|_| CryptoError::Library("X25519 key generation"))?,
            ),
        };
        DhPrivate::with_secret(self, secret)
    }
}

struct ModpExponent(U512);

impl ModpExponent {
    fn from_bytes(bytes: &[u8]) -> Self {
        Self(U512::from_be_slice(bytes))
    }
}

impl Drop for ModpExponent {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

enum Secret {
    Modp(Box<ModpExponent>),
    Ec(agreement::PrivateKey),
}

/// Our private DH value together with the public value we send in KE.
pub struct DhPrivate {
    group: DhGroup,
    secret: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("group", &self.group)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl DhPrivate {
    fn with_secret(group: DhGroup, secret: Secret) -> Result<Self, CryptoError> {
        let public = match &secret {
            Secret::Modp(exponent) => modp_pow(&U2048::from(2u8), &exponent.0)
                .to_be_bytes()
                .to_vec(),
            Secret::Ec(key) => {
                let public = key
                    .compute_public_key()
                    .map_err(|_| CryptoError::Library("public key"))?;
                let bytes = public.as_ref();
                match group {
                    // IKE carries the P-256 point as x | y without the 0x04 prefix (RFC 5903).
                    DhGroup::Ecp256 => bytes.get(1..).unwrap_or_default().to_vec(),
                    _ => bytes.to_vec(),
                }
            }
        };
        Ok(Self {
            group,
            secret,
            public,
        })
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The KE payload data.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's KE data, validated for the group.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let invalid = CryptoError::InvalidPublicValue {
            group: self.group.id(),
        };
        if peer.len() != self.group.public_len() {
            return Err(invalid);
        }
        match &self.secret {
            Secret::Modp(exponent) => modp_shared(peer, &exponent.0).ok_or(invalid),
            Secret::Ec(key) => {
                let point;
                let (algorithm, peer_bytes): (_, &[u8]) = match self.group {
                    DhGroup::Ecp256 => {
                        point = [&[4u8][..], peer].concat();
                        (&agreement::ECDH_P256, &point)
                    }
                    _ => (&agreement::X25519, peer),
                };
                agreement::agree(
                    key,
                    UnparsedPublicKey::new(algorithm, peer_bytes),
                    invalid,
                    |secret| Ok(Zeroizing::new(secret.to_vec())),
                )
            }
        }
    }
}

fn modp_params() -> MontyParams<{ U2048::LIMBS }> {
    MontyParams::new_vartime(MODP2048_PRIME)
}

fn modp_pow(base: &U2048, exponent: &U512) -> U2048 {
    MontyForm::new(base, modp_params()).pow(exponent).retrieve()
}

/// Checks 1 < y < p - 1 (RFC 7296 section 5 / SP 800-56A) and computes y^x mod p.
fn modp_shared(peer: &[u8], exponent: &U512) -> Option<Zeroizing<Vec<u8>>> {
    let y = U2048::from_be_slice(peer);
    let p_minus_one = MODP2048_PRIME.as_ref().wrapping_sub(&U2048::ONE);
    if y <= U2048::ONE || y >= p_minus_one {
        return None;
    }
    Some(Zeroizing::new(
        modp_pow(&y, exponent).to_be_bytes().to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modp2048_matches_independent_known_answers() {
        // Computed with Python's built-in pow(): A = 2^a, B = 2^b, S = A^b mod p.
        let kat: Vec<Vec<u8>> = include_str!("../../tests/data/modp2048_kat.txt")
            .lines()
            .map(|l| hex::decode(l).unwrap())
            .collect();
        let a = DhPrivate::with_secret(
            DhGroup::Modp2048,
            Secret::Modp(Box::new(ModpExponent::from_bytes(
                &hex::decode("0123456789abcdef".repeat(8)).unwrap(),
            ))),
        )
        .unwrap();
        assert_eq!(a.public_value(), &kat[0][..]);
        assert_eq!(&a.shared_secret(&kat[1]).unwrap()[..], &kat[2][..]);
    }

    #[test]
    fn modp2048_rejects_degenerate_values() {
        let ours = DhGroup::Modp2048.generate().unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert!(ours.shared_secret(&one).is_err());
        assert!(ours.shared_secret(&[0xff; 256]).is_err());
        assert!(ours.shared_secret(&[2; 255]).is_err());
    }

    #[test]
    fn every_group_agrees_with_itself() {
        for group in [DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Curve25519] {
            let a = group.generate().unwrap();
            let b = group.generate().unwrap();
            assert_eq!(a.public_value().len(), group.public_len());
            let ab = a.shared_secret(b.public_value()).unwrap();
            let ba = b.shared_secret(a.public_value()).unwrap();
            assert_eq!(ab, ba, "{group:?}");
            assert_ne!(a.public_value(), b.public_value());
        }
    }

    #[test]
    fn x25519_matches_rfc7748_section_6_1() {
        let alice_private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let key =
            agreement::PrivateKey::from_private_key(&agreement::X25519, &alice_private).unwrap();
        let alice = DhPrivate::with_secret(DhGroup::Curve25519, Secret::Ec(key)).unwrap();
        assert_eq!(
            hex::encode(alice.public_value()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let bob_public =
            hex::decode("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .unwrap();
        assert_eq!(
            hex::encode(&alice.shared_secret(&bob_public).unwrap()[..]),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }

    #[test]
    fn ecp256_rejects_a_point_off_the_curve() {
        let a = DhGroup::Ecp256.generate().unwrap();
        let mut bad = DhGroup::Ecp256.generate().unwrap().public_value().to_vec();
        bad[63] ^= 1;
        assert!(a.shared_secret(&bad).is_err());
    }
}
