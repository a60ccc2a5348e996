//! The AEAD provider trait (in the manner of rustls' crypto providers) and its aws-lc-rs implementation.
//!
//! An SA asks its provider once, at creation, for an [`EspAead`] bound to its key; per packet it only
//! calls that object. Peek uses [`EspAead::apply_keystream`] to decrypt a few bytes without the tag.

use crate::error::CryptoError;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

/// Bytes of an AEAD nonce (salt + explicit IV).
pub const NONCE_LEN: usize = 12;
/// Bytes of an AEAD tag.
pub const TAG_LEN: usize = 16;

/// AEAD algorithms an SA may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AeadAlgorithm {
    /// AES-128-GCM, 16-byte tag.
    Aes128Gcm,
    /// AES-256-GCM, 16-byte tag.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439).
    ChaCha20Poly1305,
}

impl AeadAlgorithm {
    /// Key length in bytes (without any salt).
    pub fn key_len(self) -> usize {
        match self {
            AeadAlgorithm::Aes128Gcm => 16,
            AeadAlgorithm::Aes256Gcm | AeadAlgorithm::ChaCha20Poly1305 => 32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AeadAlgorithm::Aes128Gcm => "AES-128-GCM",
            AeadAlgorithm::Aes256Gcm => "AES-256-GCM",
            AeadAlgorithm::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// A keyed AEAD, built once per SA.
pub trait EspAead: Send + Sync {
    /// Encrypts `in_out` in place and writes the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CryptoError>;

    /// Verifies `tag` and decrypts `in_out` in place. On failure `in_out` is unspecified.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;

    /// XORs `data` with the AEAD's keystream starting at plaintext byte `offset`, without any
    /// authentication: the decryption step of the AEAD alone, for peek.
    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        offset: usize,
        data: &mut [u8],
    ) -> Result<(), CryptoError>;
}

/// Makes keyed AEADs.
pub trait AeadProvider: Send + Sync {
    /// Builds a keyed AEAD. `key` is the cipher key only (no salt).
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn EspAead>, CryptoError>;
}

/// The aws-lc-rs provider (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLcProvider;

impl AeadProvider for AwsLcProvider {
    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn EspAead>, CryptoError> {
        if key.len() != algorithm.key_len() {
            return Err(CryptoError::KeyLength {
                algorithm: algorithm.name(),
                expected: algorithm.key_len(),
                got: key.len(),
            });
        }
        let key_error = CryptoError::Provider {
            operation: "AEAD key setup",
        };
        match algorithm {
            AeadAlgorithm::Aes128Gcm | AeadAlgorithm::Aes256Gcm => {
                let (aead_alg, cipher_alg) = if algorithm == AeadAlgorithm::Aes128Gcm {
                    (&aead::AES_128_GCM, &aws_lc_rs::cipher::AES_128)
                } else {
                    (&aead::AES_256_GCM, &aws_lc_rs::cipher::AES_256)
                };
                let aead_key = UnboundKey::new(aead_alg, key).map_err(|_| key_error)?;
                let ctr_key = UnboundCipherKey::new(cipher_alg, key).map_err(|_| key_error)?;
                Ok(Box::new(AwsLcGcm {
                    aead: LessSafeKey::new(aead_key),
                    ctr: DecryptingKey::ctr(ctr_key).map_err(|_| key_error)?,
                }))
            }
            AeadAlgorithm::ChaCha20Poly1305 => {
                let aead_key =
                    UnboundKey::new(&aead::CHACHA20_POLY1305, key).map_err(|_| key_error)?;
                let mut raw = Zeroizing::new([0u8; 32]);
                raw.copy_from_slice(key);
                Ok(Box::new(AwsLcChaCha {
                    aead: LessSafeKey::new(aead_key),
                    stream_key: raw,
                }))
            }
        }
    }
}

fn nonce_of(nonce: &[u8; NONCE_LEN]) -> Nonce {
    Nonce::assume_unique_for_key(*nonce)
}

fn seal_with(
    key: &LessSafeKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
    tag: &mut [u8; TAG_LEN],
) -> Result<(), CryptoError> {
    let computed = key
        .seal_in_place_separate_tag(nonce_of(nonce), Aad::from(aad), in_out)
        .map_err(|_| CryptoError::Provider {
            operation: "AEAD seal",
        })?;
    tag.copy_from_slice(computed.as_ref());
    Ok(())
}

fn open_with(
    key: &LessSafeKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    key.open_in_place_separate_tag(nonce_of(nonce), Aad::from(aad), tag, in_out)
        .map(|_| ())
        .map_err(|_| CryptoError::TagMismatch)
}

struct AwsLcGcm {
    aead: LessSafeKey,
    ctr: DecryptingKey,
}

impl EspAead for AwsLcGcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        seal_with(&self.aead, nonce, aad, in_out, tag)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        open_with(&self.aead, nonce, aad, in_out, tag)
    }

