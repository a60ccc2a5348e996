//! What the box does when DVIPA ownership moves (seed: backup distributors; issue #10): the
//! membership core watches heartbeats, the takeover core decides, and this module carries out
//! its actions on the box's real resources.
//!
//! - Adopt: the distributor core distributes the DVIPA; the DVIPA's address goes on the
//!   external interface (the kernel's IKE sockets need it) and the IKE sockets open; the data
//!   plane becomes (or stays) a distributor.
//! - FenceCf / RejoinCf: the box takes the CF region over in a new epoch (fencing the old
//!   owner) or attaches again in a newer one.
//! - Announce: a gratuitous ARP from the external port.
//! - NotifyTargets: TAKEOVER to the DVIPA's targets (they drop the old owner's shadow SAs and
//!   report their connections).
//! - Renegotiate: IKE initiates a new SA with the peer.
//! - Release: the reverse of Adopt.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use dvipsec_cf::RegionOwner;
use dvipsec_cluster::takeover::MoveReason;
use dvipsec_cluster::wire::{Connection, Flow};
use dvipsec_cluster::MembershipEvent;
use dvipsec_cluster::TakeoverAction;
use dvipsec_dataplane::dct::FlowKey;

use super::ike_socket::IKE_PORT;
use super::neighbours;
use super::plane::{self, OwnedNow, Plane};
use super::runtime::{DistributorSide, Runtime};

/// A connection a target has not served for this long is not reported to a new distributor.
const CONNECTION_IDLE_US: u64 = 60_000_000;
/// The longest a box waits at boot for the others before deciding who owns what.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

impl Runtime {
    /// Membership timers and events, the takeover decision, and its actions.
    pub(super) fn run_failover(&mut self, now: Instant, elapsed: Duration) {
        self.membership.handle_timeout(elapsed);
        while let Some(event) = self.membership.poll_event() {
            log_membership(&self.node, &event);
            self.follow_member(&event);
        }
        if !self.cluster_assembled(elapsed) {
            return;
        }
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        side.takeover.update(&mut self.membership, elapsed);
        while let Some(action) = self
            .distributor
            .as_mut()
            .and_then(|side| side.takeover.poll_action())
        {
            self.carry_out(action, now, elapsed);
        }
    }

    /// Whether ownership may be decided: every other box's heartbeat view (with its claims)
    /// has arrived once, or the boot grace passed. Boxes of a site boot seconds apart (ARP,
    /// ports); deciding after only one takeover timeout would let a backup that booted first
    /// take a DVIPA from its owner. Once assembled it stays so: a box that fails later (its view
    /// gone) must not hold a takeover back until the grace ends.
    fn cluster_assembled(&mut self, elapsed: Duration) -> bool {
        if !self.assembled {
            let grace = (self.membership.config().silence_limit() * 4).max(STARTUP_GRACE);
            self.assembled = elapsed >= grace
                || self
                    .site
                    .iter()
                    .filter(|v| v.node != self.node)
                    .all(|v| self.membership.has_view(&v.node));
        }
        self.assembled
    }

    /// A target that failed gets no new connections from this box's distributor, and its
    /// connections end; one that is back (or restarted) is chosen again.
    fn follow_member(&mut self, event: &MembershipEvent) {
        let (member, down) = match event {
            MembershipEvent::Down { node, .. } => (node, true),
            MembershipEvent::Up { node } | MembershipEvent::Restarted { node, .. } => (node, false),
            _ => return,
        };
        let Ok(address) = plane::xcf_of(&self.site, member) else {
            return;
        };
        if let Some(Plane::Distributor(node)) = self.plane.as_mut() {
            let ended = node.distributor.set_target_down(address, down);
            if down {
                tracing::warn!(target_node = %member, connections_ended = ended, "target out of the distribution");
            }
        }
    }

