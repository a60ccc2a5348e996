//! The figure-4 site across network namespaces, one `dvipsec boot` per box, against a real
//! peer: strongSwan (charon with kernel-libipsec, so UDP-encapsulated tunnel-mode ESP) in the
//! peer namespace negotiates with DVA1's distributor, then UDP flows to the echo service on
//! port 60 are spread over the three targets and answered. Captures on the hub's side of each
//! box's external veth show the answers leaving every target's own interface, and strongSwan
//! logs no sequence-number (replay) failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvipsec_hwtest::topology;
use support::site::{prerequisites, TestSite};
use support::skip_or_fail_in_ci;

const CHARON: &str = "/usr/sbin/charon-systemd";
const DVIPA: &str = "198.51.100.10";
const PEER_OUTER: &str = "203.0.113.10";
/// The peer's inner host (inner selectors must differ from the outer addresses).
const PEER_INNER: &str = "203.0.113.100";
/// The site's nodes in order: the hub names their external veths h0e0, h1e0, h2e0.
const NODES: [&str; 3] = ["MVS1", "MVS2", "MVS4"];
/// UDP flows (source ports) and datagrams per flow.
const FLOWS: usize = 24;
const ROUNDS: usize = 10;

/// What else this test needs besides root and the firmware.
fn missing_tool() -> Option<String> {
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

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("start command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).args(args);
    command
}

/// charon in the peer namespace; killed when dropped.
struct Charon {
    dir: PathBuf,
    child: Child,
}

impl Charon {
    fn start(ns: &str, dir: &Path, psk: &str) -> Charon {
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

    fn swanctl(&self, args: &[&str]) -> String {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        let output = run(Command::new("swanctl").args(args).args(["--uri", &uri]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strongswan_conf(dir: &Path) -> String {
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

/// The peer's side of the site's `branch-a` peer and DVA1's `app-a` policy.
fn swanctl_conf(psk: &str) -> String {
    format!(
        "connections {{
  dva1 {{
    version = 2
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
const ECHO_CLIENT: &str = r#"
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

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn log_of(site: &TestSite, node: &str) -> String {
    std::fs::read_to_string(site.run_dir().join(format!("{node}.log"))).unwrap_or_default()
}

/// Waits until `node`'s log has `needle`.
fn wait_for_log(site: &TestSite, node: &str, needle: &str) {
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
fn start_capture(hub: &str, index: usize, file: &Path) -> Child {
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

fn packets_in(file: &Path) -> usize {
    let output = run(Command::new("tshark").arg("-r").arg(file));
    String::from_utf8_lossy(&output.stdout).lines().count()
}

fn stop(mut child: Child) {
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

/// The whole scenario on the site as `edit` changes it (its ports, say).
/// `log_line` must show in every box's log.
fn strongswan_through_the_site(
    test: &str,
    tag: &str,
    log_line: Option<&str>,
    edit: impl FnOnce(String) -> String,
) {
    let Some(dvipsec) = prerequisites(test) else {
        return;
    };
    if let Some(problem) = missing_tool() {
        skip_or_fail_in_ci(test, &problem);
        return;
    }
    let site = TestSite::new(tag, edit);
    topology::up(&site.file, &site.options(dvipsec)).unwrap();
    // The owner takes DVA1 once the cluster has heard every member (the takeover timeout).
    wait_for_log(&site, "MVS1", "DVIPA adopted");
    let peer_ns = site.ns("peer");
    run(&mut in_ns(&peer_ns, &["ip", "link", "set", "lo", "up"]));
    run(&mut in_ns(
        &peer_ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{PEER_INNER}/32"),
            "dev",
            "lo",
        ],
    ));
    let psk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sites/secrets/TEST-ONLY-branch-a.psk"
    ))
    .unwrap();
    let swan_dir = site.dir.path().join("swan");
    std::fs::create_dir_all(&swan_dir).unwrap();
    let charon = Charon::start(&peer_ns, &swan_dir, psk.trim());
    charon.swanctl(&[
        "--load-all",
        "--file",
        &swan_dir.join("swanctl.conf").display().to_string(),
    ]);
    let initiated = charon.swanctl(&[
        "--initiate",
        "--ike",
        "dva1",
        "--child",
        "app",
        "--timeout",
        "15",
    ]);
    assert!(
        initiated.contains("CHILD_SA app{1} established"),
        "{initiated}"
    );

    let hub = site.ns("hub");
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
