//! Who owns each DVIPA, and what a node does when that changes (issue #10), sans-io.
//!
//! Every distributor-capable node runs this core on the same plans (from the site) and the same
//! rule, fed by its [`Membership`], so they agree without a vote:
//!
//! - An owner's heartbeats claim its DVIPAs with the CF epoch it took them in. The newest epoch
//!   wins (each takeover bumps the epoch), so a node that starts or comes back learns the
//!   owner, and a stale owner that hears a newer claim lets go.
//! - When the owner has *failed* (not merely partitioned from us) and we are not isolated, the
//!   live candidate first in the chain takes the DVIPA: the configured owner, then the
//!   backups by rank (VIPABACKUP, higher first), ties broken by node name. DVIPAs are decided
//!   one by one, so they may go to different backups.
//! - MOVEABLE IMMEDIATE as the issue states it: a returning owner does not take its DVIPA back
//!   unless its plan says so ([`DvipaPlan::take_back`], the site's `define.take_back`). Then
//!   the owner takes it over from the holder it heard claim it, and the holder lets go when
//!   it hears the owner's newer claim.
//!   [`Takeover::plan_move`] moves a DVIPA on purpose, without breaking connections.
//!
//! The new owner's work comes out as [`TakeoverAction`]s in order: adopt the DVIPA in the
//! distributor, fence the CF (new epoch), then announce the address, send TAKEOVER to the
//! targets (they drop the old owner's shadow SAs and answer with CONN_REPORT), renegotiate
//! with each peer, and put the reported connections back in the DCT.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use dvipsec_config::{BackupRef, NodeView};
use thiserror::Error;

use crate::membership::Membership;
use crate::wire::{Connection, Flow, OwnerClaim};

/// The rank the configured owner has in the chain: above every backup (1..=254).
const HOME_RANK: u32 = 255;

/// One DVIPA as the whole site defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvipaPlan {
    pub dvipa: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// The configured owner (VIPADEFINE).
    pub home: String,
    /// VIPABACKUP, highest rank first.
    pub backups: Vec<BackupRef>,
    /// The targets of each node that may own it (its VIPADISTRIBUTE).
    pub targets: BTreeMap<String, Vec<String>>,
    /// The IKE peers its policy names, with their addresses.
    pub peers: Vec<(String, IpAddr)>,
    /// The owner, once it is back, moves the DVIPA home (the site's `define.take_back`).
    pub take_back: bool,
}

impl DvipaPlan {
    /// Candidates in takeover order: the owner, then the backups by rank, ties by name.
    pub fn chain(&self) -> Vec<String> {
        let mut chain: Vec<(u32, &str)> = std::iter::once((HOME_RANK, self.home.as_str()))
            .chain(self.backups.iter().map(|b| (b.rank, b.node.as_str())))
            .collect();
        chain.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        chain.into_iter().map(|(_, node)| node.to_owned()).collect()
    }

    fn position(&self, node: &str) -> usize {
        self.chain()
            .iter()
            .position(|n| n == node)
            .unwrap_or(usize::MAX)
    }
}

/// The plans of every DVIPA, from the views of all the site's nodes
/// (`SiteConfig::node_views`).
pub fn plans_from_views(views: &[NodeView]) -> Vec<DvipaPlan> {
    let mut plans: BTreeMap<String, DvipaPlan> = BTreeMap::new();
    for view in views {
        for owned in &view.owns {
            let peers = view
                .peers
                .iter()
                .filter(|p| p.dvipas.contains(&owned.dvipa))
                .map(|p| (p.name.clone(), p.address))
                .collect();
            let plan = plans
                .entry(owned.dvipa.clone())
                .or_insert_with(|| DvipaPlan {
                    dvipa: owned.dvipa.clone(),
                    address: owned.address,
                    prefix_len: owned.prefix_len,
                    home: view.node.clone(),
                    backups: Vec::new(),
                    targets: BTreeMap::new(),
                    peers: Vec::new(),
                    take_back: false,
                });
            plan.home = view.node.clone();
            plan.take_back = owned.take_back;
            plan.backups = owned.backups.clone();
            plan.peers = peers;
            plan.targets
                .insert(view.node.clone(), owned.targets.clone());
        }
    }
    for view in views {
        for backed in &view.backs {
            if let Some(plan) = plans.get_mut(&backed.dvipa) {
                plan.targets
                    .insert(view.node.clone(), backed.targets.clone());
            }
        }
    }
    plans.into_values().collect()
}

