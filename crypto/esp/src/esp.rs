//! ESP (RFC 4303) seal and open in place, with UDP encapsulation (RFC 3948) and ESN.

use crate::error::EspError;
use crate::ip::{self, proto, Family};
use crate::provider::{NONCE_LEN, TAG_LEN};
use crate::sa::{Cipher, Mode, Sa};
use crate::suite::ICV_LEN;
use aws_lc_rs::cipher::{DecryptionContext, EncryptionContext};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use std::net::IpAddr;
use std::ops::Range;

/// Bytes of the ESP header (SPI + sequence number).
pub const ESP_HEADER_LEN: usize = 8;
/// Bytes of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The most headroom any ESP seal needs: outer IPv6 + UDP + ESP + 16-byte IV.
pub const MAX_HEADROOM: usize = 40 + UDP_HEADER_LEN + ESP_HEADER_LEN + 16;
/// The most tailroom any ESP seal needs: 15 padding bytes + pad length + next header + ICV.
pub const MAX_TAILROOM: usize = 15 + 2 + ICV_LEN;

/// Where the ESP part of a received packet is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EspLocation {
    pub outer: ip::IpView,
    /// Offset of the ESP header (after the IP header and any UDP header).
    pub esp_at: usize,
    /// UDP source port when UDP-encapsulated.
    pub udp_src_port: Option<u16>,
}

/// Finds the ESP header of a received IP packet, checking the UDP encapsulation rules of RFC 3948.
#[inline]
pub(crate) fn locate(sa: &Sa, packet: &[u8]) -> Result<EspLocation, EspError> {
    let outer = ip::parse(packet)?;
    let packet = &packet[..outer.total_len];
    match outer.proto {
        proto::ESP => Ok(EspLocation {
            outer,
            esp_at: outer.header_len,
            udp_src_port: None,
        }),
        proto::UDP => {
            let udp_at = outer.header_len;
            ip::need(packet, "UDP header", udp_at, UDP_HEADER_LEN)?;
            let Some(encap) = sa.params.udp_encap else {
                return Err(EspError::NotIpsec {
                    expected: "ESP",
                    found: "UDP on an SA without UDP encapsulation",
                });
            };
            if ip::be16(packet, udp_at + 2) != encap.dst_port {
                return Err(EspError::NotIpsec {
                    expected: "UDP-encapsulated ESP",
                    found: "UDP to another port",
                });
            }
            let body = &packet[udp_at + UDP_HEADER_LEN..];
            if body == [0xff] {
                return Err(EspError::NotIpsec {
                    expected: "UDP-encapsulated ESP",
                    found: "NAT-keepalive",
                });
            }
            if body.len() >= 4 && body[..4] == [0, 0, 0, 0] {
                return Err(EspError::NotIpsec {
                    expected: "UDP-encapsulated ESP",
                    found: "IKE (non-ESP marker)",
                });
            }
            Ok(EspLocation {
                outer,
                esp_at: udp_at + UDP_HEADER_LEN,
                udp_src_port: Some(ip::be16(packet, udp_at)),
            })
        }
        _ => Err(EspError::NotIpsec {
            expected: "ESP",
            found: "another IP protocol",
        }),
    }
}

/// The result of a successful seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Where the ESP packet now is in the caller's buffer.
    pub packet: Range<usize>,
    /// The sequence number used.
    pub seq: u64,
}

/// The result of a successful open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the decapsulated IP packet now is in the caller's buffer: the inner packet in tunnel
    /// mode, the rebuilt original packet in transport mode.
    pub packet: Range<usize>,
    /// The full (inferred) sequence number.
    pub seq: u64,
    /// The next header from the ESP trailer.
    pub next_header: u8,
    /// The UDP source port of an encapsulated packet (a NAT may have changed it).
    pub udp_src_port: Option<u16>,
}

