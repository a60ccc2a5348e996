//! The DPDK backend (cargo feature `dpdk`).
//!
//! Owns our own bindgen bindings to DPDK 22.11 and the small C shim for its inline functions,
//! the EAL lifetime, ethdev packet ports and cryptodev ESP offload. Every FFI call is `unsafe`
//! and carries its `// SAFETY:` reasoning. Without the feature this crate compiles to nothing.
