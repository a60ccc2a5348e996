//! XCF frames over a byte stream (TCP, or TLS over TCP): the frame splitter is sans-io, the
//! read and write helpers work on any `Read + Write`.

use std::io::{ErrorKind, Read, Write};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::error::WireError;
use crate::wire::frame_len;

/// Why a stream stopped carrying frames.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("XCF stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("XCF stream carries a bad frame header: {0}")]
    Wire(#[from] WireError),
    #[error("the peer closed the XCF stream")]
    Closed,
}

/// Appends `bytes` to `buf`, growing it by hand so that the old allocation (which may hold
/// keys of an SA_INSTALL) is zeroized when dropped rather than left behind by a reallocation.
pub fn extend_zeroizing(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(bytes);
}

/// Splits a byte stream into frames. A bad header poisons the stream (there is no way to
/// find the next frame boundary), so the connection must be closed.
#[derive(Default)]
pub struct FrameSplitter {
    buf: Zeroizing<Vec<u8>>,
}

impl FrameSplitter {
    pub fn new() -> FrameSplitter {
        FrameSplitter::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        extend_zeroizing(&mut self.buf, bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, WireError> {
        let Some(len) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        let rest = Zeroizing::new(self.buf[len..].to_vec());
        self.buf.truncate(len);
        let frame = std::mem::replace(&mut self.buf, rest);
        Ok(Some(frame))
    }
}

/// Reads what is available (a read timeout or a non-blocking stream ends the wait) and returns
/// the next whole frame, if any.
pub fn read_frame<S: Read>(
    stream: &mut S,
    splitter: &mut FrameSplitter,
) -> Result<Option<Zeroizing<Vec<u8>>>, StreamError> {
    if let Some(frame) = splitter.next_frame()? {
        return Ok(Some(frame));
    }
    let mut chunk = Zeroizing::new([0u8; 4096]);
    match stream.read(chunk.as_mut()) {
        Ok(0) => Err(StreamError::Closed),
        Ok(n) => {
            splitter.push(&chunk[..n]);
            Ok(splitter.next_frame()?)
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// How often a write that would block is tried again before the stream is given up.
const WRITE_RETRIES: u32 = 10_000;

/// Writes one frame. A TLS stream may still be in its handshake, whose reads can time out:
/// such a write is tried again (a bounded number of times).
pub fn write_frame<S: Write>(stream: &mut S, frame: &[u8]) -> Result<(), StreamError> {
    let mut written = 0;
    let mut retries = 0;
    while written < frame.len() {
        match stream.write(&frame[written..]) {
            Ok(0) => return Err(StreamError::Closed),
            Ok(n) => written += n,
            Err(err) if retryable(&err) && retries < WRITE_RETRIES => retries += 1,
            Err(err) => return Err(err.into()),
        }
    }
    loop {
        match stream.flush() {
            Ok(()) => return Ok(()),
            Err(err) if retryable(&err) && retries < WRITE_RETRIES => retries += 1,
            Err(err) => return Err(err.into()),
        }
    }
}

fn retryable(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;

    fn heartbeat(from_incarnation: u64) -> Vec<u8> {
        crate::wire_tests::heartbeat_between(from_incarnation, 2)
    }

    #[test]
    fn frames_arriving_byte_by_byte_come_out_whole_and_in_order() {
        let stream: Vec<u8> = [heartbeat(1), heartbeat(2), heartbeat(3)].concat();
        let mut splitter = FrameSplitter::new();
        let mut frames = Vec::new();
        for byte in &stream {
            splitter.push(std::slice::from_ref(byte));
            while let Some(frame) = splitter.next_frame().unwrap() {
                frames.push(Frame::decode(&frame).unwrap().from_incarnation);
            }
        }
        assert_eq!(frames, [1, 2, 3]);
    }

    #[test]
    fn a_bad_version_in_the_stream_is_an_error() {
        let mut bytes = heartbeat(1);
        bytes[0] = 9;
        let mut splitter = FrameSplitter::new();
        splitter.push(&bytes);
        assert!(matches!(
            splitter.next_frame(),
            Err(WireError::UnsupportedVersion { version: 9, .. })
        ));
    }

    #[test]
    fn read_frame_reports_a_closed_stream() {
        let mut empty: &[u8] = &[];
        let mut splitter = FrameSplitter::new();
        assert!(matches!(
            read_frame(&mut empty, &mut splitter),
            Err(StreamError::Closed)
        ));
        let bytes = heartbeat(4);
        let mut reader: &[u8] = &bytes;
        let frame = read_frame(&mut reader, &mut splitter).unwrap().unwrap();
        assert_eq!(&frame[..], &bytes[..]);
    }
}
