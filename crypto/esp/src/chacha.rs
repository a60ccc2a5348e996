//! The ChaCha20 block function (RFC 8439 section 2.3), for peek's few keystream bytes. Peek needs
//! one 64-byte block; the stream cipher crates compute four at a time with per-call setup, which
//! costs peek more than the block itself.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// "expand 32-byte k" as four little-endian words.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// A ChaCha20 key as eight little-endian words, built once per SA. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChaChaKey([u32; 8]);

impl ChaChaKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let mut words = [0u32; 8];
        for (word, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        ChaChaKey(words)
    }

    /// Keystream block `counter` for `nonce`.
    #[inline]
    pub(crate) fn block(&self, counter: u32, nonce: &[u8; 12]) -> [u8; 64] {
        let mut input = [0u32; 16];
        input[..4].copy_from_slice(&SIGMA);
        input[4..12].copy_from_slice(&self.0);
        input[12] = counter;
        for (word, bytes) in input[13..].iter_mut().zip(nonce.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let mut state = input;
        for _ in 0..10 {
            double_round(&mut state);
        }
        let mut out = [0u8; 64];
        for ((bytes, word), start) in out.chunks_exact_mut(4).zip(state).zip(input) {
            bytes.copy_from_slice(&word.wrapping_add(start).to_le_bytes());
        }
        out
    }
}

/// A column round then a diagonal round.
#[inline(always)]
fn double_round(s: &mut [u32; 16]) {
    quarter_round(s, 0, 4, 8, 12);
    quarter_round(s, 1, 5, 9, 13);
    quarter_round(s, 2, 6, 10, 14);
    quarter_round(s, 3, 7, 11, 15);
    quarter_round(s, 0, 5, 10, 15);
    quarter_round(s, 1, 6, 11, 12);
    quarter_round(s, 2, 7, 8, 13);
    quarter_round(s, 3, 4, 9, 14);
}

#[inline(always)]
fn quarter_round(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 section 2.3.2: key 00 01 .. 1f, nonce 00 00 00 09 00 00 00 4a 00 00 00 00,
    /// block counter 1.
    #[test]
    fn block_matches_rfc8439_2_3_2() {
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let nonce = [0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let expected = "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                        d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e";
        let block = ChaChaKey::new(&key).block(1, &nonce);
        let hex: String = block.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }
}
