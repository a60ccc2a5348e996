//! Shared pieces of the kernel-port tests: prerequisites, namespace pairs joined by a veth,
//! and checks against scapy (a sender we did not write) and tshark (a capture we did not write).
//!
//! Under CI=true a missing prerequisite fails the test; elsewhere the test is skipped with the
//! reason printed.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dvipsec_hwtest::netns::{join_with_veth, Netns};
use dvipsec_hwtest::preflight::running_as_root;
use dvipsec_ports::netns::run_in;
use dvipsec_ports::{Burst, PacketPort};

/// Frames in these tests go from `A_MAC` to `B_MAC` (or back) with a local experimental type.
pub const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const ETHERTYPE: u16 = 0x88b5;

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if !running_as_root() {
        return Some("needs root for network namespaces and packet sockets".into());
    }
    if !command_works("ip", &["-V"]) {
        return Some("needs iproute2 (`ip`)".into());
    }
    tools.iter().find_map(|&tool| {
        let present = match tool {
            "scapy" => command_works("python3", &["-c", "import scapy.all"]),
            _ => command_works(tool, &["--version"]),
        };
        (!present).then(|| format!("needs {tool} (scripts/install-test-deps.sh installs it)"))
    })
}

/// True when `test` can run; panics under CI=true when a prerequisite is missing.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    let Some(reason) = missing_prerequisite(tools) else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason} (CI=true: prerequisites are mandatory)");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

/// A child process killed and reaped when the test ends, also on failure.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two namespaces joined by a veth; the interface in each is named like its namespace.
/// Both are deleted (with the veth) when this is dropped, also after a failed assertion.
pub struct NsPair {
    pub a: Netns,
    pub b: Netns,
}

impl NsPair {
    /// Creates `dv{tag}{pid}a` and `...b` with IPv6 off, so the kernel sends nothing of its
    /// own (router solicitations, MLD) and the counters hold only the test's frames.
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let a = Netns::create(&format!("dv{tag}{pid}a")).expect("create namespace a");
        let b = Netns::create(&format!("dv{tag}{pid}b")).expect("create namespace b");
        for ns in [&a, &b] {
            write_sysctl(ns.name(), "net/ipv6/conf/default/disable_ipv6", "1");
            write_sysctl(ns.name(), "net/ipv6/conf/all/disable_ipv6", "1");
        }
        join_with_veth(&a, a.name(), &b, b.name()).expect("veth pair");
        for ns in [&a, &b] {
            let key = format!("net/ipv6/conf/{}/disable_ipv6", ns.name());
            if let Some(value) = read_sysctl(ns.name(), &key) {
                assert_eq!(value, "1", "{key}");
            }
        }
        NsPair { a, b }
    }

    pub fn a_if(&self) -> &str {
        self.a.name()
    }

    pub fn b_if(&self) -> &str {
        self.b.name()
    }
}

/// Writes `/proc/sys/KEY` as seen from namespace `ns` (the calling thread's namespace
/// decides which /proc/sys/net a process sees).
fn write_sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    let value = value.to_owned();
    open_in(ns, move || {
        std::fs::write(&path, value).expect("write sysctl")
    });
}

/// Reads `/proc/sys/KEY` as seen from namespace `ns`; `None` if it does not exist.
fn read_sysctl(ns: &str, key: &str) -> Option<String> {
    let path = format!("/proc/sys/{key}");
    open_in(ns, move || std::fs::read_to_string(&path).ok()).map(|v| v.trim().to_owned())
}

/// Runs `open` on a thread inside namespace `ns`; the port it returns stays in that namespace.
pub fn open_in<P: Send + 'static>(ns: &str, open: impl FnOnce() -> P + Send + 'static) -> P {
    run_in(ns, open).expect("enter namespace")
}

/// The payload both sides agree on for frame `seq`: 4-byte sequence, then a pattern.
pub fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend((4..len).map(|i| (i as u32 * 7 + seq) as u8));
    bytes
}

/// Frame `seq` from `src` to `dst`, `payload_len` bytes after the Ethernet header.
pub fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, payload_len: usize) -> Vec<u8> {
    let mut bytes = dst.to_vec();
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&ETHERTYPE.to_be_bytes());
    bytes.extend(payload(seq, payload_len));
    bytes
}

/// Sends `frames` through `port` in bursts of 32, asserting each burst goes out whole.
pub fn send_all<P: PacketPort>(port: &mut P, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(32) {
        let mut burst = Burst::with_capacity(chunk.len());
        for bytes in chunk {
            let mut buf = port.alloc_tx().expect("pool has room");
            buf.set_frame(bytes).expect("frame fits");
            burst.push(buf).expect("burst has room");
        }
        assert_eq!(port.tx_burst(&mut burst), chunk.len(), "burst sent whole");
    }
}

