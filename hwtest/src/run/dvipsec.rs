//! The system under test: a dvipsec site brought up with `topology up` (one namespace per
//! node, `dvipsec boot` in each), its DVIPA's owner answering IKE and the targets echoing on
//! the DVIPA's port 60. Torn down with `topology down` on drop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use dvipsec_config::{IkeIdentity, SiteConfig};
use dvipsec_control::{ControlClient, Request, Response};
use dvipsec_hwtest::topology::{self, Names, Resource, TopologyOptions};
use dvipsec_ike::Identity;
use zeroize::Zeroizing;

use super::costs::{self, PartWork};
use super::cpu;
use super::loadgen::PeerSpec;
use super::strongswan::{GatewayError, ECHO_PORT};

pub struct Dvipsec {
    run_dir: PathBuf,
    /// Every node's control socket, for its metrics.
    control_sockets: Vec<PathBuf>,
    names: Names,
    spec: PeerSpec,
}

fn identity(id: &IkeIdentity) -> Identity {
    match id {
        IkeIdentity::Fqdn(name) => Identity::Fqdn(name.clone()),
        IkeIdentity::Email(address) => Identity::Email(address.clone()),
        IkeIdentity::Ip(IpAddr::V4(v4)) => Identity::Ipv4(*v4),
        IkeIdentity::Ip(IpAddr::V6(v6)) => Identity::Ipv6(*v6),
        IkeIdentity::KeyId(bytes) => Identity::KeyId(bytes.clone()),
    }
}

fn ipv4(address: IpAddr, what: &str) -> Result<Ipv4Addr, GatewayError> {
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(GatewayError::Setup(format!(
            "{what} {address} is IPv6; the load generator runs IPv4"
        ))),
    }
}

/// The peer the generator plays and the DVIPA it talks to: the site's first peer and the
/// first DVIPA whose policy protects traffic for that peer.
fn peer_spec(site: &SiteConfig, site_path: &Path, names: &Names) -> Result<PeerSpec, GatewayError> {
    let peer = site
        .peers
        .first()
        .ok_or_else(|| GatewayError::Setup("the site defines no peer".into()))?;
    let (dvipa, policy) = site
        .dvipas
        .iter()
        .find_map(|d| {
            let entry = d
                .policy
                .iter()
                .find(|p| p.peer.as_deref() == Some(&*peer.name))?;
            Some((d, entry))
        })
        .ok_or_else(|| GatewayError::Setup(format!("no DVIPA protects peer {}", *peer.name)))?;
    let base = site_path.parent().unwrap_or(Path::new("."));
    let psk = peer
        .psk
        .read(base)
        .map_err(|e| GatewayError::Missing(format!("the PSK of peer {}: {e}", *peer.name)))?;
    let local = ipv4(*peer.address, "peer address")?;
    let dvipa_address = ipv4(*dvipa.define.address, "DVIPA")?;
    let remote_net = ipv4(policy.remote.addr, "policy remote")?;
    let inner_src = inner_host(remote_net, policy.remote.prefix_len, local)
        .ok_or_else(|| GatewayError::Setup("the policy's remote network has no host".into()))?;
    Ok(PeerSpec {
        namespace: names.peer(),
        local,
        remote: dvipa_address,
        local_id: identity(&peer.remote_id),
        remote_id: identity(&peer.local_id),
        psk: Zeroizing::new(psk.expose().to_vec()),
        inner_src,
        inner_dst: dvipa_address,
        echo_port: ECHO_PORT,
    })
}

/// The generator's inner address: a host of the policy's remote network, .100 when the
/// network is that large, other than the peer's outer address (inner selectors must differ
/// from the IKE addresses, or the tunnel would capture its own ESP).
fn inner_host(net: Ipv4Addr, prefix_len: u8, outer: Ipv4Addr) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(prefix_len.min(32)));
    let base = u64::from(u32::from(net)) & !(size - 1);
    if size == 1 {
        return Some(net);
    }
    [100u64, 1, 2]
        .into_iter()
        .filter(|offset| *offset < size - 1)
        .map(|offset| Ipv4Addr::from((base + offset) as u32))
        .find(|host| *host != outer)
}

impl Dvipsec {
    /// Brings the site up; `run_dir` receives the state file and the nodes' logs.
    pub fn start(site_path: &Path, run_dir: &Path) -> Result<Self, GatewayError> {
        let site = SiteConfig::load(site_path)
            .map_err(|e| GatewayError::Setup(e.render().trim_end().to_owned()))?;
        let names = Names::for_site(&site.site);
        let spec = peer_spec(&site, site_path, &names)?;
        let options = TopologyOptions {
            run_dir: run_dir.to_path_buf(),
            dvipsec: firmware_binary(),
        };
        // A previous run of ours that crashed may have left its recorded resources behind.
        let _ = topology::down(run_dir);
        refuse_if_in_use(&names)?;
        topology::up(site_path, &options).map_err(|e| GatewayError::Setup(e.to_string()))?;
        Ok(Dvipsec {
            control_sockets: site.nodes.iter().map(|n| n.control_socket()).collect(),
            run_dir: run_dir.to_path_buf(),
            names,
            spec,
        })
    }

    pub fn peer_spec(&self) -> &PeerSpec {
        &self.spec
    }

    /// The namespace holding the site's bridges (`br-ext`, `br-xcf`).
    pub fn hub(&self) -> String {
        self.names.hub()
    }

    /// CPU ticks used so far by each `dvipsec boot` process of the site, by node name.
    pub fn cpu_parts(&self) -> BTreeMap<String, u64> {
        self.ticks_by_node(cpu::process_ticks)
    }

