//! The IKE pseudo-random functions and prf+ (RFC 7296 section 2.13).

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// PRF transforms (transform type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Prf {
    pub fn transform_id(self) -> u16 {
        match self {
            Self::HmacSha256 => 5,
            Self::HmacSha384 => 6,
            Self::HmacSha512 => 7,
        }
    }

    pub fn from_transform_id(id: u16) -> Option<Self> {
        match id {
            5 => Some(Self::HmacSha256),
            6 => Some(Self::HmacSha384),
            7 => Some(Self::HmacSha512),
            _ => None,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Output length, which is also the length of SK_d, SK_pi and SK_pr.
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    /// prf(key, data over several pieces).
    pub fn compute(self, key: &[u8], pieces: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut context = hmac::Context::with_key(&key);
        for piece in pieces {
            context.update(piece);
        }
        Zeroizing::new(context.sign().as_ref().to_vec())
    }
}

/// prf+(K, S) = T1 | T2 | ... truncated to `len` bytes, where T1 = prf(K, S | 0x01) and
/// Tn = prf(K, Tn-1 | S | n). RFC 7296 limits n to 255.
pub fn prf_plus(prf: Prf, key: &[u8], seed: &[u8], len: usize) -> Option<Zeroizing<Vec<u8>>> {
    if len > 255 * prf.output_len() {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len + prf.output_len()));
    let mut previous = Zeroizing::new(Vec::new());
    let mut counter = 1u8;
    while out.len() < len {
        previous = prf.compute(key, &[&previous, seed, &[counter]]);
        out.extend_from_slice(&previous);
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        let tag = Prf::HmacSha256.compute(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(&tag[..]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let tag512 = Prf::HmacSha512.compute(b"Jefe", &[b"what do ya want for nothing?"]);
        assert!(hex::encode(&tag512[..]).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd6422"));
    }

    #[test]
    fn prf_plus_chains_blocks_as_rfc7296_defines() {
        let key = [0x0bu8; 20];
        let seed = b"seed";
        let out = prf_plus(Prf::HmacSha256, &key, seed, 70).unwrap();
        let t1 = Prf::HmacSha256.compute(&key, &[seed, &[1]]);
        let t2 = Prf::HmacSha256.compute(&key, &[&t1, seed, &[2]]);
        let t3 = Prf::HmacSha256.compute(&key, &[&t2, seed, &[3]]);
        let expected = [&t1[..], &t2[..], &t3[..6]].concat();
        assert_eq!(&out[..], &expected[..]);
        assert!(prf_plus(Prf::HmacSha256, &key, seed, 255 * 32 + 1).is_none());
    }
}
