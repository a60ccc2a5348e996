//! Errors of the coupling facility.

use std::path::PathBuf;

/// Why a CF operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CfError {
    /// The caller's epoch is older than the facility's: a newer distributor fenced it out.
    #[error("fenced: caller epoch {caller} but the facility is at epoch {current}")]
    Fenced { caller: u64, current: u64 },
    /// The facility's state was lost (a new incarnation answered). Every SA that used it must be
    /// rekeyed; its counters must never be resumed.
    #[error(
        "CF state lost (incarnation {expected:#x} replaced by {found:#x}): rekey, never resume"
    )]
    StateLost { expected: u64, found: u64 },
    /// The slot does not exist or was released (its generation changed).
    #[error("slot {0:#x} is unknown or was released")]
    UnknownSlot(u64),
    /// Every slot of the region is in use.
    #[error("no free slot in the CF region")]
    NoFreeSlot,
    /// The sequence space of the slot is used up: the SA must be rekeyed.
    #[error("sequence numbers of slot {0:#x} are exhausted")]
    Exhausted(u64),
    /// An argument is out of range (count of zero, window too large, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The region file is not a valid CF region.
    #[error("CF region {path}: {reason}")]
    BadRegion { path: PathBuf, reason: &'static str },
    /// The persistent state of the server is corrupt.
    #[error("CF state file {path}: {reason} at byte {offset}")]
    BadState {
        path: PathBuf,
        offset: usize,
        reason: &'static str,
    },
    /// The server answered with something this client cannot use.
    #[error("CF protocol error: {0}")]
    Protocol(#[from] crate::proto::DecodeError),
    /// The server reported that it could not store its high-water mark.
    #[error("CF server could not persist its state")]
    StorageFailed,
    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CfError {
    /// True when the distributor must rekey the SAs that used this facility.
    pub fn requires_rekey(&self) -> bool {
        matches!(self, CfError::StateLost { .. } | CfError::Exhausted(_))
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CfError::Io {
            context: context.into(),
            source,
        }
    }
}
