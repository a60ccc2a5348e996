//! Peek (seed figure 8): read the inner 5-tuple of an inbound ESP/AH packet by decrypting only up
//! to the end of the inner TCP/UDP header, without verifying the ICV.

use crate::error::EspError;
use crate::esp::{self, ESP_HEADER_LEN};
use crate::ip::{self, proto, Family};
use crate::sa::{Cipher, IpsecProtocol, Mode, Sa};
use crate::suite::ICV_LEN;
use aws_lc_rs::cipher::DecryptionContext;
use aws_lc_rs::iv::FixedLength;
use std::net::IpAddr;

mod burst;
mod compact;
mod fast;

pub use burst::{peek_burst, peek_burst_flows, MAX_PEEK_BURST};
pub use compact::{FlowAddrs, PeekFlow};

/// A value derived from a packet whose ICV has NOT been verified. Anyone can forge it: use it
/// only to choose where a packet goes, never to accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthenticated<T>(T);

impl<T> Unauthenticated<T> {
    /// The unverified value.
    pub fn unverified(&self) -> &T {
        &self.0
    }

    /// Takes the unverified value out.
    pub fn into_unverified(self) -> T {
        self.0
    }
}

/// What peek read from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekInfo {
    /// SPI of the packet.
    pub spi: u32,
    /// Full sequence number (high bits inferred from the window when ESN is on).
    pub seq: u64,
    /// Outer source address.
    pub outer_src: IpAddr,
    /// Outer destination address.
    pub outer_dst: IpAddr,
    /// Inner source address (the outer one in transport mode).
    pub src: IpAddr,
    /// Inner destination address (the outer one in transport mode).
    pub dst: IpAddr,
    /// Inner transport protocol.
    pub protocol: u8,
    /// Source port (0 unless TCP or UDP).
    pub src_port: u16,
    /// Destination port (0 unless TCP or UDP).
    pub dst_port: u16,
    /// TCP flags byte (byte 13 of the TCP header), if TCP.
    pub tcp_flags: Option<u8>,
    /// A connection request: TCP with SYN set and ACK clear.
    pub syn: bool,
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Bytes of TCP header holding ports and flags.
const TCP_PEEK_LEN: usize = 14;
const UDP_PEEK_LEN: usize = 8;
/// Plaintext bytes a tunnel-mode peek decrypts first (three AES blocks).
const TUNNEL_FIRST_PEEK: usize = 48;
/// Largest inner prefix peek decrypts: IPv4 with 40 bytes of options + TCP up to its flags.
const MAX_HEAD: usize = 128;

/// The encrypted payload of an ESP packet as seen by peek.
#[derive(Clone, Copy)]
struct Ciphertext<'a> {
    pkt: &'a [u8],
    iv_at: usize,
    text_at: usize,
    text_end: usize,
}

impl Sa {
    /// Peeks into an inbound packet for this SA (seed figure 8): returns the inner addresses, ports,
    /// TCP flags and SYN-ness, decrypting only the first blocks (and, in transport mode, the trailer
    /// for the next header). Changes nothing: no replay update, no counters. The ICV is not checked.
    pub fn peek(&self, packet: &[u8]) -> Result<Unauthenticated<PeekInfo>, EspError> {
        match self.params.protocol {
            IpsecProtocol::Esp => self.peek_esp(packet),
            IpsecProtocol::Ah => self.peek_ah(packet),
        }
    }

    #[inline]
    fn peek_esp(&self, packet: &[u8]) -> Result<Unauthenticated<PeekInfo>, EspError> {
        if let Some(found) = self.peek_esp_fast(packet) {
            return Ok(found);
        }
        self.peek_esp_general(packet)
    }

