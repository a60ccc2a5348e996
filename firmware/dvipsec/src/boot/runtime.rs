//! The running box: one loop that drives the data plane, the membership and takeover cores,
//! the IKE endpoint of the DVIPAs the box owns, and the cluster cores over the XCF streams.
//!
//! The loop is the only place with clocks and sockets: the cores get `now` from it. Every box
//! runs membership. A box in some DVIPA's chain (its owner or a backup) runs the takeover core,
//! an idle distributor core and IKE; it distributes a DVIPA only once the takeover core says it
//! owns it ([`super::failover`]). A box listed as a target of some DVIPA runs a target core
//! (also the owner, when it is a target of its own DVIPA: its frames to itself never leave the
//! process). Child SAs IKE negotiates go to the distributor core, which gives them CF slots and
//! sends them to the targets; the data plane gets them from there.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipsec_cf::{LeasePolicy, RegionOwner, SlotId};
use dvipsec_cluster::cf::CfSlots;
use dvipsec_cluster::distributor::{DistributorError, SlotAllocator, SlotRequest};
use dvipsec_cluster::takeover::{plans_from_views, TakeoverConfig};
use dvipsec_cluster::wire::{SaInstall, SaRef, WireDirection};
use dvipsec_cluster::{
    DistributorEvent, IkeEvent, LinkSecurity, Membership, Takeover, TargetEvent, Transmit,
};
use dvipsec_config::{NodeView, SiteConfig};
use dvipsec_esp::{AeadProvider, LifetimeLimits};
use dvipsec_ike::{ChildSaInstalled, Endpoint, EndpointConfig, Event, IkeSaId, PeerConfig};

use super::child::{self, ChildContext};
use super::envelope::{self, Envelope};
use super::facility::AttachedRegion;
use super::ike_socket::IkeSockets;
use super::plane::{Neighbourhood, Plane};
use super::xcf::XcfManager;
use crate::lifesize_sink::CfAndCoreSink;

/// How often targets hand their SA counts to the cluster core.
const LIFESIZE_INTERVAL: Duration = Duration::from_millis(50);
/// How often the CF region's holder tells the other boxes its epoch and incarnation.
const CF_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);
/// The longest pause of an idle round (nothing received): keeps an idle box off the CPU.
const IDLE_PAUSE: Duration = Duration::from_micros(500);
/// While packets keep arriving, the work besides the data plane (IKE, XCF, failover, the
/// control socket) runs at most this often, so its bookkeeping is not paid per packet.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_micros(100);
/// The replay window of an SA whose policy names none.
const DEFAULT_REPLAY_WINDOW: u32 = 128;

/// What the loop counted, for the shutdown line and the control socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuntimeCounters {
    pub xcf_frames: u64,
    pub xcf_refused: u64,
    pub child_sas: u64,
    pub rekeys: u64,
    pub children_refused: u64,
    pub shadow_installs: u64,
    pub shadow_deletes: u64,
    pub core_errors: u64,
    pub cf_attaches: u64,
    pub takeovers: u64,
    pub releases: u64,
}

/// One DVIPA the box may own (it is its owner or a backup), as IKE sees it.
pub(super) struct DvipaIke {
    pub dvipa: String,
    pub address: IpAddr,
    pub ports: dvipsec_config::PortSet,
    pub replay_window: u32,
    pub lifetime: LifetimeLimits,
    /// Whether the box owns it now, and then its targets.
    pub owned: Option<Vec<String>>,
    /// Why the box took it (at startup the peers initiate: nothing to renegotiate).
    pub adopted: Option<dvipsec_cluster::takeover::MoveReason>,
    /// The current child per IKE SA: (IKE SA, inbound SPI, outbound SPI).
    pub current: Vec<(IkeSaId, u32, u32)>,
    /// Old halves of rekeyed children: their IKE delete needs no cluster delete.
    pub retired: Vec<u32>,
    pub peers: Vec<PeerConfig>,
}

/// The CF region owner handle the distributor core allocates slots from; replaced when the box
/// fences another (a takeover bumps the epoch).
#[derive(Clone, Default)]
pub(super) struct SharedOwner(Arc<Mutex<Option<Arc<RegionOwner>>>>);

impl SharedOwner {
    pub fn set(&self, owner: RegionOwner) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Arc::new(owner));
        }
    }

    pub fn get(&self) -> Option<Arc<RegionOwner>> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

