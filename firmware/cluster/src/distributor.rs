//! The distributor's side of SA distribution (seed figures 5, 6, 9 to 11), sans-io.
//!
//! IKE's results come in as [`IkeEvent`]s; the distributor stores each SA, gives it a CF slot,
//! sends it with its dynamic filters to the targets listed for its DVIPA, tracks their acks,
//! sums their lifesize reports and answers NEWCONN. What IKE must do comes out as
//! [`DistributorEvent`]s; frames come out of [`Distributor::poll_transmit`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use dvipsec_config::NodeView;
use dvipsec_esp::Direction;
use thiserror::Error;

use crate::error::LinkError;
use crate::lifesize::{level, AdaptiveThreshold, LimitLevel, Usage};
use crate::link::{Link, LinkSecurity, LinkTimers, PeerChange};
use crate::wire::{
    Connection, Flow, LifesizeEntry, Message, NewConnOutcome, NewConnRequest, SaInstall, SaRef,
    TakeoverNotice, TargetLoad, VipaEntry,
};
use crate::Transmit;

/// What IKE did, as input to the distributor.
#[derive(Debug, Clone)]
pub enum IkeEvent {
    /// IKE installed an SA. `cf_slot` and `lifesize_percent` are set by the distributor.
    Installed(Box<SaInstall>),
    /// IKE replaced `old` by `new`. Make before break: `old` (and its CF slot) stays on the
    /// targets until every target that is up has acknowledged `new`; then it is deleted.
    Rekeyed { old: SaRef, new: Box<SaInstall> },
    /// IKE deleted an SA.
    Deleted(SaRef),
    /// IKE could not negotiate the SA a NEWCONN asked for.
    NegotiationFailed { dvipa: String, flow: Flow },
}

/// What the distributor asks of IKE or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistributorEvent {
    /// The summed use of an SA reached a soft limit: rekey it.
    SoftLimitReached(SaRef),
    /// The summed use reached a hard limit: the SA must go.
    HardLimitReached(SaRef),
    /// A target asked for an SA covering `flow` (NEWCONN): negotiate one.
    NegotiateSa { dvipa: String, flow: Flow },
    /// Every target listed for the SA's DVIPA that is up has acknowledged it.
    Distributed(SaRef),
    /// A rekeyed SA was deleted from the targets (and its CF slot released) now that its
    /// replacement is everywhere: the distributor's own data path can drop it too.
    Retired(SaRef),
    /// The reporting threshold changed to `percent`.
    ThresholdChanged { percent: u8 },
    /// A target came up or restarted (and was sent the current SAs).
    TargetUp { node: String, restarted: bool },
    /// A target sent CONN_REPORT for `dvipa` ([`Distributor::connections`] has it): hand it to
    /// the takeover core.
    ConnReported { target: String, dvipa: String },
}

/// Resource bounds of the distributor (issue #12); each refusal is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistributorLimits {
    /// NEWCONN requests one target may have waiting for IKE.
    pub pending_newconn_per_target: usize,
    /// NEWCONN requests waiting for IKE, all targets together.
    pub pending_newconn_total: usize,
    /// SAs (each holds one CF slot) stored at once.
    pub cf_slots: usize,
}

impl Default for DistributorLimits {
    fn default() -> Self {
        DistributorLimits {
            pending_newconn_per_target: 256,
            pending_newconn_total: 4096,
            cf_slots: 65_536,
        }
    }
}

/// What a coupling-facility slot is allocated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRequest {
    pub dvipa: IpAddr,
    pub spi: u32,
    pub direction: Direction,
    /// The SA's replay window (0: anti-replay off).
    pub replay_window: u32,
}

/// Allocates coupling-facility slots for SAs (see `cf::CfSlots` for the real facility).
pub trait SlotAllocator {
    fn allocate(&mut self, request: &SlotRequest) -> Result<u64, DistributorError>;
    fn release(&mut self, slot: u64) -> Result<(), DistributorError>;
}

/// Slot numbers `0..capacity`, reused after release: for tests and for stacks without a CF.
#[derive(Debug, Clone)]
pub struct SlotPool {
    free: Vec<u64>,
    next: u64,
    capacity: u64,
}

