//! The data plane of the distributor and target roles.
//!
//! Owns the distributed connection table ([`dct`]), target selection ([`select`]), user-space GRE
//! over the XCF network ([`gre`]), the distributor's inbound dispatch (seed figure 8,
//! [`distributor`]) and the target's inbound decap and outbound encap (figures 9 and 10,
//! [`target`]); the distributor box opens, delivers and answers the ESP it does not distribute
//! through those same target paths ([`target::TargetPaths`]). Those cores are sans-io: one packet in a caller's buffer, time passed in, a
//! decision or a range out. Around them: applications' UDP sockets and the echo service on port
//! 60 ([`app`]), the nodes that move frames between packet ports and the cores ([`node`]), the
//! run-to-completion polling loop ([`poll`]), a scripted remote peer ([`peer`]) and an in-process
//! site built from all of them ([`testbed`]).
//!
//! It must not own how SAs arrive: [`sa_table::SaTable`] is the boundary the cluster crate's
//! shadow SA cache plugs into, and lifesize leaves through [`sa_table::LifesizeSink`]. It does no
//! IKE and no XCF messaging.
#![forbid(unsafe_code)]

pub mod app;
pub mod dct;
pub mod distributor;
pub mod frame;
pub mod gre;
pub mod node;
pub mod peer;
pub mod poll;
pub mod sa_table;
pub mod select;
pub mod target;
pub mod testbed;
pub mod wire;

pub use dct::{Dct, DctConfig, DctCounters, DctError, FlowKey, TargetId};
pub use select::{TargetLoad, TargetSelector};