/// Site-wide settings of the core (every node must use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverConfig {
    /// How long the new owner waits for CONN_REPORTs before it counts the rest as missing.
    pub rebuild_timeout: Duration,
}

impl Default for TakeoverConfig {
    fn default() -> Self {
        TakeoverConfig {
            rebuild_timeout: Duration::from_secs(2),
        }
    }
}

/// Why ownership moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    /// Nobody claimed it when the cluster came up: the first live candidate owns it.
    Startup,
    /// The owner failed.
    OwnerFailed,
    /// The operator moved it ([`Takeover::plan_move`]).
    Planned,
    /// The configured owner took it back (`take_back`).
    TakeBack,
    /// A newer claim (a later CF epoch) was heard.
    NewerClaim,
}

/// What the runtime does for the core, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverAction {
    /// Start distributing `dvipa` to `targets` (`Distributor::adopt`); IKE answers for it.
    Adopt {
        dvipa: String,
        address: IpAddr,
        targets: Vec<String>,
        reason: MoveReason,
    },
    /// Fence the previous owner: take the CF region over (a new epoch), release the slots the
    /// old owner left for the DVIPA (`RegionOwner::release_dvipa`), give the distributor the
    /// new handle (`Distributor::replace_slots`), then call [`Takeover::fenced`] with the epoch.
    FenceCf { dvipa: String },
    /// At startup nobody owned the DVIPA, so nobody needs fencing: attach to the CF region
    /// at its current epoch (`RegionOwner::rejoin(path, region.current_epoch())`, give the
    /// distributor the handle), then call [`Takeover::fenced`] with that epoch. (A fence here
    /// would fence the other owners starting at the same time.)
    AttachCf { dvipa: String },
    /// Our CF handle is of an older epoch than a live owner's claim: attach again at
    /// `cf_epoch` (`RegionOwner::rejoin`, then `Distributor::replace_slots`); the DVIPAs we
    /// keep were not taken from us.
    RejoinCf { cf_epoch: u64 },
    /// Gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) on the external port.
    Announce {
        dvipa: String,
        address: IpAddr,
        prefix_len: u8,
    },
    /// Send TAKEOVER(dvipa, cf_epoch) to the targets (`Distributor::send_takeover`).
    NotifyTargets {
        dvipa: String,
        cf_epoch: u64,
        targets: Vec<String>,
    },
    /// IKE initiates a new SA for the DVIPA with this peer (the old SAs died with the owner).
    Renegotiate {
        dvipa: String,
        peer: String,
        address: IpAddr,
    },
    /// Put these connections back in the DCT for `target`, without a SYN (`Dct::restore`).
    RestoreConnections {
        dvipa: String,
        target: String,
        flows: Vec<Flow>,
    },
    /// Every target reported (or the rebuild timeout passed): `missing` never did.
    Rebuilt {
        dvipa: String,
        connections: usize,
        missing: Vec<String>,
    },
    /// Stop owning: withdraw the address, delete the DVIPA's SAs from the targets
    /// (`Distributor::release`), stop IKE for it.
    Release { dvipa: String, to: String },
    /// The owner changed (every node hears of it).
    OwnerChanged {
        dvipa: String,
        owner: String,
        reason: MoveReason,
    },
}

/// Why the core refused a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TakeoverError {
    #[error("no DVIPA {dvipa} in the site")]
    UnknownDvipa { dvipa: String },
    #[error("{node} may not own {dvipa}: it is neither its owner nor a backup")]
    NotACandidate { dvipa: String, node: String },
    #[error("{node} is not up, {dvipa} cannot move to it")]
    NotAlive { dvipa: String, node: String },
    #[error("{dvipa} is not being taken over by this node")]
    NotTakingOver { dvipa: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the CF fence.
    Fencing,
    /// TAKEOVER sent; waiting for CONN_REPORTs.
    Rebuilding {
        waiting: BTreeSet<String>,
        deadline: Duration,
        connections: usize,
    },
    Serving,
}

