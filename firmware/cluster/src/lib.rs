//! The XCF cluster link between dvipsec stacks.
//!
//! Owns the versioned XCF message codec, reliable delivery over an unreliable link, the
//! distributor's SA distribution (seed figures 5 and 6), the targets' shadow SA caches and
//! dynamic filters (figure 7), lifesize batching (figures 9 and 10) and NEWCONN (figure 11).
//! The protocol core is sans-io: time is passed in, messages go in and out as bytes.
#![forbid(unsafe_code)]

pub mod error;
pub mod link;
pub mod sim;
pub mod wire;

pub use error::{LinkError, WireError};
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod wire_tests;
