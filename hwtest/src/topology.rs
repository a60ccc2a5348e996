//! `topology up|down`: a site's nodes on network namespaces, each running `dvipsec boot`.
//!
//! Layout: one namespace per node, one for the peers, and a hub namespace holding two bridges,
//! `br-ext` (the external network: every node port and the peers) and `br-xcf` (the XCF
//! network: one `xcf0` per node carrying its XCF addresses). The owner of a DVIPA carries its
//! address on its first port; the peer namespace carries every peer address.
//!
//! Every resource is written to the run directory's state file *before* it is created, so
//! `down` can remove what a crashed `up` (or a crashed harness) left, and running `down` again
//! finds nothing to do.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dvipsec_config::{CfBackend, ConfigError, PortConfig, PortDriver, SiteConfig};

use crate::netns::{ip, NetnsError};

/// The state file in the run directory.
const STATE_FILE: &str = "state";
/// How long `up` waits for every node to log that it booted.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `down` gives a node to shut down cleanly before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The MTU of the XCF network's links.
const XCF_MTU: &str = "9000";
/// The name of a node's port that sits on the XCF network (as `dvipsec boot` expects it).
const XCF_PORT_NAME: &str = "xcf";
/// The line `dvipsec boot` logs once it holds everything.
const BOOTED_MARK: &str = "node booted";

/// Why a topology could not be brought up or down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("{}", .0.render().trim_end())]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: `dvipsec boot` did not come up; its log {} ends with:\n{tail}", log.display())]
    BootFailed {
        node: String,
        log: PathBuf,
        tail: String,
    },
    #[error("state file {}: line {line}: {reason}", path.display())]
    State {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Where `up` keeps its state and logs, and which firmware binary it starts.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    pub run_dir: PathBuf,
    pub dvipsec: PathBuf,
}

/// One thing `up` created, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Namespace(String),
    Process(u32),
    Region(PathBuf),
}

impl Resource {
    fn to_line(&self) -> String {
        match self {
            Resource::Namespace(name) => format!("netns {name}"),
            Resource::Process(pid) => format!("pid {pid}"),
            Resource::Region(path) => format!("shm {}", path.display()),
        }
    }

    fn parse(line: &str) -> Result<Self, String> {
        let (kind, value) = line
            .split_once(' ')
            .ok_or_else(|| format!("expected `KIND VALUE`, found {line:?}"))?;
        match kind {
            "netns" => Ok(Resource::Namespace(value.to_owned())),
            "pid" => value
                .parse()
                .map(Resource::Process)
                .map_err(|e| format!("bad pid {value:?}: {e}")),
            "shm" => Ok(Resource::Region(PathBuf::from(value))),
            other => Err(format!("unknown resource kind {other:?}")),
        }
    }
}

/// The namespace names a site's topology uses.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn for_site(site: &str) -> Self {
        let clean: String = site
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Names {
            prefix: format!("dvh-{clean}"),
        }
    }

    /// What every name of this site starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    pub fn peer(&self) -> String {
        format!("{}-peer", self.prefix)
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }
}

/// Appends resources to the state file as they are about to be created.
struct StateLog {
    path: PathBuf,
}

impl StateLog {
    fn open(run_dir: &Path) -> Result<Self, TopologyError> {
        fs::create_dir_all(run_dir).map_err(|source| TopologyError::Io {
            what: "creating run directory",
            path: run_dir.to_path_buf(),
            source,
        })?;
        Ok(StateLog {
            path: run_dir.join(STATE_FILE),
        })
    }

