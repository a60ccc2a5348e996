//! The CF region: sequence counters, replay state and lifesize counters in a file mapped
//! `MAP_SHARED` by every process on the host (a file in /dev/shm or on hugetlbfs).
//!
//! Layout (little-endian, all fields naturally aligned, everything after the fixed header fields
//! accessed only through atomics):
//!
//! ```text
//! header (128 bytes): magic u64, version u32, slot_count u32, size u64 (the file's length, rounded
//!   up to the filesystem's block: whole huge pages on hugetlbfs), incarnation u64, epoch u64
//! slot i at 128 + i * 1344, 21 cache lines:
//!   line 0      state u32, generation u32, reserved u32, window u32, spi u32, family u32,
//!               address 16 bytes
//!   line 1      outbound counter u64 (the next number to hand out)
//!   line 2      replay top u64
//!   lines 3-19  136 tagged replay words (see [`SharedWindow`])
//!   line 20     lifesize: bytes in, packets in, bytes out, packets out
//! ```
//!
//! Nothing takes a lock: counters are fetch-and-add, the replay window is updated with
//! compare-and-swap ([`SharedWindow`]), so a process that dies in the middle of an operation
//! never blocks the others. Replay windows up to [`MAX_REPLAY_WINDOW`] (4096) fit.
//!
//! The distributor ([`RegionOwner`]) creates the region and allocates and releases slots; targets
//! ([`Region`]) only map it. Every handle carries the epoch and incarnation it was given: a bumped
//! epoch fences it ([`CfError::Fenced`]) and a different incarnation means the region was replaced
//! ([`CfError::StateLost`]). A released slot bumps its generation, which is part of the
//! [`SlotId`], so a stale id stops working. Both checks are repeated after a fetch-and-add, so a
//! number taken while the slot was being released or the handle fenced is never used.

use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::error::CfError;
use crate::facility::{
    Direction, Lifesize, ReplayVerdict, SeqRange, SequenceFacility, SlotId, SlotKey,
};
use crate::replay::{SharedWindow, MAX_REPLAY_WINDOW, SHARED_WORDS};

const MAGIC: u64 = u64::from_le_bytes(*b"DVCFREG1");
/// Version 2: lock-free tagged replay words, windows up to 4096.
const VERSION: u32 = 2;
const HEADER_SIZE: usize = 128;
const SLOT_SIZE: usize = 1344;
/// The most slots one region holds.
pub const MAX_SLOTS: u32 = 1 << 20;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_SLOT_COUNT: usize = 12;
const H_SIZE: usize = 16;
const H_INCARNATION: usize = 24;
const H_EPOCH: usize = 32;

const S_STATE: usize = 0;
const S_GENERATION: usize = 4;
const S_WINDOW: usize = 12;
const S_SPI: usize = 16;
const S_FAMILY: usize = 20;
const S_ADDRESS: usize = 24;
const S_COUNTER: usize = 64;
const S_REPLAY_TOP: usize = 128;
const S_REPLAY_WORDS: usize = 192;
const S_LIFESIZE: usize = 1280;

// The replay words end where the lifesize line starts, and the slot is whole cache lines.
const _: () = assert!(S_REPLAY_WORDS + SHARED_WORDS * 8 == S_LIFESIZE);
const _: () = assert!(S_LIFESIZE + 64 == SLOT_SIZE && SLOT_SIZE.is_multiple_of(64));

const STATE_FREE: u32 = 0;
const STATE_BUSY: u32 = 1;
const STATE_LIVE: u32 = 2;

const FAMILY_V4: u32 = 4;
const FAMILY_V6: u32 = 6;

fn region_size(slot_count: u32) -> usize {
    HEADER_SIZE + slot_count as usize * SLOT_SIZE
}

/// The mapping, shared by the handles of one process.
struct Mapping {
    raw: MmapRaw,
    len: usize,
    slot_count: u32,
}

