//! The ESP/AH data-path engine of dvipsec.
//!
//! Owns the SA type ([`Sa`], built from an [`SaConfig`]), the AEAD suites behind a provider trait
//! ([`AeadProvider`], aws-lc-rs by default), ESP (RFC 4303, with UDP encapsulation per RFC 3948
//! and ESN) and AH (RFC 4302) seal/open in place, the anti-replay window, peek (seed figure 8) and
//! the seed's table of distributable IPsec combinations ([`classify`]). It is sans-io: functions
//! over caller buffers, no sockets, no clocks.
//!
//! # How to call it
//!
//! ```
//! use dvipsec_esp::{Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, MAX_HEADROOM, MAX_TAILROOM};
//!
//! let key_and_salt = [7u8; 20]; // AES-128 key followed by the 4-byte salt
//! let mut out_cfg = SaConfig::new(0x1000, Direction::Outbound, Suite::Aes128Gcm16, SaKeys::new(&key_and_salt, &[]));
//! out_cfg.mode = Mode::Tunnel;
//! out_cfg.tunnel = Some(TunnelEndpoints { src: "192.0.2.1".parse().unwrap(), dst: "192.0.2.2".parse().unwrap() });
//! let mut inbound_cfg = out_cfg.clone();
//! inbound_cfg.direction = Direction::Inbound;
//! let mut sender = Sa::new(out_cfg).unwrap();
//! let mut receiver = Sa::new(inbound_cfg).unwrap();
//!
//! // A buffer with headroom before and tailroom after the IP packet.
//! let inner: [u8; 20] = [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 59, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//! let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
//! buf[MAX_HEADROOM..MAX_HEADROOM + 20].copy_from_slice(&inner);
//! let sealed = sender.seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + 20).unwrap();
//! // buf[sealed.packet] is now outer IPv4 + ESP; send it.
//! let peeked = receiver.peek(&buf[sealed.packet.clone()]).unwrap();
//! assert_eq!(peeked.unverified().seq, 1);
//! let opened = receiver.open(&mut buf, sealed.packet).unwrap();
//! assert_eq!(&buf[opened.packet], &inner[..]);
//! ```
//!
//! * Outbound: [`Sa::seal`] (own counter) or [`Sa::seal_with_seq`] (numbers from the coupling facility).
//! * Inbound: [`Sa::open`] verifies and decrypts; [`Sa::peek`] reads the inner 5-tuple without
//!   verifying, marked [`Unauthenticated`]; [`Sa::replay_check`] checks a number against the window.
//! * Errors: [`EspError`] names what failed and where; drops are counted in [`SaCounters`].
#![forbid(unsafe_code)]

mod ah;
pub mod classify;
mod error;
mod esp;
pub mod ip;
mod peek;
mod provider;
pub mod replay;
mod sa;
mod suite;

pub use classify::{classify, Combination, Distribution};
pub use error::{CryptoError, EspError, SaError};
pub use esp::{Opened, Sealed, ESP_HEADER_LEN, MAX_HEADROOM, MAX_TAILROOM, UDP_HEADER_LEN};
pub use peek::{PeekInfo, Unauthenticated};
pub use provider::{AeadAlgorithm, AeadProvider, AwsLcProvider, EspAead, NONCE_LEN, TAG_LEN};
pub use sa::{
    Direction, IpsecProtocol, LifetimeLimits, LifetimeState, Mode, Sa, SaConfig, SaCounters,
    SaKeys, SaParams, TunnelEndpoints, UdpEncap,
};
pub use suite::{Suite, ICV_LEN};
