//! DPDK ports on a real veth pair between two network namespaces this test creates: a PMD
//! (net_af_packet, net_af_xdp with busy_budget=0) owns one end, the kernel AF_PACKET port of
//! dvipsec-ports the other. Frames must arrive byte for byte both ways. The namespaces (and the
//! veth with them) are deleted by their Drop guards, also when an assertion fails.
#![cfg(feature = "dpdk")]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use dvipsec_dpdk::{Eal, EthdevConfig, EthdevPort};
use dvipsec_hwtest::netns::{join_with_veth, Netns};
use dvipsec_ports::netns::run_in;
use dvipsec_ports::{AfPacketConfig, AfPacketPort, Burst, PacketPort};

/// An EtherType for local experiments (IEEE 802): the kernel ignores it, so only our frames match.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn frame(n: usize, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 13 + n * 7) as u8).collect();
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&TEST_ETHERTYPE);
    f
}

fn frames() -> Vec<Vec<u8>> {
    (0..40).map(|n| frame(n, 60 + (n * 37) % 1455)).collect()
}

fn send(port: &mut dyn PacketPort, frames: &[Vec<u8>]) -> usize {
    let mut sent = 0;
    for chunk in frames.chunks(8) {
        let mut burst = Burst::with_capacity(chunk.len());
        for f in chunk {
            let mut buf = port.alloc_tx().expect("tx buffer");
            buf.set_frame(f).expect("fits");
            burst.push(buf).expect("room");
        }
        sent += port.tx_burst(&mut burst);
    }
    sent
}

/// Our test frames received within two seconds (other traffic, such as IPv6 router
/// solicitations, is ignored).
fn receive(port: &mut dyn PacketPort, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let mut burst = Burst::with_capacity(64);
        if port.rx_burst(&mut burst) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        got.extend(
            burst
                .drain()
                .filter(|b| b.data().get(12..14) == Some(&TEST_ETHERTYPE[..]))
                .map(|b| b.data().to_vec()),
        );
    }
    got
}

struct Pair {
    // Field order: the namespaces go last, after nothing else refers to them.
    dpdk_side: Netns,
    kernel_side: Netns,
    dpdk_if: String,
    kernel_if: String,
}

fn veth_pair(tag: &str) -> Pair {
    let pid = std::process::id();
    let dpdk_side = Netns::create(&format!("dvs-dpdk-{tag}-{pid}")).expect("netns");
    let kernel_side = Netns::create(&format!("dvs-kern-{tag}-{pid}")).expect("netns");
    let dpdk_if = format!("dd{tag}{}", pid % 100_000);
    let kernel_if = format!("dk{tag}{}", pid % 100_000);
    join_with_veth(&dpdk_side, &dpdk_if, &kernel_side, &kernel_if).expect("veth");
    // No IP addresses are configured, so the kernel does not answer on the PMD's end; IPv6
    // is switched off there too so it sends nothing of its own.
    for (ns, ifname) in [(&dpdk_side, &dpdk_if), (&kernel_side, &kernel_if)] {
        let _ = ns.exec_ip(&["link", "set", ifname, "promisc", "on"]);
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{ifname}.disable_ipv6=1"))
            .status();
    }
    Pair {
        dpdk_side,
        kernel_side,
        dpdk_if,
        kernel_if,
    }
}

fn check_both_ways(eal: &'static Eal, pair: &Pair, vdev: &str, device: &str) {
    let devargs = vdev.to_owned();
    let dev_name = device.to_owned();
    let mut dpdk = run_in(pair.dpdk_side.name(), move || {
        eal.probe_vdev(&devargs).expect("probe vdev");
        let mut config = EthdevConfig::new(&dev_name);
        // net_af_xdp keeps its whole fill ring (thousands of mbufs) posted to the kernel.
        config.mbufs = 8192;
        config.buffers = 512;
        EthdevPort::open(eal, &config).expect("open DPDK port")
    })
    .expect("enter the DPDK side's namespace");
    let kernel_if = pair.kernel_if.clone();
    let mut kernel = run_in(pair.kernel_side.name(), move || {
        AfPacketPort::open(&AfPacketConfig::new(&kernel_if)).expect("AF_PACKET port")
    })
    .expect("enter the kernel side's namespace");
    // Give the XDP program and the kernel socket a moment to attach.
    thread::sleep(Duration::from_millis(200));
    let out = frames();
    let sent = send(&mut dpdk, &out);
    assert_eq!(
        sent,
        out.len(),
        "{device}: DPDK sent all: {:?}",
        dpdk.counters()
    );
    assert_eq!(receive(&mut kernel, out.len()), out, "{device} -> kernel");
    let back: Vec<Vec<u8>> = out.iter().rev().cloned().collect();
    assert_eq!(send(&mut kernel, &back), back.len(), "kernel sent all");
    assert_eq!(receive(&mut dpdk, back.len()), back, "kernel -> {device}");
    let c = dpdk.counters();
    assert_eq!(c.tx_packets, out.len() as u64);
    assert!(c.rx_packets >= back.len() as u64);
}

fn eal() -> Option<&'static Eal> {
    let have_ip = std::process::Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::prerequisite(have_ip, "iproute2 (ip) is needed for namespaces") {
        return None;
    }
    common::eal("veth", &[])
}

#[test]
fn af_packet_pmd_and_kernel_port_exchange_exact_frames() {
    let Some(eal) = eal() else { return };
    let pair = veth_pair("p");
    let vdev = format!("net_af_packet0,iface={}", pair.dpdk_if);
    check_both_ways(eal, &pair, &vdev, "net_af_packet0");
}

#[test]
fn af_xdp_pmd_and_kernel_port_exchange_exact_frames() {
    let Some(eal) = eal() else { return };
    let pair = veth_pair("x");
    let vdev = format!("net_af_xdp0,iface={},busy_budget=0", pair.dpdk_if);
    check_both_ways(eal, &pair, &vdev, "net_af_xdp0");
}
