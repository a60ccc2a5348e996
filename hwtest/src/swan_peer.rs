//! strongSwan as the peer of the figure-4 site on namespaces: its configuration, the charon
//! process in the peer namespace, the steady echo client the peer runs, ESP captures and
//! waits on the nodes' logs. Used by `dvipsec-hwtest run takeover` and the site tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

pub const CHARON: &str = "/usr/sbin/charon-systemd";
pub const DVIPA: &str = "198.51.100.10";
pub const PEER_OUTER: &str = "203.0.113.10";
/// The peer's inner host (inner selectors must differ from the outer addresses).
pub const PEER_INNER: &str = "203.0.113.100";

/// What went wrong while driving the peer or the site.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwanError {
    #[error("{0} is missing (scripts/install-test-deps.sh installs it)")]
    Missing(String),
    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SwanError {
    let what = what.into();
    move |source| SwanError::Io { what, source }
}

/// The tools the peer side needs besides root and the firmware, or the first one missing.
pub fn missing_tool() -> Option<String> {
    [
        CHARON,
        "/usr/sbin/swanctl",
        "/usr/bin/tshark",
        "/usr/bin/python3",
    ]
    .into_iter()
    .find(|tool| !Path::new(tool).exists())
    .map(str::to_owned)
}

/// Runs `command` to its end; an unsuccessful exit is an error carrying its output.
pub fn run_checked(command: &mut Command) -> Result<Output, SwanError> {
    let what = format!("{command:?}");
    let output = command.output().map_err(|source| SwanError::Spawn {
        what: what.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(SwanError::Failed {
            what,
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(output)
}

/// `args` run inside namespace `ns`.
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
    /// Writes the configuration into `dir` and starts charon in `ns`; returns once its vici
    /// socket is there.
    pub fn start(ns: &str, dir: &Path, psk: &str) -> Result<Charon, SwanError> {
        std::fs::write(dir.join("strongswan.conf"), charon_conf(dir, true))
            .map_err(io_error("write strongswan.conf"))?;
        let conf = Zeroizing::new(swanctl_conf(psk));
        std::fs::write(dir.join("swanctl.conf"), conf.as_bytes())
            .map_err(io_error("write swanctl.conf"))?;
        let child = in_ns(ns, &["env"])
            .arg(format!(
                "STRONGSWAN_CONF={}",
                dir.join("strongswan.conf").display()
            ))
            .arg(CHARON)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SwanError::Spawn {
                what: CHARON.into(),
                source,
            })?;
        let charon = Charon {
            dir: dir.to_path_buf(),
            child,
        };
        let socket = dir.join("charon.vici");
        wait_until(Duration::from_secs(10), "charon's vici socket", || {
            socket.exists()
        })?;
        Ok(charon)
    }

    /// `swanctl ARGS` against this charon; its standard output.
    pub fn swanctl(&self, args: &[&str]) -> Result<String, SwanError> {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        let output = run_checked(Command::new("swanctl").args(args).args(["--uri", &uri]))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Loads the configuration, asks for the child SA (the owner may have negotiated
    /// already: it initiates to its peers when it takes the DVIPA) and waits for it.
    pub fn connect(&self) -> Result<(), SwanError> {
        let conf = self.dir.join("swanctl.conf").display().to_string();
        self.swanctl(&["--load-all", "--file", &conf])?;
        // A failure here is not final: the owner's own initiation may win the race.
        let _ = self.swanctl(&[
            "--initiate",
            "--ike",
            "dva1",
            "--child",
            "app",
            "--timeout",
            "15",
        ]);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let sas = self.swanctl(&["--list-sas", "--raw"])?;
            if sas.contains("state=INSTALLED") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SwanError::Timeout(format!(
                    "no CHILD_SA with DVA1:\n{sas}\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<(), SwanError> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return Err(SwanError::Timeout(format!("{what} (after {limit:?})")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// charon's configuration for one instance in `dir` (vici socket and log there). With
/// `host_to_host` the tunnel may carry traffic between the IKE addresses themselves
/// (kernel-libipsec's `allow_peer_ts`, with the fwmarks that keep charon's own packets out of
/// the tunnel), as with a DVIPA whose selector is the DVIPA.
pub fn charon_conf(dir: &Path, host_to_host: bool) -> String {
    let d = dir.display();
    let plugins = if host_to_host {
        "    kernel-libipsec {\n      allow_peer_ts = yes\n    }\n    socket-default {\n      fwmark = 0x42\n    }\n    kernel-netlink {\n      fwmark = !0x42\n    }\n"
    } else {
        "    kernel-libipsec {\n      allow_peer_ts = no\n    }\n"
    };
    format!(
        "charon {{
  load_modular = no
  load = random nonce kdf openssl aes sha1 sha2 hmac gcm curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
{plugins}  }}
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

/// Gives the peer namespace its inner host address (the source of the echo clients).
pub fn add_inner_host(peer_ns: &str) -> Result<(), SwanError> {
    run_checked(&mut in_ns(peer_ns, &["ip", "link", "set", "lo", "up"]))?;
    let inner = format!("{PEER_INNER}/32");
    run_checked(&mut in_ns(
        peer_ns,
        &["ip", "addr", "add", &inner, "dev", "lo"],
    ))?;
    Ok(())
}

/// The site's DVA1 with MVS4 as its backup (MVS4 may then distribute, serving DVA1 with the
/// other targets after a takeover); `None` when the text has no policy list to put it before.
pub fn with_backup(text: &str) -> Option<String> {
    if !text.contains("    policy:") {
        return None;
    }
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
    Some(text.replacen("    policy:", backup, 1))
}

/// The traffic during a takeover: one datagram every 5 ms over 16 flows for `seconds`;
/// prints the echoes and the longest time without one.
pub const STEADY_CLIENT: &str = r#"
import socket, sys, time, select
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
socks = []
for _ in range(16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.setblocking(False); socks.append(s)
start = time.monotonic(); sent = echoed = 0; last = start; gap = 0.0; i = 0
while time.monotonic() - start < seconds:
    socks[i % 16].sendto(b"steady-%d" % i, (dst, 60)); sent += 1; i += 1
    deadline = time.monotonic() + 0.005
    while True:
        left = deadline - time.monotonic()
        if left <= 0: break
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            try:
                s.recv(4096); echoed += 1; now = time.monotonic()
                gap = max(gap, now - last); last = now
            except BlockingIOError:
                pass
gap = max(gap, time.monotonic() - last)
print("sent=%d echoed=%d gap_ms=%d" % (sent, echoed, int(gap * 1000)))
"#;

/// The value of `key=` in a `k=v k=v` line.
pub fn field_of(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The log of `node` in a topology's run directory.
pub fn node_log(run_dir: &Path, node: &str) -> String {
    std::fs::read_to_string(run_dir.join(format!("{node}.log"))).unwrap_or_default()
}

/// Waits (up to 15 s) until `node`'s log has `needle`.
pub fn wait_for_node_log(run_dir: &Path, node: &str, needle: &str) -> Result<(), SwanError> {
    wait_until(
        Duration::from_secs(15),
        &format!("{node} logging {needle:?}"),
        || node_log(run_dir, node).contains(needle),
    )
    .map_err(|e| SwanError::Timeout(format!("{e}:\n{}", node_log(run_dir, node))))
}

/// Stops a capture or client with SIGINT (tshark then finishes its file), SIGKILL after 5 s.
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

/// The `dvipsec boot` process of `node` among the site's recorded processes.
pub fn boot_pid(pids: &[u32], node: &str) -> Option<u32> {
    pids.iter().copied().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == node.as_bytes()))
            .unwrap_or(false)
    })
}

/// ESP packets in the captures `pcaps` and how many of them repeat an (SPI, sequence
/// number) seen before.
pub fn sequence_reuse(pcaps: &[&Path]) -> Result<SequenceCount, SwanError> {
    let mut seen = BTreeSet::new();
    let mut count = SequenceCount::default();
    for pcap in pcaps {
        let output = run_checked(Command::new("tshark").arg("-r").arg(pcap).args([
            "-T",
            "fields",
            "-e",
            "esp.spi",
            "-e",
            "esp.sequence",
        ]))?;
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            count.packets += 1;
            if !seen.insert(line.to_owned()) {
                count.reused += 1;
                count.first_reused.get_or_insert_with(|| line.to_owned());
            }
        }
    }
    Ok(count)
}

/// What [`sequence_reuse`] found.
#[derive(Debug, Default, Clone)]
pub struct SequenceCount {
    pub packets: usize,
    pub reused: usize,
    /// The first repeated `SPI<TAB>sequence` pair.
    pub first_reused: Option<String>,
}

/// Brings the site `site_file` up, waits until its owner MVS1 holds DVA1 (the cluster has
/// heard every member), gives the peer its inner host, starts charon in the peer namespace
/// with its files in `swan_dir` and waits for its child SA with DVA1.
pub fn connect_site(
    site_file: &Path,
    options: &crate::topology::TopologyOptions,
    peer_ns: &str,
    swan_dir: &Path,
    psk: &str,
) -> Result<Charon, SwanError> {
    crate::topology::up(site_file, options).map_err(|e| SwanError::Failed {
        what: "topology up".into(),
        detail: e.to_string(),
    })?;
    wait_for_node_log(&options.run_dir, "MVS1", "DVIPA adopted")?;
    add_inner_host(peer_ns)?;
    std::fs::create_dir_all(swan_dir).map_err(io_error("create the strongSwan directory"))?;
    let charon = Charon::start(peer_ns, swan_dir, psk)?;
    charon.connect()?;
    Ok(charon)
}
