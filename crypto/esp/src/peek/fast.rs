//! Peek's straight-line path for the shapes a distributor sees almost always: ESP (or UDP-encapsulated
//! ESP) right behind an IPv4 header without options or an IPv6 header without extension headers,
//! carrying in tunnel mode an inner header of the same kinds. It reads fixed offsets and builds the
//! result once. (A single peek still costs a fifth to a quarter of a full AES-GCM open at 1420
//! bytes; the burst peek in `burst.rs`, which shares this path, is what gets under a tenth: see
//! BENCHMARKS.md.)
//!
//! Anything else (options, extension headers, fragments, truncation, a wrong SPI, anything odd)
//! returns `None` and the general path in the parent module handles the packet, errors included.
//! The tests at the bottom check that both paths agree on every packet this one accepts.

use super::compact::{FlowAddrs, PeekFlow};
use super::{flow, l4_peek_len, read_l4, Ciphertext, PeekInfo, Unauthenticated, L4};
use super::{TCP_PEEK_LEN, TUNNEL_FIRST_PEEK};
use crate::esp::{ESP_HEADER_LEN, UDP_HEADER_LEN};
use crate::ip::{self, proto, Family};
use crate::sa::{Mode, Sa};
use crate::suite::ICV_LEN;

/// Bytes of a plain IPv4 header (IHL 5).
const IPV4_PLAIN: usize = 20;
/// Bytes of an IPv6 header without extension headers.
const IPV6_PLAIN: usize = 40;
/// The largest head a fast tunnel peek decrypts: IPv6 + TCP up to its flags, in whole AES blocks.
const FAST_HEAD: usize = 64;

/// A plain IP header at the start of a packet.
#[derive(Clone, Copy)]
struct PlainHeader {
    family: Family,
    header_len: usize,
    /// Length the header declares (for the outer header: checked against the packet).
    total_len: usize,
    protocol: u8,
}

/// Where the fast path gets plaintext: the SA's cipher per call ([`Direct`]) or keystream a burst
/// computed ahead (`burst::Precomputed`). Both give the same bytes, so both give the same result.
pub(super) trait PlainSource {
    /// Plaintext bytes `offset..offset + out.len()` of the ESP payload, or `None` on failure.
    fn decrypt(&self, ct: &Ciphertext<'_>, offset: usize, out: &mut [u8]) -> Option<()>;
}

/// Decrypts with the SA's cipher at each call.
pub(super) struct Direct<'s>(pub(super) &'s Sa);

impl PlainSource for Direct<'_> {
    #[inline(always)]
    fn decrypt(&self, ct: &Ciphertext<'_>, offset: usize, out: &mut [u8]) -> Option<()> {
        self.0.decrypt_range(ct, offset, out).ok()
    }
}

/// The outer part of a fast peek: checked headers and where the ciphertext is.
#[derive(Clone, Copy)]
pub(super) struct FastOuter<'a> {
    pub(super) ct: Ciphertext<'a>,
    pub(super) family: Family,
    pub(super) esp_at: usize,
}

impl Sa {
    /// The fast peek of an ESP packet, or `None` to fall back to the general path.
    #[inline(always)]
    pub(super) fn peek_esp_fast(&self, packet: &[u8]) -> Option<Unauthenticated<PeekInfo>> {
        let outer = self.fast_outer(packet)?;
        self.fast_finish(&outer, &Direct(self))
    }