impl SlotAllocator for SharedOwner {
    fn allocate(&mut self, request: &SlotRequest) -> Result<u64, DistributorError> {
        let owner = self.get().ok_or(DistributorError::NotOwned {
            dvipa: "(no CF region held yet)".into(),
        })?;
        CfSlots::new(owner).allocate(request)
    }

    fn release(&mut self, slot: u64) -> Result<(), DistributorError> {
        let owner = self.get().ok_or(DistributorError::NotOwned {
            dvipa: "(no CF region held)".into(),
        })?;
        CfSlots::new(owner).release(slot)
    }
}

/// The distributor side: its cores, IKE endpoint and sockets.
pub(super) struct DistributorSide {
    pub core: dvipsec_cluster::Distributor,
    pub takeover: Takeover,
    pub endpoint: Endpoint,
    pub sockets: IkeSockets,
    pub dvipas: Vec<DvipaIke>,
    pub region: SharedOwner,
    pub last_announce: Option<Instant>,
}

/// Everything the loop drives.
pub struct Runtime {
    pub(super) node: String,
    pub(super) view: NodeView,
    pub(super) site: Vec<NodeView>,
    pub(super) start: Instant,
    pub(super) plane: Option<Plane>,
    pub(super) neighbourhood: Option<Neighbourhood>,
    pub(super) membership: Membership,
    /// Every box was heard once (or the boot grace passed): ownership is decided from then on,
    /// also while a box that has since failed is missing.
    pub(super) assembled: bool,
    pub(super) distributor: Option<DistributorSide>,
    pub(super) target: Option<dvipsec_cluster::Target>,
    /// Served DVIPAs (also those served after a takeover): name and address.
    served: Vec<(String, IpAddr)>,
    pub(super) facility: AttachedRegion,
    pub(super) region_path: Option<PathBuf>,
    pub(super) counters: RuntimeCounters,
    last_lifesize: Instant,
    last_housekeeping: Instant,
    /// The data plane's cipher engine (a cryptodev); `None`: software.
    provider: Option<Box<dyn AeadProvider>>,
    /// Requests from the box's control socket.
    control: Option<super::control::Queries>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("IKE policy: {0}")]
    Policy(#[from] dvipsec_ike::policy::PolicyError),
    #[error("IKE endpoint: {0}")]
    Endpoint(#[from] dvipsec_ike::CryptoError),
}

/// What building the runtime needs.
pub struct RuntimeInputs<'a> {
    pub site: &'a SiteConfig,
    pub view: &'a NodeView,
    pub secrets_dir: &'a std::path::Path,
    /// The idle plane on the box's ports and its neighbours (`None`: no data plane).
    pub plane: Option<(Plane, Neighbourhood)>,
    pub facility: AttachedRegion,
    /// The region this box created at boot, if it did.
    pub region: Option<RegionOwner>,
    pub region_path: Option<PathBuf>,
    pub security: LinkSecurity,
    pub provider: Option<Box<dyn AeadProvider>>,
}

fn limits_of(peer: &PeerConfig) -> LifetimeLimits {
    let lifetime = &peer.child_lifetime;
    LifetimeLimits {
        soft_packets: lifetime.soft_packets,
        hard_packets: lifetime.hard_packets,
        soft_bytes: lifetime.soft_bytes,
        hard_bytes: lifetime.hard_bytes,
    }
}

/// The IKE side of a DVIPA the box may own, from its policy.
fn dvipa_ike(
    inputs: &RuntimeInputs<'_>,
    dvipa: &str,
    address: IpAddr,
    ports: &dvipsec_config::PortSet,
    policy: &[dvipsec_config::SpdEntry],
) -> Result<DvipaIke, RuntimeError> {
    let peers = dvipsec_ike::policy::peers_for_dvipa(inputs.site, dvipa, inputs.secrets_dir)?;
    let replay_window = policy
        .iter()
        .find_map(|entry| entry.replay_window.as_deref().copied())
        .unwrap_or(DEFAULT_REPLAY_WINDOW);
    let lifetime = peers.first().map(limits_of).unwrap_or(LifetimeLimits {
        soft_packets: None,
        hard_packets: None,
        soft_bytes: None,
        hard_bytes: None,
    });
    Ok(DvipaIke {
        dvipa: dvipa.to_owned(),
        address,
        ports: ports.clone(),
        replay_window,
        lifetime,
        owned: None,
        adopted: None,
        current: Vec::new(),
        retired: Vec::new(),
        peers,
    })
}

