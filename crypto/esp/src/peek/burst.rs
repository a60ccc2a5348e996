//! Burst peek: the distributor's peek over a whole receive burst. A single peek is latency-bound
//! (outer header, then IV, then ten AES rounds, then the inner header, nothing overlapping); over a
//! burst the AES-GCM counter blocks of every packet are computed together, grouped by SA, in one
//! pipelined block-cipher call per SA (eight blocks in flight with AES-NI).
//!
//! It works in three passes over at most [`MAX_PEEK_BURST`] packets at a time, on fixed arrays:
//! parse all outer headers, encrypt all counter blocks, then XOR and parse all inner headers.
//! Per packet a pass keeps only offsets (`Planned`); a tunnel packet whose ciphertext holds
//! the three blocks is read from them at fixed offsets (`fast::whole_tunnel_head`) without
//! rebuilding its outer view, the general fast path being out of line for everything else.
//! Packets of other shapes or suites, and anything odd, go through [`Sa::peek`] one by one, so
//! every result equals what [`Sa::peek`] returns for that packet.

use super::compact::FlowAddrs;
use super::fast::{whole_tunnel_head, Direct, FastOuter, PlainSource};
use super::{flow, Ciphertext, PeekFlow, PeekInfo, Unauthenticated, L4, TUNNEL_FIRST_PEEK};
use crate::error::EspError;
use crate::esp::ESP_HEADER_LEN;
use crate::ip::{self, Family};
use crate::provider::EspAead;
use crate::sa::{Cipher, IpsecProtocol, Mode, Sa};
use crate::suite::{Suite, ICV_LEN};

/// Packets handled per pass; longer bursts are cut into passes of this many.
pub const MAX_PEEK_BURST: usize = 32;
/// Keystream blocks computed ahead per packet: a tunnel peek's first 48 bytes, or a transport
/// peek's first block and the (at most two) blocks holding the trailer.
const BLOCKS_PER_PACKET: usize = 3;
const AES_BLOCK: usize = 16;
/// GCM's first payload counter: J0 = nonce || 1 is reserved for the tag (NIST SP 800-38D).
const GCM_FIRST_COUNTER: u32 = 2;

/// Peeks every `(sa, packet)` pair of a burst into `out` (the same index), as [`Sa::peek`] would,
/// and returns how many were written: `min(burst.len(), out.len())`. Packets may belong to
/// different SAs. Allocates nothing.
pub fn peek_burst(
    burst: &[(&Sa, &[u8])],
    out: &mut [Result<Unauthenticated<PeekInfo>, EspError>],
) -> usize {
    peek_burst_into(burst, out)
}

/// [`peek_burst`] with the compact result the distributor routes by: per packet the inner
/// 5-tuple, TCP flags and the header's low 32 sequence bits ([`PeekFlow::seq_lo`]; with ESN the
/// caller infers the high half, as its replay pre-check does). Every field equals the same field
/// of [`Sa::peek`]'s answer, and a packet [`Sa::peek`] rejects gets the same error. Allocates
/// nothing.
pub fn peek_burst_flows(
    burst: &[(&Sa, &[u8])],
    out: &mut [Result<Unauthenticated<PeekFlow>, EspError>],
) -> usize {
    peek_burst_into(burst, out)
}

fn peek_burst_into<T: BurstResult>(
    burst: &[(&Sa, &[u8])],
    out: &mut [Result<Unauthenticated<T>, EspError>],
) -> usize {
    let count = burst.len().min(out.len());
    let passes = burst[..count]
        .chunks(MAX_PEEK_BURST)
        .zip(out[..count].chunks_mut(MAX_PEEK_BURST));
    for (pairs, results) in passes {
        peek_pass(pairs, results);
    }
    count
}

