//! `dvipsec boot`: what one box owns at run time, acquired in order and released in reverse.
//!
//! Boot reads the site, resolves this node's view, pins the polling core, opens the node's
//! packet ports, creates (distributor) or prepares to attach (target) the coupling-facility
//! region, builds the data plane on the ports ([`plane`]), the IKE endpoint and cluster cores
//! ([`runtime`]) and joins the XCF link ([`xcf`]). It then runs the box until SIGTERM or SIGINT
//! and gives everything back: IKE SAs deleted, XCF streams closed, ports closed, the region
//! removed when this node created it.

mod answers;
pub mod child;
pub mod control;
pub mod envelope;
mod facility;
mod failover;
mod ike_socket;
pub mod neighbours;
pub mod plane;
mod ports;
pub mod runtime;
pub mod xcf;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dvipsec_cluster::tls::{TlsError, XcfIdentity};
use dvipsec_cluster::LinkSecurity;
use dvipsec_config::{CfBackend, ConfigError, NodeView, Position, SiteConfig, XcfSecurity};
use xcf::{XcfError, XcfManager, XcfPeer, XcfSetup, XCF_PORT};

pub use facility::{AttachedRegion, CfHandle, FacilityError};
pub use ports::{OpenPort, PortError};

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
    /// The data plane could not be built on the ports.
    #[error("node {node}: data plane: {source}")]
    Plane {
        node: String,
        #[source]
        source: plane::PlaneError,
    },
    /// IKE or the cluster cores could not start.
    #[error("node {node}: {source}")]
    Runtime {
        node: String,
        #[source]
        source: runtime::RuntimeError,
    },
    /// The site's cryptodev for this node cannot be used.
    #[error("node {node}: {reason}")]
    Crypto { node: String, reason: String },
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
    /// The control socket or the metrics endpoint could not be opened.
    #[error("node {node}: {source}")]
    Control {
        node: String,
        #[source]
        source: control::ControlStartError,
    },
    /// The site asks for something `boot` does not do (a valid site for other commands).
    #[error("{file}:{at}: {what}")]
    Unsupported {
        file: String,
        at: Position,
        what: &'static str,
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
    runtime: runtime::Runtime,
    facility: CfHandle,
    xcf: XcfManager,
    /// Keeps the kernel quiet about GRE it cannot handle (see [`gre_sink`]).
    _gre_sink: Option<socket2::Socket>,
    /// The control socket and metrics endpoint, closed last at shutdown.
    _control: control::ControlSockets,
}

impl BootedNode {
    /// The node's resolved view of the site.
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// Releases everything in the reverse order of boot. Returns the error of a step that
    /// could not be undone (the others still run).
    pub fn shut_down(self) -> Result<(), FacilityError> {
        let BootedNode {
            view,
            mut runtime,
            facility,
            xcf,
            _gre_sink,
            _control,
        } = self;
        runtime.delete_ike_sas();
        let still_current = runtime.holds_current_region();
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
        tracing::info!(node = %view.node, counters = ?runtime::summary(&runtime), "closing ports");
        drop(runtime);
        facility.release(still_current)
    }
}

/// Refuses, before anything is opened, a site that names a CF server: the boot data plane does
/// per-packet CF operations (sequence numbers, replay windows) on a mapped shared-memory region
/// and has no networked path to them. Booting anyway would drop every ESP packet as a CF failure.
fn refuse_unsupported(site: &SiteConfig) -> Result<(), BootError> {
    let backend = &site.coupling_facility.backend;
    match &backend.value {
        CfBackend::Shm(_) => Ok(()),
        CfBackend::Network(_) => Err(BootError::Unsupported {
            file: site.file_name().to_owned(),
            at: backend.at,
            what: "coupling_facility: `dvipsec boot` needs a shared-memory region (`shm: PATH`); a CF server (`network:`) serves `dvipsec cf serve` clients, not the boot data plane",
        }),
    }
}

/// The directory relative secret paths start from: the site file's.
fn secrets_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Boots `request.node`: nothing is left held when this fails.
pub fn boot(request: &BootRequest) -> Result<BootedNode, BootError> {
    let site = SiteConfig::load(&request.config)?;
    let view = site.node_view(&request.node)?;
    refuse_unsupported(&site)?;
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
    match start(&site, &view, request, &facility, ports) {
        Ok((runtime, xcf, gre_sink, control)) => {
            tracing::info!(node = %node, roles = ?view.roles(), facility = %facility, "node booted");
            Ok(BootedNode {
                view,
                runtime,
                facility,
                xcf,
                _gre_sink: gre_sink,
                _control: control,
            })
        }
        Err(error) => {
            // Leave nothing behind: a region this node created goes again.
            if let Err(release) = facility.release(true) {
                tracing::warn!(node = %node, "{release}");
            }
            Err(error)
        }
    }
}

