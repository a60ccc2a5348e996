//! The box's data plane on its real ports: a distributor node when the box owns DVIPAs (it also
//! terminates the flows it keeps for itself), else a target node when it serves some.
//!
//! Ports: the port named `xcf` carries GRE to and from the other boxes (its interface holds the
//! box's XCF address); the first other port is the external one. MAC addresses of peers,
//! targets and distributors are found with ARP before the loop starts, through a short-lived
//! AF_PACKET socket on the port's kernel interface.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dvipsec_config::{NodeView, PortConfig, PortSet};
use dvipsec_dataplane::dct::{DctConfig, TargetId};
use dvipsec_dataplane::distributor::{DistributedPort, Distributor, DistributorConfig, TargetInfo};
use dvipsec_dataplane::node::{
    DistributorLink, DistributorNode, LocalService, Neighbours, NewconnRequest, TargetNode,
};
use dvipsec_dataplane::poll::PollNode;
use dvipsec_dataplane::sa_table::{LifesizeSink, ShadowSaTable};
use dvipsec_dataplane::target::{Target, TargetConfig};
use dvipsec_dataplane::wire::Mac;
use dvipsec_ports::{AfPacketConfig, AfPacketPort};

use super::facility::AttachedRegion;
use super::neighbours::{self, NeighbourError};
use super::ports::OpenPort;

/// The name of the port that carries GRE between boxes.
pub const XCF_PORT_NAME: &str = "xcf";
/// How long boot waits for each ARP reply.
const ARP_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames the distributor keeps for its own stack (IKE reaches the kernel socket anyway).
const LOCAL_QUEUE: usize = 256;

pub type DistributorPlane = DistributorNode<OpenPort, ShadowSaTable, AttachedRegion>;
pub type TargetPlane = TargetNode<OpenPort, ShadowSaTable, AttachedRegion>;

/// Why the data plane could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaneError {
    #[error("the node has no external port (a port not named `{XCF_PORT_NAME}`)")]
    NoExternalPort,
    #[error("the node has no port named `{XCF_PORT_NAME}` for GRE to the other boxes")]
    NoXcfPort,
    #[error("the data plane runs XCF over IPv4; {0} is not")]
    NotIpv4(String),
    #[error(transparent)]
    Neighbour(#[from] NeighbourError),
    #[error("cannot open an ARP socket on {iface}: {source}")]
    Resolver {
        iface: String,
        #[source]
        source: dvipsec_ports::AfPacketError,
    },
    #[error("port {0}: its MAC is unknown (a DPDK device with no `iface=` kernel interface)")]
    UnknownMac(String),
}

/// The box's data plane.
pub enum Plane {
    Distributor(Box<DistributorPlane>),
    Target(Box<TargetPlane>),
}

impl Plane {
    /// One polling round; returns the frames handled.
    pub fn poll(&mut self, now_us: u64) -> usize {
        match self {
            Plane::Distributor(node) => {
                let handled = node.poll(now_us);
                // IKE reaches the box's kernel sockets, ordinary traffic its kernel stack.
                node.local_queue().clear();
                handled
            }
            Plane::Target(node) => node.poll(now_us),
        }
    }

    /// The SA table of the data path, to read.
    pub fn sa_table(&self) -> &ShadowSaTable {
        match self {
            Plane::Distributor(node) => &node.sas,
            Plane::Target(node) => &node.sas,
        }
    }

    /// The SA table of the data path.
    pub fn sas(&mut self) -> &mut ShadowSaTable {
        match self {
            Plane::Distributor(node) => &mut node.sas,
            Plane::Target(node) => &mut node.sas,
        }
    }

    pub fn report_lifesize(&mut self, sink: &mut dyn LifesizeSink) {
        match self {
            Plane::Distributor(node) => node.report_lifesize(sink),
            Plane::Target(node) => node.report_lifesize(sink),
        }
    }

    /// Connections target applications asked for with no SA yet (seed figure 11).
    pub fn take_newconn_requests(&mut self) -> Vec<NewconnRequest> {
        match self {
            Plane::Distributor(_) => Vec::new(),
            Plane::Target(node) => node.take_newconn_requests().collect(),
        }
    }
}

fn v4(address: IpAddr, what: &str) -> Result<Ipv4Addr, PlaneError> {
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(PlaneError::NotIpv4(format!("{what} {address}"))),
    }
}

