//! Test-only harness: two network namespaces joined by a veth pair, strongSwan (charon-systemd
//! with kernel-libipsec) in one, our UDP event loop (`dvipsec-ike-udp`) in the other.
//!
//! Everything is torn down by [`Topology`]'s Drop: both processes are killed and both
//! namespaces deleted, also when a test fails.

use dvipsec_hwtest::netns::{join_with_veth, Netns};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const OUR_OUTER: &str = "10.50.0.1";
pub const SWAN_OUTER: &str = "10.50.0.2";
pub const OUR_INNER: &str = "10.60.0.1";
pub const SWAN_INNER: &str = "10.60.0.2";
pub const OUR_ID: &str = "dvipsec@test";
pub const SWAN_ID: &str = "swan@test";
const PSK: &str = "interop-test-secret-0123456789";
const CHARON: &str = "/usr/sbin/charon-systemd";
const SWANCTL: &str = "/usr/sbin/swanctl";
const LIBIPSEC_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
const PING: &str = "/usr/bin/ping";

/// The algorithms of one test: strongSwan proposal strings and our loop's suite name.
#[derive(Debug, Clone, Copy)]
pub struct Suites {
    pub ike: &'static str,
    pub esp: &'static str,
    pub ours: &'static str,
}

pub const GCM_X25519: Suites = Suites {
    ike: "aes128gcm16-prfsha256-x25519",
    esp: "aes128gcm16",
    ours: "gcm",
};

/// Like [`GCM_X25519`], with x25519 PFS on strongSwan's child SA rekeys.
pub const GCM_X25519_PFS: Suites = Suites {
    ike: "aes128gcm16-prfsha256-x25519",
    esp: "aes128gcm16-x25519",
    ours: "gcm",
};

pub const CBC_MODP2048: Suites = Suites {
    ike: "aes256-sha256-modp2048",
    esp: "aes256-sha256",
    ours: "cbc",
};

fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("needs root (network namespaces)".into());
    }
    for tool in [CHARON, SWANCTL, LIBIPSEC_PLUGIN] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing: apt-get install strongswan-swanctl charon-systemd strongswan-charon libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins"
            ));
        }
    }
    if !Path::new(PING).exists() {
        return Some(format!("{PING} is missing: apt-get install iputils-ping"));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the ip tool (iproute2) is missing".into());
    }
    None
}

/// True when the test can run. Under CI=true a missing prerequisite fails the test.
pub fn prerequisites_met(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: prerequisite missing under CI: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Our event loop process and the lines it printed.
pub struct OurSide {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl OurSide {
    /// Waits for a printed line starting with `prefix`; returns it.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line {prefix:?} within {timeout:?}; saw {:#?}",
            self.seen
        );
    }

    pub fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{command}").expect("our loop accepts commands");
        stdin.flush().expect("flush");
    }

    /// Sends `list` and returns the `sa ...` lines.
    pub fn list(&mut self) -> Vec<String> {
        self.command("list");
        let mut sas = Vec::new();
        loop {
            let line = self.wait_for("", Duration::from_secs(5));
            if line == "list-end" {
                return sas;
            }
            if line.starts_with("sa ") {
                sas.push(line);
            }
        }
    }
}

/// The value of `key=` in a line of `key=value` words.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Two namespaces, strongSwan and our loop; torn down on drop (the processes by `Drop`, then
/// the namespaces and their veth by hwtest's guards).
pub struct Topology {
    ours_ns: Netns,
    swan_ns: Netns,
    dir: tempfile::TempDir,
    charon: Option<Child>,
    pub ours: Option<OurSide>,
}

