//! The fabric's hot path allocates nothing: after setup, bursts through a wire and a switch
//! (unicast and broadcast) leave the heap allocation count unchanged.

use dvipsec_ports::{wire, Burst, FabricConfig, FabricPort, PacketPort, SwitchBuilder};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

fn frame(dst: [u8; 6]) -> [u8; 64] {
    let mut bytes = [0x5a; 64];
    bytes[..6].copy_from_slice(&dst);
    bytes
}

fn pump(from: &mut FabricPort, to: &mut [&mut FabricPort], dst: [u8; 6], burst: &mut Burst) {
    for _ in 0..burst.capacity() {
        let mut buf = from.alloc_tx().expect("pool");
        buf.set_frame(&frame(dst)).expect("fits");
        burst.push(buf).expect("room");
    }
    from.tx_burst(burst);
    for port in to.iter_mut() {
        while port.rx_burst(burst) > 0 {
            burst.clear();
        }
    }
}

// One test only: the allocation counter is process-wide, and a second test running in
// parallel would allocate while this one measures.
#[test]
fn bursts_through_the_fabric_allocate_nothing() {
    let (mut a, mut b) = wire("a", "b", FabricConfig::esp_default()).expect("wire");
    let mut ports = SwitchBuilder::new(FabricConfig::esp_default())
        .port("p0", [2, 0, 0, 0, 0, 0])
        .and_then(|s| s.port("p1", [2, 0, 0, 0, 0, 1]))
        .and_then(|s| s.port("p2", [2, 0, 0, 0, 0, 2]))
        .and_then(|s| s.build())
        .expect("switch");
    let mut burst = Burst::with_capacity(32);
    let [p0, p1, p2] = &mut ports[..] else {
        panic!("three ports");
    };

    let before = allocations();
    for _ in 0..200 {
        pump(&mut a, &mut [&mut b], [2, 0, 0, 0, 0, 0xb], &mut burst);
        pump(p0, &mut [p1, p2], [2, 0, 0, 0, 0, 1], &mut burst);
        pump(p1, &mut [p0, p2], [0xff; 6], &mut burst);
    }
    let allocated = allocations() - before;

    assert_eq!(b.counters().rx_packets, 200 * 32);
    assert_eq!(p1.counters().rx_packets, 200 * 32);
    assert_eq!(p2.counters().rx_packets, 200 * 32, "broadcasts reached p2");
    assert_eq!(p0.counters().rx_packets, 200 * 32, "broadcasts reached p0");
    assert_eq!(allocated, 0, "heap allocations on the hot path");
}
