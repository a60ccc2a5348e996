//! One IKE SA: its state, keys, message IDs, retransmission and child SAs.
//!
//! The exchanges live in submodules: `init` (IKE_SA_INIT), `auth` (IKE_AUTH), `create_child`
//! (CREATE_CHILD_SA: new child, child rekey, IKE rekey) and `info` (INFORMATIONAL).

mod auth;
mod create_child;
mod info;
mod init;
mod lifetime;
mod nat;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::config::{Mode, PeerConfig};
use crate::crypto::{open_sk, seal_sk, DhPrivate, DirectionKeys, EspSuite, IkeKeys, IkeSuite};
use crate::endpoint::{Outputs, Stats};
use crate::event::{DeleteReason, Event, IkeSaId};
use crate::wire::{
    emit_chain, parse_chain, Exchange, Header, HeaderView, Payload, PayloadKind, FLAG_INITIATOR,
    FLAG_RESPONSE, HEADER_LEN,
};
use crate::{CryptoError, ParseError};

pub(crate) use init::{respond_to_init, InitOffer};

/// Whether we started this IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Where an IKE SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitReplied,
    Established,
    /// A DELETE for the IKE SA is outstanding.
    Deleting,
    /// Gone; the endpoint removes it.
    Dead,
}

/// Retransmission settings copied from the endpoint configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub retransmit_base: Duration,
    pub retransmit_limit: u32,
    pub half_open_timeout: Duration,
    /// ESP goes in UDP with this peer even when no NAT is found (see
    /// [`crate::EndpointConfig::force_udp_encap`]).
    pub force_udp_encap: bool,
}

/// What our outstanding request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Init,
    Auth,
    DeleteIke,
    DeleteChild(u32),
    Liveness,
    CreateChild,
}

#[derive(Debug)]
struct Outstanding {
    kind: RequestKind,
    message_id: u32,
    bytes: Vec<u8>,
    retransmissions: u32,
    next_at: Instant,
}

/// An installed child SA as the IKE SA remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaInfo {
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    pub suite: EspSuite,
    pub mode: Mode,
    pub local_ts: Vec<crate::wire::TrafficSelector>,
    pub remote_ts: Vec<crate::wire::TrafficSelector>,
    pub installed_at: Instant,
    /// Totals reported from outside with [`crate::Endpoint::report_child_usage`].
    pub bytes: u64,
    pub packets: u64,
    /// We started replacing (soft limit) this child.
    pub rekey_started: bool,
}

/// A summary of one IKE SA for listings.
#[derive(Debug, Clone)]
pub struct IkeSaInfo {
    pub id: IkeSaId,
    pub peer: Option<String>,
    pub role: Role,
    pub state: State,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub suite: IkeSuite,
    pub children: Vec<ChildSaInfo>,
    /// A request of ours awaits its response.
    pub request_outstanding: bool,
}

pub(crate) struct IkeSa {
    pub role: Role,
    pub state: State,
    pub spi_i: u64,
    pub spi_r: u64,
    /// Index of the peer configuration; a responder knows it only after IKE_AUTH.
    pub peer: Option<usize>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub suite: IkeSuite,
    dh: Option<DhPrivate>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    keys: Option<IkeKeys>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    cookie: Option<Vec<u8>>,
    invalid_ke_retried: bool,
    pub nat_detected: bool,
    next_request_id: u32,
    outstanding: Option<Outstanding>,
    expected_request_id: u32,
    last_response: Option<(u32, Vec<u8>)>,
    pub children: Vec<ChildSaInfo>,
    pending_child_spi: Option<u32>,
    pending_create: Option<create_child::PendingCreate>,
    rekey_started: bool,
    pub created_at: Instant,
    timing: Timing,
}

/// A decoded incoming message.
pub(crate) struct Incoming<'a> {
    pub header: Header,
    pub bytes: &'a [u8],
    pub payloads: Vec<Payload>,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

impl<'a> Incoming<'a> {
    pub fn notify(&self, notify_type: u16) -> Option<&crate::wire::NotifyPayload> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.notify_type == notify_type => Some(n),
            _ => None,
        })
    }

    /// The first error notify, if any.
    pub fn error_notify(&self) -> Option<u16> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.is_error() => Some(n.notify_type),
            _ => None,
        })
    }

    pub fn nonce(&self) -> Option<&[u8]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })
    }

    pub fn find<T>(&self, pick: impl Fn(&Payload) -> Option<&T>) -> Option<&T> {
        self.payloads.iter().find_map(pick)
    }
}

