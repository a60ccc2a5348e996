//! Sans-io IKEv2 (RFC 7296): message codec, state machine, key derivation.
//!
//! Owns the distributor's key manager (seed figure 5, block 100). It has no sockets and no
//! clocks: callers feed datagrams and the current time in and take datagrams and events out.
#![forbid(unsafe_code)]

mod error;
pub mod wire;

pub use error::{CryptoError, IkeError, ParseError};
pub mod crypto;