impl Mapping {
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset & 7 == 0 && offset + 8 <= self.len,
            "region offset {offset} out of bounds"
        );
        // SAFETY: the mapping is `len` bytes long, page aligned, and lives as long as `self`;
        // the offset is inside it and 8-byte aligned (checked above). Every process touches this
        // memory only through atomics, so there is no non-atomic access to race with.
        unsafe { AtomicU64::from_ptr(self.raw.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    /// `N` consecutive 64-bit cells starting at `offset`.
    fn u64_array<const N: usize>(&self, offset: usize) -> &[AtomicU64; N] {
        assert!(
            offset & 7 == 0 && offset + N * 8 <= self.len,
            "region offset {offset} (+{N} words) out of bounds"
        );
        // SAFETY: as in `u64_at`: the N * 8 bytes from `offset` are inside the mapping, 8-byte
        // aligned, and only ever accessed atomically; `[AtomicU64; N]` has the layout of
        // `[u64; N]`, and the reference borrows `self`, which keeps the mapping alive.
        unsafe { &*self.raw.as_mut_ptr().add(offset).cast::<[AtomicU64; N]>() }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset & 3 == 0 && offset + 4 <= self.len,
            "region offset {offset} out of bounds"
        );
        // SAFETY: as in `u64_at`, with 4-byte alignment.
        unsafe { AtomicU32::from_ptr(self.raw.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    fn header_u64(&self, field: usize) -> u64 {
        self.u64_at(field).load(Ordering::Acquire)
    }

    fn slot_base(&self, index: u32) -> usize {
        HEADER_SIZE + index as usize * SLOT_SIZE
    }

    fn slot_u32(&self, index: u32, field: usize) -> &AtomicU32 {
        self.u32_at(self.slot_base(index) + field)
    }

    fn slot_u64(&self, index: u32, field: usize) -> &AtomicU64 {
        self.u64_at(self.slot_base(index) + field)
    }
}

fn open_mapping(path: &Path, file: &File) -> Result<MmapRaw, CfError> {
    MmapRaw::map_raw(file)
        .map_err(|e| CfError::io(format!("mapping CF region {}", path.display()), e))
}

/// The block size of the file's filesystem: the huge page size on hugetlbfs, whose files must be
/// sized in whole pages.
fn filesystem_block(file: &File) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut stats = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: the descriptor is open for the duration of the call (`file` is borrowed) and
    // `stats` points to writable memory of the size fstatfs fills.
    let result = unsafe { libc::fstatfs(file.as_raw_fd(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatfs returned 0, so it filled the whole struct.
    let stats = unsafe { stats.assume_init() };
    Ok(usize::try_from(stats.f_bsize)
        .unwrap_or(4096)
        .clamp(64, 1 << 30))
}

fn bad(path: &Path, reason: &'static str) -> CfError {
    CfError::BadRegion {
        path: path.to_path_buf(),
        reason,
    }
}

/// Maps an existing region and checks its header before anything else is read.
fn map_existing(path: &Path) -> Result<Mapping, CfError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| CfError::io(format!("opening CF region {}", path.display()), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| CfError::io(format!("reading size of CF region {}", path.display()), e))?
        .len();
    if file_len < HEADER_SIZE as u64 {
        return Err(bad(path, "file shorter than the header"));
    }
    let raw = open_mapping(path, &file)?;
    let len = raw.len();
    let provisional = Mapping {
        raw,
        len,
        slot_count: 0,
    };
    if provisional.header_u64(H_MAGIC) != MAGIC {
        return Err(bad(path, "bad magic"));
    }
    if provisional.u32_at(H_VERSION).load(Ordering::Acquire) != VERSION {
        return Err(bad(path, "unsupported version"));
    }
    let slot_count = provisional.u32_at(H_SLOT_COUNT).load(Ordering::Acquire);
    if slot_count == 0 || slot_count > MAX_SLOTS {
        return Err(bad(path, "slot count out of range"));
    }
    let declared = provisional.header_u64(H_SIZE);
    if declared < region_size(slot_count) as u64 || declared != len as u64 {
        return Err(bad(path, "size does not match the slot count or the file"));
    }
    Ok(Mapping {
        slot_count,
        ..provisional
    })
}

fn slot_index(id: SlotId) -> u32 {
    id.0 as u32
}

fn slot_generation(id: SlotId) -> u32 {
    (id.0 >> 32) as u32
}

fn make_slot_id(index: u32, generation: u32) -> SlotId {
    SlotId(u64::from(generation) << 32 | u64::from(index))
}

fn encode_address(address: IpAddr) -> (u32, [u8; 16]) {
    match address {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, bytes)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// A target's handle on the region: it can use slots but not allocate them. Cheap to clone.
#[derive(Clone)]
pub struct Region {
    mapping: Arc<Mapping>,
    path: PathBuf,
    epoch: u64,
    incarnation: u64,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("slots", &self.mapping.slot_count)
            .field("epoch", &self.epoch)
            .field("incarnation", &format_args!("{:#x}", self.incarnation))
            .finish()
    }
}

impl Region {
    /// Maps the region at `path` for a target that was told `epoch` and `incarnation` by the
    /// distributor.
    pub fn attach(path: &Path, epoch: u64, incarnation: u64) -> Result<Self, CfError> {
        let mapping = Arc::new(map_existing(path)?);
        let region = Region {
            mapping,
            path: path.to_path_buf(),
            epoch,
            incarnation,
        };
        region.check_fence()?;
        Ok(region)
    }

    /// The epoch this handle works in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The incarnation of the region (changes when it is created anew).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The region's epoch now (it moves on when a distributor takes the region over).
    pub fn current_epoch(&self) -> u64 {
        self.mapping.u64_at(H_EPOCH).load(Ordering::SeqCst)
    }

    /// The number of slots.
    pub fn slot_count(&self) -> u32 {
        self.mapping.slot_count
    }

    /// Checks that the file at the region's path is still the region this handle maps (a
    /// distributor that lost the region and created a new one gives it a new incarnation).
    /// Cheap enough for a timer, not meant for every packet.
    pub fn check_backing(&self) -> Result<(), CfError> {
        let current = map_existing(&self.path)?;
        let found = current.header_u64(H_INCARNATION);
        if found != self.incarnation {
            return Err(CfError::StateLost {
                expected: self.incarnation,
                found,
            });
        }
        Ok(())
    }

    fn check_fence(&self) -> Result<(), CfError> {
        let found = self.mapping.header_u64(H_INCARNATION);
        if found != self.incarnation {
            return Err(CfError::StateLost {
                expected: self.incarnation,
                found,
            });
        }
        let current = self.mapping.u64_at(H_EPOCH).load(Ordering::SeqCst);
        if current != self.epoch {
            return Err(CfError::Fenced {
                caller: self.epoch,
                current,
            });
        }
        Ok(())
    }

    /// Checks the handle's epoch and the slot's generation; returns the slot index.
    fn check_slot(&self, slot: SlotId) -> Result<u32, CfError> {
        self.check_fence()?;
        let index = slot_index(slot);
        if index >= self.mapping.slot_count {
            return Err(CfError::UnknownSlot(slot.0));
        }
        let state = self.mapping.slot_u32(index, S_STATE).load(Ordering::SeqCst);
        let generation = self
            .mapping
            .slot_u32(index, S_GENERATION)
            .load(Ordering::SeqCst);
        if state != STATE_LIVE || generation != slot_generation(slot) {
            return Err(CfError::UnknownSlot(slot.0));
        }
        Ok(index)
    }

    /// Finds the live slot of `key`.
    pub fn lookup(&self, key: SlotKey) -> Result<SlotId, CfError> {
        self.check_fence()?;
        let (family, address) = encode_address(key.dvipa);
        let low = u64::from_le_bytes(address[..8].try_into().unwrap_or_default());
        let high = u64::from_le_bytes(address[8..].try_into().unwrap_or_default());
        let m = &self.mapping;
        for index in 0..m.slot_count {
            if m.slot_u32(index, S_STATE).load(Ordering::Acquire) != STATE_LIVE {
                continue;
            }
            let same = m.slot_u32(index, S_SPI).load(Ordering::Relaxed) == key.spi
                && m.slot_u32(index, S_FAMILY).load(Ordering::Relaxed) == family
                && m.slot_u64(index, S_ADDRESS).load(Ordering::Relaxed) == low
                && m.slot_u64(index, S_ADDRESS + 8).load(Ordering::Relaxed) == high;
            if same {
                let generation = m.slot_u32(index, S_GENERATION).load(Ordering::Acquire);
                return Ok(make_slot_id(index, generation));
            }
        }
        Err(CfError::InvalidArgument("no slot for this DVIPA and SPI"))
    }

    /// The replay window of the slot at `index`.
    fn window(&self, index: u32) -> SharedWindow<'_> {
        let base = self.mapping.slot_base(index);
        SharedWindow::new(
            self.mapping.u64_at(base + S_REPLAY_TOP),
            self.mapping.u64_array(base + S_REPLAY_WORDS),
        )
    }

    fn window_size(&self, index: u32) -> u32 {
        self.mapping
            .slot_u32(index, S_WINDOW)
            .load(Ordering::Relaxed)
    }
}

impl SequenceFacility for Region {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        if n == 0 {
            return Err(CfError::InvalidArgument("fetch_add of zero numbers"));
        }
        let index = self.check_slot(slot)?;
        let first = self
            .mapping
            .slot_u64(index, S_COUNTER)
            .fetch_add(u64::from(n), Ordering::SeqCst);
        // Re-check: a release or a fence that happened before this fetch-and-add is seen here.
        self.check_slot(slot)?;
        if first == 0 || first.checked_add(u64::from(n)).is_none() {
            return Err(CfError::Exhausted(slot.0));
        }
        Ok(SeqRange { first, count: n })
    }

    /// Lock-free and possibly stale: see [`SharedWindow`] for why that is safe for a pre-check.
    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        let index = self.check_slot(slot)?;
        Ok(self.window(index).check(seq, self.window_size(index)))
    }

    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        let index = self.check_slot(slot)?;
        Ok(self
            .window(index)
            .check_and_set(seq, self.window_size(index)))
    }

    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        let index = self.check_slot(slot)?;
        let first = match direction {
            Direction::Inbound => S_LIFESIZE,
            Direction::Outbound => S_LIFESIZE + 16,
        };
        self.mapping
            .slot_u64(index, first)
            .fetch_add(bytes, Ordering::Relaxed);
        self.mapping
            .slot_u64(index, first + 8)
            .fetch_add(packets, Ordering::Relaxed);
        Ok(())
    }

    fn check_epoch(&self) -> Result<(), CfError> {
        self.check_fence()
    }

    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        let index = self.check_slot(slot)?;
        let read = |field: usize| {
            self.mapping
                .slot_u64(index, S_LIFESIZE + field)
                .load(Ordering::Relaxed)
        };
        Ok(Lifesize {
            bytes_in: read(0),
            packets_in: read(8),
            bytes_out: read(16),
            packets_out: read(24),
        })
    }
}

