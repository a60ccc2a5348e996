//! The AEAD provider trait (in the manner of rustls' crypto providers) and its aws-lc-rs implementation.
//!
//! An SA asks its provider once, at creation, for an [`EspAead`] bound to its key; per packet it only
//! calls that object. Peek uses [`EspAead::apply_keystream`] to decrypt a few bytes without the tag.

use crate::chacha::ChaChaKey;
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

    /// For a counter-mode AEAD built on AES (GCM): encrypts each of `blocks` in place with the
    /// AEAD's block cipher, so that a burst peek can compute the counter blocks of many packets in
    /// one pipelined call. Returns `false`, leaving `blocks` untouched, when the AEAD has no such
    /// block cipher (the default); the caller then uses [`EspAead::apply_keystream`] per packet.
    fn encrypt_counter_blocks(&self, blocks: &mut [[u8; 16]]) -> bool {
        let _ = blocks;
        false
    }
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
                    stream_key: ChaChaKey::new(&raw),
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

    /// A fixed batch through one backend dispatch.
    #[inline(always)]
    fn encrypt_batch<const N: usize>(&self, blocks: &mut [aes::Block; N]) {
        use aes::cipher::BlockEncrypt;
        let batch = Batch(blocks);
        match self {
            CtrKey::Aes128(k) => k.encrypt_with_backend(batch),
            CtrKey::Aes256(k) => k.encrypt_with_backend(batch),
        }
    }

    /// One block at a time: for peek's one to four blocks the cipher crate's batch machinery
    /// costs more than the AES rounds, and the blocks still overlap in the CPU's pipeline.
    fn encrypt_blocks(&self, blocks: &mut [aes::Block]) {
        use aes::cipher::BlockEncrypt;
        match self {
            CtrKey::Aes128(k) => blocks.iter_mut().for_each(|b| k.encrypt_block(b)),
            CtrKey::Aes256(k) => blocks.iter_mut().for_each(|b| k.encrypt_block(b)),
        }
    }
}

impl CtrKey {
    /// Many blocks through the backend's parallel path (eight blocks in flight with AES-NI).
    /// One backend dispatch for the whole slice.
    fn encrypt_many(&self, blocks: &mut [[u8; 16]]) {
        use aes::cipher::BlockEncrypt;
        let many = ManyBlocks(blocks);
        match self {
            CtrKey::Aes128(k) => k.encrypt_with_backend(many),
            CtrKey::Aes256(k) => k.encrypt_with_backend(many),
        }
    }
}

/// Any number of blocks, fed to the backend in groups of its parallel width.
struct ManyBlocks<'a>(&'a mut [[u8; 16]]);

impl aes::cipher::BlockSizeUser for ManyBlocks<'_> {
    type BlockSize = aes::cipher::consts::U16;
}

impl aes::cipher::BlockClosure for ManyBlocks<'_> {
    #[inline(always)]
    fn call<B: aes::cipher::BlockBackend<BlockSize = Self::BlockSize>>(self, backend: &mut B) {
        use aes::cipher::typenum::Unsigned;
        let width = B::ParBlocksSize::USIZE;
        let mut chunks = self.0.chunks_exact_mut(width);
        for chunk in &mut chunks {
            let mut par = aes::cipher::ParBlocks::<B>::default();
            for (lane, block) in par.iter_mut().zip(chunk.iter()) {
                lane.copy_from_slice(block);
            }
            backend.proc_par_blocks((&mut par).into());
            for (block, lane) in chunk.iter_mut().zip(par.iter()) {
                block.copy_from_slice(lane);
            }
        }
        for block in chunks.into_remainder() {
            let mut single = aes::Block::from(*block);
            backend.proc_block((&mut single).into());
            *block = single.into();
        }
    }
}

/// Counter blocks handed to the AES backend in one call.
struct Batch<'a, const N: usize>(&'a mut [aes::Block; N]);

impl<const N: usize> aes::cipher::BlockSizeUser for Batch<'_, N> {
    type BlockSize = aes::cipher::consts::U16;
}

