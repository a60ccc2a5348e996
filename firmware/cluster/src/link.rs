//! Reliable, ordered delivery of XCF messages to one peer over an unreliable link (sans-io).
//!
//! Sequenced messages are acknowledged one by one and retransmitted with exponential backoff
//! until acknowledged; the receiver delivers them in sequence order exactly once. Each side
//! names its incarnation (a number that grows every time the stack starts) in every frame, so
//! frames from before a restart are told apart from new ones: when the peer's incarnation
//! grows, both sequence spaces start again and [`PeerChange::Restarted`] tells the owner to
//! send its current state again. Keys (SA_INSTALL) only travel over a link that is trusted by
//! configuration or protected.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::LinkError;
use crate::wire::{Frame, HeartbeatView, Kind, Message};

/// Timers of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimers {
    /// First retransmission timeout.
    pub initial_rto: Duration,
    /// The backoff stops doubling here.
    pub max_rto: Duration,
    /// HELLO repeats this often while the peer is not known.
    pub hello_interval: Duration,
    /// HEARTBEAT goes out this often once the peer is known.
    pub heartbeat_interval: Duration,
}

impl LinkTimers {
    /// Timers for a link whose heartbeat interval is `heartbeat` (the site's `heartbeat_ms`).
    pub fn with_heartbeat(heartbeat: Duration) -> LinkTimers {
        LinkTimers {
            initial_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(1),
            hello_interval: heartbeat,
            heartbeat_interval: heartbeat,
        }
    }
}

/// How the link is secured, which decides whether keys may cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSecurity {
    /// The site configuration marks the XCF link trusted.
    Trusted,
    /// Authenticated encryption (mutual TLS) protects this connection.
    Protected,
    /// Neither: SA_INSTALL is refused in both directions.
    Unprotected,
}

impl LinkSecurity {
    pub fn may_carry_keys(self) -> bool {
        !matches!(self, LinkSecurity::Unprotected)
    }
}

/// How many out-of-order frames the receiver holds; later ones are dropped unacknowledged.
pub const RECEIVE_WINDOW: u32 = 256;

/// What changed about the peer with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// First contact with this peer.
    Up { incarnation: u64 },
    /// The peer started again with a new incarnation: its state is gone.
    Restarted { incarnation: u64 },
}

/// What one received frame produced.
#[derive(Debug, Default)]
pub struct Received {
    pub peer: Option<PeerChange>,
    /// Messages to act on, in sequence order.
    pub messages: Vec<Message>,
    /// Our messages that the peer acknowledged with this frame.
    pub acked: Vec<Message>,
    /// The peer's view of the other members, when the frame was a heartbeat that carried one
    /// (the membership core sends those; a link only passes one on, it never sequences it).
    pub view: Option<HeartbeatView>,
}

/// Counters of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub retransmitted: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_window: u64,
    pub refused_sa_installs: u64,
}

struct Pending {
    message: Message,
    due: Duration,
    rto: Duration,
    sends: u32,
}

/// One end of the XCF link to one peer.
pub struct Link {
    local_node: String,
    local_incarnation: u64,
    security: LinkSecurity,
    timers: LinkTimers,
    peer_incarnation: Option<u64>,
    next_seq: u32,
    unacked: BTreeMap<u32, Pending>,
    recv_next: u32,
    recv_buffer: BTreeMap<u32, Message>,
    control: VecDeque<Message>,
    next_hello: Duration,
    next_heartbeat: Duration,
    last_heard: Option<Duration>,
    stats: LinkStats,
}

impl Link {
    pub fn new(
        local_node: &str,
        local_incarnation: u64,
        security: LinkSecurity,
        timers: LinkTimers,
        now: Duration,
    ) -> Link {
        Link {
            local_node: local_node.to_owned(),
            local_incarnation,
            security,
            timers,
            peer_incarnation: None,
            next_seq: 1,
            unacked: BTreeMap::new(),
            recv_next: 1,
            recv_buffer: BTreeMap::new(),
            control: VecDeque::new(),
            next_hello: now,
            next_heartbeat: now.saturating_add(timers.heartbeat_interval),
            last_heard: None,
            stats: LinkStats::default(),
        }
    }