/// A result type a burst can produce: from a decrypted tunnel head, from keystream computed
/// ahead, or one packet at a time.
trait BurstResult: Sized {
    /// From the three blocks of a plain tunnel head (see [`whole_tunnel_head`]).
    fn from_head(
        sa: &Sa,
        packet: &[u8],
        plan: &Planned,
        head: &[u8; TUNNEL_FIRST_PEEK],
        inner: (Family, L4),
    ) -> Unauthenticated<Self>;
    fn from_keystream(
        sa: &Sa,
        outer: &FastOuter<'_>,
        source: &Precomputed<'_>,
    ) -> Option<Unauthenticated<Self>>;
    fn one_by_one(sa: &Sa, packet: &[u8]) -> Result<Unauthenticated<Self>, EspError>;
}

impl BurstResult for PeekInfo {
    #[inline(always)]
    fn from_head(
        sa: &Sa,
        packet: &[u8],
        plan: &Planned,
        head: &[u8; TUNNEL_FIRST_PEEK],
        (family, l4): (Family, L4),
    ) -> Unauthenticated<Self> {
        let seq = sa.full_seq(ip::be32(packet, usize::from(plan.esp_at) + 4));
        let outer_addresses = ip::addresses(packet, plan.family());
        let inner_addresses = ip::addresses(head, family);
        flow(sa.params.spi, seq, outer_addresses, inner_addresses, l4)
    }

    fn from_keystream(
        sa: &Sa,
        outer: &FastOuter<'_>,
        source: &Precomputed<'_>,
    ) -> Option<Unauthenticated<Self>> {
        sa.fast_finish(outer, source)
    }

    fn one_by_one(sa: &Sa, packet: &[u8]) -> Result<Unauthenticated<Self>, EspError> {
        sa.peek(packet)
    }
}

impl BurstResult for PeekFlow {
    #[inline(always)]
    fn from_head(
        _: &Sa,
        packet: &[u8],
        plan: &Planned,
        head: &[u8; TUNNEL_FIRST_PEEK],
        (family, l4): (Family, L4),
    ) -> Unauthenticated<Self> {
        Unauthenticated(PeekFlow {
            addrs: FlowAddrs::read(head, family),
            protocol: l4.protocol,
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            tcp_flags: l4.tcp_flags,
            seq_lo: ip::be32(packet, usize::from(plan.esp_at) + 4),
        })
    }

    fn from_keystream(
        sa: &Sa,
        outer: &FastOuter<'_>,
        source: &Precomputed<'_>,
    ) -> Option<Unauthenticated<Self>> {
        sa.fast_finish_flow(outer, source)
    }

    fn one_by_one(sa: &Sa, packet: &[u8]) -> Result<Unauthenticated<Self>, EspError> {
        let info = sa.peek(packet)?;
        Ok(Unauthenticated(PeekFlow::from_info(info.unverified())))
    }
}

/// A packet whose keystream the burst computes ahead: where its ciphertext is, in a few bytes
/// (a pass keeps one per packet, and copying them is part of the per-packet cost).
#[derive(Clone, Copy, Default)]
struct Planned {
    /// The outer packet's length from its IP header, the ICV included.
    total_len: u32,
    esp_at: u16,
    text_at: u16,
    /// Plaintext block numbers whose keystream is computed, `count` of them.
    blocks: [u32; BLOCKS_PER_PACKET],
    /// Zero for a packet that is not planned.
    count: u8,
    /// The planned blocks are 0, 1, 2...: block n's keystream is at index n.
    in_order: bool,
    /// Where this packet's keystream starts in the pass's block array (below 96).
    slot: u8,
    /// The outer header is IPv6.
    v6: bool,
}

