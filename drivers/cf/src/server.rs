//! The networked CF server: a sans-io core that answers requests and decides what must be
//! persisted, a file store that makes it durable, and a blocking TCP loop around them.
//!
//! # Never reuse a number
//!
//! For every slot the core keeps `next` (the next number to hand out) and a high-water mark
//! `out_hwm >= next` that is on disk. Numbers are only handed out below the stored mark; when a
//! request would cross it, the core first raises the mark by a block (hi/lo allocation) and writes
//! it with fsync, and only then replies. After a restart every slot continues at its stored mark,
//! so anything issued before the crash is below it. The inbound replay state works the same way:
//! the highest accepted number never passes a stored `replay_hwm`, and after a restart every
//! number up to that mark is treated as seen.
//!
//! A state file that is missing means a new incarnation (a fresh random id). Clients remember the
//! incarnation they first saw; when another one answers they get [`CfError::StateLost`] and
//! the SAs must be rekeyed. A state file that exists but is corrupt stops the server with an
//! error naming the byte: it is never silently replaced.
//!
//! Lifesize counters are stored whenever the image is written (with a mark, a slot or an
//! epoch change), so after a crash they may be behind by what was added since; they steer
//! rekeying, not safety. The TCP loop runs a thread per connection: the clients are the
//! cluster's own boxes, a handful per server.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::CfError;
use crate::facility::{Direction, Lifesize, ReplayVerdict, SeqRange, SlotId, SlotKey};
use crate::proto::{self, DecodeError, Op, OpResult, Request, ServerStats, MAX_TAKE};
use crate::replay::{ReplayState, MAX_REPLAY_WINDOW};

/// How far the stored marks run ahead of what is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub outbound: u64,
    pub replay: u64,
}

impl Default for BlockSizes {
    fn default() -> Self {
        BlockSizes {
            outbound: 1 << 16,
            replay: 1 << 16,
        }
    }
}

/// Somewhere to keep the state durably.
pub trait StateStore {
    /// Replaces the stored image; returns only once it is durable.
    fn save(&mut self, image: &[u8]) -> std::io::Result<()>;
}

/// Stores the state as `cf-state` in a directory: written to a temporary file, fsynced, renamed
/// over the old one, and the directory fsynced.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

const STATE_FILE: &str = "cf-state";
const STATE_TEMP: &str = "cf-state.tmp";

impl FileStore {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Self, CfError> {
        fs::create_dir_all(dir)
            .map_err(|e| CfError::io(format!("creating state directory {}", dir.display()), e))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The path of the state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The stored image, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Vec<u8>>, CfError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CfError::io(format!("reading {}", path.display()), e)),
        }
    }
}

impl StateStore for FileStore {
    fn save(&mut self, image: &[u8]) -> std::io::Result<()> {
        let temp = self.dir.join(STATE_TEMP);
        let mut file = File::create(&temp)?;
        file.write_all(image)?;
        file.sync_all()?;
        fs::rename(&temp, self.state_path())?;
        File::open(&self.dir)?.sync_all()
    }
}

#[derive(Debug, Clone)]
struct SlotState {
    key: SlotKey,
    window: u32,
    next: u64,
    out_hwm: u64,
    replay: ReplayState,
    replay_hwm: u64,
    lifesize: Lifesize,
}

/// The server's decisions, without sockets or files.
#[derive(Debug)]
pub struct ServerCore<S: StateStore> {
    store: S,
    blocks: BlockSizes,
    incarnation: u64,
    epoch: u64,
    next_slot: u64,
    slots: BTreeMap<u64, SlotState>,
    stats: ServerStats,
}

const IMAGE_MAGIC: &[u8; 8] = b"DVCFST01";
const SLOT_RECORD: usize = 8 + 1 + 16 + 4 + 4 + 8 + 8 + 32;
const IMAGE_HEADER: usize = 8 + 8 + 8 + 8 + 4;

