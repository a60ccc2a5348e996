//! Every control-socket command of `dvipsecctl` against a running in-process cluster (one
//! distributor, two targets, the CF) served by `dvipsec-control`'s testbed handler.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dvipsec_control::protocol::{SaListReport, StatusReport};
use dvipsec_control::testbed::{TestbedBox, TestbedHandler};
use dvipsec_control::ControlServer;
use dvipsec_dataplane::sa_table::FacilitySink;
use dvipsec_dataplane::testbed::*;
use support::{ctl_at as ctl, stdout};

const ROUND_TRIPS: u16 = 20;

/// The site after 20 echo round trips, with one control socket per box.
struct Site {
    dir: tempfile::TempDir,
    _servers: Vec<ControlServer>,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let mut bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).unwrap();
        for conn in 0..ROUND_TRIPS {
            assert!(bed.peer.send_udp(
                Testbed::peer_socket(40_000 + conn),
                Testbed::dvipa_socket(60),
                b"hello",
            ));
        }
        bed.settle(1_000, 50);
        assert_eq!(bed.peer.take_received().len(), usize::from(ROUND_TRIPS));
        let region = bed.distributor.facility.region().clone();
        let mut sink = FacilitySink::new(&region);
        for target in &mut bed.targets {
            target.report_lifesize(&mut sink);
        }
        let bed = Arc::new(Mutex::new(bed));
        let servers = [
            TestbedBox::Distributor,
            TestbedBox::Target(0),
            TestbedBox::Target(1),
        ]
        .into_iter()
        .map(|which| {
            let path = dir.path().join(format!("{}.sock", which.name()));
            ControlServer::start(&path, Box::new(TestbedHandler::new(bed.clone(), which))).unwrap()
        })
        .collect();
        Site {
            dir,
            _servers: servers,
        }
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }
}

fn assert_no_keys(text: &str) {
    for key in [KEY_TO_DVIPA, KEY_TO_PEER] {
        let hex = hex::encode(&key[..8]);
        assert!(!text.contains(&hex), "key material in: {text}");
    }
}

#[test]
fn status_shows_role_dvipas_peers_and_links() {
    let site = Site::start();
    let text = stdout(&ctl(&["status"], &site.socket("distributor")));
    assert!(text.starts_with("distributor: distributor\n"), "{text}");
    assert!(text.contains("  dvipa 203.0.113.10 owns\n"), "{text}");
    assert!(
        text.contains("  peer  t1 10.9.0.11 target link unknown\n"),
        "{text}"
    );
    assert!(
        text.contains("  link  dist-ext state unknown rx 20 tx 0 dropped 0\n"),
        "{text}"
    );
    let json = stdout(&ctl(&["status", "--json"], &site.socket("t0")));
    let status: StatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!(status.name, "t0");
    assert_eq!(status.peers[0].name, "distributor");
}

#[test]
fn sa_list_shows_spi_suite_mode_traffic_and_lifetime_but_no_keys() {
    let site = Site::start();
    let text = stdout(&ctl(&["sa", "list"], &site.socket("t0")));
    assert!(
        text.contains("src 203.0.113.10 dst 198.51.100.1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\tproto esp spi 0x00002000 outbound mode tunnel suite aes128gcm16 (shadow, cf slot"
        ),
        "{text}"
    );
    assert!(
        text.contains("\tencap type espinudp sport 4500 dport 4500\n"),
        "{text}"
    );
    assert!(
        text.contains("\tlifetime left: fresh\n\t  unlimited(bytes), unlimited(packets)"),
        "{text}"
    );
    assert_no_keys(&text);
    let mut packets = [0u64; 2];
    for target in ["t0", "t1"] {
        let json = stdout(&ctl(&["sa", "list", "--json"], &site.socket(target)));
        assert_no_keys(&json);
        let list: SaListReport = serde_json::from_str(&json).unwrap();
        for sa in list.sas {
            packets[usize::from(sa.direction == "outbound")] += sa.packets;
        }
    }
    assert_eq!(packets, [20, 20]);
    let text = stdout(&ctl(&["sa", "list"], &site.socket("distributor")));
    assert!(
        text.contains("spi 0x00001000 inbound mode tunnel suite aes128gcm16 (sad"),
        "{text}"
    );
    assert!(text.contains("\t  0(bytes), 0(packets)\n"), "{text}");
}

#[test]
fn dct_list_and_cf_show_report_the_running_site() {
    let site = Site::start();
    let text = stdout(&ctl(&["dct", "list"], &site.socket("distributor")));
    assert_eq!(
        text,
        "dct: 20 entries, added 20, expired 0, closed 0, refused (full) 0\n"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&ctl(
        &["dct", "list", "--json"],
        &site.socket("distributor"),
    )))
    .unwrap();
    assert_eq!(json["entries"], 20);
    let text = stdout(&ctl(&["cf", "show"], &site.socket("t1")));
    assert!(text.starts_with("cf: epoch "), "{text}");
    assert!(text.contains("slots 16 in use 2\n"), "{text}");
    assert!(text.contains("spi 0x00001000\n    lifesize in  "), "{text}");
    assert!(
        text.contains(", 20(packets)\n    lifesize out 0(bytes), 0(packets)\n"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&["cf", "show", "--json"], &site.socket("t1")))).unwrap();
    assert_eq!(json["slots"][1]["packets_out"], 20);
}

#[test]
fn metrics_prints_the_exposition() {
    let site = Site::start();
    let text = stdout(&ctl(&["metrics"], &site.socket("distributor")));
    assert!(
        text.lines()
            .any(|l| l == "dvipsec_port_packets_total{node=\"distributor\",port=\"dist-ext\",direction=\"rx\"} 20"),
        "{text}"
    );
    assert_no_keys(&text);
}

#[test]
fn unsupported_requests_and_missing_sockets_fail_with_a_clear_reason() {
    let site = Site::start();
    for args in [
        &["ike", "list"][..],
        &["conn", "list", "--json"],
        &["takeover", "203.0.113.10"],
        &["dct", "list"],
    ] {
        let socket = if args[0] == "dct" {
            "t0"
        } else {
            "distributor"
        };
        let output = ctl(args, &site.socket(socket));
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("is not supported by this box"),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty());
    }
    let missing = site.dir.path().join("nobody.sock");
    let output = ctl(&["status"], &missing);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nobody.sock") && stderr.contains("connect"),
        "{stderr}"
    );
}

#[test]
fn keys_export_writes_esp_sa_lines_with_a_warning_and_no_prompt() {
    let site = Site::start();
    let output = ctl(&["keys", "export", "--wireshark"], &site.socket("t0"));
    let text = stdout(&output);
    let to_dvipa = format!(
        "\"IPv4\",\"198.51.100.1\",\"203.0.113.10\",\"0x00001000\",\
         \"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
        hex::encode(KEY_TO_DVIPA)
    );
    let to_peer = format!(
        "\"IPv4\",\"203.0.113.10\",\"198.51.100.1\",\"0x00002000\",\
         \"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
        hex::encode(KEY_TO_PEER)
    );
    assert_eq!(text, format!("{to_dvipa}\n{to_peer}\n"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WARNING"), "{stderr}");
    assert_no_keys(&stderr);
    // --wireshark is required: no format is chosen silently.
    let output = ctl(&["keys", "export"], &site.socket("t0"));
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
}
