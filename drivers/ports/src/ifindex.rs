//! Interface name to index, for the kernel-socket backends.

use std::ffi::CString;
use std::io;

/// Why an interface name could not be resolved.
pub(crate) enum IfIndexError {
    /// Empty, too long, or containing NUL.
    BadName,
    /// No such interface in the calling thread's network namespace.
    Missing(io::Error),
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> Result<u32, IfIndexError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(IfIndexError::BadName);
    }
    let c_name = CString::new(name).map_err(|_| IfIndexError::BadName)?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(IfIndexError::Missing(io::Error::last_os_error()));
    }
    Ok(index)
}
