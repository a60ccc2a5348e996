//! The coupling facility as one booted node holds it.
//!
//! A node that owns a DVIPA creates the shared-memory region and removes it at shutdown. A node
//! that only serves DVIPAs needs the distributor's epoch and incarnation to attach, which reach
//! it over XCF; until then it only checks that the region is there.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dvipsec_cf::{
    CfError, Direction, Lifesize, Region, RegionOwner, ReplayVerdict, SeqRange, SequenceFacility,
    SlotId,
};
use dvipsec_config::{CfBackend, NodeView};

/// Slots in a region created by boot: one per inbound and outbound SA.
pub const REGION_SLOTS: u32 = 4096;

/// Why the coupling facility could not be set up or released.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacilityError {
    /// The region could not be created (a stale region from a crashed run, a missing
    /// directory, no space).
    #[error("coupling facility {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: CfError,
    },
    /// The site names a CF server, which the boot data plane cannot use.
    #[error("coupling facility: the CF server at {addr} cannot back the boot data plane")]
    Network { addr: std::net::SocketAddr },
    /// The region could not be removed at shutdown.
    #[error("coupling facility {}: cannot remove the region: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The node's hold on the coupling facility.
pub enum CfHandle {
    /// This node created the region and removes it at shutdown.
    Owner { owner: RegionOwner, path: PathBuf },
    /// This node uses a region someone else owns.
    User { path: PathBuf, present: bool },
}

impl fmt::Display for CfHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CfHandle::Owner { path, .. } => write!(f, "owner of {}", path.display()),
            CfHandle::User { path, present } => {
                let state = if *present { "present" } else { "not there yet" };
                write!(f, "user of {} ({state})", path.display())
            }
        }
    }
}

impl CfHandle {
    /// Gives the facility back: the node that created the region removes it, unless another
    /// took it over since (`still_current` false), which then goes on using it.
    pub fn release(self, still_current: bool) -> Result<(), FacilityError> {
        let CfHandle::Owner { owner, path } = self else {
            return Ok(());
        };
        if !still_current {
            tracing::info!(path = %path.display(), "coupling facility region left to its new owner");
            return Ok(());
        }
        drop(owner);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "coupling facility region removed");
                Ok(())
            }
            Err(source) => Err(FacilityError::Remove { path, source }),
        }
    }
}

/// Creates the region when this node owns a DVIPA and nobody made it yet; otherwise the node
/// is a user of the region (a returning owner takes it back over through the takeover core).
pub fn set_up(view: &NodeView) -> Result<CfHandle, FacilityError> {
    match &*view.coupling_facility.backend {
        // `boot` refuses such a site before it opens anything (`refuse_unsupported`).
        CfBackend::Network(addr) => Err(FacilityError::Network { addr: *addr }),
        CfBackend::Shm(path) if view.owns.is_empty() || path.exists() => Ok(CfHandle::User {
            present: path.exists(),
            path: path.clone(),
        }),
        CfBackend::Shm(path) => create(path),
    }
}

fn create(path: &Path) -> Result<CfHandle, FacilityError> {
    let owner =
        RegionOwner::create(path, REGION_SLOTS).map_err(|source| FacilityError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(CfHandle::Owner {
        owner,
        path: path.to_path_buf(),
    })
}

/// A target's region handle, attached once the distributor has told the box the region's
/// epoch and incarnation over XCF, and replaced when a new distributor takes the region over.
/// Until then every operation fails with [`CfError::UnknownSlot`], which the data path counts
/// as a CF failure (no SA can be in use before the distributor spoke anyway).
#[derive(Clone, Default)]
pub struct AttachedRegion(Arc<RwLock<Option<Region>>>, Arc<CfOps>);

/// The names of the CF operations a box counts, in [`CfOps`] order; `failed` counts those of
/// any kind that returned an error (not attached yet, fenced, unknown slot).
const CF_OP_NAMES: [&str; 6] = [
    "fetch_add",
    "replay_check",
    "replay_check_and_set",
    "lifesize_add",
    "lifesize_read",
    "failed",
];
const FAILED: usize = 5;

/// The CF operations one box performed (all clones of its handle count into the same numbers),
/// for its metrics.
#[derive(Debug, Default)]
struct CfOps([AtomicU64; CF_OP_NAMES.len()]);

impl AttachedRegion {
    /// A handle already attached (the distributor's own box).
    pub fn attached(region: Region) -> Self {
        AttachedRegion(Arc::new(RwLock::new(Some(region))), Arc::default())
    }

    /// The CF operations done through this handle (and its clones) so far: (name, count).
    pub fn operations(&self) -> Vec<(String, u64)> {
        CF_OP_NAMES
            .iter()
            .zip(&self.1 .0)
            .map(|(name, count)| ((*name).to_owned(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Uses `region` from now on (the box took the region over in a new epoch).
    pub fn replace(&self, region: Region) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(region);
        }
    }

    /// Attaches (or re-attaches) to `path` in `epoch`; a handle of the same or a newer epoch
    /// of the same region is kept as it is.
    pub fn attach(&self, path: &Path, epoch: u64, incarnation: u64) -> Result<bool, CfError> {
        let current = self.0.read().ok().and_then(|r| {
            r.as_ref()
                .map(|region| (region.epoch(), region.incarnation()))
        });
        // Only forward: a stale owner still announcing an older epoch is ignored.
        let older = current.is_some_and(|(e, i)| i == incarnation && e > epoch);
        if current == Some((epoch, incarnation)) || older {
            return Ok(false);
        }
        let region = Region::attach(path, epoch, incarnation)?;
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(region);
        }
        Ok(true)
    }

    /// The attached region's epoch, incarnation and slot count (`None`: not attached yet).
    pub fn region_identity(&self) -> Option<(u64, u64, u32)> {
        let guard = self.0.read().ok()?;
        let region = guard.as_ref()?;
        Some((region.epoch(), region.incarnation(), region.slot_count()))
    }

    /// Runs `op` (counted as operation `kind`, an index of [`CF_OP_NAMES`]) on the region.
    fn with<T>(
        &self,
        kind: usize,
        slot: SlotId,
        op: impl FnOnce(&Region) -> Result<T, CfError>,
    ) -> Result<T, CfError> {
        let counts = &self.1 .0;
        counts[kind].fetch_add(1, Ordering::Relaxed);
        let result = match self.0.read() {
            Ok(guard) => match guard.as_ref() {
                Some(region) => op(region),
                None => Err(CfError::UnknownSlot(slot.0)),
            },
            Err(_) => Err(CfError::UnknownSlot(slot.0)),
        };
        if result.is_err() {
            counts[FAILED].fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl SequenceFacility for AttachedRegion {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        self.with(0, slot, |r| r.fetch_add(slot, n))
    }

    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.with(1, slot, |r| r.replay_check(slot, seq))
    }

    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.with(2, slot, |r| r.replay_check_and_set(slot, seq))
    }

    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        self.with(3, slot, |r| r.lifesize_add(slot, direction, bytes, packets))
    }

    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        self.with(4, slot, |r| r.lifesize_read(slot))
    }
}
