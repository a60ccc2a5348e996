//! CREATE_CHILD_SA (RFC 7296 sections 1.3 and 2.17 to 2.18): new child SAs, child rekeys with
//! or without PFS and IKE SA rekeys, in both roles. Simultaneous rekeys (2.8.1) are not handled.

use std::time::Instant;

use super::auth::{child_proposals, negotiated_mode, random_spi, selectors, ChildChoice, NewChild};
use super::init::random_u64;
use super::{Discard, IkeSa, Incoming, RequestKind, Role, State};
use crate::config::{Mode, PeerConfig};
use crate::crypto::{derive_ike_keys, random_bytes, DhPrivate, EspSuite, IkeSuite};
use crate::endpoint::Outputs;
use crate::event::{Event, IkeSaId};
use crate::wire::{
    narrow, notify, DeletePayload, Exchange, KePayload, NotifyPayload, Payload, Proposal,
    ProtocolId, TsPayload,
};
use crate::{CryptoError, IkeError};

const NONCE_LEN: usize = 32;

/// A refusal: notify type and data.
type Refusal = (u16, Vec<u8>);

/// Our CREATE_CHILD_SA request in flight.
pub(super) enum PendingCreate {
    Child {
        replaces: Option<(u32, u32)>,
        inbound_spi: u32,
        ni: Vec<u8>,
        dh: Option<DhPrivate>,
        local_ts: Vec<crate::wire::TrafficSelector>,
        remote_ts: Vec<crate::wire::TrafficSelector>,
    },
    Ike {
        new_spi_i: u64,
        ni: Vec<u8>,
        dh: DhPrivate,
    },
}

fn refusal(notify_type: u16) -> Refusal {
    (notify_type, Vec::new())
}

fn ke_of<'a>(incoming: &'a Incoming<'_>) -> Option<&'a KePayload> {
    incoming.find(|p| match p {
        Payload::Ke(ke) => Some(ke),
        _ => None,
    })
}

fn spi_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn spi_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Picks an ESP suite for a CREATE_CHILD_SA offer: with a KE payload the suite's PFS group must
/// be that group, without one the suite must not demand PFS.
fn pick_esp<'p>(
    peer: &PeerConfig,
    proposals: &'p [Proposal],
    ke_group: Option<u16>,
) -> Result<(EspSuite, &'p Proposal), Refusal> {
    for proposal in proposals {
        for suite in &peer.esp_suites {
            let fits = match ke_group {
                Some(group) => {
                    suite.pfs.map(|g| g.id()) == Some(group) && suite.is_offered_by(proposal, true)
                }
                None => suite.pfs.is_none() && suite.is_offered_by(proposal, false),
            };
            if fits {
                return Ok((*suite, proposal));
            }
        }
    }
    if ke_group.is_some() {
        let other = proposals.iter().find_map(|p| {
            peer.esp_suites
                .iter()
                .find(|s| s.pfs.is_some() && s.is_offered_by(p, true))
                .and_then(|s| s.pfs)
        });
        if let Some(group) = other {
            return Err((
                notify::INVALID_KE_PAYLOAD,
                group.id().to_be_bytes().to_vec(),
            ));
        }
    }
    Err(refusal(notify::NO_PROPOSAL_CHOSEN))
}

impl IkeSa {
    pub(super) fn handle_create_child_request(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let peer = self.peer_config(peers).ok_or(Discard::UnexpectedMessage)?;
        let proposals = child_proposals(incoming).ok_or(Discard::Malformed)?;
        let ni = incoming.nonce().ok_or(Discard::Malformed)?.to_vec();
        let answer = if proposals.iter().any(|p| p.protocol == ProtocolId::Ike) {
            self.answer_ike_rekey(now, peer, incoming, &ni, out)
        } else {
            self.answer_child(now, peer, incoming, &ni, out)
        };
        let payloads = answer.unwrap_or_else(|(notify_type, data)| {
            vec![Payload::Notify(NotifyPayload::ike(notify_type, data))]
        });
        self.send_response(
            Exchange::CreateChildSa,
            incoming.header.message_id,
            &payloads,
            out,
        )
        .map_err(|_| Discard::UnexpectedMessage)
    }

