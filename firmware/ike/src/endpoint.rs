//! The key manager's entry point: routes datagrams to IKE SAs, answers new IKE_SA_INIT
//! requests (with cookies under load) and collects what goes out.
//!
//! Modelled on quinn-proto: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`],
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_timeout`] and [`Endpoint::poll_event`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;

use crate::config::{EndpointConfig, PeerConfig};
use crate::crypto::random_bytes;
use crate::event::{Event, IkeSaId};
use crate::sa::{
    build_plain, decode_plain, respond_to_init, Discard, IkeSa, IkeSaInfo, Incoming, InitOffer,
    State, Timing,
};
use crate::wire::{
    notify, Exchange, Header, HeaderView, NotifyPayload, Payload, FLAG_RESPONSE, HEADER_LEN,
};
use crate::{CryptoError, IkeError};

/// A datagram to send. When `local` is port 4500 the I/O loop prefixes the four-byte non-ESP
/// marker (RFC 3948); the endpoint never sees or writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub payload: Vec<u8>,
}

/// Counters of dropped input and notable actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub malformed: u64,
    /// No IKE SA has the SPI that names our side (a stale or forged responder/initiator SPI).
    pub unknown_spi: u64,
    /// Our SPI is known but the peer's SPI in the header is not the one that IKE SA has (forged).
    pub spi_mismatch: u64,
    pub integrity_failures: u64,
    pub unexpected_message_id: u64,
    pub unexpected_messages: u64,
    pub authentication_failures: u64,
    pub no_proposal_chosen: u64,
    pub invalid_ke_sent: u64,
    pub cookies_sent: u64,
    /// IKE_SA_INIT requests dropped because their peer address held `max_half_open_per_peer`.
    pub half_open_peer_drops: u64,
    /// IKE_SA_INIT requests dropped because `max_half_open` half-open IKE SAs existed.
    pub half_open_global_drops: u64,
    pub retransmitted_requests: u64,
    pub retransmitted_responses: u64,
}

/// Where IKE SAs put their datagrams and events.
#[derive(Default)]
pub(crate) struct Outputs {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub stats: Stats,
    /// IKE SAs created by a rekey, for the endpoint to adopt.
    pub spawned: Vec<IkeSa>,
}

impl Outputs {
    pub fn transmit(&mut self, local: SocketAddr, remote: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            local,
            remote,
            payload,
        });
    }

    pub fn event(&mut self, event: Event) {
        log_event(&event);
        self.events.push_back(event);
    }
}

/// One log line per event; keys never appear (their Debug is redacted and they are not named).
fn log_event(event: &Event) {
    match event {
        Event::IkeSaEstablished {
            ike_sa,
            peer,
            local,
            remote,
            nat_detected,
        } => {
            tracing::info!(ike_sa = ike_sa.0, %peer, %local, %remote, nat_detected, "IKE SA established")
        }
        Event::ChildSaInstalled(child) => tracing::info!(
            ike_sa = child.ike_sa.0,
            spi_in = format_args!("{:08x}", child.inbound_spi),
            spi_out = format_args!("{:08x}", child.outbound_spi),
            suite = ?child.suite,
            mode = ?child.mode,
            "child SA installed"
        ),
        Event::ChildSaRekeyed {
            old_inbound_spi,
            new,
            ..
        } => tracing::info!(
            ike_sa = new.ike_sa.0,
            old_spi_in = format_args!("{old_inbound_spi:08x}"),
            spi_in = format_args!("{:08x}", new.inbound_spi),
            spi_out = format_args!("{:08x}", new.outbound_spi),
            "child SA rekeyed"
        ),
        Event::IkeSaRekeyed { old, new } => {
            tracing::info!(old = old.0, new = new.0, "IKE SA rekeyed")
        }
        Event::ChildSaRefused { ike_sa, notify } => {
            tracing::warn!(ike_sa = ike_sa.0, notify, "child SA refused")
        }
        Event::ChildSaDeleted {
            ike_sa,
            inbound_spi,
            outbound_spi,
        } => tracing::info!(
            ike_sa = ike_sa.0,
            spi_in = format_args!("{inbound_spi:08x}"),
            spi_out = format_args!("{outbound_spi:08x}"),
            "child SA deleted"
        ),
        Event::IkeSaDeleted { ike_sa, reason } => {
            tracing::info!(ike_sa = ike_sa.0, ?reason, "IKE SA deleted")
        }
    }
}

/// The sans-io IKEv2 endpoint.
pub struct Endpoint {
    config: EndpointConfig,
    sas: HashMap<u64, IkeSa>,
    /// (initiator SPI, initiator address) of IKE_SA_INIT requests we answered -> our SPI.
    half_open: HashMap<(u64, SocketAddr), u64>,
    cookie_secret: hmac::Key,
    out: Outputs,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("ike_sas", &self.sas.len())
            .field("stats", &self.out.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Result<Self, CryptoError> {
        let secret = random_bytes(32)?;
        Ok(Self {
            config,
            sas: HashMap::new(),
            half_open: HashMap::new(),
            cookie_secret: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            out: Outputs::default(),
        })
    }

    /// The settings of an IKE SA with the peer at `remote`.
    fn timing(&self, remote: IpAddr) -> Timing {
        Timing {
            retransmit_base: self.config.retransmit_base,
            retransmit_limit: self.config.retransmit_limit,
            half_open_timeout: self.config.half_open_timeout,
            force_udp_encap: self.config.force_udp_encap.contains(&remote),
        }
    }

    /// Starts an IKE SA (and its first child SA) with the named peer.
    pub fn initiate(
        &mut self,
        now: Instant,
        peer_name: &str,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, IkeError> {
        let index = self
            .config
            .peers
            .iter()
            .position(|p| p.name == peer_name)
            .ok_or_else(|| IkeError::UnknownPeer(peer_name.to_owned()))?;
        let timing = self.timing(remote.ip());
        let sa = IkeSa::initiate(
            now,
            index,
            &self.config.peers[index],
            local,
            remote,
            timing,
            &mut self.out,
        )?;
        let id = sa.id();
        self.sas.insert(id.0, sa);
        Ok(id)
    }

    /// Sends a DELETE for the IKE SA (and with it all its child SAs).
    pub fn delete_ike_sa(&mut self, now: Instant, id: IkeSaId) -> Result<(), IkeError> {
        let sa = Self::established_sa(&mut self.sas, id)?;
        sa.start_delete(now, &mut self.out)?;
        Ok(())
    }

    /// Sends an empty INFORMATIONAL request; no answer after all retransmissions deletes the SA.
    pub fn check_liveness(&mut self, now: Instant, id: IkeSaId) -> Result<(), IkeError> {
        let sa = Self::established_sa(&mut self.sas, id)?;
        sa.start_liveness(now, &mut self.out)?;
        Ok(())
    }

    /// Rekeys the child SA with this inbound SPI (with PFS when the first ESP suite has a
    /// group); the old child is deleted once the new one is installed.
    pub fn rekey_child(
        &mut self,
        now: Instant,
        id: IkeSaId,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        let sa = Self::established_sa(&mut self.sas, id)?;
        sa.start_child_rekey(now, inbound_spi, &self.config.peers, &mut self.out)
    }

    /// Feeds the traffic totals of a child SA in (from the ESP engine or targets' lifesize
    /// reports); a reached soft limit starts a rekey, a hard one a delete.
    pub fn report_child_usage(
        &mut self,
        now: Instant,
        id: IkeSaId,
        inbound_spi: u32,
        bytes: u64,
        packets: u64,
    ) -> Result<(), IkeError> {
        let sa = self.sas.get_mut(&id.0).ok_or(IkeError::NoSuchSa(id.0))?;
        sa.report_usage(
            now,
            inbound_spi,
            bytes,
            packets,
            &self.config.peers,
            &mut self.out,
        )
    }

    /// Negotiates an additional child SA with the peer's configured selectors.
    pub fn create_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), IkeError> {
        let sa = Self::established_sa(&mut self.sas, id)?;
        sa.start_new_child(now, &self.config.peers, &mut self.out)
    }

    /// Rekeys the IKE SA; the old one is deleted once the new one exists.
    pub fn rekey_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), IkeError> {
        let sa = Self::established_sa(&mut self.sas, id)?;
        sa.start_ike_rekey(now, &self.config.peers, &mut self.out)
    }

    fn established_sa(sas: &mut HashMap<u64, IkeSa>, id: IkeSaId) -> Result<&mut IkeSa, IkeError> {
        match sas.get_mut(&id.0) {
            Some(sa) if sa.state == State::Established && !sa.is_busy() => Ok(sa),
            Some(_) => Err(IkeError::Busy(id.0)),
            None => Err(IkeError::NoSuchSa(id.0)),
        }
    }

    /// Feeds one received IKE datagram (without the non-ESP marker) in.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        let result = self.dispatch(now, from, to, bytes);
        if let Err(discard) = result {
            discard.count(&mut self.out.stats);
        }
        self.remove_dead();
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Discard> {
        let view = HeaderView::new_checked(bytes).map_err(|_| Discard::Malformed)?;
        let header = view.header();
        if header.exchange == Exchange::IkeSaInit
            && !header.is_response()
            && header.spi_r == 0
            && header.message_id == 0
        {
            return self.handle_init_request(now, &view, header, from, to);
        }
        let local_spi = if header.from_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let remote_spi = if header.from_initiator() {
            header.spi_i
        } else {
            header.spi_r
        };
        let Some(sa) = self.sas.get_mut(&local_spi) else {
            self.out.stats.unknown_spi += 1;
            return Ok(());
        };
        let known_remote = if header.from_initiator() {
            sa.spi_i
        } else {
            sa.spi_r
        };
        if known_remote != remote_spi && !(sa.state == State::InitSent && known_remote == 0) {
            self.out.stats.spi_mismatch += 1;
            return Ok(());
        }
        sa.handle(now, &view, from, to, &self.config.peers, &mut self.out)
    }

    fn handle_init_request(
        &mut self,
        now: Instant,
        view: &HeaderView<'_>,
        header: Header,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), Discard> {
        if self.replay_init_response(header.spi_i, from, to) {
            return Ok(());
        }
        let payloads = decode_plain(view).map_err(|_| Discard::Malformed)?;
        let incoming = Incoming {
            header,
            bytes: view.bytes(),
            payloads,
            from,
            to,
        };
        if !self.cookie_is_valid(&incoming) {
            let cookie = self.cookie_for(&incoming);
            self.out.stats.cookies_sent += 1;
            self.refuse_init(header, from, to, notify::COOKIE, cookie);
            return Ok(());
        }
        if self.half_open_full(from.ip()) {
            return Ok(());
        }
        let Some(ke_group) = incoming.find(|p| match p {
            Payload::Ke(ke) => Some(&ke.group),
            _ => None,
        }) else {
            return Err(Discard::Malformed);
        };
        let Some(offer) = choose_ike_suite(&incoming, &self.config.peers, *ke_group) else {
            self.out.stats.no_proposal_chosen += 1;
            self.refuse_init(header, from, to, notify::NO_PROPOSAL_CHOSEN, Vec::new());
            return Ok(());
        };
        if offer.suite.dh.id() != *ke_group {
            self.out.stats.invalid_ke_sent += 1;
            let group = offer.suite.dh.id().to_be_bytes().to_vec();
            self.refuse_init(header, from, to, notify::INVALID_KE_PAYLOAD, group);
            return Ok(());
        }
        let sa = respond_to_init(now, &incoming, offer, self.timing(from.ip()), &mut self.out)?;
        let local_spi = sa.local_spi();
        self.half_open.insert((header.spi_i, from), local_spi);
        self.sas.insert(local_spi, sa);
        Ok(())
    }

    /// A retransmitted IKE_SA_INIT request gets the same response again.
    fn replay_init_response(&mut self, spi_i: u64, from: SocketAddr, to: SocketAddr) -> bool {
        let Some(sa) = self
            .half_open
            .get(&(spi_i, from))
            .and_then(|spi| self.sas.get(spi))
        else {
            return false;
        };
        match sa.cached_response(0) {
            Some(bytes) => {
                self.out.stats.retransmitted_responses += 1;
                self.out.transmit(to, from, bytes.to_vec());
                true
            }
            None => false,
        }
    }

    /// Whether a new half-open IKE SA from `peer` would pass a bound; counts the drop if so.
    /// The request is dropped unanswered: answering would cost a DH computation and state,
    /// which is what the bounds are for.
    fn half_open_full(&mut self, peer: IpAddr) -> bool {
        if self.half_open.len() >= self.config.max_half_open {
            self.out.stats.half_open_global_drops += 1;
            return true;
        }
        let from_peer = self
            .half_open
            .keys()
            .filter(|(_, from)| from.ip() == peer)
            .count();
        if from_peer >= self.config.max_half_open_per_peer {
            self.out.stats.half_open_peer_drops += 1;
            return true;
        }
        false
    }

    fn half_open_count(&self) -> usize {
        self.sas
            .values()
            .filter(|sa| sa.state == State::InitReplied)
            .count()
    }

    /// RFC 7296 2.6: cookie = HMAC(secret, Ni | IPi | SPIi), required only under load.
    fn cookie_for(&self, incoming: &Incoming<'_>) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.cookie_secret);
        context.update(incoming.nonce().unwrap_or_default());
        match incoming.from.ip() {
            IpAddr::V4(v4) => context.update(&v4.octets()),
            IpAddr::V6(v6) => context.update(&v6.octets()),
        }
        context.update(&incoming.header.spi_i.to_be_bytes());
        context.sign().as_ref().to_vec()
    }

    fn cookie_is_valid(&self, incoming: &Incoming<'_>) -> bool {
        if self.half_open_count() < self.config.cookie_threshold {
            return true;
        }
        match incoming.payloads.first() {
            Some(Payload::Notify(n)) if n.notify_type == notify::COOKIE => {
                verify_slices_are_equal(&n.data, &self.cookie_for(incoming)).is_ok()
            }
            _ => false,
        }
    }

    /// Answers an IKE_SA_INIT request with a single notify and keeps no state.
    fn refuse_init(
        &mut self,
        request: Header,
        from: SocketAddr,
        to: SocketAddr,
        notify_type: u16,
        data: Vec<u8>,
    ) {
        let header = Header {
            spi_i: request.spi_i,
            spi_r: 0,
            next_payload: 0,
            exchange: Exchange::IkeSaInit,
            flags: FLAG_RESPONSE,
            message_id: 0,
            length: HEADER_LEN as u32,
        };
        let payload = Payload::Notify(NotifyPayload::ike(notify_type, data));
        self.out.transmit(to, from, build_plain(header, &[payload]));
    }

    /// Retransmits what is due and expires what has waited too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        for sa in self.sas.values_mut() {
            sa.handle_timeout(now, &self.config.peers, &mut self.out);
        }
        self.remove_dead();
    }

    fn remove_dead(&mut self) {
        for sa in self.out.spawned.drain(..) {
            self.sas.insert(sa.local_spi(), sa);
        }
        self.sas.retain(|_, sa| sa.state != State::Dead);
        let sas = &self.sas;
        self.half_open.retain(|_, spi| {
            sas.get(spi)
                .is_some_and(|sa| sa.state == State::InitReplied)
        });
    }

    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The earliest time [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .values()
            .filter_map(|sa| sa.next_timeout(&self.config.peers))
            .min()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    /// A listing of the IKE SAs, sorted by id.
    pub fn ike_sas(&self) -> Vec<IkeSaInfo> {
        let mut list: Vec<IkeSaInfo> = self
            .sas
            .values()
            .map(|sa| sa.info(&self.config.peers))
            .collect();
        list.sort_by_key(|info| info.id);
        list
    }
}

/// Picks the first offered proposal that a configured peer accepts, preferring one whose DH
/// group matches the KE payload so that no INVALID_KE_PAYLOAD round trip is needed.
fn choose_ike_suite(
    incoming: &Incoming<'_>,
    peers: &[PeerConfig],
    ke_group: u16,
) -> Option<InitOffer> {
    let proposals = incoming.find(|p| match p {
        Payload::Sa(proposals) => Some(proposals),
        _ => None,
    })?;
    let candidates: Vec<InitOffer> = proposals
        .iter()
        .flat_map(|proposal| {
            peers
                .iter()
                .filter(|peer| peer.remote_addr.is_none_or(|a| a == incoming.from.ip()))
                .flat_map(|peer| peer.ike_suites.iter())
                .filter(|suite| suite.is_offered_by(proposal))
                .map(|suite| InitOffer {
                    suite: *suite,
                    proposal_number: proposal.number,
                })
        })
        .collect();
    candidates
        .iter()
        .find(|offer| offer.suite.dh.id() == ke_group)
        .or(candidates.first())
        .copied()
}
