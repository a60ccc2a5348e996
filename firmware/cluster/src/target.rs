//! The target's side (seed figures 7, 9 to 11), sans-io: the shadow SA cache by DVIPA with
//! its dynamic filters, lookups for the data path, lifesize batching and NEWCONN.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use dvipsec_config::NodeView;
use dvipsec_esp::{Direction, IpsecProtocol};
use thiserror::Error;

use crate::error::LinkError;
use crate::lifesize::{report_threshold, Usage};
use crate::link::{Link, LinkSecurity, LinkTimers, PeerChange};
use crate::wire::{
    Connection, Flow, LifesizeEntry, Message, NewConnOutcome, NewConnRequest, SaInstall, SaRef,
    TakeoverNotice, TargetLoad, VipaEntry,
};
use crate::Transmit;

/// How long a connection waits for its SA after NEWCONN unless told otherwise.
pub const DEFAULT_NEWCONN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the target refused something.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("frame from {node}, which distributes no DVIPA to this target")]
    UnknownNode { node: String },
    #[error("DVIPA {dvipa} is not served by this target")]
    NotServed { dvipa: String },
    #[error("{address} is not a DVIPA this target serves")]
    NotADvipa { address: IpAddr },
    #[error("{pending} connections already wait for an SA (the limit)")]
    TooManyPending { pending: usize },
    #[error("link to {node}: {source}")]
    Link {
        node: String,
        #[source]
        source: LinkError,
    },
}

impl TargetError {
    /// Wraps a failure of the link to `node`, naming the node.
    fn link(node: &str) -> impl FnOnce(LinkError) -> Self + '_ {
        move |source| TargetError::Link {
            node: node.to_owned(),
            source,
        }
    }
}

/// Why a packet found no SA; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSa {
    /// The SA was deleted: the packet is dropped.
    Deleted,
    /// No such SA was ever installed here.
    Unknown,
}

/// What happened at the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    Installed(SaRef),
    Deleted(SaRef),
    /// A connection waiting for its SA can go (its SYN is released).
    ConnectionReleased {
        request_id: u32,
        sa: SaRef,
    },
    /// The distributor refused the NEWCONN or IKE failed.
    ConnectionFailed {
        request_id: u32,
        outcome: NewConnOutcome,
    },
    /// No SA arrived in time; the pending connection is dropped.
    ConnectionTimedOut {
        request_id: u32,
    },
}

/// How a connection opened from this target goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnStart {
    /// An SA covers it: send now.
    Ready(SaRef),
    /// NEWCONN went to the distributor; wait for [`TargetEvent::ConnectionReleased`].
    Pending { request_id: u32 },
}

/// Counters of the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounters {
    pub installs: u64,
    pub duplicate_installs: u64,
    pub replaced_installs: u64,
    pub refused_not_served: u64,
    pub deletes: u64,
    pub drops_deleted_sa: u64,
    pub drops_unknown_sa: u64,
    pub lifesize_entries_sent: u64,
    pub lifesize_messages_sent: u64,
    pub unexpected_messages: u64,
    /// Connections refused because `pending_limit` already waited for NEWCONN.
    pub newconn_refused_limit: u64,
    /// TAKEOVER notices followed.
    pub takeovers: u64,
    /// TAKEOVER notices from a node that may not own the DVIPA, or older than one already
    /// followed (ignored).
    pub refused_takeovers: u64,
    /// SA_DELETEs from a node that does not distribute the SA's DVIPA (ignored).
    pub refused_deletes: u64,
}

/// A TAKEOVER this target followed: the runtime attaches to the CF in `cf_epoch` and sends
/// the DVIPA's connections with [`Target::report_connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    pub dvipa: String,
    pub distributor: String,
    pub cf_epoch: u64,
    /// False when the distributor stayed the same (only the CF epoch changed): the shadow
    /// SAs stay.
    pub switched: bool,
}

/// How many connections may wait for NEWCONN at once unless told otherwise.
pub const DEFAULT_PENDING_LIMIT: usize = 1024;

/// An SA in the shadow cache.
#[derive(Debug, Clone)]
pub struct ShadowSa {
    pub install: SaInstall,
    /// Use not yet reported.
    pub unreported: Usage,
    /// All use counted here.
    pub total: Usage,
}