pub(crate) fn check_range(buf: &[u8], packet: &Range<usize>) -> Result<(), EspError> {
    if packet.start > packet.end || packet.end > buf.len() {
        return Err(EspError::BadRange {
            start: packet.start,
            end: packet.end,
            len: buf.len(),
        });
    }
    Ok(())
}

/// The 12-byte AEAD nonce: salt || 64-bit sequence number (the explicit IV, RFC 4106 section 3.1).
pub(crate) fn aead_nonce(salt: &[u8; 4], seq: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    nonce
}

/// AAD of RFC 4106 section 5: SPI || seq (32 bits), or SPI || seq (64 bits) with ESN.
fn aead_aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        aad[4..].copy_from_slice(&seq.to_be_bytes());
        (aad, 12)
    } else {
        aad[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (aad, 8)
    }
}

/// HMAC-SHA-256-128 over the ESP packet from the header to the end of the ciphertext, with the
/// high ESN bits appended when ESN is on (RFC 4303 section 2.2.1).
pub(crate) fn esp_icv(key: &hmac::Key, covered: &[u8], seq: u64, esn: bool) -> [u8; ICV_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(covered);
    if esn {
        ctx.update(&((seq >> 32) as u32).to_be_bytes());
    }
    let tag = ctx.sign();
    let mut icv = [0u8; ICV_LEN];
    icv.copy_from_slice(&tag.as_ref()[..ICV_LEN]);
    icv
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn crypto_failed(operation: &'static str) -> EspError {
    EspError::Crypto(crate::error::CryptoError::Provider { operation })
}

/// The layout of an ESP packet being built.
struct SealPlan {
    new_start: usize,
    outer_family: Family,
    /// Offset of the outer protocol byte, relative to `new_start`.
    outer_proto_at: usize,
    /// Offset of the UDP checksum's pseudo-header destination, relative to `new_start` (IPv6).
    pseudo_dst_at: usize,
    esp_at: usize,
    payload: Range<usize>,
    pad_len: usize,
    next_header: u8,
    end: usize,
}

impl Sa {
    /// Seals the IP packet at `buf[packet]` with the next sequence number of this outbound SA.
    ///
    /// The packet must be a complete IPv4 or IPv6 packet (not a fragment). The ESP packet is built in
    /// place: headers go into the headroom before `packet.start` (at most [`MAX_HEADROOM`] bytes) and
    /// the trailer and ICV into the tailroom after `packet.end` (at most [`MAX_TAILROOM`]).
    /// Nothing is allocated.
    pub fn seal(&mut self, buf: &mut [u8], packet: Range<usize>) -> Result<Sealed, EspError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(EspError::SequenceExhausted)?;
        self.seal_with_seq(buf, packet, seq)
    }

    /// Like [`Sa::seal`] with a sequence number handed out by someone else (the coupling facility,
    /// for shadow SAs on targets). The SA remembers the highest number used.
    pub fn seal_with_seq(
        &mut self,
        buf: &mut [u8],
        packet: Range<usize>,
        seq: u64,
    ) -> Result<Sealed, EspError> {
        self.check_can_seal(seq)?;
        check_range(buf, &packet)?;
        let (range, payload_len) = match self.params.protocol {
            crate::sa::IpsecProtocol::Esp => self.esp_seal(buf, packet, seq)?,
            crate::sa::IpsecProtocol::Ah => self.ah_seal(buf, packet, seq)?,
        };
        self.last_seq = self.last_seq.max(seq);
        self.counters.packets += 1;
        self.counters.bytes += payload_len as u64;
        Ok(Sealed { packet: range, seq })
    }

    fn check_can_seal(&self, seq: u64) -> Result<(), EspError> {
        if self.params.direction != crate::sa::Direction::Outbound {
            return Err(EspError::WrongDirection {
                sa: self.params.direction.name(),
                operation: "seal",
            });
        }
        if seq == 0 {
            return Err(EspError::ZeroSequence);
        }
        if !self.params.esn && seq > u64::from(u32::MAX) {
            return Err(EspError::SequenceExhausted);
        }
        self.check_lifetime()
    }

    pub(crate) fn check_lifetime(&self) -> Result<(), EspError> {
        let limits = &self.params.lifetime;
        let c = &self.counters;
        if limits.hard_packets.is_some_and(|l| c.packets >= l) {
            return Err(EspError::LifetimeExpired("packet"));
        }
        if limits.hard_bytes.is_some_and(|l| c.bytes >= l) {
            return Err(EspError::LifetimeExpired("byte"));
        }
        Ok(())
    }

    fn plan_esp_seal(&self, buf: &[u8], packet: &Range<usize>) -> Result<SealPlan, EspError> {
        let inner = ip::parse(&buf[packet.clone()])?;
        let suite = self.params.suite;
        let udp_len = if self.params.udp_encap.is_some() {
            UDP_HEADER_LEN
        } else {
            0
        };
        let esp_front = ESP_HEADER_LEN + suite.iv_len();
        let (outer_len, payload, next_header) = match self.params.mode {
            Mode::Transport => (
                inner.header_len,
                packet.start + inner.header_len..packet.start + inner.total_len,
                inner.proto,
            ),
            Mode::Tunnel => {
                let next = match inner.family {
                    Family::V4 => proto::IPV4,
                    Family::V6 => proto::IPV6,
                };
                let outer_len = match self.tunnel_family() {
                    Family::V4 => 20,
                    Family::V6 => 40,
                };
                (
                    outer_len,
                    packet.start..packet.start + inner.total_len,
                    next,
                )
            }
        };
        let before_payload = outer_len + udp_len + esp_front;
        if payload.start < before_payload {
            return Err(EspError::NoHeadroom {
                needed: before_payload - (payload.start - packet.start),
                available: packet.start,
            });
        }
        let new_start = payload.start - before_payload;
        let align = suite.pad_align();
        let pad_len = (align - (payload.len() + 2) % align) % align;
        let end = payload.end + pad_len + 2 + ICV_LEN;
        if end > buf.len() {
            return Err(EspError::NoTailroom {
                needed: end - packet.end,
                available: buf.len() - packet.end,
            });
        }
        if end - new_start > usize::from(u16::MAX) {
            return Err(EspError::TooLarge(end - new_start));
        }
        let (outer_family, outer_proto_at) = match self.params.mode {
            Mode::Transport => (inner.family, inner.proto_at),
            Mode::Tunnel => match self.tunnel_family() {
                Family::V4 => (Family::V4, 9),
                Family::V6 => (Family::V6, 6),
            },
        };
        let pseudo_dst_at = match (self.params.mode, outer_family) {
            (Mode::Transport, Family::V6) if udp_len > 0 => {
                ip::pseudo_header_destination_at(&buf[packet.clone()], inner.header_len)?
            }
            _ => 24,
        };
        Ok(SealPlan {
            new_start,
            outer_family,
            outer_proto_at,
            pseudo_dst_at,
            esp_at: new_start + outer_len + udp_len,
            payload,
            pad_len,
            next_header,
            end,
        })
    }

    fn tunnel_family(&self) -> Family {
        match self.params.tunnel.map(|t| t.src) {
            Some(IpAddr::V6(_)) => Family::V6,
            _ => Family::V4,
        }
    }

    fn esp_seal(
        &self,
        buf: &mut [u8],
        packet: Range<usize>,
        seq: u64,
    ) -> Result<(Range<usize>, usize), EspError> {
        let plan = self.plan_esp_seal(buf, &packet)?;
        match self.params.mode {
            Mode::Transport => {
                let header = packet.start..plan.payload.start;
                buf.copy_within(header, plan.new_start);
            }
            Mode::Tunnel => self.write_tunnel_header(buf, &plan, seq),
        }
        self.write_esp_header_and_trailer(buf, &plan, seq);
        self.encrypt_and_sign(buf, &plan, seq)?;
        self.finish_outer(buf, &plan);
        Ok((plan.new_start..plan.end, plan.payload.len()))
    }

    fn write_tunnel_header(&self, buf: &mut [u8], plan: &SealPlan, seq: u64) {
        let inner = &buf[plan.payload.clone()];
        let traffic_class = match inner[0] >> 4 {
            4 => inner[1],
            _ => (inner[0] << 4) | (inner[1] >> 4),
        };
        let Some(t) = self.params.tunnel else { return };
        let out = &mut buf[plan.new_start..];
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out[..20].fill(0);
                out[0] = 0x45;
                out[1] = traffic_class;
                out[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
                out[8] = 64;
                out[12..16].copy_from_slice(&s.octets());
                out[16..20].copy_from_slice(&d.octets());
            }
            (s, d) => {
                out[..40].fill(0);
                out[0] = 0x60 | (traffic_class >> 4);
                out[1] = traffic_class << 4;
                out[7] = 64;
                if let (IpAddr::V6(s), IpAddr::V6(d)) = (s, d) {
                    out[8..24].copy_from_slice(&s.octets());
                    out[24..40].copy_from_slice(&d.octets());
                }
            }
        }
    }

    fn write_esp_header_and_trailer(&self, buf: &mut [u8], plan: &SealPlan, seq: u64) {
        buf[plan.esp_at..plan.esp_at + 4].copy_from_slice(&self.params.spi.to_be_bytes());
        buf[plan.esp_at + 4..plan.esp_at + 8].copy_from_slice(&(seq as u32).to_be_bytes());
        let mut at = plan.payload.end;
        for n in 1..=plan.pad_len {
            buf[at] = n as u8;
            at += 1;
        }
        buf[at] = plan.pad_len as u8;
        buf[at + 1] = plan.next_header;
    }

    fn encrypt_and_sign(&self, buf: &mut [u8], plan: &SealPlan, seq: u64) -> Result<(), EspError> {
        let iv_at = plan.esp_at + ESP_HEADER_LEN;
        let icv_at = plan.end - ICV_LEN;
        let text = plan.payload.start..icv_at;
        match &self.cipher {
            Cipher::Aead { aead, salt } => {
                buf[iv_at..iv_at + 8].copy_from_slice(&seq.to_be_bytes());
                let nonce = aead_nonce(salt, seq);
                let (aad, aad_len) = aead_aad(self.params.spi, seq, self.params.esn);
                let mut tag = [0u8; TAG_LEN];
                aead.seal_in_place(&nonce, &aad[..aad_len], &mut buf[text], &mut tag)?;
                buf[icv_at..plan.end].copy_from_slice(&tag);
            }
            Cipher::CbcHmac(keys) => {
                let (encrypt, iv_gen, mac) = (&keys.encrypt, &keys.iv_gen, &keys.mac);
                let mut iv = [0u8; 16];
                iv[..4].copy_from_slice(&self.params.spi.to_be_bytes());
                iv[8..].copy_from_slice(&seq.to_be_bytes());
                iv_gen
                    .less_safe_encrypt(&mut iv, EncryptionContext::None)
                    .map_err(|_| crypto_failed("CBC IV generation"))?;
                buf[iv_at..iv_at + 16].copy_from_slice(&iv);
                encrypt
                    .less_safe_encrypt(
                        &mut buf[text],
                        EncryptionContext::Iv128(FixedLength::from(iv)),
                    )
                    .map_err(|_| crypto_failed("AES-CBC encrypt"))?;
                let icv = esp_icv(mac, &buf[plan.esp_at..icv_at], seq, self.params.esn);
                buf[icv_at..plan.end].copy_from_slice(&icv);
            }
            Cipher::Null { mac } => {
                let icv = esp_icv(mac, &buf[plan.esp_at..icv_at], seq, self.params.esn);
                buf[icv_at..plan.end].copy_from_slice(&icv);
            }
        }
        Ok(())
    }

    /// Fixes the outer IP header (length, protocol, checksum) and writes the UDP header if any.
    fn finish_outer(&self, buf: &mut [u8], plan: &SealPlan) {
        let out = &mut buf[plan.new_start..plan.end];
        let total = out.len();
        let (family, proto_at) = (plan.outer_family, plan.outer_proto_at);
        let udp_at = plan.esp_at - plan.new_start;
        match self.params.udp_encap {
            Some(encap) => {
                out[proto_at] = proto::UDP;
                let udp_at = udp_at - UDP_HEADER_LEN;
                out[udp_at..udp_at + 2].copy_from_slice(&encap.src_port.to_be_bytes());
                out[udp_at + 2..udp_at + 4].copy_from_slice(&encap.dst_port.to_be_bytes());
                out[udp_at + 4..udp_at + 6]
                    .copy_from_slice(&((total - udp_at) as u16).to_be_bytes());
                out[udp_at + 6..udp_at + 8].fill(0);
                ip::set_total_len(out, family, total);
                if family == Family::V6 {
                    ip::fix_udp6_checksum(out, udp_at, plan.pseudo_dst_at);
                }
            }
            None => {
                out[proto_at] = proto::ESP;
                ip::set_total_len(out, family, total);
            }
        }
    }
}

