//! The networked CF's wire protocol, sans-io.
//!
//! Every message is a frame: a big-endian `u32` body length (at most [`MAX_FRAME`]) and the body.
//!
//! ```text
//! request body:  epoch u64 | op count u16 | ops
//! response body: result count u16 | results (one per op, in order)
//! ```
//!
//! One request carries up to [`MAX_OPS`] operations, so one round trip serves a burst (and one
//! `FetchAdd` takes up to [`MAX_TAKE`] numbers). Every integer is big-endian. An address is a
//! family byte (4 or 6) and 16 bytes (IPv4 in the first four).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::facility::{Direction, Lifesize, ReplayVerdict, SeqRange, SlotId, SlotKey};

/// Largest frame body accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Most operations in one request.
pub const MAX_OPS: usize = 1024;
/// Most numbers one `FetchAdd` takes.
pub const MAX_TAKE: u32 = 1 << 20;

/// Why a body could not be decoded, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("message ends at byte {offset}, inside a field")]
    Truncated { offset: usize },
    #[error("unknown code {code:#04x} at byte {offset}")]
    UnknownCode { offset: usize, code: u8 },
    #[error("bad value at byte {offset}: {what}")]
    BadValue { offset: usize, what: &'static str },
    #[error("{extra} bytes left over after the last field")]
    TrailingBytes { extra: usize },
    #[error("frame of {length} bytes is larger than {MAX_FRAME}")]
    Oversized { length: usize },
}

/// One operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Asks for the server's epoch and incarnation; allowed in any epoch.
    Hello,
    Allocate {
        key: SlotKey,
        window: u32,
    },
    Lookup {
        key: SlotKey,
    },
    Release {
        slot: SlotId,
    },
    FetchAdd {
        slot: SlotId,
        count: u32,
    },
    ReplayCheck {
        slot: SlotId,
        seq: u64,
    },
    ReplayCheckAndSet {
        slot: SlotId,
        seq: u64,
    },
    LifesizeAdd {
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    },
    LifesizeRead {
        slot: SlotId,
    },
    /// Server counters; allowed in any epoch.
    Stats,
    /// Moves the server to a newer epoch, fencing every client of older ones.
    BumpEpoch {
        new_epoch: u64,
    },
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub epoch: u64,
    pub ops: Vec<Op>,
}

/// Counters of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    pub requests: u64,
    pub oversized: u64,
    pub truncated: u64,
    pub malformed: u64,
}

/// The result of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Hello { epoch: u64, incarnation: u64 },
    Slot(SlotId),
    Range(SeqRange),
    Verdict(ReplayVerdict),
    Done,
    Lifesize(Lifesize),
    Stats(ServerStats),
    Epoch(u64),
    Fenced { current: u64 },
    UnknownSlot,
    Exhausted,
    Invalid,
    StorageFailed,
}

const OP_HELLO: u8 = 1;
const OP_ALLOCATE: u8 = 2;
const OP_LOOKUP: u8 = 3;
const OP_RELEASE: u8 = 4;
const OP_FETCH_ADD: u8 = 5;
const OP_REPLAY_CHECK: u8 = 6;
const OP_REPLAY_CHECK_AND_SET: u8 = 7;
const OP_LIFESIZE_ADD: u8 = 8;
const OP_LIFESIZE_READ: u8 = 9;
const OP_STATS: u8 = 10;
const OP_BUMP_EPOCH: u8 = 11;

const R_HELLO: u8 = 1;
const R_SLOT: u8 = 2;
const R_RANGE: u8 = 3;
const R_VERDICT: u8 = 4;
const R_DONE: u8 = 5;
const R_LIFESIZE: u8 = 6;
const R_STATS: u8 = 7;
const R_EPOCH: u8 = 8;
const R_FENCED: u8 = 0x80;
const R_UNKNOWN_SLOT: u8 = 0x81;
const R_EXHAUSTED: u8 = 0x82;
const R_INVALID: u8 = 0x83;
const R_STORAGE_FAILED: u8 = 0x84;

