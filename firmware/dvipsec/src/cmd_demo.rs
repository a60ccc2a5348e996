//! `dvipsec demo`: boots the figure-4 site in one process (two distributors, their targets, the
//! CF and a remote peer per DVIPA on in-memory switches), negotiates with IKEv2, sends echo
//! traffic, shows a live progress line on stderr and prints a summary. With `--run-dir DIR` every
//! box answers `dvipsecctl` on `DIR/NODE.sock` while the demo runs.

use crate::demo::control::ControlPlane;
use crate::demo::{Site, Summary};
use crate::logging;
use clap::Args;
use dvipsec_config::{Located, LogLevel, LogModules, LoggingConfig, SiteConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The site the demo boots unless `--config` names another.
const FIGURE4: &str = include_str!("../../../config/examples/figure4.yaml");

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The log target of security events (SA installed, deleted).
const SECURITY_LOG: &str = "dvipsec::security";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long to run, in seconds of wall time.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// The site file to boot instead of the built-in figure-4 site.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve a control socket per box at DIR/NODE.sock (DIR is created owner-only), and the
    /// metrics endpoints the site file sets.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> ExitCode {
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dvipsec demo: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &DemoArgs) -> Result<SiteConfig, String> {
    match &args.config {
        Some(path) => SiteConfig::load(path).map_err(|e| e.to_string()),
        None => SiteConfig::from_str_named(FIGURE4, "figure4.yaml (built in)")
            .map_err(|e| e.to_string()),
    }
}

/// The demo's levels when the site file sets none: quiet apart from warnings, so the progress
/// line stays readable; with control sockets, operators also see the security events.
fn demo_logging(args: &DemoArgs) -> LoggingConfig {
    let mut modules = Vec::new();
    if args.run_dir.is_some() {
        modules.push((
            Located::new(SECURITY_LOG.to_owned()),
            Located::new(LogLevel::Info),
        ));
    }
    LoggingConfig {
        level: Located::new(LogLevel::Warn),
        modules: LogModules(modules),
    }
}

/// Set by SIGINT or SIGTERM when the demo serves sockets, so that it ends cleanly and removes
/// them.
fn stop_flag(args: &DemoArgs) -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.run_dir.is_some() {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())
                .map_err(|e| format!("signal handler: {e}"))?;
        }
    }
    Ok(stop)
}

fn demo(args: &DemoArgs) -> Result<(), String> {
    let config = load(args)?;
    let fallback = demo_logging(args);
    logging::init(Some(config.logging.as_ref().unwrap_or(&fallback)));
    let views = config.node_views();
    let dir = tempfile::Builder::new()
        .prefix("dvipsec-demo-")
        .tempdir()
        .map_err(|e| format!("temporary directory for the CF region: {e}"))?;
    let started = Instant::now();
    let mut site = Site::new(&views, &dir.path().join("cf"), started).map_err(|e| e.to_string())?;
    let control = match &args.run_dir {
        Some(run_dir) => {
            let plane = ControlPlane::start(run_dir, &views, &site).map_err(|e| e.to_string())?;
            for socket in plane.sockets() {
                eprintln!("control socket {}", socket.display());
            }
            for (node, address) in plane.metrics_endpoints() {
                eprintln!("metrics of {node} at http://{address}/metrics");
            }
            Some(plane)
        }
        None => None,
    };
    let stop = stop_flag(args)?;
    site.start().map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(args.seconds);
    let mut last_progress = started;
    while started.elapsed() < limit && !stop.load(Ordering::Relaxed) {
        site.round();
        if let Some(control) = &control {
            control.serve(&site);
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let snapshot = Summary::of(&site, started.elapsed().as_secs_f64());
            eprintln!("{}", snapshot.progress_line());
        }
    }
    // The sockets go before the summary: whoever waits for the summary finds them removed.
    drop(control);
    let summary = Summary::of(&site, started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}
