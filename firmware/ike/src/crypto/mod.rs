//! IKE cryptography: algorithm suites, Diffie-Hellman, the PRF and prf+, key derivation and the
//! SK payload's protection.

mod dh;
mod keys;
mod prf;
mod sk;
mod suite;

pub use dh::{DhGroup, DhPrivate};
pub use keys::{derive_child_keys, derive_ike_keys, skeyseed, ChildKeys, DirectionKeys, IkeKeys};
pub use prf::{prf_plus, Prf};
pub use sk::{open_sk, seal_sk};
pub use suite::{Encr, EspSuite, IkeSuite, Integ};

/// Fills a fresh vector with `len` random bytes from the operating system.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, crate::CryptoError> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| crate::CryptoError::Library("random"))?;
    Ok(bytes)
}