/// Splits the node's ports (opened in the order of `configs`) into (external, xcf), closing
/// any others.
fn external_and_xcf(
    configs: &[PortConfig],
    ports: Vec<OpenPort>,
) -> Result<(OpenPort, OpenPort), PlaneError> {
    let mut external = None;
    let mut xcf = None;
    for (config, port) in configs.iter().zip(ports) {
        if *config.name == XCF_PORT_NAME {
            xcf.get_or_insert(port);
        } else {
            external.get_or_insert(port);
        }
    }
    Ok((
        external.ok_or(PlaneError::NoExternalPort)?,
        xcf.ok_or(PlaneError::NoXcfPort)?,
    ))
}

/// The XCF address of `node` in the site (first one, IPv4).
fn xcf_of(site: &[NodeView], node: &str) -> Result<Ipv4Addr, PlaneError> {
    let address = site
        .iter()
        .find(|v| v.node == node)
        .and_then(|v| v.xcf.first().copied())
        .ok_or_else(|| PlaneError::NotIpv4(format!("XCF address of {node}: none")))?;
    v4(address, &format!("XCF address of {node}"))
}

/// What building a plane needs to know beyond the ports.
pub struct PlaneInputs<'a> {
    pub view: &'a NodeView,
    /// Every node's view (for other boxes' XCF addresses).
    pub site: &'a [NodeView],
    pub facility: AttachedRegion,
}

/// Builds the box's plane, or `None` when it neither owns nor serves a DVIPA.
pub fn build(inputs: &PlaneInputs<'_>, ports: Vec<OpenPort>) -> Result<Option<Plane>, PlaneError> {
    let view = inputs.view;
    let serves = view.serves.iter().any(|s| !s.standby);
    if view.owns.is_empty() && !serves {
        return Ok(None);
    }
    let (external, xcf) = external_and_xcf(&view.ports, ports)?;
    let own_xcf = xcf_of(inputs.site, &view.node)?;
    let external_mac = port_mac(&external)?;
    let xcf_mac = port_mac(&xcf)?;
    if !view.owns.is_empty() {
        let peers = resolve_peers(view, &mut resolver(&external)?, external_mac, true)?;
        let targets = resolve_targets(inputs, &mut resolver(&xcf)?, xcf_mac, own_xcf)?;
        let dispatch = dispatch_config(inputs, own_xcf)?;
        let mut node = DistributorNode::new(
            Distributor::new(dispatch),
            ShadowSaTable::new(),
            inputs.facility.clone(),
            external,
            xcf,
            xcf_mac,
            targets,
            LOCAL_QUEUE,
        );
        node.serve_locally(LocalService {
            config: TargetConfig {
                xcf_address: own_xcf,
                distributor_xcf: vec![own_xcf],
                dvipas: view.owns.iter().map(|o| o.address).collect(),
            },
            external_mac,
            peers,
            echo: true,
        });
        return Ok(Some(Plane::Distributor(Box::new(node))));
    }
    let peers = resolve_peers(view, &mut resolver(&external)?, external_mac, false)?;
    let links = resolve_distributors(inputs, &mut resolver(&xcf)?, xcf_mac, own_xcf)?;
    let target = Target::new(
        TargetConfig {
            xcf_address: own_xcf,
            distributor_xcf: links.iter().map(|l| l.xcf).collect(),
            dvipas: view
                .serves
                .iter()
                .filter(|s| !s.standby)
                .map(|s| s.address)
                .collect(),
        },
        inputs.facility.clone(),
    );
    let mut node = TargetNode::new(
        target,
        ShadowSaTable::new(),
        external,
        xcf,
        external_mac,
        peers,
        true,
    );
    node.set_distributor_link(&links);
    Ok(Some(Plane::Target(Box::new(node))))
}

/// A short-lived AF_PACKET socket on the port's kernel interface for ARP: it sees what an
/// AF_XDP port leaves to the kernel (ARP among it), and works the same beside AF_PACKET and
/// DPDK vdev ports.
fn resolver(port: &OpenPort) -> Result<AfPacketPort, PlaneError> {
    let iface = port
        .kernel_interface()
        .ok_or_else(|| PlaneError::UnknownMac(port.name().to_owned()))?;
    AfPacketPort::open(&AfPacketConfig::new(iface)).map_err(|source| PlaneError::Resolver {
        iface: iface.to_owned(),
        source,
    })
}

fn port_mac(port: &OpenPort) -> Result<Mac, PlaneError> {
    let iface = port
        .kernel_interface()
        .ok_or_else(|| PlaneError::UnknownMac(port.name().to_owned()))?;
    Ok(neighbours::interface_mac(iface)?)
}

