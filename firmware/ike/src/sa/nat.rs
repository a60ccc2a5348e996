//! NAT detection (RFC 7296 section 2.23): SHA-1 of the IKE SPIs, an address and a port.

use std::net::{IpAddr, SocketAddr};

use aws_lc_rs::digest;

use super::Incoming;
use crate::wire::{notify, NotifyPayload, Payload};

/// SHA-1(SPIi | SPIr | IP | port), with the SPIs as they appear in the message's header.
pub(crate) fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut context = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(&spi_i.to_be_bytes());
    context.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(v4) => context.update(&v4.octets()),
        IpAddr::V6(v6) => context.update(&v6.octets()),
    }
    context.update(&addr.port().to_be_bytes());
    context.finish().as_ref().to_vec()
}

/// The NAT_DETECTION_SOURCE_IP and NAT_DETECTION_DESTINATION_IP notifies for a message we
/// send from `local` to `remote`.
pub(crate) fn nat_payloads(
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
    [
        Payload::Notify(NotifyPayload::ike(
            notify::NAT_DETECTION_SOURCE_IP,
            nat_hash(spi_i, spi_r, local),
        )),
        Payload::Notify(NotifyPayload::ike(
            notify::NAT_DETECTION_DESTINATION_IP,
            nat_hash(spi_i, spi_r, remote),
        )),
    ]
}

/// `None` when the message carries no NAT detection; otherwise whether a NAT sits between us
/// (the sender's source or our address was rewritten on the way).
pub(crate) fn nat_between(incoming: &Incoming<'_>) -> Option<bool> {
    let (spi_i, spi_r) = (incoming.header.spi_i, incoming.header.spi_r);
    let hashes = |kind: u16| -> Vec<&[u8]> {
        incoming
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) if n.notify_type == kind => Some(n.data.as_slice()),
                _ => None,
            })
            .collect()
    };
    let sources = hashes(notify::NAT_DETECTION_SOURCE_IP);
    let destinations = hashes(notify::NAT_DETECTION_DESTINATION_IP);
    if sources.is_empty() || destinations.is_empty() {
        return None;
    }
    let source_seen = nat_hash(spi_i, spi_r, incoming.from);
    let destination_seen = nat_hash(spi_i, spi_r, incoming.to);
    let source_kept = sources.contains(&source_seen.as_slice());
    let destination_kept = destinations.contains(&destination_seen.as_slice());
    Some(!(source_kept && destination_kept))
}