    /// The user-space part of [`Dvipsec::cpu_parts`].
    pub fn user_cpu_parts(&self) -> BTreeMap<String, u64> {
        self.ticks_by_node(cpu::process_user_ticks)
    }

    fn ticks_by_node(&self, ticks_of: fn(u32) -> Option<u64>) -> BTreeMap<String, u64> {
        topology::recorded(&self.run_dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| match r {
                Resource::Process(pid) => Some((
                    node_of(*pid).unwrap_or(format!("pid {pid}")),
                    ticks_of(*pid)?,
                )),
                _ => None,
            })
            .collect()
    }
}

impl Dvipsec {
    /// Every node's metrics exposition; `None` when a node does not answer.
    fn expositions(&self) -> Option<Vec<String>> {
        self.control_sockets
            .iter()
            .map(|socket| {
                let mut client = ControlClient::connect(socket).ok()?;
                match client.request(Request::Metrics).ok()? {
                    Response::Metrics(metrics) => Some(metrics.text),
                    _ => None,
                }
            })
            .collect()
    }

    /// Inbound packets the site's replay windows refused so far, summed over the nodes'
    /// metrics (`dvipsec_drops_total` with cause `replay`); `None` when a node does not answer.
    pub fn replay_drops(&self) -> Option<u64> {
        Some(
            self.expositions()?
                .iter()
                .map(|text| replay_drops_in(text))
                .sum(),
        )
    }

    /// Each node's ESP packets and stage costs so far, from its metrics (empty when a node
    /// does not answer).
    pub fn work_by_node(&self) -> BTreeMap<String, PartWork> {
        self.expositions()
            .unwrap_or_default()
            .iter()
            .flat_map(|text| costs::parts_from_exposition(text))
            .collect()
    }
}

/// The sum of the `dvipsec_drops_total{...cause="replay"...}` samples of an exposition.
fn replay_drops_in(exposition: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| {
            line.starts_with("dvipsec_drops_total{") && line.contains("cause=\"replay\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// The `--node NAME` of a running `dvipsec boot`.
fn node_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--node")?;
    args.get(at + 1).cloned()
}

impl Drop for Dvipsec {
    fn drop(&mut self) {
        let _ = topology::down(&self.run_dir);
    }
}

/// `up` records a namespace before creating it and removes what it recorded when it fails:
/// started while another `topology up` of the same site holds the names, it would delete
/// that one's namespaces. So any namespace with the site's prefix stops the run here.
pub(super) fn refuse_if_in_use(names: &Names) -> Result<(), GatewayError> {
    let existing =
        dvipsec_hwtest::netns::list_namespaces().map_err(|e| GatewayError::Setup(e.to_string()))?;
    let prefix = format!("{}-", names.prefix());
    let taken: Vec<&String> = existing.iter().filter(|n| n.starts_with(&prefix)).collect();
    if taken.is_empty() {
        return Ok(());
    }
    Err(GatewayError::Setup(format!(
        "namespaces {taken:?} exist already: another topology of this site is up \
         (`dvipsec-hwtest topology down SITE` removes it)"
    )))
}

/// `dvipsec` next to this program (cargo puts both in one target directory), else on PATH.
pub(super) fn firmware_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("dvipsec")))
        .filter(|candidate| candidate.exists())
        .unwrap_or_else(|| PathBuf::from("dvipsec"))
}

/// Random loss on the XCF bridge: an nftables rule in the hub namespace that drops
/// `percent` % of the frames the bridge forwards. Removed with the hub namespace.
pub fn drop_on_xcf(hub: &str, percent: u8) -> Result<(), GatewayError> {
    let ruleset = format!(
        "table bridge dvhxcf {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
         meta ibrname \"br-xcf\" numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", hub, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| GatewayError::Missing(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| GatewayError::Setup(format!("feeding nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| GatewayError::Setup(format!("nft: {e}")))?;
    if !output.status.success() {
        return Err(GatewayError::Setup(format!(
            "nft refused the XCF loss rule: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_drops_are_summed_from_the_replay_cause_only() {
        let text = "# TYPE dvipsec_drops_total counter\n\
            dvipsec_drops_total{node=\"MVS1\",stage=\"distributor\",cause=\"replay\"} 3\n\
            dvipsec_drops_total{node=\"MVS1\",stage=\"target\",cause=\"auth\"} 9\n\
            dvipsec_drops_total{node=\"MVS1\",stage=\"target\",cause=\"replay\"} 4\n\
            dvipsec_sa_replays_total{node=\"MVS1\",spi=\"0x1\"} 100\n";
        assert_eq!(replay_drops_in(text), 7);
        assert_eq!(replay_drops_in(""), 0);
    }

    #[test]
    fn the_inner_host_is_in_the_network_and_not_the_outer_address() {
        let net = Ipv4Addr::new(203, 0, 113, 0);
        let outer = Ipv4Addr::new(203, 0, 113, 10);
        assert_eq!(
            inner_host(net, 24, outer),
            Some(Ipv4Addr::new(203, 0, 113, 100))
        );
        let outer = Ipv4Addr::new(203, 0, 113, 100);
        assert_eq!(
            inner_host(net, 24, outer),
            Some(Ipv4Addr::new(203, 0, 113, 1))
        );
        // A /30 has hosts .1 and .2 only.
        let small = Ipv4Addr::new(10, 0, 0, 4);
        assert_eq!(
            inner_host(small, 30, Ipv4Addr::new(10, 0, 0, 5)),
            Some(Ipv4Addr::new(10, 0, 0, 6))
        );
        // A /32 is the one host itself.
        let host = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(inner_host(host, 32, outer), Some(host));
    }
}
