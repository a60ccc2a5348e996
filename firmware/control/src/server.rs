//! The control socket: a Unix stream socket, owner-only (0600), served by one thread. Each
//! line is a request; each gets one response line. Bad lines get an error response.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::handler::{dispatch, ControlHandler};
use crate::protocol::{parse_request, ControlError, ResponseEnvelope, MAX_LINE, PROTOCOL_VERSION};

/// How long a client may stay silent before the server hangs up.
const CLIENT_IDLE: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding, chmod or rename failed.
    #[error("control socket {path}: {action}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running control socket. Dropping it stops the thread and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io {
        path,
        action,
        source,
    }
}

/// Binds under a temporary name, restricts it to the owner, then renames it into place, so the
/// socket is never reachable with wider permissions.
fn bind_owner_only(path: &Path) -> Result<UnixListener, ServerError> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(io_error(path, "bind"))?;
    let publish = || -> Result<(), ServerError> {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(path, "chmod 0600"))?;
        std::fs::rename(&staging, path).map_err(io_error(path, "rename into place"))
    };
    if let Err(error) = publish() {
        let _ = std::fs::remove_file(&staging);
        return Err(error);
    }
    listener
        .set_nonblocking(true)
        .map_err(io_error(path, "set non-blocking"))?;
    Ok(listener)
}

impl ControlServer {
    /// Binds the socket at `path` (replacing a stale one) and answers from `handler` on one thread.
    pub fn start(
        path: &Path,
        handler: Box<dyn ControlHandler>,
    ) -> Result<ControlServer, ServerError> {
        let listener = bind_owner_only(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, handler, &thread_stop))
            .map_err(io_error(path, "spawn the control thread"))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, mut handler: Box<dyn ControlHandler>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => serve_client(stream, handler.as_mut(), stop),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL),
            Err(_) => std::thread::sleep(STOP_POLL),
        }
    }
}

/// Answers the requests of one client until it hangs up, goes idle or breaks the framing.
fn serve_client(stream: UnixStream, handler: &mut dyn ControlHandler, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(CLIENT_IDLE)).is_err()
    {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long =
            line.len() > MAX_LINE || line.last() != Some(&b'\n') && line.len() >= MAX_LINE;
        let result = if too_long {
            Err(ControlError::TooLong { limit: MAX_LINE })
        } else {
            parse_request(&line).and_then(|request| dispatch(handler, request))
        };
        if write_response(&mut writer, result).is_err() || too_long {
            return;
        }
    }
}

fn write_response(
    writer: &mut UnixStream,
    result: Result<crate::protocol::Response, ControlError>,
) -> std::io::Result<()> {
    let envelope = ResponseEnvelope {
        version: PROTOCOL_VERSION,
        result,
    };
    let mut text = serde_json::to_vec(&envelope).map_err(std::io::Error::other)?;
    text.push(b'\n');
    writer.write_all(&text)
}