static TOPOLOGY_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Topology {
    /// Builds the namespaces and veth and starts charon with a connection using `suites`.
    pub fn start(suites: Suites) -> Self {
        let n = TOPOLOGY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let mut topology = Self {
            ours_ns: Netns::create(&format!("dvike{tag}u")).expect("our namespace"),
            swan_ns: Netns::create(&format!("dvike{tag}s")).expect("strongSwan's namespace"),
            dir: tempfile::tempdir().expect("temporary directory"),
            charon: None,
            ours: None,
        };
        topology.build_network(&format!("dvk{tag}a"), &format!("dvk{tag}b"));
        topology.start_charon(suites);
        topology
    }

    fn build_network(&self, veth_ours: &str, veth_swan: &str) {
        join_with_veth(&self.ours_ns, veth_ours, &self.swan_ns, veth_swan).expect("veth pair");
        for (ns, dev, outer, inner) in [
            (&self.ours_ns, veth_ours, OUR_OUTER, OUR_INNER),
            (&self.swan_ns, veth_swan, SWAN_OUTER, SWAN_INNER),
        ] {
            ns.exec_ip(&["addr", "add", &format!("{outer}/24"), "dev", dev])
                .expect("outer address");
            ns.exec_ip(&["addr", "add", &format!("{inner}/32"), "dev", "lo"])
                .expect("inner address");
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn vici(&self) -> String {
        format!("unix://{}", self.dir().join("charon.vici").display())
    }

    pub fn charon_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("charon.log")).unwrap_or_default()
    }

    fn start_charon(&mut self, suites: Suites) {
        let dir = self.dir().to_path_buf();
        std::fs::write(
            dir.join("strongswan.conf"),
            strongswan_conf(&dir, self.swan_ns.name()),
        )
        .expect("write strongswan.conf");
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf(suites)).expect("write swanctl.conf");
        let child = Command::new("ip")
            .args(["netns", "exec", self.swan_ns.name(), CHARON])
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start charon-systemd");
        self.charon = Some(child);
        let socket = dir.join("charon.vici");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "charon's vici socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.swanctl(&[
            "--load-all",
            "--file",
            &dir.join("swanctl.conf").display().to_string(),
        ]);
    }

    /// Runs swanctl against this charon; panics on failure.
    pub fn swanctl(&self, args: &[&str]) -> String {
        let output = run(Command::new(SWANCTL)
            .args(args)
            .args(["--uri", &self.vici()]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `swanctl --list-sas --raw`.
    pub fn list_sas(&self) -> String {
        self.swanctl(&["--list-sas", "--raw"])
    }

    /// Starts our event loop in our namespace.
    pub fn start_ours(&mut self, suites: Suites, initiate: bool) -> &mut OurSide {
        self.start_ours_with(suites, initiate, &[])
    }

    /// Starts our event loop with extra `key=value` arguments.
    pub fn start_ours_with(
        &mut self,
        suites: Suites,
        initiate: bool,
        extra: &[&str],
    ) -> &mut OurSide {
        let bin = env!("CARGO_BIN_EXE_dvipsec-ike-udp");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.ours_ns.name(), bin])
            .arg(format!("local={OUR_OUTER}"))
            .arg(format!("remote={SWAN_OUTER}"))
            .arg(format!("local_id={OUR_ID}"))
            .arg(format!("remote_id={SWAN_ID}"))
            .arg(format!("suite={}", suites.ours))
            .arg(format!("local_ts={OUR_INNER}/32"))
            .arg(format!("remote_ts={SWAN_INNER}/32"))
            .arg(format!("inner={OUR_INNER}"))
            .arg(format!("peer_inner={SWAN_INNER}"))
            .env("DVIPSEC_IKE_PSK", PSK)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if initiate {
            command.arg("initiate=1");
        }
        command.args(extra);
        let mut child = command.spawn().expect("start dvipsec-ike-udp");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        self.ours.insert(OurSide {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        })
    }

    pub fn ours(&mut self) -> &mut OurSide {
        self.ours.as_mut().expect("our loop was started")
    }

    /// Runs `ping` in strongSwan's namespace to our inner address; returns ping's output.
    pub fn ping_from_swan(&self, count: u32) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", self.swan_ns.name(), "ping", "-n", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "2", "-I", SWAN_INNER, OUR_INNER])
            .output()
            .expect("run ping");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Runs our loop in flood mode in strongSwan's namespace: `count` IKE_SA_INIT requests to us
    /// from as many source ports. Returns its output.
    pub fn flood_from_swan_side(&self, count: u32) -> String {
        let output = run(Command::new("ip")
            .args([
                "netns",
                "exec",
                self.swan_ns.name(),
                env!("CARGO_BIN_EXE_dvipsec-ike-udp"),
            ])
            .arg(format!("flood={count}"))
            .arg(format!("local={SWAN_OUTER}"))
            .arg(format!("remote={OUR_OUTER}"))
            .arg("local_id=flood@test")
            .arg(format!("remote_id={OUR_ID}"))
            .arg(format!("local_ts={SWAN_INNER}/32"))
            .arg(format!("remote_ts={OUR_INNER}/32"))
            .env("DVIPSEC_IKE_PSK", "not-the-key"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `ping` in strongSwan's namespace in the background (collect it with `wait_with_output`).
    pub fn spawn_ping_from_swan(&self, count: u32, interval: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", self.swan_ns.name(), "ping", "-n", "-c"])
            .arg(count.to_string())
            .args(["-i", interval, "-W", "2", "-I", SWAN_INNER, OUR_INNER])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ping")
    }

    /// Waits until strongSwan lists exactly one child SA and returns the listing.
    pub fn wait_swan_single_child(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let listing = self.list_sas();
            if listing.matches("spi-in=").count() == 1 && listing.contains("state=ESTABLISHED") {
                return listing;
            }
            assert!(Instant::now() < deadline, "strongSwan lists {listing}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until swanctl lists no IKE SA.
    pub fn wait_swan_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let listing = self.list_sas();
            if !listing.contains("state=") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "strongSwan still lists {listing}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut ours) = self.ours.take() {
            drop(ours.stdin.take());
            let _ = ours.child.kill();
            let _ = ours.child.wait();
        }
        if let Some(mut charon) = self.charon.take() {
            let _ = charon.kill();
            let _ = charon.wait();
        }
    }
}

fn strongswan_conf(dir: &Path, ns: &str) -> String {
    let d = dir.display();
    [
        "charon {".to_string(),
        "  load_modular = no".into(),
        "  load = random nonce kdf openssl aes sha1 sha2 hmac gcm curve25519 kernel-libipsec kernel-netlink socket-default vici".into(),
        "  install_routes = yes".into(),
        "  plugins {".into(),
        format!("    vici {{\n      socket = unix://{d}/charon.vici\n    }}"),
        "    kernel-libipsec {\n      allow_peer_ts = no\n    }".into(),
        "  }".into(),
        "  filelog {".into(),
        format!("    main {{\n      path = {d}/charon.log\n      append = no\n      flush_line = yes\n      default = 1\n      ike = 2\n      chd = 2\n      enc = 1\n      knl = 1\n    }}"),
        "  }".into(),
        format!("  syslog {{\n    identifier = charon-{ns}\n    daemon {{\n      default = -1\n    }}\n  }}"),
        "}".into(),
    ]
    .join("\n")
}

fn swanctl_conf(suites: Suites) -> String {
    format!(
        "connections {{
  peer {{
    version = 2
    local_addrs = {SWAN_OUTER}
    remote_addrs = {OUR_OUTER}
    proposals = {ike}
    local {{
      auth = psk
      id = {SWAN_ID}
    }}
    remote {{
      auth = psk
      id = {OUR_ID}
    }}
    children {{
      net {{
        mode = tunnel
        local_ts = {SWAN_INNER}/32
        remote_ts = {OUR_INNER}/32
        esp_proposals = {esp}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-1 {{
    id-a = {SWAN_ID}
    id-b = {OUR_ID}
    secret = \"{PSK}\"
  }}
}}
",
        ike = suites.ike,
        esp = suites.esp
    )
}
