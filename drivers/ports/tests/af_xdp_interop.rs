//! AF_XDP ports on a veth inside namespaces the test creates: scapy sends frames our XDP
//! socket receives, tshark captures frames it sends, and two XDP sockets talk to each other.
//!
//! Needs root, iproute2, tshark and python3 with scapy (scripts/install-test-deps.sh).

mod common;

use std::time::Duration;

use common::{
    can_run, check_counted_exactly, check_exchange_exactly_once_in_order, frame, open_in, receive,
    send_all, NsPair, A_MAC, B_MAC,
};
use dvipsec_ports::{AfXdpConfig, AfXdpPort};

fn xdp_port_in(ns: &str, interface: &str) -> AfXdpPort {
    let config = AfXdpConfig::new(interface);
    open_in(ns, move || {
        AfXdpPort::open(&config).expect("open AF_XDP port")
    })
}

#[test]
fn af_xdp_receives_what_scapy_sends() {
    if !can_run("af_xdp_receives_what_scapy_sends", &["scapy"]) {
        return;
    }
    let pair = NsPair::new("xs");
    let mut port = xdp_port_in(pair.a.name(), pair.a_if());
    common::check_receives_what_scapy_sends(&pair, &mut port, 200);
}

#[test]
fn tshark_captures_what_af_xdp_sends() {
    if !can_run("tshark_captures_what_af_xdp_sends", &["tshark"]) {
        return;
    }
    let pair = NsPair::new("xt");
    let mut port = xdp_port_in(pair.a.name(), pair.a_if());
    common::check_tshark_captures_what_port_sends(&pair, &mut port, 100);
}

#[test]
fn two_af_xdp_ports_exchange_frames_exactly_once_in_order() {
    if !can_run(
        "two_af_xdp_ports_exchange_frames_exactly_once_in_order",
        &[],
    ) {
        return;
    }
    const COUNT: u32 = 1000;
    let pair = NsPair::new("xx");
    let mut a = xdp_port_in(pair.a.name(), pair.a_if());
    let mut b = xdp_port_in(pair.b.name(), pair.b_if());
    let frames = check_exchange_exactly_once_in_order(&mut a, &mut b, COUNT, 64);
    b.sync_kernel_drops().expect("XDP_STATISTICS");
    check_counted_exactly(&a, &b, &frames);

    let back: Vec<_> = (0..5).map(|seq| frame(A_MAC, B_MAC, seq, 100)).collect();
    send_all(&mut b, &back);
    assert_eq!(receive(&mut a, 5, Duration::from_secs(5)), back);

    assert!(
        xdp_attached(&pair.a),
        "program attached while the port lives"
    );
    drop(a);
    assert!(!xdp_attached(&pair.a), "program detached with the port");
}

fn xdp_attached(ns: &dvipsec_hwtest::netns::Netns) -> bool {
    let link = ns
        .exec_ip(&["link", "show", ns.name()])
        .expect("ip link show");
    link.contains("xdp")
}
