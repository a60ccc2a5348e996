//! `dvipsec demo --run-dir DIR`: a control socket per simulated box (`DIR/NODE.sock`), so that
//! `dvipsecctl` works against the demo as against a real box, and the Prometheus endpoint of
//! every box whose node sets `metrics: { listen: ADDR:PORT }` in the site file.
//!
//! Each socket's server thread forwards its requests over a channel to the demo's thread, which
//! answers them between simulation rounds from the live site ([`answers`]): the answers are the
//! site's state at that moment, never a stale copy, and the site stays single-threaded.

mod answers;

use crate::demo::Site;
use answers::NodeBoxes;
use dvipsec_config::NodeView;
use dvipsec_control::keys::KeyExport;
use dvipsec_control::metrics::{MetricsEndpoint, MetricsSource};
use dvipsec_control::protocol::{
    CfReport, ConnListReport, DctReport, IkeListReport, MetricsText, SaListReport, StatusReport,
    TakeoverReport,
};
use dvipsec_control::{ControlError, ControlHandler, ControlServer, Request, Response};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
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

/// A request from a socket's thread, with where its answer goes.
struct Query {
    node: usize,
    request: Request,
    reply: SyncSender<Result<Response, ControlError>>,
}

/// The control sockets of the site's boxes and the demo's end of their requests.
pub struct ControlPlane {
    /// Taken first on drop, so that a socket thread waiting for an answer wakes (its reply
    /// channel closes) before the servers are joined.
    queries: Option<Receiver<Query>>,
    servers: Vec<ControlServer>,
    endpoints: Vec<(String, MetricsEndpoint)>,
    views: Vec<NodeView>,
    /// Set when this plane created the run directory (it then removes it, if empty, at exit).
    created_dir: Option<PathBuf>,
}

/// One socket's handler: passes each request to the demo's thread and waits for the answer.
struct Forwarder {
    node: usize,
    queries: Sender<Query>,
}

impl Forwarder {
    fn ask(&self, request: Request) -> Result<Response, ControlError> {
        let name = request.name();
        let gone = || ControlError::Failed {
            request: name.into(),
            reason: "the demo is shutting down".into(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let query = Query {
            node: self.node,
            request,
            reply,
        };
        self.queries.send(query).map_err(|_| gone())?;
        match answer.recv_timeout(ANSWER_TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
            Err(RecvTimeoutError::Timeout) => Err(ControlError::Failed {
                request: name.into(),
                reason: format!("the demo did not answer within {ANSWER_TIMEOUT:?}"),
            }),
        }
    }
}

/// The response variant a request must get; anything else is a bug on the demo's side.
macro_rules! expect {
    ($self:ident, $request:expr, $variant:ident) => {
        match $self.ask($request)? {
            Response::$variant(report) => Ok(report),
            _ => Err(ControlError::Failed {
                request: stringify!($variant).into(),
                reason: "the demo answered another request".into(),
            }),
        }
    };
}

impl ControlHandler for Forwarder {
    fn status(&mut self) -> Result<StatusReport, ControlError> {
        expect!(self, Request::Status, Status)
    }

    fn sa_list(&mut self) -> Result<SaListReport, ControlError> {
        expect!(self, Request::SaList, SaList)
    }

    fn dct_list(&mut self) -> Result<DctReport, ControlError> {
        expect!(self, Request::DctList, DctList)
    }

    fn ike_list(&mut self) -> Result<IkeListReport, ControlError> {
        expect!(self, Request::IkeList, IkeList)
    }

    fn conn_list(&mut self) -> Result<ConnListReport, ControlError> {
        expect!(self, Request::ConnList, ConnList)
    }

    fn cf_show(&mut self) -> Result<CfReport, ControlError> {
        expect!(self, Request::CfShow, CfShow)
    }

    fn takeover(&mut self, dvipa: IpAddr) -> Result<TakeoverReport, ControlError> {
        expect!(self, Request::Takeover { dvipa }, Takeover)
    }

    fn keys_export(&mut self) -> Result<KeyExport, ControlError> {
        expect!(self, Request::KeysExport, KeysExport)
    }

    fn metrics(&mut self) -> Result<String, ControlError> {
        expect!(self, Request::Metrics, Metrics).map(|m| m.text)
    }
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

/// A scrape asks the demo's thread like a socket request does. The endpoint has no error
/// channel: a failed scrape gets a comment saying why and an empty exposition.
fn scrape(forwarder: Forwarder) -> MetricsSource {
    std::sync::Arc::new(move || match forwarder.ask(Request::Metrics) {
        Ok(Response::Metrics(metrics)) => metrics.text,
        Ok(_) => "# dvipsec: the demo answered another request\n# EOF\n".to_owned(),
        Err(error) => format!("# dvipsec: no metrics: {error}\n# EOF\n"),
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
        let (sender, queries) = mpsc::channel();
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
            let handler = Forwarder {
                node,
                queries: sender.clone(),
            };
            let path = dir.join(format!("{}.sock", view.node));
            plane
                .servers
                .push(ControlServer::start(&path, Box::new(handler))?);
            if let Some(address) = view.metrics_listen {
                let forwarder = Forwarder {
                    node,
                    queries: sender.clone(),
                };
                let endpoint = MetricsEndpoint::start(address, scrape(forwarder))?;
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
            let answer = self.answer(site, query.node, query.request);
            // The asker may have timed out and gone; nothing to do then.
            let _ = query.reply.send(answer);
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
