//! AF_PACKET ports on both ends of a veth pair between two namespaces this test creates.
//!
//! Needs root (namespaces, CAP_NET_RAW) and iproute2.

mod common;

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use common::{
    can_run, check_counted_exactly, check_exchange_exactly_once_in_order, frame, open_in, receive,
    send_all, NsPair, A_MAC, B_MAC,
};
use dvipsec_ports::{
    wait_any_readable, AfPacketConfig, AfPacketPort, BufLayout, Burst, DropCause, PacketPort,
    RxRing,
};

fn port_in(ns: &str, config: AfPacketConfig) -> AfPacketPort {
    open_in(ns, move || {
        AfPacketPort::open(&config).expect("open AF_PACKET port")
    })
}

#[test]
fn frames_cross_a_veth_pair_exactly_once_in_order() {
    if !can_run("frames_cross_a_veth_pair_exactly_once_in_order", &[]) {
        return;
    }
    const COUNT: u32 = 600;
    let pair = NsPair::new("pv");
    // The sender skips the qdisc layer here; the other tests send through it.
    let mut a_config = AfPacketConfig::new(pair.a_if());
    a_config.qdisc_bypass = true;
    let mut a = port_in(pair.a.name(), a_config);
    let mut b = port_in(pair.b.name(), AfPacketConfig::new(pair.b_if()));
    let frames = check_exchange_exactly_once_in_order(&mut a, &mut b, COUNT, 32);

    b.sync_kernel_drops().expect("PACKET_STATISTICS");
    check_counted_exactly(&a, &b, &frames);
    assert_eq!(
        a.counters().rx_packets,
        0,
        "a's own transmissions are not looped back to it"
    );
    assert_eq!(
        a.pool().available(),
        a.pool().capacity(),
        "no buffer leaked"
    );
}

#[test]
fn the_reverse_direction_and_oversize_frames() {
    if !can_run("the_reverse_direction_and_oversize_frames", &[]) {
        return;
    }
    let pair = NsPair::new("pr");
    let mut a = port_in(pair.a.name(), AfPacketConfig::new(pair.a_if()));
    let mut b_config = AfPacketConfig::new(pair.b_if());
    b_config.tx_frame_size = 1024;
    let mut b = port_in(pair.b.name(), b_config);
    let frames: Vec<_> = (0..5).map(|seq| frame(A_MAC, B_MAC, seq, 200)).collect();
    send_all(&mut b, &frames);
    assert_eq!(receive(&mut a, 5, Duration::from_secs(5)), frames);

    // b's transmit slots are 1024 bytes (992 after the V2 header): a full-size frame is
    // dropped and counted, never sent.
    let mut burst = Burst::with_capacity(2);
    let mut big = b.alloc_tx().expect("pool");
    big.set_frame(&frame(A_MAC, B_MAC, 99, 1500))
        .expect("fits the buffer");
    burst.push(big).expect("room");
    let mut runt = b.alloc_tx().expect("pool");
    runt.set_frame(&[0xff; 10]).expect("fits");
    burst.push(runt).expect("room");
    assert_eq!(b.tx_burst(&mut burst), 0);
    assert_eq!(b.counters().drops(DropCause::Oversize), 1);
    assert_eq!(b.counters().drops(DropCause::Runt), 1);
    assert!(receive(&mut a, 1, Duration::from_millis(100)).is_empty());
}

/// Blocks of 64 KiB, as the V3 ring was configured before frames became the default.
const BLOCKS: RxRing = RxRing::Blocks {
    block_size: 1 << 16,
    block_count: 64,
    timeout_ms: 1,
};

fn with_rx_ring(interface: &str, rx_ring: RxRing) -> AfPacketConfig {
    let mut config = AfPacketConfig::new(interface);
    config.rx_ring = rx_ring;
    config
}

/// Waits on the port's readiness descriptor, as an idle polling loop does.
fn readable_within(port: &AfPacketPort, timeout: Duration) -> bool {
    let fd: BorrowedFd<'_> = port.readiness_fd().expect("AF_PACKET has a readiness fd");
    wait_any_readable(&[fd], timeout).expect("poll")
}

#[test]
fn a_lone_frame_is_handed_over_at_once_in_frames_and_at_the_timer_in_blocks() {
    if !can_run(
        "a_lone_frame_is_handed_over_at_once_in_frames_and_at_the_timer_in_blocks",
        &[],
    ) {
        return;
    }
    let pair = NsPair::new("pl");
    let mut a = port_in(pair.a.name(), AfPacketConfig::new(pair.a_if()));
    let mut b = port_in(pair.b.name(), AfPacketConfig::new(pair.b_if()));
    let mut burst = Burst::with_capacity(4);
    // Frames (the default): each lone frame, with no traffic behind it, wakes the reader.
    let mut slowest = Duration::ZERO;
    for seq in 0..20 {
        let sent = frame(A_MAC, B_MAC, seq, 100);
        send_all(&mut b, std::slice::from_ref(&sent));
        let started = Instant::now();
        assert!(
            readable_within(&a, Duration::from_millis(50)),
            "frame {seq} not handed over within 50 ms"
        );
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.rx_burst(&mut burst), 1, "frame {seq}");
        assert_eq!(burst.drain().next().expect("one frame").data(), &sent[..]);
        assert!(!readable_within(&a, Duration::ZERO), "nothing else waits");
    }
    eprintln!("frames: slowest hand-over of a lone frame {slowest:?}");
    drop(a);

    // Blocks with a long retire timer: a lone frame waits in its block until the timer fires
    // (it runs from the block's opening, so the wait is anywhere up to 1 s; the check right
    // after sending misses only if the timer fires in those few microseconds).
    let long_timer = RxRing::Blocks {
        block_size: 1 << 16,
        block_count: 4,
        timeout_ms: 1000,
    };
    let mut a = port_in(pair.a.name(), with_rx_ring(pair.a_if(), long_timer));
    let sent = frame(A_MAC, B_MAC, 99, 100);
    send_all(&mut b, std::slice::from_ref(&sent));
    assert!(
        !a.wait_rx(Duration::ZERO).expect("poll"),
        "a block is not handed over before its timer"
    );
    assert!(
        readable_within(&a, Duration::from_secs(3)),
        "the retire timer hands the block over"
    );
    assert_eq!(a.rx_burst(&mut burst), 1);
    assert_eq!(burst.drain().next().expect("one frame").data(), &sent[..]);
}

