//! Ethdev ports on in-process vdevs: net_ring (a loopback: its one ring is both the receive and
//! the transmit queue) and two ports joined through our own rte_rings.
#![cfg(feature = "dpdk")]

mod common;

use dvipsec_dpdk::{DpdkError, Eal, EthdevConfig, EthdevPort, RingLink};
use dvipsec_ports::{BufLayout, Burst, DropCause, PacketPort};

const VDEVS: &[&str] = &["net_ring0", "net_null0"];

fn eal() -> Option<&'static Eal> {
    common::eal("ethdev", VDEVS)
}

fn small_config(device: &str) -> EthdevConfig {
    let mut config = EthdevConfig::new(device);
    config.descriptors = 256;
    config.mbufs = 512;
    config.buffers = 256;
    config
}

fn frame(n: usize, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
    f[12] = 0x88;
    f[13] = 0xb5;
    f
}

fn send(port: &mut impl PacketPort, frames: &[Vec<u8>]) -> usize {
    let mut burst = Burst::with_capacity(frames.len());
    for f in frames {
        let mut buf = port.alloc_tx().expect("tx buffer");
        buf.set_frame(f).expect("fits");
        burst.push(buf).expect("room");
    }
    port.tx_burst(&mut burst)
}

fn receive(port: &mut impl PacketPort, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..1000 {
        let mut burst = Burst::with_capacity(64);
        port.rx_burst(&mut burst);
        got.extend(burst.drain().map(|b| b.data().to_vec()));
        if got.len() >= want {
            break;
        }
    }
    got
}

#[test]
fn a_second_eal_init_is_refused() {
    let Some(_eal) = eal() else { return };
    let again = Eal::init(Eal::args_without_hugepages("never", &[]));
    assert_eq!(again.unwrap_err(), DpdkError::EalAlreadyInitialized);
    assert!(Eal::get().is_some());
}

#[test]
fn site_arguments_become_vdev_options() {
    let args = Eal::args_from_site(
        &["-l".into(), "1".into()],
        &["net_af_xdp0,iface=veth1,busy_budget=0".into()],
    );
    assert_eq!(
        args,
        ["-l", "1", "--vdev=net_af_xdp0,iface=veth1,busy_budget=0"]
    );
}

#[test]
fn net_ring_loops_frames_back_unchanged_and_counts_them() {
    let Some(eal) = eal() else { return };
    let mut port = EthdevPort::open(eal, &small_config("net_ring0")).expect("net_ring0");
    let free_before = port.free_mbufs();
    let frames: Vec<Vec<u8>> = (0..100).map(|n| frame(n, 60 + n * 14)).collect();
    let mut sent = 0;
    for chunk in frames.chunks(50) {
        sent += send(&mut port, chunk);
    }
    assert_eq!(sent, 100);
    let got = receive(&mut port, 100);
    assert_eq!(got, frames);
    let c = port.counters();
    assert_eq!((c.tx_packets, c.rx_packets), (100, 100));
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!((c.tx_bytes, c.rx_bytes), (bytes, bytes));
    assert_eq!(c.total_drops(), 0);
    assert_eq!(port.free_mbufs(), free_before, "every mbuf went back");
}

#[test]
fn bad_tx_lengths_are_counted_drops() {
    let Some(eal) = eal() else { return };
    let mut port = EthdevPort::open(eal, &small_config("net_null0")).expect("net_null0");
    let mut burst = Burst::with_capacity(2);
    let mut runt = port.alloc_tx().unwrap();
    runt.set_frame(&[1; 13]).unwrap();
    burst.push(runt).unwrap();
    let mut ok = port.alloc_tx().unwrap();
    ok.set_frame(&frame(0, 64)).unwrap();
    burst.push(ok).unwrap();
    assert_eq!(port.tx_burst(&mut burst), 1);
    assert!(burst.is_empty());
    let c = port.counters();
    assert_eq!(c.drops(DropCause::Runt), 1);
    assert_eq!(c.tx_packets, 1);
}

#[test]
fn frames_larger_than_the_receive_buffers_are_counted_oversize() {
    let Some(eal) = eal() else { return };
    let mut config = small_config("unused");
    let link = RingLink::new(eal, "over", 256, &config);
    let mut link = link.expect("ring link");
    config.layout = BufLayout::new(64, 100, 0).unwrap();
    let mut narrow = RingLink::new(eal, "narrow", 256, &config).expect("narrow link");
    // The sender's buffers have the same narrow layout: build the 101-byte frame in its headroom.
    let wide = frame(2, 101);
    let mut burst = Burst::with_capacity(2);
    let mut fits = narrow.a.alloc_tx().unwrap();
    fits.set_frame(&frame(1, 100)).unwrap();
    burst.push(fits).unwrap();
    let mut too_big = narrow.a.alloc_tx().unwrap();
    too_big.set_frame(&wide[1..]).unwrap();
    too_big.prepend(1).unwrap()[0] = wide[0];
    burst.push(too_big).unwrap();
    assert_eq!(narrow.a.tx_burst(&mut burst), 2);
    let got = receive(&mut narrow.b, 2);
    assert_eq!(got, vec![frame(1, 100)]);
    assert_eq!(narrow.b.counters().drops(DropCause::Oversize), 1);
    // The wide link is unaffected.
    assert_eq!(send(&mut link.a, &[frame(3, 1514)]), 1);
    assert_eq!(receive(&mut link.b, 1), vec![frame(3, 1514)]);
}

#[test]
fn ring_link_carries_frames_both_ways() {
    let Some(eal) = eal() else { return };
    let mut link = RingLink::new(eal, "both", 1024, &small_config("unused")).expect("link");
    let ab: Vec<Vec<u8>> = (0..64).map(|n| frame(n, 64 + n)).collect();
    let ba: Vec<Vec<u8>> = (0..10).map(|n| frame(n + 100, 1514)).collect();
    assert_eq!(send(&mut link.a, &ab), 64);
    assert_eq!(send(&mut link.b, &ba), 10);
    assert_eq!(receive(&mut link.b, 64), ab);
    assert_eq!(receive(&mut link.a, 10), ba);
    assert!(receive(&mut link.a, 1).is_empty(), "nothing echoed");
}

#[test]
fn unknown_port_names_the_device() {
    let Some(eal) = eal() else { return };
    let err = EthdevPort::open(eal, &small_config("net_missing7")).unwrap_err();
    assert_eq!(err, DpdkError::NoSuchPort("net_missing7".into()));
    assert!(err.to_string().contains("net_missing7"));
}