impl<S: StateStore> ServerCore<S> {
    /// A core for a new incarnation; writes its first image.
    pub fn fresh(store: S, blocks: BlockSizes, incarnation: u64) -> Result<Self, CfError> {
        let mut core = ServerCore {
            store,
            blocks,
            incarnation,
            epoch: 1,
            next_slot: 1,
            slots: BTreeMap::new(),
            stats: ServerStats::default(),
        };
        core.persist()
            .map_err(|e| CfError::io("writing the first CF state", e))?;
        Ok(core)
    }

    /// A core restarted from a stored image: every slot continues at its stored marks.
    pub fn restore(
        store: S,
        blocks: BlockSizes,
        image: &[u8],
        path: &Path,
    ) -> Result<Self, CfError> {
        let parsed = parse_image(image).map_err(|(offset, reason)| CfError::BadState {
            path: path.to_path_buf(),
            offset,
            reason,
        })?;
        Ok(ServerCore {
            store,
            blocks,
            incarnation: parsed.incarnation,
            epoch: parsed.epoch,
            next_slot: parsed.next_slot,
            slots: parsed.slots,
            stats: ServerStats::default(),
        })
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counters (requests served, bad frames dropped).
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Counts a frame dropped because its length or its body was bad.
    pub fn count_drop(&mut self, error: &DecodeError) {
        match error {
            DecodeError::Oversized { .. } => self.stats.oversized += 1,
            _ => self.stats.malformed += 1,
        }
    }

    /// Counts a connection that ended inside a frame.
    pub fn count_truncated(&mut self) {
        self.stats.truncated += 1;
    }

    /// Answers one request, an answer per operation.
    pub fn handle(&mut self, request: &Request) -> Vec<OpResult> {
        self.stats.requests += 1;
        request
            .ops
            .iter()
            .map(|op| self.handle_op(request.epoch, op))
            .collect()
    }

    fn handle_op(&mut self, epoch: u64, op: &Op) -> OpResult {
        match op {
            Op::Hello => {
                return OpResult::Hello {
                    epoch: self.epoch,
                    incarnation: self.incarnation,
                }
            }
            Op::Stats => return OpResult::Stats(self.stats),
            _ if epoch != self.epoch => {
                return OpResult::Fenced {
                    current: self.epoch,
                }
            }
            _ => {}
        }
        match *op {
            Op::Allocate { key, window } => self.allocate(key, window),
            Op::Lookup { key } => self.lookup(key),
            Op::Release { slot } => self.release(slot),
            Op::FetchAdd { slot, count } => self.fetch_add(slot, count),
            Op::ReplayCheck { slot, seq } => match self.slots.get(&slot.0) {
                Some(state) => OpResult::Verdict(state.replay.check(seq, state.window)),
                None => OpResult::UnknownSlot,
            },
            Op::ReplayCheckAndSet { slot, seq } => self.replay_check_and_set(slot, seq),
            Op::LifesizeAdd {
                slot,
                direction,
                bytes,
                packets,
            } => self.lifesize_add(slot, direction, bytes, packets),
            Op::LifesizeRead { slot } => match self.slots.get(&slot.0) {
                Some(state) => OpResult::Lifesize(state.lifesize),
                None => OpResult::UnknownSlot,
            },
            Op::BumpEpoch { new_epoch } => self.bump_epoch(new_epoch),
            Op::Hello | Op::Stats => OpResult::Invalid,
        }
    }

    fn lookup(&self, key: SlotKey) -> OpResult {
        match self.slots.iter().find(|(_, state)| state.key == key) {
            Some((id, _)) => OpResult::Slot(SlotId(*id)),
            None => OpResult::UnknownSlot,
        }
    }

    fn allocate(&mut self, key: SlotKey, window: u32) -> OpResult {
        if window == 0
            || window > MAX_REPLAY_WINDOW
            || matches!(self.lookup(key), OpResult::Slot(_))
        {
            return OpResult::Invalid;
        }
        let id = self.next_slot;
        self.next_slot += 1;
        let state = SlotState {
            key,
            window,
            next: 1,
            out_hwm: 1,
            replay: ReplayState::default(),
            replay_hwm: 0,
            lifesize: Lifesize::default(),
        };
        self.slots.insert(id, state);
        if self.persist().is_err() {
            // The id stays burnt (next_slot is not lowered), so it is never handed out twice.
            self.slots.remove(&id);
            return OpResult::StorageFailed;
        }
        OpResult::Slot(SlotId(id))
    }

    fn release(&mut self, slot: SlotId) -> OpResult {
        let Some(state) = self.slots.remove(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        if self.persist().is_err() {
            self.slots.insert(slot.0, state);
            return OpResult::StorageFailed;
        }
        OpResult::Done
    }

    fn fetch_add(&mut self, slot: SlotId, count: u32) -> OpResult {
        if count == 0 || count > MAX_TAKE {
            return OpResult::Invalid;
        }
        let block = self.blocks.outbound;
        let Some(state) = self.slots.get_mut(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        let Some(end) = state.next.checked_add(u64::from(count)) else {
            return OpResult::Exhausted;
        };
        if end > state.out_hwm {
            let previous = state.out_hwm;
            state.out_hwm = end.saturating_add(block);
            if self.persist().is_err() {
                if let Some(state) = self.slots.get_mut(&slot.0) {
                    state.out_hwm = previous;
                }
                return OpResult::StorageFailed;
            }
        }
        let Some(state) = self.slots.get_mut(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        let first = state.next;
        state.next = end;
        OpResult::Range(SeqRange { first, count })
    }

    fn replay_check_and_set(&mut self, slot: SlotId, seq: u64) -> OpResult {
        let block = self.blocks.replay;
        let Some(state) = self.slots.get_mut(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        if state.replay.check(seq, state.window) == ReplayVerdict::Accepted
            && seq > state.replay_hwm
        {
            let previous = state.replay_hwm;
            state.replay_hwm = seq.saturating_add(block);
            if self.persist().is_err() {
                if let Some(state) = self.slots.get_mut(&slot.0) {
                    state.replay_hwm = previous;
                }
                return OpResult::StorageFailed;
            }
        }
        let Some(state) = self.slots.get_mut(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        OpResult::Verdict(state.replay.check_and_set(seq, state.window))
    }

    fn lifesize_add(
        &mut self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> OpResult {
        let Some(state) = self.slots.get_mut(&slot.0) else {
            return OpResult::UnknownSlot;
        };
        let life = &mut state.lifesize;
        let (b, p) = match direction {
            Direction::Inbound => (&mut life.bytes_in, &mut life.packets_in),
            Direction::Outbound => (&mut life.bytes_out, &mut life.packets_out),
        };
        *b = b.saturating_add(bytes);
        *p = p.saturating_add(packets);
        OpResult::Done
    }

    fn bump_epoch(&mut self, new_epoch: u64) -> OpResult {
        if new_epoch <= self.epoch {
            return OpResult::Invalid;
        }
        let previous = self.epoch;
        self.epoch = new_epoch;
        if self.persist().is_err() {
            self.epoch = previous;
            return OpResult::StorageFailed;
        }
        OpResult::Epoch(new_epoch)
    }

    fn persist(&mut self) -> std::io::Result<()> {
        let image = self.image();
        self.store.save(&image)
    }

    fn image(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IMAGE_HEADER + self.slots.len() * SLOT_RECORD + 8);
        out.extend_from_slice(IMAGE_MAGIC);
        for value in [self.incarnation, self.epoch, self.next_slot] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&(self.slots.len() as u32).to_be_bytes());
        for (id, state) in &self.slots {
            write_slot_record(&mut out, *id, state);
        }
        let checksum = fnv1a(&out);
        out.extend_from_slice(&checksum.to_be_bytes());
        out
    }
}

fn write_slot_record(out: &mut Vec<u8>, id: u64, state: &SlotState) {
    out.extend_from_slice(&id.to_be_bytes());
    let (family, address) = match state.key.dvipa {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (4u8, bytes)
        }
        IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    out.push(family);
    out.extend_from_slice(&address);
    out.extend_from_slice(&state.key.spi.to_be_bytes());
    out.extend_from_slice(&state.window.to_be_bytes());
    let life = state.lifesize;
    for value in [
        state.out_hwm,
        state.replay_hwm,
        life.bytes_in,
        life.packets_in,
        life.bytes_out,
        life.packets_out,
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// 64-bit FNV-1a: detects torn or edited state files (not an authenticity check).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct ParsedImage {
    incarnation: u64,
    epoch: u64,
    next_slot: u64,
    slots: BTreeMap<u64, SlotState>,
}

type ImageError = (usize, &'static str);

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(buf)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(buf)
}

fn parse_image(image: &[u8]) -> Result<ParsedImage, ImageError> {
    if image.len() < IMAGE_HEADER + 8 {
        return Err((image.len(), "file shorter than its header"));
    }
    if &image[..8] != IMAGE_MAGIC {
        return Err((0, "bad magic"));
    }
    let count = be_u32(image, 32) as usize;
    let expected_len = count
        .checked_mul(SLOT_RECORD)
        .and_then(|records| records.checked_add(IMAGE_HEADER + 8));
    if expected_len != Some(image.len()) {
        return Err((32, "slot count does not match the file length"));
    }
    let body_end = image.len() - 8;
    if fnv1a(&image[..body_end]) != be_u64(image, body_end) {
        return Err((body_end, "checksum mismatch"));
    }
    let mut slots = BTreeMap::new();
    for index in 0..count {
        let at = IMAGE_HEADER + index * SLOT_RECORD;
        let (id, state) = parse_slot_record(&image[at..at + SLOT_RECORD])
            .map_err(|(offset, why)| (at + offset, why))?;
        slots.insert(id, state);
    }
    Ok(ParsedImage {
        incarnation: be_u64(image, 8),
        epoch: be_u64(image, 16),
        next_slot: be_u64(image, 24),
        slots,
    })
}

fn parse_slot_record(record: &[u8]) -> Result<(u64, SlotState), ImageError> {
    let mut address = [0u8; 16];
    address.copy_from_slice(&record[9..25]);
    let dvipa = match record[8] {
        4 => IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )),
        6 => IpAddr::V6(Ipv6Addr::from(address)),
        _ => return Err((8, "bad address family")),
    };
    let window = be_u32(record, 29);
    if window == 0 || window > MAX_REPLAY_WINDOW {
        return Err((29, "replay window out of range"));
    }
    let field = |n: usize| be_u64(record, 33 + n * 8);
    let (out_hwm, replay_hwm) = (field(0), field(1));
    let state = SlotState {
        key: SlotKey {
            dvipa,
            spi: be_u32(record, 25),
        },
        window,
        next: out_hwm,
        out_hwm,
        replay: ReplayState::all_seen_up_to(replay_hwm),
        replay_hwm,
        lifesize: Lifesize {
            bytes_in: field(2),
            packets_in: field(3),
            bytes_out: field(4),
            packets_out: field(5),
        },
    };
    Ok((be_u64(record, 0), state))
}

/// Opens the state in `dir`: restores it if present, starts a new incarnation if not.
pub fn open_file_core(dir: &Path, blocks: BlockSizes) -> Result<ServerCore<FileStore>, CfError> {
    let store = FileStore::open(dir)?;
    let path = store.state_path();
    match store.load()? {
        Some(image) => ServerCore::restore(store, blocks, &image, &path),
        None => ServerCore::fresh(store, blocks, crate::random_u64()),
    }
}

/// A shared core, as the connection threads use it.
pub type SharedCore<S> = Arc<Mutex<ServerCore<S>>>;

fn lock<S: StateStore>(core: &SharedCore<S>) -> MutexGuard<'_, ServerCore<S>> {
    // A panic in another connection thread must not stop the server; the core's state is
    // consistent between operations.
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts connections forever, one thread each. A failed accept (out of descriptors, say) is
/// waited out rather than ending the server.
pub fn serve<S: StateStore + Send + 'static>(
    listener: TcpListener,
    core: SharedCore<S>,
) -> Result<(), CfError> {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let core = Arc::clone(&core);
        std::thread::spawn(move || serve_connection(stream, &core));
    }
    Ok(())
}

/// How a read of an exact number of bytes ended.
enum ReadOutcome {
    Complete,
    CleanEof,
    Truncated,
}

fn read_exactly(stream: &mut TcpStream, buf: &mut [u8]) -> ReadOutcome {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return ReadOutcome::CleanEof,
            Ok(0) => return ReadOutcome::Truncated,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) if filled == 0 => return ReadOutcome::CleanEof,
            Err(_) => return ReadOutcome::Truncated,
        }
    }
    ReadOutcome::Complete
}

