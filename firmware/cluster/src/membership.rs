//! Cluster membership and failure detection (issue #10), sans-io.
//!
//! Every node sends a heartbeat to every other member each `heartbeat` interval. The heartbeat
//! carries the sender's view: how long ago it last heard from each member
//! ([`Message::HeartbeatView`]). A member silent to us for `missed_beats` intervals is down, and
//! the views tell why, as far as they can:
//!
//! - another live member heard from it after it went silent to us: the link between us is cut
//!   ([`DownCause::Partitioned`]); it is alive, so nothing it owns may be taken over;
//! - nobody heard from it since: it failed, as a distributor, a target or both, from the roles
//!   the site gives it ([`DownCause::Failed`]);
//! - every other member is silent to us (with at least two of them): we are the one cut off
//!   ([`MembershipEvent::Isolated`]); an isolated node must not take anything over.
//!
//! Any frame from a member counts as life ([`Membership::heard`]), not only heartbeats.
//! Incarnations in the frame header tell a restart ([`MembershipEvent::Restarted`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use dvipsec_config::NodeView;
use thiserror::Error;

use crate::error::WireError;
use crate::wire::{Frame, HeartbeatView, MemberSeen, Message, OwnerClaim};
use crate::Transmit;

/// Timers of failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// A heartbeat goes to every member this often.
    pub heartbeat: Duration,
    /// A member that missed this many heartbeat intervals is down.
    pub missed_beats: u32,
}

impl MembershipConfig {
    /// The site's `xcf.heartbeat_ms`, and `xcf.takeover_timeout_ms` in whole heartbeats
    /// (validation keeps it at two or more).
    pub fn from_view(view: &NodeView) -> MembershipConfig {
        let heartbeat_ms = view.xcf_link.heartbeat_ms.value.max(1);
        MembershipConfig {
            heartbeat: Duration::from_millis(u64::from(heartbeat_ms)),
            missed_beats: (view.xcf_link.takeover_timeout_ms.value / heartbeat_ms).max(2),
        }
    }

    /// How long a member may stay silent before it is down.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat.saturating_mul(self.missed_beats)
    }
}

/// What the site makes of a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberRoles {
    /// Owns or backs a DVIPA.
    pub distributor: bool,
    /// Is a distribution target of a DVIPA.
    pub target: bool,
}

/// The members `view` works with, and their roles: owners, backups and targets of the DVIPAs
/// it owns, backs or serves. `view`'s own node is left out.
pub fn members_of(view: &NodeView) -> BTreeMap<String, MemberRoles> {
    let mut members: BTreeMap<String, MemberRoles> = BTreeMap::new();
    let mut mark = |node: &str, distributor: bool| {
        let roles = members.entry(node.to_owned()).or_default();
        if distributor {
            roles.distributor = true;
        } else {
            roles.target = true;
        }
    };
    for owned in &view.owns {
        owned.targets.iter().for_each(|t| mark(t, false));
        owned.backups.iter().for_each(|b| mark(&b.node, true));
    }
    for backed in &view.backs {
        mark(&backed.owner, true);
        backed.targets.iter().for_each(|t| mark(t, false));
    }
    for served in &view.serves {
        mark(&served.distributor, true);
    }
    members.remove(&view.node);
    members
}

/// Why a member is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownCause {
    /// Nobody hears from it: it failed. The roles say what failed with it.
    Failed { roles: MemberRoles },
    /// Silent to us, but these members heard from it after it went silent to us.
    Partitioned { heard_by: Vec<String> },
}

/// What membership tells the runtime and the takeover core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// First heard from, or heard again after being down.
    Up { node: String },
    /// The member is down (again with a new cause when the views change their mind).
    Down { node: String, cause: DownCause },
    /// The member came back with a new incarnation: its state is gone.
    Restarted { node: String, incarnation: u64 },
    /// Every other member is silent to us: we are cut off.
    Isolated,
    /// We hear from a member again after being isolated.
    Rejoined,
}

/// Where a member stands, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    /// Not heard from yet, and the silence limit since our start has not passed.
    Unknown,
    Alive,
    Down(DownCause),
}

/// Why membership refused a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MembershipError {
    #[error("bad heartbeat frame: {0}")]
    Wire(#[from] WireError),
    #[error("{node} is not a member this node watches")]
    UnknownMember { node: String },
    #[error("frame from {node} is not a heartbeat view")]
    NotAHeartbeat { node: String },
    #[error("heartbeat from an old incarnation {from} of {node} (now {known})")]
    StaleIncarnation { node: String, from: u64, known: u64 },
}

/// Counters of membership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipCounters {
    pub heartbeats_sent: u64,
    pub views_received: u64,
    pub refused_frames: u64,
    pub downs: u64,
}

#[derive(Debug, Clone)]
struct Member {
    roles: MemberRoles,
    incarnation: Option<u64>,
    last_heard: Option<Duration>,
    /// The member's last view and when it arrived.
    view: Option<(Duration, HeartbeatView)>,
    state: MemberState,
}