#[derive(Debug, Clone)]
struct Dvipa {
    plan: DvipaPlan,
    owner: Option<String>,
    /// The epoch of the owner's claim (ours once fenced).
    epoch: u64,
    /// Our progress when we own it.
    phase: Option<Phase>,
}

/// Timings of the last takeover by this node, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverTimes {
    /// When this node decided to take the DVIPA.
    pub decided: Duration,
    /// When the CF fence was done.
    pub fenced: Option<Duration>,
    /// When the DCT was rebuilt.
    pub rebuilt: Option<Duration>,
}

/// The takeover core of one node.
pub struct Takeover {
    local: String,
    config: TakeoverConfig,
    dvipas: BTreeMap<String, Dvipa>,
    /// The newest CF epoch this node knows of.
    cf_epoch: u64,
    actions: VecDeque<TakeoverAction>,
    times: BTreeMap<String, TakeoverTimes>,
}

impl Takeover {
    /// The core of `local` for the DVIPAs it may own. Nothing is owned until the first
    /// [`Takeover::update`] after the joining period (a silence limit), so that claims are heard.
    pub fn new(local: &str, plans: Vec<DvipaPlan>, config: TakeoverConfig) -> Takeover {
        let dvipas = plans
            .into_iter()
            .filter(|plan| plan.chain().iter().any(|n| n == local))
            .map(|plan| {
                let state = Dvipa {
                    plan,
                    owner: None,
                    epoch: 0,
                    phase: None,
                };
                (state.plan.dvipa.clone(), state)
            })
            .collect();
        Takeover {
            local: local.to_owned(),
            config,
            dvipas,
            cf_epoch: 0,
            actions: VecDeque::new(),
            times: BTreeMap::new(),
        }
    }

    /// The owner of `dvipa` as this node sees it.
    pub fn owner(&self, dvipa: &str) -> Option<&str> {
        self.dvipas.get(dvipa)?.owner.as_deref()
    }

    /// The DVIPAs this node owns.
    pub fn owned(&self) -> Vec<&str> {
        self.dvipas
            .values()
            .filter(|d| d.owner.as_deref() == Some(self.local.as_str()))
            .map(|d| d.plan.dvipa.as_str())
            .collect()
    }

    /// Whether this node owns `dvipa` and finished taking it (fenced, DCT rebuilt).
    pub fn is_serving(&self, dvipa: &str) -> bool {
        self.dvipas
            .get(dvipa)
            .is_some_and(|d| d.phase == Some(Phase::Serving))
    }

    pub fn times(&self, dvipa: &str) -> Option<TakeoverTimes> {
        self.times.get(dvipa).copied()
    }

    pub fn poll_action(&mut self) -> Option<TakeoverAction> {
        self.actions.pop_front()
    }

    /// Re-decides every DVIPA from `membership` (call after its events and timers); also puts
    /// this node's claims in its heartbeats.
    pub fn update(&mut self, membership: &mut Membership, now: Duration) {
        let joining = now < membership.started() + membership.config().silence_limit();
        let names: Vec<String> = self.dvipas.keys().cloned().collect();
        for dvipa in &names {
            self.follow_claims(dvipa, membership);
            if !joining {
                self.decide(dvipa, membership, now);
            }
            self.check_rebuild_deadline(dvipa, now);
        }
        membership.set_claims(self.claims());
    }

    /// What this node's heartbeats claim: the DVIPAs it owns and has fenced for.
    pub fn claims(&self) -> Vec<OwnerClaim> {
        self.dvipas
            .values()
            .filter(|d| d.owner.as_deref() == Some(self.local.as_str()))
            .filter(|d| d.phase.as_ref().is_some_and(|p| *p != Phase::Fencing))
            .map(|d| OwnerClaim {
                dvipa: d.plan.dvipa.clone(),
                cf_epoch: d.epoch,
            })
            .collect()
    }