    /// Parses the outer headers of a plain-shaped ESP packet for this SA; `None` for other shapes.
    #[inline(always)]
    pub(super) fn fast_outer<'a>(&self, packet: &'a [u8]) -> Option<FastOuter<'a>> {
        let outer = plain_header(packet)?;
        let pkt = packet.get(..outer.total_len)?;
        let esp_at = self.esp_offset(pkt, outer)?;
        let iv_at = esp_at + ESP_HEADER_LEN;
        let text_at = iv_at + self.params.suite.iv_len();
        let text_end = pkt.len().checked_sub(ICV_LEN)?;
        if text_end < text_at + 2 || ip::be32(pkt, esp_at) != self.params.spi {
            return None;
        }
        let ct = Ciphertext {
            pkt,
            iv_at,
            text_at,
            text_end,
        };
        Some(FastOuter {
            ct,
            family: outer.family,
            esp_at,
        })
    }

    /// Decrypts the inner headers from `source` and builds the result.
    #[inline(always)]
    pub(super) fn fast_finish(
        &self,
        outer: &FastOuter<'_>,
        source: &impl PlainSource,
    ) -> Option<Unauthenticated<PeekInfo>> {
        let ct = &outer.ct;
        // Decrypt first: the outer fields below are read while the cipher works.
        let mut head = [0u8; FAST_HEAD];
        let (inner_family, l4) = self.fast_inner(ct, source, &mut head)?;
        let seq = self.full_seq(ip::be32(ct.pkt, outer.esp_at + 4));
        let outer_addresses = ip::addresses(ct.pkt, outer.family);
        let inner_addresses = match inner_family {
            Some(family) => ip::addresses(&head, family),
            None => outer_addresses,
        };
        Some(flow(
            self.params.spi,
            seq,
            outer_addresses,
            inner_addresses,
            l4,
        ))
    }

    /// The compact result ([`PeekFlow`]) from `source`: the same reads as [`Sa::fast_finish`],
    /// with the addresses kept as bytes and the header's sequence field as it is.
    #[inline(always)]
    pub(super) fn fast_finish_flow(
        &self,
        outer: &FastOuter<'_>,
        source: &impl PlainSource,
    ) -> Option<Unauthenticated<PeekFlow>> {
        let ct = &outer.ct;
        let mut head = [0u8; FAST_HEAD];
        let (inner_family, l4) = self.fast_inner(ct, source, &mut head)?;
        let addrs = match inner_family {
            Some(family) => FlowAddrs::read(&head, family),
            None => FlowAddrs::read(ct.pkt, outer.family),
        };
        Some(Unauthenticated(PeekFlow {
            addrs,
            protocol: l4.protocol,
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            tcp_flags: l4.tcp_flags,
            seq_lo: ip::be32(ct.pkt, outer.esp_at + 4),
        }))
    }

    /// Decrypts and reads the inner headers: the inner family (tunnel mode only, its header left
    /// in `head`) and the transport part.
    #[inline(always)]
    fn fast_inner(
        &self,
        ct: &Ciphertext<'_>,
        source: &impl PlainSource,
        head: &mut [u8; FAST_HEAD],
    ) -> Option<(Option<Family>, L4)> {
        match self.params.mode {
            Mode::Tunnel => fast_tunnel(ct, source, head),
            Mode::Transport => Some((None, fast_transport(ct, source)?)),
        }
    }

    /// Where the ESP header is behind a plain outer header (RFC 3948 rules for UDP).
    #[inline(always)]
    fn esp_offset(&self, pkt: &[u8], outer: PlainHeader) -> Option<usize> {
        match outer.protocol {
            proto::ESP => Some(outer.header_len),
            proto::UDP => {
                let encap = self.params.udp_encap?;
                let esp_at = outer.header_len + UDP_HEADER_LEN;
                let body = pkt.get(esp_at..)?;
                let keepalive = body == [0xff];
                let non_esp_marker = body.get(..4) == Some(&[0, 0, 0, 0]);
                let to_encap_port = ip::be16(pkt, outer.header_len + 2) == encap.dst_port;
                (to_encap_port && !keepalive && !non_esp_marker).then_some(esp_at)
            }
            _ => None,
        }
    }
}

/// Tunnel mode: decrypts the first blocks into `head`, reads the inner header and its ports.
#[inline(always)]
fn fast_tunnel(
    ct: &Ciphertext<'_>,
    source: &impl PlainSource,
    head: &mut [u8; FAST_HEAD],
) -> Option<(Option<Family>, L4)> {
    let first = ct.len().min(TUNNEL_FIRST_PEEK);
    source.decrypt(ct, 0, &mut head[..first])?;
    let inner = plain_header(&head[..first])?;
    if inner.total_len < inner.header_len {
        return None;
    }
    let l4_at = inner.header_len;
    let needed = l4_at + l4_peek_len(inner.protocol);
    if needed > ct.len() {
        return None;
    }
    if needed > first {
        source.decrypt(ct, first, &mut head[first..needed])?;
    }
    let l4 = read_l4(&head[l4_at..needed], inner.protocol, 0).ok()?;
    Some((Some(inner.family), l4))
}

/// Tunnel mode from a decrypted head of three whole blocks, the burst's usual case: the same
/// reads as [`fast_tunnel`] at fixed offsets, without copies. `None` where the head is too
/// short (IPv6 + TCP) or of another shape: the caller then takes [`fast_tunnel`]'s way.
#[inline(always)]
pub(super) fn whole_tunnel_head(head: &[u8; TUNNEL_FIRST_PEEK]) -> Option<(Family, L4)> {
    let inner = plain_header(head)?;
    if inner.total_len < inner.header_len {
        return None;
    }
    let l4_at = inner.header_len;
    let l4 = head.get(l4_at..l4_at + l4_peek_len(inner.protocol))?;
    Some((inner.family, read_l4(l4, inner.protocol, 0).ok()?))
}