impl<const N: usize> aes::cipher::BlockClosure for Batch<'_, N> {
    #[inline(always)]
    fn call<B: aes::cipher::BlockBackend<BlockSize = Self::BlockSize>>(self, backend: &mut B) {
        for block in self.0.iter_mut() {
            backend.proc_block(block.into());
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
        let mut counter = u32::try_from(offset / 16)
            .ok()
            .and_then(|block| block.checked_add(2))
            .ok_or(CryptoError::Provider {
                operation: "AES-CTR counter",
            })?;
        let mut skip = offset % 16;
        if skip == 0 && data.len() <= 48 {
            self.apply_aligned_batch::<3>(nonce, counter, data);
            return Ok(());
        }
        if skip == 0 && data.len() <= 64 {
            self.apply_aligned_batch::<4>(nonce, counter, data);
            return Ok(());
        }
        let mut rest = data;
        while !rest.is_empty() {
            let wanted = (skip + rest.len()).div_ceil(16).min(CTR_BATCH);
            let mut blocks = [aes::Block::default(); CTR_BATCH];
            for block in &mut blocks[..wanted] {
                block[..NONCE_LEN].copy_from_slice(nonce);
                block[NONCE_LEN..].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.ctr.encrypt_blocks(&mut blocks[..wanted]);
            let take = (wanted * 16 - skip).min(rest.len());
            let (now, later) = std::mem::take(&mut rest).split_at_mut(take);
            xor_keystream(now, &blocks[..wanted], skip);
            rest = later;
            skip = 0;
        }
        Ok(())
    }

    fn encrypt_counter_blocks(&self, blocks: &mut [[u8; 16]]) -> bool {
        self.ctr.encrypt_many(blocks);
        true
    }
}

impl AwsLcGcm {
    /// Peek's usual call: at most [`CTR_BATCH`] blocks from a block boundary, in one pass over a
    /// fixed batch (the cipher stays in registers; a spare block costs less than a loop).
    #[inline(always)]
    fn apply_aligned_batch<const N: usize>(
        &self,
        nonce: &[u8; NONCE_LEN],
        counter: u32,
        data: &mut [u8],
    ) {
        let blocks: [aes::Block; N] = std::array::from_fn(|i| {
            let mut block = aes::Block::default();
            block[..NONCE_LEN].copy_from_slice(nonce);
            let block_counter = counter.wrapping_add(i as u32);
            block[NONCE_LEN..].copy_from_slice(&block_counter.to_be_bytes());
            block
        });
        let mut blocks = blocks;
        self.ctr.encrypt_batch(&mut blocks);
        if data.len() == 16 * N {
            // The usual case: whole blocks, no per-byte loop.
            for (chunk, block) in data.chunks_exact_mut(16).zip(&blocks) {
                xor_block(chunk, block);
            }
            return;
        }
        for (chunk, block) in data.chunks_mut(16).zip(&blocks) {
            xor_block(chunk, block);
        }
    }
}

/// XORs up to 16 bytes with a keystream block; a whole block in one 128-bit operation.
#[inline(always)]
fn xor_block(chunk: &mut [u8], block: &aes::Block) {
    match <&mut [u8; 16]>::try_from(&mut *chunk) {
        Ok(whole) => {
            let mixed = u128::from_ne_bytes(*whole) ^ u128::from_ne_bytes((*block).into());
            *whole = mixed.to_ne_bytes();
        }
        Err(_) => {
            for (byte, key) in chunk.iter_mut().zip(block.iter()) {
                *byte ^= key;
            }
        }
    }
}

/// XORs `data` with the keystream `blocks`, starting `skip` bytes into the first block. Whole
/// blocks go 16 bytes at a time: peek's ranges usually start on a block boundary.
fn xor_keystream(data: &mut [u8], blocks: &[aes::Block], skip: usize) {
    if skip != 0 {
        let stream = blocks.iter().flat_map(|block| block.iter()).skip(skip);
        for (byte, key) in data.iter_mut().zip(stream) {
            *byte ^= key;
        }
        return;
    }
    let full_blocks = data.len() / 16;
    let mut chunks = data.chunks_exact_mut(16);
    for (chunk, block) in (&mut chunks).zip(blocks) {
        let mut text = [0u8; 16];
        text.copy_from_slice(chunk);
        let mixed = u128::from_ne_bytes(text) ^ u128::from_ne_bytes((*block).into());
        chunk.copy_from_slice(&mixed.to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    if let Some(block) = blocks.get(full_blocks) {
        for (byte, key) in tail.iter_mut().zip(block.iter()) {
            *byte ^= key;
        }
    }
}

struct AwsLcChaCha {
    aead: LessSafeKey,
    stream_key: ChaChaKey,
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
        let mut block_index = offset / 64 + 1;
        let mut skip = offset % 64;
        let mut rest = data;
        while !rest.is_empty() {
            let counter = u32::try_from(block_index).map_err(|_| CryptoError::Provider {
                operation: "ChaCha20 block counter",
            })?;
            let block = self.stream_key.block(counter, nonce);
            let take = (64 - skip).min(rest.len());
            let (now, later) = std::mem::take(&mut rest).split_at_mut(take);
            for (byte, key) in now.iter_mut().zip(&block[skip..]) {
                *byte ^= key;
            }
            rest = later;
            skip = 0;
            block_index += 1;
        }
        Ok(())
    }
}