fn distributor_side(inputs: &RuntimeInputs<'_>) -> Result<DistributorSide, RuntimeError> {
    let view = inputs.view;
    let mut dvipas = Vec::new();
    for owned in &view.owns {
        dvipas.push(dvipa_ike(
            inputs,
            &owned.dvipa,
            owned.address,
            &owned.ports,
            &owned.policy,
        )?);
    }
    for backed in &view.backs {
        dvipas.push(dvipa_ike(
            inputs,
            &backed.dvipa,
            backed.address,
            &backed.ports,
            &backed.policy,
        )?);
    }
    let peers: Vec<PeerConfig> = dvipas.iter().flat_map(|d| d.peers.clone()).collect();
    let mut config = EndpointConfig::new(peers);
    // `nat_t: force`: ESP in UDP with these peers even with no NAT between.
    config.force_udp_encap = view
        .peers
        .iter()
        .filter(|p| p.nat_t == dvipsec_config::NatTraversal::Force)
        .map(|p| p.address)
        .collect();
    let endpoint = Endpoint::new(config)?;
    let region = SharedOwner::default();
    if let Some(owner) = &inputs.region {
        region.set(owner.clone());
    }
    let core = dvipsec_cluster::Distributor::idle(
        view,
        incarnation(),
        inputs.security,
        Box::new(region.clone()),
        Duration::ZERO,
    );
    let plans = plans_from_views(&inputs.site.node_views());
    Ok(DistributorSide {
        core,
        takeover: Takeover::new(&view.node, plans, TakeoverConfig::default()),
        endpoint,
        sockets: IkeSockets::default(),
        dvipas,
        region,
        last_announce: None,
    })
}

