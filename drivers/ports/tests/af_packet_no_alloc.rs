//! AF_PACKET's hot path allocates nothing, with either receive ring: after setup, bursts
//! across a veth pair (transmit, wait, receive) leave the heap allocation count unchanged.
//!
//! Needs root (namespaces, CAP_NET_RAW) and iproute2.

mod common;

use std::time::Duration;

use common::{can_run, frame, open_in, NsPair, A_MAC, B_MAC};
use dvipsec_ports::{AfPacketConfig, AfPacketPort, Burst, PacketPort, RxRing};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

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

        let before = allocations();
        let mut received = 0;
        for _ in 0..100 {
            received += pump(&mut a, &mut b, &to_b, &mut burst);
            received += pump(&mut b, &mut a, &to_a, &mut burst);
        }
        let allocated = allocations() - before;

        assert_eq!(received, 2 * 100 * 32, "{rx_ring:?}");
        assert_eq!(
            allocated, 0,
            "heap allocations on the hot path, {rx_ring:?}"
        );
    }
}
