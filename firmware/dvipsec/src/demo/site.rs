//! The figure-4 site in one process: every distributor and target of the configuration, the CF
//! region, the XCF cluster link between their cores, the data plane on in-memory switches, and
//! one remote peer per DVIPA. [`Site::round`] runs every box once (single-threaded, in a fixed
//! order, so runs are deterministic apart from IKE's random keys and SPIs).

use super::convert::{child_pair, peer_sas};
use super::facility::{CfOps, CountingFacility};
use super::ike::{KeyExchange, Parties};
use crate::boot::child::{data_plane_sa, data_plane_selector};
use crate::lifesize_sink::CfAndCoreSink;
use dvipsec_cf::{LeasePolicy, Region, RegionOwner, SlotId};
use dvipsec_cluster::cf::CfSlots;
use dvipsec_cluster::sim::Network;
use dvipsec_cluster::wire::{SaRef, WireDirection};
use dvipsec_cluster::{DistributorEvent, IkeEvent, LinkSecurity, TargetEvent};
use dvipsec_config::NodeView;
use dvipsec_dataplane::app::SocketId;
use dvipsec_dataplane::dct::{DctConfig, TargetId};
use dvipsec_dataplane::distributor::{DistributedPort, Distributor, DistributorConfig, TargetInfo};
use dvipsec_dataplane::node::SendStatus;
use dvipsec_dataplane::node::{DistributorLink, DistributorNode, Neighbours, TargetNode};
use dvipsec_dataplane::peer::ScriptedPeer;
use dvipsec_dataplane::poll::PollNode;
use dvipsec_dataplane::sa_table::ShadowSaTable;
use dvipsec_dataplane::target::{Target, TargetConfig};
use dvipsec_dataplane::wire::Mac;
use dvipsec_ike::{ChildSaInstalled, Event};
use dvipsec_ports::{FabricConfig, FabricPort, SwitchBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The built-in echo service's port.
pub const ECHO_PORT: u16 = dvipsec_dataplane::app::ECHO_PORT;
/// CF slots in the region (two per child SA, released on delete).
const CF_SLOTS: u32 = 256;
/// UDP flows each peer keeps open to its DVIPA.
const FLOWS_PER_PEER: u16 = 16;
/// Datagrams each peer sends per round.
const SENDS_PER_ROUND: u16 = 4;
/// The port of the application on a target that opens a connection to a peer (NEWCONN).
const NEWCONN_PORT: u16 = 7000;
/// How often targets hand their counts to the cluster core (simulated time).
const LIFESIZE_INTERVAL: Duration = Duration::from_millis(10);

/// Why the site could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    #[error("the configuration has no {0}")]
    Missing(String),
    #[error("fabric: {0}")]
    Fabric(#[from] dvipsec_ports::FabricError),
    #[error("coupling facility: {0}")]
    Facility(#[from] dvipsec_cf::CfError),
    #[error("IKE: {0}")]
    Ike(#[from] dvipsec_ike::IkeError),
    #[error("IKE crypto: {0}")]
    IkeCrypto(#[from] dvipsec_ike::CryptoError),
    #[error("ESP: {0}")]
    Esp(#[from] dvipsec_esp::SaError),
    #[error("{0} is an IPv6 XCF address; the demo's data plane runs XCF over IPv4")]
    Ipv6Xcf(IpAddr),
    #[error("the demo lays out at most {0} DVIPAs and {0} targets")]
    TooLarge(usize),
    #[error("the target application's socket: {0}")]
    Bind(#[from] dvipsec_dataplane::app::BindError),
    #[error("the target application's first datagram: {0}")]
    Send(#[from] dvipsec_dataplane::node::SendError),
}

type TargetPlane = TargetNode<FabricPort, ShadowSaTable, CountingFacility>;
type DistributorPlane = DistributorNode<FabricPort, ShadowSaTable, CountingFacility>;

/// A target box: its cluster core and one data plane taking GRE from every distributor whose
/// DVIPAs it serves.
pub struct TargetBox {
    pub name: String,
    pub core: dvipsec_cluster::Target,
    /// (name, address) of the DVIPAs the box serves.
    pub dvipas: Vec<(String, IpAddr)>,
    pub node: TargetPlane,
}

pub struct DistributorBox {
    pub name: String,
    pub core: dvipsec_cluster::Distributor,
    pub node: DistributorPlane,
}

/// A child SA on its way to the targets. Until every target holds both halves, the peer keeps
/// the SA it had (none at first); the cluster core keeps the SAs a rekey replaces until their
/// replacements are everywhere (make before break), so no packet meets a half-installed pair or
/// a released CF slot.
struct PendingSwitch {
    /// SAs not yet acknowledged by every target.
    waiting: Vec<SaRef>,
    /// The outbound SPI of the child this one replaces (the peer's inbound SA).
    old_outbound: Option<u32>,
}

/// Who opens the first connection of a DVIPA's peer.
#[derive(Debug, Clone, Copy)]
enum Opener {
    /// The peer negotiates and sends to the DVIPA's echo service.
    Peer,
    /// An application on a target sends to the peer first (seed figure 11): NEWCONN makes the
    /// distributor negotiate; the peer sends once the SA is distributed.
    Target { target: usize, socket: SocketId },
}

/// One DVIPA's remote peer and its negotiation with the DVIPA's distributor.
pub struct DvipaPeer {
    pub dvipa: String,
    pub address: IpAddr,
    pub distributor: String,
    pub inner: IpAddr,
    pub peer: ScriptedPeer<FabricPort>,
    /// Distinct (source, destination) UDP flows the peer opened.
    pub connections: BTreeSet<(SocketAddr, SocketAddr)>,
    keys: KeyExchange,
    opener: Opener,
    /// The distributor side's current child SA: (inbound SPI, outbound SPI).
    current: Option<(u32, u32)>,
    rekey_asked: bool,
    pending_switches: Vec<PendingSwitch>,
    /// SPIs of children a rekey replaced (their IKE delete needs no cluster delete).
    retired: Vec<u32>,
    next_flow: u16,
    /// Rekeys of this DVIPA's child SAs.
    pub rekeys: u64,
}

impl DvipaPeer {
    /// The key managers of this DVIPA and its peer.
    pub fn key_exchange(&self) -> &KeyExchange {
        &self.keys
    }
}

/// Site-wide counts the summary shows besides the boxes' own.
#[derive(Debug, Default, Clone, Copy)]
pub struct SiteCounters {
    pub rekeys: u64,
    pub child_sas: u64,
    pub hard_limits: u64,
    /// Inputs a core refused (cluster link, IKE, SA building); each is also logged.
    pub errors: u64,
    /// Lifesize counts the cluster target refused (SA already deleted there).
    pub lifesize_refused: u64,
    /// NEWCONN requests targets sent, and connections they released or gave up.
    pub newconn_requests: u64,
    pub newconn_released: u64,
    pub newconn_failed: u64,
}

pub struct Site {
    pub distributors: Vec<DistributorBox>,
    pub targets: Vec<TargetBox>,
    pub peers: Vec<DvipaPeer>,
    pub numbers_issued: Arc<AtomicU64>,
    pub counters: SiteCounters,
    region: Arc<RegionOwner>,
    cf_ops: BTreeMap<String, Arc<CfOps>>,
    xcf: Network,
    start: Instant,
    now: Duration,
    last_lifesize: Duration,
}

fn mac(kind: u8, a: usize, b: usize) -> Mac {
    [2, 0, kind, a as u8, b as u8, 1]
}

fn xcf_address(views: &[NodeView], node: &str) -> Result<Ipv4Addr, SiteError> {
    let view = views
        .iter()
        .find(|v| v.node == node)
        .ok_or_else(|| SiteError::Missing(format!("node {node}")))?;
    match view.xcf.first() {
        Some(IpAddr::V4(v4)) => Ok(*v4),
        Some(other) => Err(SiteError::Ipv6Xcf(*other)),
        None => Err(SiteError::Missing(format!("XCF address of {node}"))),
    }
}

/// What the builder knows about each DVIPA: its owner, address, peer and serving targets.
struct DvipaPlan {
    name: String,
    address: IpAddr,
    owner: String,
    peer_outer: IpAddr,
    targets: Vec<String>,
}

fn plan(views: &[NodeView]) -> Result<Vec<DvipaPlan>, SiteError> {
    let mut plans = Vec::new();
    for view in views {
        for owned in &view.owns {
            let peer = view
                .peers
                .iter()
                .find(|p| p.dvipas.contains(&owned.dvipa))
                .ok_or_else(|| SiteError::Missing(format!("IKE peer for {}", owned.dvipa)))?;
            plans.push(DvipaPlan {
                name: owned.dvipa.clone(),
                address: owned.address,
                owner: view.node.clone(),
                peer_outer: peer.address,
                targets: owned.targets.clone(),
            });
        }
    }
    if plans.is_empty() {
        return Err(SiteError::Missing("distributed DVIPA".into()));
    }
    Ok(plans)
}

/// The switch ports of the site, by name.
struct Ports(BTreeMap<String, FabricPort>);

impl Ports {
    fn build(fabric: FabricConfig, names: &[(String, Mac)]) -> Result<Ports, SiteError> {
        let mut builder = SwitchBuilder::new(fabric);
        for (name, mac) in names {
            builder = builder.port(name, *mac)?;
        }
        let names = names.iter().map(|(n, _)| n.clone());
        Ok(Ports(names.zip(builder.build()?).collect()))
    }

    fn take(&mut self, name: &str) -> Result<FabricPort, SiteError> {
        self.0
            .remove(name)
            .ok_or_else(|| SiteError::Missing(format!("switch port {name}")))
    }
}

/// The targets each distributor node forwards to: (box, index of the box).
fn serving_boxes(plans: &[DvipaPlan], owner: &str, boxes: &[String]) -> Vec<(String, usize)> {
    boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            plans
                .iter()
                .any(|p| p.owner == owner && p.targets.contains(b))
        })
        .map(|(i, b)| (b.clone(), i))
        .collect()
}

/// The most DVIPAs or boxes the demo lays out (MAC addresses and inner addresses number them in
/// one byte).
const MAX_ITEMS: usize = 200;

/// Builds the site's boxes from the plan, taking switch ports by name.
struct Builder<'v> {
    views: &'v [NodeView],
    plans: Vec<DvipaPlan>,
    owners: Vec<String>,
    boxes: Vec<String>,
    external: Ports,
    xcf: Ports,
    facility: CountingFacility,
    /// CF operations of each box, by node name (a node's distributor and target share one).
    cf_ops: BTreeMap<String, Arc<CfOps>>,
    peer_macs: Neighbours,
    incarnation: u64,
}

impl<'v> Builder<'v> {
    fn new(views: &'v [NodeView], facility: CountingFacility) -> Result<Builder<'v>, SiteError> {
        let plans = plan(views)?;
        let mut owners: Vec<String> = Vec::new();
        for plan in &plans {
            if !owners.contains(&plan.owner) {
                owners.push(plan.owner.clone());
            }
        }
        let boxes: Vec<String> = views
            .iter()
            .filter(|v| v.serves.iter().any(|s| !s.standby))
            .map(|v| v.node.clone())
            .collect();
        if plans.len() > MAX_ITEMS || boxes.len() > MAX_ITEMS {
            return Err(SiteError::TooLarge(MAX_ITEMS));
        }
        let (external_names, xcf_names) = port_names(&plans, &owners, &boxes);
        let fabric = FabricConfig::esp_default();
        let peer_macs = Neighbours::new(
            plans
                .iter()
                .enumerate()
                .map(|(p, plan)| (plan.peer_outer, mac(1, p, 0)))
                .collect(),
        );
        Ok(Builder {
            views,
            external: Ports::build(fabric, &external_names)?,
            xcf: Ports::build(fabric, &xcf_names)?,
            plans,
            owners,
            boxes,
            facility,
            cf_ops: BTreeMap::new(),
            peer_macs,
            incarnation: 0,
        })
    }

    fn view(&self, node: &str) -> Result<&'v NodeView, SiteError> {
        self.views
            .iter()
            .find(|v| v.node == node)
            .ok_or_else(|| SiteError::Missing(format!("node {node}")))
    }

    /// The CF handle of node `name`'s boxes.
    fn facility_of(&mut self, name: &str) -> CountingFacility {
        let ops = self.cf_ops.entry(name.to_owned()).or_default().clone();
        self.facility.counting_into(ops)
    }

    fn next_incarnation(&mut self) -> u64 {
        self.incarnation += 1;
        self.incarnation
    }

    /// The data plane of box `t` (named `name`): it serves the DVIPAs listed for it and takes
    /// GRE from each of their distributors.
    fn target_plane(
        &mut self,
        t: usize,
        name: &str,
    ) -> Result<(Vec<(String, IpAddr)>, TargetPlane), SiteError> {
        let served: Vec<&DvipaPlan> = self
            .plans
            .iter()
            .filter(|p| p.targets.iter().any(|n| n == name))
            .collect();
        let dvipas: Vec<(String, IpAddr)> =
            served.iter().map(|p| (p.name.clone(), p.address)).collect();
        let mut links: Vec<DistributorLink> = Vec::new();
        for (d, owner) in self.owners.iter().enumerate() {
            if served.iter().any(|p| p.owner == *owner) {
                let xcf = xcf_address(self.views, owner)?;
                links.push(DistributorLink {
                    xcf,
                    mac: mac(3, d, 0),
                });
            }
        }
        let target = Target::new(
            TargetConfig {
                xcf_address: xcf_address(self.views, name)?,
                distributor_xcf: links.iter().map(|l| l.xcf).collect(),
                dvipas: dvipas.iter().map(|(_, a)| *a).collect(),
            },
            self.facility_of(name),
        );
        let mut node = TargetNode::new(
            target,
            ShadowSaTable::new(),
            self.external.take(&format!("t{t}-ext"))?,
            self.xcf.take(&format!("t{t}-xcf"))?,
            mac(4, t, 0),
            self.peer_macs.clone(),
            true,
        );
        node.set_distributor_link(&links);
        Ok((dvipas, node))
    }

    /// The data-plane dispatch configuration of distributor `d` over its `serving` boxes.
    fn dispatch_config(
        &self,
        d: usize,
        serving: &[(String, usize)],
    ) -> Result<DistributorConfig, SiteError> {
        let owner = &self.owners[d];
        let mut targets = Vec::new();
        for (k, (name, _)) in serving.iter().enumerate() {
            targets.push(TargetInfo {
                id: TargetId(k as u16),
                xcf_address: xcf_address(self.views, name)?,
            });
        }
        let ports = self
            .plans
            .iter()
            .filter(|p| p.owner == *owner)
            .map(|p| DistributedPort {
                dvipa: p.address,
                protocol: 17,
                port: ECHO_PORT,
                targets: serving
                    .iter()
                    .enumerate()
                    .filter(|(_, (name, _))| p.targets.contains(name))
                    .map(|(k, _)| TargetId(k as u16))
                    .collect(),
            })
            .collect();
        Ok(DistributorConfig {
            xcf_address: xcf_address(self.views, owner)?,
            targets,
            ports,
            dct: DctConfig::default(),
            load_stale_after_us: 10_000_000,
            distribute_udp: true,
        })
    }

    /// Distributor `d`: its data plane and cluster core.
    fn distributor(
        &mut self,
        d: usize,
        region: &Arc<RegionOwner>,
    ) -> Result<DistributorBox, SiteError> {
        let owner = self.owners[d].clone();
        let serving = serving_boxes(&self.plans, &owner, &self.boxes);
        let mut target_macs = Vec::new();
        for (name, t) in &serving {
            target_macs.push((IpAddr::V4(xcf_address(self.views, name)?), mac(5, *t, 0)));
        }
        let node = DistributorNode::new(
            Distributor::new(self.dispatch_config(d, &serving)?),
            ShadowSaTable::new(),
            self.facility_of(&owner),
            self.external.take(&format!("dist{d}-ext"))?,
            self.xcf.take(&format!("dist{d}-xcf"))?,
            mac(3, d, 0),
            Neighbours::new(target_macs),
            256,
        );
        let core = dvipsec_cluster::Distributor::new(
            self.view(&owner)?,
            self.next_incarnation(),
            LinkSecurity::Trusted,
            Box::new(CfSlots::new(region.clone())),
            Duration::ZERO,
        );
        Ok(DistributorBox {
            name: owner,
            core,
            node,
        })
    }

    fn target(&mut self, t: usize, name: &str) -> Result<TargetBox, SiteError> {
        let (dvipas, node) = self.target_plane(t, name)?;
        let core = dvipsec_cluster::Target::new(
            self.view(name)?,
            self.next_incarnation(),
            LinkSecurity::Trusted,
            Duration::ZERO,
        );
        Ok(TargetBox {
            name: name.to_owned(),
            core,
            dvipas,
            node,
        })
    }

    /// The remote peer of DVIPA `p`, whose inner host is 10.(p+1).0.1.
    fn peer(&mut self, p: usize) -> Result<DvipaPeer, SiteError> {
        let plan = &self.plans[p];
        let d = self
            .owners
            .iter()
            .position(|o| *o == plan.owner)
            .ok_or_else(|| SiteError::Missing(format!("distributor {}", plan.owner)))?;
        let inner = IpAddr::V4(Ipv4Addr::new(10, (p + 1) as u8, 0, 1));
        let keys = KeyExchange::new(&Parties {
            peer_outer: plan.peer_outer,
            peer_inner: inner,
            dvipa: plan.address,
            dvipa_name: plan.name.clone(),
        })?;
        let (dvipa, address, distributor) = (plan.name.clone(), plan.address, plan.owner.clone());
        let port = self.external.take(&format!("peer{p}"))?;
        Ok(DvipaPeer {
            dvipa,
            address,
            distributor,
            inner,
            peer: remote_peer(port, mac(1, p, 0), mac(2, d, 0)),
            connections: BTreeSet::new(),
            keys,
            opener: Opener::Peer,
            current: None,
            rekey_asked: false,
            pending_switches: Vec::new(),
            retired: Vec::new(),
            next_flow: 0,
            rekeys: 0,
        })
    }
}

/// A DVIPA's remote peer: no SA until IKE gives it one; it keeps counts, not datagrams.
fn remote_peer(port: FabricPort, mac: Mac, gateway_mac: Mac) -> ScriptedPeer<FabricPort> {
    let mut peer = ScriptedPeer::unkeyed(port, mac, gateway_mac);
    peer.keep_received = false;
    peer
}

/// Switch ports to make: (name, MAC).
type PortNames = Vec<(String, Mac)>;

/// Names and MACs of the external and XCF switch ports.
fn port_names(plans: &[DvipaPlan], owners: &[String], boxes: &[String]) -> (PortNames, PortNames) {
    let mut external = Vec::new();
    let mut xcf = Vec::new();
    for p in 0..plans.len() {
        external.push((format!("peer{p}"), mac(1, p, 0)));
    }
    for d in 0..owners.len() {
        external.push((format!("dist{d}-ext"), mac(2, d, 0)));
        xcf.push((format!("dist{d}-xcf"), mac(3, d, 0)));
    }
    for t in 0..boxes.len() {
        external.push((format!("t{t}-ext"), mac(4, t, 0)));
        xcf.push((format!("t{t}-xcf"), mac(5, t, 0)));
    }
    (external, xcf)
}

impl Site {
    /// Builds the site of `views`; the CF region file is created at `cf_path`.
    pub fn new(views: &[NodeView], cf_path: &Path, start: Instant) -> Result<Site, SiteError> {
        let region = Arc::new(RegionOwner::create(cf_path, CF_SLOTS)?);
        let numbers_issued = Arc::new(AtomicU64::new(0));
        let facility = CountingFacility::new(region.region().clone(), numbers_issued.clone());
        let mut builder = Builder::new(views, facility)?;
        let distributors = (0..builder.owners.len())
            .map(|d| builder.distributor(d, &region))
            .collect::<Result<Vec<_>, _>>()?;
        let mut targets = Vec::new();
        for (t, name) in builder.boxes.clone().iter().enumerate() {
            targets.push(builder.target(t, name)?);
        }
        let mut peers = (0..builder.plans.len())
            .map(|p| builder.peer(p))
            .collect::<Result<Vec<_>, _>>()?;
        // Every DVIPA after the first starts with a target-originated connection.
        for peer in peers.iter_mut().skip(1) {
            peer.opener =
                newconn_opener(&mut targets, &peer.dvipa, &peer.distributor, peer.address)?;
        }
        Ok(Site {
            distributors,
            targets,
            peers,
            numbers_issued,
            counters: SiteCounters::default(),
            region,
            cf_ops: builder.cf_ops,
            xcf: Network::new(1, 0, Duration::from_millis(1)),
            start,
            now: Duration::ZERO,
            last_lifesize: Duration::ZERO,
        })
    }

    /// Whether `peer`'s first connection is opened by a target (NEWCONN) rather than the peer.
    pub fn opened_by_target(peer: &DvipaPeer) -> bool {
        matches!(peer.opener, Opener::Target { .. })
    }

    /// Simulated time since the site started.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// CF operations of node `name`'s boxes, by kind (none for a node the site does not run).
    pub fn cf_operations(&self, name: &str) -> Vec<(String, u64)> {
        self.cf_ops
            .get(name)
            .map(|ops| ops.counts())
            .unwrap_or_default()
    }

    /// The CF region every box shares.
    pub fn region(&self) -> &Region {
        self.region.region()
    }

    /// Starts every DVIPA's first connection: the peer negotiates, or a target's application
    /// sends to the peer and waits for NEWCONN.
    pub fn start(&mut self) -> Result<(), SiteError> {
        let now = self.start + self.now;
        for peer in &mut self.peers {
            match peer.opener {
                Opener::Peer => peer.keys.initiate_from_peer(now)?,
                Opener::Target { target, socket } => {
                    let to = SocketAddr::new(peer.inner, NEWCONN_PORT);
                    let node = self
                        .targets
                        .get_mut(target)
                        .map(|t| &mut t.node)
                        .ok_or_else(|| SiteError::Missing("NEWCONN target".into()))?;
                    let status = node.send_to(socket, to, b"hello from a target", 0)?;
                    if status != SendStatus::AwaitingSa {
                        self.counters.errors += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// One round of every box, then simulated time moves on by a millisecond.
    pub fn round(&mut self) {
        self.run_ike();
        self.send_traffic();
        self.run_data_plane();
        self.forward_newconn_requests();
        if self.now >= self.last_lifesize + LIFESIZE_INTERVAL {
            self.report_lifesize();
            self.last_lifesize = self.now;
        }
        self.run_cluster_link();
        self.now += Duration::from_millis(1);
    }

    fn run_ike(&mut self) {
        let now = self.start + self.now;
        for index in 0..self.peers.len() {
            let events = self.peers[index].keys.pump(now);
            for event in events.peer {
                self.on_peer_event(index, event);
            }
            for event in events.distributor {
                self.on_distributor_ike_event(index, event);
            }
        }
    }

    fn on_peer_event(&mut self, index: usize, event: Event) {
        let peer = &mut self.peers[index];
        let child = match event {
            Event::ChildSaInstalled(child) => child,
            Event::ChildSaRekeyed { new, .. } => new,
            _ => return,
        };
        match peer_sas(&child) {
            // The peer sends on it once every target holds it (see `on_distributed`).
            Ok(Some((outbound, inbound))) => peer.peer.stage(outbound, inbound),
            Ok(None) | Err(_) => self.counters.errors += 1,
        }
    }

    fn on_distributor_ike_event(&mut self, index: usize, event: Event) {
        match event {
            Event::ChildSaInstalled(child) => self.distribute_child(index, &child, None),
            Event::ChildSaRekeyed {
                old_inbound_spi,
                old_outbound_spi,
                new,
            } => self.distribute_child(index, &new, Some((old_inbound_spi, old_outbound_spi))),
            Event::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                ..
            } => self.delete_child(index, inbound_spi, outbound_spi),
            _ => {}
        }
    }

    /// The distributor's responder installed `child` (replacing `old`): hand it to the cluster
    /// core, which gives it CF slots and sends SA_INSTALL to the DVIPA's targets.
    fn distribute_child(
        &mut self,
        index: usize,
        child: &ChildSaInstalled,
        old: Option<(u32, u32)>,
    ) {
        let now = self.now;
        let peer = &mut self.peers[index];
        let Some(pair) = child_pair(&peer.dvipa, child) else {
            self.counters.errors += 1;
            return;
        };
        let Some(dist) = distributor_named(&mut self.distributors, &peer.distributor) else {
            self.counters.errors += 1;
            return;
        };
        if let Some((old_in, old_out)) = old {
            self.counters.rekeys += 1;
            peer.rekeys += 1;
            peer.retired.extend([old_in, old_out]);
        }

        let new_inbound = pair.inbound.sa_ref();
        let waiting = vec![new_inbound.clone(), pair.outbound.sa_ref()];
        // Outbound first: the old inbound SA (the one the peer still sends on) is retired no
        // earlier than the new outbound one is everywhere.
        for (direction, install) in [
            (WireDirection::Outbound, &pair.outbound),
            (WireDirection::Inbound, &pair.inbound),
        ] {
            let new = Box::new(install.clone());
            let event = match old {
                Some((old_in, old_out)) => IkeEvent::Rekeyed {
                    old: SaRef {
                        dvipa: peer.dvipa.clone(),
                        direction,
                        spi: match direction {
                            WireDirection::Inbound => old_in,
                            WireDirection::Outbound => old_out,
                        },
                    },
                    new,
                },
                None => IkeEvent::Installed(new),
            };
            if dist.core.handle_ike(event, now).is_err() {
                self.counters.errors += 1;
            } else {
                security_event("SA installed", &dist.name, peer, direction, install.spi);
            }
        }
        self.counters.child_sas += 1;
        peer.current = Some((child.inbound_spi, child.outbound_spi));
        peer.rekey_asked = false;
        peer.pending_switches.push(PendingSwitch {
            waiting,
            old_outbound: old.map(|(_, old_out)| old_out),
        });
        // The distributor's own data path needs the inbound SA (with its CF slot) to peek.
        let stored = dist
            .core
            .sas(&peer.dvipa)
            .into_iter()
            .find(|s| s.sa_ref() == new_inbound)
            .cloned();
        match stored.map(|install| (data_plane_sa(&install, None), install)) {
            Some((Ok(sa), install)) => match data_plane_selector(&install) {
                Some(selector) => dist.node.sas.install_inbound(
                    sa,
                    peer.address,
                    install.peer,
                    selector,
                    SlotId(install.cf_slot),
                ),
                None => self.counters.errors += 1,
            },
            _ => self.counters.errors += 1,
        }
    }

    /// The responder deleted a child SA. Old halves of a rekey are already gone from the cluster
    /// (the rekey replaced them); anything else is deleted now.
    fn delete_child(&mut self, index: usize, inbound_spi: u32, outbound_spi: u32) {
        let now = self.now;
        let peer = &mut self.peers[index];
        if peer.retired.contains(&inbound_spi) {
            peer.retired
                .retain(|s| *s != inbound_spi && *s != outbound_spi);
            return;
        }
        let Some(dist) = distributor_named(&mut self.distributors, &peer.distributor) else {
            return;
        };
        for (direction, spi) in [
            (WireDirection::Inbound, inbound_spi),
            (WireDirection::Outbound, outbound_spi),
        ] {
            let sa = SaRef {
                dvipa: peer.dvipa.clone(),
                direction,
                spi,
            };
            if dist.core.handle_ike(IkeEvent::Deleted(sa), now).is_err() {
                self.counters.errors += 1;
            } else {
                security_event("SA deleted", &dist.name, peer, direction, spi);
            }
        }
        dist.node.sas.delete(inbound_spi);
        peer.peer.remove_inbound(outbound_spi);
    }

    fn send_traffic(&mut self) {
        for peer in &mut self.peers {
            if !peer.peer.has_outbound() {
                continue;
            }
            for _ in 0..SENDS_PER_ROUND {
                let flow = peer.next_flow % FLOWS_PER_PEER;
                peer.next_flow = peer.next_flow.wrapping_add(1);
                let src = SocketAddr::new(peer.inner, 40_000 + flow);
                let dst = SocketAddr::new(peer.address, ECHO_PORT);
                if peer.peer.send_udp(src, dst, b"hello from the demo peer") {
                    peer.connections.insert((src, dst));
                }
            }
        }
    }

    fn run_data_plane(&mut self) {
        let now_us = u64::try_from(self.now.as_micros()).unwrap_or(u64::MAX);
        for peer in &mut self.peers {
            peer.peer.flush();
        }
        for dist in &mut self.distributors {
            dist.node.poll(now_us);
        }
        for target in &mut self.targets {
            target.node.poll(now_us);
        }
        for peer in &mut self.peers {
            peer.peer.poll_rx();
        }
    }

    /// Figure 11: packets a target's application sent with no SA wait in the data plane; the
    /// cluster core asks the distributor for an SA (NEWCONN).
    fn forward_newconn_requests(&mut self) {
        let now = self.now;
        for target in &mut self.targets {
            let requests: Vec<_> = target.node.take_newconn_requests().collect();
            for request in requests {
                let flow = dvipsec_cluster::wire::Flow {
                    local: request.local,
                    remote: request.remote,
                    protocol: request.protocol,
                    local_port: request.local_port,
                    remote_port: request.remote_port,
                };
                match target.core.open_connection(flow, now) {
                    Ok(dvipsec_cluster::ConnStart::Pending { .. }) => {
                        self.counters.newconn_requests += 1
                    }
                    Ok(dvipsec_cluster::ConnStart::Ready(_)) => {}
                    Err(_) => self.counters.errors += 1,
                }
            }
        }
    }

    fn report_lifesize(&mut self) {
        let facility = self.region.region();
        for target in &mut self.targets {
            let mut sink = CfAndCoreSink::new(facility, &mut target.core, &target.dvipas);
            target.node.report_lifesize(&mut sink);
            self.counters.lifesize_refused += sink.refused_by_core() + sink.refused_by_cf();
        }
    }

    fn run_cluster_link(&mut self) {
        let now = self.now;
        for dist in &mut self.distributors {
            while let Some(t) = dist.core.poll_transmit(now) {
                let from = format!("{}/d", dist.name);
                self.xcf.send(&from, &format!("{}/t", t.to), t.bytes, now);
            }
        }
        for target in &mut self.targets {
            target.core.handle_timeout(now);
            while let Some(t) = target.core.poll_transmit(now) {
                let from = format!("{}/t", target.name);
                self.xcf.send(&from, &format!("{}/d", t.to), t.bytes, now);
            }
        }
        for frame in self.xcf.arrivals(now) {
            let from = frame.from.split('/').next().unwrap_or_default();
            let handled = match frame.to.split_once('/') {
                Some((to, "d")) => distributor_named(&mut self.distributors, to)
                    .map(|d| d.core.handle(from, &frame.bytes, now).is_ok()),
                Some((to, _)) => self
                    .targets
                    .iter_mut()
                    .find(|t| t.name == to)
                    .map(|t| t.core.handle(from, &frame.bytes, now).is_ok()),
                None => None,
            };
            if handled != Some(true) {
                self.counters.errors += 1;
            }
        }
        self.take_cluster_events();
    }

    fn take_cluster_events(&mut self) {
        let mut distributor_events = Vec::new();
        for dist in &mut self.distributors {
            while let Some(event) = dist.core.poll_event() {
                distributor_events.push(event);
            }
        }
        for event in distributor_events {
            self.on_cluster_event(event);
        }
        for target in &mut self.targets {
            while let Some(event) = target.core.poll_event() {
                let ok = match event {
                    TargetEvent::Installed(sa) => {
                        shadow_event("shadow SA installed", &target.name, &sa);
                        install_shadow(target, &sa)
                    }
                    TargetEvent::Deleted(sa) => {
                        if target.dvipas.iter().any(|(n, _)| *n == sa.dvipa) {
                            shadow_event("shadow SA deleted", &target.name, &sa);
                            target.node.sas.delete(sa.spi);
                        }
                        true
                    }
                    TargetEvent::ConnectionReleased { .. } => {
                        self.counters.newconn_released += 1;
                        true
                    }
                    TargetEvent::ConnectionFailed { .. }
                    | TargetEvent::ConnectionTimedOut { .. } => {
                        self.counters.newconn_failed += 1;
                        true
                    }
                };
                if !ok {
                    self.counters.errors += 1;
                }
            }
        }
    }

    fn on_cluster_event(&mut self, event: DistributorEvent) {
        let now = self.start + self.now;
        match event {
            DistributorEvent::SoftLimitReached(sa) => {
                let Some(peer) = self.peers.iter_mut().find(|p| p.dvipa == sa.dvipa) else {
                    return;
                };
                let Some((inbound, outbound)) = peer.current else {
                    return;
                };
                let is_current = sa.spi == inbound || sa.spi == outbound;
                if is_current && !peer.rekey_asked {
                    match peer.keys.rekey_child(now, inbound) {
                        Ok(()) => peer.rekey_asked = true,
                        Err(_) => self.counters.errors += 1,
                    }
                }
            }
            DistributorEvent::HardLimitReached(_) => self.counters.hard_limits += 1,
            DistributorEvent::NegotiateSa { dvipa, .. } => {
                let Some(peer) = self.peers.iter_mut().find(|p| p.dvipa == dvipa) else {
                    return;
                };
                if peer.keys.initiate_from_dvipa(now).is_err() {
                    self.counters.errors += 1;
                }
            }
            DistributorEvent::Distributed(sa) => self.on_distributed(&sa),
            DistributorEvent::Retired(sa) => self.on_retired(&sa),
            _ => {}
        }
    }

    /// Every target acknowledged `sa`. Once both halves of a child are everywhere, the peer
    /// moves to it and drops the SA it replaces; the cluster core retires the old halves.
    fn on_distributed(&mut self, sa: &SaRef) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.dvipa == sa.dvipa) else {
            return;
        };
        let Some(at) = peer
            .pending_switches
            .iter()
            .position(|s| s.waiting.contains(sa))
        else {
            return;
        };
        peer.pending_switches[at].waiting.retain(|w| w != sa);
        if !peer.pending_switches[at].waiting.is_empty() {
            return;
        }
        let switch = peer.pending_switches.remove(at);
        peer.peer.activate_staged();
        if let Some(old_outbound) = switch.old_outbound {
            peer.peer.remove_inbound(old_outbound);
        }
    }

    /// The cluster core retired a rekeyed SA: an inbound one leaves its distributor's data path.
    fn on_retired(&mut self, sa: &SaRef) {
        let Some(owner) = self.peers.iter().find(|p| p.dvipa == sa.dvipa) else {
            return;
        };
        security_event(
            "SA deleted",
            &owner.distributor,
            owner,
            sa.direction,
            sa.spi,
        );
        if sa.direction != WireDirection::Inbound {
            return;
        }
        if let Some(dist) = distributor_named(&mut self.distributors, &owner.distributor) {
            dist.node.sas.delete(sa.spi);
        }
    }
}

/// One line on the security log: an SA of `peer`'s DVIPA entered or left `node`'s SAD. It names
/// the SA, never its keys.
fn security_event(what: &str, node: &str, peer: &DvipaPeer, direction: WireDirection, spi: u32) {
    let direction = direction_name(direction);
    tracing::info!(
        target: "dvipsec::security",
        node = %node,
        dvipa = %peer.address,
        dvipa_name = %peer.dvipa,
        spi = %format_args!("0x{spi:08x}"),
        direction = %direction,
        "{what}"
    );
}

fn direction_name(direction: WireDirection) -> &'static str {
    match direction {
        WireDirection::Inbound => "inbound",
        WireDirection::Outbound => "outbound",
    }
}

/// A target's shadow cache took or dropped an SA: a debug line on the security log (the
/// distributor's line at info level already tells the SA's story once).
fn shadow_event(what: &str, node: &str, sa: &SaRef) {
    tracing::debug!(
        target: "dvipsec::security",
        node = %node,
        dvipa_name = %sa.dvipa,
        spi = %format_args!("0x{:08x}", sa.spi),
        direction = %direction_name(sa.direction),
        "{what}"
    );
}

/// The distributor box called `name`, if the site has one.
fn distributor_named<'a>(
    distributors: &'a mut [DistributorBox],
    name: &str,
) -> Option<&'a mut DistributorBox> {
    distributors.iter_mut().find(|d| d.name == name)
}

/// A target serving `dvipa` (not its distributor's own box, if another serves it) binds an
/// application socket there; it will open the DVIPA's first connection.
fn newconn_opener(
    targets: &mut [TargetBox],
    dvipa: &str,
    distributor: &str,
    address: IpAddr,
) -> Result<Opener, SiteError> {
    let serves = |t: &TargetBox| t.dvipas.iter().any(|(n, _)| n == dvipa);
    let target = targets
        .iter()
        .position(|t| t.name != distributor && serves(t))
        .or_else(|| targets.iter().position(serves))
        .ok_or_else(|| SiteError::Missing(format!("target serving {dvipa}")))?;
    let socket = targets[target]
        .node
        .bind_udp(SocketAddr::new(address, NEWCONN_PORT), 4)?;
    Ok(Opener::Target { target, socket })
}

/// A target core installed `sa`: the box's data plane builds it for the data path.
fn install_shadow(target: &mut TargetBox, sa: &SaRef) -> bool {
    let Some(install) = target
        .core
        .shadow_sas(&sa.dvipa)
        .into_iter()
        .find(|s| s.install.sa_ref() == *sa)
        .map(|s| s.install.clone())
    else {
        return false;
    };
    let Some(&(_, dvipa)) = target.dvipas.iter().find(|(n, _)| *n == sa.dvipa) else {
        return false;
    };
    let (Ok(esp), Some(selector)) = (data_plane_sa(&install, None), data_plane_selector(&install))
    else {
        return false;
    };
    let slot = SlotId(install.cf_slot);
    match sa.direction {
        WireDirection::Inbound => {
            target
                .node
                .sas
                .install_inbound(esp, dvipa, install.peer, selector, slot)
        }
        WireDirection::Outbound => target.node.sas.install_outbound(
            esp,
            dvipa,
            install.peer,
            selector,
            slot,
            LeasePolicy::per_packet(),
        ),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipsec_config::SiteConfig;

    const FIGURE4: &str = include_str!("../../../../config/examples/figure4.yaml");

    fn figure4(dir: &Path) -> Site {
        let config = SiteConfig::from_str_named(FIGURE4, "figure4.yaml").unwrap();
        let mut site = Site::new(&config.node_views(), &dir.join("cf"), Instant::now()).unwrap();
        site.start().unwrap();
        site
    }

    fn drops(site: &Site) -> u64 {
        let distributors: u64 = site
            .distributors
            .iter()
            .map(|d| d.node.distributor.counters().drops.iter().sum::<u64>())
            .sum();
        let targets: u64 = site
            .targets
            .iter()
            .map(|t| t.node.target.counters().drops.iter().sum::<u64>())
            .sum();
        distributors + targets
    }

    #[test]
    fn rekeys_lose_no_packet_and_retire_the_old_sas() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = figure4(dir.path());
        while site.counters.rekeys < 12 {
            assert!(site.now() < Duration::from_secs(60), "no rekey happened");
            site.round();
            // Every echo request of the round came back (the DVB1 peer gets one extra
            // datagram: the target-originated one).
            let released: u64 = site.targets.iter().map(|t| t.node.pending_released).sum();
            for (index, peer) in site.peers.iter().enumerate() {
                let c = peer.peer.counters();
                let extra = if index > 0 { released } else { 0 };
                assert_eq!(c.packets_sent + extra, c.packets_received, "{}", peer.dvipa);
            }
        }
        assert_eq!(drops(&site), 0);
        assert_eq!(site.counters.errors, 0);
        // Retired SAs left every shadow cache: at most the current pair and one being
        // distributed per DVIPA.
        site.round();
        for target in &site.targets {
            let held = target.core.all_sas().len();
            assert!(held <= 4 * 2, "{} holds {held} SAs", target.name);
        }
    }

    #[test]
    fn a_target_originated_connection_waits_for_newconn_and_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = figure4(dir.path());
        // DVB1's peer never initiates: its only way to an SA is the target's NEWCONN.
        assert!(matches!(site.peers[1].opener, Opener::Target { .. }));
        site.round();
        assert_eq!(site.counters.newconn_requests, 1);
        assert_eq!(site.peers[1].peer.counters().packets_received, 0);
        while site.counters.newconn_released == 0 {
            assert!(site.now() < Duration::from_secs(5), "NEWCONN not answered");
            site.round();
        }
        site.round();
        let dvb1 = site.peers[1].peer.counters();
        assert!(dvb1.packets_received >= 1, "{dvb1:?}");
        assert_eq!(site.counters.newconn_failed, 0);
        assert_eq!(site.counters.child_sas, 2, "one child per DVIPA so far");
    }
}