#[test]
fn frames_longer_than_a_slot_are_dropped_and_counted() {
    if !can_run("frames_longer_than_a_slot_are_dropped_and_counted", &[]) {
        return;
    }
    let pair = NsPair::new("pb");
    // A 256-byte data room gives 512-byte slots (80 bytes of kernel header room in front).
    let mut a_config = AfPacketConfig::new(pair.a_if());
    a_config.layout = BufLayout::new(64, 256, 32).expect("layout");
    let slot = a_config.rx_slot_size().expect("frame slots");
    assert_eq!(slot, 512);
    let mut a = port_in(pair.a.name(), a_config);
    let mut b = port_in(pair.b.name(), AfPacketConfig::new(pair.b_if()));
    let before = frame(A_MAC, B_MAC, 1, 100);
    let longer_than_slot = frame(A_MAC, B_MAC, 2, 1000);
    let over_data_room = frame(A_MAC, B_MAC, 3, 300);
    let after = frame(A_MAC, B_MAC, 4, 242);
    assert!(longer_than_slot.len() > slot && over_data_room.len() < slot - 80);
    let sent = [
        before.clone(),
        longer_than_slot,
        over_data_room,
        after.clone(),
    ];
    send_all(&mut b, &sent);
    let got = receive(&mut a, 2, Duration::from_secs(5));
    assert_eq!(got, vec![before, after], "only the frames that fit arrive");
    assert!(receive(&mut a, 1, Duration::from_millis(100)).is_empty());
    let counters = a.counters();
    assert_eq!(
        counters.drops(DropCause::Truncated),
        1,
        "cut to the slot by the kernel"
    );
    assert_eq!(
        counters.drops(DropCause::Oversize),
        1,
        "fits the slot, not the data room"
    );
    assert_eq!(counters.rx_packets, 2);
    assert_eq!(
        a.pool().available(),
        a.pool().capacity(),
        "no buffer leaked"
    );
}

/// Sends `count` frames from `from` to `to` and checks they arrive whole and in order.
fn exchange(from: &mut AfPacketPort, to: &mut AfPacketPort, count: u32) -> Vec<Vec<u8>> {
    check_exchange_exactly_once_in_order(from, to, count, 32)
}

#[test]
fn both_ring_kinds_carry_bursts_both_ways() {
    if !can_run("both_ring_kinds_carry_bursts_both_ways", &[]) {
        return;
    }
    for (tag, rx_ring) in [("pf", RxRing::Frames { frame_count: 256 }), ("pk", BLOCKS)] {
        let pair = NsPair::new(tag);
        let mut a = port_in(pair.a.name(), with_rx_ring(pair.a_if(), rx_ring));
        let mut b = port_in(pair.b.name(), with_rx_ring(pair.b_if(), rx_ring));
        let forward = exchange(&mut a, &mut b, 300);
        b.sync_kernel_drops().expect("PACKET_STATISTICS");
        check_counted_exactly(&a, &b, &forward);
        // The reverse direction: both ports' other ring.
        let (a_before, b_before) = (a.counters(), b.counters());
        let reverse = exchange(&mut b, &mut a, 300);
        a.sync_kernel_drops().expect("PACKET_STATISTICS");
        let bytes: u64 = reverse.iter().map(|f| f.len() as u64).sum();
        let (a_after, b_after) = (a.counters(), b.counters());
        assert_eq!(
            (
                b_after.tx_packets - b_before.tx_packets,
                b_after.tx_bytes - b_before.tx_bytes
            ),
            (300, bytes),
            "{rx_ring:?}"
        );
        assert_eq!(
            (
                a_after.rx_packets - a_before.rx_packets,
                a_after.rx_bytes - a_before.rx_bytes
            ),
            (300, bytes),
            "{rx_ring:?}"
        );
        assert_eq!(
            (a_after.total_drops(), b_after.total_drops()),
            (0, 0),
            "{rx_ring:?}"
        );
    }
}

#[test]
fn a_full_frame_ring_counts_the_kernels_drops() {
    if !can_run("a_full_frame_ring_counts_the_kernels_drops", &[]) {
        return;
    }
    let pair = NsPair::new("pd");
    // 16 slots and nobody reading: the kernel loses the rest and counts them.
    let mut a = port_in(
        pair.a.name(),
        with_rx_ring(pair.a_if(), RxRing::Frames { frame_count: 16 }),
    );
    let mut b = port_in(pair.b.name(), AfPacketConfig::new(pair.b_if()));
    let frames: Vec<_> = (0..64).map(|seq| frame(A_MAC, B_MAC, seq, 100)).collect();
    send_all(&mut b, &frames);
    let got = receive(&mut a, 64, Duration::from_millis(500));
    a.sync_kernel_drops().expect("PACKET_STATISTICS");
    let lost = a.counters().drops(DropCause::KernelRxRingFull);
    assert_eq!(got.len(), 16, "the ring held 16 frames");
    assert_eq!(got[..], frames[..16], "the first 16, in order");
    assert_eq!(lost, 48, "the kernel counted the rest as lost");
}
