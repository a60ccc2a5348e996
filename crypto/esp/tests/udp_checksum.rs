//! The UDP checksum of UDP-encapsulated ESP over IPv6 in transport mode: its pseudo-header uses the
//! final destination (RFC 8200 section 8.1), which a Routing header with segments left carries.

mod common;

use common::{checksum, pair, Shape, TCP};
use dvipsec_esp::{EspError, Mode, Suite};
use std::net::Ipv6Addr;

const SOURCE: &str = "2001:db8:10::1";
const DESTINATION_FIELD: &str = "2001:db8:10::2";

fn addr(text: &str) -> [u8; 16] {
    text.parse::<Ipv6Addr>().unwrap().octets()
}

/// IPv6(src=SOURCE, dst=DESTINATION_FIELD) / Routing header / TCP SYN, byte by byte as scapy's
/// `IPv6(...)/IPv6ExtHdrRouting(...)/TCP()` lays it out.
fn packet_with_routing(routing_type: u8, segments_left: u8, addresses: &[&str]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 0, 43, 64];
    p.extend_from_slice(&addr(SOURCE));
    p.extend_from_slice(&addr(DESTINATION_FIELD));
    let hdr_ext_len = (addresses.len() * 2) as u8;
    p.extend_from_slice(&[TCP, hdr_ext_len, routing_type, segments_left, 0, 0, 0, 0]);
    for a in addresses {
        p.extend_from_slice(&addr(a));
    }
    // TCP: ports 20 -> 80, seq 0, ack 0, offset 5, SYN, window 8192, checksum 0, urgent 0.
    p.extend_from_slice(&[
        0, 20, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0,
    ]);
    let payload_len = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&payload_len.to_be_bytes());
    p
}

fn seal_transport_udp_encap(packet: &[u8]) -> Result<Vec<u8>, EspError> {
    let mut shape = Shape::esp(Suite::NullHmacSha256, Mode::Transport);
    shape.v6_outer = true;
    shape.udp_encap = true;
    let (mut out, _) = pair(shape);
    let (mut buf, range) = common::framed(packet);
    let sealed = out.seal(&mut buf, range)?;
    Ok(buf[sealed.packet].to_vec())
}

/// Whether the UDP datagram at `udp_at` checks out against a pseudo-header with `destination`:
/// the ones' complement sum over pseudo-header + datagram (checksum included) must be all ones.
/// Written from RFC 8200 section 8.1's layout, independently of the crate's checksum code.
fn udp_checksum_verifies(wire: &[u8], udp_at: usize, destination: &str) -> bool {
    let udp = &wire[udp_at..];
    let mut covered = Vec::new();
    covered.extend_from_slice(&wire[8..24]);
    covered.extend_from_slice(&addr(destination));
    covered.extend_from_slice(&(udp.len() as u32).to_be_bytes());
    covered.extend_from_slice(&[0, 0, 0, 17]);
    covered.extend_from_slice(udp);
    checksum(&covered) == 0
}

/// The interop tester's case: one address in a type-0 Routing header, segments left 1. The
/// UDP header follows the 24-byte Routing header. Scapy reports the same (its `in6_chksum`
/// takes the last Routing address as destination when segments left is non-zero).
#[test]
fn routing_header_final_destination_is_in_the_pseudo_header() {
    let packet = packet_with_routing(0, 1, &["2001:db8:99::9"]);
    let wire = seal_transport_udp_encap(&packet).expect("seal");
    let udp_at = 40 + 24;
    assert_eq!(wire[40], 17, "the Routing header now points at UDP");
    assert!(udp_checksum_verifies(&wire, udp_at, "2001:db8:99::9"));
    assert!(!udp_checksum_verifies(&wire, udp_at, DESTINATION_FIELD));
}

/// Type 0 with several addresses: the last one is the final destination.
#[test]
fn last_of_several_routing_addresses_is_used() {
    let packet = packet_with_routing(0, 2, &["2001:db8:98::8", "2001:db8:99::9"]);
    let wire = seal_transport_udp_encap(&packet).expect("seal");
    assert!(udp_checksum_verifies(&wire, 40 + 40, "2001:db8:99::9"));
}

/// Segment Routing (type 4): Segment List[0] is the final segment (RFC 8754 section 2).
#[test]
fn segment_routing_uses_segment_list_zero() {
    let packet = packet_with_routing(4, 1, &["2001:db8:99::9", "2001:db8:98::8"]);
    let wire = seal_transport_udp_encap(&packet).expect("seal");
    assert!(udp_checksum_verifies(&wire, 40 + 40, "2001:db8:99::9"));
}

/// With no segments left the packet is at its final destination: the Destination field is used.
#[test]
fn routing_header_without_segments_left_keeps_the_destination_field() {
    let packet = packet_with_routing(0, 0, &["2001:db8:99::9"]);
    let wire = seal_transport_udp_encap(&packet).expect("seal");
    assert!(udp_checksum_verifies(&wire, 40 + 24, DESTINATION_FIELD));
}

/// Plain IPv6 (no Routing header) still uses the Destination field.
#[test]
fn without_routing_header_the_destination_field_is_used() {
    let mut packet = packet_with_routing(0, 0, &[]);
    packet.drain(40..48);
    packet[6] = TCP;
    packet[4..6].copy_from_slice(&20u16.to_be_bytes());
    let wire = seal_transport_udp_encap(&packet).expect("seal");
    assert!(udp_checksum_verifies(&wire, 40, DESTINATION_FIELD));
}

/// A routing type whose final destination we cannot read (RPL's compressed addresses, type 3)
/// is refused rather than sent with a wrong checksum.
#[test]
fn unknown_routing_type_with_segments_left_is_refused() {
    let packet = packet_with_routing(3, 1, &["2001:db8:99::9"]);
    let err = seal_transport_udp_encap(&packet).unwrap_err();
    assert!(
        matches!(
            err,
            EspError::Malformed {
                field: "IPv6 routing header",
                offset: 40,
                ..
            }
        ),
        "{err:?}"
    );
}
