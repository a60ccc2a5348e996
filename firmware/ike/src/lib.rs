//! Sans-io IKEv2 (RFC 7296): message codec, state machine, key derivation.
//!
//! Owns the distributor's key manager (seed figure 5, block 100). It has no sockets and no
//! clocks: callers feed datagrams and the current time in and take datagrams and events out
//! through [`Endpoint`].
#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
mod endpoint;
mod error;
mod event;
pub mod policy;
mod sa;
pub mod wire;

pub use config::{Credential, EndpointConfig, Identity, Lifetime, Mode, PeerConfig, Psk};
pub use endpoint::{Endpoint, Stats, Transmit};
pub use error::{CryptoError, IkeError, ParseError};
pub use event::{ChildSaInstalled, DeleteReason, Event, IkeSaId};
pub use sa::{ChildSaInfo, IkeSaInfo, Role, State};