#[derive(Debug, Clone)]
struct Served {
    address: IpAddr,
    ports: Vec<u16>,
    distributor: String,
}

struct PendingConn {
    dvipa: String,
    flow: Flow,
    deadline: Duration,
}

/// Remembers deleted SAs (bounded), so their late packets are counted as such.
const TOMBSTONES: usize = 4096;

/// The target core of one stack.
pub struct Target {
    served: BTreeMap<String, Served>,
    links: BTreeMap<String, Link>,
    cache: BTreeMap<String, BTreeMap<SaRef, ShadowSa>>,
    inbound: HashMap<(u32, u8, IpAddr), SaRef>,
    tombstones: BTreeSet<SaRef>,
    tombstone_order: VecDeque<SaRef>,
    report_due: BTreeMap<String, Vec<LifesizeEntry>>,
    pending: BTreeMap<u32, PendingConn>,
    next_request: u32,
    newconn_timeout: Duration,
    events: VecDeque<TargetEvent>,
    counters: TargetCounters,
    /// Every distributor that may own each DVIPA (owner and backups), with what it serves.
    candidates: BTreeMap<String, Vec<Served>>,
    owner_changes: VecDeque<OwnerChange>,
    /// The newest CF epoch a TAKEOVER named for each DVIPA, and who sent it: an older one is
    /// stale, and so is the same epoch from another node (each epoch has one fencer).
    takeover_epochs: BTreeMap<String, (u64, String)>,
    pending_limit: usize,
    node: String,
    incarnation: u64,
    security: LinkSecurity,
    timers: LinkTimers,
}

fn served_entry(s: &dvipsec_config::ServedDvipa) -> Served {
    let ports = match &s.ports {
        dvipsec_config::PortSet::All => Vec::new(),
        dvipsec_config::PortSet::List(list) => list
            .iter()
            .filter_map(|p| u16::try_from(p.value).ok())
            .collect(),
    };
    Served {
        address: s.address,
        ports,
        distributor: s.distributor.clone(),
    }
}

impl Target {
    /// The target of the DVIPAs `view` serves now (standby entries wait for a takeover).
    pub fn new(view: &NodeView, incarnation: u64, security: LinkSecurity, now: Duration) -> Target {
        let timers = LinkTimers::with_heartbeat(Duration::from_millis(u64::from(
            view.xcf_link.heartbeat_ms.value,
        )));
        let served: BTreeMap<String, Served> = view
            .serves
            .iter()
            .filter(|s| !s.standby)
            .map(|s| (s.dvipa.clone(), served_entry(s)))
            .collect();
        let mut candidates: BTreeMap<String, Vec<Served>> = BTreeMap::new();
        for s in &view.serves {
            candidates
                .entry(s.dvipa.clone())
                .or_default()
                .push(served_entry(s));
        }
        let links = served
            .values()
            .map(|s| {
                let link = Link::new(&view.node, incarnation, security, timers, now);
                (s.distributor.clone(), link)
            })
            .collect();
        Target {
            served,
            links,
            cache: BTreeMap::new(),
            inbound: HashMap::new(),
            tombstones: BTreeSet::new(),
            tombstone_order: VecDeque::new(),
            report_due: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 1,
            newconn_timeout: DEFAULT_NEWCONN_TIMEOUT,
            events: VecDeque::new(),
            counters: TargetCounters::default(),
            candidates,
            owner_changes: VecDeque::new(),
            takeover_epochs: BTreeMap::new(),
            pending_limit: DEFAULT_PENDING_LIMIT,
            node: view.node.clone(),
            incarnation,
            security,
            timers,
        }
    }

    /// How many connections may wait for NEWCONN at once (issue #12): one more is refused
    /// with [`TargetError::TooManyPending`] and counted.
    pub fn set_pending_limit(&mut self, limit: usize) {
        self.pending_limit = limit;
    }

    /// The next TAKEOVER this target followed.
    pub fn poll_owner_change(&mut self) -> Option<OwnerChange> {
        self.owner_changes.pop_front()
    }

