//! The XCF cluster link between dvipsec stacks.
//!
//! Owns the versioned XCF message codec ([`wire`]), reliable ordered delivery over an
//! unreliable link ([`link`]), the distributor's SA distribution (seed figures 5 and 6,
//! [`distributor`]), the targets' shadow SA caches and dynamic filters (figure 7, [`target`]),
//! lifesize batching with the adaptive threshold (figures 9 and 10, [`lifesize`]) and NEWCONN
//! (figure 11). These are sans-io: time is passed in, frames go in and out as bytes.
//! The I/O helpers are apart: frames over a TCP or TLS byte stream ([`stream`]) and mutual TLS
//! identities ([`tls`]). [`sim`] is an in-memory network with seeded loss for whole-cluster
//! tests.
//!
//! Failover (issue #10) is two more sans-io cores: [`membership`] (heartbeats carrying each
//! node's view of the others and its ownership claims; failed, partitioned and isolated told
//! apart) and [`takeover`] (who owns each DVIPA: the chain by VIPABACKUP rank, the newest CF
//! epoch's claim wins; the new owner's work as [`takeover::TakeoverAction`]s). Targets follow
//! TAKEOVER messages ([`target::OwnerChange`]); the distributor adopts and releases DVIPAs.
//!
//! It does not run IKE (IKE's results come in as [`IkeEvent`]s and its work goes out as
//! [`DistributorEvent`]s), does not touch packets (the data path asks the [`Target`] for SAs)
//! and does not own the coupling facility (slots come from a [`SlotAllocator`]; [`cf`] adapts
//! the `dvipsec-cf` region).
#![forbid(unsafe_code)]

pub mod cf;
pub mod distributor;
pub mod error;
pub mod lifesize;
pub mod link;
pub mod membership;
pub mod sim;
pub mod stream;
pub mod takeover;
pub mod target;
pub mod tls;
pub mod wire;

pub use distributor::{
    Distributor, DistributorError, DistributorEvent, IkeEvent, SlotAllocator, SlotPool, SlotRequest,
};
pub use error::{LinkError, WireError};
pub use link::{LinkSecurity, LinkTimers};
pub use membership::{Membership, MembershipEvent};
pub use takeover::{Takeover, TakeoverAction};
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