impl Sa {
    /// Opens the ESP (or AH) packet at `buf[packet]` in place: checks SPI and replay window, verifies
    /// the ICV, decrypts, checks the padding, then records the sequence number in the window.
    ///
    /// On success the decapsulated packet lies at [`Opened::packet`] within `buf`. Every failure is
    /// counted in [`Sa::counters`] and leaves the SA's state as it was; the buffer may be altered.
    pub fn open(&mut self, buf: &mut [u8], packet: Range<usize>) -> Result<Opened, EspError> {
        let result = self.open_uncounted(buf, packet);
        if let Err(e) = &result {
            self.count_drop(e);
        }
        result
    }

    fn count_drop(&mut self, error: &EspError) {
        let c = &mut self.counters;
        match error {
            EspError::Replay { .. } => c.replays += 1,
            EspError::Authentication { .. } => c.auth_failures += 1,
            EspError::BadPadding { .. } => c.bad_trailer += 1,
            EspError::DummyPacket => c.dummies += 1,
            _ => c.malformed += 1,
        }
    }

    fn open_uncounted(&mut self, buf: &mut [u8], packet: Range<usize>) -> Result<Opened, EspError> {
        if self.params.direction != crate::sa::Direction::Inbound {
            return Err(EspError::WrongDirection {
                sa: self.params.direction.name(),
                operation: "open",
            });
        }
        check_range(buf, &packet)?;
        self.check_lifetime()?;
        let opened = match self.params.protocol {
            crate::sa::IpsecProtocol::Esp => self.esp_open(buf, packet)?,
            crate::sa::IpsecProtocol::Ah => self.ah_open(buf, packet)?,
        };
        self.counters.packets += 1;
        self.counters.bytes += opened.packet.len() as u64;
        Ok(opened)
    }