    /// The distributor this target follows for `dvipa` now.
    pub fn distributor_of(&self, dvipa: &str) -> Option<&str> {
        self.served.get(dvipa).map(|s| s.distributor.as_str())
    }

    fn may_own(&self, dvipa: &str, node: &str) -> Option<Served> {
        self.candidates
            .get(dvipa)?
            .iter()
            .find(|s| s.distributor == node)
            .cloned()
    }

    /// A TAKEOVER from `from`: follow it when it is one of the DVIPA's configured owners.
    /// The old owner's shadow SAs of the DVIPA go (the seed: removed and rebuilt with the new
    /// owner's SAs).
    fn on_takeover(&mut self, from: &str, notice: TakeoverNotice, now: Duration) {
        let stale = self
            .takeover_epochs
            .get(&notice.dvipa)
            .is_some_and(|(epoch, sender)| {
                notice.cf_epoch < *epoch || (notice.cf_epoch == *epoch && sender != from)
            });
        let Some(entry) = self.may_own(&notice.dvipa, from).filter(|_| !stale) else {
            // Not a possible owner, or an owner fenced since (a newer epoch was announced).
            self.counters.refused_takeovers += 1;
            return;
        };
        self.takeover_epochs
            .insert(notice.dvipa.clone(), (notice.cf_epoch, from.to_owned()));
        let switched = self.distributor_of(&notice.dvipa) != Some(from);
        if switched {
            let dropped: Vec<SaRef> = self
                .cache
                .get(&notice.dvipa)
                .map(|sas| sas.keys().cloned().collect())
                .unwrap_or_default();
            for sa in dropped {
                self.delete(&sa);
            }
            self.served.insert(notice.dvipa.clone(), entry);
            // The new owner learns what this target serves, as after HELLO.
            let _ = self.announce_vipas(from, now);
        }
        self.counters.takeovers += 1;
        self.owner_changes.push_back(OwnerChange {
            dvipa: notice.dvipa,
            distributor: from.to_owned(),
            cf_epoch: notice.cf_epoch,
            switched,
        });
    }

    /// How long NEWCONN waits for its SA.
    pub fn set_newconn_timeout(&mut self, timeout: Duration) {
        self.newconn_timeout = timeout;
    }

    pub fn counters(&self) -> TargetCounters {
        self.counters
    }

    pub fn poll_event(&mut self) -> Option<TargetEvent> {
        self.events.pop_front()
    }

    pub fn link(&self, distributor: &str) -> Option<&Link> {
        self.links.get(distributor)
    }

    /// The shadow SAs of `dvipa`.
    pub fn shadow_sas(&self, dvipa: &str) -> Vec<&ShadowSa> {
        self.cache
            .get(dvipa)
            .map(|sas| sas.values().collect())
            .unwrap_or_default()
    }

    /// Every SA in the cache.
    pub fn all_sas(&self) -> Vec<SaRef> {
        self.cache
            .values()
            .flat_map(|sas| sas.keys().cloned())
            .collect()
    }

    /// Inbound lookup for a packet: by (SPI, protocol, outer source address).
    pub fn inbound_lookup(
        &mut self,
        spi: u32,
        protocol: IpsecProtocol,
        source: IpAddr,
    ) -> Result<&ShadowSa, NoSa> {
        let found = self.inbound.get(&(spi, protocol_number(protocol), source));
        let Some(sa) = found else {
            let deleted = self
                .tombstones
                .iter()
                .any(|t| t.spi == spi && t.direction == crate::wire::WireDirection::Inbound);
            return Err(self.count_drop(deleted));
        };
        self.cache
            .get(&sa.dvipa)
            .and_then(|sas| sas.get(sa))
            .ok_or(NoSa::Unknown)
    }

    /// Outbound lookup: the outbound SA whose dynamic filter covers `flow`.
    pub fn outbound_lookup(&mut self, flow: &Flow) -> Result<&ShadowSa, NoSa> {
        let dvipa = self.dvipa_of(flow.local).map(str::to_owned);
        let found = dvipa.as_deref().and_then(|d| self.covering(d, flow));
        match found {
            Some(sa) => self
                .cache
                .get(&sa.dvipa)
                .and_then(|sas| sas.get(&sa))
                .ok_or(NoSa::Unknown),
            None => Err(self.count_drop(false)),
        }
    }

