//! The coupling facility (CF).
//!
//! Owns the shared sequence region (outbound sequence counters, inbound replay state and
//! lifesize counters per (DVIPA, SPI) slot), both as a memory-mapped region shared by
//! processes on one host ([`region`]) and as a networked server for boxes that share no memory
//! ([`server`], [`client`]). Both implement [`SequenceFacility`], so the data path cannot tell
//! them apart. The decisions (replay bitmap math, lease bound, what to persist) are sans-io:
//! [`replay`], [`lease`], [`server::ServerCore`], [`proto`]. The region takes no locks: counters
//! are fetch-and-add and the replay window is a compare-and-swap structure
//! ([`replay::SharedWindow`]), so a process dying mid-operation blocks nobody.
//!
//! A takeover fences the old owner with a new epoch ([`RegionOwner::take_over`], or the
//! server's BumpEpoch): every handle of the old epoch fails with [`CfError::Fenced`], and a
//! lease it holds is thrown away unused ([`SequenceFacility::check_epoch`]). A distributor that
//! keeps its own DVIPAs attaches again at the new epoch it was told ([`RegionOwner::rejoin`]).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod error;
pub mod facility;
pub mod lease;
pub mod proto;
pub mod region;
pub mod replay;
pub mod server;

pub use client::NetClient;
pub use error::{CfAction, CfError};
pub use facility::{
    Direction, Lifesize, ReplayVerdict, SeqRange, SequenceFacility, SlotId, SlotKey,
};
pub use lease::{LeaseHolder, LeaseParams, LeasePolicy, LeasedSequencer};
pub use region::{Region, RegionOwner};

/// A random 64-bit value for incarnation ids, from the kernel's generator.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let from_kernel =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if from_kernel.is_ok() {
        return u64::from_le_bytes(bytes);
    }
    // std seeds RandomState from the OS; mix in the time and pid for good measure.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