/// Decodes the payloads of an unprotected message.
pub(crate) fn decode_plain(view: &HeaderView<'_>) -> Result<Vec<Payload>, ParseError> {
    view.payloads()?
        .iter()
        .map(|raw| {
            Payload::decode(
                raw.kind,
                raw.critical,
                raw.body,
                raw.offset + crate::wire::GENERIC_HEADER_LEN,
            )
        })
        .collect()
}

/// Why an incoming message was not processed.
#[derive(Debug)]
pub(crate) enum Discard {
    Malformed,
    Integrity,
    UnexpectedMessageId,
    UnexpectedMessage,
}

impl Discard {
    pub fn count(self, stats: &mut Stats) {
        match self {
            Self::Malformed => stats.malformed += 1,
            Self::Integrity => stats.integrity_failures += 1,
            Self::UnexpectedMessageId => stats.unexpected_message_id += 1,
            Self::UnexpectedMessage => stats.unexpected_messages += 1,
        }
    }
}

impl IkeSa {
    #[allow(clippy::too_many_arguments)]
    fn new(
        role: Role,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        suite: IkeSuite,
        now: Instant,
        timing: Timing,
    ) -> Self {
        Self {
            role,
            state: if role == Role::Initiator {
                State::InitSent
            } else {
                State::InitReplied
            },
            spi_i,
            spi_r,
            peer: None,
            local,
            remote,
            suite,
            dh: None,
            ni: Vec::new(),
            nr: Vec::new(),
            keys: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            invalid_ke_retried: false,
            nat_detected: false,
            next_request_id: 0,
            outstanding: None,
            expected_request_id: 0,
            last_response: None,
            children: Vec::new(),
            pending_child_spi: None,
            pending_create: None,
            rekey_started: false,
            created_at: now,
            timing,
        }
    }

    pub fn id(&self) -> IkeSaId {
        IkeSaId(self.local_spi())
    }

