//! `dvipsecctl keys export --wireshark` is read by tshark (Wireshark's ESP dissector, code we did
//! not write): keys exported from a running in-process box decrypt and authenticate a packet
//! sealed by dvipsec-esp with those keys, and a tampered copy fails the check.

mod support;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use dvipsec_control::testbed::{TestbedBox, TestbedHandler};
use dvipsec_control::ControlServer;
use dvipsec_dataplane::testbed::{
    Testbed, TestbedConfig, DVIPA, PEER_INNER, PEER_OUTER, SPI_TO_PEER,
};
use dvipsec_esp::{
    Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap, MAX_HEADROOM,
    MAX_TAILROOM,
};

const INNER_PORT: u16 = 40_123;
const PAYLOAD: &[u8] = b"exported keys decrypt this";

/// A missing prerequisite fails under CI=true and is a printed skip otherwise.
fn tshark_available(test: &str) -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        support::missing(test, "tshark is not on PATH");
    }
    found
}

/// The fields of one `esp_sa` record, unquoted.
fn fields(line: &str) -> Vec<String> {
    line.split("\",\"")
        .map(|f| f.trim_matches('"').to_string())
        .collect()
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet from the DVIPA to the peer's inner address (UDP checksum 0: allowed).
fn inner_packet() -> Vec<u8> {
    let total = 20 + 8 + PAYLOAD.len();
    let mut packet = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet.extend_from_slice(&DVIPA.octets());
    packet.extend_from_slice(&PEER_INNER.octets());
    let checksum = ipv4_checksum(&packet);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(&60u16.to_be_bytes());
    packet.extend_from_slice(&INNER_PORT.to_be_bytes());
    packet.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(PAYLOAD);
    packet
}

fn seal(key: &[u8]) -> Vec<u8> {
    let mut config = SaConfig::new(
        SPI_TO_PEER,
        Direction::Outbound,
        Suite::Aes128Gcm16,
        SaKeys::new(key, &[]),
    );
    config.mode = Mode::Tunnel;
    config.tunnel = Some(TunnelEndpoints {
        src: IpAddr::V4(DVIPA),
        dst: IpAddr::V4(PEER_OUTER),
    });
    config.udp_encap = Some(UdpEncap::NAT_T);
    let mut sa = Sa::new(config).unwrap();
    let inner = inner_packet();
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
    let sealed = sa
        .seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
        .unwrap();
    buf[sealed.packet].to_vec()
}

/// A classic pcap file of raw IPv4 packets (LINKTYPE_RAW).
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (i, packet) in packets.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(packet);
    }
    out
}

#[test]
fn tshark_authenticates_and_decrypts_with_the_exported_keys() {
    let test = "tshark_authenticates_and_decrypts_with_the_exported_keys";
    if !tshark_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::new(&TestbedConfig::default(), &dir.path().join("cf")).unwrap();
    let socket = dir.path().join("t0.sock");
    let _server = ControlServer::start(
        &socket,
        Box::new(TestbedHandler::new(
            Arc::new(Mutex::new(bed)),
            TestbedBox::Target(0),
        )),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dvipsecctl"))
        .args(["keys", "export", "--wireshark", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"0x{SPI_TO_PEER:08x}\"")))
        .unwrap_or_else(|| panic!("no line for the outbound SA in {text}"));
    let record = fields(line);
    assert_eq!(record[1], DVIPA.to_string());
    let key = hex::decode(record[5].trim_start_matches("0x")).unwrap();

    let good = seal(&key);
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let capture = dir.path().join("esp.pcap");
    std::fs::write(&capture, pcap(&[good, tampered])).unwrap();

    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
            "-o",
        ])
        .arg(format!("uat:esp_sa:{line}"))
        .args([
            "-T",
            "fields",
            "-e",
            "esp.icv_good",
            "-e",
            "esp.icv_bad",
            "-e",
            "udp.dstport",
        ])
        .output()
        .unwrap();
    let fields_out = String::from_utf8_lossy(&tshark.stdout);
    assert!(
        tshark.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    let rows: Vec<&str> = fields_out.lines().collect();
    assert_eq!(rows.len(), 2, "{fields_out}");
    let good_row: Vec<&str> = rows[0].split('\t').collect();
    assert!(
        good_row[0] == "1" || good_row[0] == "True",
        "ICV not reported good: {fields_out}"
    );
    // The decrypted inner UDP header is parsed (outer 4500, inner port).
    assert!(
        good_row[2].split(',').any(|p| p == INNER_PORT.to_string()),
        "inner packet not decoded: {fields_out}"
    );
    let bad_row: Vec<&str> = rows[1].split('\t').collect();
    assert!(
        bad_row[0] != "1" && bad_row[0] != "True",
        "tampered packet passed: {fields_out}"
    );
    assert!(bad_row[1] == "1" || bad_row[1] == "True", "{fields_out}");
}
