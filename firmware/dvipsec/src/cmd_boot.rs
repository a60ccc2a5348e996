//! `dvipsec boot --config SITE.yaml --node NAME`: run one box until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::boot::{self, BootError, BootRequest, StopFlag};

/// Exit status for a site file that does not load or lacks the node.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Args, Debug)]
pub struct BootArgs {
    /// The site configuration.
    #[arg(long, value_name = "SITE.yaml")]
    config: PathBuf,
    /// This box's node name in the site.
    #[arg(long, value_name = "NAME")]
    node: String,
}

pub fn run(args: BootArgs) -> ExitCode {
    init_logging(&args.config);
    let request = BootRequest {
        config: args.config,
        node: args.node,
    };
    match boot_and_wait(&request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ (BootError::Config(_) | BootError::Unsupported { .. })) => {
            eprintln!("dvipsec boot: {error}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(error) => {
            eprintln!("dvipsec boot: {error}");
            ExitCode::FAILURE
        }
    }
}

fn boot_and_wait(request: &BootRequest) -> Result<(), BootError> {
    let stop = StopFlag::install()?;
    let mut node = boot::boot(request)?;
    let received = boot::run_until(&mut node, &stop);
    tracing::info!(node = %node.view().node, xcf_frames_received = received, "stop signal: shutting down");
    let name = node.view().node.clone();
    match node.shut_down() {
        Ok(()) => {
            tracing::info!(node = %name, "shut down cleanly");
            Ok(())
        }
        Err(source) => Err(BootError::Facility { node: name, source }),
    }
}

/// Logs to stderr at the site's levels (`logging:`; `RUST_LOG` overrides). A site that does
/// not load yet logs at the defaults: boot then reports why it does not load.
fn init_logging(config: &std::path::Path) {
    let site = dvipsec_config::SiteConfig::load(config).ok();
    crate::logging::init(site.as_ref().and_then(|s| s.logging.as_ref()));
}