    pub fn local_spi(&self) -> u64 {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    /// The configured peer this SA was matched to, once it is known.
    fn peer_config<'p>(&self, peers: &'p [PeerConfig]) -> Option<&'p PeerConfig> {
        self.peer.and_then(|index| peers.get(index))
    }

    pub fn info(&self, peers: &[PeerConfig]) -> IkeSaInfo {
        IkeSaInfo {
            id: self.id(),
            peer: self.peer_config(peers).map(|p| p.name.clone()),
            role: self.role,
            state: self.state,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            local: self.local,
            remote: self.remote,
            suite: self.suite,
            children: self.children.clone(),
            request_outstanding: self.outstanding.is_some(),
        }
    }

    fn header(&self, exchange: Exchange, response: bool, message_id: u32) -> Header {
        let mut flags = 0;
        if self.role == Role::Initiator {
            flags |= FLAG_INITIATOR;
        }
        if response {
            flags |= FLAG_RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: 0,
            exchange,
            flags,
            message_id,
            length: 0,
        }
    }

    /// Keys for messages we send, and for messages the peer sends.
    fn send_keys(&self) -> Option<&DirectionKeys> {
        let keys = self.keys.as_ref()?;
        Some(match self.role {
            Role::Initiator => &keys.initiator,
            Role::Responder => &keys.responder,
        })
    }

    fn receive_keys(&self) -> Option<&DirectionKeys> {
        let keys = self.keys.as_ref()?;
        Some(match self.role {
            Role::Initiator => &keys.responder,
            Role::Responder => &keys.initiator,
        })
    }

    fn protect(
        &self,
        exchange: Exchange,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<u8>, CryptoError> {
        let keys = self
            .send_keys()
            .ok_or(CryptoError::Library("no IKE SA keys yet"))?;
        let mut inner = Zeroizing::new(Vec::new());
        let first = emit_chain(payloads, &mut inner);
        seal_sk(
            &self.suite,
            keys,
            self.header(exchange, response, message_id),
            first,
            &inner,
        )
    }

    /// Decrypts and decodes a protected message from the peer.
    pub fn unprotect(&self, view: &HeaderView<'_>) -> Result<Vec<Payload>, Discard> {
        let raws = view.payloads().map_err(|_| Discard::Malformed)?;
        let sk = match raws.as_slice() {
            [only] if only.kind == PayloadKind::Sk.to_u8() => only,
            _ => return Err(Discard::Malformed),
        };
        let keys = self.receive_keys().ok_or(Discard::UnexpectedMessage)?;
        let inner =
            open_sk(&self.suite, keys, view.bytes(), sk.offset).map_err(|_| Discard::Integrity)?;
        let raws = parse_chain(&inner, 0, sk.next).map_err(|_| Discard::Malformed)?;
        raws.iter()
            .map(|raw| {
                Payload::decode(raw.kind, raw.critical, raw.body, raw.offset + 4)
                    .map_err(|_| Discard::Malformed)
            })
            .collect()
    }

    fn send_request(
        &mut self,
        now: Instant,
        kind: RequestKind,
        exchange: Exchange,
        payloads: &[Payload],
        out: &mut Outputs,
    ) -> Result<(), CryptoError> {
        let message_id = self.next_request_id;
        let bytes = self.protect(exchange, false, message_id, payloads)?;
        self.next_request_id += 1;
        self.queue_request(now, kind, message_id, bytes, out);
        Ok(())
    }

    fn queue_request(
        &mut self,
        now: Instant,
        kind: RequestKind,
        message_id: u32,
        bytes: Vec<u8>,
        out: &mut Outputs,
    ) {
        out.transmit(self.local, self.remote, bytes.clone());
        self.outstanding = Some(Outstanding {
            kind,
            message_id,
            bytes,
            retransmissions: 0,
            next_at: now + self.timing.retransmit_base,
        });
    }

    fn send_response(
        &mut self,
        exchange: Exchange,
        message_id: u32,
        payloads: &[Payload],
        out: &mut Outputs,
    ) -> Result<(), CryptoError> {
        let bytes = self.protect(exchange, true, message_id, payloads)?;
        self.remember_response(message_id, bytes, out);
        Ok(())
    }

    fn remember_response(&mut self, message_id: u32, bytes: Vec<u8>, out: &mut Outputs) {
        out.transmit(self.local, self.remote, bytes.clone());
        self.last_response = Some((message_id, bytes));
        self.expected_request_id = message_id.wrapping_add(1);
    }

    /// Handles a message addressed to this IKE SA.
    pub fn handle(
        &mut self,
        now: Instant,
        view: &HeaderView<'_>,
        from: SocketAddr,
        to: SocketAddr,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let header = view.header();
        if header.is_response() {
            self.handle_response(now, view, header, from, to, peers, out)
        } else {
            self.handle_request(now, view, header, from, to, peers, out)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_response(
        &mut self,
        now: Instant,
        view: &HeaderView<'_>,
        header: Header,
        from: SocketAddr,
        to: SocketAddr,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let kind = match &self.outstanding {
            Some(o) if o.message_id == header.message_id => o.kind,
            _ => return Err(Discard::UnexpectedMessageId),
        };
        let payloads = if kind == RequestKind::Init {
            decode_plain(view).map_err(|_| Discard::Malformed)?
        } else {
            self.unprotect(view)?
        };
        let incoming = Incoming {
            header,
            bytes: view.bytes(),
            payloads,
            from,
            to,
        };
        self.outstanding = None;
        let handled = match kind {
            RequestKind::Init => self.handle_init_response(now, &incoming, peers, out),
            RequestKind::Auth => self.handle_auth_response(now, &incoming, peers, out),
            RequestKind::DeleteIke => {
                self.die(DeleteReason::LocalDelete, out);
                Ok(())
            }
            RequestKind::Liveness => Ok(()),
            RequestKind::DeleteChild(inbound_spi) => {
                self.finish_child_delete(inbound_spi, out);
                Ok(())
            }
            RequestKind::CreateChild => {
                self.handle_create_child_response(now, &incoming, peers, out)
            }
        };
        // The window is free again: a limit reached meanwhile (by bytes or packets) acts now.
        self.check_lifetimes(now, peers, out);
        handled
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_request(
        &mut self,
        now: Instant,
        view: &HeaderView<'_>,
        header: Header,
        from: SocketAddr,
        to: SocketAddr,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        if let Some((id, bytes)) = &self.last_response {
            if *id == header.message_id {
                out.stats.retransmitted_responses += 1;
                out.transmit(to, from, bytes.clone());
                return Ok(());
            }
        }
        if header.message_id != self.expected_request_id {
            return Err(Discard::UnexpectedMessageId);
        }
        let payloads = self.unprotect(view)?;
        if self.nat_detected {
            // RFC 7296 2.23: follow the peer's address once a protected message proves it.
            self.local = to;
            self.remote = from;
        }
        let incoming = Incoming {
            header,
            bytes: view.bytes(),
            payloads,
            from,
            to,
        };
        match (header.exchange, self.state) {
            (Exchange::IkeAuth, State::InitReplied) => {
                self.handle_auth_request(now, &incoming, peers, out)
            }
            (Exchange::Informational, _) => self.handle_informational(&incoming, out),
            (Exchange::CreateChildSa, State::Established) => {
                self.handle_create_child_request(now, &incoming, peers, out)
            }
            _ => Err(Discard::UnexpectedMessage),
        }
    }

    /// Retransmits or gives up, and acts on lifetimes that ran out.
    pub fn handle_timeout(&mut self, now: Instant, peers: &[PeerConfig], out: &mut Outputs) {
        self.retransmit_if_due(now, out);
        self.check_lifetimes(now, peers, out);
    }

    fn retransmit_if_due(&mut self, now: Instant, out: &mut Outputs) {
        if self.state == State::InitReplied
            && now >= self.created_at + self.timing.half_open_timeout
        {
            self.die(DeleteReason::Timeout, out);
            return;
        }
        let Some(outstanding) = self.outstanding.as_mut() else {
            return;
        };
        if now < outstanding.next_at {
            return;
        }
        if outstanding.retransmissions >= self.timing.retransmit_limit {
            self.outstanding = None;
            self.die(DeleteReason::Timeout, out);
            return;
        }
        outstanding.retransmissions += 1;
        let backoff = self
            .timing
            .retransmit_base
            .saturating_mul(1 << outstanding.retransmissions.min(16));
        outstanding.next_at = now + backoff;
        out.stats.retransmitted_requests += 1;
        out.transmit(self.local, self.remote, outstanding.bytes.clone());
    }

    pub fn next_timeout(&self, peers: &[PeerConfig]) -> Option<Instant> {
        let retransmit = self.outstanding.as_ref().map(|o| o.next_at);
        let half_open = (self.state == State::InitReplied)
            .then(|| self.created_at + self.timing.half_open_timeout);
        [retransmit, half_open, self.next_lifetime_deadline(peers)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Marks the SA dead and reports its children and itself as deleted.
    fn die(&mut self, reason: DeleteReason, out: &mut Outputs) {
        if self.state == State::Dead {
            return;
        }
        let ike_sa = self.id();
        for child in self.children.drain(..) {
            out.event(Event::ChildSaDeleted {
                ike_sa,
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        self.state = State::Dead;
        out.event(Event::IkeSaDeleted {
            ike_sa: self.id(),
            reason,
        });
    }

    /// Starts an INFORMATIONAL exchange deleting this IKE SA.
    pub fn start_delete(&mut self, now: Instant, out: &mut Outputs) -> Result<(), CryptoError> {
        let delete = Payload::Delete(crate::wire::DeletePayload {
            protocol: crate::wire::ProtocolId::Ike.to_u8(),
            spi_size: 0,
            spis: Vec::new(),
        });
        self.send_request(
            now,
            RequestKind::DeleteIke,
            Exchange::Informational,
            &[delete],
            out,
        )?;
        self.state = State::Deleting;
        Ok(())
    }

    /// Starts an empty INFORMATIONAL exchange (liveness check).
    pub fn start_liveness(&mut self, now: Instant, out: &mut Outputs) -> Result<(), CryptoError> {
        self.send_request(
            now,
            RequestKind::Liveness,
            Exchange::Informational,
            &[],
            out,
        )
    }

    /// Our cached response to the request with this message ID, if we still hold it.
    pub fn cached_response(&self, message_id: u32) -> Option<&[u8]> {
        match &self.last_response {
            Some((id, bytes)) if *id == message_id => Some(bytes),
            _ => None,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }
}

/// Builds an unprotected message (IKE_SA_INIT and its error answers).
pub(crate) fn build_plain(mut header: Header, payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    header.next_payload = emit_chain(payloads, &mut body);
    header.length = (HEADER_LEN + body.len()) as u32;
    let mut fixed = [0u8; HEADER_LEN];
    header.emit(&mut fixed);
    let mut message = fixed.to_vec();
    message.extend_from_slice(&body);
    message
}
