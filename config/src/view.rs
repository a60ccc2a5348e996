//! The resolved view of one node: what it owns, backs and serves, and the peers it
//! talks to. This is what a box acts on after finding its name in the site file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use crate::model::{
    Capability, CouplingFacility, DvipaConfig, Lifesize, Moveable, NatTraversal, NodeConfig,
    PortConfig, SiteConfig, SpdEntry, VipaDistribute, XcfLink,
};
use crate::values::{DestIp, IkeIdentity, PortSet};

/// One node's part of the site. Contains no secrets: peers carry only where their PSK
/// is read from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub site: String,
    pub node: String,
    pub capabilities: Vec<Capability>,
    pub xcf: Vec<IpAddr>,
    pub ports: Vec<PortConfig>,
    pub polling_cores: Vec<u32>,
    /// The node's control socket (`/run/dvipsec/NODE.sock` unless the file sets one).
    pub control_socket: PathBuf,
    /// Where the node serves Prometheus metrics; `None`: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// The DPDK crypto device that runs the data plane's ESP ciphers; `None`: software.
    pub cryptodev: Option<String>,
    /// DVIPAs this node is the primary (owner) of.
    pub owns: Vec<OwnedDvipa>,
    /// DVIPAs this node takes over when their owner fails.
    pub backs: Vec<BackedDvipa>,
    /// DVIPAs this node is a distribution target of.
    pub serves: Vec<ServedDvipa>,
    pub peers: Vec<PeerView>,
    pub coupling_facility: CouplingFacility,
    pub xcf_link: XcfLink,
    pub lifesize: Lifesize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnedDvipa {
    pub dvipa: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub moveable: Moveable,
    /// The owner moves the DVIPA home once it is back (`define.take_back`).
    pub take_back: bool,
    pub ports: PortSet,
    /// Target nodes, resolved from DESTIP.
    pub targets: Vec<String>,
    /// The backup chain, first to take over first.
    pub backups: Vec<BackupRef>,
    pub policy: Vec<SpdEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRef {
    pub node: String,
    pub rank: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackedDvipa {
    pub dvipa: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub owner: String,
    pub rank: u32,
    /// 1 if this node takes over first, 2 if second, ...
    pub takeover_order: usize,
    pub ports: PortSet,
    /// Targets once this node has taken over.
    pub targets: Vec<String>,
    pub policy: Vec<SpdEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedDvipa {
    pub dvipa: String,
    pub address: IpAddr,
    pub ports: PortSet,
    /// The distributor that forwards to this node.
    pub distributor: String,
    /// True when `distributor` is a backup: this node serves only after a takeover.
    pub standby: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerView {
    pub name: String,
    pub address: IpAddr,
    pub remote_id: IkeIdentity,
    pub local_id: IkeIdentity,
    pub nat_t: NatTraversal,
    /// Where the PSK comes from (`env:NAME` or `file:PATH`); never the PSK.
    pub psk_source: String,
    /// The DVIPAs of this node whose policy names the peer.
    pub dvipas: Vec<String>,
}

impl NodeView {
    /// The view as YAML.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }

    /// The roles this node plays, for one-line summaries.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if !self.owns.is_empty() {
            roles.push("distributor");
        }
        if !self.backs.is_empty() {
            roles.push("backup");
        }
        if !self.serves.is_empty() {
            roles.push("target");
        }
        if self.capabilities.contains(&Capability::Ike) {
            roles.push("ike");
        }
        if roles.is_empty() {
            roles.push("idle");
        }
        roles
    }

    /// One line: the node, its roles, and the DVIPAs it owns, backs and serves.
    pub fn summary(&self) -> String {
        let owns: Vec<String> = self.owns.iter().map(|o| o.dvipa.clone()).collect();
        let backs: Vec<String> = self
            .backs
            .iter()
            .map(|b| format!("{} (rank {})", b.dvipa, b.rank))
            .collect();
        let serves: Vec<String> = self
            .serves
            .iter()
            .map(|s| {
                let standby = if s.standby { "standby " } else { "" };
                format!("{} ({standby}via {})", s.dvipa, s.distributor)
            })
            .collect();
        format!(
            "{}: roles {}; owns {}; backs {}; serves {}",
            self.node,
            self.roles().join(", "),
            list_or_dash(&owns),
            list_or_dash(&backs),
            list_or_dash(&serves)
        )
    }
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// Builds the view of `node`. The configuration must have passed validation.
pub(crate) fn node_view(config: &SiteConfig, node: &NodeConfig) -> NodeView {
    let name = node.name.as_str();
    let owns: Vec<OwnedDvipa> = config
        .dvipas
        .iter()
        .filter(|d| d.owner.value == name)
        .map(|d| owned(config, d))
        .collect();
    let backs: Vec<BackedDvipa> = config
        .dvipas
        .iter()
        .filter_map(|d| backed(config, d, name))
        .collect();
    let serves: Vec<ServedDvipa> = config
        .dvipas
        .iter()
        .flat_map(|d| served(config, d, name))
        .collect();
    let peers = peers_of(config, &owns, &backs, &serves);
    NodeView {
        site: config.site.value.clone(),
        node: name.to_owned(),
        capabilities: node.capabilities.iter().map(|c| c.value).collect(),
        xcf: node.xcf.iter().map(|a| a.value).collect(),
        ports: node.ports.clone(),
        polling_cores: node.polling_cores.iter().map(|c| c.value).collect(),
        control_socket: node.control_socket(),
        metrics_listen: node.metrics.as_ref().map(|m| m.listen.value),
        cryptodev: node
            .crypto
            .as_ref()
            .filter(|c| c.provider.value == crate::model::CryptoProvider::Cryptodev)
            .and_then(|c| c.device.as_ref())
            .map(|d| d.value.clone()),
        owns,
        backs,
        serves,
        peers,
        coupling_facility: config.coupling_facility.clone(),
        xcf_link: config.xcf.clone(),
        lifesize: config.lifesize.clone(),
    }
}

fn owned(config: &SiteConfig, dvipa: &DvipaConfig) -> OwnedDvipa {
    OwnedDvipa {
        dvipa: dvipa.name.value.clone(),
        address: dvipa.define.address.value,
        prefix_len: dvipa.define.prefix_len.value,
        moveable: dvipa.define.moveable.value,
        take_back: dvipa.define.take_back.as_ref().is_some_and(|t| t.value),
        ports: distributed_ports(dvipa.distribute.as_ref()),
        targets: targets(config, dvipa.distribute.as_ref(), &dvipa.owner),
        backups: backup_chain(dvipa)
            .into_iter()
            .map(|(node, rank)| BackupRef { node, rank })
            .collect(),
        policy: dvipa.policy.clone(),
    }
}

fn backed(config: &SiteConfig, dvipa: &DvipaConfig, name: &str) -> Option<BackedDvipa> {
    let backup = dvipa.backups.iter().find(|b| b.node.value == name)?;
    let chain = backup_chain(dvipa);
    let takeover_order = chain.iter().position(|(node, _)| node == name)? + 1;
    let distribute = backup.distribute.as_ref().or(dvipa.distribute.as_ref());
    Some(BackedDvipa {
        dvipa: dvipa.name.value.clone(),
        address: dvipa.define.address.value,
        prefix_len: dvipa.define.prefix_len.value,
        owner: dvipa.owner.value.clone(),
        rank: backup.rank.value,
        takeover_order,
        ports: distributed_ports(distribute),
        targets: targets(config, distribute, name),
        policy: dvipa.policy.clone(),
    })
}

/// Backups sorted so that the one that takes over first comes first (highest rank).
fn backup_chain(dvipa: &DvipaConfig) -> Vec<(String, u32)> {
    let mut chain: Vec<(String, u32)> = dvipa
        .backups
        .iter()
        .map(|b| (b.node.value.clone(), b.rank.value))
        .collect();
    chain.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    chain
}

fn served(config: &SiteConfig, dvipa: &DvipaConfig, name: &str) -> Vec<ServedDvipa> {
    let owner_entry = (dvipa.owner.value.as_str(), dvipa.distribute.as_ref(), false);
    let backup_entries = dvipa.backups.iter().map(|b| {
        let distribute = b.distribute.as_ref().or(dvipa.distribute.as_ref());
        (b.node.value.as_str(), distribute, true)
    });
    std::iter::once(owner_entry)
        .chain(backup_entries)
        .filter(|(distributor, distribute, _)| {
            targets(config, *distribute, distributor)
                .iter()
                .any(|t| t == name)
        })
        .map(|(distributor, distribute, standby)| ServedDvipa {
            dvipa: dvipa.name.value.clone(),
            address: dvipa.define.address.value,
            ports: distributed_ports(distribute),
            distributor: distributor.to_owned(),
            standby,
        })
        .collect()
}

fn distributed_ports(distribute: Option<&VipaDistribute>) -> PortSet {
    distribute.map_or(PortSet::All, |d| d.ports.value.clone())
}

/// The target nodes of a distribution; without one, the distributor serves alone.
fn targets(
    config: &SiteConfig,
    distribute: Option<&VipaDistribute>,
    distributor: &str,
) -> Vec<String> {
    let Some(distribute) = distribute else {
        return vec![distributor.to_owned()];
    };
    let mut names: Vec<String> = Vec::new();
    let resolved: Vec<&NodeConfig> = match &distribute.destip.value {
        DestIp::All => config
            .nodes
            .iter()
            .filter(|n| n.has(Capability::Target))
            .collect(),
        DestIp::List(entries) => entries
            .iter()
            .filter_map(|entry| resolve_destip(config, entry))
            .collect(),
    };
    for node in resolved {
        if !names.contains(&node.name.value) {
            names.push(node.name.value.clone());
        }
    }
    names
}

/// A DESTIP entry is an XCF address or a node name.
fn resolve_destip<'c>(config: &'c SiteConfig, entry: &str) -> Option<&'c NodeConfig> {
    match entry.parse::<IpAddr>() {
        Ok(addr) => config
            .nodes
            .iter()
            .find(|n| n.xcf.iter().any(|x| x.value == addr)),
        Err(_) => config.nodes.iter().find(|n| n.name.value == entry),
    }
}

fn peers_of(
    config: &SiteConfig,
    owns: &[OwnedDvipa],
    backs: &[BackedDvipa],
    serves: &[ServedDvipa],
) -> Vec<PeerView> {
    let dvipa_names = owns
        .iter()
        .map(|o| o.dvipa.as_str())
        .chain(backs.iter().map(|b| b.dvipa.as_str()))
        .chain(serves.iter().map(|s| s.dvipa.as_str()));
    let mut views: Vec<PeerView> = Vec::new();
    for dvipa_name in dvipa_names {
        let Some(dvipa) = config.dvipas.iter().find(|d| d.name.value == dvipa_name) else {
            continue;
        };
        for peer_name in dvipa.policy.iter().filter_map(|e| e.peer.as_ref()) {
            add_peer(config, &mut views, peer_name, dvipa_name);
        }
    }
    views
}

fn add_peer(config: &SiteConfig, views: &mut Vec<PeerView>, peer_name: &str, dvipa: &str) {
    if let Some(view) = views.iter_mut().find(|v| v.name == peer_name) {
        if !view.dvipas.iter().any(|d| d == dvipa) {
            view.dvipas.push(dvipa.to_owned());
        }
        return;
    }
    let Some(peer) = config.peers.iter().find(|p| p.name.value == peer_name) else {
        return;
    };
    views.push(PeerView {
        name: peer.name.value.clone(),
        address: peer.address.value,
        remote_id: peer.remote_id.value.clone(),
        local_id: peer.local_id.value.clone(),
        nat_t: peer.nat_t.value,
        psk_source: peer.psk.value.to_string(),
        dvipas: vec![dvipa.to_owned()],
    });
}
