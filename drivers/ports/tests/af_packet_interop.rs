//! AF_PACKET ports against tools we did not write: scapy sends frames our port receives, and
//! tshark captures frames our port sends, inside namespaces the test creates.
//!
//! Needs root, iproute2, tshark and python3 with scapy (scripts/install-test-deps.sh).

mod common;

use common::{can_run, open_in, NsPair};
use dvipsec_ports::{AfPacketConfig, AfPacketPort};

fn port_in_a(pair: &NsPair) -> AfPacketPort {
    let config = AfPacketConfig::new(pair.a_if());
    open_in(pair.a.name(), move || {
        AfPacketPort::open(&config).expect("open AF_PACKET port")
    })
}

#[test]
fn af_packet_receives_what_scapy_sends() {
    if !can_run("af_packet_receives_what_scapy_sends", &["scapy"]) {
        return;
    }
    let pair = NsPair::new("ps");
    let mut port = port_in_a(&pair);
    common::check_receives_what_scapy_sends(&pair, &mut port, 200);
}

#[test]
fn tshark_captures_what_af_packet_sends() {
    if !can_run("tshark_captures_what_af_packet_sends", &["tshark"]) {
        return;
    }
    let pair = NsPair::new("pt");
    let mut port = port_in_a(&pair);
    common::check_tshark_captures_what_port_sends(&pair, &mut port, 100);
}
