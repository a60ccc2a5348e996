//! Errors of the DPDK backend.

use std::ffi::CStr;

use crate::ffi;

/// A DPDK error code (a negative return value or `rte_errno`) with DPDK's own text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (errno {code})")]
pub struct RteError {
    /// The positive errno value.
    pub code: i32,
    /// `rte_strerror`'s text.
    pub message: String,
}

impl RteError {
    /// The error for a DPDK return code (negative errno) or a positive errno.
    pub(crate) fn from_code(code: i32) -> Self {
        let code = code.saturating_abs();
        // SAFETY: rte_strerror accepts any value and returns a pointer to a static or
        // per-thread NUL-terminated string, which we copy at once.
        let text = unsafe { ffi::dvs_strerror(code) };
        let message = if text.is_null() {
            String::from("unknown error")
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next rte_strerror on this thread.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        RteError { code, message }
    }

    /// The error DPDK left in `rte_errno` (for calls that return NULL).
    pub(crate) fn last() -> Self {
        // SAFETY: reads the per-thread rte_errno; no preconditions.
        Self::from_code(unsafe { ffi::dvs_errno() })
    }
}

/// Why a DPDK operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpdkError {
    /// `Eal::init` was called a second time in this process (DPDK allows one EAL per process).
    #[error("the DPDK EAL is already initialised in this process (one EAL per process)")]
    EalAlreadyInitialized,
    /// An EAL argument cannot be passed to C.
    #[error("EAL argument {index} ({argument:?}) contains a NUL byte")]
    NulInArgument { index: usize, argument: String },
    /// `rte_eal_init` refused the arguments or the machine.
    #[error("rte_eal_init with {args:?} failed: {cause}")]
    EalInit { args: Vec<String>, cause: RteError },
    /// A device name cannot be passed to C.
    #[error("device name {0:?} contains a NUL byte")]
    NulInName(String),
    /// No ethdev of that name exists (vdev missing from the EAL arguments?).
    #[error("no DPDK ethdev named {0:?} (is its --vdev in the EAL arguments?)")]
    NoSuchPort(String),
    /// No cryptodev of that name exists.
    #[error("no DPDK cryptodev named {0:?} (is its --vdev in the EAL arguments?)")]
    NoSuchCryptodev(String),
    /// A DPDK call on a device or pool failed.
    #[error("{operation} for {object:?} failed: {cause}")]
    Call {
        operation: &'static str,
        object: String,
        cause: RteError,
    },
    /// A configuration value is out of the range DPDK accepts.
    #[error("{what} = {value} is out of range ({range})")]
    OutOfRange {
        what: &'static str,
        value: usize,
        range: &'static str,
    },
}

impl DpdkError {
    pub(crate) fn call(operation: &'static str, object: &str, cause: RteError) -> Self {
        DpdkError::Call {
            operation,
            object: object.to_owned(),
            cause,
        }
    }
}
