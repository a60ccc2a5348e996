//! `dvipsec boot`: what one box owns at run time, acquired in order and released in reverse.
//!
//! Boot reads the site, resolves this node's view, pins the polling core, opens the node's
//! packet ports, creates (distributor) or checks (target) the coupling-facility region and
//! joins the XCF link ([`xcf`]). It then holds all of that until SIGTERM or SIGINT and gives it
//! back: XCF streams closed, ports closed, the region removed when this node created it.

mod facility;
mod ports;
pub mod xcf;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dvipsec_cluster::tls::{TlsError, XcfIdentity};
use dvipsec_cluster::wire::{Frame, Message};
use dvipsec_config::{ConfigError, NodeView, SiteConfig};
use xcf::{XcfError, XcfManager, XcfPeer, XcfSetup, XCF_PORT};

pub use facility::{CfHandle, FacilityError};
pub use ports::{OpenPort, PortError};

/// How often the main loop looks at the signal flag.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Why a node could not boot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The site file does not load or has no such node.
    #[error("{}", .0.render().trim_end())]
    Config(#[from] ConfigError),
    /// A polling core named in the site does not exist here.
    #[error("node {node}: polling core {core} does not exist on this machine ({available} cores)")]
    NoSuchCore {
        node: String,
        core: u32,
        available: usize,
    },
    /// The thread could not be pinned.
    #[error("node {node}: cannot pin to polling core {core}")]
    Pin { node: String, core: u32 },
    /// A packet port could not be opened.
    #[error("node {node}: {source}")]
    Port {
        node: String,
        #[source]
        source: PortError,
    },
    /// The coupling facility could not be set up.
    #[error("node {node}: {source}")]
    Facility {
        node: String,
        #[source]
        source: FacilityError,
    },
    /// The node has no XCF address to listen on.
    #[error("node {0}: no XCF address")]
    NoXcfAddress(String),
    /// The XCF link's TLS identity could not be made from the site key.
    #[error("node {node}: XCF TLS identity: {source}")]
    XcfIdentity {
        node: String,
        #[source]
        source: TlsError,
    },
    /// The XCF link could not be joined.
    #[error("node {node}: {source}")]
    Xcf {
        node: String,
        #[source]
        source: XcfError,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// What `dvipsec boot` was asked to start.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub config: PathBuf,
    pub node: String,
}

/// A booted node: everything it holds until shutdown.
pub struct BootedNode {
    view: NodeView,
    ports: Vec<OpenPort>,
    facility: CfHandle,
    xcf: XcfManager,
}

impl BootedNode {
    /// The node's resolved view of the site.
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// Queues a heartbeat for every other node (dropped and counted for those not connected).
    fn send_heartbeats(&self) {
        let beat = Frame {
            from_incarnation: u64::from(std::process::id()),
            to_incarnation: 0,
            seq: 0,
            message: Message::Heartbeat,
        };
        let Ok(bytes) = beat.encode() else {
            return;
        };
        for peer in self.xcf.peers() {
            self.xcf.send(peer, bytes.clone());
        }
    }

    /// Releases everything in the reverse order of boot. Returns the error of a step that
    /// could not be undone (the others still run).
    pub fn shut_down(self) -> Result<(), FacilityError> {
        let BootedNode {
            view,
            ports,
            facility,
            xcf,
        } = self;
        let counters = xcf.counters();
        tracing::info!(
            node = %view.node,
            connected = counters.connected.load(Ordering::Relaxed),
            rejected = counters.rejected.load(Ordering::Relaxed),
            broken = counters.broken.load(Ordering::Relaxed),
            unsent = counters.unsent.load(Ordering::Relaxed),
            "closing XCF streams"
        );
        drop(xcf);
        for port in ports {
            tracing::info!(node = %view.node, port = port.name(), "closing port");
            drop(port);
        }
        facility.release()
    }
}

/// Boots `request.node`: nothing is left held when this fails.
pub fn boot(request: &BootRequest) -> Result<BootedNode, BootError> {
    let site = SiteConfig::load(&request.config)?;
    let view = site.node_view(&request.node)?;
    let node = view.node.clone();
    pin_polling_core(&view)?;
    let ports = ports::open_all(&view.ports).map_err(|source| BootError::Port {
        node: node.clone(),
        source,
    })?;
    let facility = facility::set_up(&view).map_err(|source| BootError::Facility {
        node: node.clone(),
        source,
    })?;
    let xcf = match join_xcf(&site, &view) {
        Ok(xcf) => xcf,
        Err(error) => {
            // Leave nothing behind: a region this node created goes again.
            if let Err(release) = facility.release() {
                tracing::warn!(node = %node, "{release}");
            }
            return Err(error);
        }
    };
    tracing::info!(
        node = %node,
        ports = ports.len(),
        facility = %facility,
        "node booted"
    );
    Ok(BootedNode {
        view,
        ports,
        facility,
        xcf,
    })
}

/// Starts the XCF connection manager towards every other node of the site, each reached on
/// its first XCF address.
fn join_xcf(site: &SiteConfig, view: &NodeView) -> Result<XcfManager, BootError> {
    let node = view.node.clone();
    let listen = view
        .xcf
        .first()
        .map(|ip| SocketAddr::new(*ip, XCF_PORT))
        .ok_or_else(|| BootError::NoXcfAddress(node.clone()))?;
    let peers = site
        .nodes
        .iter()
        .filter(|other| *other.name != node)
        .filter_map(|other| {
            let ip = other.xcf.first()?;
            Some(XcfPeer {
                node: other.name.to_string(),
                addr: SocketAddr::new(**ip, XCF_PORT),
            })
        })
        .collect();
    let tls = match site.xcf_key()? {
        None => None,
        Some(key) => Some(
            XcfIdentity::from_site_key(&site.site, &node, key.expose()).map_err(|source| {
                BootError::XcfIdentity {
                    node: node.clone(),
                    source,
                }
            })?,
        ),
    };
    let setup = XcfSetup {
        node: node.clone(),
        listen,
        peers,
        tls,
        backoff: xcf::Backoff::default(),
    };
    XcfManager::start(setup).map_err(|source| BootError::Xcf { node, source })
}

/// Pins the calling thread to the first polling core, when the site names any.
fn pin_polling_core(view: &NodeView) -> Result<(), BootError> {
    let Some(&core) = view.polling_cores.first() else {
        return Ok(());
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let Some(id) = cores.iter().find(|id| id.id == core as usize) else {
        return Err(BootError::NoSuchCore {
            node: view.node.clone(),
            core,
            available: cores.len(),
        });
    };
    if !core_affinity::set_for_current(*id) {
        return Err(BootError::Pin {
            node: view.node.clone(),
            core,
        });
    }
    tracing::info!(node = %view.node, core, "pinned to polling core");
    Ok(())
}

/// Raised by SIGTERM or SIGINT.
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Installs the handlers.
    pub fn install() -> Result<Self, BootError> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(BootError::Signals)?;
        }
        Ok(StopFlag(flag))
    }

    /// Whether a stop signal arrived.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the node until `stop` is raised: sends an XCF heartbeat to every other node each
/// `heartbeat_ms`, and receives and counts their frames (no distributor or target core is
/// attached to consume them yet). Returns the frames received.
pub fn run_until(node: &BootedNode, stop: &StopFlag) -> u64 {
    let heartbeat = Duration::from_millis(u64::from(*node.view.xcf_link.heartbeat_ms));
    let mut received = 0u64;
    let mut next_beat = Instant::now();
    while !stop.raised() {
        if Instant::now() >= next_beat {
            node.send_heartbeats();
            next_beat += heartbeat;
        }
        if let Some(frame) = node.xcf.recv(SIGNAL_POLL.min(heartbeat)) {
            received += 1;
            tracing::trace!(from = %frame.from, bytes = frame.bytes.len(), "XCF frame");
        }
    }
    received
}
