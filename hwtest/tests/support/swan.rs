//! strongSwan as the peer of the figure-4 site on namespaces: its configuration, the charon
//! process in the peer namespace, the echo client the peer runs, captures, and log waits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvipsec_hwtest::topology;

use super::site::{prerequisites, TestSite};
use super::skip_or_fail_in_ci;

pub const CHARON: &str = "/usr/sbin/charon-systemd";
pub const DVIPA: &str = "198.51.100.10";
pub const PEER_OUTER: &str = "203.0.113.10";
/// The peer's inner host (inner selectors must differ from the outer addresses).
pub const PEER_INNER: &str = "203.0.113.100";
/// The site's nodes in order: the hub names their external veths h0e0, h1e0, h2e0.
pub const NODES: [&str; 3] = ["MVS1", "MVS2", "MVS4"];

/// What else this test needs besides root and the firmware.
pub fn missing_tool() -> Option<String> {
    for tool in [
        CHARON,
        "/usr/sbin/swanctl",
        "/usr/bin/tshark",
        "/usr/bin/python3",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (scripts/install-test-deps.sh installs it)"
            ));
        }
    }
    None
}

pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("start command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).args(args);
    command
}

/// charon in the peer namespace; killed when dropped.
pub struct Charon {
    dir: PathBuf,
    child: Child,
}

impl Charon {
    pub fn start(ns: &str, dir: &Path, psk: &str) -> Charon {
        std::fs::write(dir.join("strongswan.conf"), strongswan_conf(dir)).unwrap();
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf(psk)).unwrap();
        let child = in_ns(ns, &["env"])
            .arg(format!(
                "STRONGSWAN_CONF={}",
                dir.join("strongswan.conf").display()
            ))
            .arg(CHARON)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start charon");
        let charon = Charon {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("charon.vici").exists() {
            assert!(Instant::now() < deadline, "charon's vici socket never came");
            std::thread::sleep(Duration::from_millis(50));
        }
        charon
    }