impl SlotPool {
    pub fn new(capacity: u64) -> SlotPool {
        SlotPool {
            free: Vec::new(),
            next: 0,
            capacity,
        }
    }
}

impl SlotAllocator for SlotPool {
    fn allocate(&mut self, _request: &SlotRequest) -> Result<u64, DistributorError> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        if self.next >= self.capacity {
            return Err(DistributorError::NoFreeSlot {
                capacity: self.capacity,
            });
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    fn release(&mut self, slot: u64) -> Result<(), DistributorError> {
        if slot >= self.next || self.free.contains(&slot) {
            return Err(DistributorError::UnknownSlot { slot });
        }
        self.free.push(slot);
        Ok(())
    }
}

/// Why the distributor refused an input.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum DistributorError {
    #[error("DVIPA {dvipa} is not owned by this distributor")]
    NotOwned { dvipa: String },
    #[error("no SA {spi:#x} ({direction:?}) for DVIPA {dvipa}")]
    UnknownSa {
        dvipa: String,
        direction: crate::wire::WireDirection,
        spi: u32,
    },
    #[error("SA {spi:#x} of DVIPA {dvipa} is already installed with other parameters")]
    Conflicting { dvipa: String, spi: u32 },
    #[error("all {capacity} coupling-facility slots are in use")]
    NoFreeSlot { capacity: u64 },
    #[error("a replay window of {window} is wider than a coupling-facility slot holds")]
    WindowTooWide { window: u32 },
    #[error("coupling-facility slot {slot} is not allocated")]
    UnknownSlot { slot: u64 },
    #[error("coupling facility: {source}")]
    Cf {
        #[source]
        source: std::sync::Arc<dvipsec_cf::CfError>,
    },
    #[error("the limit of {limit} CF slots in use is reached")]
    SlotLimit { limit: usize },
    #[error("frame from {node}, which is not a target of this distributor")]
    UnknownNode { node: String },
    #[error("link to {node}: {source}")]
    Link {
        node: String,
        #[source]
        source: LinkError,
    },
}

impl DistributorError {
    /// Wraps a failure of the link to `node`, naming the node.
    fn link(node: &str) -> impl FnOnce(LinkError) -> Self + '_ {
        move |source| DistributorError::Link {
            node: node.to_owned(),
            source,
        }
    }
}

/// Counters of the distributor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DistributorCounters {
    pub installs_sent: u64,
    pub deletes_sent: u64,
    pub lifesize_reports: u64,
    pub lifesize_unknown_sa: u64,
    /// Reports from a node that is no target of the SA's DVIPA (ignored).
    pub lifesize_not_served: u64,
    /// Slots the facility would not release (the SA is gone all the same).
    pub slot_release_failures: u64,
    /// Replaced SAs deleted once their replacement had reached every target.
    pub replaced_sas_retired: u64,
    pub unexpected_messages: u64,
    /// NEWCONNs refused because their target had `pending_newconn_per_target` waiting.
    pub newconn_refused_target_limit: u64,
    /// NEWCONNs refused because `pending_newconn_total` were waiting.
    pub newconn_refused_global_limit: u64,
    /// SAs refused because `cf_slots` slots were in use.
    pub slot_limit_refusals: u64,
    /// TAKEOVER notices sent.
    pub takeovers_sent: u64,
}

struct StoredSa {
    install: SaInstall,
    acked_by: BTreeSet<String>,
    used: Usage,
    level: LimitLevel,
}

/// A rekeyed SA kept until its replacement has reached every target.
struct Replacement {
    new: SaRef,
    old: SaRef,
}

struct WaitingConn {
    dvipa: String,
    flow: Flow,
    target: String,
    request_id: u32,
}