/// Serves one connection until it closes or sends something bad (which is counted).
pub fn serve_connection<S: StateStore>(mut stream: TcpStream, core: &SharedCore<S>) {
    let _ = stream.set_nodelay(true);
    let mut body = Vec::new();
    loop {
        let mut prefix = [0u8; 4];
        match read_exactly(&mut stream, &mut prefix) {
            ReadOutcome::Complete => {}
            ReadOutcome::CleanEof => return,
            ReadOutcome::Truncated => return lock(core).count_truncated(),
        }
        let length = match proto::frame_length(prefix) {
            Ok(length) => length,
            Err(e) => return lock(core).count_drop(&e),
        };
        body.resize(length, 0);
        match read_exactly(&mut stream, &mut body) {
            ReadOutcome::Complete => {}
            ReadOutcome::CleanEof | ReadOutcome::Truncated if length > 0 => {
                return lock(core).count_truncated()
            }
            ReadOutcome::CleanEof | ReadOutcome::Truncated => {}
        }
        let request = match proto::decode_request(&body) {
            Ok(request) => request,
            Err(e) => return lock(core).count_drop(&e),
        };
        let results = lock(core).handle(&request);
        if stream.write_all(&proto::encode_response(&results)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the last image; can be told to fail. Clones share the image and the switch.
    #[derive(Default, Debug, Clone)]
    struct MemoryStore {
        image: Arc<Mutex<Vec<u8>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl StateStore for MemoryStore {
        fn save(&mut self, image: &[u8]) -> std::io::Result<()> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full"));
            }
            *self.image.lock().unwrap() = image.to_vec();
            Ok(())
        }
    }

    impl MemoryStore {
        fn saved(&self) -> Vec<u8> {
            self.image.lock().unwrap().clone()
        }

        fn set_failing(&self, failing: bool) {
            self.fail
                .store(failing, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A fresh core of `incarnation`, and a handle on its store's image and failure switch.
    fn fresh_core(incarnation: u64) -> (ServerCore<MemoryStore>, MemoryStore) {
        let store = MemoryStore::default();
        let handle = store.clone();
        let core = ServerCore::fresh(store, small_blocks(), incarnation).unwrap();
        (core, handle)
    }

    /// A core restarted from a saved image.
    fn restart_from(saved: &[u8]) -> ServerCore<MemoryStore> {
        ServerCore::restore(
            MemoryStore::default(),
            small_blocks(),
            saved,
            Path::new("mem"),
        )
        .unwrap()
    }

    /// Allocates the slot of `key(1)` with a 64-packet window.
    fn allocate_key1(core: &mut ServerCore<MemoryStore>) -> SlotId {
        slot(one(
            core,
            1,
            Op::Allocate {
                key: key(1),
                window: 64,
            },
        ))
    }

    fn key(spi: u32) -> SlotKey {
        SlotKey {
            dvipa: "192.0.2.1".parse().unwrap(),
            spi,
        }
    }

    fn one(core: &mut ServerCore<MemoryStore>, epoch: u64, op: Op) -> OpResult {
        core.handle(&Request {
            epoch,
            ops: vec![op],
        })
        .remove(0)
    }

    fn slot(result: OpResult) -> SlotId {
        match result {
            OpResult::Slot(id) => id,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    fn range(result: OpResult) -> SeqRange {
        match result {
            OpResult::Range(range) => range,
            other => panic!("expected a range, got {other:?}"),
        }
    }

    fn small_blocks() -> BlockSizes {
        BlockSizes {
            outbound: 10,
            replay: 10,
        }
    }

    #[test]
    fn restart_continues_above_everything_issued() {
        let (mut core, store) = fresh_core(42);
        let id = allocate_key1(&mut core);
        let mut highest = 0;
        for _ in 0..7 {
            let r = range(one(&mut core, 1, Op::FetchAdd { slot: id, count: 3 }));
            highest = r.first + u64::from(r.count) - 1;
        }
        assert_eq!(highest, 21);
        let saved = store.saved();
        let mut restarted = restart_from(&saved);
        assert_eq!(restarted.incarnation(), 42);
        let after = range(one(&mut restarted, 1, Op::FetchAdd { slot: id, count: 1 }));
        assert!(
            after.first > highest,
            "restart handed out {} after {}",
            after.first,
            highest
        );
        // Marks moved to 14 (first take) and 26 (fifth take); the restart continues at 26.
        assert_eq!(after.first, 26, "continues at the stored mark");
    }

    #[test]
    fn replay_state_after_restart_rejects_what_may_have_been_seen() {
        let (mut core, store) = fresh_core(1);
        let id = allocate_key1(&mut core);
        for seq in [5, 6, 9] {
            assert_eq!(
                one(&mut core, 1, Op::ReplayCheckAndSet { slot: id, seq }),
                OpResult::Verdict(crate::ReplayVerdict::Accepted)
            );
        }
        let saved = store.saved();
        let mut restarted = restart_from(&saved);
        for seq in [5, 6, 9, 7, 15] {
            assert_eq!(
                one(&mut restarted, 1, Op::ReplayCheckAndSet { slot: id, seq }),
                OpResult::Verdict(crate::ReplayVerdict::Replayed),
                "seq {seq}"
            );
        }
        assert_eq!(
            one(
                &mut restarted,
                1,
                Op::ReplayCheckAndSet { slot: id, seq: 16 }
            ),
            OpResult::Verdict(crate::ReplayVerdict::Accepted)
        );
    }

    #[test]
    fn storage_failure_hands_out_nothing() {
        let (mut core, store) = fresh_core(1);
        let id = allocate_key1(&mut core);
        assert_eq!(
            range(one(&mut core, 1, Op::FetchAdd { slot: id, count: 5 })).first,
            1
        );
        store.set_failing(true);
        // 6..=11 are below the mark (16): no write needed.
        assert_eq!(
            range(one(
                &mut core,
                1,
                Op::FetchAdd {
                    slot: id,
                    count: 10
                }
            ))
            .first,
            6
        );
        assert_eq!(
            one(
                &mut core,
                1,
                Op::FetchAdd {
                    slot: id,
                    count: 10
                }
            ),
            OpResult::StorageFailed
        );
        store.set_failing(false);
        assert_eq!(
            range(one(&mut core, 1, Op::FetchAdd { slot: id, count: 1 })).first,
            16
        );
    }

    #[test]
    fn epochs_fence_stale_clients() {
        let (mut core, store) = fresh_core(1);
        let id = allocate_key1(&mut core);
        assert_eq!(
            one(&mut core, 1, Op::BumpEpoch { new_epoch: 2 }),
            OpResult::Epoch(2)
        );
        assert_eq!(
            one(&mut core, 1, Op::FetchAdd { slot: id, count: 1 }),
            OpResult::Fenced { current: 2 }
        );
        assert_eq!(
            one(&mut core, 2, Op::BumpEpoch { new_epoch: 2 }),
            OpResult::Invalid
        );
        assert_eq!(
            range(one(&mut core, 2, Op::FetchAdd { slot: id, count: 1 })).first,
            1
        );
        // The epoch survives a restart: the fenced client stays fenced.
        let saved = store.saved();
        let mut restarted = restart_from(&saved);
        assert_eq!(restarted.epoch(), 2);
        assert_eq!(
            one(&mut restarted, 1, Op::FetchAdd { slot: id, count: 1 }),
            OpResult::Fenced { current: 2 }
        );
    }

    #[test]
    fn takeover_with_a_crash_hands_no_number_out_twice() {
        // The old owner (epoch 1) and its targets take numbers, the server crashes and
        // restarts from its last image, the backup bumps to epoch 2 and takes numbers on the
        // same slot while the old side keeps trying. Every number given is checked.
        let (mut core, store) = fresh_core(9);
        let id = allocate_key1(&mut core);
        let mut given = std::collections::HashSet::new();
        let mut take = |core: &mut ServerCore<MemoryStore>, epoch: u64, count: u32| match one(
            core,
            epoch,
            Op::FetchAdd { slot: id, count },
        ) {
            OpResult::Range(range) => {
                for seq in range.iter() {
                    assert!(given.insert(seq), "{seq} handed out twice");
                }
                true
            }
            OpResult::Fenced { current } => {
                assert!(current > epoch);
                false
            }
            other => panic!("{other:?}"),
        };
        for count in [1, 3, 7, 1, 2] {
            assert!(take(&mut core, 1, count));
        }
        // A restart whose store the test keeps, so the next crash restores what it saved.
        let restart = |saved: &[u8]| {
            let store = MemoryStore::default();
            let handle = store.clone();
            let core = ServerCore::restore(store, small_blocks(), saved, Path::new("mem")).unwrap();
            (core, handle)
        };
        let (mut core, store) = restart(&store.saved());
        assert!(take(&mut core, 1, 4), "same epoch after a restart");
        // The backup learns the epoch (HELLO) and moves it on.
        assert_eq!(
            one(&mut core, 1, Op::BumpEpoch { new_epoch: 2 }),
            OpResult::Epoch(2)
        );
        for round in 0..50 {
            assert!(!take(&mut core, 1, 1 + round % 5), "the old side is fenced");
            assert!(take(&mut core, 2, 1 + round % 3));
        }
        let (mut core, _) = restart(&store.saved());
        for _ in 0..10 {
            assert!(!take(&mut core, 1, 2));
            assert!(take(&mut core, 2, 2));
        }
        assert!(given.len() > 100);
    }

    #[test]
    fn released_ids_are_never_reused() {
        let (mut core, store) = fresh_core(1);
        let first = allocate_key1(&mut core);
        assert_eq!(
            one(&mut core, 1, Op::Release { slot: first }),
            OpResult::Done
        );
        assert_eq!(
            one(
                &mut core,
                1,
                Op::FetchAdd {
                    slot: first,
                    count: 1
                }
            ),
            OpResult::UnknownSlot
        );
        let saved = store.saved();
        let mut restarted = restart_from(&saved);
        let second = allocate_key1(&mut restarted);
        assert_ne!(first, second);
    }

    #[test]
    fn corrupt_images_are_refused_with_their_offset() {
        let (mut core, store) = fresh_core(1);
        allocate_key1(&mut core);
        let saved = store.saved();
        let mut flipped = saved.clone();
        flipped[40] ^= 1;
        let error = ServerCore::restore(
            MemoryStore::default(),
            small_blocks(),
            &flipped,
            Path::new("s"),
        )
        .unwrap_err();
        assert!(
            matches!(error, CfError::BadState { offset, .. } if offset == saved.len() - 8),
            "{error}"
        );
        let error = ServerCore::restore(
            MemoryStore::default(),
            small_blocks(),
            &saved[..20],
            Path::new("s"),
        )
        .unwrap_err();
        assert!(matches!(error, CfError::BadState { .. }), "{error}");
    }
}