/// A new incarnation for each start of a core: the start time in nanoseconds. The link and
/// membership cores take a smaller incarnation than the one they know for a stale sender, so
/// a restarted box's must be larger than the one before (mixing in the process id made it
/// smaller about half the time, and the others then refused every frame of the new box).
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Runtime {
    pub fn new(inputs: RuntimeInputs<'_>) -> Result<Runtime, RuntimeError> {
        let view = inputs.view;
        let may_own = !view.owns.is_empty() || !view.backs.is_empty();
        let distributor = if may_own {
            Some(distributor_side(&inputs)?)
        } else {
            None
        };
        let target = (!view.serves.is_empty()).then(|| {
            dvipsec_cluster::Target::new(view, incarnation(), inputs.security, Duration::ZERO)
        });
        let served = view
            .serves
            .iter()
            .map(|s| (s.dvipa.clone(), s.address))
            .collect();
        let now = Instant::now();
        let (plane, neighbourhood) = match inputs.plane {
            Some((plane, near)) => (Some(plane), Some(near)),
            None => (None, None),
        };
        let mut runtime = Runtime {
            node: view.node.clone(),
            view: view.clone(),
            site: inputs.site.node_views(),
            start: now,
            plane,
            neighbourhood,
            membership: Membership::for_view(view, incarnation(), Duration::ZERO),
            assembled: false,
            distributor,
            target,
            served,
            facility: inputs.facility,
            region_path: inputs.region_path,
            counters: RuntimeCounters::default(),
            last_lifesize: now,
            last_housekeeping: now,
            provider: inputs.provider,
            control: None,
        };
        runtime.choose_plane();
        Ok(runtime)
    }

    pub fn counters(&self) -> RuntimeCounters {
        self.counters
    }

    /// The box's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How long the box has run (the cores' clock).
    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }

    /// The data plane, if the box owns or serves a DVIPA.
    pub fn plane(&self) -> Option<&Plane> {
        self.plane.as_ref()
    }

    /// The distributor's cluster core (the SAD), if the box may own DVIPAs.
    pub fn distributor_core(&self) -> Option<&dvipsec_cluster::Distributor> {
        self.distributor.as_ref().map(|side| &side.core)
    }

    /// The takeover core, if the box may own DVIPAs.
    pub fn takeover(&self) -> Option<&Takeover> {
        self.distributor.as_ref().map(|side| &side.takeover)
    }

    /// The membership core.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The IKE endpoint, if the box may own DVIPAs.
    pub fn ike(&self) -> Option<&Endpoint> {
        self.distributor.as_ref().map(|side| &side.endpoint)
    }

    /// The IKE sockets' counters, if the box runs IKE.
    pub fn ike_sockets(&self) -> Option<super::ike_socket::IkeSocketCounters> {
        self.distributor
            .as_ref()
            .map(|side| side.sockets.counters())
    }

    /// The target's cluster core (the shadow SA cache), if the box serves DVIPAs.
    pub fn target_core(&self) -> Option<&dvipsec_cluster::Target> {
        self.target.as_ref()
    }

    /// The box's handle on the CF region (attached once the distributor said where).
    pub fn facility(&self) -> &AttachedRegion {
        &self.facility
    }

    /// The region owner handle this box holds (created at boot or taken over), if any.
    pub fn region_owner(&self) -> Option<Arc<RegionOwner>> {
        self.distributor.as_ref().and_then(|side| side.region.get())
    }

    /// The DVIPAs the box serves: name and address.
    pub fn served(&self) -> &[(String, IpAddr)] {
        &self.served
    }

    /// Answers the control socket's waiting requests (see [`super::control`]).
    fn serve_control(&mut self) {
        let Some(queries) = self.control.take() else {
            return;
        };
        while let Ok(query) = queries.try_recv() {
            let answer = super::answers::respond(self, query.request.clone());
            query.answer(answer);
        }
        self.control = Some(queries);
    }

    /// Requests from the control socket reach the loop through `queries`.
    pub fn listen_to_control(&mut self, queries: super::control::Queries) {
        self.control = Some(queries);
    }

    /// Deletes every IKE SA (and so its children) with the peers, and sends the deletes.
    pub fn delete_ike_sas(&mut self) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        let now = Instant::now();
        for info in side.endpoint.ike_sas() {
            if let Err(error) = side.endpoint.delete_ike_sa(now, info.id) {
                tracing::debug!(%error, "IKE SA not deleted");
            }
        }
        side.sockets.send_from(&mut side.endpoint, now);
    }

    /// One round of everything; `xcf` carries frames to and from the other boxes. Returns
    /// whether anything was received (an idle caller may pause).
    pub fn round(&mut self, xcf: &XcfManager) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.start);
        let now_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let mut busy = false;
        if let Some(plane) = self.plane.as_mut() {
            busy |= plane.poll(now_us) > 0;
        }
        if busy && now.duration_since(self.last_housekeeping) < HOUSEKEEPING_INTERVAL {
            return true;
        }
        self.last_housekeeping = now;
        busy | self.housekeeping(xcf, now, elapsed)
    }

    /// Everything besides the data plane; returns whether IKE or XCF received anything.
    fn housekeeping(&mut self, xcf: &XcfManager, now: Instant, elapsed: Duration) -> bool {
        let mut busy = self.run_ike(now);
        self.forward_newconn_requests(elapsed);
        if now.duration_since(self.last_lifesize) >= LIFESIZE_INTERVAL {
            self.last_lifesize = now;
            self.report_lifesize();
        }
        self.announce_region(now, xcf);
        busy |= self.receive_xcf(xcf, elapsed);
        self.run_failover(now, elapsed);
        self.send_xcf(xcf, elapsed);
        self.take_cluster_events(now, elapsed);
        self.serve_control();
        busy
    }

    /// Runs until `stop` says so.
    pub fn run(&mut self, xcf: &XcfManager, stop: impl Fn() -> bool) {
        while !stop() {
            if !self.round(xcf) {
                self.wait_for_input();
            }
        }
    }

    /// An idle round's pause: blocks until a port the plane reads or an IKE socket has
    /// something, for at most [`IDLE_PAUSE`] (XCF frames and control requests arrive through
    /// threads and wait that long at most). A plane with a port that has no descriptor (DPDK)
    /// sleeps the pause instead.
    fn wait_for_input(&self) {
        let plane_fds = match self.plane.as_ref() {
            Some(plane) => plane.readiness_fds(),
            None => Some(Vec::new()),
        };
        let Some(mut fds) = plane_fds else {
            std::thread::sleep(IDLE_PAUSE);
            return;
        };
        if let Some(side) = self.distributor.as_ref() {
            fds.extend(side.sockets.readiness_fds());
        }
        if dvipsec_ports::wait_any_readable(&fds, IDLE_PAUSE).is_err() {
            std::thread::sleep(IDLE_PAUSE);
        }
    }

    fn run_ike(&mut self, now: Instant) -> bool {
        let Some(side) = self.distributor.as_mut() else {
            return false;
        };
        let received = side.sockets.receive_into(&mut side.endpoint, now);
        side.endpoint.handle_timeout(now);
        side.sockets.send_from(&mut side.endpoint, now);
        let events: Vec<Event> = std::iter::from_fn(|| side.endpoint.poll_event()).collect();
        let elapsed = now.duration_since(self.start);
        for event in events {
            self.on_ike_event(event, elapsed);
        }
        received > 0
    }

    fn on_ike_event(&mut self, event: Event, now: Duration) {
        match event {
            Event::IkeSaEstablished {
                ike_sa,
                peer,
                remote,
                ..
            } => tracing::info!(?ike_sa, %peer, %remote, "IKE SA established"),
            Event::ChildSaInstalled(child) => self.distribute_child(&child, None, now),
            Event::ChildSaRekeyed {
                old_inbound_spi,
                old_outbound_spi,
                new,
            } => self.distribute_child(&new, Some((old_inbound_spi, old_outbound_spi)), now),
            Event::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                ..
            } => self.delete_child(inbound_spi, outbound_spi, now),
            other => tracing::debug!(event = ?other, "IKE event"),
        }
    }

    /// IKE installed `child` (replacing `old`): the cluster core gives it CF slots and sends it
    /// to the targets; the box's own data path gets both halves now.
    fn distribute_child(
        &mut self,
        child: &ChildSaInstalled,
        old: Option<(u32, u32)>,
        now: Duration,
    ) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        let Some(dvipa) = side
            .dvipas
            .iter_mut()
            .find(|d| d.address == child.local.ip() && d.owned.is_some())
        else {
            self.counters.children_refused += 1;
            return;
        };
        let context = ChildContext {
            dvipa_name: &dvipa.dvipa,
            replay_window: dvipa.replay_window,
            lifetime: dvipa.lifetime,
        };
        let pair = match child::child_pair(&context, child) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(
                    spi = format_args!("{:#010x}", child.inbound_spi),
                    "child SA not distributed: {error}"
                );
                self.counters.children_refused += 1;
                return;
            }
        };
        if let Some((old_in, old_out)) = old {
            self.counters.rekeys += 1;
            dvipa.retired.extend([old_in, old_out]);
            dvipa.current.retain(|(_, i, _)| *i != old_in);
        }
        dvipa
            .current
            .push((child.ike_sa, child.inbound_spi, child.outbound_spi));
        let name = dvipa.dvipa.clone();
        let address = dvipa.address;
        // Outbound first: the old inbound SA is retired no earlier than the new outbound one
        // is everywhere.
        for install in [&pair.outbound, &pair.inbound] {
            let new = Box::new(install.clone());
            let event = match old {
                Some((old_in, old_out)) => IkeEvent::Rekeyed {
                    old: SaRef {
                        dvipa: name.clone(),
                        direction: install.direction.into(),
                        spi: match install.direction {
                            dvipsec_esp::Direction::Inbound => old_in,
                            dvipsec_esp::Direction::Outbound => old_out,
                        },
                    },
                    new,
                },
                None => IkeEvent::Installed(new),
            };
            if let Err(error) = side.core.handle_ike(event, now) {
                tracing::warn!(dvipa = %name, "cluster core refused the child SA: {error}");
                self.counters.core_errors += 1;
            }
        }
        self.counters.child_sas += 1;
        tracing::info!(
            target: "dvipsec::security",
            dvipa = %name,
            inbound_spi = format_args!("{:#010x}", child.inbound_spi),
            outbound_spi = format_args!("{:#010x}", child.outbound_spi),
            rekey = old.is_some(),
            "child SA installed"
        );
        let stored: Vec<SaInstall> = side
            .core
            .sas(&name)
            .into_iter()
            .filter(|s| s.spi == child.inbound_spi || s.spi == child.outbound_spi)
            .cloned()
            .collect();
        for install in &stored {
            if let Some(plane) = self.plane.as_mut() {
                if !install_in_plane(plane, install, address, self.provider.as_deref()) {
                    self.counters.core_errors += 1;
                }
            }
        }
    }

    fn delete_child(&mut self, inbound_spi: u32, outbound_spi: u32, now: Duration) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        let Some(dvipa) = side.dvipas.iter_mut().find(|d| {
            d.retired.contains(&inbound_spi) || d.current.iter().any(|c| c.1 == inbound_spi)
        }) else {
            return;
        };
        if dvipa.retired.contains(&inbound_spi) {
            dvipa
                .retired
                .retain(|s| *s != inbound_spi && *s != outbound_spi);
            return;
        }
        dvipa.current.retain(|c| c.1 != inbound_spi);
        if dvipa.owned.is_some() {
            for (direction, spi) in [
                (WireDirection::Inbound, inbound_spi),
                (WireDirection::Outbound, outbound_spi),
            ] {
                let sa = SaRef {
                    dvipa: dvipa.dvipa.clone(),
                    direction,
                    spi,
                };
                if side.core.handle_ike(IkeEvent::Deleted(sa), now).is_err() {
                    self.counters.core_errors += 1;
                }
            }
        }
        tracing::info!(
            target: "dvipsec::security",
            dvipa = %dvipa.dvipa,
            inbound_spi = format_args!("{inbound_spi:#010x}"),
            outbound_spi = format_args!("{outbound_spi:#010x}"),
            "child SA deleted"
        );
        if let Some(plane) = self.plane.as_mut() {
            plane.delete_sa(inbound_spi);
            plane.delete_sa(outbound_spi);
        }
    }

    fn forward_newconn_requests(&mut self, now: Duration) {
        let (Some(plane), Some(core)) = (self.plane.as_mut(), self.target.as_mut()) else {
            return;
        };
        for request in plane.take_newconn_requests() {
            let flow = dvipsec_cluster::wire::Flow {
                local: request.local,
                remote: request.remote,
                protocol: request.protocol,
                local_port: request.local_port,
                remote_port: request.remote_port,
            };
            if core.open_connection(flow, now).is_err() {
                self.counters.core_errors += 1;
            }
        }
    }

    fn report_lifesize(&mut self) {
        let (Some(plane), Some(core)) = (self.plane.as_mut(), self.target.as_mut()) else {
            return;
        };
        let mut sink = CfAndCoreSink::new(&self.facility, core, &self.served);
        plane.report_lifesize(&mut sink);
        // A refusal by the CF (the slot was released with a retired SA) is counted by the
        // facility's own failed-operation counter.
        self.counters.core_errors += sink.refused_by_core();
    }

    /// The region's holder tells every other box where the region is (again each interval: a
    /// restarted box or a re-dialled stream needs it too).
    fn announce_region(&mut self, now: Instant, xcf: &XcfManager) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        let Some(owner) = side.region.get() else {
            return;
        };
        if side.takeover.owned().is_empty() {
            return;
        }
        if side
            .last_announce
            .is_some_and(|at| now.duration_since(at) < CF_ANNOUNCE_INTERVAL)
        {
            return;
        }
        side.last_announce = Some(now);
        let region = owner.region();
        for other in self.site.iter().filter(|v| v.node != self.node) {
            xcf.send(
                &other.node,
                envelope::cf_attach(region.epoch(), region.incarnation()),
            );
        }
    }

    fn receive_xcf(&mut self, xcf: &XcfManager, now: Duration) -> bool {
        let mut any = false;
        while let Some(frame) = xcf.recv(Duration::ZERO) {
            any = true;
            self.counters.xcf_frames += 1;
            self.membership.heard(&frame.from, now);
            self.deliver(&frame.from, &frame.bytes, now);
        }
        any
    }

    /// Hands a frame from box `from` to the core it names.
    fn deliver(&mut self, from: &str, bytes: &[u8], now: Duration) {
        let handled = match envelope::decode(bytes) {
            Ok(Envelope::ToDistributor(frame)) => self.distributor.as_mut().map(|side| {
                side.core
                    .handle(from, frame, now)
                    .map_err(|e| e.to_string())
            }),
            Ok(Envelope::ToTarget(frame)) => self
                .target
                .as_mut()
                .map(|core| core.handle(from, frame, now).map_err(|e| e.to_string())),
            Ok(Envelope::Membership(frame)) => Some(
                self.membership
                    .handle(from, frame, now)
                    .map_err(|e| e.to_string()),
            ),
            Ok(Envelope::CfAttach { epoch, incarnation }) => {
                Some(self.attach_region(epoch, incarnation))
            }
            Err(error) => Some(Err(error.to_string())),
        };
        match handled {
            Some(Ok(())) => {}
            Some(Err(reason)) => {
                self.counters.xcf_refused += 1;
                tracing::debug!(%from, %reason, "XCF frame refused");
            }
            None => {
                self.counters.xcf_refused += 1;
                tracing::debug!(%from, "XCF frame for a core this box does not run");
            }
        }
    }

    fn send_xcf(&mut self, xcf: &XcfManager, now: Duration) {
        let mut out: Vec<(u8, Transmit)> = Vec::new();
        self.membership.handle_timeout(now);
        while let Some(t) = self.membership.poll_transmit(now) {
            out.push((envelope::TO_MEMBERSHIP, t));
        }
        if let Some(side) = self.distributor.as_mut() {
            while let Some(t) = side.core.poll_transmit(now) {
                out.push((envelope::TO_TARGET, t));
            }
        }
        if let Some(core) = self.target.as_mut() {
            core.handle_timeout(now);
            while let Some(t) = core.poll_transmit(now) {
                out.push((envelope::TO_DISTRIBUTOR, t));
            }
        }
        for (kind, transmit) in out {
            let wrapped = envelope::wrap(kind, &transmit.bytes);
            if transmit.to == self.node {
                // Between this box's own cores.
                let node = self.node.clone();
                self.deliver(&node, &wrapped, now);
            } else {
                xcf.send(&transmit.to, wrapped);
            }
        }
    }

    fn take_cluster_events(&mut self, now: Instant, elapsed: Duration) {
        let mut distributor_events = Vec::new();
        if let Some(side) = self.distributor.as_mut() {
            while let Some(event) = side.core.poll_event() {
                distributor_events.push(event);
            }
        }
        for event in distributor_events {
            self.on_distributor_event(event, now, elapsed);
        }
        let mut target_events = Vec::new();
        if let Some(core) = self.target.as_mut() {
            while let Some(event) = core.poll_event() {
                target_events.push(event);
            }
        }
        for event in target_events {
            self.on_target_event(event);
        }
        self.follow_owner_changes(elapsed);
    }

    fn on_distributor_event(&mut self, event: DistributorEvent, now: Instant, elapsed: Duration) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        match event {
            DistributorEvent::SoftLimitReached(sa) => {
                let current = side
                    .dvipas
                    .iter()
                    .filter(|d| d.dvipa == sa.dvipa)
                    .flat_map(|d| d.current.iter())
                    .find(|(_, i, o)| *i == sa.spi || *o == sa.spi)
                    .copied();
                if let Some((ike_sa, inbound, _)) = current {
                    if let Err(error) = side.endpoint.rekey_child(now, ike_sa, inbound) {
                        tracing::debug!(%error, "rekey not started");
                    }
                }
            }
            DistributorEvent::HardLimitReached(sa) => {
                tracing::warn!(dvipa = %sa.dvipa, spi = format_args!("{:#010x}", sa.spi), "SA reached its hard limit")
            }
            DistributorEvent::NegotiateSa { dvipa, flow } => {
                super::failover::negotiate(side, &dvipa, flow.remote, now);
            }
            DistributorEvent::Retired(sa) => {
                if let Some(plane) = self.plane.as_mut() {
                    plane.delete_sa(sa.spi);
                }
            }
            DistributorEvent::ConnReported { target, dvipa } => {
                let connections = side.core.connections(&target, &dvipa).to_vec();
                side.takeover
                    .conn_report(&target, &dvipa, &connections, elapsed);
            }
            DistributorEvent::TargetUp { node, restarted } => {
                tracing::info!(target_node = %node, restarted, "target up")
            }
            other => tracing::debug!(event = ?other, "cluster event"),
        }
    }

    fn on_target_event(&mut self, event: TargetEvent) {
        match event {
            TargetEvent::Installed(sa) => self.install_shadow(&sa),
            TargetEvent::Deleted(sa) => {
                // The owner's own data path follows IKE (see `delete_child`).
                if !self.owns_now(&sa.dvipa) {
                    if let Some(plane) = self.plane.as_mut() {
                        plane.delete_sa(sa.spi);
                    }
                }
                self.counters.shadow_deletes += 1;
                tracing::info!(target: "dvipsec::security", dvipa = %sa.dvipa, spi = format_args!("{:#010x}", sa.spi), direction = ?sa.direction, "shadow SA deleted");
            }
            other => tracing::debug!(event = ?other, "target event"),
        }
    }

    /// Whether this box owns `dvipa` now.
    pub(super) fn owns_now(&self, dvipa: &str) -> bool {
        self.distributor.as_ref().is_some_and(|side| {
            side.dvipas
                .iter()
                .any(|d| d.dvipa == dvipa && d.owned.is_some())
        })
    }

    /// A data plane built for a new role starts empty: it gets every shadow SA the target
    /// core holds. A box that let a DVIPA go may hold the new owner's SAs already (they came
    /// while it still owned the DVIPA, so none went into the old plane).
    pub(super) fn install_held_shadows(&mut self) {
        let held = self
            .target
            .as_ref()
            .map(|core| core.all_sas())
            .unwrap_or_default();
        for sa in &held {
            self.install_shadow(sa);
        }
    }

    /// The target core holds `sa`: the data plane builds it (a box that owns the DVIPA
    /// installed it already when IKE made it).
    fn install_shadow(&mut self, sa: &SaRef) {
        if self.owns_now(&sa.dvipa) {
            return;
        }
        let (Some(core), Some(plane)) = (self.target.as_ref(), self.plane.as_mut()) else {
            return;
        };
        let Some(address) = self
            .served
            .iter()
            .find(|(name, _)| *name == sa.dvipa)
            .map(|(_, a)| *a)
        else {
            self.counters.core_errors += 1;
            return;
        };
        let install = core
            .shadow_sas(&sa.dvipa)
            .into_iter()
            .find(|s| s.install.sa_ref() == *sa)
            .map(|s| s.install.clone());
        let provider = self.provider.as_deref();
        let installed =
            install.is_some_and(|install| install_in_plane(plane, &install, address, provider));
        if installed {
            self.counters.shadow_installs += 1;
            tracing::info!(target: "dvipsec::security", dvipa = %sa.dvipa, spi = format_args!("{:#010x}", sa.spi), direction = ?sa.direction, "shadow SA installed");
        } else {
            self.counters.core_errors += 1;
        }
    }
}