/// Polls `port` until `wanted` frames arrived or `limit` passed.
pub fn receive<P: PacketPort>(port: &mut P, wanted: usize, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut burst = Burst::with_capacity(32);
    while got.len() < wanted && Instant::now() < deadline {
        if port.rx_burst(&mut burst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(burst.drain().map(|frame| frame.data().to_vec()));
    }
    got
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

/// Sends `count` frames of varied sizes from `a` to `b`, `chunk` at a time, and checks that
/// each arrived exactly once, unaltered and in order. Returns the frames sent.
pub fn check_exchange_exactly_once_in_order<A: PacketPort, B: PacketPort>(
    a: &mut A,
    b: &mut B,
    count: u32,
    chunk: usize,
) -> Vec<Vec<u8>> {
    let frames: Vec<_> = (0..count)
        .map(|seq| frame(B_MAC, A_MAC, seq, 46 + (seq as usize * 37) % 1455))
        .collect();
    let mut received = Vec::new();
    for part in frames.chunks(chunk) {
        send_all(a, part);
        received.extend(receive(b, part.len(), Duration::from_secs(5)));
    }
    assert_eq!(received.len(), frames.len(), "frames received");
    assert!(received == frames, "frames arrived altered or out of order");
    assert!(
        receive(b, 1, Duration::from_millis(100)).is_empty(),
        "a duplicate arrived"
    );
    frames
}

/// Checks that the counters show exactly `frames` sent by `a` and received by `b`, and no
/// drops on either side (call after syncing the kernel's drop counts into `b`).
pub fn check_counted_exactly<A: PacketPort, B: PacketPort>(a: &A, b: &B, frames: &[Vec<u8>]) {
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let (ca, cb) = (a.counters(), b.counters());
    let packets = frames.len() as u64;
    assert_eq!((ca.tx_packets, ca.tx_bytes), (packets, bytes));
    assert_eq!((cb.rx_packets, cb.rx_bytes), (packets, bytes));
    assert_eq!((ca.total_drops(), cb.total_drops()), (0, 0));
}

/// scapy in namespace b sends `count` frames to A_MAC; `port` (in a) must receive exactly
/// them, in order, with its counters agreeing.
pub fn check_receives_what_scapy_sends<P: PacketPort>(pair: &NsPair, port: &mut P, count: u32) {
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            pair.b.name(),
            "python3",
            "-c",
            SCAPY_SENDER,
        ])
        .args([pair.b_if(), &count.to_string()])
        .status()
        .expect("run scapy");
    assert!(status.success(), "scapy sender failed");
    let got = receive(port, count as usize, Duration::from_secs(10));
    assert_eq!(got.len(), count as usize, "frames received");
    for (seq, received) in (0..count).zip(&got) {
        let expected = frame(A_MAC, B_MAC, seq, 46 + (seq as usize * 53) % 1400);
        assert!(
            received == &expected,
            "frame {seq} differs from what scapy sent"
        );
    }
    assert!(
        receive(port, 1, Duration::from_millis(100)).is_empty(),
        "a duplicate arrived"
    );
    let counters = port.counters();
    let bytes: u64 = got.iter().map(|f| f.len() as u64).sum();
    assert_eq!(
        (counters.rx_packets, counters.rx_bytes),
        (u64::from(count), bytes)
    );
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `port` (in a) sends `count` frames to B_MAC; tshark on b's interface must capture exactly
/// them, field by field.
pub fn check_tshark_captures_what_port_sends<P: PacketPort>(
    pair: &NsPair,
    port: &mut P,
    count: u32,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("capture.pcapng");
    let mut capture = start_capture(pair.b.name(), pair.b_if(), count, &file);
    let sent: Vec<_> = (0..count)
        .map(|seq| frame(B_MAC, A_MAC, seq, 46 + (seq as usize * 91) % 1400))
        .collect();
    send_all(port, &sent);
    wait_for_exit(&mut capture, Duration::from_secs(20));

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "eth.dst", "-e", "eth.src"])
        .args(["-e", "eth.type", "-e", "data.data"])
        .output()
        .expect("read capture");
    assert!(out.status.success(), "tshark -r failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), count as usize, "frames tshark captured");
    for (frame, line) in sent.iter().zip(&lines) {
        let expected = format!(
            "02:00:00:00:00:0b\t02:00:00:00:00:0a\t0x88b5\t{}",
            hex(&frame[14..])
        );
        assert_eq!(*line, expected);
    }
    let counters = port.counters();
    assert_eq!(counters.tx_packets, u64::from(count));
    assert_eq!(counters.total_drops(), 0);
}
