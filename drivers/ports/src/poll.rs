//! Waiting for sockets to become readable: a kernel backend waiting for its ring, and an idle
//! polling loop blocking on every port and socket it reads.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
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

/// The most descriptors [`wait_any_readable`] watches; a box has a few ports and sockets.
pub const MAX_WAIT_FDS: usize = 32;

/// Waits up to `timeout` (microsecond resolution) until any of `fds` is readable; true when
/// one is. An idle polling loop calls this instead of sleeping, so a frame that arrives wakes
/// it at once. Only the first [`MAX_WAIT_FDS`] descriptors are watched.
pub fn wait_any_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let mut polled = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_WAIT_FDS];
    let count = fds.len().min(MAX_WAIT_FDS);
    for (slot, fd) in polled.iter_mut().zip(fds) {
        slot.fd = fd.as_raw_fd();
        slot.events = libc::POLLIN;
    }
    let spec = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `polled` holds `count` initialised pollfds and outlives the call; `spec` is a
    // valid timespec; a null signal mask leaves the thread's mask as it is.
    let rc = unsafe {
        libc::ppoll(
            polled.as_mut_ptr(),
            count as libc::nfds_t,
            &spec,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        // A signal (the box's own shutdown) ends the wait early; the loop checks and goes on.
        return match error.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(error),
        };
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn waits_out_the_timeout_when_nothing_arrives_and_wakes_when_something_does() {
        let quiet = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let busy = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let started = Instant::now();
        let woke = wait_any_readable(&[quiet.as_fd(), busy.as_fd()], Duration::from_millis(20))
            .expect("ppoll");
        assert!(!woke, "nothing was sent");
        assert!(started.elapsed() >= Duration::from_millis(15));
        quiet
            .send_to(b"x", busy.local_addr().expect("addr"))
            .expect("send");
        let woke = wait_any_readable(&[quiet.as_fd(), busy.as_fd()], Duration::from_secs(5))
            .expect("ppoll");
        assert!(woke, "the second socket has a datagram");
        assert!(
            !wait_any_readable(&[], Duration::from_micros(300)).expect("ppoll"),
            "no descriptors: the wait is a plain pause"
        );
    }
}