type Started = (
    runtime::Runtime,
    XcfManager,
    Option<socket2::Socket>,
    control::ControlSockets,
);

/// The steps after the facility: data plane, IKE and cores, XCF.
fn start(
    site: &SiteConfig,
    view: &NodeView,
    request: &BootRequest,
    facility: &CfHandle,
    ports: Vec<OpenPort>,
) -> Result<Started, BootError> {
    let node = view.node.clone();
    let (attached, region, region_path) = match facility {
        CfHandle::Owner { owner, path } => (
            AttachedRegion::attached(owner.region().clone()),
            Some(owner.clone()),
            Some(path.clone()),
        ),
        CfHandle::User { path, .. } => (AttachedRegion::default(), None, Some(path.clone())),
    };
    let views = site.node_views();
    let plane = plane::prepare(view, &views, ports).map_err(|source| BootError::Plane {
        node: node.clone(),
        source,
    })?;
    let gre_sink = plane.as_ref().and_then(|_| gre_sink());
    let security = match &*site.xcf.security {
        XcfSecurity::Trusted => LinkSecurity::Trusted,
        XcfSecurity::Protected(_) => LinkSecurity::Protected,
    };
    let provider = cipher_provider(view).map_err(|reason| BootError::Crypto {
        node: node.clone(),
        reason,
    })?;
    let mut runtime = runtime::Runtime::new(runtime::RuntimeInputs {
        site,
        view,
        secrets_dir: &secrets_dir(&request.config),
        plane,
        facility: attached,
        region,
        region_path,
        security,
        provider,
    })
    .map_err(|source| BootError::Runtime {
        node: node.clone(),
        source,
    })?;
    let control = control::start(view, &mut runtime).map_err(|source| BootError::Control {
        node: node.clone(),
        source,
    })?;
    let xcf = join_xcf(site, view)?;
    Ok((runtime, xcf, gre_sink, control))
}

/// The cryptodev the site names for this node, opened on the EAL its DPDK ports started.
#[cfg(feature = "dpdk")]
fn cipher_provider(view: &NodeView) -> Result<Option<Box<dyn dvipsec_esp::AeadProvider>>, String> {
    let Some(device) = &view.cryptodev else {
        return Ok(None);
    };
    let eal = dvipsec_dpdk::Eal::get()
        .ok_or_else(|| format!("cryptodev {device} needs a DPDK port (none started the EAL)"))?;
    let opened = dvipsec_dpdk::Cryptodev::open(eal, device).map_err(|e| e.to_string())?;
    tracing::info!(node = %view.node, device = %device, "ESP ciphers on cryptodev");
    Ok(Some(Box::new(dvipsec_dpdk::CryptodevProvider::new(opened))))
}

#[cfg(not(feature = "dpdk"))]
fn cipher_provider(view: &NodeView) -> Result<Option<Box<dyn dvipsec_esp::AeadProvider>>, String> {
    match &view.cryptodev {
        None => Ok(None),
        Some(device) => Err(format!(
            "cryptodev {device}: this build has no DPDK backend (build with `--features dpdk`)"
        )),
    }
}

/// A raw socket for GRE that is never read: with it the kernel stops answering the GRE the
/// distributor sends this box (which the data plane takes from the port) with ICMP protocol
/// unreachable. Without the right to open it, the box works and the kernel stays noisy.
fn gre_sink() -> Option<socket2::Socket> {
    const IPPROTO_GRE: i32 = 47;
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(IPPROTO_GRE)),
    );
    match socket {
        Ok(socket) => {
            let _ = socket.set_recv_buffer_size(4096);
            Some(socket)
        }
        Err(error) => {
            tracing::warn!(%error, "no raw GRE socket: the kernel will answer GRE with ICMP");
            None
        }
    }
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
        backoff: xcf::Backoff::up_to(std::time::Duration::from_millis(u64::from(
            view.xcf_link.takeover_timeout_ms.value,
        ))),
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

/// Runs the node until `stop` is raised. Returns the XCF frames received.
pub fn run_until(node: &mut BootedNode, stop: &StopFlag) -> u64 {
    let BootedNode { runtime, xcf, .. } = node;
    runtime.run(xcf, || stop.raised());
    runtime.counters().xcf_frames
}
