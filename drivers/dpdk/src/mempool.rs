//! DPDK mbuf pools, freed when dropped.

use std::ptr::NonNull;

use crate::eal::{unique_name, Eal};
use crate::error::{DpdkError, RteError};
use crate::ffi;

/// A pool of packet mbufs in DPDK memory.
#[derive(Debug)]
pub(crate) struct MbufPool {
    ptr: NonNull<ffi::rte_mempool>,
    data_room: u16,
}

// SAFETY: a DPDK mempool is safe to use from any thread (threads that are not EAL lcores use it
// without a per-lcore cache, through its lock-free ring), and the pointer is only freed on drop.
unsafe impl Send for MbufPool {}
// SAFETY: as above; alloc and free on a mempool are thread-safe.
unsafe impl Sync for MbufPool {}

impl MbufPool {
    /// `count` mbufs with `data_room` bytes each (including DPDK's 128-byte headroom).
    pub(crate) fn new(_eal: &'static Eal, count: u32, data_room: u16) -> Result<Self, DpdkError> {
        let name = unique_name("mbuf");
        // SAFETY: the EAL is up; name is a valid C string; DPDK copies it.
        let raw = unsafe { ffi::dvs_pktmbuf_pool_create(name.as_ptr(), count, data_room) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            DpdkError::call(
                "rte_pktmbuf_pool_create",
                &name.to_string_lossy(),
                RteError::last(),
            )
        })?;
        Ok(MbufPool { ptr, data_room })
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Bytes each mbuf holds after its headroom.
    pub(crate) fn usable_room(&self) -> usize {
        usize::from(self.data_room).saturating_sub(128)
    }

    /// How many mbufs are free right now.
    pub(crate) fn available(&self) -> usize {
        // SAFETY: the pool is alive; counting reads its ring and caches.
        unsafe { ffi::dvs_mempool_avail_count(self.ptr.as_ptr()) as usize }
    }

    /// One mbuf, or None when the pool is exhausted.
    pub(crate) fn alloc(&self) -> Option<NonNull<ffi::rte_mbuf>> {
        // SAFETY: the pool is alive; the returned mbuf is ours until freed.
        NonNull::new(unsafe { ffi::dvs_pktmbuf_alloc(self.ptr.as_ptr()) })
    }
}

impl Drop for MbufPool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; its users (ports, cryptodev) are dropped before it, as they
        // are fields declared before it or hold it by reference.
        unsafe { ffi::dvs_mempool_free(self.ptr.as_ptr()) }
    }
}

/// Appends `bytes` to an empty mbuf; false when it has no room.
///
/// # Safety
/// `m` must be a valid mbuf owned by the caller.
pub(crate) unsafe fn fill_mbuf(m: NonNull<ffi::rte_mbuf>, bytes: &[u8]) -> bool {
    let Ok(len) = u16::try_from(bytes.len()) else {
        return false;
    };
    // SAFETY: the caller owns m; append returns NULL when the tailroom is too small.
    let dst = unsafe { ffi::dvs_pktmbuf_append(m.as_ptr(), len) };
    if dst.is_null() {
        return false;
    }
    // SAFETY: dst points at `len` writable bytes inside the mbuf, which does not overlap `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    true
}

/// Frees an mbuf (and its chained segments).
///
/// # Safety
/// `m` must be a valid mbuf owned by the caller, not used afterwards.
pub(crate) unsafe fn free_mbuf(m: NonNull<ffi::rte_mbuf>) {
    // SAFETY: per the contract above.
    unsafe { ffi::dvs_pktmbuf_free(m.as_ptr()) }
}
