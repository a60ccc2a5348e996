//! AF_PACKET ports against tools we did not write: scapy sends frames our port receives, and
//! tshark captures frames our port sends. Each runs inside namespaces the test creates.
//!
//! Needs root, iproute2, tshark and python3 with scapy (scripts/install-test-deps.sh). Under
//! CI=true a missing prerequisite fails the test; elsewhere the test is skipped with the reason.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dvipsec_hwtest::netns::{join_with_veth, Netns};
use dvipsec_ports::netns::enter_thread_into;
use dvipsec_ports::{AfPacketConfig, AfPacketPort, Burst, PacketPort};

const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const ETHERTYPE: u16 = 0x88b5;

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn missing_prerequisite(tool: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces and packet sockets".into());
    }
    if !command_works("ip", &["-V"]) {
        return Some("needs iproute2 (`ip`)".into());
    }
    let present = match tool {
        "scapy" => command_works("python3", &["-c", "import scapy.all"]),
        _ => command_works(tool, &["--version"]),
    };
    (!present).then(|| format!("needs {tool} (scripts/install-test-deps.sh installs it)"))
}

fn can_run(test: &str, tool: &str) -> bool {
    let Some(reason) = missing_prerequisite(tool) else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason} (CI=true: prerequisites are mandatory)");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

/// A child process killed and reaped when the test ends, also on failure.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Topology {
    _a: Netns,
    b: Netns,
    a_port: AfPacketPort,
    b_if: String,
}

fn topology(tag: &str) -> Topology {
    let pid = std::process::id();
    let (a_name, b_name) = (format!("dvi{tag}{pid}a"), format!("dvi{tag}{pid}b"));
    let a = Netns::create(&a_name).expect("create namespace a");
    let b = Netns::create(&b_name).expect("create namespace b");
    for ns in [&a, &b] {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
            .args([
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])
            .status()
            .is_ok_and(|status| status.success());
        assert!(ok, "sysctl in {}", ns.name());
    }
    join_with_veth(&a, &a_name, &b, &b_name).expect("veth pair");
    let config = AfPacketConfig::new(&a_name);
    let ns = a_name.clone();
    let a_port = std::thread::spawn(move || {
        enter_thread_into(&ns).expect("enter namespace");
        AfPacketPort::open(&config).expect("open AF_PACKET port")
    })
    .join()
    .expect("opener thread");
    Topology {
        _a: a,
        b,
        a_port,
        b_if: b_name,
    }
}

/// The payload both sides agree on for frame `seq`: 4-byte sequence, then a pattern.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend((4..len).map(|i| (i as u32 * 7 + seq) as u8));
    bytes
}

const SCAPY_SENDER: &str = r#"
import sys
from scapy.all import Ether, Raw, sendp
iface, count = sys.argv[1], int(sys.argv[2])
frames = []
for seq in range(count):
    length = 46 + (seq * 53) % 1400
    body = seq.to_bytes(4, "big") + bytes(((i * 7 + seq) & 0xff) for i in range(4, length))
    frames.append(Ether(dst="02:00:00:00:00:0a", src="02:00:00:00:00:0b", type=0x88b5) / Raw(load=body))
sendp(frames, iface=iface, verbose=False)
"#;

#[test]
fn our_port_receives_what_scapy_sends() {
    if !can_run("our_port_receives_what_scapy_sends", "scapy") {
        return;
    }
    const COUNT: u32 = 200;
    let mut topo = topology("s");
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.b.name(),
            "python3",
            "-c",
            SCAPY_SENDER,
        ])
        .args([topo.b_if.as_str(), &COUNT.to_string()])
        .status()
        .expect("run scapy");
    assert!(status.success(), "scapy sender failed");

    let mut got = Vec::new();
    let mut burst = Burst::with_capacity(32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < COUNT as usize && Instant::now() < deadline {
        topo.a_port
            .wait_rx(Duration::from_millis(20))
            .expect("poll");
        topo.a_port.rx_burst(&mut burst);
        got.extend(burst.drain().map(|frame| frame.data().to_vec()));
    }
    assert_eq!(got.len(), COUNT as usize);
    for (seq, frame) in (0..COUNT).zip(&got) {
        assert_eq!(frame[..6], SRC, "dst of frame {seq}");
        assert_eq!(frame[6..12], DST, "src of frame {seq}");
        assert_eq!(
            frame[12..14],
            ETHERTYPE.to_be_bytes(),
            "type of frame {seq}"
        );
        let length = 46 + (seq as usize * 53) % 1400;
        assert_eq!(frame[14..], payload(seq, length), "payload of frame {seq}");
    }
    let counters = topo.a_port.counters();
    assert_eq!(counters.rx_packets, u64::from(COUNT));
    assert_eq!(counters.total_drops(), 0);
}

/// Starts tshark capturing `count` frames of our ethertype on `iface` in `ns`, and returns
/// once it reports that its capture has started ("Capturing on" comes before dumpcap is
/// attached; "Capture started" after).
fn start_capture(ns: &str, iface: &str, count: u32, file: &std::path::Path) -> ChildGuard {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "tshark", "-i", iface, "-f"])
        .arg(format!("ether proto {ETHERTYPE:#06x}"))
        .args(["-c", &count.to_string(), "-a", "duration:20", "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tshark");
    let stderr = child.stderr.take().expect("tshark stderr");
    let guard = ChildGuard(child);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Capture started") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("tshark did not start capturing");
    guard
}

fn wait_for_exit(guard: &mut ChildGuard, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if guard.0.try_wait().expect("wait tshark").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("tshark did not finish capturing");
}

#[test]
fn tshark_captures_what_our_port_sends() {
    if !can_run("tshark_captures_what_our_port_sends", "tshark") {
        return;
    }
    const COUNT: u32 = 100;
    let mut topo = topology("t");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("capture.pcapng");
    let mut capture = start_capture(topo.b.name(), &topo.b_if, COUNT, &file);

    let mut sent = Vec::new();
    for chunk_start in (0..COUNT).step_by(32) {
        let mut burst = Burst::with_capacity(32);
        for seq in chunk_start..(chunk_start + 32).min(COUNT) {
            let mut frame = DST.to_vec();
            frame.extend_from_slice(&SRC);
            frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
            frame.extend(payload(seq, 46 + (seq as usize * 91) % 1400));
            let mut buf = topo.a_port.alloc_tx().expect("pool");
            buf.set_frame(&frame).expect("fits");
            burst.push(buf).expect("room");
            sent.push(frame);
        }
        let n = burst.len();
        assert_eq!(topo.a_port.tx_burst(&mut burst), n);
    }
    wait_for_exit(&mut capture, Duration::from_secs(20));

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "eth.dst", "-e", "eth.src"])
        .args(["-e", "eth.type", "-e", "data.data"])
        .output()
        .expect("read capture");
    assert!(out.status.success(), "tshark -r failed");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), COUNT as usize, "frames tshark captured");
    for (frame, line) in sent.iter().zip(&lines) {
        let expected = format!(
            "02:00:00:00:00:0b\t02:00:00:00:00:0a\t0x88b5\t{}",
            hex(&frame[14..])
        );
        assert_eq!(line, &expected);
    }
    assert_eq!(topo.a_port.counters().tx_packets, u64::from(COUNT));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