impl Planned {
    #[inline(always)]
    fn family(&self) -> Family {
        if self.v6 {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// The first three plaintext blocks of a tunnel-mode packet when its ciphertext holds them
    /// all (past its end is the ICV): fixed-size loads and three 128-bit XORs.
    #[inline(always)]
    fn tunnel_head(&self, packet: &[u8], keystream: &Keystream) -> Option<[u8; TUNNEL_FIRST_PEEK]> {
        let text_at = usize::from(self.text_at);
        let text_end = (self.total_len as usize).checked_sub(ICV_LEN)?;
        if !self.in_order || text_end < text_at + TUNNEL_FIRST_PEEK {
            return None;
        }
        let text: &[u8; TUNNEL_FIRST_PEEK] = packet
            .get(text_at..text_at + TUNNEL_FIRST_PEEK)?
            .try_into()
            .ok()?;
        let slot = usize::from(self.slot);
        let stream: &[[u8; AES_BLOCK]; 3] = keystream.get(slot..slot + 3)?.try_into().ok()?;
        let mut head = [0u8; TUNNEL_FIRST_PEEK];
        for ((out, text), key) in head
            .chunks_exact_mut(AES_BLOCK)
            .zip(text.chunks_exact(AES_BLOCK))
            .zip(stream)
        {
            let mut block = [0u8; AES_BLOCK];
            block.copy_from_slice(text);
            let mixed = u128::from_ne_bytes(block) ^ u128::from_ne_bytes(*key);
            out.copy_from_slice(&mixed.to_ne_bytes());
        }
        Some(head)
    }

    /// The parsed outer part again, from the packet and the offsets kept.
    #[inline(always)]
    fn outer<'a>(&self, packet: &'a [u8]) -> Option<FastOuter<'a>> {
        let total_len = self.total_len as usize;
        let text_at = usize::from(self.text_at);
        let esp_at = usize::from(self.esp_at);
        Some(FastOuter {
            ct: Ciphertext {
                pkt: packet.get(..total_len)?,
                iv_at: esp_at + ESP_HEADER_LEN,
                text_at,
                text_end: total_len.checked_sub(ICV_LEN)?,
            },
            family: self.family(),
            esp_at,
        })
    }
}

type Plans = [Planned; MAX_PEEK_BURST];
type Keystream = [[u8; AES_BLOCK]; MAX_PEEK_BURST * BLOCKS_PER_PACKET];

fn peek_pass<T: BurstResult>(
    pairs: &[(&Sa, &[u8])],
    results: &mut [Result<Unauthenticated<T>, EspError>],
) {
    let mut plans: Plans = [Planned::default(); MAX_PEEK_BURST];
    let mut keystream: Keystream = [[0u8; AES_BLOCK]; MAX_PEEK_BURST * BLOCKS_PER_PACKET];
    plan_and_encrypt(pairs, &mut plans, &mut keystream);
    for ((result, plan), &(sa, packet)) in results.iter_mut().zip(&plans).zip(pairs) {
        if plan.count > 0 && finish(result, sa, packet, plan, &keystream) {
            continue;
        }
        *result = T::one_by_one(sa, packet);
    }
}

/// Writes one planned packet's result from the keystream computed ahead; `false` leaves it to
/// the one-by-one way. The usual tunnel head goes straight from the plan's offsets into `result`
/// (handing it back through an `Option` cost a copy of the whole result, about 3 ns a packet);
/// anything else takes the general fast path, kept out of line so that the usual case keeps its
/// registers.
#[inline(always)]
fn finish<T: BurstResult>(
    result: &mut Result<Unauthenticated<T>, EspError>,
    sa: &Sa,
    packet: &[u8],
    plan: &Planned,
    keystream: &Keystream,
) -> bool {
    if let Some(head) = plan.tunnel_head(packet, keystream) {
        if let Some(inner) = whole_tunnel_head(&head) {
            *result = Ok(T::from_head(sa, packet, plan, &head, inner));
            return true;
        }
    }
    match finish_general(sa, packet, plan, keystream) {
        Some(found) => {
            *result = Ok(found);
            true
        }
        None => false,
    }
}

#[inline(never)]
fn finish_general<T: BurstResult>(
    sa: &Sa,
    packet: &[u8],
    plan: &Planned,
    keystream: &Keystream,
) -> Option<Unauthenticated<T>> {
    let outer = plan.outer(packet)?;
    let slot = usize::from(plan.slot);
    let source = Precomputed {
        sa,
        plan,
        keystream: keystream.get(slot..slot + usize::from(plan.count))?,
    };
    T::from_keystream(sa, &outer, &source)
}