/// The membership core of one node.
pub struct Membership {
    config: MembershipConfig,
    incarnation: u64,
    started: Duration,
    members: BTreeMap<String, Member>,
    next_beat: Duration,
    outgoing: VecDeque<Transmit>,
    events: VecDeque<MembershipEvent>,
    isolated: bool,
    /// What this node claims to own, sent in its heartbeats.
    claims: Vec<OwnerClaim>,
    counters: MembershipCounters,
}

impl Membership {
    pub fn new(
        members: BTreeMap<String, MemberRoles>,
        incarnation: u64,
        config: MembershipConfig,
        now: Duration,
    ) -> Membership {
        let members = members
            .into_iter()
            .map(|(node, roles)| {
                let member = Member {
                    roles,
                    incarnation: None,
                    last_heard: None,
                    view: None,
                    state: MemberState::Unknown,
                };
                (node, member)
            })
            .collect();
        Membership {
            config,
            incarnation,
            started: now,
            members,
            next_beat: now,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            isolated: false,
            claims: Vec::new(),
            counters: MembershipCounters::default(),
        }
    }

    /// The membership of `view`'s node, with the site's timers.
    pub fn for_view(view: &NodeView, incarnation: u64, now: Duration) -> Membership {
        Membership::new(
            members_of(view),
            incarnation,
            MembershipConfig::from_view(view),
            now,
        )
    }

    pub fn config(&self) -> MembershipConfig {
        self.config
    }

    pub fn counters(&self) -> MembershipCounters {
        self.counters
    }

    pub fn state(&self, node: &str) -> Option<&MemberState> {
        self.members.get(node).map(|m| &m.state)
    }

    pub fn is_alive(&self, node: &str) -> bool {
        matches!(self.state(node), Some(MemberState::Alive))
    }

    /// Whether the member failed (down, and no live member hears from it either).
    pub fn has_failed(&self, node: &str) -> bool {
        matches!(
            self.state(node),
            Some(MemberState::Down(DownCause::Failed { .. }))
        )
    }

    /// The DVIPAs this node's heartbeats say it owns (the takeover core sets them).
    pub fn set_claims(&mut self, claims: Vec<OwnerClaim>) {
        self.claims = claims;
    }

    /// Whether `node` is alive and its heartbeat view (with its claims) has arrived: a member
    /// can be heard first through other frames (a CF announcement, an SA install).
    pub fn has_view(&self, node: &str) -> bool {
        self.members
            .get(node)
            .is_some_and(|m| m.state == MemberState::Alive && m.view.is_some())
    }

    /// What `node`'s last heartbeat said it owns (nothing once it is down).
    pub fn claims_of(&self, node: &str) -> &[OwnerClaim] {
        match self.members.get(node) {
            Some(member) if member.state == MemberState::Alive => {
                member.view.as_ref().map_or(&[], |(_, view)| &view.owns)
            }
            _ => &[],
        }
    }

    /// The time this core started (joining nodes wait a silence limit for claims).
    pub fn started(&self) -> Duration {
        self.started
    }

    /// Whether every other member is silent to us.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// Any frame arrived from `node`: it is alive.
    pub fn heard(&mut self, node: &str, now: Duration) {
        let Some(member) = self.members.get_mut(node) else {
            return;
        };
        member.last_heard = Some(now);
        if member.state != MemberState::Alive {
            member.state = MemberState::Alive;
            self.events.push_back(MembershipEvent::Up {
                node: node.to_owned(),
            });
        }
        self.update_isolation();
    }

    /// Takes in a heartbeat frame from `node` (frames of kind HEARTBEAT with a view).
    pub fn handle(
        &mut self,
        node: &str,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), MembershipError> {
        let result = self.accept(node, bytes, now);
        if result.is_err() {
            self.counters.refused_frames += 1;
        }
        result
    }

    fn accept(&mut self, node: &str, bytes: &[u8], now: Duration) -> Result<(), MembershipError> {
        let frame = Frame::decode(bytes)?;
        let Message::HeartbeatView(view) = frame.message else {
            return Err(MembershipError::NotAHeartbeat {
                node: node.to_owned(),
            });
        };
        let member = self
            .members
            .get_mut(node)
            .ok_or_else(|| MembershipError::UnknownMember {
                node: node.to_owned(),
            })?;
        let from = frame.from_incarnation;
        match member.incarnation {
            Some(known) if from < known => {
                return Err(MembershipError::StaleIncarnation {
                    node: node.to_owned(),
                    from,
                    known,
                })
            }
            Some(known) if from > known => self.events.push_back(MembershipEvent::Restarted {
                node: node.to_owned(),
                incarnation: from,
            }),
            _ => {}
        }
        member.incarnation = Some(from);
        member.view = Some((now, view));
        self.counters.views_received += 1;
        self.heard(node, now);
        Ok(())
    }

