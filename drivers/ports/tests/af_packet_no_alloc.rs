//! AF_PACKET's hot path allocates nothing, with either receive ring: after setup, bursts
//! across a veth pair (transmit, wait, receive) leave the heap allocation count unchanged.
//!
//! Needs root (namespaces, CAP_NET_RAW) and iproute2.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{can_run, frame, open_in, NsPair, A_MAC, B_MAC};
use dvipsec_ports::{AfPacketConfig, AfPacketPort, Burst, PacketPort, RxRing};

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// GlobalAlloc contract; we only count calls on the side.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's: `layout` has non-zero size.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this `layout` (we forward all allocs).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees about `ptr`, `layout`, `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn port_in(ns: &str, interface: &str, rx_ring: RxRing) -> AfPacketPort {
    let mut config = AfPacketConfig::new(interface);
    config.rx_ring = rx_ring;
    open_in(ns, move || {
        AfPacketPort::open(&config).expect("open AF_PACKET port")
    })
}

/// Sends one full burst of `bytes` from `from` and receives all of it on `to`; returns how
/// many frames arrived.
fn pump(from: &mut AfPacketPort, to: &mut AfPacketPort, bytes: &[u8], burst: &mut Burst) -> u64 {
    for _ in 0..burst.capacity() {
        let mut buf = from.alloc_tx().expect("pool");
        buf.set_frame(bytes).expect("fits");
        burst.push(buf).expect("room");
    }
    from.tx_burst(burst);
    let mut received = 0;
    while received < burst.capacity() as u64 && to.wait_rx(Duration::from_secs(2)).expect("poll") {
        received += to.rx_burst(burst) as u64;
        burst.clear();
    }
    received
}

// One test only: the allocation counter is process-wide, and a second test running in
// parallel would allocate while this one measures.
#[test]
fn bursts_through_af_packet_allocate_nothing() {
    if !can_run("bursts_through_af_packet_allocate_nothing", &[]) {
        return;
    }
    let blocks = RxRing::Blocks {
        block_size: 1 << 16,
        block_count: 16,
        timeout_ms: 1,
    };
    for (tag, rx_ring) in [("pn", RxRing::Frames { frame_count: 256 }), ("pm", blocks)] {
        let pair = NsPair::new(tag);
        let mut a = port_in(pair.a.name(), pair.a_if(), rx_ring);
        let mut b = port_in(pair.b.name(), pair.b_if(), rx_ring);
        let to_b = frame(B_MAC, A_MAC, 1, 1000);
        let to_a = frame(A_MAC, B_MAC, 2, 1000);
        let mut burst = Burst::with_capacity(32);
        pump(&mut a, &mut b, &to_b, &mut burst);

        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let mut received = 0;
        for _ in 0..100 {
            received += pump(&mut a, &mut b, &to_b, &mut burst);
            received += pump(&mut b, &mut a, &to_a, &mut burst);
        }
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;

        assert_eq!(received, 2 * 100 * 32, "{rx_ring:?}");
        assert_eq!(
            allocated, 0,
            "heap allocations on the hot path, {rx_ring:?}"
        );
    }
}