/// Plans every packet, writing its counter blocks straight into its SA's run of `keystream`, then
/// encrypts each SA's run in one call. A group whose AEAD cannot do this loses its plans.
fn plan_and_encrypt(pairs: &[(&Sa, &[u8])], plans: &mut Plans, keystream: &mut Keystream) {
    let groups = Groups::of(pairs);
    let mut cursor = groups.start;
    for ((plan, &(sa, packet)), &group) in plans.iter_mut().zip(pairs).zip(&groups.of_packet) {
        let Some(slot) = cursor.get_mut(usize::from(group)) else {
            continue;
        };
        let at = usize::from(*slot);
        let blocks = &mut keystream[at..at + BLOCKS_PER_PACKET];
        if let Some(planned) = plan_packet(sa, packet, at, blocks) {
            *plan = planned;
        }
        *slot += BLOCKS_PER_PACKET as u8;
    }
    for group in 0..groups.count {
        let sa = pairs[usize::from(groups.leader[group])].0;
        let Some((aead, _)) = gcm_cipher(sa) else {
            continue;
        };
        let run = &mut keystream[usize::from(groups.start[group])..usize::from(cursor[group])];
        if !aead.encrypt_counter_blocks(run) {
            drop_group(pairs, plans, sa);
        }
    }
}

/// The AEAD and salt of an AES-GCM ESP SA: the only SAs whose keystream a burst computes ahead.
#[inline(always)]
fn gcm_cipher(sa: &Sa) -> Option<(&dyn EspAead, &[u8; 4])> {
    if sa.params.protocol != IpsecProtocol::Esp
        || !matches!(sa.params.suite, Suite::Aes128Gcm16 | Suite::Aes256Gcm16)
    {
        return None;
    }
    match &sa.cipher {
        Cipher::Aead { aead, salt } => Some((aead.as_ref(), &**salt)),
        _ => None,
    }
}

/// Parses the outer headers of a plain-shaped AES-GCM ESP packet and writes the counter blocks of
/// the plaintext blocks peek reads into `counters`; `None` sends the packet to the one-by-one peek.
#[inline(always)]
fn plan_packet(
    sa: &Sa,
    packet: &[u8],
    slot: usize,
    counters: &mut [[u8; AES_BLOCK]],
) -> Option<Planned> {
    let (_, salt) = gcm_cipher(sa)?;
    let outer = sa.fast_outer(packet)?;
    let ct = &outer.ct;
    let text_blocks = u32::try_from(ct.len().div_ceil(AES_BLOCK)).ok()?;
    let (blocks, count) = match sa.params.mode {
        Mode::Tunnel => ([0, 1, 2], text_blocks.min(3) as u8),
        Mode::Transport => {
            let trailer_at = ct.len() - 2;
            let first = u32::try_from(trailer_at / AES_BLOCK).ok()?;
            let last = u32::try_from((trailer_at + 1) / AES_BLOCK).ok()?;
            ([0, first, last], BLOCKS_PER_PACKET as u8)
        }
    };
    // GCM counter block of plaintext block n: salt || IV || (n + 2). The first 12 bytes are
    // the same for all of a packet's blocks: built once.
    let mut nonce = [0u8; AES_BLOCK];
    nonce[..4].copy_from_slice(salt);
    nonce[4..12].copy_from_slice(ct.pkt.get(ct.iv_at..ct.iv_at + 8)?);
    for (block, number) in counters.iter_mut().zip(blocks) {
        *block = nonce;
        block[12..].copy_from_slice(&number.wrapping_add(GCM_FIRST_COUNTER).to_be_bytes());
    }
    Some(Planned {
        total_len: u32::try_from(ct.pkt.len()).ok()?,
        esp_at: u16::try_from(outer.esp_at).ok()?,
        text_at: u16::try_from(ct.text_at).ok()?,
        blocks,
        count,
        in_order: sa.params.mode == Mode::Tunnel,
        // Below MAX_PEEK_BURST * BLOCKS_PER_PACKET (96): fits a byte.
        slot: slot as u8,
        v6: outer.family == Family::V6,
    })
}