    fn carry_out(&mut self, action: TakeoverAction, now: Instant, elapsed: Duration) {
        tracing::debug!(?action, "takeover action");
        match action {
            TakeoverAction::Adopt {
                dvipa,
                address,
                targets,
                reason,
            } => self.adopt(&dvipa, address, targets, reason, elapsed),
            TakeoverAction::FenceCf { dvipa } => self.fence(&dvipa, elapsed, true),
            TakeoverAction::AttachCf { dvipa } => self.fence(&dvipa, elapsed, false),
            TakeoverAction::RejoinCf { cf_epoch } => self.rejoin(cf_epoch),
            TakeoverAction::Announce { dvipa, address, .. } => self.announce(&dvipa, address),
            TakeoverAction::NotifyTargets {
                dvipa, cf_epoch, ..
            } => {
                if let Some(side) = self.distributor.as_mut() {
                    if let Err(error) = side.core.send_takeover(&dvipa, cf_epoch, elapsed) {
                        tracing::warn!(%dvipa, %error, "TAKEOVER not sent to every target");
                    }
                }
            }
            TakeoverAction::Renegotiate { dvipa, address, .. } => {
                if let Some(side) = self.distributor.as_mut() {
                    // At startup no peer had an SA with anyone: they initiate (and NEWCONN
                    // asks when a target needs one first). After a move, the peers' SAs
                    // died with the old owner: this box negotiates at once.
                    let startup = side
                        .dvipas
                        .iter()
                        .any(|d| d.dvipa == dvipa && d.adopted == Some(MoveReason::Startup));
                    if !startup {
                        negotiate(side, &dvipa, address, now);
                    }
                }
            }
            TakeoverAction::RestoreConnections {
                dvipa,
                target,
                flows,
            } => self.restore_connections(&dvipa, &target, &flows, elapsed),
            TakeoverAction::Rebuilt {
                dvipa,
                connections,
                missing,
            } => tracing::info!(%dvipa, connections, ?missing, "DVIPA serving after takeover"),
            TakeoverAction::Release { dvipa, to } => self.release(&dvipa, &to, elapsed),
            TakeoverAction::OwnerChanged {
                dvipa,
                owner,
                reason,
            } => tracing::info!(%dvipa, %owner, ?reason, "DVIPA owner changed"),
        }
    }