    pub fn peer_incarnation(&self) -> Option<u64> {
        self.peer_incarnation
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn security(&self) -> LinkSecurity {
        self.security
    }

    /// Sequenced messages not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// When a frame from the peer last arrived.
    pub fn last_heard(&self) -> Option<Duration> {
        self.last_heard
    }

    /// Whether a known peer has sent nothing for `timeout` (heartbeats keep a live one fresh).
    pub fn is_silent(&self, now: Duration, timeout: Duration) -> bool {
        match (self.peer_incarnation, self.last_heard) {
            (Some(_), Some(heard)) => now.saturating_sub(heard) >= timeout,
            _ => false,
        }
    }

    /// Queues a message. Reliable kinds are sequenced and retransmitted until acknowledged;
    /// they leave once the peer is known.
    pub fn send(&mut self, message: Message, now: Duration) -> Result<(), LinkError> {
        if matches!(message, Message::SaInstall(_)) && !self.security.may_carry_keys() {
            return Err(LinkError::KeysOnUnprotectedLink);
        }
        if !message.kind().is_reliable() {
            self.check_encodable(&message)?;
            self.control.push_back(message);
            return Ok(());
        }
        self.check_encodable(&message)?;
        let seq = self.next_seq;
        self.next_seq = self
            .next_seq
            .checked_add(1)
            .ok_or(LinkError::SequenceExhausted)?;
        let rto = self.timers.initial_rto;
        self.unacked.insert(
            seq,
            Pending {
                message,
                due: now,
                rto,
                sends: 0,
            },
        );
        Ok(())
    }

    /// Fails now, at the caller, for a message the codec cannot carry (a name over 255
    /// bytes...), instead of retransmitting something that can never leave.
    fn check_encodable(&self, message: &Message) -> Result<(), LinkError> {
        Ok(crate::wire::check_encodable(message)?)
    }

    /// Takes in one frame from the peer.
    pub fn handle(&mut self, bytes: &[u8], now: Duration) -> Result<Received, LinkError> {
        let frame = Frame::decode(bytes)?;
        self.check_receiver(&frame)?;
        let mut received = Received {
            peer: self.check_sender(&frame)?,
            messages: Vec::new(),
            acked: Vec::new(),
            view: None,
        };
        self.last_heard = Some(now);
        match frame.message {
            Message::Ack { seq } => {
                if let Some(pending) = self.unacked.remove(&seq) {
                    received.acked.push(pending.message);
                }
            }
            Message::Hello { .. } => {
                if frame.to_incarnation != self.local_incarnation {
                    self.control.push_back(self.hello());
                }
            }
            Message::Heartbeat => {}
            Message::HeartbeatView(view) => received.view = Some(view),
            message => self.accept_sequenced(frame.seq, message, &mut received.messages),
        }
        Ok(received)
    }

    fn check_receiver(&self, frame: &Frame) -> Result<(), LinkError> {
        let to = frame.to_incarnation;
        if to == 0 && frame.message.kind() == Kind::Hello {
            return Ok(());
        }
        if to != self.local_incarnation {
            return Err(LinkError::NotForThisIncarnation {
                to,
                local: self.local_incarnation,
            });
        }
        Ok(())
    }

    fn check_sender(&mut self, frame: &Frame) -> Result<Option<PeerChange>, LinkError> {
        let from = frame.from_incarnation;
        match self.peer_incarnation {
            Some(known) if from == known => Ok(None),
            Some(known) if from < known => Err(LinkError::StaleSender { from, known }),
            Some(_) => {
                self.restart_with(from);
                Ok(Some(PeerChange::Restarted { incarnation: from }))
            }
            None => {
                self.peer_incarnation = Some(from);
                Ok(Some(PeerChange::Up { incarnation: from }))
            }
        }
    }

    /// The peer lost its state: what we had queued for the old incarnation is dropped (the
    /// owner sends its current state again) and both sequence spaces start over.
    fn restart_with(&mut self, incarnation: u64) {
        self.peer_incarnation = Some(incarnation);
        self.unacked.clear();
        self.next_seq = 1;
        self.recv_next = 1;
        self.recv_buffer.clear();
    }

    fn accept_sequenced(&mut self, seq: u32, message: Message, out: &mut Vec<Message>) {
        if seq < self.recv_next || self.recv_buffer.contains_key(&seq) {
            self.stats.duplicates += 1;
            self.control.push_back(Message::Ack { seq });
            return;
        }
        if seq - self.recv_next >= RECEIVE_WINDOW {
            self.stats.out_of_window += 1;
            return;
        }
        self.control.push_back(Message::Ack { seq });
        self.recv_buffer.insert(seq, message);
        while let Some(next) = self.recv_buffer.remove(&self.recv_next) {
            self.recv_next = self.recv_next.saturating_add(1);
            self.deliver(next, out);
        }
    }

    fn deliver(&mut self, message: Message, out: &mut Vec<Message>) {
        if matches!(message, Message::SaInstall(_)) && !self.security.may_carry_keys() {
            self.stats.refused_sa_installs += 1;
            return;
        }
        self.stats.delivered += 1;
        out.push(message);
    }

    fn hello(&self) -> Message {
        Message::Hello {
            node: self.local_node.clone(),
        }
    }

    /// The next frame to send now, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Zeroizing<Vec<u8>>> {
        self.run_timers(now);
        if let Some(message) = self.control.pop_front() {
            return self.frame(0, message);
        }
        self.peer_incarnation?;
        let (&seq, pending) = self.unacked.iter_mut().find(|(_, p)| p.due <= now)?;
        if pending.sends > 0 {
            self.stats.retransmitted += 1;
        }
        pending.sends = pending.sends.saturating_add(1);
        pending.due = now.saturating_add(pending.rto);
        pending.rto = (pending.rto * 2).min(self.timers.max_rto);
        let message = pending.message.clone();
        self.frame(seq, message)
    }

    fn run_timers(&mut self, now: Duration) {
        if self.peer_incarnation.is_none() {
            if self.next_hello <= now {
                self.next_hello = now.saturating_add(self.timers.hello_interval);
                self.control.push_back(self.hello());
            }
        } else if self.next_heartbeat <= now {
            self.next_heartbeat = now.saturating_add(self.timers.heartbeat_interval);
            self.control.push_back(Message::Heartbeat);
        }
    }

    fn frame(&mut self, seq: u32, message: Message) -> Option<Zeroizing<Vec<u8>>> {
        let frame = Frame {
            from_incarnation: self.local_incarnation,
            to_incarnation: self.peer_incarnation.unwrap_or(0),
            seq,
            message,
        };
        // Every queued message passed `check_encodable`, so this does not fail.
        let bytes = frame.encode().ok()?;
        self.stats.sent += 1;
        Some(bytes)
    }

    /// When [`Link::poll_transmit`] should be called next.
    pub fn poll_timeout(&self) -> Duration {
        let timer = if self.peer_incarnation.is_none() {
            self.next_hello
        } else {
            self.next_heartbeat
        };
        let retransmit = self
            .peer_incarnation
            .and_then(|_| self.unacked.values().map(|p| p.due).min());
        retransmit.map_or(timer, |due| due.min(timer))
    }
}
