//! ESP/AH transform suites and their wire parameters.

/// A cryptographic suite of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// AES-GCM with a 16-byte ICV and a 128-bit key (RFC 4106). Key material: 16 key bytes + 4 salt bytes.
    Aes128Gcm16,
    /// AES-GCM with a 16-byte ICV and a 256-bit key (RFC 4106). Key material: 32 key bytes + 4 salt bytes.
    Aes256Gcm16,
    /// ChaCha20-Poly1305 (RFC 7634). Key material: 32 key bytes + 4 salt bytes.
    ChaCha20Poly1305,
    /// AES-128-CBC (RFC 3602) with HMAC-SHA-256-128 (RFC 4868). Encryption key 16 bytes, auth key 32 bytes.
    Aes128CbcHmacSha256,
    /// AES-256-CBC (RFC 3602) with HMAC-SHA-256-128 (RFC 4868). Encryption key 32 bytes, auth key 32 bytes.
    Aes256CbcHmacSha256,
    /// ESP-null (RFC 2410) or AH with HMAC-SHA-256-128: integrity only. Auth key 32 bytes.
    NullHmacSha256,
}

/// Bytes of the ICV of every supported suite.
pub const ICV_LEN: usize = 16;

impl Suite {
    /// All suites, for tests and tools.
    pub const ALL: [Suite; 6] = [
        Suite::Aes128Gcm16,
        Suite::Aes256Gcm16,
        Suite::ChaCha20Poly1305,
        Suite::Aes128CbcHmacSha256,
        Suite::Aes256CbcHmacSha256,
        Suite::NullHmacSha256,
    ];

    /// The name used by the CLI and in messages (strongSwan proposal style).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes128Gcm16 => "aes128gcm16",
            Suite::Aes256Gcm16 => "aes256gcm16",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
            Suite::Aes128CbcHmacSha256 => "aes128cbc-sha256",
            Suite::Aes256CbcHmacSha256 => "aes256cbc-sha256",
            Suite::NullHmacSha256 => "null-sha256",
        }
    }

    /// Parses [`Suite::name`].
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Length of the encryption key material (for AEADs including the 4-byte salt).
    pub fn enc_key_len(self) -> usize {
        match self {
            Suite::Aes128Gcm16 => 20,
            Suite::Aes256Gcm16 | Suite::ChaCha20Poly1305 => 36,
            Suite::Aes128CbcHmacSha256 => 16,
            Suite::Aes256CbcHmacSha256 => 32,
            Suite::NullHmacSha256 => 0,
        }
    }

    /// Length of the integrity key (0 for AEADs).
    pub fn auth_key_len(self) -> usize {
        if self.is_aead() {
            0
        } else {
            32
        }
    }

    /// Whether the suite is a combined-mode AEAD.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Suite::Aes128Gcm16 | Suite::Aes256Gcm16 | Suite::ChaCha20Poly1305
        )
    }

    /// Whether the payload is encrypted (false for ESP-null).
    pub fn encrypts(self) -> bool {
        self != Suite::NullHmacSha256
    }

    /// Bytes of the explicit IV carried in each ESP packet.
    pub fn iv_len(self) -> usize {
        match self {
            Suite::Aes128Gcm16 | Suite::Aes256Gcm16 | Suite::ChaCha20Poly1305 => 8,
            Suite::Aes128CbcHmacSha256 | Suite::Aes256CbcHmacSha256 => 16,
            Suite::NullHmacSha256 => 0,
        }
    }

    /// Alignment of payload + padding + 2 trailer bytes (the cipher block, at least 4).
    pub fn pad_align(self) -> usize {
        match self {
            Suite::Aes128CbcHmacSha256 | Suite::Aes256CbcHmacSha256 => 16,
            _ => 4,
        }
    }

    /// Bytes of the ICV.
    pub fn icv_len(self) -> usize {
        ICV_LEN
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
