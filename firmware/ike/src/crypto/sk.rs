//! The Encrypted and Authenticated (SK) payload: AES-GCM-16 (RFC 5282) and AES-CBC with
//! HMAC-SHA-256-128 (RFC 7296 section 3.14).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

use super::{random_bytes, DirectionKeys, Encr, IkeSuite, Integ};
use crate::wire::{Header, HEADER_LEN};
use crate::CryptoError;

const GCM_IV_LEN: usize = 8;
const GCM_SALT_LEN: usize = 4;
const GCM_ICV_LEN: usize = 16;
const CBC_BLOCK: usize = 16;
const SK_KIND: u8 = 46;

/// Builds a whole protected message: `header` (its length and next-payload are filled in here)
/// followed by an SK payload that wraps the payload chain `inner`, whose first type is
/// `first_inner`.
pub fn seal_sk(
    suite: &IkeSuite,
    keys: &DirectionKeys,
    mut header: Header,
    first_inner: u8,
    inner: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (iv_len, pad_len, icv_len) = match suite.encr {
        Encr::AesGcm16 { .. } => (GCM_IV_LEN, 0, GCM_ICV_LEN),
        Encr::AesCbc { .. } => {
            let integ = suite
                .integ
                .ok_or(CryptoError::Library("CBC without integrity"))?;
            let pad = (CBC_BLOCK - (inner.len() + 1) % CBC_BLOCK) % CBC_BLOCK;
            (CBC_BLOCK, pad, integ.icv_len())
        }
    };
    let plain_len = inner.len() + pad_len + 1;
    let sk_len = 4 + iv_len + plain_len + icv_len;
    header.next_payload = SK_KIND;
    header.length = (HEADER_LEN + sk_len) as u32;
    let mut message = vec![0u8; HEADER_LEN];
    let mut fixed = [0u8; HEADER_LEN];
    header.emit(&mut fixed);
    message.copy_from_slice(&fixed);
    message.extend_from_slice(&[first_inner, 0]);
    message.extend_from_slice(&(sk_len as u16).to_be_bytes());
    let iv = random_bytes(iv_len)?;
    message.extend_from_slice(&iv);
    let plain_start = message.len();
    message.extend_from_slice(inner);
    message.resize(message.len() + pad_len, 0);
    message.push(pad_len as u8);
    match suite.encr {
        Encr::AesGcm16 { .. } => seal_gcm(keys, &mut message, plain_start)?,
        Encr::AesCbc { .. } => {
            encrypt_cbc(keys, &iv, &mut message[plain_start..])?;
            let icv = mac(keys, &message)?;
            message.extend_from_slice(&icv[..icv_len]);
        }
    }
    Ok(message)
}

fn gcm_key(keys: &DirectionKeys) -> Result<(LessSafeKey, [u8; GCM_SALT_LEN]), CryptoError> {
    let split = keys
        .encr
        .len()
        .checked_sub(GCM_SALT_LEN)
        .ok_or(CryptoError::Library("GCM key too short"))?;
    let algorithm = match split {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(CryptoError::Library("GCM key length")),
    };
    let key = UnboundKey::new(algorithm, &keys.encr[..split])
        .map_err(|_| CryptoError::Library("GCM key"))?;
    let mut salt = [0u8; GCM_SALT_LEN];
    salt.copy_from_slice(&keys.encr[split..]);
    Ok((LessSafeKey::new(key), salt))
}

fn gcm_nonce(salt: &[u8; GCM_SALT_LEN], iv: &[u8]) -> Result<Nonce, CryptoError> {
    let mut nonce = [0u8; 12];
    nonce[..GCM_SALT_LEN].copy_from_slice(salt);
    nonce[GCM_SALT_LEN..].copy_from_slice(iv);
    Ok(Nonce::assume_unique_for_key(nonce))
}

fn seal_gcm(
    keys: &DirectionKeys,
    message: &mut Vec<u8>,
    plain_start: usize,
) -> Result<(), CryptoError> {
    let (key, salt) = gcm_key(keys)?;
    let aad_end = plain_start - GCM_IV_LEN;
    let nonce = gcm_nonce(&salt, &message[aad_end..plain_start])?;
    let (head, plain) = message.split_at_mut(plain_start);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(&head[..aad_end]), plain)
        .map_err(|_| CryptoError::Library("GCM seal"))?;
    message.extend_from_slice(tag.as_ref());
    Ok(())
}