    fn count_drop(&mut self, deleted: bool) -> NoSa {
        if deleted {
            self.counters.drops_deleted_sa += 1;
            NoSa::Deleted
        } else {
            self.counters.drops_unknown_sa += 1;
            NoSa::Unknown
        }
    }

    /// Counts use of an SA by the data path. When its unreported use reaches the threshold
    /// it is queued for the next LIFESIZE batch. A deleted SA's use is dropped and counted.
    pub fn count(&mut self, sa: &SaRef, bytes: u64, packets: u64) -> Result<(), NoSa> {
        let Some(shadow) = self.cache.get_mut(&sa.dvipa).and_then(|s| s.get_mut(sa)) else {
            let deleted = self.tombstones.contains(sa);
            return Err(self.count_drop(deleted));
        };
        shadow.unreported.add(bytes, packets);
        shadow.total.add(bytes, packets);
        let (byte_step, packet_step) =
            report_threshold(&shadow.install.lifetime, shadow.install.lifesize_percent);
        let due = byte_step.is_some_and(|s| shadow.unreported.bytes >= s)
            || packet_step.is_some_and(|s| shadow.unreported.packets >= s);
        if !due {
            return Ok(());
        }
        let entry = LifesizeEntry {
            sa: sa.clone(),
            bytes: shadow.unreported.bytes,
            packets: shadow.unreported.packets,
        };
        shadow.unreported = Usage::default();
        if let Some(served) = self.served.get(&sa.dvipa) {
            self.report_due
                .entry(served.distributor.clone())
                .or_default()
                .push(entry);
        }
        Ok(())
    }

    /// Opens a connection from a served DVIPA to a peer (seed figure 11).
    pub fn open_connection(&mut self, flow: Flow, now: Duration) -> Result<ConnStart, TargetError> {
        let dvipa = self
            .dvipa_of(flow.local)
            .map(str::to_owned)
            .ok_or(TargetError::NotADvipa {
                address: flow.local,
            })?;
        if let Some(sa) = self.covering(&dvipa, &flow) {
            return Ok(ConnStart::Ready(sa));
        }
        if self.pending.len() >= self.pending_limit {
            self.counters.newconn_refused_limit += 1;
            return Err(TargetError::TooManyPending {
                pending: self.pending.len(),
            });
        }
        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        let distributor = self.served.get(&dvipa).map(|s| s.distributor.clone());
        let request = Message::NewConnRequest(NewConnRequest {
            request_id,
            dvipa: dvipa.clone(),
            flow,
        });
        if let Some(link) = distributor.as_deref().and_then(|d| self.links.get_mut(d)) {
            link.send(request, now).map_err(TargetError::link(
                distributor.as_deref().unwrap_or_default(),
            ))?;
        }
        self.pending.insert(
            request_id,
            PendingConn {
                dvipa,
                flow,
                deadline: now.saturating_add(self.newconn_timeout),
            },
        );
        Ok(ConnStart::Pending { request_id })
    }

    fn dvipa_of(&self, address: IpAddr) -> Option<&str> {
        self.served
            .iter()
            .find(|(_, s)| s.address == address)
            .map(|(name, _)| name.as_str())
    }

    fn covering(&self, dvipa: &str, flow: &Flow) -> Option<SaRef> {
        self.cache.get(dvipa)?.iter().find_map(|(sa, shadow)| {
            let outbound = shadow.install.direction == Direction::Outbound;
            let covers = shadow.install.filters.iter().any(|f| f.matches(flow));
            (outbound && covers).then(|| sa.clone())
        })
    }

