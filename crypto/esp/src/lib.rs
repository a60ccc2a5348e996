//! The ESP/AH data-path engine.
//!
//! Owns the SA type, the AEAD/MAC suites behind a provider trait, ESP (RFC 4303) and AH
//! (RFC 4302) seal/open in place, anti-replay windows, peek (seed figure 8) and the seed's
//! table of distributable IPsec combinations. It is sans-io: no sockets, no clocks.
#![forbid(unsafe_code)]