    /// Any packet shape, with an error naming what is wrong and where.
    fn peek_esp_general(&self, packet: &[u8]) -> Result<Unauthenticated<PeekInfo>, EspError> {
        let loc = esp::locate(self, packet)?;
        let pkt = &packet[..loc.outer.total_len];
        let suite = self.params.suite;
        let iv_at = loc.esp_at + ESP_HEADER_LEN;
        let text_at = iv_at + suite.iv_len();
        ip::need(
            pkt,
            "ESP packet",
            loc.esp_at,
            text_at - loc.esp_at + 2 + ICV_LEN,
        )?;
        let (spi, seq) = self.peek_spi_seq(pkt, loc.esp_at)?;
        let ct = Ciphertext {
            pkt,
            iv_at,
            text_at,
            text_end: pkt.len() - ICV_LEN,
        };
        let outer = Addresses {
            family: loc.outer.family,
            header: pkt,
        };
        let mut head = [0u8; MAX_HEAD];
        match self.params.mode {
            Mode::Transport => {
                let mut trailer = [0u8; 2];
                self.decrypt_range(&ct, ct.len() - 2, &mut trailer)?;
                let needed = l4_peek_len(trailer[1]).min(ct.len());
                self.decrypt_range(&ct, 0, &mut head[..needed])?;
                let l4 = read_l4(&head[..needed], trailer[1], text_at)?;
                Ok(assemble(spi, seq, outer, outer, l4))
            }
            Mode::Tunnel => {
                // One call covers IPv4 + TCP up to the flags and IPv6 + UDP; longer headers need a second.
                let first = ct.len().min(TUNNEL_FIRST_PEEK);
                self.decrypt_range(&ct, 0, &mut head[..first])?;
                let needed = tunnel_peek_len(&head[..first], text_at)?.min(ct.len());
                self.decrypt_more(&ct, &mut head, first, needed)?;
                let (inner, l4) = read_inner_ip(&head[..needed], text_at)?;
                Ok(assemble(spi, seq, outer, inner, l4))
            }
        }
    }

    #[inline]
    fn peek_spi_seq(&self, pkt: &[u8], spi_at: usize) -> Result<(u32, u64), EspError> {
        let spi = ip::be32(pkt, spi_at);
        if spi != self.params.spi {
            return Err(EspError::WrongSpi {
                expected: self.params.spi,
                got: spi,
                offset: spi_at,
            });
        }
        Ok((spi, self.full_seq(ip::be32(pkt, spi_at + 4))))
    }

    #[inline]
    fn decrypt_more(
        &self,
        ct: &Ciphertext<'_>,
        head: &mut [u8; MAX_HEAD],
        have: usize,
        needed: usize,
    ) -> Result<(), EspError> {
        if needed > have {
            self.decrypt_range(ct, have, &mut head[have..needed])?;
        }
        Ok(())
    }

    /// Decrypts plaintext bytes `offset..offset + out.len()` of the ESP payload into `out`.
    #[inline(always)]
    fn decrypt_range(
        &self,
        ct: &Ciphertext<'_>,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), EspError> {
        let from = ct.text_at + offset;
        out.copy_from_slice(&ct.pkt[from..from + out.len()]);
        match &self.cipher {
            Cipher::Null { .. } => Ok(()),
            Cipher::Aead { aead, salt } => {
                let mut iv = [0u8; 8];
                iv.copy_from_slice(&ct.pkt[ct.iv_at..ct.iv_at + 8]);
                let nonce = esp::aead_nonce(salt, u64::from_be_bytes(iv));
                aead.apply_keystream(&nonce, offset, out)?;
                Ok(())
            }
            Cipher::CbcHmac(keys) => cbc_decrypt_range(&keys.decrypt, ct, offset, out),
        }
    }
}

impl Ciphertext<'_> {
    fn len(&self) -> usize {
        self.text_end - self.text_at
    }
}

/// CBC: plaintext block i needs only ciphertext blocks i-1 and i, so decrypt just the blocks
/// covering the range, chained from the block before them (or the IV).
fn cbc_decrypt_range(
    key: &aws_lc_rs::cipher::DecryptingKey,
    ct: &Ciphertext<'_>,
    offset: usize,
    out: &mut [u8],
) -> Result<(), EspError> {
    let first = offset / 16 * 16;
    let last = (offset + out.len()).div_ceil(16) * 16;
    if last > ct.len() || last - first > MAX_HEAD {
        return Err(EspError::Malformed {
            field: "ESP ciphertext length",
            offset: ct.text_at,
            reason: "not a multiple of the AES block",
        });
    }
    let chain_at = if first == 0 {
        ct.iv_at
    } else {
        ct.text_at + first - 16
    };
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&ct.pkt[chain_at..chain_at + 16]);
    let mut blocks = [0u8; MAX_HEAD];
    let blocks = &mut blocks[..last - first];
    blocks.copy_from_slice(&ct.pkt[ct.text_at + first..ct.text_at + last]);
    key.decrypt(blocks, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| {
            EspError::Crypto(crate::CryptoError::Provider {
                operation: "AES-CBC peek",
            })
        })?;
    let skip = offset - first;
    out.copy_from_slice(&blocks[skip..skip + out.len()]);
    Ok(())
}

#[inline(always)]
fn l4_peek_len(protocol: u8) -> usize {
    match protocol {
        proto::TCP => TCP_PEEK_LEN,
        proto::UDP => UDP_PEEK_LEN,
        _ => 0,
    }
}