    /// Takes in one frame from the distributor `from`.
    pub fn handle(&mut self, from: &str, bytes: &[u8], now: Duration) -> Result<(), TargetError> {
        let backup = self
            .candidates
            .values()
            .flatten()
            .any(|s| s.distributor == from);
        if backup && !self.links.contains_key(from) {
            // A backup distributor that took a DVIPA over reaches us for the first time.
            let link = Link::new(
                &self.node,
                self.incarnation,
                self.security,
                self.timers,
                now,
            );
            self.links.insert(from.to_owned(), link);
        }
        let link = self
            .links
            .get_mut(from)
            .ok_or_else(|| TargetError::UnknownNode {
                node: from.to_owned(),
            })?;
        let received = link.handle(bytes, now).map_err(TargetError::link(from))?;
        match received.peer {
            Some(PeerChange::Up { .. }) => self.announce_vipas(from, now)?,
            Some(PeerChange::Restarted { .. }) => {
                self.forget_sas_from(from);
                self.announce_vipas(from, now)?;
            }
            None => {}
        }
        for message in received.messages {
            match message {
                Message::Takeover(notice) => self.on_takeover(from, notice, now),
                message => self.on_message(from, message),
            }
        }
        Ok(())
    }

    /// A restarted distributor lost the SAs it had distributed: its DVIPAs' shadow SAs go, and
    /// it rebuilds them from its IKE state.
    fn forget_sas_from(&mut self, distributor: &str) {
        let orphaned: Vec<SaRef> = self
            .served
            .iter()
            .filter(|(_, s)| s.distributor == distributor)
            .filter_map(|(dvipa, _)| self.cache.get(dvipa))
            .flat_map(|sas| sas.keys().cloned())
            .collect();
        for sa in orphaned {
            self.delete(&sa);
        }
    }

    fn announce_vipas(&mut self, distributor: &str, now: Duration) -> Result<(), TargetError> {
        let entries: Vec<VipaEntry> = self
            .served
            .iter()
            .filter(|(_, s)| s.distributor == distributor)
            .map(|(name, s)| VipaEntry {
                dvipa: name.clone(),
                address: s.address,
                ports: s.ports.clone(),
            })
            .collect();
        if let Some(link) = self.links.get_mut(distributor) {
            link.send(Message::VipaList(entries), now)
                .map_err(TargetError::link(distributor))?;
        }
        Ok(())
    }

    fn on_message(&mut self, from: &str, message: Message) {
        match message {
            Message::SaInstall(install) => self.install(from, *install),
            Message::SaDelete(sa) => {
                // Only the DVIPA's distributor deletes its SAs (an old owner's late delete must
                // not hit the new owner's SA with the same SPI).
                if self.distributor_of(&sa.dvipa) == Some(from) {
                    self.delete(&sa);
                } else {
                    self.counters.refused_deletes += 1;
                }
            }
            Message::NewConnResponse {
                request_id,
                outcome,
            } => self.on_newconn_response(request_id, outcome),
            _ => self.counters.unexpected_messages += 1,
        }
    }

    fn install(&mut self, from: &str, install: SaInstall) {
        let served_by_sender = self
            .served
            .get(&install.dvipa)
            .is_some_and(|s| s.distributor == from);
        if !served_by_sender {
            self.counters.refused_not_served += 1;
            return;
        }
        let sa = install.sa_ref();
        let sas = self.cache.entry(install.dvipa.clone()).or_default();
        if let Some(existing) = sas.get(&sa) {
            if existing.install == install {
                self.counters.duplicate_installs += 1;
                return;
            }
            self.counters.replaced_installs += 1;
        }
        if install.direction == Direction::Inbound {
            let source = install.tunnel.map_or(install.peer, |t| t.src);
            let key = (install.spi, protocol_number(install.protocol), source);
            self.inbound.insert(key, sa.clone());
        }
        sas.insert(
            sa.clone(),
            ShadowSa {
                install,
                unreported: Usage::default(),
                total: Usage::default(),
            },
        );
        self.tombstones.remove(&sa);
        self.counters.installs += 1;
        self.events.push_back(TargetEvent::Installed(sa.clone()));
        self.release_pending(&sa);
    }

