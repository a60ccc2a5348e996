//! `dvipsec boot`: what one box owns at run time, acquired in order and released in reverse.
//!
//! Boot reads the site, resolves this node's view, pins the polling core, opens the node's
//! packet ports and creates (distributor) or checks (target) the coupling-facility region. It
//! then holds all of that until SIGTERM or SIGINT and gives it back: ports closed, the region
//! removed when this node created it.

mod facility;
mod ports;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dvipsec_config::{ConfigError, NodeView, SiteConfig};

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
            ports,
            facility,
        } = self;
        for port in ports {
            tracing::info!(node = %view.node, port = port.name(), "closing port");
            drop(port);
        }
        facility.release()
    }
}

/// Boots `request.node`: nothing is left held when this fails.
pub fn boot(request: &BootRequest) -> Result<BootedNode, BootError> {
    let view = load_view(&request.config, &request.node)?;
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
    })
}

/// Loads and validates the site and resolves `node`'s view of it.
pub fn load_view(config: &Path, node: &str) -> Result<NodeView, BootError> {
    let site = SiteConfig::load(config)?;
    Ok(site.node_view(node)?)
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

    /// Blocks until a stop signal arrived.
    pub fn wait(&self) {
        while !self.0.load(Ordering::Relaxed) {
            std::thread::sleep(SIGNAL_POLL);
        }
    }
}
