//! The reference gateway: strongSwan (charon-systemd with kernel-libipsec, user-space ESP on a
//! TUN device) in a namespace of its own, with a UDP echo service on its inner address.
//!
//! Layout: the peer namespace (the load generator's sockets) and the gateway namespace,
//! joined by one veth pair. Outer addresses on the veth, the gateway's inner address on its
//! `lo`; charon routes replies to the peer's inner address into its tunnel.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dvipsec_ike::Identity;
use zeroize::Zeroizing;

use super::costs::PartWork;
use super::cpu;
use super::loadgen::PeerSpec;
use dvipsec_hwtest::netns::{join_with_veth, Netns};

const CHARON: &str = "/usr/sbin/charon-systemd";
const SWANCTL: &str = "/usr/sbin/swanctl";
const LIBIPSEC_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
const PEER_OUTER: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 1);
const GATEWAY_OUTER: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
const PEER_INNER: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 1);
const GATEWAY_INNER: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 2);
const PEER_ID: &str = "loadgen.hwtest.example";
const GATEWAY_ID: &str = "strongswan.hwtest.example";
pub const ECHO_PORT: u16 = 60;
/// What strongSwan logs for each packet its replay window refuses (at `esp = 1` or more).
const REPLAY_LOG_LINE: &str = "sequence number verification failed";
/// kernel-libipsec 5.9.8 fixes its TUN device's MTU at 1400 and reads packets into buffers
/// of that size: a larger echo reply leaves as inner fragments (raising the MTU truncates it).
pub const MAX_INNER: usize = 1400;

/// Why a gateway could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("prerequisite missing: {0}")]
    Missing(String),
    #[error("{0}")]
    Setup(String),
}

impl From<dvipsec_hwtest::netns::NetnsError> for GatewayError {
    fn from(e: dvipsec_hwtest::netns::NetnsError) -> Self {
        GatewayError::Setup(e.to_string())
    }
}

/// What is missing on this machine for the strongSwan gateway, if anything.
pub fn missing_prerequisite() -> Option<String> {
    if !dvipsec_hwtest::preflight::running_as_root() {
        return Some("needs root (network namespaces)".into());
    }
    for tool in [CHARON, SWANCTL, LIBIPSEC_PLUGIN] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (scripts/install-test-deps.sh installs strongSwan)"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the ip tool (iproute2) is missing".into());
    }
    None
}

/// The pid in the name of one of our namespaces (`dvhr<PID>p` or `dvhr<PID>g`).
fn owner_of(namespace: &str) -> Option<u32> {
    let digits = namespace.strip_prefix("dvhr")?.strip_suffix(['p', 'g'])?;
    digits.parse().ok()
}

