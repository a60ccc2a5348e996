//! The client of the networked CF: the same [`SequenceFacility`] as the region, over TCP.
//!
//! A client works in one epoch and remembers the server's incarnation from its first contact.
//! When the connection breaks, the call fails and the next call reconnects; if a different
//! incarnation answers, every call fails with [`CfError::StateLost`]: the distributor must
//! rekey, never resume. Calls are not retried automatically: a lost reply may have consumed
//! numbers or marked a replay bit, and both are safe to lose but not to repeat blindly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::CfError;
use crate::facility::{
    Direction, Lifesize, ReplayVerdict, SeqRange, SequenceFacility, SlotId, SlotKey,
};
use crate::proto::{self, DecodeError, Op, OpResult, Request, ServerStats, MAX_OPS};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a CF server.
#[derive(Debug)]
pub struct NetClient {
    server: SocketAddr,
    epoch: u64,
    incarnation: u64,
    stream: Mutex<Option<TcpStream>>,
}

fn connect(server: SocketAddr) -> Result<TcpStream, CfError> {
    let context = || format!("connecting to CF server {server}");
    let stream =
        TcpStream::connect_timeout(&server, IO_TIMEOUT).map_err(|e| CfError::io(context(), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| CfError::io(context(), e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| CfError::io(context(), e))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| CfError::io(context(), e))?;
    Ok(stream)
}

fn exchange(
    stream: &mut TcpStream,
    server: SocketAddr,
    request: &Request,
) -> Result<Vec<OpResult>, CfError> {
    let io = |e| CfError::io(format!("talking to CF server {server}"), e);
    stream
        .write_all(&proto::encode_request(request))
        .map_err(io)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(io)?;
    let mut body = vec![0u8; proto::frame_length(prefix)?];
    stream.read_exact(&mut body).map_err(io)?;
    let results = proto::decode_response(&body)?;
    if results.len() != request.ops.len() {
        return Err(CfError::Protocol(DecodeError::BadValue {
            offset: 0,
            what: "result count differs from the op count",
        }));
    }
    Ok(results)
}

fn hello(stream: &mut TcpStream, server: SocketAddr) -> Result<(u64, u64), CfError> {
    let request = Request {
        epoch: 0,
        ops: vec![Op::Hello],
    };
    match exchange(stream, server, &request)?.first() {
        Some(OpResult::Hello { epoch, incarnation }) => Ok((*epoch, *incarnation)),
        _ => Err(unexpected()),
    }
}

fn unexpected() -> CfError {
    CfError::Protocol(DecodeError::BadValue {
        offset: 0,
        what: "unexpected result for the operation",
    })
}

impl NetClient {
    /// Connects in the `epoch` and `incarnation` the distributor handed out.
    pub fn connect(server: SocketAddr, epoch: u64, incarnation: u64) -> Result<Self, CfError> {
        let client = NetClient {
            server,
            epoch,
            incarnation,
            stream: Mutex::new(None),
        };
        drop(client.connected()?);
        Ok(client)
    }

    /// Connects and adopts the server's current epoch and incarnation (for the distributor at
    /// start-up and for operator tools).
    pub fn connect_adopting(server: SocketAddr) -> Result<Self, CfError> {
        let mut stream = connect(server)?;
        let (epoch, incarnation) = hello(&mut stream, server)?;
        Ok(NetClient {
            server,
            epoch,
            incarnation,
            stream: Mutex::new(Some(stream)),
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The live connection, reconnecting (and checking the incarnation) if needed.
    fn connected(&self) -> Result<MutexGuard<'_, Option<TcpStream>>, CfError> {
        let mut guard = self
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            let mut stream = connect(self.server)?;
            let (_, incarnation) = hello(&mut stream, self.server)?;
            if incarnation != self.incarnation {
                return Err(CfError::StateLost {
                    expected: self.incarnation,
                    found: incarnation,
                });
            }
            *guard = Some(stream);
        }
        Ok(guard)
    }

    /// Sends up to [`MAX_OPS`] operations in one round trip; one result per operation.
    pub fn call(&self, ops: &[Op]) -> Result<Vec<OpResult>, CfError> {
        if ops.len() > MAX_OPS {
            return Err(CfError::InvalidArgument(
                "more operations than one request carries",
            ));
        }
        let request = Request {
            epoch: self.epoch,
            ops: ops.to_vec(),
        };
        let mut guard = self.connected()?;
        let Some(stream) = guard.as_mut() else {
            return Err(unexpected());
        };
        let outcome = exchange(stream, self.server, &request);
        if outcome.is_err() {
            *guard = None;
        }
        outcome
    }

    fn call_one(&self, op: Op) -> Result<OpResult, CfError> {
        let result = self.call(&[op])?.pop().ok_or_else(unexpected)?;
        self.check(op, result)
    }

    /// Turns error results into errors.
    pub fn check(&self, op: Op, result: OpResult) -> Result<OpResult, CfError> {
        let slot = match op {
            Op::Release { slot }
            | Op::FetchAdd { slot, .. }
            | Op::ReplayCheck { slot, .. }
            | Op::ReplayCheckAndSet { slot, .. }
            | Op::LifesizeAdd { slot, .. }
            | Op::LifesizeRead { slot } => slot.0,
            _ => 0,
        };
        match result {
            OpResult::Fenced { current } => Err(CfError::Fenced {
                caller: self.epoch,
                current,
            }),
            OpResult::UnknownSlot => Err(CfError::UnknownSlot(slot)),
            OpResult::Exhausted => Err(CfError::Exhausted(slot)),
            OpResult::Invalid => Err(CfError::InvalidArgument(
                "the CF server rejected the operation",
            )),
            OpResult::StorageFailed => Err(CfError::StorageFailed),
            ok => Ok(ok),
        }
    }

    /// Allocates a slot for an SA (the distributor's job).
    pub fn allocate(&self, key: SlotKey, window: u32) -> Result<SlotId, CfError> {
        match self.call_one(Op::Allocate { key, window })? {
            OpResult::Slot(slot) => Ok(slot),
            _ => Err(unexpected()),
        }
    }

    /// Finds the slot of an SA.
    pub fn lookup(&self, key: SlotKey) -> Result<SlotId, CfError> {
        match self.call_one(Op::Lookup { key })? {
            OpResult::Slot(slot) => Ok(slot),
            _ => Err(unexpected()),
        }
    }

    /// Releases a slot.
    pub fn release(&self, slot: SlotId) -> Result<(), CfError> {
        self.call_one(Op::Release { slot }).map(drop)
    }

    /// Moves the server to `new_epoch`, fencing everyone in older epochs (this client included).
    pub fn bump_epoch(&self, new_epoch: u64) -> Result<(), CfError> {
        self.call_one(Op::BumpEpoch { new_epoch }).map(drop)
    }

    /// The server's counters.
    pub fn stats(&self) -> Result<ServerStats, CfError> {
        match self.call_one(Op::Stats)? {
            OpResult::Stats(stats) => Ok(stats),
            _ => Err(unexpected()),
        }
    }

    /// Takes numbers for several slots in one round trip.
    pub fn fetch_add_many(&self, takes: &[(SlotId, u32)]) -> Result<Vec<SeqRange>, CfError> {
        let ops: Vec<Op> = takes
            .iter()
            .map(|(slot, count)| Op::FetchAdd {
                slot: *slot,
                count: *count,
            })
            .collect();
        let results = self.call(&ops)?;
        ops.into_iter()
            .zip(results)
            .map(|(op, result)| match self.check(op, result)? {
                OpResult::Range(range) => Ok(range),
                _ => Err(unexpected()),
            })
            .collect()
    }
}

impl SequenceFacility for NetClient {
    fn fetch_add(&self, slot: SlotId, n: u32) -> Result<SeqRange, CfError> {
        if n == 0 {
            return Err(CfError::InvalidArgument("fetch_add of zero numbers"));
        }
        match self.call_one(Op::FetchAdd { slot, count: n })? {
            OpResult::Range(range) if range.count == n => Ok(range),
            _ => Err(unexpected()),
        }
    }

    fn replay_check(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        match self.call_one(Op::ReplayCheck { slot, seq })? {
            OpResult::Verdict(verdict) => Ok(verdict),
            _ => Err(unexpected()),
        }
    }

    fn replay_check_and_set(&self, slot: SlotId, seq: u64) -> Result<ReplayVerdict, CfError> {
        match self.call_one(Op::ReplayCheckAndSet { slot, seq })? {
            OpResult::Verdict(verdict) => Ok(verdict),
            _ => Err(unexpected()),
        }
    }

    fn lifesize_add(
        &self,
        slot: SlotId,
        direction: Direction,
        bytes: u64,
        packets: u64,
    ) -> Result<(), CfError> {
        self.call_one(Op::LifesizeAdd {
            slot,
            direction,
            bytes,
            packets,
        })
        .map(drop)
    }

    fn lifesize_read(&self, slot: SlotId) -> Result<Lifesize, CfError> {
        match self.call_one(Op::LifesizeRead { slot })? {
            OpResult::Lifesize(life) => Ok(life),
            _ => Err(unexpected()),
        }
    }
}
