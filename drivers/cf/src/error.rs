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

/// What the distributor (or a target) does about a CF error: the explicit event behind every
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CfAction {
    /// The CF state is gone or the sequence space is used up: rekey every SA that used it;
    /// never resume its counters.
    Rekey,
    /// This node works in an old epoch: stop sending on the CF's SAs and wait for the current
    /// distributor to hand out SAs again.
    StandDown,
    /// The SA's slot is gone (the SA was deleted): drop the shadow SA.
    DropSa,
    /// A transient failure (connection, storage): try again later; nothing was handed out twice.
    Retry,
    /// A bug or a misconfiguration: report it.
    Report,
}

impl CfError {
    /// The action this error calls for.
    pub fn action(&self) -> CfAction {
        match self {
            CfError::StateLost { .. } | CfError::Exhausted(_) => CfAction::Rekey,
            CfError::Fenced { .. } => CfAction::StandDown,
            CfError::UnknownSlot(_) => CfAction::DropSa,
            CfError::Io { .. } | CfError::StorageFailed | CfError::NoFreeSlot => CfAction::Retry,
            CfError::InvalidArgument(_)
            | CfError::BadRegion { .. }
            | CfError::BadState { .. }
            | CfError::Protocol(_) => CfAction::Report,
        }
    }

    /// True when the distributor must rekey the SAs that used this facility.
    pub fn requires_rekey(&self) -> bool {
        self.action() == CfAction::Rekey
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CfError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_state_and_exhaustion_mean_rekey() {
        let lost = CfError::StateLost {
            expected: 1,
            found: 2,
        };
        assert_eq!(lost.action(), CfAction::Rekey);
        assert!(lost.requires_rekey());
        assert!(CfError::Exhausted(3).requires_rekey());
        assert_eq!(
            CfError::Fenced {
                caller: 1,
                current: 2
            }
            .action(),
            CfAction::StandDown
        );
        assert!(!CfError::Fenced {
            caller: 1,
            current: 2
        }
        .requires_rekey());
        assert_eq!(CfError::UnknownSlot(4).action(), CfAction::DropSa);
        assert_eq!(CfError::StorageFailed.action(), CfAction::Retry);
    }
}