/// The distributor core of one stack.
pub struct Distributor {
    /// Target nodes of each owned DVIPA (resolved DESTIP).
    targets: BTreeMap<String, Vec<String>>,
    /// Address of each owned DVIPA.
    addresses: BTreeMap<String, IpAddr>,
    links: BTreeMap<String, Link>,
    sas: BTreeMap<SaRef, StoredSa>,
    /// Rekeys whose old SA waits for the new one to be acknowledged everywhere.
    replacements: Vec<Replacement>,
    slots: Box<dyn SlotAllocator>,
    threshold: AdaptiveThreshold,
    waiting: Vec<WaitingConn>,
    vipalists: BTreeMap<String, Vec<VipaEntry>>,
    loads: BTreeMap<String, TargetLoad>,
    connections: BTreeMap<(String, String), Vec<Connection>>,
    events: VecDeque<DistributorEvent>,
    counters: DistributorCounters,
    silence_limit: Duration,
    security: LinkSecurity,
    /// This stack, for links to targets of DVIPAs adopted later.
    node: String,
    incarnation: u64,
    timers: LinkTimers,
    limits: DistributorLimits,
    /// The TAKEOVER epoch sent for each DVIPA, sent again to a target that (re)starts.
    notices: BTreeMap<String, u64>,
}

impl Distributor {
    /// The distributor of the DVIPAs `view` owns, with a link to every one of their targets.
    pub fn new(
        view: &NodeView,
        incarnation: u64,
        security: LinkSecurity,
        slots: Box<dyn SlotAllocator>,
        now: Duration,
    ) -> Distributor {
        let timers = LinkTimers::with_heartbeat(Duration::from_millis(u64::from(
            view.xcf_link.heartbeat_ms.value,
        )));
        let targets: BTreeMap<String, Vec<String>> = view
            .owns
            .iter()
            .map(|owned| (owned.dvipa.clone(), owned.targets.clone()))
            .collect();
        let links = targets
            .values()
            .flatten()
            .map(|node| {
                let link = Link::new(&view.node, incarnation, security, timers, now);
                (node.clone(), link)
            })
            .collect();
        let adaptive = &view.lifesize.adaptive;
        let addresses = view
            .owns
            .iter()
            .map(|owned| (owned.dvipa.clone(), owned.address))
            .collect();
        Distributor {
            targets,
            addresses,
            links,
            sas: BTreeMap::new(),
            replacements: Vec::new(),
            slots,
            threshold: AdaptiveThreshold::new(
                view.lifesize.threshold_percent.value,
                adaptive.min_percent.value,
                adaptive.max_percent.value,
            ),
            waiting: Vec::new(),
            vipalists: BTreeMap::new(),
            loads: BTreeMap::new(),
            connections: BTreeMap::new(),
            events: VecDeque::new(),
            counters: DistributorCounters::default(),
            silence_limit: Duration::from_millis(u64::from(
                view.xcf_link.takeover_timeout_ms.value,
            )),
            security,
            node: view.node.clone(),
            incarnation,
            timers,
            limits: DistributorLimits::default(),
            notices: BTreeMap::new(),
        }
    }

    /// A distributor that distributes nothing yet: with a takeover core, a DVIPA is only
    /// distributed once the core says this node owns it ([`Distributor::adopt`]), so a box
    /// that comes back does not take its configured DVIPAs from the backup that holds them.
    pub fn idle(
        view: &NodeView,
        incarnation: u64,
        security: LinkSecurity,
        slots: Box<dyn SlotAllocator>,
        now: Duration,
    ) -> Distributor {
        let mut distributor = Distributor::new(view, incarnation, security, slots, now);
        distributor.targets.clear();
        distributor.addresses.clear();
        distributor.links.clear();
        distributor
    }

    /// Allocates slots from `slots` from now on: after a takeover or rejoin of the CF region
    /// the old handle is fenced, and the stored SAs' slots are released through the new one.
    pub fn replace_slots(&mut self, slots: Box<dyn SlotAllocator>) {
        self.slots = slots;
    }

