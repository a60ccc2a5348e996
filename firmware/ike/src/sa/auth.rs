//! IKE_AUTH with pre-shared keys and the first child SA (RFC 7296 sections 1.2, 2.15, 2.9).

use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use zeroize::Zeroizing;

use super::{ChildSaInfo, Discard, IkeSa, Incoming, RequestKind, Role, State};
use crate::config::{Credential, Mode, PeerConfig};
use crate::crypto::{derive_child_keys, random_bytes, EspSuite};
use crate::endpoint::Outputs;
use crate::event::{ChildSaInstalled, DeleteReason, Event};
use crate::wire::{
    narrow, notify, AuthPayload, Exchange, IdPayload, NotifyPayload, Payload, Proposal,
    TrafficSelector, TsPayload,
};
use crate::CryptoError;

const AUTH_SHARED_KEY_MIC: u8 = 2;
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// A negotiated child SA before it is installed.
pub(super) struct ChildChoice {
    pub suite: EspSuite,
    pub proposal_number: u8,
    pub outbound_spi: u32,
    pub ts_i: Vec<TrafficSelector>,
    pub ts_r: Vec<TrafficSelector>,
    pub mode: Mode,
}

pub(super) fn random_spi() -> Result<u32, CryptoError> {
    let bytes = random_bytes(4)?;
    // SPIs 1..=255 are reserved by IANA; 0 is invalid.
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).max(0x100))
}