    /// The newest claim from live members: the newest epoch, ties by the chain.
    fn follow_claims(&mut self, dvipa: &str, membership: &Membership) {
        let Some(state) = self.dvipas.get(dvipa) else {
            return;
        };
        // Taking it over: the claims heard are older than the epoch our fence will make.
        if state.phase == Some(Phase::Fencing) {
            return;
        }
        let best = state
            .plan
            .chain()
            .into_iter()
            .filter(|node| *node != self.local)
            .filter_map(|node| {
                let epoch = membership
                    .claims_of(&node)
                    .iter()
                    .find(|c| c.dvipa == dvipa)?
                    .cf_epoch;
                Some((node, epoch))
            })
            .min_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| state.plan.position(&a.0).cmp(&state.plan.position(&b.0)))
            });
        let Some((node, epoch)) = best else {
            return;
        };
        let ours = state.owner.as_deref() == Some(self.local.as_str());
        let newer = !ours || epoch > state.epoch;
        let same = state.owner.as_deref() == Some(node.as_str());
        if !same && newer {
            if ours {
                self.actions.push_back(TakeoverAction::Release {
                    dvipa: dvipa.to_owned(),
                    to: node.clone(),
                });
            }
            self.set_owner(dvipa, &node, epoch, MoveReason::NewerClaim);
        }
        // After letting go: the rejoin must not announce a DVIPA we lost.
        if epoch > self.cf_epoch {
            self.rejoin(epoch);
        }
    }

    /// A live owner moved the CF to a newer epoch, which fenced our handle (and our targets')
    /// too: attach again, and tell our targets the epoch (same owner: they keep their SAs).
    fn rejoin(&mut self, epoch: u64) {
        self.cf_epoch = epoch;
        let local = self.local.clone();
        let serving: Vec<(String, Vec<String>)> = self
            .dvipas
            .values()
            .filter(|d| d.owner.as_deref() == Some(local.as_str()))
            .filter(|d| d.phase.as_ref().is_some_and(|p| *p != Phase::Fencing))
            .map(|d| {
                let targets = d.plan.targets.get(&local).cloned().unwrap_or_default();
                (d.plan.dvipa.clone(), targets)
            })
            .collect();
        if serving.is_empty() {
            return;
        }
        self.actions
            .push_back(TakeoverAction::RejoinCf { cf_epoch: epoch });
        for (dvipa, targets) in serving {
            self.actions.push_back(TakeoverAction::NotifyTargets {
                dvipa,
                cf_epoch: epoch,
                targets,
            });
        }
    }

    fn decide(&mut self, dvipa: &str, membership: &Membership, now: Duration) {
        let Some(state) = self.dvipas.get(dvipa) else {
            return;
        };
        if membership.is_isolated() {
            return;
        }
        let plan = state.plan.clone();
        match state.owner.clone() {
            None => {
                // A live member whose claims have not arrived yet may own the DVIPA.
                let unheard = plan
                    .chain()
                    .into_iter()
                    .any(|node| membership.is_alive(&node) && !membership.has_view(&node));
                if unheard {
                    return;
                }
                if let Some(first) = self.first_usable(&plan, None, membership) {
                    self.move_to(dvipa, &first, MoveReason::Startup, now);
                }
            }
            Some(owner) if owner != self.local && membership.has_failed(&owner) => {
                if let Some(next) = self.first_usable(&plan, Some(&owner), membership) {
                    self.move_to(dvipa, &next, MoveReason::OwnerFailed, now);
                }
            }
            // Only the owner decides to take its DVIPA back, once it heard who holds it; its
            // fence (a new epoch) and then its claim make the holder let go (`follow_claims`).
            // A holder that let go as soon as it heard the owner could do so before the owner
            // heard its claim: the owner, hearing no claim, started the DVIPA afresh (Startup:
            // no fence, no renegotiation) while the peers' SAs had died with the holder's.
            Some(owner) if plan.take_back && plan.home == self.local && owner != self.local => {
                if membership.is_alive(&owner) {
                    self.move_to(dvipa, &plan.home, MoveReason::TakeBack, now);
                }
            }
            Some(_) => {}
        }
    }

    /// The first candidate in the chain that is up (we are, not being isolated), skipping
    /// `except`.
    fn first_usable(
        &self,
        plan: &DvipaPlan,
        except: Option<&str>,
        membership: &Membership,
    ) -> Option<String> {
        plan.chain().into_iter().find(|node| {
            Some(node.as_str()) != except && (*node == self.local || membership.is_alive(node))
        })
    }

    /// Moves `dvipa` to `to` as every node sees it: the old owner (if us) releases, the new
    /// one (if us) starts taking over.
    fn move_to(&mut self, dvipa: &str, to: &str, reason: MoveReason, now: Duration) {
        let Some(state) = self.dvipas.get(dvipa) else {
            return;
        };
        if state.owner.as_deref() == Some(to) {
            return;
        }
        if state.owner.as_deref() == Some(self.local.as_str()) {
            self.actions.push_back(TakeoverAction::Release {
                dvipa: dvipa.to_owned(),
                to: to.to_owned(),
            });
        }
        self.set_owner(dvipa, to, 0, reason);
        if to == self.local {
            self.start(dvipa, reason, now);
        }
    }

    fn set_owner(&mut self, dvipa: &str, owner: &str, epoch: u64, reason: MoveReason) {
        let local = self.local.clone();
        let Some(state) = self.dvipas.get_mut(dvipa) else {
            return;
        };
        state.owner = Some(owner.to_owned());
        state.epoch = epoch;
        if owner != local {
            state.phase = None;
        }
        self.actions.push_back(TakeoverAction::OwnerChanged {
            dvipa: dvipa.to_owned(),
            owner: owner.to_owned(),
            reason,
        });
    }

    fn start(&mut self, dvipa: &str, reason: MoveReason, now: Duration) {
        let local = self.local.clone();
        let Some(state) = self.dvipas.get_mut(dvipa) else {
            return;
        };
        state.phase = Some(Phase::Fencing);
        let targets = state.plan.targets.get(&local).cloned().unwrap_or_default();
        self.actions.push_back(TakeoverAction::Adopt {
            dvipa: dvipa.to_owned(),
            address: state.plan.address,
            targets,
            reason,
        });
        self.actions.push_back(if reason == MoveReason::Startup {
            TakeoverAction::AttachCf {
                dvipa: dvipa.to_owned(),
            }
        } else {
            TakeoverAction::FenceCf {
                dvipa: dvipa.to_owned(),
            }
        });
        self.times.insert(
            dvipa.to_owned(),
            TakeoverTimes {
                decided: now,
                fenced: None,
                rebuilt: None,
            },
        );
    }

    /// The runtime fenced the CF for `dvipa` (or attached to it, at startup) and works in
    /// `cf_epoch` now: announce, tell the targets, renegotiate, and wait for the connection
    /// reports.
    pub fn fenced(
        &mut self,
        dvipa: &str,
        cf_epoch: u64,
        now: Duration,
    ) -> Result<(), TakeoverError> {
        let local = self.local.clone();
        let timeout = self.config.rebuild_timeout;
        let state = self
            .dvipas
            .get_mut(dvipa)
            .filter(|s| s.phase == Some(Phase::Fencing))
            .ok_or_else(|| TakeoverError::NotTakingOver {
                dvipa: dvipa.to_owned(),
            })?;
        self.cf_epoch = self.cf_epoch.max(cf_epoch);
        state.epoch = cf_epoch;
        let targets = state.plan.targets.get(&local).cloned().unwrap_or_default();
        // Our own box reports through its own target core like any other target.
        state.phase = Some(Phase::Rebuilding {
            waiting: targets.iter().cloned().collect(),
            deadline: now.saturating_add(timeout),
            connections: 0,
        });
        let plan = state.plan.clone();
        self.actions.push_back(TakeoverAction::Announce {
            dvipa: dvipa.to_owned(),
            address: plan.address,
            prefix_len: plan.prefix_len,
        });
        self.actions.push_back(TakeoverAction::NotifyTargets {
            dvipa: dvipa.to_owned(),
            cf_epoch,
            targets,
        });
        for (peer, address) in &plan.peers {
            self.actions.push_back(TakeoverAction::Renegotiate {
                dvipa: dvipa.to_owned(),
                peer: peer.clone(),
                address: *address,
            });
        }
        if let Some(times) = self.times.get_mut(dvipa) {
            times.fenced = Some(now);
        }
        self.check_rebuild_deadline(dvipa, now);
        Ok(())
    }

    /// A target's CONN_REPORT for a DVIPA we are taking over: its connections go back in the
    /// DCT. A report for a DVIPA we do not own, or from a node that is not its target, is
    /// ignored (returns false).
    pub fn conn_report(
        &mut self,
        target: &str,
        dvipa: &str,
        connections: &[Connection],
        now: Duration,
    ) -> bool {
        let local = self.local.clone();
        let Some(state) = self.dvipas.get_mut(dvipa) else {
            return false;
        };
        let ours = state.owner.as_deref() == Some(local.as_str());
        let is_target = state
            .plan
            .targets
            .get(&local)
            .is_some_and(|t| t.iter().any(|n| n == target));
        if !ours || !is_target {
            return false;
        }
        if let Some(Phase::Rebuilding {
            waiting,
            connections: count,
            ..
        }) = state.phase.as_mut()
        {
            waiting.remove(target);
            *count += connections.len();
        }
        self.actions.push_back(TakeoverAction::RestoreConnections {
            dvipa: dvipa.to_owned(),
            target: target.to_owned(),
            flows: connections.iter().map(|c| c.flow).collect(),
        });
        self.check_rebuild_deadline(dvipa, now);
        true
    }

    fn check_rebuild_deadline(&mut self, dvipa: &str, now: Duration) {
        let Some(state) = self.dvipas.get_mut(dvipa) else {
            return;
        };
        let Some(Phase::Rebuilding {
            waiting,
            deadline,
            connections,
        }) = &state.phase
        else {
            return;
        };
        if !waiting.is_empty() && now < *deadline {
            return;
        }
        let action = TakeoverAction::Rebuilt {
            dvipa: dvipa.to_owned(),
            connections: *connections,
            missing: waiting.iter().cloned().collect(),
        };
        state.phase = Some(Phase::Serving);
        self.actions.push_back(action);
        if let Some(times) = self.times.get_mut(dvipa) {
            times.rebuilt = Some(now);
        }
    }

    /// A planned, non-disruptive move of `dvipa` to `to` (the operator's command). Every node
    /// that runs this core for the DVIPA is given the same call: the owner releases it, `to`
    /// takes it over (fence, TAKEOVER, CONN_REPORTs, renegotiation), the others follow.
    pub fn plan_move(
        &mut self,
        dvipa: &str,
        to: &str,
        membership: &Membership,
        now: Duration,
    ) -> Result<(), TakeoverError> {
        let state = self
            .dvipas
            .get(dvipa)
            .ok_or_else(|| TakeoverError::UnknownDvipa {
                dvipa: dvipa.to_owned(),
            })?;
        if !state.plan.chain().iter().any(|n| n == to) {
            return Err(TakeoverError::NotACandidate {
                dvipa: dvipa.to_owned(),
                node: to.to_owned(),
            });
        }
        if to != self.local && !membership.is_alive(to) {
            return Err(TakeoverError::NotAlive {
                dvipa: dvipa.to_owned(),
                node: to.to_owned(),
            });
        }
        self.move_to(dvipa, to, MoveReason::Planned, now);
        Ok(())
    }

    /// When [`Takeover::update`] should run again for a rebuild deadline.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.dvipas
            .values()
            .filter_map(|d| match &d.phase {
                Some(Phase::Rebuilding { deadline, .. }) => Some(*deadline),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
#[path = "takeover_tests.rs"]
mod tests;