/// How many plaintext bytes a tunnel-mode peek needs, from the first block of the inner header.
#[inline]
fn tunnel_peek_len(first: &[u8], at: usize) -> Result<usize, EspError> {
    ip::need(first, "inner IP header", 0, 10)?;
    match first[0] >> 4 {
        4 => Ok(usize::from(first[0] & 0x0f) * 4 + l4_peek_len(first[9])),
        6 => Ok(40 + l4_peek_len(first[6])),
        _ => Err(EspError::Malformed {
            field: "inner IP version",
            offset: at,
            reason: "neither 4 nor 6",
        }),
    }
}

/// Where an IP header's addresses are; turned into `IpAddr`s only once, in [`assemble`].
#[derive(Clone, Copy)]
struct Addresses<'a> {
    family: Family,
    header: &'a [u8],
}

/// The transport part of a peek.
struct L4 {
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: Option<u8>,
}

#[inline]
fn assemble(
    spi: u32,
    seq: u64,
    outer: Addresses<'_>,
    inner: Addresses<'_>,
    l4: L4,
) -> Unauthenticated<PeekInfo> {
    flow(
        spi,
        seq,
        ip::addresses(outer.header, outer.family),
        ip::addresses(inner.header, inner.family),
        l4,
    )
}

/// The result, built in one place for both paths.
#[inline(always)]
fn flow(
    spi: u32,
    seq: u64,
    (outer_src, outer_dst): (IpAddr, IpAddr),
    (src, dst): (IpAddr, IpAddr),
    l4: L4,
) -> Unauthenticated<PeekInfo> {
    Unauthenticated(PeekInfo {
        spi,
        seq,
        outer_src,
        outer_dst,
        src,
        dst,
        protocol: l4.protocol,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        tcp_flags: l4.tcp_flags,
        syn: l4
            .tcp_flags
            .is_some_and(|f| f & TCP_SYN != 0 && f & TCP_ACK == 0),
    })
}

#[inline]
fn read_inner_ip(head: &[u8], at: usize) -> Result<(Addresses<'_>, L4), EspError> {
    let view = ip::parse_header_only(head).map_err(|e| shift(e, at))?;
    let inner = Addresses {
        family: view.family,
        header: head,
    };
    let first_fragment = view.family == Family::V6 || ip::be16(head, 6) & 0x1fff == 0;
    if !first_fragment {
        let mut l4 = read_l4(&[], proto::NONE, at)?;
        l4.protocol = view.proto;
        return Ok((inner, l4));
    }
    let l4 = read_l4(&head[view.header_len..], view.proto, at + view.header_len)?;
    Ok((inner, l4))
}

#[cold]
fn shift(error: EspError, by: usize) -> EspError {
    match error {
        EspError::Truncated {
            layer,
            offset,
            needed,
            len,
        } => EspError::Truncated {
            layer,
            offset: offset + by,
            needed,
            len: len + by,
        },
        EspError::Malformed {
            field,
            offset,
            reason,
        } => EspError::Malformed {
            field,
            offset: offset + by,
            reason,
        },
        other => other,
    }
}

#[inline(always)]
fn read_l4(l4: &[u8], protocol: u8, at: usize) -> Result<L4, EspError> {
    let needed = l4_peek_len(protocol);
    if l4.len() < needed {
        return Err(ip::truncated(
            "inner transport header",
            at,
            needed,
            at + l4.len(),
        ));
    }
    let (src_port, dst_port) = if needed > 0 {
        (ip::be16(l4, 0), ip::be16(l4, 2))
    } else {
        (0, 0)
    };
    Ok(L4 {
        protocol,
        src_port,
        dst_port,
        tcp_flags: (protocol == proto::TCP).then(|| l4[13]),
    })
}

impl Sa {
    fn peek_ah(&self, packet: &[u8]) -> Result<Unauthenticated<PeekInfo>, EspError> {
        let loc = crate::ah::locate(packet)?;
        let pkt = &packet[..loc.outer.total_len];
        let (spi, seq) = self.peek_spi_seq(pkt, loc.ah_at + 4)?;
        let outer = Addresses {
            family: loc.outer.family,
            header: pkt,
        };
        let payload = &pkt[loc.payload_at..];
        match self.params.mode {
            Mode::Transport => {
                let l4 = read_l4(payload, loc.next_header, loc.payload_at)?;
                Ok(assemble(spi, seq, outer, outer, l4))
            }
            Mode::Tunnel => {
                let (inner, l4) = read_inner_ip(payload, loc.payload_at)?;
                Ok(assemble(spi, seq, outer, inner, l4))
            }
        }
    }
}