    pub fn swanctl(&self, args: &[&str]) -> String {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        let output = run(Command::new("swanctl").args(args).args(["--uri", &uri]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn strongswan_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "charon {{
  load_modular = no
  load = random nonce kdf openssl aes sha1 sha2 hmac gcm curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
    kernel-libipsec {{
      allow_peer_ts = yes
    }}
    socket-default {{
      fwmark = 0x42
    }}
    kernel-netlink {{
      fwmark = !0x42
    }}
  }}
  filelog {{
    main {{
      path = {d}/charon.log
      append = no
      flush_line = yes
      default = 1
      ike = 2
      chd = 2
      esp = 1
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
"
    )
}

/// The peer's side of the site's `branch-a` peer and DVA1's `app-a` policy. A new IKE SA from
/// the DVIPA (a backup that took it over) replaces the old one, as a peer of a cluster with
/// backups is configured.
pub fn swanctl_conf(psk: &str) -> String {
    format!(
        "connections {{
  dva1 {{
    version = 2
    unique = replace
    local_addrs = {PEER_OUTER}
    remote_addrs = {DVIPA}
    proposals = aes128gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = branch-a.example.net
    }}
    remote {{
      auth = psk
      id = dva1.example.com
    }}
    children {{
      app {{
        mode = tunnel
        local_ts = {PEER_INNER}/32[udp]
        remote_ts = {DVIPA}/32[udp/60]
        esp_proposals = aes128gcm16
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-1 {{
    id-a = branch-a.example.net
    id-b = dva1.example.com
    secret = \"{psk}\"
  }}
}}
"
    )
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
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

pub fn log_of(site: &TestSite, node: &str) -> String {
    std::fs::read_to_string(site.run_dir().join(format!("{node}.log"))).unwrap_or_default()
}

/// Waits until `node`'s log has `needle`.
pub fn wait_for_log(site: &TestSite, node: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log_of(site, node).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{node} never logged {needle:?}:\n{}",
            log_of(site, node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
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
        topology::up(&site.file, &site.options(dvipsec)).unwrap();
        // The owner takes DVA1 once the cluster has heard every member (the takeover timeout).
        wait_for_log(&site, "MVS1", "DVIPA adopted");
        let peer_ns = site.ns("peer");
        run(&mut in_ns(&peer_ns, &["ip", "link", "set", "lo", "up"]));
        let inner = format!("{PEER_INNER}/32");
        run(&mut in_ns(
            &peer_ns,
            &["ip", "addr", "add", &inner, "dev", "lo"],
        ));
        let psk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sites/secrets/TEST-ONLY-branch-a.psk"
        ))
        .unwrap();
        let swan_dir = site.dir.path().join("swan");
        std::fs::create_dir_all(&swan_dir).unwrap();
        let charon = Charon::start(&peer_ns, &swan_dir, psk.trim());
        let conf = swan_dir.join("swanctl.conf").display().to_string();
        charon.swanctl(&["--load-all", "--file", &conf]);
        // The owner may already have negotiated with strongSwan (it initiates to its peers
        // when it takes the DVIPA); otherwise strongSwan initiates now.
        let uri = format!("unix://{}", swan_dir.join("charon.vici").display());
        let _ = Command::new("swanctl")
            .args([
                "--initiate",
                "--ike",
                "dva1",
                "--child",
                "app",
                "--timeout",
                "15",
            ])
            .args(["--uri", &uri])
            .output();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let sas = charon.swanctl(&["--list-sas", "--raw"]);
            if sas.contains("state=INSTALLED") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no CHILD_SA with DVA1:\n{sas}\n{}",
                charon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(ConnectedSite { site, charon })
    }
}

/// The test's site: MVS4 can distribute and backs DVA1, serving it with MVS2 after a takeover.
pub fn with_backup(text: String) -> String {
    let text = text.replacen(
        "capabilities: [target, ike]",
        "capabilities: [distributor, target, ike]",
        1,
    );
    let backup = "    backups:
      - node: MVS4
        rank: 10
        distribute:
          ports: [60]
          destip: [192.0.2.2, 192.0.2.4]
    policy:";
    assert!(text.contains("    policy:"));
    text.replacen("    policy:", backup, 1)
}

/// The traffic during the test: one datagram every 5 ms over 16 flows for `seconds`; prints
/// the echoes, the longest time without one, and when the first echo after `mark` seconds came.
pub const STEADY_CLIENT: &str = r#"
import socket, sys, time, select
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
socks = []
for _ in range(16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.setblocking(False); socks.append(s)
start = time.time(); sent = echoed = 0; last = start; gap = 0.0; i = 0
while time.time() - start < seconds:
    socks[i % 16].sendto(b"steady-%d" % i, (dst, 60)); sent += 1; i += 1
    deadline = time.time() + 0.005
    while True:
        left = deadline - time.time()
        if left <= 0: break
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            try:
                s.recv(4096); echoed += 1; now = time.time()
                gap = max(gap, now - last); last = now
            except BlockingIOError:
                pass
gap = max(gap, time.time() - last)
print("sent=%d echoed=%d gap_ms=%d" % (sent, echoed, int(gap * 1000)))
"#;

/// The `dvipsec boot` process of `node` among the site's recorded ones.
pub fn boot_pid(pids: &[u32], node: &str) -> u32 {
    *pids
        .iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == node.as_bytes()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no boot process for {node} in {pids:?}"))
}

/// Every (SPI, sequence number) of the ESP in the captures `pcaps` (of different ports, so a
/// packet is in one of them only); panics on a repeat. Returns the packets.
pub fn assert_no_sequence_reuse(pcaps: &[&Path]) -> usize {
    let mut seen = BTreeSet::new();
    for pcap in pcaps {
        let output = Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(["-T", "fields", "-e", "esp.spi", "-e", "esp.sequence"])
            .output()
            .expect("tshark");
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                seen.insert(line.to_owned()),
                "(SPI, seq) sent twice: {line}"
            );
        }
    }
    seen.len()
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