    fn adopt(
        &mut self,
        dvipa: &str,
        address: IpAddr,
        targets: Vec<String>,
        reason: dvipsec_cluster::takeover::MoveReason,
        now: Duration,
    ) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        side.core.adopt(dvipa, address, targets.clone(), now);
        if let Some(entry) = side.dvipas.iter_mut().find(|d| d.dvipa == dvipa) {
            entry.owned = Some(targets);
            entry.adopted = Some(reason);
        }
        self.counters.takeovers += 1;
        let iface = self.plane.as_ref().and_then(Plane::external_interface);
        if let Some(iface) = &iface {
            kernel_address(iface, address, true);
        }
        if let Some(side) = self.distributor.as_mut() {
            if let Err(error) = side.sockets.add(address) {
                tracing::error!(%dvipa, "{error}");
            }
        }
        self.choose_plane();
        tracing::info!(%dvipa, %address, ?reason, "DVIPA adopted");
    }

    fn release(&mut self, dvipa: &str, to: &str, now: Duration) {
        let Some(side) = self.distributor.as_mut() else {
            return;
        };
        if let Err(error) = side.core.release(dvipa, now) {
            tracing::warn!(%dvipa, %error, "release");
        }
        let Some(entry) = side.dvipas.iter_mut().find(|d| d.dvipa == dvipa) else {
            return;
        };
        entry.owned = None;
        entry.adopted = None;
        entry.current.clear();
        let address = entry.address;
        side.sockets.remove(address);
        self.counters.releases += 1;
        if let Some(iface) = self.plane.as_ref().and_then(Plane::external_interface) {
            kernel_address(&iface, address, false);
        }
        self.choose_plane();
        tracing::info!(%dvipa, %to, "DVIPA released");
    }

    /// Takes the CF region over in a new epoch, fencing every handle of the old one, and
    /// frees the old owner's slots of `dvipa` (its SAs died with it); at startup (`fence`
    /// false, nobody owned the DVIPA) attaches at the current epoch instead.
    fn fence(&mut self, dvipa: &str, now: Duration, fence: bool) {
        let Some(path) = self.region_path.clone() else {
            tracing::error!(%dvipa, "no shared-memory CF region to take over");
            return;
        };
        let held = if fence {
            RegionOwner::take_over(&path)
        } else {
            RegionOwner::attach_current(&path)
        };
        match held {
            Ok(owner) => {
                let epoch = owner.region().epoch();
                let address = self.distributor.as_ref().and_then(|side| {
                    side.dvipas
                        .iter()
                        .find(|d| d.dvipa == dvipa)
                        .map(|d| d.address)
                });
                if let (true, Some(address)) = (fence, address) {
                    match owner.release_dvipa(address) {
                        Ok(released) => {
                            tracing::info!(%dvipa, released, "old owner's CF slots released")
                        }
                        Err(error) => tracing::warn!(%dvipa, %error, "old owner's CF slots kept"),
                    }
                }
                self.hold_region(owner);
                if let Some(side) = self.distributor.as_mut() {
                    if let Err(error) = side.takeover.fenced(dvipa, epoch, now) {
                        tracing::warn!(%dvipa, %error, "fenced");
                    }
                }
                tracing::info!(%dvipa, epoch, fenced = fence, "CF region held");
            }
            Err(error) => tracing::error!(%dvipa, %error, "CF region not taken over"),
        }
    }

    fn rejoin(&mut self, epoch: u64) {
        let Some(path) = self.region_path.clone() else {
            return;
        };
        match RegionOwner::rejoin(&path, epoch) {
            Ok(owner) => self.hold_region(owner),
            Err(error) => tracing::warn!(epoch, %error, "CF region not rejoined"),
        }
    }

    /// Makes `owner` the handle slots come from and the data plane's facility.
    fn hold_region(&mut self, owner: RegionOwner) {
        self.facility.replace(owner.region().clone());
        if let Some(side) = self.distributor.as_mut() {
            side.region.set(owner);
            // Others hear of the new epoch at once.
            side.last_announce = None;
        }
    }

    fn announce(&mut self, dvipa: &str, address: IpAddr) {
        let Some(near) = self.neighbourhood.as_ref() else {
            return;
        };
        let Some(iface) = self.plane.as_ref().and_then(Plane::external_interface) else {
            return;
        };
        let sent = dvipsec_ports::AfPacketPort::open(&dvipsec_ports::AfPacketConfig::new(&iface))
            .map_err(|e| e.to_string())
            .and_then(|mut port| {
                neighbours::announce(&mut port, near.external_mac, address)
                    .map_err(|e| e.to_string())
            });
        match sent {
            Ok(()) => tracing::info!(%dvipa, %address, %iface, "address announced"),
            Err(error) => tracing::warn!(%dvipa, %error, "address not announced"),
        }
    }

    /// Targets told of a new owner report their connections (none kept by this data plane).
    pub(super) fn follow_owner_changes(&mut self, now: Duration) {
        let Some(core) = self.target.as_mut() else {
            return;
        };
        let mut changes = Vec::new();
        while let Some(change) = core.poll_owner_change() {
            changes.push(change);
        }
        for change in changes {
            tracing::info!(dvipa = %change.dvipa, distributor = %change.distributor, epoch = change.cf_epoch, switched = change.switched, "DVIPA has a new distributor");
            let held = self.held_connections(&change.dvipa, now);
            let count = held.len();
            let Some(core) = self.target.as_mut() else {
                return;
            };
            match core.report_connections(&change.dvipa, held, now) {
                Ok(()) => {
                    tracing::info!(dvipa = %change.dvipa, connections = count, "CONN_REPORT sent")
                }
                Err(error) => tracing::warn!(dvipa = %change.dvipa, %error, "CONN_REPORT not sent"),
            }
        }
    }

    /// The connections to `dvipa` this box's data plane served lately, as CONN_REPORT says them.
    fn held_connections(&self, dvipa: &str, now: Duration) -> Vec<Connection> {
        let Some(address) = self
            .served()
            .iter()
            .find(|(n, _)| n == dvipa)
            .map(|(_, a)| *a)
        else {
            return Vec::new();
        };
        let Some(Plane::Target(node)) = self.plane.as_ref() else {
            return Vec::new();
        };
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        node.connections(address, now_us, CONNECTION_IDLE_US)
            .into_iter()
            .map(|c| Connection {
                flow: Flow {
                    local: c.dst,
                    remote: c.src,
                    protocol: c.protocol,
                    local_port: c.dst_port,
                    remote_port: c.src_port,
                },
            })
            .collect()
    }

    /// Puts the connections `target` reported back in the DCT: they keep their target.
    fn restore_connections(&mut self, dvipa: &str, target: &str, flows: &[Flow], now: Duration) {
        let Ok(address) = plane::xcf_of(&self.site, target) else {
            return;
        };
        let Some(Plane::Distributor(node)) = self.plane.as_mut() else {
            return;
        };
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        let restored = flows
            .iter()
            .filter(|f| {
                let key = FlowKey {
                    src: f.remote,
                    dst: f.local,
                    protocol: f.protocol,
                    src_port: f.remote_port,
                    dst_port: f.local_port,
                };
                node.distributor.restore(key, address, now_us)
            })
            .count();
        tracing::info!(%dvipa, %target, reported = flows.len(), restored, "connections restored");
    }

    /// The region's holder said where it is; a newer epoch replaces the handle.
    pub(super) fn attach_region(&mut self, epoch: u64, incarnation: u64) -> Result<(), String> {
        let Some(path) = self.region_path.clone() else {
            return Err("no shared-memory CF region in the site".into());
        };
        if self
            .region_owner()
            .is_some_and(|o| o.region().epoch() >= epoch)
        {
            return Ok(());
        }
        match self.facility.attach(&path, epoch, incarnation) {
            Ok(true) => {
                self.counters.cf_attaches += 1;
                tracing::info!(path = %path.display(), epoch, "attached to the CF region");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// A planned, non-disruptive move of `dvipa` to this box (`dvipsecctl takeover`): the
    /// takeover core moves it when this box is in its chain and alive; the old owner lets go
    /// when it hears the newer claim.
    pub fn plan_move_here(&mut self, dvipa_address: IpAddr) -> Result<String, String> {
        let elapsed = self.start.elapsed();
        let node = self.node.clone();
        let Some(side) = self.distributor.as_mut() else {
            return Err(format!("{node} is in no DVIPA's chain: it cannot own one"));
        };
        let Some(dvipa) = side
            .dvipas
            .iter()
            .find(|d| d.address == dvipa_address)
            .map(|d| d.dvipa.clone())
        else {
            return Err(format!("{node} neither owns nor backs {dvipa_address}"));
        };
        side.takeover
            .plan_move(&dvipa, &node, &self.membership, elapsed)
            .map_err(|e| e.to_string())?;
        Ok(dvipa)
    }

    /// Whether this box holds the CF region in its current epoch (nobody fenced it since).
    pub fn holds_current_region(&self) -> bool {
        let (Some(owner), Some(path)) = (self.region_owner(), self.region_path.as_ref()) else {
            return false;
        };
        RegionOwner::rejoin(path, owner.region().epoch()).is_ok()
    }

    /// Puts the data plane in the role the box has now: a distributor while it owns a DVIPA,
    /// a target while it serves one, else idle. A distributor that keeps its role takes the
    /// new set of DVIPAs without losing its SAs.
    pub(super) fn choose_plane(&mut self) {
        let (Some(plane), Some(near)) = (self.plane.take(), self.neighbourhood.clone()) else {
            return;
        };
        let owned = self.owned_now();
        // Only these two keep the plane they had, and its SAs.
        let kept = matches!(
            (&plane, owned.is_empty()),
            (Plane::Distributor(_), false) | (Plane::Target(_), true)
        );
        let result = match (plane, owned.is_empty()) {
            (Plane::Distributor(mut node), false) => {
                plane::redistribute(&mut node, &self.site, &near, &owned)
                    .map(|()| Plane::Distributor(node))
            }
            (other, false) => plane::distributor(
                other.into_ports(),
                &self.site,
                &near,
                &owned,
                self.facility.clone(),
            ),
            (Plane::Target(node), true) => Ok(Plane::Target(node)),
            (other, true) if !self.view.serves.is_empty() => plane::target(
                other.into_ports(),
                &self.view,
                &self.site,
                &near,
                self.facility.clone(),
            ),
            (other, true) => Ok(Plane::Idle(Box::new(other.into_ports()))),
        };
        match result {
            Ok(mut plane) => {
                // A new dispatch core starts with every target up: tell it who failed.
                if let Plane::Distributor(node) = &mut plane {
                    for other in self
                        .site
                        .iter()
                        .filter(|v| self.membership.has_failed(&v.node))
                    {
                        if let Ok(address) = plane::xcf_of(&self.site, &other.node) {
                            node.distributor.set_target_down(address, true);
                        }
                    }
                }
                self.plane = Some(plane);
                if !kept {
                    self.install_held_shadows();
                }
            }
            Err(error) => tracing::error!(%error, "the data plane cannot take its new role"),
        }
    }

    fn owned_now(&self) -> Vec<OwnedNow> {
        let Some(side) = self.distributor.as_ref() else {
            return Vec::new();
        };
        side.dvipas
            .iter()
            .filter_map(|d| {
                d.owned.as_ref().map(|targets| OwnedNow {
                    address: d.address,
                    ports: d.ports.clone(),
                    targets: targets.clone(),
                })
            })
            .collect()
    }
}

fn log_membership(node: &str, event: &MembershipEvent) {
    match event {
        MembershipEvent::Down {
            node: member,
            cause,
        } => {
            tracing::warn!(%node, %member, ?cause, "member down")
        }
        MembershipEvent::Up { node: member } => tracing::info!(%node, %member, "member up"),
        other => tracing::info!(%node, event = ?other, "membership"),
    }
}

/// Puts `address` on (or takes it off) `iface` in the kernel: the IKE sockets bind to it and
/// the kernel answers ARP for it. Already there (or already gone) is fine.
fn kernel_address(iface: &str, address: IpAddr, add: bool) {
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    let verb = if add { "add" } else { "del" };
    let cidr = format!("{address}/{prefix}");
    let output = Command::new("ip")
        .args(["addr", verb, &cidr, "dev", iface])
        .output();
    match output {
        Ok(out) if out.status.success() => tracing::info!(%cidr, %iface, verb, "DVIPA address"),
        Ok(out) => {
            let message = String::from_utf8_lossy(&out.stderr);
            let settled = message.contains("File exists") || message.contains("Cannot assign");
            if !settled {
                tracing::warn!(%cidr, %iface, verb, error = %message.trim(), "DVIPA address");
            }
        }
        Err(error) => {
            tracing::warn!(%cidr, %iface, %error, "cannot run `ip` for the DVIPA address")
        }
    }
}

/// Starts a negotiation for `dvipa` towards `remote`: a child on the IKE SA with it when there
/// is one, else a new IKE SA with the peer whose address it is (else the DVIPA's first peer).
pub(super) fn negotiate(side: &mut DistributorSide, dvipa: &str, remote: IpAddr, now: Instant) {
    let Some(entry) = side.dvipas.iter().find(|d| d.dvipa == dvipa) else {
        return;
    };
    let existing = entry.current.first().map(|c| c.0);
    let result = match existing {
        Some(ike_sa) => side.endpoint.create_child(now, ike_sa),
        None => {
            let by_address = entry.peers.iter().find(|p| p.remote_addr == Some(remote));
            let Some(peer) = by_address.or_else(|| entry.peers.first()) else {
                return;
            };
            let Some(peer_addr) = peer.remote_addr else {
                return;
            };
            side.endpoint
                .initiate(
                    now,
                    &peer.name,
                    SocketAddr::new(entry.address, IKE_PORT),
                    SocketAddr::new(peer_addr, IKE_PORT),
                )
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => tracing::info!(%dvipa, %remote, "negotiating an SA"),
        Err(error) => tracing::warn!(%dvipa, %error, "negotiation not started"),
    }
}
