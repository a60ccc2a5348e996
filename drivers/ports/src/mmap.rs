//! Shared memory the kernel backends map: AF_PACKET's TPACKET rings, AF_XDP's rings and UMEM.

use std::io;
use std::os::fd::RawFd;

/// A shared mapping, unmapped on drop.
pub(crate) struct Mapping {
    pub(crate) base: *mut u8,
    pub(crate) len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset` (the kernel's page-offset cookie), or anonymous
    /// memory when `fd` is `None`.
    pub(crate) fn new(fd: Option<RawFd>, len: usize, offset: libc::off_t) -> io::Result<Self> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping the kernel chooses the address of; checked against
        // MAP_FAILED before use and unmapped exactly once in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` came from a successful mmap and nothing uses the mapping after
        // its owner is dropped.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}
