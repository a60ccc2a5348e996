//! IKE_SA_INIT, both roles (RFC 7296 sections 1.2 and 2.6 to 2.10).

use std::net::SocketAddr;
use std::time::Instant;

use super::nat::{nat_between, nat_payloads};
use super::{build_plain, Discard, IkeSa, Incoming, RequestKind, Role, State, Timing};
use crate::config::PeerConfig;
use crate::crypto::{derive_ike_keys, random_bytes, skeyseed, DhGroup, IkeSuite};
use crate::endpoint::Outputs;
use crate::event::DeleteReason;
use crate::wire::{notify, Exchange, KePayload, NotifyPayload, Payload};
use crate::{CryptoError, IkeError};

/// Our nonces are 32 bytes: at least half the PRF key size of every PRF we offer.
const NONCE_LEN: usize = 32;
const NAT_T_PORT: u16 = 4500;

/// The IKE suite a responder picked from an offer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitOffer {
    pub suite: IkeSuite,
    pub proposal_number: u8,
}

pub(crate) fn random_u64() -> Result<u64, CryptoError> {
    let bytes = random_bytes(8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes);
    Ok(u64::from_be_bytes(word).max(1))
}

impl IkeSa {
    /// Creates an initiator IKE SA and queues its IKE_SA_INIT request.
    pub(crate) fn initiate(
        now: Instant,
        peer_index: usize,
        peer: &PeerConfig,
        local: SocketAddr,
        remote: SocketAddr,
        timing: Timing,
        out: &mut Outputs,
    ) -> Result<Self, IkeError> {
        let suite = *peer.ike_suites.first().ok_or(IkeError::NotInitiable {
            peer: peer.name.clone(),
            reason: "no IKE proposals",
        })?;
        if peer.esp_suites.is_empty() || peer.local_ts.is_empty() || peer.remote_ts.is_empty() {
            return Err(IkeError::NotInitiable {
                peer: peer.name.clone(),
                reason: "no ESP proposals or traffic selectors",
            });
        }
        let mut sa = IkeSa::new(
            Role::Initiator,
            random_u64()?,
            0,
            local,
            remote,
            suite,
            now,
            timing,
        );
        sa.peer = Some(peer_index);
        sa.dh = Some(suite.dh.generate()?);
        sa.ni = random_bytes(NONCE_LEN)?;
        sa.send_init_request(now, peer, out);
        Ok(sa)
    }

    fn send_init_request(&mut self, now: Instant, peer: &PeerConfig, out: &mut Outputs) {
        let mut payloads = Vec::new();
        if let Some(cookie) = &self.cookie {
            payloads.push(Payload::Notify(NotifyPayload::ike(
                notify::COOKIE,
                cookie.clone(),
            )));
        }
        let proposals = peer
            .ike_suites
            .iter()
            .zip(1u8..)
            .map(|(suite, number)| suite.proposal(number, Vec::new()))
            .collect();
        payloads.push(Payload::Sa(proposals));
        if let Some(dh) = &self.dh {
            payloads.push(Payload::Ke(KePayload {
                group: dh.group().id(),
                data: dh.public_value().to_vec(),
            }));
        }
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(nat_payloads(
            self.spi_i,
            0,
            self.advertised_source(),
            self.remote,
        ));
        let bytes = build_plain(self.header(Exchange::IkeSaInit, false, 0), &payloads);
        self.init_request = bytes.clone();
        self.next_request_id = 1;
        self.queue_request(now, RequestKind::Init, 0, bytes, out);
    }

    pub(super) fn handle_init_response(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let peer = self.peer_config(peers).ok_or(Discard::UnexpectedMessage)?;
        if self.retry_init(now, incoming, peer, out) {
            return Ok(());
        }
        if let Some(error) = incoming.error_notify() {
            self.die(DeleteReason::PeerError(error), out);
            return Ok(());
        }
        match self.complete_init(incoming, peer) {
            Ok(()) => {
                self.move_to_nat_t_port_if_needed();
                self.send_auth_request(now, peer, out)
                    .map_err(|_| Discard::UnexpectedMessage)
            }
            Err(_) => {
                self.die(DeleteReason::Negotiation, out);
                Ok(())
            }
        }
    }

