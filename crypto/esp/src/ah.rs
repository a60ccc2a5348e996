//! AH (RFC 4302) with HMAC-SHA-256-128 in transport and tunnel mode, with the zeroing of
//! mutable IP header fields for the ICV (RFC 4302 section 3.3.3.1).

use crate::error::EspError;
use crate::esp::constant_time_eq;
use crate::ip::{self, proto, Family, IpView};
use crate::sa::{Cipher, Mode, Sa};
use crate::suite::ICV_LEN;
use aws_lc_rs::hmac;
use std::net::IpAddr;
use std::ops::Range;

/// AH fixed part: next header, payload length, reserved, SPI, sequence number.
const AH_FIXED_LEN: usize = 12;

/// AH length for a family: IPv4 needs 32-bit alignment (28 bytes), IPv6 64-bit (28 + 4 padding).
fn ah_len(family: Family) -> usize {
    match family {
        Family::V4 => AH_FIXED_LEN + ICV_LEN,
        Family::V6 => AH_FIXED_LEN + ICV_LEN + 4,
    }
}

/// Where the AH header of a received packet is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AhLocation {
    pub outer: IpView,
    pub ah_at: usize,
    pub payload_at: usize,
    pub next_header: u8,
}

/// Finds and sanity-checks the AH header of an IP packet.
pub(crate) fn locate(packet: &[u8]) -> Result<AhLocation, EspError> {
    let outer = ip::parse(packet)?;
    if outer.proto != proto::AH {
        return Err(EspError::NotIpsec {
            expected: "AH",
            found: "another IP protocol",
        });
    }
    let pkt = &packet[..outer.total_len];
    let ah_at = outer.header_len;
    ip::need(pkt, "AH header", ah_at, AH_FIXED_LEN)?;
    let len = (usize::from(pkt[ah_at + 1]) + 2) * 4;
    if len != ah_len(outer.family) {
        return Err(EspError::Malformed {
            field: "AH payload length",
            offset: ah_at + 1,
            reason: "does not fit HMAC-SHA-256-128 for this IP version",
        });
    }
    ip::need(pkt, "AH header", ah_at, len)?;
    Ok(AhLocation {
        outer,
        ah_at,
        payload_at: ah_at + len,
        next_header: pkt[ah_at],
    })
}

/// Copies the IP header (without IPv6 extension headers) with the mutable fields zeroed.
fn zeroed_header(pkt: &[u8], view: &IpView, out: &mut [u8; 60]) -> Result<usize, EspError> {
    match view.family {
        Family::V4 => {
            let len = view.header_len;
            out[..len].copy_from_slice(&pkt[..len]);
            out[1] = 0; // TOS
            out[6..9].fill(0); // flags, fragment offset, TTL
            out[10..12].fill(0); // checksum
            zero_mutable_ipv4_options(&mut out[20..len]);
            Ok(len)
        }
        Family::V6 => {
            if view.header_len != 40 {
                return Err(EspError::Malformed {
                    field: "IPv6 extension headers",
                    offset: 40,
                    reason: "AH after IPv6 extension headers is not supported",
                });
            }
            out[..40].copy_from_slice(&pkt[..40]);
            out[0] &= 0xf0; // traffic class (high nibble of it) ...
            out[1..4].fill(0); // ... and flow label
            out[7] = 0; // hop limit
            Ok(40)
        }
    }
}

/// RFC 4302 appendix A.1: only EOL, NOP, security, extended security, commercial security,
/// router alert and SDBM options are immutable; every other option is zeroed whole.
fn zero_mutable_ipv4_options(options: &mut [u8]) {
    let mut at = 0;
    while at < options.len() {
        let kind = options[at];
        match kind {
            0 => return,
            1 => at += 1,
            _ => {
                let len = options
                    .get(at + 1)
                    .map_or(options.len() - at, |&l| usize::from(l).max(2))
                    .min(options.len() - at);
                if !matches!(kind, 130 | 133 | 134 | 148 | 149) {
                    options[at..at + len].fill(0);
                }
                at += len;
            }
        }
    }
}

/// ICV over the zeroed IP header, the AH header with a zero ICV, the payload, and the high ESN bits.
fn ah_icv(
    key: &hmac::Key,
    pkt: &[u8],
    view: &IpView,
    ah_at: usize,
    seq: u64,
    esn: bool,
) -> Result<[u8; ICV_LEN], EspError> {
    let mut header = [0u8; 60];
    let header_len = zeroed_header(pkt, view, &mut header)?;
    let len = ah_len(view.family);
    let zero_icv = [0u8; ICV_LEN + 4];
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&header[..header_len]);
    ctx.update(&pkt[ah_at..ah_at + AH_FIXED_LEN]);
    ctx.update(&zero_icv[..len - AH_FIXED_LEN]);
    ctx.update(&pkt[ah_at + len..view.total_len]);
    if esn {
        ctx.update(&((seq >> 32) as u32).to_be_bytes());
    }
    let tag = ctx.sign();
    let mut icv = [0u8; ICV_LEN];
    icv.copy_from_slice(&tag.as_ref()[..ICV_LEN]);
    Ok(icv)
}

impl Sa {
    fn ah_key(&self) -> Result<&hmac::Key, EspError> {
        match &self.cipher {
            Cipher::Null { mac } => Ok(mac.as_ref()),
            _ => Err(EspError::NotIpsec {
                expected: "ESP",
                found: "AH call on an SA with an encrypting suite",
            }),
        }
    }