/// Reads fields from a body, remembering the offset for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self
            .offset
            .checked_add(N)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated {
                offset: self.bytes.len(),
            });
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.offset..end]);
        self.offset = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn slot(&mut self) -> Result<SlotId, DecodeError> {
        Ok(SlotId(self.u64()?))
    }

    fn key(&mut self) -> Result<SlotKey, DecodeError> {
        let at = self.offset;
        let family = self.u8()?;
        let address: [u8; 16] = self.take()?;
        let dvipa = match family {
            4 if address[4..].iter().any(|byte| *byte != 0) => {
                return Err(DecodeError::BadValue {
                    offset: at + 5,
                    what: "IPv4 address padding",
                })
            }
            4 => IpAddr::V4(Ipv4Addr::new(
                address[0], address[1], address[2], address[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(address)),
            _ => {
                return Err(DecodeError::BadValue {
                    offset: at,
                    what: "address family",
                })
            }
        };
        Ok(SlotKey {
            dvipa,
            spi: self.u32()?,
        })
    }

    fn direction(&mut self) -> Result<Direction, DecodeError> {
        let at = self.offset;
        match self.u8()? {
            0 => Ok(Direction::Inbound),
            1 => Ok(Direction::Outbound),
            _ => Err(DecodeError::BadValue {
                offset: at,
                what: "direction",
            }),
        }
    }

    fn count(&mut self, limit: usize) -> Result<usize, DecodeError> {
        let at = self.offset;
        let count = usize::from(self.u16()?);
        if count > limit {
            return Err(DecodeError::BadValue {
                offset: at,
                what: "too many entries",
            });
        }
        Ok(count)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.offset {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

fn put_key(out: &mut Vec<u8>, key: &SlotKey) {
    let mut address = [0u8; 16];
    let family = match key.dvipa {
        IpAddr::V4(v4) => {
            address[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            address = v6.octets();
            6
        }
    };
    out.push(family);
    out.extend_from_slice(&address);
    out.extend_from_slice(&key.spi.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a frame's length prefix.
pub fn frame_length(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_FRAME {
        return Err(DecodeError::Oversized { length });
    }
    Ok(length)
}

fn encode_op(out: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Hello => out.push(OP_HELLO),
        Op::Allocate { key, window } => {
            out.push(OP_ALLOCATE);
            put_key(out, key);
            out.extend_from_slice(&window.to_be_bytes());
        }
        Op::Lookup { key } => {
            out.push(OP_LOOKUP);
            put_key(out, key);
        }
        Op::Release { slot } => {
            out.push(OP_RELEASE);
            put_u64(out, slot.0);
        }
        Op::FetchAdd { slot, count } => {
            out.push(OP_FETCH_ADD);
            put_u64(out, slot.0);
            out.extend_from_slice(&count.to_be_bytes());
        }
        Op::ReplayCheck { slot, seq } | Op::ReplayCheckAndSet { slot, seq } => {
            let set = matches!(op, Op::ReplayCheckAndSet { .. });
            out.push(if set {
                OP_REPLAY_CHECK_AND_SET
            } else {
                OP_REPLAY_CHECK
            });
            put_u64(out, slot.0);
            put_u64(out, *seq);
        }
        Op::LifesizeAdd {
            slot,
            direction,
            bytes,
            packets,
        } => {
            out.push(OP_LIFESIZE_ADD);
            put_u64(out, slot.0);
            out.push(match direction {
                Direction::Inbound => 0,
                Direction::Outbound => 1,
            });
            put_u64(out, *bytes);
            put_u64(out, *packets);
        }
        Op::LifesizeRead { slot } => {
            out.push(OP_LIFESIZE_READ);
            put_u64(out, slot.0);
        }
        Op::Stats => out.push(OP_STATS),
        Op::BumpEpoch { new_epoch } => {
            out.push(OP_BUMP_EPOCH);
            put_u64(out, *new_epoch);
        }
    }
}

/// Encodes a request as a whole frame. At most [`MAX_OPS`] operations.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut body = Vec::with_capacity(10 + request.ops.len() * 21);
    put_u64(&mut body, request.epoch);
    body.extend_from_slice(&(request.ops.len() as u16).to_be_bytes());
    for op in &request.ops {
        encode_op(&mut body, op);
    }
    frame(body)
}

fn decode_op(reader: &mut Reader<'_>) -> Result<Op, DecodeError> {
    let at = reader.offset;
    let op = match reader.u8()? {
        OP_HELLO => Op::Hello,
        OP_ALLOCATE => Op::Allocate {
            key: reader.key()?,
            window: reader.u32()?,
        },
        OP_LOOKUP => Op::Lookup { key: reader.key()? },
        OP_RELEASE => Op::Release {
            slot: reader.slot()?,
        },
        OP_FETCH_ADD => Op::FetchAdd {
            slot: reader.slot()?,
            count: reader.u32()?,
        },
        OP_REPLAY_CHECK => Op::ReplayCheck {
            slot: reader.slot()?,
            seq: reader.u64()?,
        },
        OP_REPLAY_CHECK_AND_SET => Op::ReplayCheckAndSet {
            slot: reader.slot()?,
            seq: reader.u64()?,
        },
        OP_LIFESIZE_ADD => Op::LifesizeAdd {
            slot: reader.slot()?,
            direction: reader.direction()?,
            bytes: reader.u64()?,
            packets: reader.u64()?,
        },
        OP_LIFESIZE_READ => Op::LifesizeRead {
            slot: reader.slot()?,
        },
        OP_STATS => Op::Stats,
        OP_BUMP_EPOCH => Op::BumpEpoch {
            new_epoch: reader.u64()?,
        },
        code => return Err(DecodeError::UnknownCode { offset: at, code }),
    };
    Ok(op)
}

/// Decodes a request body (the frame without its length prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    if body.len() > MAX_FRAME {
        return Err(DecodeError::Oversized { length: body.len() });
    }
    let mut reader = Reader::new(body);
    let epoch = reader.u64()?;
    let count = reader.count(MAX_OPS)?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(decode_op(&mut reader)?);
    }
    reader.finish()?;
    Ok(Request { epoch, ops })
}

fn encode_verdict(verdict: ReplayVerdict) -> u8 {
    match verdict {
        ReplayVerdict::Accepted => 0,
        ReplayVerdict::Replayed => 1,
        ReplayVerdict::TooOld => 2,
        ReplayVerdict::Zero => 3,
    }
}

fn encode_result(out: &mut Vec<u8>, result: &OpResult) {
    match result {
        OpResult::Hello { epoch, incarnation } => {
            out.push(R_HELLO);
            put_u64(out, *epoch);
            put_u64(out, *incarnation);
        }
        OpResult::Slot(slot) => {
            out.push(R_SLOT);
            put_u64(out, slot.0);
        }
        OpResult::Range(range) => {
            out.push(R_RANGE);
            put_u64(out, range.first);
            out.extend_from_slice(&range.count.to_be_bytes());
        }
        OpResult::Verdict(verdict) => out.extend_from_slice(&[R_VERDICT, encode_verdict(*verdict)]),
        OpResult::Done => out.push(R_DONE),
        OpResult::Lifesize(life) => {
            out.push(R_LIFESIZE);
            for value in [
                life.bytes_in,
                life.packets_in,
                life.bytes_out,
                life.packets_out,
            ] {
                put_u64(out, value);
            }
        }
        OpResult::Stats(stats) => {
            out.push(R_STATS);
            for value in [
                stats.requests,
                stats.oversized,
                stats.truncated,
                stats.malformed,
            ] {
                put_u64(out, value);
            }
        }
        OpResult::Epoch(epoch) => {
            out.push(R_EPOCH);
            put_u64(out, *epoch);
        }
        OpResult::Fenced { current } => {
            out.push(R_FENCED);
            put_u64(out, *current);
        }
        OpResult::UnknownSlot => out.push(R_UNKNOWN_SLOT),
        OpResult::Exhausted => out.push(R_EXHAUSTED),
        OpResult::Invalid => out.push(R_INVALID),
        OpResult::StorageFailed => out.push(R_STORAGE_FAILED),
    }
}

/// Encodes a response as a whole frame.
pub fn encode_response(results: &[OpResult]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + results.len() * 17);
    body.extend_from_slice(&(results.len() as u16).to_be_bytes());
    for result in results {
        encode_result(&mut body, result);
    }
    frame(body)
}

fn decode_verdict(reader: &mut Reader<'_>) -> Result<ReplayVerdict, DecodeError> {
    let at = reader.offset;
    match reader.u8()? {
        0 => Ok(ReplayVerdict::Accepted),
        1 => Ok(ReplayVerdict::Replayed),
        2 => Ok(ReplayVerdict::TooOld),
        3 => Ok(ReplayVerdict::Zero),
        _ => Err(DecodeError::BadValue {
            offset: at,
            what: "replay verdict",
        }),
    }
}

fn decode_result(reader: &mut Reader<'_>) -> Result<OpResult, DecodeError> {
    let at = reader.offset;
    let result = match reader.u8()? {
        R_HELLO => OpResult::Hello {
            epoch: reader.u64()?,
            incarnation: reader.u64()?,
        },
        R_SLOT => OpResult::Slot(reader.slot()?),
        R_RANGE => OpResult::Range(SeqRange {
            first: reader.u64()?,
            count: reader.u32()?,
        }),
        R_VERDICT => OpResult::Verdict(decode_verdict(reader)?),
        R_DONE => OpResult::Done,
        R_LIFESIZE => OpResult::Lifesize(Lifesize {
            bytes_in: reader.u64()?,
            packets_in: reader.u64()?,
            bytes_out: reader.u64()?,
            packets_out: reader.u64()?,
        }),
        R_STATS => OpResult::Stats(ServerStats {
            requests: reader.u64()?,
            oversized: reader.u64()?,
            truncated: reader.u64()?,
            malformed: reader.u64()?,
        }),
        R_EPOCH => OpResult::Epoch(reader.u64()?),
        R_FENCED => OpResult::Fenced {
            current: reader.u64()?,
        },
        R_UNKNOWN_SLOT => OpResult::UnknownSlot,
        R_EXHAUSTED => OpResult::Exhausted,
        R_INVALID => OpResult::Invalid,
        R_STORAGE_FAILED => OpResult::StorageFailed,
        code => return Err(DecodeError::UnknownCode { offset: at, code }),
    };
    Ok(result)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<Vec<OpResult>, DecodeError> {
    let mut reader = Reader::new(body);
    let count = reader.count(MAX_OPS)?;
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        results.push(decode_result(&mut reader)?);
    }
    reader.finish()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SlotKey {
        SlotKey {
            dvipa: "2001:db8::1".parse().unwrap(),
            spi: 0xdead_beef,
        }
    }

    #[test]
    fn request_round_trips_and_layout_is_fixed() {
        let request = Request {
            epoch: 7,
            ops: vec![Op::FetchAdd {
                slot: SlotId(3),
                count: 32,
            }],
        };
        let bytes = encode_request(&request);
        // length 23 | epoch 7 | one op | opcode 5 | slot 3 | count 32
        let expected: Vec<u8> = [
            &[0, 0, 0, 23][..],
            &7u64.to_be_bytes(),
            &[0, 1, 5],
            &3u64.to_be_bytes(),
            &32u32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(decode_request(&bytes[4..]).unwrap(), request);
    }

    #[test]
    fn every_op_round_trips() {
        let ops = vec![
            Op::Hello,
            Op::Allocate {
                key: key(),
                window: 128,
            },
            Op::Lookup {
                key: SlotKey {
                    dvipa: "10.1.2.3".parse().unwrap(),
                    spi: 9,
                },
            },
            Op::Release { slot: SlotId(1) },
            Op::FetchAdd {
                slot: SlotId(1),
                count: 1,
            },
            Op::ReplayCheck {
                slot: SlotId(1),
                seq: 5,
            },
            Op::ReplayCheckAndSet {
                slot: SlotId(1),
                seq: 6,
            },
            Op::LifesizeAdd {
                slot: SlotId(1),
                direction: Direction::Outbound,
                bytes: 1500,
                packets: 1,
            },
            Op::LifesizeRead { slot: SlotId(1) },
            Op::Stats,
            Op::BumpEpoch { new_epoch: 9 },
        ];
        let request = Request { epoch: 1, ops };
        assert_eq!(
            decode_request(&encode_request(&request)[4..]).unwrap(),
            request
        );
    }

    #[test]
    fn bad_bodies_name_their_location() {
        let good = encode_request(&Request {
            epoch: 1,
            ops: vec![Op::Allocate {
                key: key(),
                window: 64,
            }],
        });
        let body = &good[4..];
        assert_eq!(
            decode_request(&body[..body.len() - 1]),
            Err(DecodeError::Truncated {
                offset: body.len() - 1
            })
        );
        let mut bad_family = body.to_vec();
        bad_family[11] = 5;
        assert_eq!(
            decode_request(&bad_family),
            Err(DecodeError::BadValue {
                offset: 11,
                what: "address family"
            })
        );
        let mut bad_code = body.to_vec();
        bad_code[10] = 0xee;
        assert_eq!(
            decode_request(&bad_code),
            Err(DecodeError::UnknownCode {
                offset: 10,
                code: 0xee
            })
        );
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert_eq!(
            decode_request(&trailing),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            frame_length(70_000u32.to_be_bytes()),
            Err(DecodeError::Oversized { length: 70_000 })
        );
    }

    #[test]
    fn ipv4_padding_must_be_zero() {
        let key = SlotKey {
            dvipa: "192.0.2.1".parse().unwrap(),
            spi: 1,
        };
        let good = encode_request(&Request {
            epoch: 1,
            ops: vec![Op::Lookup { key }],
        });
        let mut padded = good[4..].to_vec();
        padded[18] = 2;
        assert_eq!(
            decode_request(&padded),
            Err(DecodeError::BadValue {
                offset: 16,
                what: "IPv4 address padding"
            })
        );
    }

    #[test]
    fn results_round_trip() {
        let results = vec![
            OpResult::Hello {
                epoch: 1,
                incarnation: 2,
            },
            OpResult::Range(SeqRange {
                first: 10,
                count: 4,
            }),
            OpResult::Verdict(ReplayVerdict::TooOld),
            OpResult::Fenced { current: 3 },
            OpResult::Stats(ServerStats {
                requests: 1,
                oversized: 2,
                truncated: 3,
                malformed: 4,
            }),
            OpResult::StorageFailed,
        ];
        assert_eq!(
            decode_response(&encode_response(&results)[4..]).unwrap(),
            results
        );
    }
}