/// The distributor's handle: creates the region, allocates and releases slots, bumps the epoch.
#[derive(Debug, Clone)]
pub struct RegionOwner {
    region: Region,
}

impl RegionOwner {
    /// Creates a new region with `slot_count` slots at `path` (which must not exist yet).
    pub fn create(path: &Path, slot_count: u32) -> Result<Self, CfError> {
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(CfError::InvalidArgument("slot count must be 1 to 2^20"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| CfError::io(format!("creating CF region {}", path.display()), e))?;
        let unit = filesystem_block(&file)
            .map_err(|e| CfError::io(format!("statfs of {}", path.display()), e))?;
        let size = region_size(slot_count).div_ceil(unit) * unit;
        file.set_len(size as u64)
            .map_err(|e| CfError::io(format!("sizing CF region {}", path.display()), e))?;
        let raw = open_mapping(path, &file)?;
        let mapping = Mapping {
            len: raw.len(),
            raw,
            slot_count,
        };
        let incarnation = crate::random_u64();
        mapping.u32_at(H_VERSION).store(VERSION, Ordering::Relaxed);
        mapping
            .u32_at(H_SLOT_COUNT)
            .store(slot_count, Ordering::Relaxed);
        mapping.u64_at(H_SIZE).store(size as u64, Ordering::Relaxed);
        mapping
            .u64_at(H_INCARNATION)
            .store(incarnation, Ordering::Relaxed);
        mapping.u64_at(H_EPOCH).store(1, Ordering::Relaxed);
        // The magic goes last: a target that sees it sees a complete header.
        mapping.u64_at(H_MAGIC).store(MAGIC, Ordering::Release);
        Ok(RegionOwner {
            region: Region {
                mapping: Arc::new(mapping),
                path: path.to_path_buf(),
                epoch: 1,
                incarnation,
            },
        })
    }

    /// Takes over an existing region (a backup distributor): bumps the epoch, which fences
    /// every handle of the previous epoch.
    pub fn take_over(path: &Path) -> Result<Self, CfError> {
        let mapping = Arc::new(map_existing(path)?);
        let epoch = mapping.u64_at(H_EPOCH).fetch_add(1, Ordering::SeqCst) + 1;
        let incarnation = mapping.header_u64(H_INCARNATION);
        Ok(RegionOwner {
            region: Region {
                mapping,
                path: path.to_path_buf(),
                epoch,
                incarnation,
            },
        })
    }

    /// Attaches as an owner at `epoch`, which must be the region's current one: a distributor
    /// that was fenced by another's takeover of *other* DVIPAs, and was told the new epoch by
    /// that owner, carries on with the DVIPAs it keeps. Unlike [`RegionOwner::take_over`] it
    /// fences nobody. A stale epoch fails with [`CfError::Fenced`].
    pub fn rejoin(path: &Path, epoch: u64) -> Result<Self, CfError> {
        let mapping = Arc::new(map_existing(path)?);
        let incarnation = mapping.header_u64(H_INCARNATION);
        let region = Region {
            mapping,
            path: path.to_path_buf(),
            epoch,
            incarnation,
        };
        region.check_fence()?;
        Ok(RegionOwner { region })
    }

    /// Attaches as an owner at whatever epoch the region is in, fencing nobody: for a
    /// distributor that starts when no other owner holds its DVIPAs (the cluster's membership
    /// heard no claim). Anything else must use [`RegionOwner::take_over`] or
    /// [`RegionOwner::rejoin`] with the epoch it was told.
    pub fn attach_current(path: &Path) -> Result<Self, CfError> {
        let mapping = map_existing(path)?;
        let epoch = mapping.u64_at(H_EPOCH).load(Ordering::SeqCst);
        drop(mapping);
        RegionOwner::rejoin(path, epoch)
    }

    /// The target's view (same epoch and incarnation).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Allocates a slot for `key` with the peer's replay `window`, counters starting at 1.
    pub fn allocate(&self, key: SlotKey, window: u32) -> Result<SlotId, CfError> {
        if window == 0 || window > MAX_REPLAY_WINDOW {
            return Err(CfError::InvalidArgument("replay window must be 1 to 4096"));
        }
        self.region.check_fence()?;
        if self.region.lookup(key).is_ok() {
            return Err(CfError::InvalidArgument(
                "a slot for this DVIPA and SPI exists",
            ));
        }
        let m = &self.region.mapping;
        for index in 0..m.slot_count {
            let state = m.slot_u32(index, S_STATE);
            if state
                .compare_exchange(STATE_FREE, STATE_BUSY, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            self.initialise_slot(index, key, window);
            let generation = m.slot_u32(index, S_GENERATION).load(Ordering::SeqCst);
            state.store(STATE_LIVE, Ordering::SeqCst);
            return Ok(make_slot_id(index, generation));
        }
        Err(CfError::NoFreeSlot)
    }

    fn initialise_slot(&self, index: u32, key: SlotKey, window: u32) {
        let m = &self.region.mapping;
        let (family, address) = encode_address(key.dvipa);
        m.slot_u32(index, S_WINDOW).store(window, Ordering::Relaxed);
        m.slot_u32(index, S_SPI).store(key.spi, Ordering::Relaxed);
        m.slot_u32(index, S_FAMILY).store(family, Ordering::Relaxed);
        for (i, chunk) in address.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            m.slot_u64(index, S_ADDRESS + i * 8)
                .store(word, Ordering::Relaxed);
        }
        m.slot_u64(index, S_COUNTER).store(1, Ordering::SeqCst);
        // A target still holding the released SA's id may be inside a replay update that it
        // finishes after this reset. Marks and `top` only move forward, so such a late update can
        // make the new SA drop packets, never accept one twice; the new SA's peer starts at 1.
        self.region.window(index).reset();
        for i in 0..4 {
            m.slot_u64(index, S_LIFESIZE + i * 8)
                .store(0, Ordering::Relaxed);
        }
    }

    /// Releases every live slot of `dvipa` (the SAs a failed owner left behind, which the new
    /// owner renegotiates): call it right after [`RegionOwner::take_over`], before allocating
    /// the new SAs' slots. Returns how many were released.
    pub fn release_dvipa(&self, dvipa: IpAddr) -> Result<u32, CfError> {
        self.region.check_fence()?;
        let (family, address) = encode_address(dvipa);
        let low = u64::from_le_bytes(address[..8].try_into().unwrap_or_default());
        let high = u64::from_le_bytes(address[8..].try_into().unwrap_or_default());
        let m = &self.region.mapping;
        let mut released = 0;
        for index in 0..m.slot_count {
            let same = m.slot_u32(index, S_STATE).load(Ordering::Acquire) == STATE_LIVE
                && m.slot_u32(index, S_FAMILY).load(Ordering::Relaxed) == family
                && m.slot_u64(index, S_ADDRESS).load(Ordering::Relaxed) == low
                && m.slot_u64(index, S_ADDRESS + 8).load(Ordering::Relaxed) == high;
            if !same {
                continue;
            }
            let generation = m.slot_u32(index, S_GENERATION).load(Ordering::Acquire);
            // Another owner handle may release it at the same moment: that is fine.
            if self.release(make_slot_id(index, generation)).is_ok() {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Releases a slot: its id stops working at once, even for targets in the middle of an
    /// operation.
    pub fn release(&self, slot: SlotId) -> Result<(), CfError> {
        let index = self.region.check_slot(slot)?;
        let m = &self.region.mapping;
        let state = m.slot_u32(index, S_STATE);
        state
            .compare_exchange(STATE_LIVE, STATE_BUSY, Ordering::SeqCst, Ordering::Relaxed)
            .map_err(|_| CfError::UnknownSlot(slot.0))?;
        m.slot_u32(index, S_GENERATION)
            .fetch_add(1, Ordering::SeqCst);
        state.store(STATE_FREE, Ordering::SeqCst);
        Ok(())
    }
}

impl SequenceFacility for RegionOwner {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        self.region.fetch_add(slot, n)
    }
    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.region.replay_check(slot, seq)
    }
    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        self.region.replay_check_and_set(slot, seq)
    }
    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        self.region.lifesize_add(slot, direction, bytes, packets)
    }
    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        self.region.lifesize_read(slot)
    }
    fn check_epoch(&self) -> Result<(), CfError> {
        self.region.check_fence()
    }
}