    /// Builds an AH packet in place; returns its range and the protected payload length.
    pub(crate) fn ah_seal(
        &self,
        buf: &mut [u8],
        packet: Range<usize>,
        seq: u64,
    ) -> Result<(Range<usize>, usize), EspError> {
        let inner = ip::parse(&buf[packet.clone()])?;
        let inner_end = packet.start + inner.total_len;
        let (outer_family, outer_len, next_header) = match self.params.mode {
            Mode::Transport => (inner.family, inner.header_len, inner.proto),
            Mode::Tunnel => match self.params.tunnel.map(|t| t.src) {
                Some(IpAddr::V6(_)) => (Family::V6, 40, tunnel_next(inner.family)),
                _ => (Family::V4, 20, tunnel_next(inner.family)),
            },
        };
        let len = ah_len(outer_family);
        let payload_start = match self.params.mode {
            Mode::Transport => packet.start + inner.header_len,
            Mode::Tunnel => packet.start,
        };
        let front = outer_len + len;
        if payload_start < front {
            return Err(EspError::NoHeadroom {
                needed: front - (payload_start - packet.start),
                available: packet.start,
            });
        }
        let start = payload_start - front;
        if inner_end - start > usize::from(u16::MAX) {
            return Err(EspError::TooLarge(inner_end - start));
        }
        match self.params.mode {
            Mode::Transport => buf.copy_within(packet.start..payload_start, start),
            Mode::Tunnel => self.write_ah_tunnel_header(buf, start, payload_start, seq),
        }
        let out = &mut buf[start..inner_end];
        let total = out.len();
        let proto_at = match self.params.mode {
            Mode::Transport => inner.proto_at,
            Mode::Tunnel if outer_family == Family::V4 => 9,
            Mode::Tunnel => 6,
        };
        out[proto_at] = proto::AH;
        ip::set_total_len(out, outer_family, total);
        let ah_at = outer_len;
        out[ah_at] = next_header;
        out[ah_at + 1] = (len / 4 - 2) as u8;
        out[ah_at + 2..ah_at + 4].fill(0);
        out[ah_at + 4..ah_at + 8].copy_from_slice(&self.params.spi.to_be_bytes());
        out[ah_at + 8..ah_at + 12].copy_from_slice(&(seq as u32).to_be_bytes());
        out[ah_at + AH_FIXED_LEN..ah_at + len].fill(0);
        let view = ip::parse(out)?;
        let icv = ah_icv(self.ah_key()?, out, &view, ah_at, seq, self.params.esn)?;
        out[ah_at + AH_FIXED_LEN..ah_at + AH_FIXED_LEN + ICV_LEN].copy_from_slice(&icv);
        Ok((start..inner_end, inner_end - payload_start))
    }

    fn write_ah_tunnel_header(&self, buf: &mut [u8], start: usize, inner_at: usize, seq: u64) {
        let inner = &buf[inner_at..];
        let traffic_class = match inner[0] >> 4 {
            4 => inner[1],
            _ => (inner[0] << 4) | (inner[1] >> 4),
        };
        let Some(t) = self.params.tunnel else { return };
        let out = &mut buf[start..];
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
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out[..40].fill(0);
                out[0] = 0x60 | (traffic_class >> 4);
                out[1] = traffic_class << 4;
                out[7] = 64;
                out[8..24].copy_from_slice(&s.octets());
                out[24..40].copy_from_slice(&d.octets());
            }
            _ => {}
        }
    }

    /// Verifies and removes AH in place.
    pub(crate) fn ah_open(
        &mut self,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<crate::esp::Opened, EspError> {
        let base = packet.start;
        let loc = locate(&buf[packet.clone()])?;
        let pkt = &buf[base..base + loc.outer.total_len];
        let seq = self.check_spi_and_replay(pkt, loc.ah_at + 4)?;
        let icv = ah_icv(
            self.ah_key()?,
            pkt,
            &loc.outer,
            loc.ah_at,
            seq,
            self.params.esn,
        )?;
        let icv_at = loc.ah_at + AH_FIXED_LEN;
        if !constant_time_eq(&icv, &pkt[icv_at..icv_at + ICV_LEN]) {
            return Err(EspError::Authentication { seq });
        }
        self.record_seq(seq)?;
        let payload = base + loc.payload_at..base + loc.outer.total_len;
        let range = match self.params.mode {
            Mode::Tunnel => {
                let view = ip::parse(&buf[payload.clone()])?;
                payload.start..payload.start + view.total_len
            }
            Mode::Transport => {
                let header_len = loc.outer.header_len;
                let start = payload.start - header_len;
                buf.copy_within(base..base + header_len, start);
                let out = &mut buf[start..payload.end];
                out[loc.outer.proto_at] = loc.next_header;
                let total = out.len();
                ip::set_total_len(out, loc.outer.family, total);
                start..payload.end
            }
        };
        Ok(crate::esp::Opened {
            packet: range,
            seq,
            next_header: loc.next_header,
            udp_src_port: None,
        })
    }
}

fn tunnel_next(family: Family) -> u8 {
    match family {
        Family::V4 => proto::IPV4,
        Family::V6 => proto::IPV6,
    }
}