/// The packets of a burst whose SA is AES-GCM ESP, grouped by SA: which group each is in
/// ([`NO_GROUP`] for other SAs), and where each group's run of blocks starts (three per packet).
struct Groups {
    count: usize,
    of_packet: [u8; MAX_PEEK_BURST],
    /// Index of each group's first packet.
    leader: [u8; MAX_PEEK_BURST],
    /// Where each group's run of blocks starts: below 96, so a byte (small arrays are cheap to
    /// set up per pass).
    start: [u8; MAX_PEEK_BURST],
}

/// Group number of a packet whose keystream is not computed ahead.
const NO_GROUP: u8 = u8::MAX;

impl Groups {
    fn of(pairs: &[(&Sa, &[u8])]) -> Self {
        let mut groups = Groups {
            count: 0,
            of_packet: [NO_GROUP; MAX_PEEK_BURST],
            leader: [0; MAX_PEEK_BURST],
            start: [0; MAX_PEEK_BURST],
        };
        let mut packets = [0u8; MAX_PEEK_BURST];
        for (index, &(sa, _)) in pairs.iter().enumerate().take(MAX_PEEK_BURST) {
            if gcm_cipher(sa).is_none() {
                continue;
            }
            let leaders = &groups.leader[..groups.count];
            let found = leaders
                .iter()
                .position(|&l| std::ptr::eq(pairs[usize::from(l)].0, sa));
            let group = match found {
                Some(group) => group,
                None => {
                    // Below MAX_PEEK_BURST (32): fits a byte.
                    groups.leader[groups.count] = index as u8;
                    groups.count += 1;
                    groups.count - 1
                }
            };
            // At most MAX_PEEK_BURST (32) groups: fits a byte, below NO_GROUP.
            groups.of_packet[index] = group as u8;
            packets[group] += 1;
        }
        let mut next = 0u8;
        for (start, &size) in groups.start.iter_mut().zip(&packets[..groups.count]) {
            *start = next;
            // At most 32 packets of 3 blocks: 96 fits a byte.
            next += size * BLOCKS_PER_PACKET as u8;
        }
        groups
    }
}

/// Sends every packet of `sa` to the one-by-one peek.
#[cold]
fn drop_group(pairs: &[(&Sa, &[u8])], plans: &mut Plans, sa: &Sa) {
    for (plan, &(owner, _)) in plans.iter_mut().zip(pairs) {
        if std::ptr::eq(owner, sa) {
            plan.count = 0;
        }
    }
}

/// Plaintext from the keystream computed ahead; bytes outside it come from the SA's cipher.
struct Precomputed<'p> {
    sa: &'p Sa,
    plan: &'p Planned,
    keystream: &'p [[u8; AES_BLOCK]],
}

impl Precomputed<'_> {
    /// The keystream for whole blocks `offset..offset + len` when a tunnel plan holds them all
    /// (its blocks are 0, 1, 2 in order): the usual call, without per-block lookups.
    #[inline(always)]
    fn whole_blocks(&self, offset: usize, len: usize) -> Option<&[[u8; AES_BLOCK]]> {
        if !self.plan.in_order
            || !offset.is_multiple_of(AES_BLOCK)
            || !len.is_multiple_of(AES_BLOCK)
        {
            return None;
        }
        self.keystream
            .get(offset / AES_BLOCK..(offset + len) / AES_BLOCK)
    }

    /// The keystream of plaintext block `number`, if it was computed ahead.
    #[inline(always)]
    fn block(&self, number: usize) -> Option<&[u8; AES_BLOCK]> {
        let planned = &self.plan.blocks[..usize::from(self.plan.count)];
        // Tunnel plans hold blocks 0, 1, 2 in order: one comparison finds them.
        let at = match planned.get(number) {
            Some(&b) if b as usize == number => number,
            _ => planned.iter().position(|&b| b as usize == number)?,
        };
        self.keystream.get(at)
    }
}