fn cbc_unbound(keys: &DirectionKeys) -> Result<UnboundCipherKey, CryptoError> {
    let algorithm = match keys.encr.len() {
        16 => &aws_lc_rs::cipher::AES_128,
        32 => &aws_lc_rs::cipher::AES_256,
        _ => return Err(CryptoError::Library("CBC key length")),
    };
    UnboundCipherKey::new(algorithm, &keys.encr).map_err(|_| CryptoError::Library("CBC key"))
}

fn iv_block(iv: &[u8]) -> Result<FixedLength<CBC_BLOCK>, CryptoError> {
    FixedLength::try_from(iv).map_err(|_| CryptoError::Library("CBC IV length"))
}

fn encrypt_cbc(keys: &DirectionKeys, iv: &[u8], data: &mut [u8]) -> Result<(), CryptoError> {
    let key = EncryptingKey::cbc(cbc_unbound(keys)?).map_err(|_| CryptoError::Library("CBC"))?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128(iv_block(iv)?))
        .map_err(|_| CryptoError::Library("CBC encrypt"))?;
    Ok(())
}

fn mac(keys: &DirectionKeys, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if keys.integ.len() != Integ::HmacSha256_128.key_len() {
        return Err(CryptoError::Library("integrity key length"));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &keys.integ);
    Ok(Zeroizing::new(hmac::sign(&key, data).as_ref().to_vec()))
}

/// Verifies and decrypts the SK payload whose generic header starts at `sk_offset` in
/// `message` (which runs to the end of the message). Returns the inner payload chain.
pub fn open_sk(
    suite: &IkeSuite,
    keys: &DirectionKeys,
    message: &[u8],
    sk_offset: usize,
) -> Result<Vec<u8>, CryptoError> {
    let body_start = sk_offset + 4;
    let body = message
        .get(body_start..)
        .ok_or(CryptoError::BadCiphertextLength(0))?;
    let mut plain = match suite.encr {
        Encr::AesGcm16 { .. } => open_gcm(keys, &message[..body_start], body)?,
        Encr::AesCbc { .. } => {
            let integ = suite
                .integ
                .ok_or(CryptoError::Library("CBC without integrity"))?;
            open_cbc(keys, integ, &message[..body_start], body)?
        }
    };
    strip_padding(&mut plain)?;
    Ok(plain)
}

fn open_gcm(keys: &DirectionKeys, aad: &[u8], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if body.len() < GCM_IV_LEN + 1 + GCM_ICV_LEN {
        return Err(CryptoError::BadCiphertextLength(body.len()));
    }
    let (key, salt) = gcm_key(keys)?;
    let nonce = gcm_nonce(&salt, &body[..GCM_IV_LEN])?;
    let mut in_out = body[GCM_IV_LEN..].to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut in_out)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    in_out.truncate(plain_len);
    Ok(in_out)
}

fn open_cbc(
    keys: &DirectionKeys,
    integ: Integ,
    aad: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let icv_len = integ.icv_len();
    let cipher_len = body.len().saturating_sub(CBC_BLOCK + icv_len);
    if body.len() < CBC_BLOCK * 2 + icv_len || !cipher_len.is_multiple_of(CBC_BLOCK) {
        return Err(CryptoError::BadCiphertextLength(body.len()));
    }
    let mac_end = body.len() - icv_len;
    let mut macced = Vec::with_capacity(aad.len() + mac_end);
    macced.extend_from_slice(aad);
    macced.extend_from_slice(&body[..mac_end]);
    let expected = mac(keys, &macced)?;
    verify_slices_are_equal(&expected[..icv_len], &body[mac_end..])
        .map_err(|_| CryptoError::Integrity)?;
    let mut data = body[CBC_BLOCK..mac_end].to_vec();
    let key = DecryptingKey::cbc(cbc_unbound(keys)?).map_err(|_| CryptoError::Library("CBC"))?;
    let plain_len = key
        .decrypt(
            &mut data,
            DecryptionContext::Iv128(iv_block(&body[..CBC_BLOCK])?),
        )
        .map_err(|_| CryptoError::Integrity)?
        .len();
    data.truncate(plain_len);
    Ok(data)
}