    /// Checks the SPI and the replay window; returns the full sequence number.
    pub(crate) fn check_spi_and_replay(
        &self,
        packet: &[u8],
        spi_at: usize,
    ) -> Result<u64, EspError> {
        let spi = ip::be32(packet, spi_at);
        if spi != self.params.spi {
            return Err(EspError::WrongSpi {
                expected: self.params.spi,
                got: spi,
                offset: spi_at,
            });
        }
        let seq_lo = ip::be32(packet, spi_at + 4);
        let seq = self.full_seq(seq_lo);
        if seq == 0 {
            return Err(EspError::ZeroSequence);
        }
        self.replay_check(seq_lo)
    }

    /// Records an authenticated sequence number in the window.
    pub(crate) fn record_seq(&mut self, seq: u64) -> Result<(), EspError> {
        if self.params.replay_window != 0 && !self.replay.accept(seq) {
            return Err(EspError::Replay { seq });
        }
        if self.params.replay_window == 0 && seq > self.replay.top() {
            // Still track the top so ESN inference keeps working without anti-replay.
            self.replay.accept(seq);
        }
        Ok(())
    }

    fn esp_open(&mut self, buf: &mut [u8], packet: Range<usize>) -> Result<Opened, EspError> {
        let base = packet.start;
        let pkt = &buf[packet];
        let loc = locate(self, pkt)?;
        let end = loc.outer.total_len;
        let suite = self.params.suite;
        let text_at = loc.esp_at + ESP_HEADER_LEN + suite.iv_len();
        let min_text = if suite.pad_align() == 16 { 16 } else { 4 };
        ip::need(
            &pkt[..end],
            "ESP packet",
            loc.esp_at,
            text_at - loc.esp_at + min_text + ICV_LEN,
        )?;
        let seq = self.check_spi_and_replay(pkt, loc.esp_at)?;
        let icv_at = end - ICV_LEN;
        self.verify_and_decrypt(&mut buf[base..base + end], loc.esp_at, text_at, icv_at, seq)?;
        self.record_seq(seq)?;
        let (inner_end, next_header) = check_trailer(&buf[base..base + icv_at], text_at)?;
        let inner = base + text_at..base + inner_end;
        let packet = match self.params.mode {
            Mode::Tunnel => check_tunnel_inner(buf, inner, next_header)?,
            Mode::Transport => rebuild_transport(buf, base, &loc, inner, next_header),
        };
        Ok(Opened {
            packet,
            seq,
            next_header,
            udp_src_port: loc.udp_src_port,
        })
    }

