//! The DPDK backend (cargo feature `dpdk`).
//!
//! Owns our own bindgen bindings to DPDK 22.11 and the small C shim for its inline functions,
//! the EAL lifetime ([`Eal`], one per process), ethdev packet ports ([`EthdevPort`], a
//! `dvipsec_ports::PacketPort`) and cryptodev ESP offload ([`CryptodevProvider`], a
//! `dvipsec_esp::AeadProvider`). Every FFI call is `unsafe` and carries its `// SAFETY:`
//! reasoning. Without the feature this crate compiles to nothing and needs no DPDK.

#[cfg(feature = "dpdk")]
mod cryptodev;
#[cfg(feature = "dpdk")]
mod eal;
#[cfg(feature = "dpdk")]
mod error;
#[cfg(feature = "dpdk")]
mod ethdev;
#[cfg(feature = "dpdk")]
mod ffi;
#[cfg(feature = "dpdk")]
mod mempool;
#[cfg(feature = "dpdk")]
mod ring;

#[cfg(feature = "dpdk")]
pub use cryptodev::{Cryptodev, CryptodevProvider, MAX_CRYPTO_TEXT};
#[cfg(feature = "dpdk")]
pub use eal::Eal;
#[cfg(feature = "dpdk")]
pub use error::{DpdkError, RteError};
#[cfg(feature = "dpdk")]
pub use ethdev::{EthdevConfig, EthdevPort};
#[cfg(feature = "dpdk")]
pub use ring::RingLink;
