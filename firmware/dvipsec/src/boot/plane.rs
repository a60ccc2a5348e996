//! The box's data plane on its real ports: a distributor node while the box owns DVIPAs (it
//! also terminates the flows it keeps for itself), else a target node when it serves some, else
//! idle. The box switches between them when ownership moves (failover), keeping its ports.
//!
//! Ports: the port named `xcf` carries GRE to and from the other boxes (its interface holds the
//! box's XCF address); the first other port is the external one. MAC addresses of peers and of
//! the other boxes are found with ARP when the box boots, through a short-lived AF_PACKET
//! socket on each port's kernel interface.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;
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
use dvipsec_ports::{AfPacketConfig, AfPacketPort, PacketPort};

use super::facility::AttachedRegion;
use super::neighbours::{self, NeighbourError};
use super::ports::OpenPort;

/// The name of the port that carries GRE between boxes.
pub const XCF_PORT_NAME: &str = "xcf";
/// How long boot waits for ARP replies (all asked at once).
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
    /// Neither role right now: the ports wait.
    Idle(Box<(OpenPort, OpenPort)>),
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
            Plane::Idle(_) => 0,
        }
    }

    /// What an idle round may block on: the descriptors of the ports this plane reads (a
    /// distributor reads only its external port; an idle plane reads none). `None` when a port
    /// it reads has no descriptor (DPDK): then the loop must keep polling.
    pub fn readiness_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        match self {
            Plane::Distributor(node) => Some(vec![node.external_port().readiness_fd()?]),
            Plane::Target(node) => Some(vec![
                node.external_port().readiness_fd()?,
                node.xcf_port().readiness_fd()?,
            ]),
            Plane::Idle(_) => Some(Vec::new()),
        }
    }

    /// The SA table of the data path, to read.
    pub fn sa_table(&self) -> Option<&ShadowSaTable> {
        match self {
            Plane::Distributor(node) => Some(&node.sas),
            Plane::Target(node) => Some(&node.sas),
            Plane::Idle(_) => None,
        }
    }

    /// The SA table of the data path.
    pub fn sas(&mut self) -> Option<&mut ShadowSaTable> {
        match self {
            Plane::Distributor(node) => Some(&mut node.sas),
            Plane::Target(node) => Some(&mut node.sas),
            Plane::Idle(_) => None,
        }
    }

    /// Deletes the SAs with `spi` (either direction).
    pub fn delete_sa(&mut self, spi: u32) {
        if let Some(sas) = self.sas() {
            sas.delete(spi);
        }
    }

    pub fn report_lifesize(&mut self, sink: &mut dyn LifesizeSink) {
        match self {
            Plane::Distributor(node) => node.report_lifesize(sink),
            Plane::Target(node) => node.report_lifesize(sink),
            Plane::Idle(_) => {}
        }
    }

    /// Connections target applications asked for with no SA yet (seed figure 11).
    pub fn take_newconn_requests(&mut self) -> Vec<NewconnRequest> {
        match self {
            Plane::Target(node) => node.take_newconn_requests().collect(),
            _ => Vec::new(),
        }
    }

    /// The ports, whatever the role.
    pub fn into_ports(self) -> (OpenPort, OpenPort) {
        match self {
            Plane::Distributor(node) => node.into_ports(),
            Plane::Target(node) => node.into_ports(),
            Plane::Idle(ports) => *ports,
        }
    }

    /// The external port's kernel interface (for the DVIPA's address and announcements).
    pub fn external_interface(&self) -> Option<String> {
        let port = match self {
            Plane::Distributor(node) => node.external_port(),
            Plane::Target(node) => node.external_port(),
            Plane::Idle(ports) => &ports.0,
        };
        port.kernel_interface().map(str::to_owned)
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
pub fn xcf_of(site: &[NodeView], node: &str) -> Result<Ipv4Addr, PlaneError> {
    let address = site
        .iter()
        .find(|v| v.node == node)
        .and_then(|v| v.xcf.first().copied())
        .ok_or_else(|| PlaneError::NotIpv4(format!("XCF address of {node}: none")))?;
    v4(address, &format!("XCF address of {node}"))
}

/// Who the box sends frames to, found once at boot.
#[derive(Debug, Clone)]
pub struct Neighbourhood {
    pub own_xcf: Ipv4Addr,
    pub external_mac: Mac,
    pub xcf_mac: Mac,
    /// The peers' outer addresses.
    pub peers: Neighbours,
    /// The other boxes' XCF addresses.
    pub boxes: Neighbours,
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

/// Asks for the peers on the external port (ARP probes: a target must not claim the DVIPA)
/// and for every other box on the XCF port. Those that do not answer are logged and left out:
/// frames to them are dropped and counted as having no route.
fn resolve(
    view: &NodeView,
    site: &[NodeView],
    ports: &(OpenPort, OpenPort),
) -> Result<Neighbourhood, PlaneError> {
    let (external, xcf) = ports;
    let own_xcf = xcf_of(site, &view.node)?;
    let external_mac = port_mac(external)?;
    let xcf_mac = port_mac(xcf)?;
    let peer_addresses: Vec<IpAddr> = view.peers.iter().map(|p| p.address).collect();
    let peers = neighbours::resolve_all(
        &mut resolver(external)?,
        external_mac,
        Ipv4Addr::UNSPECIFIED,
        &peer_addresses,
        ARP_TIMEOUT,
    )?;
    let mut box_addresses = Vec::new();
    for other in site.iter().filter(|v| v.node != view.node) {
        box_addresses.push(IpAddr::V4(xcf_of(site, &other.node)?));
    }
    let boxes = neighbours::resolve_all(
        &mut resolver(xcf)?,
        xcf_mac,
        own_xcf,
        &box_addresses,
        ARP_TIMEOUT,
    )?;
    for missing in peer_addresses
        .iter()
        .chain(&box_addresses)
        .filter(|a| !peers.iter().chain(&boxes).any(|(b, _)| b == *a))
    {
        tracing::warn!(address = %missing, "no ARP reply: frames to it will be dropped");
    }
    for (address, mac) in peers.iter().chain(&boxes) {
        tracing::info!(%address, mac = %format_mac(*mac), "neighbour resolved");
    }
    Ok(Neighbourhood {
        own_xcf,
        external_mac,
        xcf_mac,
        peers: Neighbours::new(peers),
        boxes: Neighbours::new(boxes),
    })
}

/// The box's ports and neighbours, ready to be made a plane; `None` when the box may neither
/// own nor serve a DVIPA.
pub fn prepare(
    view: &NodeView,
    site: &[NodeView],
    ports: Vec<OpenPort>,
) -> Result<Option<(Plane, Neighbourhood)>, PlaneError> {
    let may_own = !view.owns.is_empty() || !view.backs.is_empty();
    if !may_own && view.serves.is_empty() {
        return Ok(None);
    }
    let ports = external_and_xcf(&view.ports, ports)?;
    let neighbourhood = resolve(view, site, &ports)?;
    Ok(Some((Plane::Idle(Box::new(ports)), neighbourhood)))
}

/// One DVIPA the box owns now, and its targets.
#[derive(Debug, Clone)]
pub struct OwnedNow {
    pub address: IpAddr,
    pub ports: PortSet,
    pub targets: Vec<String>,
}

/// A distributor plane for the DVIPAs the box owns now.
pub fn distributor(
    ports: (OpenPort, OpenPort),
    site: &[NodeView],
    near: &Neighbourhood,
    owned: &[OwnedNow],
    facility: AttachedRegion,
) -> Result<Plane, PlaneError> {
    let (external, xcf) = ports;
    let mut node = DistributorNode::new(
        Distributor::new(dispatch_config(site, near.own_xcf, owned)?),
        ShadowSaTable::new(),
        facility,
        external,
        xcf,
        near.xcf_mac,
        near.boxes.clone(),
        LOCAL_QUEUE,
    );
    serve_locally(&mut node, near, owned);
    Ok(Plane::Distributor(Box::new(node)))
}

/// Gives a running distributor plane a new set of owned DVIPAs: SAs stay, the DCT starts anew.
pub fn redistribute(
    node: &mut DistributorPlane,
    site: &[NodeView],
    near: &Neighbourhood,
    owned: &[OwnedNow],
) -> Result<(), PlaneError> {
    node.distributor = Distributor::new(dispatch_config(site, near.own_xcf, owned)?);
    serve_locally(node, near, owned);
    Ok(())
}

fn serve_locally(node: &mut DistributorPlane, near: &Neighbourhood, owned: &[OwnedNow]) {
    node.serve_locally(LocalService {
        config: TargetConfig {
            xcf_address: near.own_xcf,
            distributor_xcf: vec![near.own_xcf],
            dvipas: owned.iter().map(|o| o.address).collect(),
        },
        external_mac: near.external_mac,
        peers: near.peers.clone(),
        echo: true,
    });
}

/// A target plane for every DVIPA the box serves (also those it serves only after a
/// takeover): GRE is accepted from each of their possible distributors.
pub fn target(
    ports: (OpenPort, OpenPort),
    view: &NodeView,
    site: &[NodeView],
    near: &Neighbourhood,
    facility: AttachedRegion,
) -> Result<Plane, PlaneError> {
    let (external, xcf) = ports;
    let mut names: Vec<&String> = view.serves.iter().map(|s| &s.distributor).collect();
    names.sort();
    names.dedup();
    let mut links = Vec::new();
    for name in names {
        let address = xcf_of(site, name)?;
        match near.boxes.lookup(IpAddr::V4(address)) {
            Some(mac) => links.push(DistributorLink { xcf: address, mac }),
            None => tracing::warn!(distributor = %name, "no MAC: its GRE will not be accepted"),
        }
    }
    let mut dvipas: Vec<IpAddr> = view.serves.iter().map(|s| s.address).collect();
    dvipas.dedup();
    let target = Target::new(
        TargetConfig {
            xcf_address: near.own_xcf,
            distributor_xcf: links.iter().map(|l| l.xcf).collect(),
            dvipas,
        },
        facility,
    );
    let mut node = TargetNode::new(
        target,
        ShadowSaTable::new(),
        external,
        xcf,
        near.external_mac,
        near.peers.clone(),
        true,
    );
    node.set_distributor_link(&links);
    Ok(Plane::Target(Box::new(node)))
}

/// Dispatch over the owned DVIPAs' targets and listed ports, TCP and UDP.
fn dispatch_config(
    site: &[NodeView],
    own_xcf: Ipv4Addr,
    owned: &[OwnedNow],
) -> Result<DistributorConfig, PlaneError> {
    let mut names: Vec<&String> = owned.iter().flat_map(|o| &o.targets).collect();
    names.sort();
    names.dedup();
    let mut targets = Vec::new();
    for (index, name) in names.iter().enumerate() {
        targets.push(TargetInfo {
            id: TargetId(index as u16),
            xcf_address: xcf_of(site, name)?,
        });
    }
    let mut ports = Vec::new();
    for dvipa in owned {
        let serving: Vec<TargetId> = names
            .iter()
            .enumerate()
            .filter(|(_, name)| dvipa.targets.contains(name))
            .map(|(index, _)| TargetId(index as u16))
            .collect();
        let PortSet::List(list) = &dvipa.ports else {
            tracing::warn!(address = %dvipa.address, "VIPADISTRIBUTE of all ports needs a port list in boot; nothing is distributed");
            continue;
        };
        for port in list.iter().filter_map(|p| u16::try_from(**p).ok()) {
            for protocol in [6u8, 17] {
                ports.push(DistributedPort {
                    dvipa: dvipa.address,
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