    /// Restarts IKE_SA_INIT after INVALID_KE_PAYLOAD or COOKIE; true when it did.
    fn retry_init(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peer: &PeerConfig,
        out: &mut Outputs,
    ) -> bool {
        if let Some(cookie) = incoming.notify(notify::COOKIE) {
            if self.cookie.is_none() && !cookie.data.is_empty() && cookie.data.len() <= 64 {
                self.cookie = Some(cookie.data.clone());
                self.send_init_request(now, peer, out);
                return true;
            }
        }
        let Some(invalid_ke) = incoming.notify(notify::INVALID_KE_PAYLOAD) else {
            return false;
        };
        let wanted = invalid_ke
            .data
            .get(..2)
            .and_then(|g| DhGroup::from_id(u16::from_be_bytes([g[0], g[1]])));
        let usable = wanted.filter(|g| peer.ike_suites.iter().any(|s| s.dh == *g));
        match (usable, self.invalid_ke_retried) {
            (Some(group), false) => match group.generate() {
                Ok(dh) => {
                    self.invalid_ke_retried = true;
                    self.dh = Some(dh);
                    self.send_init_request(now, peer, out);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        }
    }

    fn complete_init(&mut self, incoming: &Incoming<'_>, peer: &PeerConfig) -> Result<(), ()> {
        let proposals = incoming
            .find(|p| match p {
                Payload::Sa(proposals) => Some(proposals),
                _ => None,
            })
            .ok_or(())?;
        let [chosen] = proposals.as_slice() else {
            return Err(());
        };
        let dh = self.dh.as_ref().ok_or(())?;
        let suite = peer
            .ike_suites
            .iter()
            .find(|s| s.is_offered_by(chosen) && s.dh == dh.group())
            .ok_or(())?;
        let ke = incoming
            .find(|p| match p {
                Payload::Ke(ke) => Some(ke),
                _ => None,
            })
            .filter(|ke| ke.group == dh.group().id())
            .ok_or(())?;
        let nr = incoming.nonce().ok_or(())?.to_vec();
        if incoming.header.spi_r == 0 {
            return Err(());
        }
        let shared = dh.shared_secret(&ke.data).map_err(|_| ())?;
        self.suite = *suite;
        self.spi_r = incoming.header.spi_r;
        let seed = skeyseed(suite.prf, &self.ni, &nr, &shared);
        self.keys = Some(
            derive_ike_keys(suite, &seed, &self.ni, &nr, self.spi_i, self.spi_r).map_err(|_| ())?,
        );
        self.nr = nr;
        self.init_response = incoming.bytes.to_vec();
        self.nat_detected = self.timing.force_udp_encap || nat_between(incoming).unwrap_or(false);
        self.dh = None;
        self.state = State::AuthSent;
        Ok(())
    }

    /// The source address our NAT_DETECTION_SOURCE_IP hash covers: our own, or port 0 of it
    /// when ESP must go in UDP anyway, so the peer sees a NAT (RFC 7296 section 2.23).
    fn advertised_source(&self) -> SocketAddr {
        if self.timing.force_udp_encap {
            SocketAddr::new(self.local.ip(), 0)
        } else {
            self.local
        }
    }

    /// RFC 7296 2.23: after a NAT is detected the initiator moves to port 4500.
    fn move_to_nat_t_port_if_needed(&mut self) {
        if self.nat_detected {
            self.local.set_port(NAT_T_PORT);
            self.remote.set_port(NAT_T_PORT);
        }
    }
}

/// Builds the responder's IKE SA and queues its IKE_SA_INIT response. `offer` has been checked
/// against the KE payload's group by the caller.
pub(crate) fn respond_to_init(
    now: Instant,
    incoming: &Incoming<'_>,
    offer: InitOffer,
    timing: Timing,
    out: &mut Outputs,
) -> Result<IkeSa, Discard> {
    let suite = offer.suite;
    let ke = incoming
        .find(|p| match p {
            Payload::Ke(ke) => Some(ke),
            _ => None,
        })
        .ok_or(Discard::Malformed)?;
    let ni = incoming.nonce().ok_or(Discard::Malformed)?.to_vec();
    let dh = suite
        .dh
        .generate()
        .map_err(|_| Discard::UnexpectedMessage)?;
    let shared = dh.shared_secret(&ke.data).map_err(|_| Discard::Malformed)?;
    let spi_r = random_u64().map_err(|_| Discard::UnexpectedMessage)?;
    let nr = random_bytes(NONCE_LEN).map_err(|_| Discard::UnexpectedMessage)?;
    let spi_i = incoming.header.spi_i;
    let mut sa = IkeSa::new(
        Role::Responder,
        spi_i,
        spi_r,
        incoming.to,
        incoming.from,
        suite,
        now,
        timing,
    );
    let seed = skeyseed(suite.prf, &ni, &nr, &shared);
    sa.keys = Some(
        derive_ike_keys(&suite, &seed, &ni, &nr, spi_i, spi_r)
            .map_err(|_| Discard::UnexpectedMessage)?,
    );
    sa.nat_detected = timing.force_udp_encap || nat_between(incoming).unwrap_or(false);
    let mut payloads = vec![
        Payload::Sa(vec![suite.proposal(offer.proposal_number, Vec::new())]),
        Payload::Ke(KePayload {
            group: suite.dh.id(),
            data: dh.public_value().to_vec(),
        }),
        Payload::Nonce(nr.clone()),
    ];
    payloads.extend(nat_payloads(
        spi_i,
        spi_r,
        sa.advertised_source(),
        sa.remote,
    ));
    let bytes = build_plain(sa.header(Exchange::IkeSaInit, true, 0), &payloads);
    sa.ni = ni;
    sa.nr = nr;
    sa.init_request = incoming.bytes.to_vec();
    sa.init_response = bytes.clone();
    sa.remember_response(0, bytes, out);
    Ok(sa)
}
