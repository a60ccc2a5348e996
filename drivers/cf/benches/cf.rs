//! CF benchmarks: shared-memory fetch-and-add (uncontended atomic, region alone, region
//! contended by a second process), the networked CF on loopback with and without batching, and
//! sequence numbers per second per target through the lease layer.
//!
//! The replay group measures the distributor's pre-check (`replay_check`) and the target's
//! `replay_check_and_set`, alone and while a second thread runs `replay_check_and_set` on the
//! same slot (two targets decrypting one SA), against an uncontended atomic load in the same run.
//!
//! The contending process of the fetch-and-add group is this bench binary started again with
//! `CF_BENCH_HAMMER` set: it maps the same region and calls `fetch_add` on the same slot in a
//! loop until it is killed.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use dvipsec_cf::proto::Op;
use dvipsec_cf::server::{self, BlockSizes};
use dvipsec_cf::{
    LeaseParams, LeasePolicy, LeasedSequencer, NetClient, Region, RegionOwner, SequenceFacility,
    SlotId, SlotKey,
};

const HAMMER_ENV: &str = "CF_BENCH_HAMMER";

fn key(spi: u32) -> SlotKey {
    SlotKey {
        dvipa: "192.0.2.9".parse().unwrap(),
        spi,
    }
}

/// The contending process: hammers the slot until killed.
fn hammer(spec: &str) -> ! {
    let mut parts = spec.split(',');
    let path = parts.next().expect("region path");
    let incarnation: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("incarnation");
    let slot = SlotId(parts.next().and_then(|p| p.parse().ok()).expect("slot"));
    let region = Region::attach(Path::new(path), 1, incarnation).expect("attach");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    loop {
        black_box(region.fetch_add(slot, 1).expect("fetch_add"));
    }
}

/// Kills the contending process when the benchmark is done (or fails).
struct Hammer(Child);

impl Drop for Hammer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hammer(path: &Path, owner: &RegionOwner, slot: SlotId) -> Hammer {
    let spec = format!(
        "{},{},{}",
        path.display(),
        owner.region().incarnation(),
        slot.0
    );
    let mut child = Command::new(std::env::current_exe().expect("bench binary"))
        .env(HAMMER_ENV, spec)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the contending process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready");
    Hammer(child)
}

/// A scratch directory in /dev/shm (where production keeps the region), else the temp dir.
fn shm_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().expect("tempdir"))
}

/// A region for 4 targets in `dir`, owned here, with the slot of `key(1)` allocated.
fn region_with_slot(dir: &Path) -> (PathBuf, RegionOwner, SlotId) {
    let path = dir.join("region");
    let owner = RegionOwner::create(&path, 4).expect("region");
    let slot = owner.allocate(key(1), 128).expect("slot");
    (path, owner, slot)
}

fn shm_fetch_add(c: &mut Criterion) {
    let dir = shm_dir();
    let (path, owner, slot) = region_with_slot(dir.path());
    let region = owner.region().clone();
    let mut group = c.benchmark_group("shm_fetch_add");
    group.throughput(Throughput::Elements(1));

    let local = AtomicU64::new(0);
    group.bench_function("uncontended_atomic", |b| {
        b.iter(|| black_box(local.fetch_add(1, Ordering::SeqCst)))
    });
    group.bench_function("region_uncontended", |b| {
        b.iter(|| black_box(region.fetch_add(slot, 1).expect("take")))
    });
    {
        let _hammer = start_hammer(&path, &owner, slot);
        group.bench_function("region_contended_by_2_processes", |b| {
            b.iter(|| black_box(region.fetch_add(slot, 1).expect("take")))
        });
    }
    group.finish();
}

/// A number ahead of every window in the replay benchmarks.
const AHEAD: u64 = 1 << 62;

/// The second target of the contended replay benchmarks: takes numbers from the shared
/// `next` (so the two interleave, as when the distributor spreads one SA over two targets),
/// checks and sets each, and publishes the last one set, until `stop`.
fn replay_contender<'a>(
    scope: &'a std::thread::Scope<'a, '_>,
    region: &'a Region,
    slot: SlotId,
    next: &'a AtomicU64,
    last_set: &'a AtomicU64,
    stop: &'a AtomicBool,
) {
    scope.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let seq = next.fetch_add(1, Ordering::Relaxed);
            black_box(
                region
                    .replay_check_and_set(slot, seq)
                    .expect("check and set"),
            );
            last_set.store(seq, Ordering::Relaxed);
        }
    });
}