    fn verify_and_decrypt(
        &self,
        pkt: &mut [u8],
        esp_at: usize,
        text_at: usize,
        icv_at: usize,
        seq: u64,
    ) -> Result<(), EspError> {
        let auth_failed = EspError::Authentication { seq };
        match &self.cipher {
            Cipher::Aead { aead, salt } => {
                let iv_at = esp_at + ESP_HEADER_LEN;
                let mut iv = [0u8; 8];
                iv.copy_from_slice(&pkt[iv_at..iv_at + 8]);
                let mut nonce = [0u8; NONCE_LEN];
                nonce[..4].copy_from_slice(salt.as_slice());
                nonce[4..].copy_from_slice(&iv);
                let (aad, aad_len) = aead_aad(self.params.spi, seq, self.params.esn);
                let mut tag = [0u8; TAG_LEN];
                tag.copy_from_slice(&pkt[icv_at..icv_at + TAG_LEN]);
                aead.open_in_place(&nonce, &aad[..aad_len], &mut pkt[text_at..icv_at], &tag)
                    .map_err(|_| auth_failed)
            }
            Cipher::CbcHmac(keys) => {
                let (decrypt, mac) = (&keys.decrypt, &keys.mac);
                let icv = esp_icv(mac, &pkt[esp_at..icv_at], seq, self.params.esn);
                if !constant_time_eq(&icv, &pkt[icv_at..icv_at + ICV_LEN]) {
                    return Err(auth_failed);
                }
                if !(icv_at - text_at).is_multiple_of(16) {
                    return Err(EspError::Malformed {
                        field: "ESP ciphertext length",
                        offset: text_at,
                        reason: "not a multiple of the AES block",
                    });
                }
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&pkt[text_at - 16..text_at]);
                decrypt
                    .decrypt(
                        &mut pkt[text_at..icv_at],
                        DecryptionContext::Iv128(FixedLength::from(iv)),
                    )
                    .map_err(|_| crypto_failed("AES-CBC decrypt"))?;
                Ok(())
            }
            Cipher::Null { mac } => {
                let icv = esp_icv(mac, &pkt[esp_at..icv_at], seq, self.params.esn);
                if constant_time_eq(&icv, &pkt[icv_at..icv_at + ICV_LEN]) {
                    Ok(())
                } else {
                    Err(auth_failed)
                }
            }
        }
    }
}

