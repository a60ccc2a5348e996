//! The client side of the control socket, as `dvipsecctl` uses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{
    ControlError, Request, RequestEnvelope, Response, ResponseEnvelope, MAX_LINE, PROTOCOL_VERSION,
};

/// How long to wait for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached or broke.
    #[error("control socket {path}: {action}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not a response of this protocol.
    #[error("control socket {path}: unreadable answer: {reason}")]
    BadAnswer {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The box answered with an error.
    #[error("the box refused: {0}")]
    Refused(#[from] ControlError),
}

/// A connection to one box's control socket.
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<ControlClient, ClientError> {
        let io = |action| {
            let path = path.to_path_buf();
            move |source| ClientError::Io {
                path,
                action,
                source,
            }
        };
        let stream = UnixStream::connect(path).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(io("set timeout"))?;
        let writer = stream.try_clone().map_err(io("clone"))?;
        Ok(ControlClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `request` and waits for the answer.
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let envelope = RequestEnvelope {
            version: PROTOCOL_VERSION,
            request,
        };
        let mut line = serde_json::to_vec(&envelope).map_err(|e| self.bad(e.to_string()))?;
        line.push(b'\n');
        self.send_line(&line)?;
        let answer = self.read_line()?;
        let envelope: ResponseEnvelope =
            serde_json::from_slice(&answer).map_err(|e| self.bad(e.to_string()))?;
        if envelope.version != PROTOCOL_VERSION {
            return Err(self.bad(format!(
                "protocol version {} (this client speaks {PROTOCOL_VERSION})",
                envelope.version
            )));
        }
        Ok(envelope.result?)
    }

    /// Sends a raw line (for tests of the server's error handling) and returns the raw answer.
    pub fn send_raw(&mut self, line: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.send_line(line)?;
        self.read_line()
    }

    fn send_line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        self.writer
            .write_all(line)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                action: "send",
                source,
            })
    }

    fn read_line(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut answer = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut answer)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                action: "receive",
                source,
            })?;
        if answer.last() != Some(&b'\n') {
            return Err(self.bad("the box closed the connection without an answer".into()));
        }
        Ok(answer)
    }

    fn bad(&self, reason: String) -> ClientError {
        ClientError::BadAnswer {
            path: self.path.clone(),
            reason,
        }
    }
}