/// Transport mode: the next header from the trailer, then the ports from the first block.
#[inline(always)]
fn fast_transport(ct: &Ciphertext<'_>, source: &impl PlainSource) -> Option<L4> {
    let mut trailer = [0u8; 2];
    source.decrypt(ct, ct.len() - 2, &mut trailer)?;
    let protocol = trailer[1];
    let needed = l4_peek_len(protocol);
    if needed > ct.len() {
        return None;
    }
    let mut head = [0u8; TCP_PEEK_LEN];
    source.decrypt(ct, 0, &mut head[..needed])?;
    read_l4(&head[..needed], protocol, 0).ok()
}

/// An IPv4 header without options that is not a fragment, or an IPv6 header whose next header is
/// not an extension header; for other headers `None`. `total_len` is checked against `packet`
/// only by the caller, since a tunnel peek sees just the first bytes of the inner packet.
#[inline(always)]
fn plain_header(packet: &[u8]) -> Option<PlainHeader> {
    match *packet.first()? {
        0x45 => {
            let header = packet.get(..IPV4_PLAIN)?;
            let total_len = usize::from(ip::be16(header, 2));
            let fragment = ip::be16(header, 6) & 0x3fff != 0;
            (!fragment && total_len >= IPV4_PLAIN).then_some(PlainHeader {
                family: Family::V4,
                header_len: IPV4_PLAIN,
                total_len,
                protocol: header[9],
            })
        }
        byte if byte >> 4 == 6 => {
            let header = packet.get(..IPV6_PLAIN)?;
            let next = header[6];
            let extension = matches!(
                next,
                proto::HOPOPT | proto::ROUTING | proto::DSTOPTS | proto::FRAGMENT
            );
            (!extension).then_some(PlainHeader {
                family: Family::V6,
                header_len: IPV6_PLAIN,
                total_len: IPV6_PLAIN + usize::from(ip::be16(header, 4)),
                protocol: next,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Direction, Mode, Sa, SaConfig, SaKeys, Suite, TunnelEndpoints, UdpEncap};
    use crate::{MAX_HEADROOM, MAX_TAILROOM};
    use proptest::prelude::*;
    use std::net::IpAddr;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;

    #[derive(Debug, Clone, Copy)]
    struct Shape {
        suite: Suite,
        tunnel: bool,
        v6_outer: bool,
        v6_inner: bool,
        udp_encap: bool,
        protocol: u8,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (
            prop::sample::select(Suite::ALL.to_vec()),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec![TCP, UDP, ICMP]),
        )
            .prop_map(
                |(suite, tunnel, v6_outer, v6_inner, udp_encap, protocol)| Shape {
                    suite,
                    tunnel,
                    v6_outer,
                    // Transport mode keeps the packet's own header as the outer one.
                    v6_inner: if tunnel { v6_inner } else { v6_outer },
                    udp_encap,
                    protocol,
                },
            )
    }

    fn config(shape: Shape, direction: Direction) -> SaConfig {
        let enc: Vec<u8> = (0..shape.suite.enc_key_len()).map(|i| i as u8).collect();
        let auth: Vec<u8> = (0..shape.suite.auth_key_len())
            .map(|i| 3 * i as u8)
            .collect();
        let mut c = SaConfig::new(
            0x0a0b_0c0d,
            direction,
            shape.suite,
            SaKeys::new(&enc, &auth),
        );
        if shape.tunnel {
            c.mode = Mode::Tunnel;
            let (src, dst): (IpAddr, IpAddr) = if shape.v6_outer {
                (
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::2".parse().unwrap(),
                )
            } else {
                ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
            };
            c.tunnel = Some(TunnelEndpoints { src, dst });
        }
        if shape.udp_encap {
            c.udp_encap = Some(UdpEncap::NAT_T);
        }
        c
    }

    /// A plain inner packet: IPv4 or IPv6, then TCP (20 bytes), UDP (8) or ICMP (8), then payload.
    fn inner_packet(shape: Shape, flags: u8, payload: usize) -> Vec<u8> {
        let l4_len = if shape.protocol == TCP { 20 } else { 8 };
        let ip_len = if shape.v6_inner { 40 } else { 20 };
        let total = ip_len + l4_len + payload;
        let mut p: Vec<u8> = (0..total).map(|i| (i * 11) as u8).collect();
        if shape.v6_inner {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = shape.protocol;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6..8].fill(0);
            p[9] = shape.protocol;
        }
        if shape.protocol == TCP {
            p[ip_len + 13] = flags;
        }
        p
    }

    fn sealed(shape: Shape, flags: u8, payload: usize) -> (Vec<u8>, Sa) {
        let mut out = Sa::new(config(shape, Direction::Outbound)).unwrap();
        let packet = inner_packet(shape, flags, payload);
        let mut buf = vec![0u8; MAX_HEADROOM + packet.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + packet.len()].copy_from_slice(&packet);
        let range = MAX_HEADROOM..MAX_HEADROOM + packet.len();
        let sealed = out.seal(&mut buf, range).unwrap();
        let inbound = Sa::new(config(shape, Direction::Inbound)).unwrap();
        (buf[sealed.packet].to_vec(), inbound)
    }

    /// Plaintext as it is: a head already decrypted.
    struct Cleartext;

    impl super::PlainSource for Cleartext {
        fn decrypt(&self, ct: &super::Ciphertext<'_>, offset: usize, out: &mut [u8]) -> Option<()> {
            let from = ct.text_at + offset;
            out.copy_from_slice(ct.pkt.get(from..from + out.len())?);
            Some(())
        }
    }

    /// An inner head: a plain IPv4 or IPv6 header (sometimes with options, extension headers,
    /// fragment bits or a short length) and random bytes after it.
    fn inner_head() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(any::<u8>(), 48..96),
            0u8..4,
            prop::sample::select(vec![TCP, UDP, ICMP, 0, 43, 44, 60]),
            any::<bool>(),
        )
            .prop_map(|(mut head, kind, protocol, fragment)| {
                match kind {
                    0 => {
                        head[0] = 0x45;
                        head[9] = protocol;
                        if !fragment {
                            head[6] &= 0xc0;
                            head[7] = 0;
                        }
                    }
                    1 => {
                        head[0] = 0x60 | (head[0] & 0x0f);
                        head[6] = protocol;
                    }
                    // 2: random version and IHL; 3: IPv4 with options.
                    3 => head[0] = 0x46,
                    _ => {}
                }
                head
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The burst's fixed-offset head reader answers exactly as the general fast tunnel read
        /// whenever it answers, and answers for every plain IPv4 head that is not a fragment.
        #[test]
        fn whole_head_agrees_with_the_fast_tunnel_read(head in inner_head()) {
            let ct = super::Ciphertext { pkt: &head, iv_at: 0, text_at: 0, text_end: head.len() };
            let mut buf = [0u8; super::FAST_HEAD];
            let general = super::fast_tunnel(&ct, &Cleartext, &mut buf)
                .map(|(family, l4)| (family, l4.protocol, l4.src_port, l4.dst_port, l4.tcp_flags));
            let whole: &[u8; super::TUNNEL_FIRST_PEEK] = head[..48].try_into().unwrap();
            let lean = super::whole_tunnel_head(whole)
                .map(|(family, l4)| (Some(family), l4.protocol, l4.src_port, l4.dst_port, l4.tcp_flags));
            if let Some(lean) = lean {
                prop_assert_eq!(Some(lean), general);
            }
            let plain_v4 = head[0] == 0x45
                && u16::from_be_bytes([head[6], head[7]]) & 0x3fff == 0
                && u16::from_be_bytes([head[2], head[3]]) >= 20;
            if plain_v4 {
                prop_assert!(lean.is_some());
            }
        }

        /// Every plain shape takes the fast path, and it reads what the general path reads.
        #[test]
        fn fast_path_takes_plain_shapes_and_agrees(
            shape in shape(), flags in any::<u8>(), payload in 0usize..80,
        ) {
            let (wire, sa) = sealed(shape, flags, payload);
            let fast = sa.peek_esp_fast(&wire);
            prop_assert!(fast.is_some(), "{:?}", shape);
            prop_assert_eq!(Ok(fast.unwrap()), sa.peek_esp_general(&wire));
        }

        /// Damaged packets: whenever the fast path answers, the general path gives the same answer.
        #[test]
        fn fast_path_never_disagrees_on_damaged_packets(
            shape in shape(), flags in any::<u8>(), payload in 0usize..80,
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(), truncate in any::<bool>(),
        ) {
            let (mut wire, sa) = sealed(shape, flags, payload);
            for (at, value) in damage {
                let at = at.index(wire.len());
                wire[at] = value;
            }
            if truncate {
                wire.truncate(cut.index(wire.len()));
            }
            if let Some(fast) = sa.peek_esp_fast(&wire) {
                prop_assert_eq!(Ok(fast), sa.peek_esp_general(&wire));
            }
        }
    }
}