fn shm_replay(c: &mut Criterion) {
    let dir = shm_dir();
    let (_path, owner, slot) = region_with_slot(dir.path());
    let region = owner.region().clone();
    let mut group = c.benchmark_group("shm_replay");
    group.throughput(Throughput::Elements(1));

    let local = AtomicU64::new(7);
    group.bench_function("uncontended_atomic_load", |b| {
        b.iter(|| black_box(local.load(Ordering::Acquire)))
    });
    // Pre-checks of a number inside the window and of one ahead of it (in-order traffic).
    region.replay_check_and_set(slot, 1000).expect("mark");
    group.bench_function("check_in_window_uncontended", |b| {
        b.iter(|| black_box(region.replay_check(slot, black_box(990)).expect("check")))
    });
    group.bench_function("check_ahead_uncontended", |b| {
        b.iter(|| black_box(region.replay_check(slot, black_box(AHEAD)).expect("check")))
    });
    // Numbers come from a shared counter in every check-and-set benchmark, so that the
    // contended one (two takers) and this one differ only by the second thread.
    let next = AtomicU64::new(1001);
    group.bench_function("take_and_check_and_set_uncontended", |b| {
        b.iter(|| {
            let seq = next.fetch_add(1, Ordering::Relaxed);
            black_box(
                region
                    .replay_check_and_set(slot, seq)
                    .expect("check and set"),
            )
        })
    });
    let last_set = AtomicU64::new(next.load(Ordering::Relaxed));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        replay_contender(scope, &region, slot, &next, &last_set, &stop);
        // Just behind the other target's last number: the word it is writing.
        group.bench_function("check_in_window_while_2nd_thread_sets", |b| {
            b.iter(|| {
                let seq = last_set.load(Ordering::Relaxed) - 16;
                black_box(region.replay_check(slot, seq).expect("check"))
            })
        });
        group.bench_function("check_ahead_while_2nd_thread_sets", |b| {
            b.iter(|| black_box(region.replay_check(slot, black_box(AHEAD)).expect("check")))
        });
        group.bench_function("take_and_check_and_set_while_2nd_thread_sets", |b| {
            b.iter(|| {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                black_box(
                    region
                        .replay_check_and_set(slot, seq)
                        .expect("check and set"),
                )
            })
        });
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
}

fn net_server() -> (tempfile::TempDir, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = server::open_file_core(dir.path(), BlockSizes::default()).expect("core");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || server::serve(listener, Arc::new(Mutex::new(core))));
    (dir, addr)
}

fn net_cf(c: &mut Criterion) {
    let (_dir, addr) = net_server();
    let client = NetClient::connect_adopting(addr).expect("connect");
    let slot = client.allocate(key(1), 128).expect("slot");
    let mut group = c.benchmark_group("net_cf_loopback");
    for count in [1u32, 32] {
        group.throughput(Throughput::Elements(u64::from(count)));
        group.bench_with_input(
            BenchmarkId::new("fetch_add_numbers", count),
            &count,
            |b, &count| b.iter(|| black_box(client.fetch_add(slot, count).expect("take"))),
        );
    }
    for ops in [1usize, 16, 64] {
        let batch = vec![Op::FetchAdd { slot, count: 1 }; ops];
        group.throughput(Throughput::Elements(ops as u64));
        group.bench_with_input(
            BenchmarkId::new("ops_per_round_trip", ops),
            &batch,
            |b, batch| b.iter(|| black_box(client.call(batch).expect("call"))),
        );
    }
    group.finish();
}

fn per_target(c: &mut Criterion) {
    let dir = shm_dir();
    let (_path, owner, shm_slot) = region_with_slot(dir.path());
    let (_state, addr) = net_server();
    let client = NetClient::connect_adopting(addr).expect("connect");
    let net_slot = client.allocate(key(1), 128).expect("slot");
    // strongSwan's window, four targets at up to 100 kpps each: leases of 10.
    let bounded = LeasePolicy::bounded(&LeaseParams {
        peer_window: 128,
        targets: 4,
        lease_lifetime_us: 50,
        delay_jitter_us: 50,
        max_target_rate_pps: 100_000,
    })
    .expect("policy");
    let start = Instant::now();
    let now_us = || start.elapsed().as_micros() as u64;

    let mut group = c.benchmark_group("sequence_numbers_per_target");
    group.throughput(Throughput::Elements(1));
    let region: &dyn SequenceFacility = owner.region();
    let network: &dyn SequenceFacility = &client;
    for (name, facility, slot, policy) in [
        (
            "shm_per_packet",
            region,
            shm_slot,
            LeasePolicy::per_packet(),
        ),
        ("shm_lease_10", region, shm_slot, bounded),
        (
            "net_per_packet",
            network,
            net_slot,
            LeasePolicy::per_packet(),
        ),
        ("net_lease_10", network, net_slot, bounded),
    ] {
        let mut sequencer = LeasedSequencer::new(facility, slot, policy);
        group.bench_function(name, |b| {
            b.iter(|| black_box(sequencer.next(now_us()).expect("next")))
        });
    }
    group.finish();
}

fn main() {
    if let Ok(spec) = std::env::var(HAMMER_ENV) {
        hammer(&spec);
    }
    let mut criterion = Criterion::default().configure_from_args();
    shm_fetch_add(&mut criterion);
    shm_replay(&mut criterion);
    net_cf(&mut criterion);
    per_target(&mut criterion);
    criterion.final_summary();
}
