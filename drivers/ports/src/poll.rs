//! Waiting for a socket to become readable, shared by the kernel backends.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits up to `timeout` (saturated to `c_int::MAX` milliseconds) for `fd` to be readable;
/// true when it is.
pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `poll_fd` is a valid pollfd for the duration of the call and we pass 1.
    let rc = unsafe { libc::poll(&mut poll_fd, 1, millis) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc > 0)
}
