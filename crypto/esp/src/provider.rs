//! The AEAD provider trait (in the manner of rustls' crypto providers) and its aws-lc-rs implementation.
//!
//! An SA asks its provider once, at creation, for an [`EspAead`] bound to its key; per packet it only
//! calls that object. Peek uses [`EspAead::apply_keystream`] to decrypt a few bytes without the tag.

use crate::error::CryptoError;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
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
                let aead_alg = if algorithm == AeadAlgorithm::Aes128Gcm {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let aead_key = UnboundKey::new(aead_alg, key).map_err(|_| key_error)?;
                Ok(Box::new(AwsLcGcm {
                    aead: LessSafeKey::new(aead_key),
                    ctr: CtrKey::new(key).ok_or(key_error)?,
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

/// The block cipher under GCM, for peek's few keystream blocks. A 1-3 block CTR call through
/// aws-lc-rs's cipher API costs more in per-call wrapper work than in AES, so peek uses
/// RustCrypto's constant-time AES (AES-NI when the CPU has it) with the key expanded once per SA.
// Lives inside the per-SA boxed AEAD; boxing the larger key again would only add a pointer chase.
#[allow(clippy::large_enum_variant)]
enum CtrKey {
    Aes128(aes::Aes128),
    Aes256(aes::Aes256),
}

impl CtrKey {
    fn new(key: &[u8]) -> Option<Self> {
        use aes::cipher::KeyInit;
        match key.len() {
            16 => aes::Aes128::new_from_slice(key).ok().map(CtrKey::Aes128),
            32 => aes::Aes256::new_from_slice(key).ok().map(CtrKey::Aes256),
            _ => None,
        }
    }

    fn encrypt_blocks(&self, blocks: &mut [aes::Block]) {
        use aes::cipher::BlockEncrypt;
        match self {
            CtrKey::Aes128(k) => k.encrypt_blocks(blocks),
            CtrKey::Aes256(k) => k.encrypt_blocks(blocks),
        }
    }
}

struct AwsLcGcm {
    aead: LessSafeKey,
    ctr: CtrKey,
}

/// Keystream blocks computed per batch.
const CTR_BATCH: usize = 4;

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
        let overflow = CryptoError::Provider {
            operation: "AES-CTR counter",
        };
        let first_block = u32::try_from(offset / 16 + 2).map_err(|_| overflow)?;
        let mut skip = offset % 16;
        let mut done = 0;
        let mut counter = first_block;
        while done < data.len() {
            let mut blocks = [aes::Block::default(); CTR_BATCH];
            let wanted = (skip + data.len() - done).div_ceil(16).min(CTR_BATCH);
            for block in &mut blocks[..wanted] {
                block[..NONCE_LEN].copy_from_slice(nonce);
                block[NONCE_LEN..].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.ctr.encrypt_blocks(&mut blocks[..wanted]);
            let mut stream = [0u8; 16 * CTR_BATCH];
            for (chunk, block) in stream.chunks_exact_mut(16).zip(&blocks[..wanted]) {
                chunk.copy_from_slice(block);
            }
            let take = (wanted * 16 - skip).min(data.len() - done);
            let keys = &stream[skip..skip + take];
            for (byte, key) in data[done..done + take].iter_mut().zip(keys) {
                *byte ^= key;
            }
            done += take;
            skip = 0;
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
