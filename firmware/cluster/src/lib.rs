//! The XCF cluster link between dvipsec stacks.
//!
//! Owns the versioned XCF message codec, reliable delivery over an unreliable link, the
//! distributor's SA distribution (seed figures 5 and 6), the targets' shadow SA caches and
//! dynamic filters (figure 7), lifesize batching (figures 9 and 10) and NEWCONN (figure 11).
//! The protocol core is sans-io: time is passed in, messages go in and out as bytes.
#![forbid(unsafe_code)]

pub mod distributor;
pub mod error;
pub mod lifesize;
pub mod link;
pub mod sim;
pub mod stream;
pub mod target;
pub mod tls;
pub mod wire;

pub use distributor::{
    Distributor, DistributorError, DistributorEvent, IkeEvent, SlotAllocator, SlotPool,
};
pub use error::{LinkError, WireError};
pub use link::{LinkSecurity, LinkTimers};
pub use target::{ConnStart, NoSa, Target, TargetError, TargetEvent};

/// A frame to send to the node `to`. The bytes are zeroized on drop (SA_INSTALL carries keys).
pub struct Transmit {
    pub to: String,
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod wire_tests;