    fn record(&self, resource: &Resource) -> Result<(), TopologyError> {
        let io = |source| TopologyError::Io {
            what: "writing state file",
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        writeln!(file, "{}", resource.to_line()).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// Builds the topology for the site at `site_path` and boots every node. On failure the part
/// already built is torn down again before the error is returned.
pub fn up(site_path: &Path, options: &TopologyOptions) -> Result<(), TopologyError> {
    let site = SiteConfig::load(site_path)?;
    // The nodes run with another working directory's view: give them an absolute path.
    let site_path = fs::canonicalize(site_path).map_err(|source| TopologyError::Io {
        what: "resolving site file",
        path: site_path.to_path_buf(),
        source,
    })?;
    let state = StateLog::open(&options.run_dir)?;
    let result = build(&site, &site_path, options, &state);
    if result.is_err() {
        let _ = down(&options.run_dir);
    }
    result
}

fn build(
    site: &SiteConfig,
    site_path: &Path,
    options: &TopologyOptions,
    state: &StateLog,
) -> Result<(), TopologyError> {
    let names = Names::for_site(&site.site);
    if let CfBackend::Shm(path) = &*site.coupling_facility.backend {
        state.record(&Resource::Region(path.clone()))?;
    }
    let hub = names.hub();
    create_namespace(state, &hub)?;
    for bridge in ["br-ext", "br-xcf"] {
        ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", bridge, "up"])?;
    }
    build_peer(site, &names, state)?;
    for (index, node) in site.nodes.iter().enumerate() {
        build_node(site, index, &node.name, &names, state)?;
    }
    let mut started = Vec::new();
    for node in &site.nodes {
        started.push(start_boot(&names, &node.name, site_path, options, state)?);
    }
    for (node, log) in &started {
        wait_booted(node, log)?;
    }
    Ok(())
}

fn create_namespace(state: &StateLog, name: &str) -> Result<(), TopologyError> {
    state.record(&Resource::Namespace(name.to_owned()))?;
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// A veth from `ns`/`inner` to the hub's `bridge` as `outer`.
fn plug(ns: &str, inner: &str, hub: &str, outer: &str, bridge: &str) -> Result<(), NetnsError> {
    ip(&[
        "-n", ns, "link", "add", inner, "type", "veth", "peer", "name", outer, "netns", hub,
    ])?;
    if bridge == "br-xcf" {
        // The XCF network carries the distributor's GRE (24 bytes more than the peer's
        // packets): jumbo frames, as a cluster interconnect has.
        ip(&["-n", ns, "link", "set", inner, "mtu", XCF_MTU])?;
        ip(&["-n", hub, "link", "set", outer, "mtu", XCF_MTU])?;
    }
    ip(&["-n", hub, "link", "set", outer, "master", bridge])?;
    ip(&["-n", hub, "link", "set", outer, "up"])?;
    ip(&["-n", ns, "link", "set", inner, "up"])?;
    Ok(())
}

fn add_address(ns: &str, dev: &str, address: IpAddr, prefix: u8) -> Result<(), NetnsError> {
    let cidr = format!("{address}/{prefix}");
    let mut args = vec!["-n", ns];
    if address.is_ipv6() {
        args.push("-6");
    }
    args.extend(["addr", "add", &cidr, "dev", dev]);
    if address.is_ipv6() {
        args.push("nodad");
    }
    ip(&args).map(drop)
}

fn route(ns: &str, address: IpAddr, dev: &str) -> Result<(), NetnsError> {
    let dest = address.to_string();
    ip(&["-n", ns, "route", "replace", &dest, "dev", dev]).map(drop)
}

fn build_peer(site: &SiteConfig, names: &Names, state: &StateLog) -> Result<(), TopologyError> {
    let peer = names.peer();
    create_namespace(state, &peer)?;
    plug(&peer, "peer0", &names.hub(), "hpeer", "br-ext")?;
    for config in &site.peers {
        let address = *config.address;
        add_address(&peer, "peer0", address, host_prefix(address))?;
    }
    for dvipa in &site.dvipas {
        route(&peer, *dvipa.define.address, "peer0")?;
    }
    Ok(())
}

fn build_node(
    site: &SiteConfig,
    index: usize,
    node: &str,
    names: &Names,
    state: &StateLog,
) -> Result<(), TopologyError> {
    let ns = names.node(node);
    let hub = names.hub();
    create_namespace(state, &ns)?;
    let config = site.nodes.iter().find(|n| *n.name == node);
    let ports = config.map(|n| n.ports.as_slice()).unwrap_or_default();
    // The port named `xcf` (the data plane's GRE port) is the XCF interface itself.
    let is_xcf = |p: &&PortConfig| *p.name == XCF_PORT_NAME;
    let xcf_iface = ports
        .iter()
        .find(is_xcf)
        .and_then(kernel_interface)
        .unwrap_or("xcf0");
    let ifaces: Vec<&str> = ports
        .iter()
        .filter(|p| !is_xcf(p))
        .filter_map(kernel_interface)
        .collect();
    for (port, iface) in ifaces.iter().enumerate() {
        plug(&ns, iface, &hub, &format!("h{index}e{port}"), "br-ext")?;
    }
    plug(&ns, xcf_iface, &hub, &format!("h{index}x"), "br-xcf")?;
    for address in config.map(|n| n.xcf.iter()).into_iter().flatten() {
        add_address(&ns, xcf_iface, **address, xcf_prefix(**address))?;
    }
    if let Some(first) = ifaces.first() {
        address_external(site, node, &ns, first)?;
    }
    Ok(())
}

/// The kernel interface a port runs on: its `iface`, or for DPDK the `iface=` of its first
/// vdev (net_af_packet, net_af_xdp); `None` for a device the kernel does not see.
fn kernel_interface(port: &PortConfig) -> Option<&str> {
    if *port.driver != PortDriver::Dpdk {
        return port.iface.as_deref().map(String::as_str);
    }
    port.vdevs
        .as_deref()
        .and_then(|vdevs| vdevs.first())
        .and_then(|vdev| vdev.split(',').find_map(|arg| arg.strip_prefix("iface=")))
}

/// The DVIPAs `node` owns go on its first port, with routes back to every peer.
fn address_external(
    site: &SiteConfig,
    node: &str,
    ns: &str,
    iface: &str,
) -> Result<(), NetnsError> {
    for dvipa in site.dvipas.iter().filter(|d| *d.owner == node) {
        let address = *dvipa.define.address;
        add_address(ns, iface, address, host_prefix(address))?;
    }
    for peer in &site.peers {
        route(ns, *peer.address, iface)?;
    }
    Ok(())
}

fn host_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

fn xcf_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        24
    } else {
        64
    }
}

/// Starts `dvipsec boot` for `node` in its namespace, logging to `RUN_DIR/NODE.log`.
fn start_boot(
    names: &Names,
    node: &str,
    site_path: &Path,
    options: &TopologyOptions,
    state: &StateLog,
) -> Result<(String, PathBuf), TopologyError> {
    let log = options.run_dir.join(format!("{node}.log"));
    let io = |what, source| TopologyError::Io {
        what,
        path: log.clone(),
        source,
    };
    let file = fs::File::create(&log).map_err(|e| io("creating log", e))?;
    let stderr = file.try_clone().map_err(|e| io("sharing log", e))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &names.node(node)])
        .arg(&options.dvipsec)
        .arg("boot")
        .arg("--config")
        .arg(site_path)
        .args(["--node", node])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .spawn()
        .map_err(|e| io("starting dvipsec boot, logging to", e))?;
    // `ip netns exec` execs the command, so this pid is the firmware's own.
    state.record(&Resource::Process(child.id()))?;
    Ok((node.to_owned(), log))
}