    /// What this node hears of each member, for its heartbeats.
    pub fn view(&self, now: Duration) -> Vec<MemberSeen> {
        self.members
            .iter()
            .map(|(node, member)| MemberSeen {
                node: node.clone(),
                heard_ms_ago: member.last_heard.map_or(MemberSeen::NEVER, |heard| {
                    let ms = now.saturating_sub(heard).as_millis();
                    u32::try_from(ms).unwrap_or(MemberSeen::NEVER - 1)
                }),
            })
            .collect()
    }

    /// Runs the timers: queues heartbeats when due and marks silent members down.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.next_beat <= now {
            self.next_beat = now.saturating_add(self.config.heartbeat);
            self.queue_heartbeats(now);
        }
        let names: Vec<String> = self.members.keys().cloned().collect();
        for node in names {
            self.judge(&node, now);
        }
        self.update_isolation();
    }

    fn queue_heartbeats(&mut self, now: Duration) {
        let frame = Frame {
            from_incarnation: self.incarnation,
            to_incarnation: 0,
            seq: 0,
            message: Message::HeartbeatView(HeartbeatView {
                seen: self.view(now),
                owns: self.claims.clone(),
            }),
        };
        // Node names over 255 bytes cannot be in a valid site: nothing to send then.
        let Ok(bytes) = frame.encode() else {
            return;
        };
        for node in self.members.keys() {
            self.outgoing.push_back(Transmit {
                to: node.clone(),
                bytes: bytes.clone(),
            });
            self.counters.heartbeats_sent += 1;
        }
    }

    fn judge(&mut self, node: &str, now: Duration) {
        let limit = self.config.silence_limit();
        let Some(member) = self.members.get(node) else {
            return;
        };
        let last = member.last_heard.unwrap_or(self.started);
        if now.saturating_sub(last) < limit {
            return;
        }
        let heard_by = self.witnesses(node, last, now);
        let cause = if heard_by.is_empty() {
            DownCause::Failed {
                roles: member.roles,
            }
        } else {
            DownCause::Partitioned { heard_by }
        };
        let state = MemberState::Down(cause.clone());
        if let Some(member) = self.members.get_mut(node) {
            if member.state == state {
                return;
            }
            member.state = state;
        }
        self.counters.downs += 1;
        self.events.push_back(MembershipEvent::Down {
            node: node.to_owned(),
            cause,
        });
    }

    /// Live members whose view says they heard from `node` clearly after `last`, when it last
    /// reached us (more than a heartbeat later, so one beat in flight does not count), and
    /// recently (within half the silence limit: a dead member's last beats, which we may have
    /// lost, stop counting soon, while a cut-off member keeps beating to the others).
    fn witnesses(&self, node: &str, last: Duration, now: Duration) -> Vec<String> {
        let limit = self.config.silence_limit();
        let after = last
            .saturating_add(self.config.heartbeat)
            .max(now.saturating_sub(limit / 2));
        self.members
            .iter()
            .filter(|(name, m)| {
                name.as_str() != node
                    && m.state == MemberState::Alive
                    && m.last_heard
                        .is_some_and(|heard| now.saturating_sub(heard) < limit)
            })
            .filter(|(_, m)| {
                let Some((arrived, view)) = &m.view else {
                    return false;
                };
                view.seen.iter().any(|seen| {
                    seen.node == node
                        && seen.heard_ms_ago != MemberSeen::NEVER
                        && arrived
                            .saturating_sub(Duration::from_millis(u64::from(seen.heard_ms_ago)))
                            > after
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn update_isolation(&mut self) {
        let others = self.members.len();
        let down = self
            .members
            .values()
            .filter(|m| matches!(m.state, MemberState::Down(_)))
            .count();
        let isolated = others >= 2 && down == others;
        if isolated != self.isolated {
            self.isolated = isolated;
            self.events.push_back(if isolated {
                MembershipEvent::Isolated
            } else {
                MembershipEvent::Rejoined
            });
        }
    }

    /// The next heartbeat frame to send.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        if self.outgoing.is_empty() {
            self.handle_timeout(now);
        }
        self.outgoing.pop_front()
    }

    /// When to call [`Membership::handle_timeout`] next: the next heartbeat, or the moment the
    /// first live member would become overdue.
    pub fn poll_timeout(&self) -> Duration {
        let limit = self.config.silence_limit();
        let overdue = self
            .members
            .values()
            .filter(|m| !matches!(m.state, MemberState::Down(_)))
            .map(|m| m.last_heard.unwrap_or(self.started).saturating_add(limit))
            .min();
        overdue.map_or(self.next_beat, |due| due.min(self.next_beat))
    }
}

/// Whether `bytes` is a frame for membership (a heartbeat with a view) rather than for a link.
pub fn is_membership_frame(bytes: &[u8]) -> bool {
    let heartbeat = bytes.get(1) == Some(&(crate::wire::Kind::Heartbeat as u8));
    let with_body = bytes.get(4..8).is_some_and(|len| len != [0, 0, 0, 0]);
    heartbeat && with_body
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
