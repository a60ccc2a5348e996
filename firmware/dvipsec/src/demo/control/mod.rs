//! `dvipsec demo --run-dir DIR`: a control socket per simulated box (`DIR/NODE.sock`), so that
//! `dvipsecctl` works against the demo as against a real box, and the Prometheus endpoint of
//! every box whose node sets `metrics: { listen: ADDR:PORT }` in the site file.
//!
//! Each socket's server thread relays its requests ([`relay`]) to the demo's thread, which
//! answers them between simulation rounds from the live site ([`answers`]): the answers are the
//! site's state at that moment, never a stale copy, and the site stays single-threaded.

mod answers;

use crate::demo::Site;
use answers::NodeBoxes;
use dvipsec_config::NodeView;
use dvipsec_control::metrics::MetricsEndpoint;
use dvipsec_control::protocol::MetricsText;
use dvipsec_control::relay::{self, Queries, Relay};
use dvipsec_control::{ControlError, ControlServer, Request, Response};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a socket's thread waits for the demo's thread to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control sockets could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunDirError {
    #[error("run directory {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("run directory {path} is open to other users (mode {mode:03o}); use one only its owner can enter (mode 0700)")]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Server(#[from] dvipsec_control::ServerError),
    #[error("{0}")]
    Metrics(#[from] dvipsec_control::metrics::EndpointError),
}

/// The control sockets of the site's boxes and the demo's end of their requests.
pub struct ControlPlane {
    /// Taken first on drop, so that a socket thread waiting for an answer wakes (its reply
    /// channel closes) before the servers are joined.
    queries: Option<Queries<usize>>,
    servers: Vec<ControlServer>,
    endpoints: Vec<(String, MetricsEndpoint)>,
    views: Vec<NodeView>,
    /// Set when this plane created the run directory (it then removes it, if empty, at exit).
    created_dir: Option<PathBuf>,
}

/// The answer of `boxes` to `request`.
fn respond(boxes: &NodeBoxes<'_>, request: Request) -> Result<Response, ControlError> {
    Ok(match request {
        Request::Status => Response::Status(boxes.status()),
        Request::SaList => Response::SaList(boxes.sa_list()),
        Request::DctList => Response::DctList(boxes.dct_list()?),
        Request::IkeList => Response::IkeList(boxes.ike_list()?),
        Request::ConnList => Response::ConnList(boxes.conn_list()?),
        Request::CfShow => Response::CfShow(boxes.cf_show()?),
        Request::Takeover { dvipa } => Response::Takeover(boxes.takeover(dvipa)?),
        Request::KeysExport => Response::KeysExport(boxes.keys_export()),
        Request::Metrics => Response::Metrics(MetricsText {
            text: boxes.metrics(),
        }),
        other => {
            return Err(ControlError::Unsupported {
                request: other.name().into(),
                reason: "the demo does not know this request".into(),
            })
        }
    })
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> RunDirError {
    let path = path.to_path_buf();
    move |source| RunDirError::Io {
        path,
        action,
        source,
    }
}

/// Creates `dir` owner-only (0700), or checks that an existing one is. Returns whether it was
/// created.
fn private_dir(dir: &Path) -> Result<bool, RunDirError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have narrowed the mode, never widened it; set it exactly anyway.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir, "chmod 0700"))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(dir).map_err(io(dir, "stat"))?;
            if !meta.is_dir() {
                return Err(io(dir, "use as a directory")(std::io::Error::other(
                    "it exists and is not a directory",
                )));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(RunDirError::NotPrivate {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
            Ok(false)
        }
        Err(e) => Err(io(dir, "create")(e)),
    }
}

impl ControlPlane {
    /// Opens `DIR/NODE.sock` (mode 0600) for every node the site runs a box for.
    pub fn start(dir: &Path, views: &[NodeView], site: &Site) -> Result<ControlPlane, RunDirError> {
        let created = private_dir(dir)?;
        let (sender, queries) = relay::channel();
        let mut plane = ControlPlane {
            queries: Some(queries),
            servers: Vec::new(),
            endpoints: Vec::new(),
            views: views.to_vec(),
            created_dir: created.then(|| dir.to_path_buf()),
        };
        for (node, view) in views.iter().enumerate() {
            if NodeBoxes::find(site, views, view).is_none() {
                continue;
            }
            let handler = Relay::new(node, sender.clone(), ANSWER_TIMEOUT, "the demo");
            let path = dir.join(format!("{}.sock", view.node));
            plane
                .servers
                .push(ControlServer::start(&path, Box::new(handler))?);
            if let Some(address) = view.metrics_listen {
                let relay = Relay::new(node, sender.clone(), ANSWER_TIMEOUT, "the demo");
                let endpoint = MetricsEndpoint::start(address, relay.metrics_source())?;
                plane.endpoints.push((view.node.clone(), endpoint));
            }
        }
        Ok(plane)
    }

    /// The metrics endpoints: (node, address), one per node whose site entry sets one.
    pub fn metrics_endpoints(&self) -> Vec<(&str, std::net::SocketAddr)> {
        self.endpoints
            .iter()
            .map(|(node, endpoint)| (node.as_str(), endpoint.address()))
            .collect()
    }

    /// The socket paths, one per box.
    pub fn sockets(&self) -> Vec<&Path> {
        self.servers.iter().map(ControlServer::path).collect()
    }

    /// Answers every request waiting now from `site`'s current state; never blocks.
    pub fn serve(&self, site: &Site) {
        let Some(queries) = &self.queries else {
            return;
        };
        while let Ok(query) = queries.try_recv() {
            let answer = self.answer(site, query.context, query.request.clone());
            query.answer(answer);
        }
    }

    fn answer(&self, site: &Site, node: usize, request: Request) -> Result<Response, ControlError> {
        let name = request.name();
        let boxes = self
            .views
            .get(node)
            .and_then(|view| NodeBoxes::find(site, &self.views, view))
            .ok_or_else(|| ControlError::Failed {
                request: name.into(),
                reason: "this node's boxes are gone".into(),
            })?;
        respond(&boxes, request)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        drop(self.queries.take());
        self.endpoints.clear();
        // Stop the servers (they remove their sockets) before removing the directory.
        self.servers.clear();
        if let Some(dir) = &self.created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
