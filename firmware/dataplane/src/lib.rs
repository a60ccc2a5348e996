//! The data plane of the distributor and target roles.
//!
//! Owns the distributed connection table (DCT), target selection, user-space GRE over the XCF
//! network, the distributor's inbound dispatch (seed figure 8) and the target's inbound decap and
//! outbound encap (figures 9 and 10). The decision logic is sans-io; the polling loops that drive
//! it take bursts from packet ports.
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