fn strip_padding(plain: &mut Vec<u8>) -> Result<(), CryptoError> {
    let pad_len = *plain.last().ok_or(CryptoError::Integrity)? as usize;
    let keep = plain
        .len()
        .checked_sub(pad_len + 1)
        .ok_or(CryptoError::Integrity)?;
    plain.truncate(keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Exchange, HeaderView, FLAG_INITIATOR};

    fn header() -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: 0,
            exchange: Exchange::IkeAuth,
            flags: FLAG_INITIATOR,
            message_id: 1,
            length: 0,
        }
    }

    fn keys(suite: &IkeSuite) -> DirectionKeys {
        DirectionKeys {
            encr: Zeroizing::new(vec![0x42; suite.encr.keymat_len()]),
            integ: Zeroizing::new(vec![0x24; suite.integ.map_or(0, Integ::key_len)]),
        }
    }

    fn check_suite(suite: IkeSuite) {
        let keys = keys(&suite);
        for inner_len in [0usize, 1, 15, 16, 17, 100] {
            let inner: Vec<u8> = (0..inner_len as u8).collect();
            let message = seal_sk(&suite, &keys, header(), 40, &inner).unwrap();
            let view = HeaderView::new_checked(&message).unwrap();
            let payloads = view.payloads().unwrap();
            assert_eq!(payloads.len(), 1);
            assert_eq!(payloads[0].kind, SK_KIND);
            assert_eq!(
                open_sk(&suite, &keys, &message, payloads[0].offset).unwrap(),
                inner
            );
            if matches!(suite.encr, Encr::AesCbc { .. }) {
                assert_eq!((message.len() - HEADER_LEN - 4 - 16) % 16, 0);
            }
            // Any flipped bit, in the header or the payload, fails the integrity check.
            for position in [0, 20, HEADER_LEN + 1, HEADER_LEN + 6, message.len() - 1] {
                let mut tampered = message.clone();
                tampered[position] ^= 0x01;
                assert!(
                    open_sk(&suite, &keys, &tampered, HEADER_LEN).is_err(),
                    "flip at {position} accepted"
                );
            }
            assert!(open_sk(&suite, &keys, &message[..message.len() - 1], HEADER_LEN).is_err());
        }
    }

    #[test]
    fn gcm_seals_and_opens_with_tamper_detection() {
        check_suite(IkeSuite::AES128GCM_SHA256_X25519);
        check_suite(IkeSuite {
            encr: Encr::AesGcm16 { key_bits: 256 },
            ..IkeSuite::AES128GCM_SHA256_X25519
        });
    }

    #[test]
    fn cbc_hmac_seals_and_opens_with_tamper_detection() {
        check_suite(IkeSuite::AES256CBC_SHA256_MODP2048);
    }

    #[test]
    fn gcm_ciphertext_matches_an_independent_aes_gcm() {
        // AES-128-GCM test case 3 of the GCM specification (McGrew and Viega), split the way
        // RFC 5282 splits it: 4-byte salt from the key material, 8-byte IV in the payload.
        let key = hex::decode("feffe9928665731c6d6a8f9467308308").unwrap();
        let nonce = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let keys = DirectionKeys {
            encr: Zeroizing::new([key, nonce[..4].to_vec()].concat()),
            integ: Zeroizing::new(Vec::new()),
        };
        let plain = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        )
        .unwrap();
        let mut body = nonce[4..].to_vec();
        let (sealing, _) = gcm_key(&keys).unwrap();
        let mut data = plain.clone();
        let tag = sealing
            .seal_in_place_separate_tag(
                gcm_nonce(&[0xca, 0xfe, 0xba, 0xbe], &nonce[4..]).unwrap(),
                Aad::empty(),
                &mut data,
            )
            .unwrap();
        assert_eq!(
            hex::encode(&data),
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        );
        assert_eq!(
            hex::encode(tag.as_ref()),
            "4d5c2af327cd64a62cf35abd2ba6fab4"
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(tag.as_ref());
        assert_eq!(open_gcm(&keys, &[], &body).unwrap(), plain);
    }
}