    fn answer_child(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        incoming: &Incoming<'_>,
        ni: &[u8],
        out: &mut Outputs,
    ) -> Result<Vec<Payload>, Refusal> {
        let replaces = match incoming.notify(notify::REKEY_SA) {
            Some(rekey) => {
                let outbound = spi_u32(&rekey.spi).ok_or(refusal(notify::CHILD_SA_NOT_FOUND))?;
                let old = self
                    .children
                    .iter()
                    .find(|c| c.outbound_spi == outbound)
                    .ok_or(refusal(notify::CHILD_SA_NOT_FOUND))?;
                Some((old.inbound_spi, old.outbound_spi))
            }
            None => None,
        };
        let proposals = child_proposals(incoming).ok_or(refusal(notify::NO_PROPOSAL_CHOSEN))?;
        let ke = ke_of(incoming);
        let (suite, proposal) = pick_esp(peer, proposals, ke.map(|k| k.group))?;
        let choice = narrowed_choice(peer, incoming, suite, proposal)?;
        let dh = suite
            .pfs
            .filter(|_| ke.is_some())
            .map(|g| g.generate())
            .transpose()
            .map_err(|_| refusal(notify::TEMPORARY_FAILURE))?;
        let shared = match (&dh, ke) {
            (Some(dh), Some(ke)) => Some(
                dh.shared_secret(&ke.data)
                    .map_err(|_| refusal(notify::INVALID_SYNTAX))?,
            ),
            _ => None,
        };
        let nr = random_bytes(NONCE_LEN).map_err(|_| refusal(notify::TEMPORARY_FAILURE))?;
        let inbound_spi = random_spi().map_err(|_| refusal(notify::TEMPORARY_FAILURE))?;
        let new = NewChild {
            now,
            choice: &choice,
            inbound_spi,
            we_initiated_exchange: false,
            pfs_shared: shared.as_deref().map(|s| s.as_slice()),
            ni,
            nr: &nr,
            replaces,
        };
        self.install_child(new, incoming, out)
            .map_err(|_| refusal(notify::TEMPORARY_FAILURE))?;
        let mut payloads = Vec::new();
        if choice.mode == Mode::Transport {
            payloads.push(Payload::Notify(NotifyPayload::ike(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        payloads.push(Payload::Sa(vec![suite.proposal(
            choice.proposal_number,
            inbound_spi,
            dh.is_some(),
        )]));
        payloads.push(Payload::Nonce(nr));
        if let Some(dh) = &dh {
            payloads.push(Payload::Ke(KePayload {
                group: dh.group().id(),
                data: dh.public_value().to_vec(),
            }));
        }
        payloads.push(Payload::TsI(TsPayload {
            selectors: choice.ts_i.clone(),
        }));
        payloads.push(Payload::TsR(TsPayload {
            selectors: choice.ts_r.clone(),
        }));
        Ok(payloads)
    }

    fn answer_ike_rekey(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        incoming: &Incoming<'_>,
        ni: &[u8],
        out: &mut Outputs,
    ) -> Result<Vec<Payload>, Refusal> {
        let proposals = child_proposals(incoming).ok_or(refusal(notify::NO_PROPOSAL_CHOSEN))?;
        let ke = ke_of(incoming).ok_or(refusal(notify::INVALID_SYNTAX))?;
        let (suite, proposal) = pick_ike(peer, proposals, ke.group)?;
        if suite.dh.id() != ke.group {
            return Err((
                notify::INVALID_KE_PAYLOAD,
                suite.dh.id().to_be_bytes().to_vec(),
            ));
        }
        let new_spi_i = spi_u64(&proposal.spi).ok_or(refusal(notify::INVALID_SYNTAX))?;
        let failure = |_| refusal(notify::TEMPORARY_FAILURE);
        let dh = suite.dh.generate().map_err(failure)?;
        let shared = dh
            .shared_secret(&ke.data)
            .map_err(|_| refusal(notify::INVALID_SYNTAX))?;
        let nr = random_bytes(NONCE_LEN).map_err(failure)?;
        let new_spi_r = random_u64().map_err(failure)?;
        let new_sa = self
            .rekeyed(
                now,
                Role::Responder,
                suite,
                &shared,
                ni,
                &nr,
                new_spi_i,
                new_spi_r,
            )
            .map_err(failure)?;
        out.event(Event::IkeSaRekeyed {
            old: self.id(),
            new: new_sa.id(),
        });
        out.spawned.push(new_sa);
        Ok(vec![
            Payload::Sa(vec![
                suite.proposal(proposal.number, new_spi_r.to_be_bytes().to_vec())
            ]),
            Payload::Nonce(nr),
            Payload::Ke(KePayload {
                group: suite.dh.id(),
                data: dh.public_value().to_vec(),
            }),
        ])
    }

    /// The IKE SA that replaces this one; the child SAs move to it (RFC 7296 2.18).
    #[allow(clippy::too_many_arguments)]
    fn rekeyed(
        &mut self,
        now: Instant,
        role: Role,
        suite: IkeSuite,
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<IkeSa, CryptoError> {
        let old_sk_d = &self
            .keys
            .as_ref()
            .ok_or(CryptoError::Library("no IKE SA keys"))?
            .sk_d;
        // SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old IKE SA's PRF.
        let skeyseed = self.suite.prf.compute(old_sk_d, &[shared, ni, nr]);
        let keys = derive_ike_keys(&suite, &skeyseed, ni, nr, spi_i, spi_r)?;
        let mut sa = IkeSa::new(
            role,
            spi_i,
            spi_r,
            self.local,
            self.remote,
            suite,
            now,
            self.timing,
        );
        sa.state = State::Established;
        sa.keys = Some(keys);
        sa.peer = self.peer;
        sa.nat_detected = self.nat_detected;
        sa.ni = ni.to_vec();
        sa.nr = nr.to_vec();
        sa.children = std::mem::take(&mut self.children);
        Ok(sa)
    }

    /// Starts rekeying the child SA whose inbound SPI is `inbound_spi`.
    pub fn start_child_rekey(
        &mut self,
        now: Instant,
        inbound_spi: u32,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), IkeError> {
        let child = self
            .children
            .iter()
            .find(|c| c.inbound_spi == inbound_spi)
            .ok_or(IkeError::NoSuchChild(inbound_spi))?
            .clone();
        self.start_create_child(now, Some(child), peers, out)
    }

    /// Starts a CREATE_CHILD_SA for an additional child SA with the configured selectors.
    pub fn start_new_child(
        &mut self,
        now: Instant,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), IkeError> {
        self.start_create_child(now, None, peers, out)
    }

    fn start_create_child(
        &mut self,
        now: Instant,
        replaces: Option<super::ChildSaInfo>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), IkeError> {
        let peer = self
            .peer_config(peers)
            .ok_or(IkeError::NoSuchSa(self.local_spi()))?;
        let (mode, local_ts, remote_ts) = match &replaces {
            Some(old) => (old.mode, old.local_ts.clone(), old.remote_ts.clone()),
            None => (peer.mode, peer.local_ts.clone(), peer.remote_ts.clone()),
        };
        let dh = peer
            .esp_suites
            .first()
            .and_then(|s| s.pfs)
            .map(|g| g.generate())
            .transpose()?;
        let new_inbound = random_spi()?;
        let ni = random_bytes(NONCE_LEN)?;
        let mut payloads = Vec::new();
        if let Some(old) = &replaces {
            payloads.push(Payload::Notify(NotifyPayload {
                protocol: ProtocolId::Esp.to_u8(),
                spi: old.inbound_spi.to_be_bytes().to_vec(),
                notify_type: notify::REKEY_SA,
                data: Vec::new(),
            }));
        }
        if mode == Mode::Transport {
            payloads.push(Payload::Notify(NotifyPayload::ike(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        let offered: Vec<Proposal> = peer
            .esp_suites
            .iter()
            .filter(|s| dh.is_none() || s.pfs == dh.as_ref().map(DhPrivate::group))
            .zip(1u8..)
            .map(|(suite, number)| suite.proposal(number, new_inbound, dh.is_some()))
            .collect();
        payloads.push(Payload::Sa(offered));
        payloads.push(Payload::Nonce(ni.clone()));
        if let Some(dh) = &dh {
            payloads.push(Payload::Ke(KePayload {
                group: dh.group().id(),
                data: dh.public_value().to_vec(),
            }));
        }
        payloads.push(Payload::TsI(TsPayload {
            selectors: local_ts.clone(),
        }));
        payloads.push(Payload::TsR(TsPayload {
            selectors: remote_ts.clone(),
        }));
        self.send_request(
            now,
            RequestKind::CreateChild,
            Exchange::CreateChildSa,
            &payloads,
            out,
        )?;
        self.pending_create = Some(PendingCreate::Child {
            replaces: replaces.map(|old| (old.inbound_spi, old.outbound_spi)),
            inbound_spi: new_inbound,
            ni,
            dh,
            local_ts,
            remote_ts,
        });
        Ok(())
    }

    /// Starts rekeying this IKE SA with the same suite.
    pub fn start_ike_rekey(
        &mut self,
        now: Instant,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), IkeError> {
        let peer = self
            .peer_config(peers)
            .ok_or(IkeError::NoSuchSa(self.local_spi()))?;
        let dh = self.suite.dh.generate()?;
        let ni = random_bytes(NONCE_LEN)?;
        let new_spi_i = random_u64()?;
        let offered: Vec<Proposal> = peer
            .ike_suites
            .iter()
            .filter(|s| s.dh == dh.group())
            .zip(1u8..)
            .map(|(suite, number)| suite.proposal(number, new_spi_i.to_be_bytes().to_vec()))
            .collect();
        let payloads = vec![
            Payload::Sa(offered),
            Payload::Nonce(ni.clone()),
            Payload::Ke(KePayload {
                group: dh.group().id(),
                data: dh.public_value().to_vec(),
            }),
        ];
        self.send_request(
            now,
            RequestKind::CreateChild,
            Exchange::CreateChildSa,
            &payloads,
            out,
        )?;
        self.pending_create = Some(PendingCreate::Ike { new_spi_i, ni, dh });
        Ok(())
    }

    pub(super) fn handle_create_child_response(
        &mut self,
        now: Instant,
        incoming: &Incoming<'_>,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let peer = self.peer_config(peers).ok_or(Discard::UnexpectedMessage)?;
        let Some(pending) = self.pending_create.take() else {
            return Err(Discard::UnexpectedMessage);
        };
        if let Some(error) = incoming.error_notify() {
            out.event(Event::ChildSaRefused {
                ike_sa: self.id(),
                notify: error,
            });
            return Ok(());
        }
        let outcome = match pending {
            PendingCreate::Child {
                replaces,
                inbound_spi,
                ni,
                dh,
                local_ts,
                remote_ts,
            } => {
                let offer = OurChildOffer {
                    replaces,
                    inbound_spi,
                    ni: &ni,
                    dh: dh.as_ref(),
                    local_ts: &local_ts,
                    remote_ts: &remote_ts,
                };
                self.complete_child(now, peer, incoming, offer, out)
            }
            PendingCreate::Ike { new_spi_i, ni, dh } => {
                self.complete_ike_rekey(now, peer, incoming, new_spi_i, &ni, &dh, out)
            }
        };
        if let Err(notify_type) = outcome {
            out.event(Event::ChildSaRefused {
                ike_sa: self.id(),
                notify: notify_type,
            });
        }
        Ok(())
    }

    fn complete_child(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        incoming: &Incoming<'_>,
        offer: OurChildOffer<'_>,
        out: &mut Outputs,
    ) -> Result<(), u16> {
        let proposals = child_proposals(incoming).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let [chosen] = proposals.as_slice() else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let group = offer.dh.map(|d| d.group().id());
        let (suite, _) = pick_esp(peer, proposals, group).map_err(|(n, _)| n)?;
        let shared = match offer.dh {
            Some(dh) => {
                let ke = ke_of(incoming)
                    .filter(|ke| Some(ke.group) == group)
                    .ok_or(notify::INVALID_KE_PAYLOAD)?;
                Some(
                    dh.shared_secret(&ke.data)
                        .map_err(|_| notify::INVALID_SYNTAX)?,
                )
            }
            None => None,
        };
        let nr = incoming.nonce().ok_or(notify::INVALID_SYNTAX)?.to_vec();
        let (ts_i, ts_r) = selectors(incoming).ok_or(notify::TS_UNACCEPTABLE)?;
        let within = |got: &[crate::wire::TrafficSelector],
                      ours: &[crate::wire::TrafficSelector]| {
            !got.is_empty() && got.iter().all(|g| ours.iter().any(|o| o.contains(g)))
        };
        if !within(&ts_i, offer.local_ts) || !within(&ts_r, offer.remote_ts) {
            return Err(notify::TS_UNACCEPTABLE);
        }
        let choice = ChildChoice {
            suite,
            proposal_number: chosen.number,
            outbound_spi: super::auth::spi_of(chosen).ok_or(notify::NO_PROPOSAL_CHOSEN)?,
            ts_i,
            ts_r,
            mode: negotiated_mode(peer, incoming),
        };
        let new = NewChild {
            now,
            choice: &choice,
            inbound_spi: offer.inbound_spi,
            we_initiated_exchange: true,
            pfs_shared: shared.as_deref().map(|s| s.as_slice()),
            ni: offer.ni,
            nr: &nr,
            replaces: offer.replaces,
        };
        self.install_child(new, incoming, out)
            .map_err(|_| notify::TEMPORARY_FAILURE)?;
        if let Some((old_inbound, _)) = offer.replaces {
            self.start_child_delete(now, old_inbound, out)
                .map_err(|_| notify::TEMPORARY_FAILURE)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_ike_rekey(
        &mut self,
        now: Instant,
        peer: &PeerConfig,
        incoming: &Incoming<'_>,
        new_spi_i: u64,
        ni: &[u8],
        dh: &DhPrivate,
        out: &mut Outputs,
    ) -> Result<(), u16> {
        let proposals = child_proposals(incoming).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let [chosen] = proposals.as_slice() else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let (suite, _) = pick_ike(peer, proposals, dh.group().id()).map_err(|(n, _)| n)?;
        let new_spi_r = spi_u64(&chosen.spi).ok_or(notify::INVALID_SYNTAX)?;
        let ke = ke_of(incoming)
            .filter(|ke| ke.group == dh.group().id() && suite.dh == dh.group())
            .ok_or(notify::INVALID_KE_PAYLOAD)?;
        let shared = dh
            .shared_secret(&ke.data)
            .map_err(|_| notify::INVALID_SYNTAX)?;
        let nr = incoming.nonce().ok_or(notify::INVALID_SYNTAX)?.to_vec();
        let new_sa = self
            .rekeyed(
                now,
                Role::Initiator,
                suite,
                &shared,
                ni,
                &nr,
                new_spi_i,
                new_spi_r,
            )
            .map_err(|_| notify::TEMPORARY_FAILURE)?;
        out.event(Event::IkeSaRekeyed {
            old: self.id(),
            new: IkeSaId(new_spi_i),
        });
        out.spawned.push(new_sa);
        self.start_delete(now, out)
            .map_err(|_| notify::TEMPORARY_FAILURE)
    }

    /// Sends a DELETE for one of our child SAs (by its inbound SPI).
    pub fn start_child_delete(
        &mut self,
        now: Instant,
        inbound_spi: u32,
        out: &mut Outputs,
    ) -> Result<(), CryptoError> {
        let delete = Payload::Delete(DeletePayload {
            protocol: ProtocolId::Esp.to_u8(),
            spi_size: 4,
            spis: vec![inbound_spi.to_be_bytes().to_vec()],
        });
        self.send_request(
            now,
            RequestKind::DeleteChild(inbound_spi),
            Exchange::Informational,
            &[delete],
            out,
        )
    }

    /// The peer answered our child DELETE: the child is gone.
    pub(super) fn finish_child_delete(&mut self, inbound_spi: u32, out: &mut Outputs) {
        let ike_sa = self.id();
        if let Some(index) = self
            .children
            .iter()
            .position(|c| c.inbound_spi == inbound_spi)
        {
            let child = self.children.remove(index);
            out.event(Event::ChildSaDeleted {
                ike_sa,
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
    }
}

/// What we offered in our CREATE_CHILD_SA request for a child.
struct OurChildOffer<'a> {
    replaces: Option<(u32, u32)>,
    inbound_spi: u32,
    ni: &'a [u8],
    dh: Option<&'a DhPrivate>,
    local_ts: &'a [crate::wire::TrafficSelector],
    remote_ts: &'a [crate::wire::TrafficSelector],
}

/// Picks an IKE suite for a rekey offer, preferring the KE payload's group.
fn pick_ike<'p>(
    peer: &PeerConfig,
    proposals: &'p [Proposal],
    ke_group: u16,
) -> Result<(IkeSuite, &'p Proposal), Refusal> {
    let candidates: Vec<(IkeSuite, &Proposal)> = proposals
        .iter()
        .filter(|p| p.protocol == ProtocolId::Ike && p.spi.len() == 8)
        .flat_map(|p| {
            peer.ike_suites
                .iter()
                .filter(|s| s.is_offered_by(p))
                .map(move |s| (*s, p))
        })
        .collect();
    candidates
        .iter()
        .find(|(s, _)| s.dh.id() == ke_group)
        .or(candidates.first())
        .copied()
        .ok_or(refusal(notify::NO_PROPOSAL_CHOSEN))
}

/// Narrows the selectors of a CREATE_CHILD_SA offer into a choice.
fn narrowed_choice(
    peer: &PeerConfig,
    incoming: &Incoming<'_>,
    suite: EspSuite,
    proposal: &Proposal,
) -> Result<ChildChoice, Refusal> {
    let outbound_spi = super::auth::spi_of(proposal).ok_or(refusal(notify::NO_PROPOSAL_CHOSEN))?;
    let (offered_i, offered_r) = selectors(incoming).ok_or(refusal(notify::TS_UNACCEPTABLE))?;
    let ts_i = narrow(&offered_i, &peer.remote_ts);
    let ts_r = narrow(&offered_r, &peer.local_ts);
    if ts_i.is_empty() || ts_r.is_empty() {
        return Err(refusal(notify::TS_UNACCEPTABLE));
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
