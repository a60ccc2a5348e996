//! Soft and hard lifetimes of child SAs and of the IKE SA: the soft limit starts a rekey, the
//! hard limit a delete. Time is passed in; bytes and packets are reported from outside.

use std::time::Instant;

use super::{IkeSa, State};
use crate::config::PeerConfig;
use crate::endpoint::Outputs;
use crate::IkeError;

/// What a lifetime check decided to do (one request at a time: the window is 1).
enum Action {
    DeleteChild(u32),
    RekeyChild(u32),
    DeleteIke,
    RekeyIke,
}

impl IkeSa {
    /// Records the traffic totals of one child SA and acts on limits that were reached.
    pub fn report_usage(
        &mut self,
        now: Instant,
        inbound_spi: u32,
        bytes: u64,
        packets: u64,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) -> Result<(), IkeError> {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == inbound_spi)
            .ok_or(IkeError::NoSuchChild(inbound_spi))?;
        // Totals only grow; a stale report never lowers them.
        child.bytes = child.bytes.max(bytes);
        child.packets = child.packets.max(packets);
        self.check_lifetimes(now, peers, out);
        Ok(())
    }

    fn due_action(&self, now: Instant, peer: &PeerConfig) -> Option<Action> {
        let limits = &peer.child_lifetime;
        let hard_child = self.children.iter().find(|c| {
            limits.hard_reached(
                now.saturating_duration_since(c.installed_at),
                c.bytes,
                c.packets,
            )
        });
        if let Some(child) = hard_child {
            return Some(Action::DeleteChild(child.inbound_spi));
        }
        let ike_age = now.saturating_duration_since(self.created_at);
        if peer.ike_lifetime.hard_reached(ike_age, 0, 0) {
            return Some(Action::DeleteIke);
        }
        let soft_child = self.children.iter().find(|c| {
            !c.rekey_started
                && limits.soft_reached(
                    now.saturating_duration_since(c.installed_at),
                    c.bytes,
                    c.packets,
                )
        });
        if let Some(child) = soft_child {
            return Some(Action::RekeyChild(child.inbound_spi));
        }
        (!self.rekey_started && peer.ike_lifetime.soft_reached(ike_age, 0, 0))
            .then_some(Action::RekeyIke)
    }

    /// Starts the rekey or delete a reached limit calls for, if no request is in flight.
    pub(super) fn check_lifetimes(
        &mut self,
        now: Instant,
        peers: &[PeerConfig],
        out: &mut Outputs,
    ) {
        if self.state != State::Established || self.is_busy() {
            return;
        }
        let Some(peer) = self.peer_config(peers) else {
            return;
        };
        let Some(action) = self.due_action(now, peer) else {
            return;
        };
        let started = match action {
            Action::DeleteChild(spi) => self
                .start_child_delete(now, spi, out)
                .map_err(IkeError::from),
            Action::DeleteIke => self.start_delete(now, out).map_err(IkeError::from),
            Action::RekeyChild(spi) => {
                if let Some(child) = self.children.iter_mut().find(|c| c.inbound_spi == spi) {
                    child.rekey_started = true;
                }
                self.start_child_rekey(now, spi, peers, out)
            }
            Action::RekeyIke => {
                self.rekey_started = true;
                self.start_ike_rekey(now, peers, out)
            }
        };
        if let Err(error) = started {
            tracing::warn!(ike_sa = self.local_spi(), %error, "lifetime action failed to start");
        }
    }

    /// The next instant a time limit falls due; none while a request is in flight (its own
    /// retransmission timer covers that time, and the check runs again after the answer).
    pub(super) fn next_lifetime_deadline(&self, peers: &[PeerConfig]) -> Option<Instant> {
        if self.state != State::Established || self.is_busy() {
            return None;
        }
        let peer = self.peer_config(peers)?;
        let child_limits = &peer.child_lifetime;
        let children = self.children.iter().flat_map(|c| {
            let soft = child_limits
                .soft_time
                .filter(|_| !c.rekey_started)
                .map(|t| c.installed_at + t);
            let hard = child_limits.hard_time.map(|t| c.installed_at + t);
            [soft, hard]
        });
        let ike_soft = peer
            .ike_lifetime
            .soft_time
            .filter(|_| !self.rekey_started)
            .map(|t| self.created_at + t);
        let ike_hard = peer.ike_lifetime.hard_time.map(|t| self.created_at + t);
        children.chain([ike_soft, ike_hard]).flatten().min()
    }
}