pub(super) fn spi_of(proposal: &Proposal) -> Option<u32> {
    let bytes: [u8; 4] = proposal.spi.as_slice().try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

impl IkeSa {
    /// The AUTH value that `signer_is_initiator` computes over its signed octets.
    fn psk_auth(
        &self,
        credential: &Credential,
        signer_is_initiator: bool,
        id: &IdPayload,
    ) -> Option<Zeroizing<Vec<u8>>> {
        let keys = self.keys.as_ref()?;
        let prf = self.suite.prf;
        let (message, nonce, sk_p) = if signer_is_initiator {
            (&self.init_request, &self.nr, &keys.sk_pi)
        } else {
            (&self.init_response, &self.ni, &keys.sk_pr)
        };
        let maced_id = prf.compute(sk_p, &[&id.body()]);
        let Credential::Psk(psk) = credential;
        let pad_key = prf.compute(psk.secret(), &[KEY_PAD]);
        Some(prf.compute(&pad_key, &[message, nonce, &maced_id]))
    }

    fn verify_peer_auth(&self, peer: &PeerConfig, id: &IdPayload, auth: &AuthPayload) -> bool {
        let peer_is_initiator = self.role == Role::Responder;
        auth.method == AUTH_SHARED_KEY_MIC
            && self
                .psk_auth(&peer.credential, peer_is_initiator, id)
                .is_some_and(|expected| verify_slices_are_equal(&expected, &auth.data).is_ok())
    }

    fn own_auth(&self, peer: &PeerConfig, id: &IdPayload) -> Result<Payload, CryptoError> {
        let data = self
            .psk_auth(&peer.credential, self.role == Role::Initiator, id)
            .ok_or(CryptoError::Library("no IKE SA keys"))?;
        Ok(Payload::Auth(AuthPayload {
            method: AUTH_SHARED_KEY_MIC,
            data: data.to_vec(),
        }))
    }

    pub(super) fn send_auth_request(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        out: &mut Outputs,
    ) -> Result<(), CryptoError> {
        let id_i = peer.local_id.to_payload();
        let inbound_spi = random_spi()?;
        let mut payloads = vec![
            Payload::IdI(id_i.clone()),
            Payload::IdR(peer.remote_id.to_payload()),
            self.own_auth(peer, &id_i)?,
        ];
        if peer.mode == Mode::Transport {
            payloads.push(Payload::Notify(NotifyPayload::ike(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        payloads.push(Payload::Sa(
            peer.esp_suites
                .iter()
                .zip(1u8..)
                .map(|(suite, number)| suite.proposal(number, inbound_spi, false))
                .collect(),
        ));
        payloads.push(Payload::TsI(TsPayload {
            selectors: peer.local_ts.clone(),
        }));
        payloads.push(Payload::TsR(TsPayload {
            selectors: peer.remote_ts.clone(),
        }));
        self.pending_child_spi = Some(inbound_spi);
        self.send_request(now, RequestKind::Auth, Exchange::IkeAuth, &payloads, out)
    }

    pub(super) fn handle_auth_request(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let id_i = incoming
            .find(|p| match p {
                Payload::IdI(id) => Some(id),
                _ => None,
            })
            .ok_or(Discard::Malformed)?;
        let auth = incoming
            .find(|p| match p {
                Payload::Auth(a) => Some(a),
                _ => None,
            })
            .ok_or(Discard::Malformed)?;
        // Several configurations (one per SPD entry) may share the peer's identity: among
        // those whose key verifies, prefer the first whose selectors and proposals fit.
        let authenticated: Vec<usize> = (0..peers.len())
            .filter(|&i| {
                let p = &peers[i];
                p.remote_id.matches(id_i)
                    && p.remote_addr.is_none_or(|a| a == incoming.from.ip())
                    && p.ike_suites.contains(&self.suite)
                    && self.verify_peer_auth(p, id_i, auth)
            })
            .collect();
        let fitting = authenticated
            .iter()
            .copied()
            .find(|&i| choose_child(&peers[i], incoming).is_ok());
        let Some(index) = fitting.or(authenticated.first().copied()) else {
            out.stats.authentication_failures += 1;
            let refusal = [Payload::Notify(NotifyPayload::ike(
                notify::AUTHENTICATION_FAILED,
                Vec::new(),
            ))];
            let _ =
                self.send_response(Exchange::IkeAuth, incoming.header.message_id, &refusal, out);
            self.die(DeleteReason::AuthenticationFailed, out);
            return Ok(());
        };
        let peer = &peers[index];
        self.peer = Some(index);
        let id_r = peer.local_id.to_payload();
        let mut payloads = vec![
            Payload::IdR(id_r.clone()),
            self.own_auth(peer, &id_r)
                .map_err(|_| Discard::UnexpectedMessage)?,
        ];
        self.state = State::Established;
        out.event(self.established_event(peer));
        match choose_child(peer, incoming) {
            Ok(choice) => {
                let inbound_spi = random_spi().map_err(|_| Discard::UnexpectedMessage)?;
                payloads.extend(child_answer(&choice, inbound_spi));
                let (ni, nr) = (self.ni.clone(), self.nr.clone());
                let new = NewChild {
                    now,
                    choice: &choice,
                    inbound_spi,
                    we_initiated_exchange: false,
                    pfs_shared: None,
                    ni: &ni,
                    nr: &nr,
                    replaces: None,
                };
                self.install_child(new, incoming, out)
                    .map_err(|_| Discard::UnexpectedMessage)?;
            }
            Err(notify_type) => {
                payloads.push(Payload::Notify(NotifyPayload::ike(notify_type, Vec::new())));
                out.event(Event::ChildSaRefused {
                    ike_sa: self.id(),
                    notify: notify_type,
                });
            }
        }
        self.send_response(
            Exchange::IkeAuth,
            incoming.header.message_id,
            &payloads,
            out,
        )
        .map_err(|_| Discard::UnexpectedMessage)
    }

    pub(super) fn handle_auth_response(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let peer = self.peer_config(peers).ok_or(Discard::UnexpectedMessage)?;
        let id_r = incoming.find(|p| match p {
            Payload::IdR(id) => Some(id),
            _ => None,
        });
        let auth = incoming.find(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        });
        let (Some(id_r), Some(auth)) = (id_r, auth) else {
            let reason = incoming
                .error_notify()
                .map_or(DeleteReason::Negotiation, DeleteReason::PeerError);
            self.die(reason, out);
            return Ok(());
        };
        if !peer.remote_id.matches(id_r) || !self.verify_peer_auth(peer, id_r, auth) {
            out.stats.authentication_failures += 1;
            self.die(DeleteReason::AuthenticationFailed, out);
            return Ok(());
        }
        self.state = State::Established;
        out.event(self.established_event(peer));
        self.accept_child(now, peer, incoming, out);
        Ok(())
    }

    /// Installs the child SA the responder chose, or reports why there is none.
    fn accept_child(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        incoming: &Incoming<'_>,
        out: &mut Outputs,
    ) {
        let inbound_spi = self.pending_child_spi.take();
        match checked_child_answer(peer, incoming) {
            Ok(choice) => {
                if let Some(inbound_spi) = inbound_spi {
                    let (ni, nr) = (self.ni.clone(), self.nr.clone());
                    let new = NewChild {
                        now,
                        choice: &choice,
                        inbound_spi,
                        we_initiated_exchange: true,
                        pfs_shared: None,
                        ni: &ni,
                        nr: &nr,
                        replaces: None,
                    };
                    let installed = self.install_child(new, incoming, out);
                    if installed.is_ok() {
                        return;
                    }
                }
                out.event(Event::ChildSaRefused {
                    ike_sa: self.id(),
                    notify: notify::NO_PROPOSAL_CHOSEN,
                });
            }
            Err(notify_type) => out.event(Event::ChildSaRefused {
                ike_sa: self.id(),
                notify: notify_type,
            }),
        }
    }

    fn established_event(&self, peer: &PeerConfig) -> Event {
        Event::IkeSaEstablished {
            ike_sa: self.id(),
            peer: peer.name.clone(),
            local: self.local,
            remote: self.remote,
            nat_detected: self.nat_detected,
        }
    }

    /// Derives the keys of a new child SA, records it and reports it (as a rekey when it
    /// replaces another child).
    pub(super) fn install_child(
        &mut self,
        new: NewChild<'_>,
        incoming: &Incoming<'_>,
        out: &mut Outputs,
    ) -> Result<(), CryptoError> {
        let sk_d = &self
            .keys
            .as_ref()
            .ok_or(CryptoError::Library("no IKE SA keys"))?
            .sk_d;
        let choice = new.choice;
        // Report the PFS group only when a Diffie-Hellman exchange really took place.
        let suite = EspSuite {
            pfs: choice.suite.pfs.filter(|_| new.pfs_shared.is_some()),
            ..choice.suite
        };
        let keys = derive_child_keys(self.suite.prf, sk_d, &suite, new.pfs_shared, new.ni, new.nr)?;
        let (inbound_keys, outbound_keys, local_ts, remote_ts) = if new.we_initiated_exchange {
            (
                keys.responder_to_initiator,
                keys.initiator_to_responder,
                &choice.ts_i,
                &choice.ts_r,
            )
        } else {
            (
                keys.initiator_to_responder,
                keys.responder_to_initiator,
                &choice.ts_r,
                &choice.ts_i,
            )
        };
        self.children.push(ChildSaInfo {
            installed_at: new.now,
            bytes: 0,
            packets: 0,
            rekey_started: false,
            inbound_spi: new.inbound_spi,
            outbound_spi: choice.outbound_spi,
            suite,
            mode: choice.mode,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
        });
        let installed = ChildSaInstalled {
            ike_sa: self.id(),
            inbound_spi: new.inbound_spi,
            outbound_spi: choice.outbound_spi,
            suite,
            inbound_keys,
            outbound_keys,
            mode: choice.mode,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            local: self.local,
            remote: self.remote,
            udp_encapsulation: self.nat_detected,
            peer_no_tfc_padding: incoming
                .notify(notify::ESP_TFC_PADDING_NOT_SUPPORTED)
                .is_some(),
        };
        out.event(match new.replaces {
            Some((old_inbound_spi, old_outbound_spi)) => Event::ChildSaRekeyed {
                old_inbound_spi,
                old_outbound_spi,
                new: installed,
            },
            None => Event::ChildSaInstalled(installed),
        });
        Ok(())
    }
}

/// What [`IkeSa::install_child`] needs besides the negotiated choice.
pub(super) struct NewChild<'a> {
    pub now: Instant,
    pub choice: &'a ChildChoice,
    pub inbound_spi: u32,
    /// True when we sent the request of the exchange that created the child.
    pub we_initiated_exchange: bool,
    pub pfs_shared: Option<&'a [u8]>,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    /// (inbound, outbound) SPIs of the child this one rekeys.
    pub replaces: Option<(u32, u32)>,
}

pub(super) fn selectors(
    incoming: &Incoming<'_>,
) -> Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)> {
    let ts_i = incoming.find(|p| match p {
        Payload::TsI(ts) => Some(ts),
        _ => None,
    })?;
    let ts_r = incoming.find(|p| match p {
        Payload::TsR(ts) => Some(ts),
        _ => None,
    })?;
    Some((ts_i.selectors.clone(), ts_r.selectors.clone()))
}

pub(super) fn child_proposals<'a>(incoming: &'a Incoming<'_>) -> Option<&'a Vec<Proposal>> {
    incoming.find(|p| match p {
        Payload::Sa(proposals) => Some(proposals),
        _ => None,
    })
}

pub(super) fn negotiated_mode(peer: &PeerConfig, incoming: &Incoming<'_>) -> Mode {
    let asked = incoming.notify(notify::USE_TRANSPORT_MODE).is_some();
    if asked && peer.mode == Mode::Transport {
        Mode::Transport
    } else {
        Mode::Tunnel
    }
}

/// Responder: picks an ESP proposal and narrows the selectors, or names the refusal notify.
pub(super) fn choose_child(peer: &PeerConfig, incoming: &Incoming<'_>) -> Result<ChildChoice, u16> {
    let proposals = child_proposals(incoming).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let (suite, proposal) = proposals
        .iter()
        .find_map(|p| {
            peer.esp_suites
                .iter()
                .find(|s| s.is_offered_by(p, false))
                .map(|s| (*s, p))
        })
        .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let outbound_spi = spi_of(proposal).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let (offered_i, offered_r) = selectors(incoming).ok_or(notify::TS_UNACCEPTABLE)?;
    let ts_i = narrow(&offered_i, &peer.remote_ts);
    let ts_r = narrow(&offered_r, &peer.local_ts);
    if ts_i.is_empty() || ts_r.is_empty() {
        return Err(notify::TS_UNACCEPTABLE);
    }
    Ok(ChildChoice {
        suite,
        proposal_number: proposal.number,
        outbound_spi,
        ts_i,
        ts_r,
        mode: negotiated_mode(peer, incoming),
    })
}

/// The responder's SA, TSi, TSr (and transport mode notify) for a chosen child.
pub(super) fn child_answer(choice: &ChildChoice, inbound_spi: u32) -> Vec<Payload> {
    let mut payloads = Vec::new();
    if choice.mode == Mode::Transport {
        payloads.push(Payload::Notify(NotifyPayload::ike(
            notify::USE_TRANSPORT_MODE,
            Vec::new(),
        )));
    }
    payloads.push(Payload::Sa(vec![choice.suite.proposal(
        choice.proposal_number,
        inbound_spi,
        false,
    )]));
    payloads.push(Payload::TsI(TsPayload {
        selectors: choice.ts_i.clone(),
    }));
    payloads.push(Payload::TsR(TsPayload {
        selectors: choice.ts_r.clone(),
    }));
    payloads
}

/// Initiator: checks the responder's child SA answer against what we offered.
pub(super) fn checked_child_answer(
    peer: &PeerConfig,
    incoming: &Incoming<'_>,
) -> Result<ChildChoice, u16> {
    if let Some(error) = incoming.error_notify() {
        return Err(error);
    }
    let proposals = child_proposals(incoming).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let [chosen] = proposals.as_slice() else {
        return Err(notify::NO_PROPOSAL_CHOSEN);
    };
    let suite = peer
        .esp_suites
        .iter()
        .find(|s| s.is_offered_by(chosen, false))
        .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let outbound_spi = spi_of(chosen).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
    let (ts_i, ts_r) = selectors(incoming).ok_or(notify::TS_UNACCEPTABLE)?;
    let within = |got: &[TrafficSelector], offered: &[TrafficSelector]| {
        !got.is_empty() && got.iter().all(|g| offered.iter().any(|o| o.contains(g)))
    };
    if !within(&ts_i, &peer.local_ts) || !within(&ts_r, &peer.remote_ts) {
        return Err(notify::TS_UNACCEPTABLE);
    }
    let mode =
        if incoming.notify(notify::USE_TRANSPORT_MODE).is_some() && peer.mode == Mode::Transport {
            Mode::Transport
        } else {
            Mode::Tunnel
        };
    Ok(ChildChoice {
        suite: *suite,
        proposal_number: chosen.number,
        outbound_spi,
        ts_i,
        ts_r,
        mode,
    })
}