/// Installs a distributed SA in the data plane; false when it cannot be built.
fn install_in_plane(
    plane: &mut Plane,
    install: &SaInstall,
    dvipa: IpAddr,
    provider: Option<&dyn AeadProvider>,
) -> bool {
    let (Ok(sa), Some(selector), Some(sas)) = (
        child::data_plane_sa(install, provider),
        child::data_plane_selector(install),
        plane.sas(),
    ) else {
        return false;
    };
    let slot = SlotId(install.cf_slot);
    match install.direction {
        dvipsec_esp::Direction::Inbound => {
            sas.install_inbound(sa, dvipa, install.peer, selector, slot)
        }
        dvipsec_esp::Direction::Outbound => sas.install_outbound(
            sa,
            dvipa,
            install.peer,
            selector,
            slot,
            LeasePolicy::per_packet(),
        ),
    }
    true
}

/// The loop's counts, for the shutdown line.
pub fn summary(runtime: &Runtime) -> Vec<(&'static str, u64)> {
    let c = runtime.counters;
    let ike = runtime.ike_sockets().unwrap_or_default();
    vec![
        ("child_sas", c.child_sas),
        ("rekeys", c.rekeys),
        ("shadow_installs", c.shadow_installs),
        ("takeovers", c.takeovers),
        ("releases", c.releases),
        ("xcf_frames", c.xcf_frames),
        ("xcf_refused", c.xcf_refused),
        ("core_errors", c.core_errors),
        ("ike_received", ike.received),
        ("ike_sent", ike.sent),
        ("ike_send_errors", ike.send_errors),
    ]
}

#[cfg(test)]
mod incarnation_tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    fn nanos_now() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    /// The other boxes refuse a smaller incarnation than the one they know as stale, so a
    /// later start must have a larger one whatever its process id: it is the start time.
    #[test]
    fn an_incarnation_is_the_time_the_core_started() {
        let before = nanos_now();
        let incarnation = u128::from(super::incarnation());
        let after = nanos_now();
        assert!(
            (before..=after).contains(&incarnation),
            "{incarnation} is not between {before} and {after}"
        );
    }
}