    /// GCM encrypts plaintext block i with counter block nonce || (i + 2): J0 = nonce || 1 is
    /// reserved for the tag (NIST SP 800-38D). So this is plain AES-CTR from nonce || 2.
    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        offset: usize,
        data: &mut [u8],
    ) -> Result<(), CryptoError> {
        let failed = CryptoError::Provider {
            operation: "AES-CTR keystream",
        };
        let block = u32::try_from(offset / 16 + 2).map_err(|_| failed)?;
        let skip = offset % 16;
        let mut counter = [0u8; 16];
        counter[..NONCE_LEN].copy_from_slice(nonce);
        counter[NONCE_LEN..].copy_from_slice(&block.to_be_bytes());
        // CTR needs to start at a block boundary: work on a small stack window when unaligned.
        if skip == 0 {
            let ctx = DecryptionContext::Iv128(FixedLength::from(counter));
            return self.ctr.decrypt(data, ctx).map(|_| ()).map_err(|_| failed);
        }
        let mut window = [0u8; 128];
        let mut done = 0;
        while done < data.len() {
            let take = (window.len() - skip).min(data.len() - done);
            window[skip..skip + take].copy_from_slice(&data[done..done + take]);
            let ctx = DecryptionContext::Iv128(FixedLength::from(counter));
            self.ctr
                .decrypt(&mut window[..skip + take], ctx)
                .map_err(|_| failed)?;
            data[done..done + take].copy_from_slice(&window[skip..skip + take]);
            done += take;
            let next = u32::from_be_bytes([counter[12], counter[13], counter[14], counter[15]])
                .wrapping_add((window.len() / 16) as u32);
            counter[NONCE_LEN..].copy_from_slice(&next.to_be_bytes());
            window[..skip].fill(0);
        }
        Ok(())
    }
}

struct AwsLcChaCha {
    aead: LessSafeKey,
    stream_key: Zeroizing<[u8; 32]>,
}

impl EspAead for AwsLcChaCha {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        seal_with(&self.aead, nonce, aad, in_out, tag)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        open_with(&self.aead, nonce, aad, in_out, tag)
    }

    /// ChaCha20-Poly1305 uses block 0 for the Poly1305 key; the payload starts at block 1
    /// (RFC 8439 section 2.8), i.e. keystream byte 64.
    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        offset: usize,
        data: &mut [u8],
    ) -> Result<(), CryptoError> {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut stream = chacha20::ChaCha20::new(
            chacha20::Key::from_slice(self.stream_key.as_slice()),
            chacha20::Nonce::from_slice(nonce),
        );
        stream
            .try_seek(64 + offset as u64)
            .map_err(|_| CryptoError::Provider {
                operation: "ChaCha20 seek",
            })?;
        stream
            .try_apply_keystream(data)
            .map_err(|_| CryptoError::Provider {
                operation: "ChaCha20 keystream",
            })
    }
}
