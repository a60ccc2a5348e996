//! strongSwan as the peer of the figure-4 site on namespaces: its configuration, the charon
//! process in the peer namespace, the echo client the peer runs, captures, and log waits.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use dvipsec_hwtest::swan_peer;
// Not every test binary uses every one of them.
#[allow(unused_imports)]
pub use dvipsec_hwtest::swan_peer::{
    in_ns, stop, CHARON, DVIPA, PEER_INNER, PEER_OUTER, STEADY_CLIENT,
};

use super::site::{prerequisites, TestSite};
use super::skip_or_fail_in_ci;

/// The site's nodes in order: the hub names their external veths h0e0, h1e0, h2e0.
pub const NODES: [&str; 3] = ["MVS1", "MVS2", "MVS4"];

/// What else this test needs besides root and the firmware.
pub fn missing_tool() -> Option<String> {
    swan_peer::missing_tool()
        .map(|tool| format!("{tool} is missing (scripts/install-test-deps.sh installs it)"))
}

pub fn run(command: &mut Command) -> Output {
    swan_peer::run_checked(command).unwrap_or_else(|e| panic!("{e}"))
}

/// The library's charon, with its queries panicking on failure as a test wants.
pub struct Charon(pub swan_peer::Charon);

impl Charon {
    pub fn swanctl(&self, args: &[&str]) -> String {
        self.0.swanctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// The echo client: `FLOWS` sockets (one source port each); first every flow waits for one
/// echo (the SA reaches the targets a moment after IKE ends), then `ROUNDS` datagrams per flow
/// are sent one at a time and each answer is checked. Prints `warm=N echoed=M sent=K`.
pub const ECHO_CLIENT: &str = r#"
import socket, sys, time
src, dst, flows, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
socks = []
for _ in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.settimeout(0.3); socks.append(s)
def ask(s, msg):
    s.sendto(msg, (dst, 60))
    try:
        data, _ = s.recvfrom(4096)
        return data == msg
    except socket.timeout:
        return False
warm = 0
deadline = time.time() + 10
for i, s in enumerate(socks):
    while time.time() < deadline:
        if ask(s, b"warm-%d" % i):
            warm += 1
            break
echoed = sent = 0
for r in range(rounds):
    for i, s in enumerate(socks):
        sent += 1
        echoed += ask(s, b"flow-%d-round-%d" % (i, r))
print("warm=%d echoed=%d sent=%d" % (warm, echoed, sent))
"#;

pub fn field(line: &str, key: &str) -> u64 {
    swan_peer::field_of(line, key).unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

pub fn log_of(site: &TestSite, node: &str) -> String {
    std::fs::read_to_string(site.run_dir().join(format!("{node}.log"))).unwrap_or_default()
}

/// Waits until `node`'s log has `needle`.
pub fn wait_for_log(site: &TestSite, node: &str, needle: &str) {
    swan_peer::wait_for_node_log(&site.run_dir(), node, needle).unwrap_or_else(|e| panic!("{e}"));
}

/// A capture of ESP leaving DVA1's address, on the hub's end of box `index`'s external veth.
pub fn start_capture(hub: &str, index: usize, file: &Path) -> Child {
    in_ns(
        hub,
        &[
            "tshark",
            "-q",
            "-i",
            &format!("h{index}e0"),
            "-f",
            &format!("udp port 4500 and src host {DVIPA}"),
            "-w",
        ],
    )
    .arg(file)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start tshark")
}

pub fn packets_in(file: &Path) -> usize {
    let output = run(Command::new("tshark").arg("-r").arg(file));
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// The site up on namespaces, its owner serving DVA1, and strongSwan connected to it.
pub struct ConnectedSite {
    pub site: TestSite,
    pub charon: Charon,
}

impl ConnectedSite {
    /// Brings the site (as `edit` changes it) up and connects strongSwan; `None` (after saying
    /// why, or failing under CI) when a prerequisite is missing.
    pub fn connect(
        test: &str,
        tag: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Option<ConnectedSite> {
        let dvipsec = prerequisites(test)?;
        if let Some(problem) = missing_tool() {
            skip_or_fail_in_ci(test, &problem);
            return None;
        }
        let site = TestSite::new(tag, edit);
        let psk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sites/secrets/TEST-ONLY-branch-a.psk"
        ))
        .unwrap();
        let charon = swan_peer::connect_site(
            &site.file,
            &site.options(dvipsec),
            &site.ns("peer"),
            &site.dir.path().join("swan"),
            psk.trim(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let charon = Charon(charon);
        Some(ConnectedSite { site, charon })
    }
}

/// The test's site: MVS4 can distribute and backs DVA1, serving it with MVS2 after a takeover.
pub fn with_backup(text: String) -> String {
    swan_peer::with_backup(&text).expect("the site has a policy list")
}

/// The `dvipsec boot` process of `node` among the site's recorded ones.
pub fn boot_pid(pids: &[u32], node: &str) -> u32 {
    swan_peer::boot_pid(pids, node)
        .unwrap_or_else(|| panic!("no boot process for {node} in {pids:?}"))
}

/// Every (SPI, sequence number) of the ESP in the captures `pcaps` (of different ports, so a
/// packet is in one of them only); panics on a repeat. Returns the packets.
pub fn assert_no_sequence_reuse(pcaps: &[&Path]) -> usize {
    let count = swan_peer::sequence_reuse(pcaps).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        count.reused, 0,
        "(SPI, seq) sent twice: {:?}",
        count.first_reused
    );
    count.packets
}

pub fn in_ns_quiet(ns: &str, args: &[&str]) {
    let _ = in_ns(ns, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A `dvipsec boot` the test started itself (MVS1 coming back); killed when dropped.
pub struct Restarted(pub Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dvipsec boot` for `node` again in its namespace (its first run was killed), logging
/// to RUN_DIR/NODE-again.log.
pub fn restart(site: &TestSite, node: &str) -> Restarted {
    let dvipsec = super::site::dvipsec_binary().expect("dvipsec binary");
    let log = std::fs::File::create(site.run_dir().join(format!("{node}-again.log"))).unwrap();
    Restarted(
        in_ns(&site.ns(node), &[])
            .arg(&dvipsec)
            .args(["boot", "--config"])
            .arg(&site.file)
            .args(["--node", node])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart a node"),
    )
}

/// The log of a node started again by [`restart`].
pub fn log_again(site: &TestSite, node: &str) -> String {
    std::fs::read_to_string(site.run_dir().join(format!("{node}-again.log"))).unwrap_or_default()
}
