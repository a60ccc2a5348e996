//! The coupling facility as one booted node holds it.
//!
//! A node that owns a DVIPA creates the shared-memory region and removes it at shutdown. A node
//! that only serves DVIPAs needs the distributor's epoch and incarnation to attach, which reach
//! it over XCF; until then it only checks that the region is there.

use std::fmt;
use std::path::{Path, PathBuf};

use dvipsec_cf::{CfError, RegionOwner};
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
    /// The facility is a network server, not held by any node.
    Network(std::net::SocketAddr),
}

impl fmt::Display for CfHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CfHandle::Owner { path, .. } => write!(f, "owner of {}", path.display()),
            CfHandle::User { path, present } => {
                let state = if *present { "present" } else { "not there yet" };
                write!(f, "user of {} ({state})", path.display())
            }
            CfHandle::Network(addr) => write!(f, "network facility at {addr}"),
        }
    }
}

impl CfHandle {
    /// Gives the facility back: the owner removes the region file.
    pub fn release(self) -> Result<(), FacilityError> {
        let CfHandle::Owner { owner, path } = self else {
            return Ok(());
        };
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

/// Creates the region when this node owns a DVIPA, else notes whether it exists.
pub fn set_up(view: &NodeView) -> Result<CfHandle, FacilityError> {
    match &*view.coupling_facility.backend {
        CfBackend::Network(addr) => Ok(CfHandle::Network(*addr)),
        CfBackend::Shm(path) if view.owns.is_empty() => Ok(CfHandle::User {
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
