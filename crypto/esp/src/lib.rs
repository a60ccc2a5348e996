//! The ESP/AH data-path engine of dvipsec.
//!
//! Owns the SA type ([`Sa`], built from an [`SaConfig`]), the AEAD suites behind a provider trait
//! ([`AeadProvider`], aws-lc-rs by default), ESP (RFC 4303, with UDP encapsulation per RFC 3948
//! and ESN) and AH (RFC 4302) seal/open in place, the anti-replay window, peek (seed figure 8) and
//! the seed's table of distributable IPsec combinations ([`classify()`]). It is sans-io: functions
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
//!
//! # Wire choices and limits
//!
//! * AEAD explicit IV = the 64-bit sequence number (RFC 4106 section 3.1), so it never repeats
//!   under a key. AES-CBC IVs are AES_K(SPI || 0 || seq) (NIST SP 800-38A appendix C), so seal needs
//!   no random source and stays sans-io.
//! * Padding is the minimum for the suite's alignment, with the 1, 2, 3, ... pattern; open checks it.
//! * UDP encapsulation: the UDP checksum is 0 over IPv4 and computed over IPv6; on receive it is
//!   not checked (the ICV covers the ESP packet). Packets with the non-ESP marker (IKE) and
//!   NAT-keepalives are refused with [`EspError::NotIpsec`] so the caller can hand them to IKE.
//! * IP fragments are refused ([`EspError::Fragment`]): reassemble first.
//! * IPv6 hop-by-hop, routing and destination-options headers are walked; ESP goes after them.
//!   AH after IPv6 extension headers is not supported (refused as malformed).
//! * Peek decrypts at most the inner IP header and 14 bytes of TCP (8 of UDP), plus the 2-byte
//!   trailer in transport mode. Inner IPv6 extension headers are not walked by peek. Plain headers
//!   (IPv4 without options, IPv6 without extension headers, outer and inner) take a straight-line
//!   path; anything else, errors included, goes through the general one.
//! * [`peek_burst`] and [`peek_burst_flows`] peek a receive burst with the AES-GCM keystream of all
//!   its packets computed together; the compact form costs under a tenth of a full open at 1420
//!   bytes, a single [`Sa::peek`] a fifth to a quarter (figures and method in `BENCHMARKS.md`).
#![forbid(unsafe_code)]

mod ah;
mod chacha;
pub mod classify;
mod error;
mod esp;
pub mod ip;
mod peek;
mod prefix;
mod provider;
pub mod replay;
mod sa;
mod suite;

pub use classify::{classify, Combination, Distribution};
pub use error::{CryptoError, EspError, SaError};
pub use esp::{Opened, Sealed, ESP_HEADER_LEN, MAX_HEADROOM, MAX_TAILROOM, UDP_HEADER_LEN};
pub use peek::{
    peek_burst, peek_burst_flows, FlowAddrs, PeekFlow, PeekInfo, Unauthenticated, MAX_PEEK_BURST,
};
pub use prefix::IpPrefix;
pub use provider::{AeadAlgorithm, AeadProvider, AwsLcProvider, EspAead, NONCE_LEN, TAG_LEN};
pub use sa::{
    Direction, IpsecProtocol, LifetimeLimits, LifetimeState, Mode, Sa, SaConfig, SaCounters,
    SaKeys, SaParams, TunnelEndpoints, UdpEncap,
};
pub use suite::{Suite, ICV_LEN};
