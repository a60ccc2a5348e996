//! The four single-producer/single-consumer rings an XDP socket shares with the kernel.
//!
//! Each ring is a power-of-two array of descriptors with a producer and a consumer index
//! (free-running u32 counters). We keep a private copy of our own index and publish it with
//! a release store after writing or reading a batch; the kernel's index is read with acquire.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::mmap::Mapping;

/// One ring: its mapping, where its indices and descriptors are, and our cached index.
pub(super) struct Ring<T> {
    map: Mapping,
    producer: usize,
    consumer: usize,
    descs: usize,
    size: u32,
    /// Our side's index: the producer for fill/tx rings, the consumer for rx/completion.
    ours: u32,
    _desc: PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries whose layout the kernel gave as `offsets`.
    pub(super) fn map(
        fd: RawFd,
        size: u32,
        offsets: &libc::xdp_ring_offset,
        page_offset: libc::off_t,
    ) -> io::Result<Self> {
        let len = offsets.desc as usize + size as usize * std::mem::size_of::<T>();
        let map = Mapping::new(Some(fd), len, page_offset)?;
        let ring = Ring {
            map,
            producer: offsets.producer as usize,
            consumer: offsets.consumer as usize,
            descs: offsets.desc as usize,
            size,
            ours: 0,
            _desc: PhantomData,
        };
        if ring.producer + 4 > len || ring.consumer + 4 > len || ring.descs > len {
            return Err(io::Error::other("XDP ring offsets outside the mapping"));
        }
        Ok(ring)
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is the kernel-given position of a 4-aligned u32 index inside our
        // live mapping (bounds checked in `map`); it is only ever accessed atomically, and
        // the reference does not outlive `self`, which owns the mapping.
        unsafe { AtomicU32::from_ptr(self.map.base.add(offset).cast()) }
    }

    fn slot(&self, index: u32) -> *mut T {
        let position = (index & (self.size - 1)) as usize;
        // In bounds: position < size and the mapping covers size descriptors after `descs`.
        self.map
            .base
            .wrapping_add(self.descs)
            .cast::<T>()
            .wrapping_add(position)
    }

    /// Producer side: slots we may fill now.
    pub(super) fn free_slots(&self) -> u32 {
        let consumed = self.index(self.consumer).load(Ordering::Acquire);
        self.size - self.ours.wrapping_sub(consumed)
    }

    /// Producer side: writes `value` in the next slot; the caller checked `free_slots`.
    pub(super) fn write(&mut self, value: T) {
        let slot = self.slot(self.ours);
        // SAFETY: the slot is in the mapping and free (the kernel consumed it, as
        // `free_slots` showed with an acquire load), so nothing else accesses it until we
        // publish it with `submit`.
        unsafe { slot.write_volatile(value) };
        self.ours = self.ours.wrapping_add(1);
    }

    /// Producer side: hands every written slot to the kernel.
    pub(super) fn submit(&self) {
        self.index(self.producer)
            .store(self.ours, Ordering::Release);
    }

    /// Consumer side: entries ready to read.
    pub(super) fn available(&self) -> u32 {
        let produced = self.index(self.producer).load(Ordering::Acquire);
        produced.wrapping_sub(self.ours)
    }

    /// Consumer side: reads the next entry; the caller checked `available`.
    pub(super) fn read(&mut self) -> T {
        let slot = self.slot(self.ours);
        // SAFETY: the kernel published this slot (acquire load in `available`) and will not
        // reuse it until we release it.
        let value = unsafe { slot.read_volatile() };
        self.ours = self.ours.wrapping_add(1);
        value
    }

    /// Consumer side: gives every read slot back to the kernel.
    pub(super) fn release(&self) {
        self.index(self.consumer)
            .store(self.ours, Ordering::Release);
    }
}
