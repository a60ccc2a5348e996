//! The box's control socket (at the node's `control.socket`) and Prometheus endpoint (at its
//! `metrics.listen`, if set). Their threads hand every request to the box's loop through a
//! [`Relay`]; the loop answers them between rounds from its live state ([`super::answers`]), so
//! an answer is the box as it is at that moment and the loop never waits on a client.
//!
//! Dropping [`ControlSockets`] stops both threads and removes the socket file. A request still
//! waiting then fails at once when the loop's end ([`Queries`]) is gone with the runtime.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dvipsec_config::NodeView;
use dvipsec_control::metrics::{EndpointError, MetricsEndpoint};
use dvipsec_control::relay::{self, Relay};
use dvipsec_control::{ControlServer, ServerError};

use super::runtime::Runtime;

/// One request from the socket's (or the endpoint's) thread and where its answer goes. A
/// process runs one box, so the query needs no context.
pub type Query = relay::Query<()>;

/// The loop's end of the requests.
pub type Queries = std::sync::mpsc::Receiver<Query>;

/// How long a socket's thread waits for the loop (a loop round is far shorter; a longer wait
/// means the loop is stuck, and the operator is told so).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control socket or metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlStartError {
    /// The socket's directory could not be made.
    #[error("control socket directory {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Metrics(#[from] EndpointError),
}

/// The box's control socket and metrics endpoint, open until dropped.
pub struct ControlSockets {
    // Field order is drop order: the endpoint stops before the socket.
    endpoint: Option<MetricsEndpoint>,
    server: ControlServer,
}

impl ControlSockets {
    /// The control socket's path.
    pub fn path(&self) -> &Path {
        self.server.path()
    }

    /// Where the metrics endpoint listens, if the node has one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(MetricsEndpoint::address)
    }
}

/// Creates the socket's directory owner-only (0700) when it is missing; an existing one is
/// left as it is (it may be shared, like /run).
fn socket_directory(socket: &Path) -> Result<(), ControlStartError> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ControlStartError::Directory {
            path: dir.to_path_buf(),
            source,
        })
}

/// Opens the node's control socket (replacing a stale one) and its metrics endpoint, and hands
/// their requests to `runtime`'s loop.
pub fn start(view: &NodeView, runtime: &mut Runtime) -> Result<ControlSockets, ControlStartError> {
    let path = &view.control_socket;
    socket_directory(path)?;
    let (sender, queries) = relay::channel();
    let relay = Relay::new((), sender, ANSWER_TIMEOUT, &format!("box {}", view.node));
    let server = ControlServer::start(path, Box::new(relay.clone()))?;
    let endpoint = match view.metrics_listen {
        Some(address) => Some(MetricsEndpoint::start(address, relay.metrics_source())?),
        None => None,
    };
    runtime.listen_to_control(queries);
    let sockets = ControlSockets { endpoint, server };
    tracing::info!(
        node = %view.node,
        socket = %sockets.path().display(),
        metrics = ?sockets.metrics_address(),
        "control socket open"
    );
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_socket_directory_is_made_owner_only_and_an_existing_one_kept() {
        let base = tempfile::tempdir().unwrap();
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        socket_directory(&shared.join("MVS1.sock")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&shared), 0o755, "an existing directory is left alone");
        let fresh = shared.join("run").join("dvipsec");
        socket_directory(&fresh.join("MVS1.sock")).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&shared.join("run")), 0o700);
        // A file where the directory should be is a clear error, not a panic.
        let blocked = base.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let error = socket_directory(&blocked.join("sub").join("MVS1.sock")).unwrap_err();
        assert!(
            error.to_string().contains("control socket directory"),
            "{error}"
        );
    }
}