    fn release_pending(&mut self, sa: &SaRef) {
        let released: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.dvipa == sa.dvipa && self.covering(&p.dvipa, &p.flow).as_ref() == Some(sa)
            })
            .map(|(&id, _)| id)
            .collect();
        for request_id in released {
            self.pending.remove(&request_id);
            self.events.push_back(TargetEvent::ConnectionReleased {
                request_id,
                sa: sa.clone(),
            });
        }
    }

    fn delete(&mut self, sa: &SaRef) {
        let Some(removed) = self.cache.get_mut(&sa.dvipa).and_then(|sas| sas.remove(sa)) else {
            return;
        };
        self.inbound.retain(|_, indexed| indexed != sa);
        self.report_due
            .values_mut()
            .for_each(|entries| entries.retain(|e| e.sa != *sa));
        drop(removed);
        self.tombstones.insert(sa.clone());
        self.tombstone_order.push_back(sa.clone());
        if self.tombstone_order.len() > TOMBSTONES {
            if let Some(oldest) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&oldest);
            }
        }
        self.counters.deletes += 1;
        self.events.push_back(TargetEvent::Deleted(sa.clone()));
    }

    fn on_newconn_response(&mut self, request_id: u32, outcome: NewConnOutcome) {
        if outcome == NewConnOutcome::Installed {
            // The SA itself releases the connection when it arrives.
            return;
        }
        if self.pending.remove(&request_id).is_some() {
            self.events.push_back(TargetEvent::ConnectionFailed {
                request_id,
                outcome,
            });
        }
    }

    /// Expires pending connections whose SA did not come in time.
    pub fn handle_timeout(&mut self, now: Duration) {
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for request_id in expired {
            self.pending.remove(&request_id);
            self.events
                .push_back(TargetEvent::ConnectionTimedOut { request_id });
        }
    }

    /// Reports the connections this target holds for `dvipa` (CONN_REPORT), so its
    /// distributor can rebuild the distributed connection table.
    pub fn report_connections(
        &mut self,
        dvipa: &str,
        connections: Vec<Connection>,
        now: Duration,
    ) -> Result<(), TargetError> {
        let message = Message::ConnReport {
            dvipa: dvipa.to_owned(),
            connections,
        };
        self.send_to_distributor_of(dvipa, message, now)
    }

    /// Reports this target's load (TARGET_LOAD) to every distributor it serves.
    pub fn report_load(&mut self, load: TargetLoad, now: Duration) -> Result<(), TargetError> {
        for (node, link) in &mut self.links {
            link.send(Message::TargetLoad(load), now)
                .map_err(TargetError::link(node))?;
        }
        Ok(())
    }

    fn send_to_distributor_of(
        &mut self,
        dvipa: &str,
        message: Message,
        now: Duration,
    ) -> Result<(), TargetError> {
        let served = self
            .served
            .get(dvipa)
            .ok_or_else(|| TargetError::NotServed {
                dvipa: dvipa.to_owned(),
            })?;
        let node = served.distributor.clone();
        let Some(link) = self.links.get_mut(&node) else {
            return Err(TargetError::UnknownNode { node });
        };
        link.send(message, now)
            .map_err(|source| TargetError::Link { node, source })
    }

    /// Connections waiting for an SA.
    pub fn pending_connections(&self) -> usize {
        self.pending.len()
    }

    /// The next frame to send, if any. Due lifesize entries leave as one batch per distributor.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        self.flush_lifesize(now);
        self.links.iter_mut().find_map(|(node, link)| {
            link.poll_transmit(now).map(|bytes| Transmit {
                to: node.clone(),
                bytes,
            })
        })
    }

    fn flush_lifesize(&mut self, now: Duration) {
        for (distributor, entries) in std::mem::take(&mut self.report_due) {
            if entries.is_empty() {
                continue;
            }
            let Some(link) = self.links.get_mut(&distributor) else {
                continue;
            };
            let count = entries.len() as u64;
            // LIFESIZE carries no keys and a bounded batch, so the link takes it.
            if link.send(Message::Lifesize(entries), now).is_ok() {
                self.counters.lifesize_entries_sent += count;
                self.counters.lifesize_messages_sent += 1;
            }
        }
    }

    /// When to call [`Target::poll_transmit`] or [`Target::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let links = self.links.values().map(Link::poll_timeout);
        let pending = self.pending.values().map(|p| p.deadline);
        links.chain(pending).min()
    }
}

fn protocol_number(protocol: IpsecProtocol) -> u8 {
    match protocol {
        IpsecProtocol::Ah => 51,
        _ => 50,
    }
}