/// MACs of the peers of the DVIPAs the box owns or serves. The owner asks from the DVIPA; a
/// target only probes (it must not announce the DVIPA). A silent peer is logged and left out:
/// packets to it are then dropped and counted as having no route.
fn resolve_peers(
    view: &NodeView,
    port: &mut AfPacketPort,
    own_mac: Mac,
    owner: bool,
) -> Result<Neighbours, PlaneError> {
    let mut entries = Vec::new();
    for peer in &view.peers {
        let sender = if owner {
            view.owns
                .iter()
                .find(|o| peer.dvipas.contains(&o.dvipa))
                .and_then(|o| match o.address {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .unwrap_or(Ipv4Addr::UNSPECIFIED)
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        match neighbours::resolve(port, own_mac, sender, peer.address, ARP_TIMEOUT) {
            Ok(mac) => {
                tracing::info!(peer = %peer.name, address = %peer.address, mac = %format_mac(mac), "peer resolved");
                entries.push((peer.address, mac));
            }
            Err(error) => tracing::warn!(peer = %peer.name, "{error}"),
        }
    }
    Ok(Neighbours::new(entries))
}

/// MACs of the owned DVIPAs' targets on the XCF network (the box itself needs none).
fn resolve_targets(
    inputs: &PlaneInputs<'_>,
    port: &mut AfPacketPort,
    own_mac: Mac,
    own_xcf: Ipv4Addr,
) -> Result<Neighbours, PlaneError> {
    let mut names: Vec<&String> = inputs.view.owns.iter().flat_map(|o| &o.targets).collect();
    names.sort();
    names.dedup();
    let mut entries = Vec::new();
    for name in names {
        let address = xcf_of(inputs.site, name)?;
        if address == own_xcf {
            continue;
        }
        let mac = neighbours::resolve(port, own_mac, own_xcf, address.into(), ARP_TIMEOUT);
        match mac {
            Ok(mac) => entries.push((IpAddr::V4(address), mac)),
            Err(error) => tracing::warn!(target_node = %name, "{error}"),
        }
    }
    Ok(Neighbours::new(entries))
}

/// The links to the distributors of the DVIPAs the box serves: their XCF address and MAC.
fn resolve_distributors(
    inputs: &PlaneInputs<'_>,
    port: &mut AfPacketPort,
    own_mac: Mac,
    own_xcf: Ipv4Addr,
) -> Result<Vec<DistributorLink>, PlaneError> {
    let mut names: Vec<&String> = inputs
        .view
        .serves
        .iter()
        .filter(|s| !s.standby)
        .map(|s| &s.distributor)
        .collect();
    names.sort();
    names.dedup();
    let mut links = Vec::new();
    for name in names {
        let address = xcf_of(inputs.site, name)?;
        let mac = neighbours::resolve(port, own_mac, own_xcf, address.into(), ARP_TIMEOUT)?;
        links.push(DistributorLink { xcf: address, mac });
    }
    Ok(links)
}

/// Dispatch over the owned DVIPAs' targets and listed ports, TCP and UDP.
fn dispatch_config(
    inputs: &PlaneInputs<'_>,
    own_xcf: Ipv4Addr,
) -> Result<DistributorConfig, PlaneError> {
    let mut names: Vec<&String> = inputs.view.owns.iter().flat_map(|o| &o.targets).collect();
    names.sort();
    names.dedup();
    let mut targets = Vec::new();
    for (index, name) in names.iter().enumerate() {
        targets.push(TargetInfo {
            id: TargetId(index as u16),
            xcf_address: xcf_of(inputs.site, name)?,
        });
    }
    let mut ports = Vec::new();
    for owned in &inputs.view.owns {
        let serving: Vec<TargetId> = names
            .iter()
            .enumerate()
            .filter(|(_, name)| owned.targets.contains(name))
            .map(|(index, _)| TargetId(index as u16))
            .collect();
        let PortSet::List(list) = &owned.ports else {
            tracing::warn!(dvipa = %owned.dvipa, "VIPADISTRIBUTE of all ports needs a port list in boot; nothing is distributed");
            continue;
        };
        for port in list.iter().filter_map(|p| u16::try_from(**p).ok()) {
            for protocol in [6u8, 17] {
                ports.push(DistributedPort {
                    dvipa: owned.address,
                    protocol,
                    port,
                    targets: serving.clone(),
                });
            }
        }
    }
    Ok(DistributorConfig {
        xcf_address: own_xcf,
        targets,
        ports,
        dct: DctConfig::default(),
        load_stale_after_us: 10_000_000,
        distribute_udp: true,
    })
}

pub fn format_mac(mac: Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
