//! Finding the MAC addresses the data plane sends to, before it starts: ARP over the node's
//! own packet port (the kernel does not see the data plane's frames, so its neighbour table
//! cannot help), and the port's own MAC from sysfs.
//!
//! A node that owns the address it asks from uses it as the ARP sender; a target, which must
//! not claim the DVIPA on the wire (the peer would send its ESP there), asks with an ARP probe
//! (sender 0.0.0.0, RFC 5227), which Linux and routers answer with a unicast reply.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dvipsec_dataplane::wire::Mac;
use dvipsec_ports::{Burst, PacketPort};

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const ARP_FRAME_LEN: usize = 42;
const BROADCAST: Mac = [0xff; 6];
/// How often a request is repeated while waiting.
const RETRY: Duration = Duration::from_millis(200);

/// Why a neighbour could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NeighbourError {
    #[error("cannot read the MAC of interface {iface}: {source}")]
    InterfaceMac {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {iface} has a malformed MAC {text:?}")]
    MalformedMac { iface: String, text: String },
    #[error("{0} is IPv6: neighbour discovery is not implemented, only ARP")]
    Ipv6(IpAddr),
    #[error("port {0} has no free buffer for an ARP request")]
    NoBuffer(String),
}

/// The MAC of `iface`, from /sys/class/net (which `ip netns exec` remounts per namespace).
pub fn interface_mac(iface: &str) -> Result<Mac, NeighbourError> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).map_err(|source| NeighbourError::InterfaceMac {
        iface: iface.to_owned(),
        source,
    })?;
    parse_mac(text.trim()).ok_or_else(|| NeighbourError::MalformedMac {
        iface: iface.to_owned(),
        text: text.trim().to_owned(),
    })
}

fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An ARP request for `target` from `own_mac`, with `sender` as the sender address (0.0.0.0
/// for a probe).
pub fn arp_request(own_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(&own_mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP);
    // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses.
    frame[14..20].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    frame[22..28].copy_from_slice(&own_mac);
    frame[28..32].copy_from_slice(&sender.octets());
    // Target hardware address stays zero.
    frame[38..42].copy_from_slice(&target.octets());
    frame
}

/// The sender MAC of `frame` when it is an ARP reply from `target`.
pub fn arp_reply_from(frame: &[u8], target: Ipv4Addr) -> Option<Mac> {
    if frame.len() < ARP_FRAME_LEN || frame[12..14] != ETHERTYPE_ARP {
        return None;
    }
    let operation = u16::from_be_bytes([frame[20], frame[21]]);
    if operation != ARP_REPLY || frame[28..32] != target.octets() {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[22..28]);
    Some(mac)
}

/// Asks for every address of `addresses` on `port` at once, until all replied or `timeout`
/// passed; returns those that replied. Frames that are not a reply are dropped (nothing else
/// reads this socket).
pub fn resolve_all<P: PacketPort>(
    port: &mut P,
    own_mac: Mac,
    sender: Ipv4Addr,
    addresses: &[IpAddr],
    timeout: Duration,
) -> Result<Vec<(IpAddr, Mac)>, NeighbourError> {
    let mut wanted: Vec<Ipv4Addr> = Vec::new();
    for address in addresses {
        match address {
            IpAddr::V4(v4) if !wanted.contains(v4) => wanted.push(*v4),
            IpAddr::V4(_) => {}
            IpAddr::V6(_) => return Err(NeighbourError::Ipv6(*address)),
        }
    }
    let start = Instant::now();
    let mut found = Vec::new();
    let mut rx = Burst::with_capacity(32);
    let mut next_send = start;
    while !wanted.is_empty() && start.elapsed() < timeout {
        if Instant::now() >= next_send {
            for target in &wanted {
                send_frame(port, &arp_request(own_mac, sender, *target))?;
            }
            next_send += RETRY;
        }
        port.rx_burst(&mut rx);
        for frame in rx.drain() {
            let reply = wanted
                .iter()
                .position(|t| arp_reply_from(frame.data(), *t).is_some());
            if let Some(at) = reply {
                let target = wanted.swap_remove(at);
                if let Some(mac) = arp_reply_from(frame.data(), target) {
                    found.push((IpAddr::V4(target), mac));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(found)
}

/// Announces that `address` is now at `own_mac` (a gratuitous ARP: a broadcast request whose
/// sender and target are both the address), so the peers' caches move to this box.
pub fn announce<P: PacketPort>(
    port: &mut P,
    own_mac: Mac,
    address: IpAddr,
) -> Result<(), NeighbourError> {
    let IpAddr::V4(v4) = address else {
        return Err(NeighbourError::Ipv6(address));
    };
    send_frame(port, &arp_request(own_mac, v4, v4))
}

fn send_frame<P: PacketPort>(port: &mut P, bytes: &[u8]) -> Result<(), NeighbourError> {
    let name = port.name().to_owned();
    let no_buffer = || NeighbourError::NoBuffer(name.clone());
    let mut frame = port.alloc_tx().ok_or_else(no_buffer)?;
    frame.set_frame(bytes).map_err(|_| no_buffer())?;
    let mut burst = Burst::with_capacity(1);
    let _ = burst.push(frame);
    port.tx_burst(&mut burst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_reply_round_trip_through_the_parser() {
        let ours = [2, 0, 0, 0, 0, 1];
        let theirs = [2, 0, 0, 0, 0, 2];
        let target = Ipv4Addr::new(203, 0, 113, 10);
        let request = arp_request(ours, Ipv4Addr::UNSPECIFIED, target);
        // A request is not a reply.
        assert_eq!(arp_reply_from(&request, target), None);
        let mut reply = request;
        reply[0..6].copy_from_slice(&ours);
        reply[6..12].copy_from_slice(&theirs);
        reply[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
        reply[22..28].copy_from_slice(&theirs);
        reply[28..32].copy_from_slice(&target.octets());
        reply[32..38].copy_from_slice(&ours);
        reply[38..42].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(arp_reply_from(&reply, target), Some(theirs));
        // From someone else, or cut short: not ours.
        assert_eq!(arp_reply_from(&reply, Ipv4Addr::new(203, 0, 113, 11)), None);
        assert_eq!(arp_reply_from(&reply[..41], target), None);
    }

    #[test]
    fn macs_parse_only_when_well_formed() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }
}
