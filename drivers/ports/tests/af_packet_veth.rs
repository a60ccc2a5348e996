//! AF_PACKET ports on both ends of a veth pair between two namespaces this test creates.
//!
//! Needs root (namespaces, CAP_NET_RAW) and iproute2.

mod common;

use std::time::Duration;

use common::{
    can_run, check_counted_exactly, check_exchange_exactly_once_in_order, frame, open_in, receive,
    send_all, NsPair, A_MAC, B_MAC,
};
use dvipsec_ports::{AfPacketConfig, AfPacketPort, Burst, DropCause, PacketPort};

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

    // b's transmit slots are 1024 bytes (976 after the header): a full-size frame is
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