/// Checks the decrypted trailer of `pkt[text_at..]` (padding 1, 2, 3, ...; RFC 4303 section 2.4).
/// Returns where the payload ends and the next header.
fn check_trailer(pkt: &[u8], text_at: usize) -> Result<(usize, u8), EspError> {
    let end = pkt.len();
    if end < text_at + 2 {
        return Err(ip::truncated("ESP trailer", text_at, 2, end));
    }
    let pad_len = usize::from(pkt[end - 2]);
    let next_header = pkt[end - 1];
    if text_at + pad_len + 2 > end {
        return Err(EspError::BadPadding { offset: end - 2 });
    }
    let pad_at = end - 2 - pad_len;
    for (i, &byte) in pkt[pad_at..end - 2].iter().enumerate() {
        if usize::from(byte) != i + 1 {
            return Err(EspError::BadPadding { offset: pad_at + i });
        }
    }
    if next_header == proto::NONE {
        return Err(EspError::DummyPacket);
    }
    Ok((pad_at, next_header))
}

fn check_tunnel_inner(
    buf: &[u8],
    inner: Range<usize>,
    next_header: u8,
) -> Result<Range<usize>, EspError> {
    let expected_version = match next_header {
        proto::IPV4 => 4,
        proto::IPV6 => 6,
        _ => {
            return Err(EspError::Malformed {
                field: "ESP next header",
                offset: inner.end,
                reason: "tunnel mode carries only IPv4 or IPv6",
            })
        }
    };
    let view = ip::parse(&buf[inner.clone()])?;
    let version = match view.family {
        Family::V4 => 4,
        Family::V6 => 6,
    };
    if version != expected_version {
        return Err(EspError::Malformed {
            field: "inner IP version",
            offset: inner.start,
            reason: "does not match the ESP next header",
        });
    }
    Ok(inner.start..inner.start + view.total_len)
}