fn wait_booted(node: &str, log: &Path) -> Result<(), TopologyError> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(BOOTED_MARK) {
            return Ok(());
        }
        if text.contains("dvipsec boot:") || Instant::now() >= deadline {
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(TopologyError::BootFailed {
                node: node.to_owned(),
                log: log.to_path_buf(),
                tail: tail.join("\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the resources recorded in `run_dir`'s state file (none when there is no file).
pub fn recorded(run_dir: &Path) -> Result<Vec<Resource>, TopologyError> {
    let path = run_dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Io {
                what: "reading state file",
                path,
                source,
            })
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            Resource::parse(line).map_err(|reason| TopologyError::State {
                path: path.clone(),
                line: index + 1,
                reason,
            })
        })
        .collect()
}

/// Stops every recorded process, deletes every recorded namespace and region, then the run
/// directory. Safe to run again, and after a crash of `up` or of the nodes.
pub fn down(run_dir: &Path) -> Result<(), TopologyError> {
    let resources = recorded(run_dir)?;
    let pids: Vec<u32> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Process(pid) => Some(*pid),
            _ => None,
        })
        .collect();
    stop_processes(&pids);
    for resource in resources.iter().rev() {
        match resource {
            Resource::Namespace(name) => delete_namespace(name)?,
            Resource::Region(path) => remove_if_present(path)?,
            Resource::Process(_) => {}
        }
    }
    already_gone_is_done(
        fs::remove_dir_all(run_dir),
        "removing run directory",
        run_dir,
    )
}

fn delete_namespace(name: &str) -> Result<(), NetnsError> {
    if crate::netns::list_namespaces()?.iter().any(|n| n == name) {
        ip(&["netns", "delete", name])?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), TopologyError> {
    already_gone_is_done(fs::remove_file(path), "removing CF region", path)
}

/// The outcome of removing `path`, where finding it already gone counts as done: `down` must
/// succeed again after a partial or repeated teardown.
fn already_gone_is_done(
    removal: std::io::Result<()>,
    what: &'static str,
    path: &Path,
) -> Result<(), TopologyError> {
    match removal {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(TopologyError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Whether `pid` is still a `dvipsec boot` process (a recycled pid is left alone).
pub fn is_boot_process(pid: u32) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_dvipsec = args
        .first()
        .is_some_and(|arg0| arg0.ends_with(b"dvipsec") || arg0.ends_with(b"ip"));
    is_dvipsec && args.iter().any(|a| *a == b"boot")
}

fn is_zombie_or_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// SIGTERM, then SIGKILL for those still running after [`STOP_TIMEOUT`].
fn stop_processes(pids: &[u32]) {
    let live: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| is_boot_process(p))
        .collect();
    signal(&live, "-TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && !live.iter().all(|&p| is_zombie_or_gone(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stubborn: Vec<u32> = live
        .into_iter()
        .filter(|&p| !is_zombie_or_gone(p))
        .collect();
    signal(&stubborn, "-KILL");
}

fn signal(pids: &[u32], which: &str) {
    if pids.is_empty() {
        return;
    }
    let mut command = Command::new("kill");
    command.arg(which);
    command.args(pids.iter().map(u32::to_string));
    let _ = command.stderr(Stdio::null()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_what_is_already_gone_succeeds_and_other_failures_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let region = dir.path().join("region");
        fs::write(&region, b"cf").unwrap();
        remove_if_present(&region).unwrap();
        assert!(!region.exists());
        remove_if_present(&region).unwrap();
        // A directory cannot be removed as a file: that failure is reported with its path.
        let error = remove_if_present(dir.path()).unwrap_err();
        assert!(
            matches!(&error, TopologyError::Io { what: "removing CF region", path, .. } if path == dir.path()),
            "{error}"
        );
    }
}