/// Deletes the namespaces of earlier runs whose process is gone (killed before its guards
/// ran), and stops the processes left in them (their charon). A namespace whose pid lives on
/// is left alone, whatever that process is now.
pub fn remove_orphans() {
    let Ok(existing) = dvipsec_hwtest::netns::list_namespaces() else {
        return;
    };
    for name in existing {
        let Some(pid) = owner_of(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Its charon outlived it: every process in the namespace is one that run started.
        let pids = dvipsec_hwtest::netns::ip(&["netns", "pids", &name]).unwrap_or_default();
        for orphan in pids.split_whitespace() {
            let _ = Command::new("kill").arg(orphan).status();
        }
        let _ = dvipsec_hwtest::netns::ip(&["netns", "delete", &name]);
    }
}

/// A UDP echo service run by a thread of this process inside the gateway's namespace.
pub struct Echo {
    stop: Arc<AtomicBool>,
    tid: Arc<AtomicU32>,
    handle: Option<JoinHandle<()>>,
}

impl Echo {
    /// Binds `addr` inside `namespace` and answers every datagram with itself.
    pub fn start(namespace: &str, addr: SocketAddrV4) -> Result<Self, GatewayError> {
        let socket = dvipsec_ports::netns::run_in(namespace, move || UdpSocket::bind(addr))
            .map_err(|e| GatewayError::Setup(e.to_string()))?
            .map_err(|e| GatewayError::Setup(format!("echo bind {addr}: {e}")))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| GatewayError::Setup(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicU32::new(0));
        let (stop_flag, tid_slot) = (Arc::clone(&stop), Arc::clone(&tid));
        let handle = std::thread::spawn(move || {
            tid_slot.store(cpu::current_tid().unwrap_or(0), Ordering::Relaxed);
            let mut buf = [0u8; 2048];
            while !stop_flag.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    // A reply lost to a full buffer is loss the generator counts.
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        Ok(Echo {
            stop,
            tid,
            handle: Some(handle),
        })
    }

    /// CPU ticks the echo thread used so far.
    pub fn ticks(&self) -> u64 {
        match self.tid.load(Ordering::Relaxed) {
            0 => 0,
            tid => cpu::thread_ticks(tid).unwrap_or(0),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// strongSwan terminating the tunnel; everything is torn down on drop.
pub struct StrongSwan {
    // Field order is drop order: the echo thread and charon go before the namespaces.
    echo: Option<Echo>,
    charon: Option<Child>,
    dir: PathBuf,
    peer_ns: Netns,
    gateway_ns: Netns,
    psk: Zeroizing<Vec<u8>>,
}

impl StrongSwan {
    /// Builds both namespaces, starts charon with a responder connection and the echo service.
    /// `dir` receives charon's configuration and log.
    pub fn start(tag: &str, dir: &Path) -> Result<Self, GatewayError> {
        if let Some(reason) = missing_prerequisite() {
            return Err(GatewayError::Missing(reason));
        }
        std::fs::create_dir_all(dir).map_err(|e| setup("creating the strongSwan directory", e))?;
        let peer_ns = Netns::create(&format!("dvhr{tag}p"))?;
        let gateway_ns = Netns::create(&format!("dvhr{tag}g"))?;
        let psk = Zeroizing::new(fresh_psk()?);
        let mut gateway = StrongSwan {
            echo: None,
            charon: None,
            dir: dir.to_path_buf(),
            peer_ns,
            gateway_ns,
            psk,
        };
        gateway.build_network(&format!("dvr{tag}a"), &format!("dvr{tag}b"))?;
        gateway.start_charon()?;
        let echo = Echo::start(
            gateway.gateway_ns.name(),
            SocketAddrV4::new(GATEWAY_INNER, ECHO_PORT),
        )?;
        gateway.echo = Some(echo);
        Ok(gateway)
    }

    fn build_network(&self, peer_if: &str, gateway_if: &str) -> Result<(), GatewayError> {
        join_with_veth(&self.peer_ns, peer_if, &self.gateway_ns, gateway_if)?;
        self.peer_ns
            .exec_ip(&["addr", "add", &format!("{PEER_OUTER}/24"), "dev", peer_if])?;
        self.gateway_ns.exec_ip(&[
            "addr",
            "add",
            &format!("{GATEWAY_OUTER}/24"),
            "dev",
            gateway_if,
        ])?;
        self.gateway_ns
            .exec_ip(&["addr", "add", &format!("{GATEWAY_INNER}/32"), "dev", "lo"])?;
        Ok(())
    }

    fn vici(&self) -> String {
        format!("unix://{}", self.dir.join("charon.vici").display())
    }

    fn start_charon(&mut self) -> Result<(), GatewayError> {
        let conf = self.dir.join("strongswan.conf");
        let _ = std::fs::remove_file(self.dir.join("charon.vici"));
        std::fs::write(
            &conf,
            dvipsec_hwtest::swan_peer::charon_conf(&self.dir, false),
        )
        .map_err(|e| setup("writing strongswan.conf", e))?;
        let swanctl_conf = self.dir.join("swanctl.conf");
        std::fs::write(&swanctl_conf, swanctl_conf_text(&self.psk))
            .map_err(|e| setup("writing swanctl.conf", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", self.gateway_ns.name(), CHARON])
            .env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| setup("starting charon-systemd", e))?;
        self.charon = Some(child);
        let socket = self.dir.join("charon.vici");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(GatewayError::Setup(
                    "charon's vici socket did not appear within 10 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let loaded = self.swanctl(&["--load-all", "--file", &swanctl_conf.display().to_string()]);
        // The file holds the PSK: it is not needed once loaded.
        let _ = std::fs::remove_file(&swanctl_conf);
        loaded.map(|_| ())
    }

    /// Runs swanctl against this charon.
    pub fn swanctl(&self, args: &[&str]) -> Result<String, GatewayError> {
        let output = Command::new(SWANCTL)
            .args(args)
            .args(["--uri", &self.vici()])
            .output()
            .map_err(|e| setup("running swanctl", e))?;
        if !output.status.success() {
            return Err(GatewayError::Setup(format!(
                "swanctl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stdout).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Who the load generator is when it talks to this gateway.
    pub fn peer_spec(&self) -> PeerSpec {
        PeerSpec {
            namespace: self.peer_ns.name().to_owned(),
            local: PEER_OUTER,
            remote: GATEWAY_OUTER,
            local_id: Identity::Fqdn(PEER_ID.into()),
            remote_id: Identity::Fqdn(GATEWAY_ID.into()),
            psk: self.psk.clone(),
            inner_src: PEER_INNER,
            inner_dst: GATEWAY_INNER,
            echo_port: ECHO_PORT,
        }
    }

    /// CPU ticks used so far by the gateway's parts: charon (every thread, libipsec's
    /// included) and the echo thread.
    pub fn cpu_parts(&self) -> BTreeMap<String, u64> {
        let charon = self
            .charon
            .as_ref()
            .and_then(|c| cpu::process_ticks(c.id()))
            .unwrap_or(0);
        BTreeMap::from([
            ("charon".to_string(), charon),
            ("echo".to_string(), self.echo_ticks()),
        ])
    }

    /// charon's user-space CPU ticks so far (the echo thread is left out: it is not ESP).
    pub fn user_cpu_parts(&self) -> BTreeMap<String, u64> {
        let charon = self
            .charon
            .as_ref()
            .and_then(|c| cpu::process_user_ticks(c.id()));
        charon
            .map(|ticks| BTreeMap::from([("charon".to_string(), ticks)]))
            .unwrap_or_default()
    }

    /// CPU ticks of the echo thread (it runs in this process).
    pub fn echo_ticks(&self) -> u64 {
        self.echo.as_ref().map_or(0, Echo::ticks)
    }

    /// ESP packets charon's child SAs counted: (in, out), summed over the listed SAs.
    pub fn esp_packets(&self) -> Option<(u64, u64)> {
        let listing = self.swanctl(&["--list-sas", "--raw"]).ok()?;
        let sum = |key: &str| -> u64 {
            listing
                .split(|c: char| c.is_whitespace() || c == '{' || c == '}')
                .filter_map(|word| word.strip_prefix(key))
                .filter_map(|value| value.parse::<u64>().ok())
                .sum()
        };
        Some((sum("packets-in="), sum("packets-out=")))
    }

    /// charon's ESP packets (in and out) as the work of the part that does its ESP.
    pub fn work_by_part(&self) -> BTreeMap<String, PartWork> {
        let Some((esp_in, esp_out)) = self.esp_packets() else {
            return BTreeMap::new();
        };
        let charon = PartWork {
            esp_packets: esp_in + esp_out,
            stages: BTreeMap::new(),
        };
        BTreeMap::from([("charon".to_string(), charon)])
    }

    /// Packets charon's replay window refused so far, from its log.
    pub fn replay_failures(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("charon.log"))
            .map(|log| log.matches(REPLAY_LOG_LINE).count() as u64)
            .unwrap_or(0)
    }
}

impl Drop for StrongSwan {
    fn drop(&mut self) {
        self.echo.take();
        if let Some(mut charon) = self.charon.take() {
            let _ = charon.kill();
            let _ = charon.wait();
        }
    }
}

fn setup(what: &str, e: std::io::Error) -> GatewayError {
    GatewayError::Setup(format!("{what}: {e}"))
}

/// A PSK for this run only, from the kernel's random source.
fn fresh_psk() -> Result<Vec<u8>, GatewayError> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| setup("reading /dev/urandom", e))?;
    // swanctl takes the secret as a quoted string: hex keeps it printable.
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes())
}

fn swanctl_conf_text(psk: &[u8]) -> String {
    let secret = String::from_utf8_lossy(psk);
    format!(
        "connections {{
  loadgen {{
    version = 2
    local_addrs = {GATEWAY_OUTER}
    remote_addrs = {PEER_OUTER}
    proposals = aes128gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {GATEWAY_ID}
    }}
    remote {{
      auth = psk
      id = {PEER_ID}
    }}
    children {{
      echo {{
        mode = tunnel
        local_ts = {GATEWAY_INNER}/32
        remote_ts = {PEER_INNER}/32
        esp_proposals = aes128gcm16
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-loadgen {{
    id-a = {GATEWAY_ID}
    id-b = {PEER_ID}
    secret = \"{secret}\"
  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_namespace_names_yield_a_pid() {
        assert_eq!(owner_of("dvhr4242p"), Some(4242));
        assert_eq!(owner_of("dvhr17g"), Some(17));
        assert_eq!(owner_of("dvhr17x"), None);
        assert_eq!(owner_of("dvh-fig4ns-hub"), None);
        assert_eq!(owner_of("dvhrp"), None);
    }
}
