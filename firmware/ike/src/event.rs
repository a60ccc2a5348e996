//! What the key manager reports to its owner.

use std::net::SocketAddr;

use crate::config::Mode;
use crate::crypto::{DirectionKeys, EspSuite};
use crate::wire::TrafficSelector;

/// Names an IKE SA by our own SPI for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

/// A child SA pair ready for the ESP engine.
#[derive(Debug, Clone)]
pub struct ChildSaInstalled {
    pub ike_sa: IkeSaId,
    /// The SPI the peer puts on packets to us.
    pub inbound_spi: u32,
    /// The SPI we put on packets to the peer.
    pub outbound_spi: u32,
    pub suite: EspSuite,
    pub inbound_keys: DirectionKeys,
    pub outbound_keys: DirectionKeys,
    pub mode: Mode,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Outer addresses; ESP goes in UDP between these when `udp_encapsulation`.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// RFC 3948 UDP encapsulation, chosen because NAT detection found a NAT.
    pub udp_encapsulation: bool,
    /// The peer will not use TFC padding (it sent ESP_TFC_PADDING_NOT_SUPPORTED).
    pub peer_no_tfc_padding: bool,
}

/// Why an IKE SA went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteReason {
    /// The peer deleted it.
    PeerDelete,
    /// We deleted it on request.
    LocalDelete,
    /// A request went unanswered after all retransmissions.
    Timeout,
    /// The peer answered with an error notify of this type.
    PeerError(u16),
    /// Authentication of the peer failed.
    AuthenticationFailed,
    /// The peer's answer was unusable (no acceptable proposal, bad KE, missing payloads).
    Negotiation,
}

/// Events taken out with [`crate::Endpoint::poll_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    IkeSaEstablished {
        ike_sa: IkeSaId,
        peer: String,
        local: SocketAddr,
        remote: SocketAddr,
        nat_detected: bool,
    },
    ChildSaInstalled(ChildSaInstalled),
    /// A child SA replaced another; the old one stays usable until its own ChildSaDeleted.
    ChildSaRekeyed {
        old_inbound_spi: u32,
        old_outbound_spi: u32,
        new: ChildSaInstalled,
    },
    /// The IKE SA was rekeyed; its child SAs now belong to `new`.
    IkeSaRekeyed {
        old: IkeSaId,
        new: IkeSaId,
    },
    /// The peer refused the child SA proposed with the IKE SA; the IKE SA stays up.
    ChildSaRefused {
        ike_sa: IkeSaId,
        notify: u16,
    },
    ChildSaDeleted {
        ike_sa: IkeSaId,
        inbound_spi: u32,
        outbound_spi: u32,
    },
    IkeSaDeleted {
        ike_sa: IkeSaId,
        reason: DeleteReason,
    },
}