impl PlainSource for Precomputed<'_> {
    #[inline(always)]
    fn decrypt(&self, ct: &Ciphertext<'_>, offset: usize, out: &mut [u8]) -> Option<()> {
        let from = ct.text_at + offset;
        out.copy_from_slice(ct.pkt.get(from..from + out.len())?);
        if let Some(stream) = self.whole_blocks(offset, out.len()) {
            for (chunk, key) in out.chunks_exact_mut(AES_BLOCK).zip(stream) {
                xor_with(chunk, key);
            }
            return Some(());
        }
        let mut at = offset;
        let mut rest = &mut out[..];
        while !rest.is_empty() {
            let Some(block) = self.block(at / AES_BLOCK) else {
                // Not computed ahead (e.g. an inner IPv6 + TCP head): the SA's cipher does it all.
                return Direct(self.sa).decrypt(ct, offset, out);
            };
            let skip = at % AES_BLOCK;
            let take = (AES_BLOCK - skip).min(rest.len());
            let (now, later) = std::mem::take(&mut rest).split_at_mut(take);
            xor_with(now, &block[skip..]);
            rest = later;
            at += take;
        }
        Some(())
    }
}

/// XORs `data` with the start of `stream`; a whole block in one 128-bit operation.
#[inline(always)]
fn xor_with(data: &mut [u8], stream: &[u8]) {
    if let (Ok(whole), Ok(key)) = (
        <&mut [u8; AES_BLOCK]>::try_from(&mut *data),
        <&[u8; AES_BLOCK]>::try_from(stream),
    ) {
        *whole = (u128::from_ne_bytes(*whole) ^ u128::from_ne_bytes(*key)).to_ne_bytes();
        return;
    }
    for (byte, key) in data.iter_mut().zip(stream) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, SaConfig, SaKeys, TunnelEndpoints, MAX_HEADROOM, MAX_TAILROOM};

    fn gcm_pair(spi: u32, mode: Mode, key_byte: u8) -> (Sa, Sa) {
        let build = |direction| {
            let mut c = SaConfig::new(
                spi,
                direction,
                Suite::Aes256Gcm16,
                SaKeys::new(&[key_byte; 36], &[]),
            );
            c.mode = mode;
            if mode == Mode::Tunnel {
                c.tunnel = Some(TunnelEndpoints {
                    src: "192.0.2.1".parse().unwrap(),
                    dst: "192.0.2.2".parse().unwrap(),
                });
            }
            c
        };
        (
            Sa::new(build(Direction::Outbound)).unwrap(),
            Sa::new(build(Direction::Inbound)).unwrap(),
        )
    }

    fn sealed_udp(sa: &mut Sa, sport: u16, payload: usize) -> Vec<u8> {
        let total = 28 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[9] = 17;
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        let mut buf = vec![0u8; MAX_HEADROOM + total + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + total].copy_from_slice(&p);
        let sealed = sa
            .seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + total)
            .unwrap();
        buf[sealed.packet].to_vec()
    }

    /// A tunnel packet whose ciphertext ends inside the third block (an IPv6 header claiming UDP
    /// with nothing after it): the head must not read the ICV as plaintext. Burst and single peek
    /// give the same truncation error.
    #[test]
    fn a_short_ciphertext_is_not_read_past_its_end() {
        let (mut out, inbound) = gcm_pair(0x2003, Mode::Tunnel, 7);
        let mut inner = [0u8; 40];
        inner[0] = 0x60;
        inner[6] = 17;
        let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + 40].copy_from_slice(&inner);
        let sealed = out.seal(&mut buf, MAX_HEADROOM..MAX_HEADROOM + 40).unwrap();
        let wire = &buf[sealed.packet];
        let single = inbound.peek(wire);
        assert!(
            matches!(single, Err(EspError::Truncated { .. })),
            "{single:?}"
        );
        let mut results = [Err(EspError::DummyPacket), Err(EspError::DummyPacket)];
        peek_burst(&[(&inbound, wire), (&inbound, wire)], &mut results);
        assert_eq!(results[0], single);
        assert_eq!(results[1], single);
        let mut flows = [Err(EspError::DummyPacket)];
        peek_burst_flows(&[(&inbound, wire)], &mut flows);
        assert_eq!(
            flows[0],
            single.map(|i| Unauthenticated(PeekFlow::from_info(i.unverified())))
        );
    }

    /// Plain AES-GCM packets of two interleaved SAs take the batched path: each is planned, its
    /// keystream slot holds exactly the SA's own keystream for the planned blocks, and finishing
    /// from that keystream gives `Sa::peek`'s answer, in both result forms.
    #[test]
    fn plain_gcm_packets_use_the_batched_keystream() {
        let (mut tunnel_out, tunnel_in) = gcm_pair(0x2001, Mode::Tunnel, 5);
        let (mut transport_out, transport_in) = gcm_pair(0x2002, Mode::Transport, 6);
        let wires: Vec<(bool, Vec<u8>)> = (0..9u16)
            .map(|i| {
                let tunnel = i % 3 != 0;
                let sa = if tunnel {
                    &mut tunnel_out
                } else {
                    &mut transport_out
                };
                (tunnel, sealed_udp(sa, i, 40 * usize::from(i)))
            })
            .collect();
        let pairs: Vec<(&Sa, &[u8])> = wires
            .iter()
            .map(|(tunnel, w)| (if *tunnel { &tunnel_in } else { &transport_in }, &w[..]))
            .collect();
        let mut plans: Plans = [Planned::default(); MAX_PEEK_BURST];
        let mut keystream: Keystream = [[0u8; AES_BLOCK]; MAX_PEEK_BURST * BLOCKS_PER_PACKET];
        plan_and_encrypt(&pairs, &mut plans, &mut keystream);
        for (i, &(sa, packet)) in pairs.iter().enumerate() {
            let plan = &plans[i];
            assert!(plan.count > 0, "packet {i} planned");
            let outer = plan.outer(packet).expect("outer headers again");
            let (aead, salt) = gcm_cipher(sa).expect("GCM");
            let iv_at = outer.ct.iv_at;
            let iv = u64::from_be_bytes(packet[iv_at..iv_at + 8].try_into().unwrap());
            let nonce = crate::esp::aead_nonce(salt, iv);
            let (slot, count) = (usize::from(plan.slot), usize::from(plan.count));
            for (j, &number) in plan.blocks[..count].iter().enumerate() {
                let mut expected = [0u8; AES_BLOCK];
                aead.apply_keystream(&nonce, number as usize * AES_BLOCK, &mut expected)
                    .unwrap();
                assert_eq!(keystream[slot + j], expected, "packet {i} block {number}");
            }
            let source = Precomputed {
                sa,
                plan,
                keystream: &keystream[slot..slot + count],
            };
            let info = PeekInfo::from_keystream(sa, &outer, &source).expect("fast path");
            let mut head_first: Result<Unauthenticated<PeekInfo>, EspError> =
                Err(EspError::DummyPacket);
            assert!(finish(&mut head_first, sa, packet, plan, &keystream));
            assert_eq!(head_first, Ok(info), "packet {i}");
            let mut flow_first: Result<Unauthenticated<PeekFlow>, EspError> =
                Err(EspError::DummyPacket);
            assert!(finish(&mut flow_first, sa, packet, plan, &keystream));
            assert_eq!(
                flow_first,
                Ok(Unauthenticated(PeekFlow::from_info(info.unverified())))
            );
            assert_eq!(Ok(info), sa.peek(packet), "packet {i}");
            let flow = PeekFlow::from_keystream(sa, &outer, &source).expect("fast path");
            assert_eq!(
                flow.into_unverified(),
                PeekFlow::from_info(info.unverified()),
                "packet {i}"
            );
        }
        // The two SAs' packets were grouped: each SA's slots are contiguous.
        let mut tunnel_slots: Vec<usize> = (0..9)
            .filter(|i| i % 3 != 0)
            .map(|i| usize::from(plans[i].slot))
            .collect();
        tunnel_slots.sort_unstable();
        assert!(
            tunnel_slots.windows(2).all(|w| w[1] == w[0] + 3),
            "{tunnel_slots:?}"
        );
    }
}