/// Transport mode: slides the outer IP header (without any UDP header) up against the payload
/// and fixes its protocol, length and checksum.
fn rebuild_transport(
    buf: &mut [u8],
    base: usize,
    loc: &EspLocation,
    payload: Range<usize>,
    next_header: u8,
) -> Range<usize> {
    let header_len = loc.outer.header_len;
    let start = payload.start - header_len;
    buf.copy_within(base..base + header_len, start);
    let out = &mut buf[start..payload.end];
    out[loc.outer.proto_at] = next_header;
    let total = out.len();
    ip::set_total_len(out, loc.outer.family, total);
    start..payload.end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4868 section 2.7.2.1, test cases AUTH256-1..3: HMAC-SHA-256 with 32-byte keys,
    /// truncated to 128 bits for ESP/AH.
    #[test]
    fn hmac_sha256_128_matches_rfc4868() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 3] = [
            (
                vec![0x0b; 32],
                b"Hi There".to_vec(),
                "198a607eb44bfbc69903a0f1cf2bbdc5",
            ),
            (
                b"JefeJefeJefeJefeJefeJefeJefeJefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "167f928588c5cc2eef8e3093caa0e87c",
            ),
            (
                vec![0xaa; 32],
                vec![0xdd; 50],
                "cdcb1220d1ecccea91e53aba3092f962",
            ),
        ];
        for (key, data, expected) in cases {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
            assert_eq!(esp_icv(&key, &data, 0, false).to_vec(), unhex(expected));
        }
    }

    #[test]
    fn esn_high_bits_are_appended_to_the_hmac_input() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]);
        let with = esp_icv(&key, b"Hi The", 0x7265_0000_0000, true);
        // The high half 0x00007265 goes after the data as 00 00 72 65.
        let plain = esp_icv(&key, b"Hi The\x00\x00\x72\x65", 0, false);
        assert_eq!(with, plain);
        assert_ne!(with, esp_icv(&key, b"Hi The", 0x7265_0000_0000, false));
    }
}
