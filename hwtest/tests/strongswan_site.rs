//! The figure-4 site across network namespaces, one `dvipsec boot` per box, against a real
//! peer: strongSwan (charon with kernel-libipsec, so UDP-encapsulated tunnel-mode ESP) in the
//! peer namespace negotiates with DVA1's distributor, then UDP flows to the echo service on
//! port 60 are spread over the three targets and answered. Captures on the hub's side of each
//! box's external veth show the answers leaving every target's own interface, and strongSwan
//! logs no sequence-number (replay) failure.

mod support;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use dvipsec_hwtest::topology;
use support::swan::*;

/// UDP flows (source ports) and datagrams per flow.
const FLOWS: usize = 24;
const ROUNDS: usize = 10;

/// The whole scenario on the site as `edit` changes it (its ports, say).
/// `log_line` must show in every box's log.
fn strongswan_through_the_site(
    test: &str,
    tag: &str,
    log_line: Option<&str>,
    edit: impl FnOnce(String) -> String,
) {
    let Some(ConnectedSite { site, charon }) = ConnectedSite::connect(test, tag, edit) else {
        return;
    };
    let hub = site.ns("hub");
    let peer_ns = site.ns("peer");
    let captures: Vec<(PathBuf, Child)> = (0..NODES.len())
        .map(|i| {
            let file = site.dir.path().join(format!("esp-{i}.pcap"));
            let child = start_capture(&hub, i, &file);
            (file, child)
        })
        .collect();
    // tshark writes the file header once it captures.
    let deadline = Instant::now() + Duration::from_secs(15);
    while captures.iter().any(|(f, _)| !f.exists()) {
        assert!(Instant::now() < deadline, "tshark did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let output = run(&mut in_ns(
        &peer_ns,
        &[
            "python3",
            "-c",
            ECHO_CLIENT,
            PEER_INNER,
            DVIPA,
            &FLOWS.to_string(),
            &ROUNDS.to_string(),
        ],
    ));
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (warm, echoed, sent) = (
        field(&line, "warm"),
        field(&line, "echoed"),
        field(&line, "sent"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut per_box = Vec::new();
    for (file, child) in captures {
        stop(child);
        per_box.push(packets_in(&file));
    }
    eprintln!("echo client: {line}; ESP leaving each box (MVS1, MVS2, MVS4): {per_box:?}");

    assert_eq!(warm, FLOWS as u64, "every flow got an answer: {line}");
    assert_eq!(
        echoed, sent,
        "no datagram lost once the flows were up: {line}"
    );
    for (node, count) in NODES.iter().zip(&per_box) {
        assert!(*count > 0, "{node} sent no ESP of its own: {per_box:?}");
    }
    let total: usize = per_box.iter().sum();
    assert!(
        total as u64 >= echoed + warm,
        "every answer left some box's own port: {total} < {}",
        echoed + warm
    );
    let log = charon.log();
    assert!(
        !log.contains("verification failed"),
        "strongSwan saw replayed or bad sequence numbers:\n{log}"
    );
    let sas = charon.swanctl(&["--list-sas", "--raw"]);
    assert!(sas.contains("state=ESTABLISHED"), "{sas}");
    for node in NODES.iter().filter(|_| log_line.is_some()) {
        let log =
            std::fs::read_to_string(site.run_dir().join(format!("{node}.log"))).unwrap_or_default();
        let line = log_line.unwrap_or_default();
        assert!(log.contains(line), "{node} never logged {line:?}:\n{log}");
    }
    // A clean shutdown deletes the IKE SA: strongSwan hears of it and holds no SA.
    let pids = site.pids();
    topology::down(&site.run_dir()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while charon.swanctl(&["--list-sas", "--raw"]).contains("dva1") {
        assert!(
            Instant::now() < deadline,
            "strongSwan still holds the SA after the boxes shut down:\n{}",
            charon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(charon);
    site.assert_nothing_left(&pids);
}

#[test]
fn strongswan_reaches_the_targets_through_the_distributor_and_they_answer_directly() {
    strongswan_through_the_site(
        "strongswan_reaches_the_targets_through_the_distributor_and_they_answer_directly",
        "s",
        None,
        |text| text,
    );
}

/// The ports of every box as the site file writes them.
const KERNEL_PORTS: &str = "      - name: uplink
        driver: af_packet
        iface: ext0
      - name: xcf
        driver: af_packet
        iface: xcf0
";

/// The site with every box's ports on `driver` (af_xdp in copy mode on the veths).
#[test]
fn strongswan_through_the_site_on_af_xdp_ports() {
    strongswan_through_the_site(
        "strongswan_through_the_site_on_af_xdp_ports",
        "x",
        None,
        |text| {
            assert!(text.contains(KERNEL_PORTS));
            text.replace(KERNEL_PORTS, &KERNEL_PORTS.replace("af_packet", "af_xdp"))
        },
    );
}

/// The same with DPDK ethdev ports and the ESP ciphers on a cryptodev (crypto_aesni_gcm),
/// one EAL per box: strongSwan opens what the cryptodev sealed. The vdevs are net_af_packet: with
/// net_af_xdp, DPDK's own XDP program takes every frame of the interface from the kernel, and
/// the box's kernel still answers ARP and IKE and carries the XCF streams.
#[cfg(feature = "dpdk")]
#[test]
fn strongswan_through_the_site_on_dpdk_ports() {
    strongswan_through_the_site(
        "strongswan_through_the_site_on_dpdk_ports",
        "d",
        Some("ESP ciphers on cryptodev"),
        |mut text| {
            assert!(text.contains(KERNEL_PORTS));
            for node in NODES {
                let prefix = format!("dvs-{}-{node}", std::process::id());
                let ports = format!(
                    "      - name: uplink
        driver: dpdk
        eal_args: [--no-huge, \"-m\", \"1024\", --no-pci, \"-l\", \"0\", --log-level=warning, --file-prefix={prefix}, --vdev=crypto_aesni_gcm0]
        vdevs: [\"net_af_packet0,iface=ext0\"]
      - name: xcf
        driver: dpdk
        vdevs: [\"net_af_packet1,iface=xcf0\"]
    crypto: {{ provider: cryptodev, device: crypto_aesni_gcm0 }}
"
                );
                text = text.replacen(KERNEL_PORTS, &ports, 1);
            }
            text
        },
    );
}