    pub fn set_limits(&mut self, limits: DistributorLimits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> DistributorLimits {
        self.limits
    }

    /// The DVIPAs this distributor distributes now.
    pub fn dvipas(&self) -> Vec<&str> {
        self.targets.keys().map(String::as_str).collect()
    }

    /// NEWCONN requests waiting for IKE.
    pub fn pending_newconns(&self) -> usize {
        self.waiting.len()
    }

    /// Starts distributing `dvipa` (a takeover or a planned move): its SAs will go to
    /// `targets`, with links made to those this stack had none to. IKE's SAs for it come in
    /// as usual afterwards.
    pub fn adopt(&mut self, dvipa: &str, address: IpAddr, targets: Vec<String>, now: Duration) {
        for target in &targets {
            if !self.links.contains_key(target) {
                let link = Link::new(
                    &self.node,
                    self.incarnation,
                    self.security,
                    self.timers,
                    now,
                );
                self.links.insert(target.clone(), link);
            }
        }
        self.addresses.insert(dvipa.to_owned(), address);
        self.targets.insert(dvipa.to_owned(), targets);
    }

    /// Sends TAKEOVER(dvipa, cf_epoch) to every target of `dvipa`; a target not up yet gets it
    /// once its link is (the link holds sequenced messages until then).
    pub fn send_takeover(
        &mut self,
        dvipa: &str,
        cf_epoch: u64,
        now: Duration,
    ) -> Result<(), DistributorError> {
        let targets =
            self.targets
                .get(dvipa)
                .cloned()
                .ok_or_else(|| DistributorError::NotOwned {
                    dvipa: dvipa.to_owned(),
                })?;
        self.notices.insert(dvipa.to_owned(), cf_epoch);
        let message = Message::Takeover(TakeoverNotice {
            dvipa: dvipa.to_owned(),
            cf_epoch,
        });
        let mut first_error = None;
        for target in &targets {
            let Some(link) = self.links.get_mut(target) else {
                continue;
            };
            match link.send(message.clone(), now) {
                Ok(()) => self.counters.takeovers_sent += 1,
                Err(err) => {
                    first_error.get_or_insert(DistributorError::link(target)(err));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops distributing `dvipa` (it moved away): its SAs are deleted from the targets and
    /// their CF slots released; waiting NEWCONNs are refused.
    pub fn release(&mut self, dvipa: &str, now: Duration) -> Result<(), DistributorError> {
        if !self.targets.contains_key(dvipa) {
            return Err(DistributorError::NotOwned {
                dvipa: dvipa.to_owned(),
            });
        }
        self.answer_waiting(dvipa, |_| true, NewConnOutcome::Refused, now);
        self.replacements
            .retain(|r| r.old.dvipa != dvipa && r.new.dvipa != dvipa);
        let owned: Vec<SaRef> = self
            .sas
            .keys()
            .filter(|sa| sa.dvipa == dvipa)
            .cloned()
            .collect();
        let mut first_error = None;
        for sa in owned {
            if let Err(err) = self.delete(&sa, now) {
                first_error.get_or_insert(err);
            }
        }
        self.targets.remove(dvipa);
        self.addresses.remove(dvipa);
        self.notices.remove(dvipa);
        first_error.map_or(Ok(()), Err)
    }

    pub fn counters(&self) -> DistributorCounters {
        self.counters
    }

    pub fn threshold_percent(&self) -> u8 {
        self.threshold.percent()
    }

    /// The SAs stored for `dvipa`.
    pub fn sas(&self, dvipa: &str) -> Vec<&SaInstall> {
        self.sas
            .values()
            .filter(|s| s.install.dvipa == dvipa)
            .map(|s| &s.install)
            .collect()
    }

    /// Summed use of an SA, from the targets' reports.
    pub fn usage(&self, sa: &SaRef) -> Option<Usage> {
        self.sas.get(sa).map(|s| s.used)
    }

    /// Targets that acknowledged the SA.
    pub fn acked_by(&self, sa: &SaRef) -> Vec<String> {
        self.sas
            .get(sa)
            .map(|s| s.acked_by.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// SAs replaced by a rekey and still installed, waiting for their replacement to reach
    /// every target: (old, new).
    pub fn awaiting_retirement(&self) -> Vec<(&SaRef, &SaRef)> {
        self.replacements.iter().map(|r| (&r.old, &r.new)).collect()
    }

    pub fn vipalist(&self, target: &str) -> Option<&[VipaEntry]> {
        self.vipalists.get(target).map(Vec::as_slice)
    }

    pub fn load(&self, target: &str) -> Option<TargetLoad> {
        self.loads.get(target).copied()
    }

    /// The connections `target` last reported for `dvipa` (to rebuild the DCT).
    pub fn connections(&self, target: &str, dvipa: &str) -> &[Connection] {
        self.connections
            .get(&(target.to_owned(), dvipa.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Targets that were up and have sent nothing (not even a heartbeat) for the site's
    /// takeover timeout.
    pub fn silent_targets(&self, now: Duration) -> Vec<String> {
        self.links
            .iter()
            .filter(|(_, link)| link.is_silent(now, self.silence_limit))
            .map(|(node, _)| node.clone())
            .collect()
    }

    pub fn link(&self, target: &str) -> Option<&Link> {
        self.links.get(target)
    }

    pub fn poll_event(&mut self) -> Option<DistributorEvent> {
        self.events.pop_front()
    }

    /// Takes in what IKE did.
    pub fn handle_ike(&mut self, event: IkeEvent, now: Duration) -> Result<(), DistributorError> {
        match event {
            IkeEvent::Installed(install) => self.install(*install, now),
            IkeEvent::Rekeyed { old, new } => {
                // Adapt first, so the new SA is reported on with the new threshold.
                let reached = self
                    .sas
                    .get(&old)
                    .map(|stored| stored.level)
                    .ok_or_else(|| DistributorError::UnknownSa {
                        dvipa: old.dvipa.clone(),
                        direction: old.direction,
                        spi: old.spi,
                    })?;
                self.adapt_threshold(reached);
                let new_ref = new.sa_ref();
                self.install(*new, now)?;
                self.replacements.push(Replacement { new: new_ref, old });
                // With no target up (or the new SA already everywhere) the old one goes now.
                self.retire_replaced(now)
            }
            IkeEvent::Deleted(sa) => {
                // A delete without a replacement says nothing about rekey timing.
                self.delete(&sa, now)?;
                self.forget_replacements_of(&sa, now)
            }
            IkeEvent::NegotiationFailed { dvipa, flow } => {
                self.answer_waiting(
                    &dvipa,
                    |f| *f == flow,
                    NewConnOutcome::NegotiationFailed,
                    now,
                );
                Ok(())
            }
        }
    }

    fn install(&mut self, mut install: SaInstall, now: Duration) -> Result<(), DistributorError> {
        let Some(targets) = self.targets.get(&install.dvipa).cloned() else {
            return Err(DistributorError::NotOwned {
                dvipa: install.dvipa,
            });
        };
        // Refuse before storing anything: a stored SA that can never be sent would look
        // installed to a retry.
        if !self.security.may_carry_keys() {
            return Err(DistributorError::Link {
                node: targets.join(","),
                source: LinkError::KeysOnUnprotectedLink,
            });
        }
        let sa = install.sa_ref();
        if let Some(stored) = self.sas.get(&sa) {
            install.cf_slot = stored.install.cf_slot;
            install.lifesize_percent = stored.install.lifesize_percent;
            if stored.install == install {
                return Ok(());
            }
            return Err(DistributorError::Conflicting {
                dvipa: install.dvipa,
                spi: install.spi,
            });
        }
        let address = self.addresses.get(&install.dvipa).copied().ok_or_else(|| {
            DistributorError::NotOwned {
                dvipa: install.dvipa.clone(),
            }
        })?;
        if self.sas.len() >= self.limits.cf_slots {
            self.counters.slot_limit_refusals += 1;
            return Err(DistributorError::SlotLimit {
                limit: self.limits.cf_slots,
            });
        }
        install.cf_slot = self.slots.allocate(&SlotRequest {
            dvipa: address,
            spi: install.spi,
            direction: install.direction,
            replay_window: install.replay_window,
        })?;
        install.lifesize_percent = self.threshold.percent();
        let message = Message::SaInstall(Box::new(install.clone()));
        if let Err(source) = crate::wire::check_encodable(&message) {
            // Names over 255 bytes and the like: nothing is stored, the slot goes back.
            let _ = self.slots.release(install.cf_slot);
            return Err(DistributorError::Link {
                node: targets.join(","),
                source: LinkError::Wire(source),
            });
        }
        self.sas.insert(
            sa.clone(),
            StoredSa {
                install,
                acked_by: BTreeSet::new(),
                used: Usage::default(),
                level: LimitLevel::Below,
            },
        );
        let sent = self.broadcast(&targets, &message, now);
        self.counters.installs_sent += targets.len() as u64;
        if sa.direction == crate::wire::WireDirection::Outbound {
            self.answer_installed(&sa, now);
        }
        sent
    }

    fn delete(&mut self, sa: &SaRef, now: Duration) -> Result<(), DistributorError> {
        let stored = self
            .sas
            .remove(sa)
            .ok_or_else(|| DistributorError::UnknownSa {
                dvipa: sa.dvipa.clone(),
                direction: sa.direction,
                spi: sa.spi,
            })?;
        if self.slots.release(stored.install.cf_slot).is_err() {
            self.counters.slot_release_failures += 1;
        }
        let targets = self.targets.get(&sa.dvipa).cloned().unwrap_or_default();
        self.counters.deletes_sent += targets.len() as u64;
        self.broadcast(&targets, &Message::SaDelete(sa.clone()), now)
    }

    /// Deletes every replaced SA whose replacement all targets that are up have acknowledged.
    fn retire_replaced(&mut self, now: Duration) -> Result<(), DistributorError> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replacements)
            .into_iter()
            .partition(|r| self.reached_every_up_target(&r.new));
        self.replacements = waiting;
        let mut first_error = None;
        for replacement in ready {
            // A second rekey of the same SA may have retired it already.
            if !self.sas.contains_key(&replacement.old) {
                continue;
            }
            self.counters.replaced_sas_retired += 1;
            if let Err(err) = self.delete(&replacement.old, now) {
                first_error.get_or_insert(err);
            }
            self.events
                .push_back(DistributorEvent::Retired(replacement.old));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// IKE deleted `sa`. A replaced SA that IKE deleted needs no retiring; one whose
    /// replacement IKE deleted before it was everywhere goes too (IKE holds neither).
    fn forget_replacements_of(
        &mut self,
        sa: &SaRef,
        now: Duration,
    ) -> Result<(), DistributorError> {
        let (orphaned, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replacements)
            .into_iter()
            .filter(|r| r.old != *sa)
            .partition(|r| r.new == *sa);
        self.replacements = kept;
        let mut first_error = None;
        for replacement in orphaned {
            if self.sas.contains_key(&replacement.old) {
                if let Err(err) = self.delete(&replacement.old, now) {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether every target of the SA's DVIPA that is up has acknowledged it.
    fn reached_every_up_target(&self, sa: &SaRef) -> bool {
        let Some(stored) = self.sas.get(sa) else {
            return false;
        };
        self.targets.get(&sa.dvipa).is_some_and(|targets| {
            targets.iter().all(|t| {
                stored.acked_by.contains(t)
                    || self
                        .links
                        .get(t)
                        .is_some_and(|l| l.peer_incarnation().is_none())
            })
        })
    }

    /// Sends to every target (that is up), even when one fails; returns the first failure.
    fn broadcast(
        &mut self,
        targets: &[String],
        message: &Message,
        now: Duration,
    ) -> Result<(), DistributorError> {
        let mut first_error = None;
        for target in targets {
            if let Err(err) = self.send_to_up(target, message.clone(), now) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// An SA is replaced: if it had reached its hard limit IKE was late, if only its soft limit
    /// IKE was on time.
    fn adapt_threshold(&mut self, reached: LimitLevel) {
        let before = self.threshold.percent();
        match reached {
            LimitLevel::Hard => self.threshold.rekey_late(),
            LimitLevel::Soft => self.threshold.rekey_on_time(),
            LimitLevel::Below => return,
        }
        if self.threshold.percent() != before {
            self.events.push_back(DistributorEvent::ThresholdChanged {
                percent: self.threshold.percent(),
            });
        }
    }

    /// Sends to a target whose link is up; one that is not yet up gets the current SAs when
    /// its HELLO arrives.
    fn send_to_up(
        &mut self,
        target: &str,
        message: Message,
        now: Duration,
    ) -> Result<(), DistributorError> {
        let Some(link) = self.links.get_mut(target) else {
            return Ok(());
        };
        if link.peer_incarnation().is_none() {
            return Ok(());
        }
        link.send(message, now)
            .map_err(DistributorError::link(target))
    }

    /// Takes in one frame from the target `from`.
    pub fn handle(
        &mut self,
        from: &str,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), DistributorError> {
        let link = self
            .links
            .get_mut(from)
            .ok_or_else(|| DistributorError::UnknownNode {
                node: from.to_owned(),
            })?;
        let received = link
            .handle(bytes, now)
            .map_err(DistributorError::link(from))?;
        if let Some(change) = received.peer {
            self.target_up(from, change, now)?;
        }
        for message in received.acked {
            if let Message::SaInstall(install) = message {
                self.note_ack(from, &install.sa_ref());
            }
        }
        for message in received.messages {
            self.on_message(from, message, now)?;
        }
        self.retire_replaced(now)
    }

    fn target_up(
        &mut self,
        node: &str,
        change: PeerChange,
        now: Duration,
    ) -> Result<(), DistributorError> {
        self.waiting.retain(|w| w.target != node);
        self.vipalists.remove(node);
        // A target that (re)starts follows its configured owner: TAKEOVER goes first, so it
        // takes the SAs that follow from us.
        let notices: Vec<Message> = self
            .notices
            .iter()
            .filter(|(dvipa, _)| {
                self.targets
                    .get(*dvipa)
                    .is_some_and(|t| t.iter().any(|n| n == node))
            })
            .map(|(dvipa, epoch)| {
                Message::Takeover(TakeoverNotice {
                    dvipa: dvipa.clone(),
                    cf_epoch: *epoch,
                })
            })
            .collect();
        let current: Vec<Message> = self
            .sas
            .values_mut()
            .filter(|stored| {
                self.targets
                    .get(&stored.install.dvipa)
                    .is_some_and(|t| t.iter().any(|n| n == node))
            })
            .map(|stored| {
                stored.acked_by.remove(node);
                Message::SaInstall(Box::new(stored.install.clone()))
            })
            .collect();
        let mut first_error = None;
        for message in notices {
            self.counters.takeovers_sent += 1;
            if let Err(err) = self.send_to_up(node, message, now) {
                first_error.get_or_insert(err);
            }
        }
        for message in current {
            self.counters.installs_sent += 1;
            if let Err(err) = self.send_to_up(node, message, now) {
                first_error.get_or_insert(err);
            }
        }
        self.events.push_back(DistributorEvent::TargetUp {
            node: node.to_owned(),
            restarted: matches!(change, PeerChange::Restarted { .. }),
        });
        first_error.map_or(Ok(()), Err)
    }

    fn note_ack(&mut self, target: &str, sa: &SaRef) {
        let Some(stored) = self.sas.get_mut(sa) else {
            return;
        };
        stored.acked_by.insert(target.to_owned());
        if self.reached_every_up_target(sa) {
            self.events
                .push_back(DistributorEvent::Distributed(sa.clone()));
        }
    }

    fn on_message(
        &mut self,
        from: &str,
        message: Message,
        now: Duration,
    ) -> Result<(), DistributorError> {
        match message {
            Message::VipaList(entries) => {
                self.vipalists.insert(from.to_owned(), entries);
            }
            Message::Lifesize(entries) => self.on_lifesize(from, entries),
            Message::NewConnRequest(request) => self.on_newconn(from, request, now)?,
            Message::ConnReport { dvipa, connections } => {
                self.connections
                    .insert((from.to_owned(), dvipa.clone()), connections);
                self.events.push_back(DistributorEvent::ConnReported {
                    target: from.to_owned(),
                    dvipa,
                });
            }
            Message::TargetLoad(load) => {
                self.loads.insert(from.to_owned(), load);
            }
            _ => self.counters.unexpected_messages += 1,
        }
        Ok(())
    }

    fn on_lifesize(&mut self, from: &str, entries: Vec<LifesizeEntry>) {
        for entry in entries {
            self.counters.lifesize_reports += 1;
            let reporter_serves = self
                .targets
                .get(&entry.sa.dvipa)
                .is_some_and(|t| t.iter().any(|n| n == from));
            if !reporter_serves {
                self.counters.lifesize_not_served += 1;
                continue;
            }
            let Some(stored) = self.sas.get_mut(&entry.sa) else {
                self.counters.lifesize_unknown_sa += 1;
                continue;
            };
            stored.used.add(entry.bytes, entry.packets);
            let now_level = level(&stored.install.lifetime, stored.used);
            if now_level > stored.level {
                stored.level = now_level;
                self.events.push_back(match now_level {
                    LimitLevel::Hard => DistributorEvent::HardLimitReached(entry.sa),
                    _ => DistributorEvent::SoftLimitReached(entry.sa),
                });
            }
        }
    }

    fn on_newconn(
        &mut self,
        from: &str,
        request: NewConnRequest,
        now: Duration,
    ) -> Result<(), DistributorError> {
        let serves = self
            .targets
            .get(&request.dvipa)
            .is_some_and(|t| t.iter().any(|n| n == from));
        let outcome = if !serves {
            Some(NewConnOutcome::Refused)
        } else if self.covering_sa(&request.dvipa, &request.flow).is_some() {
            Some(NewConnOutcome::Installed)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            return self.respond(from, request.request_id, outcome, now);
        }
        if let Some(refusal) = self.over_newconn_limit(from) {
            *refusal += 1;
            return self.respond(from, request.request_id, NewConnOutcome::Refused, now);
        }
        let first = !self
            .waiting
            .iter()
            .any(|w| w.dvipa == request.dvipa && w.flow == request.flow);
        if first {
            self.events.push_back(DistributorEvent::NegotiateSa {
                dvipa: request.dvipa.clone(),
                flow: request.flow,
            });
        }
        self.waiting.push(WaitingConn {
            dvipa: request.dvipa,
            flow: request.flow,
            target: from.to_owned(),
            request_id: request.request_id,
        });
        Ok(())
    }

    /// The counter to bump when one more waiting NEWCONN from `target` is over a limit.
    fn over_newconn_limit(&mut self, target: &str) -> Option<&mut u64> {
        let from_target = self.waiting.iter().filter(|w| w.target == target).count();
        if from_target >= self.limits.pending_newconn_per_target {
            return Some(&mut self.counters.newconn_refused_target_limit);
        }
        if self.waiting.len() >= self.limits.pending_newconn_total {
            return Some(&mut self.counters.newconn_refused_global_limit);
        }
        None
    }

    fn covering_sa(&self, dvipa: &str, flow: &Flow) -> Option<&SaInstall> {
        self.sas.values().map(|s| &s.install).find(|i| {
            i.dvipa == dvipa
                && i.direction == Direction::Outbound
                && i.filters.iter().any(|f| f.matches(flow))
        })
    }

    fn answer_installed(&mut self, sa: &SaRef, now: Duration) {
        let Some(stored) = self.sas.get(sa) else {
            return;
        };
        let filters = stored.install.filters.clone();
        self.answer_waiting(
            &sa.dvipa,
            |flow| filters.iter().any(|f| f.matches(flow)),
            NewConnOutcome::Installed,
            now,
        );
    }

    fn answer_waiting(
        &mut self,
        dvipa: &str,
        covers: impl Fn(&Flow) -> bool,
        outcome: NewConnOutcome,
        now: Duration,
    ) {
        let (answered, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.dvipa == dvipa && covers(&w.flow));
        self.waiting = still;
        for waiting in answered {
            // A target whose link went away gets no answer; its NEWCONN times out there.
            let _ = self.respond(&waiting.target, waiting.request_id, outcome, now);
        }
    }

    fn respond(
        &mut self,
        target: &str,
        request_id: u32,
        outcome: NewConnOutcome,
        now: Duration,
    ) -> Result<(), DistributorError> {
        self.send_to_up(
            target,
            Message::NewConnResponse {
                request_id,
                outcome,
            },
            now,
        )
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        self.links.iter_mut().find_map(|(node, link)| {
            link.poll_transmit(now).map(|bytes| Transmit {
                to: node.clone(),
                bytes,
            })
        })
    }

    /// When to call [`Distributor::poll_transmit`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.links.values().map(Link::poll_timeout).min()
    }
}
