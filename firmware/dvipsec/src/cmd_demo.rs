//! `dvipsec demo`: boots the figure-4 site in one process (two distributors, their targets, the
//! CF and a remote peer per DVIPA on in-memory switches), negotiates with IKEv2, sends echo
//! traffic, shows a live progress line on stderr and prints a summary.

use crate::demo::{Site, Summary};
use clap::Args;
use dvipsec_config::SiteConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The site the demo boots unless `--config` names another.
const FIGURE4: &str = include_str!("../../../config/examples/figure4.yaml");

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

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

fn demo(args: &DemoArgs) -> Result<(), String> {
    let config = load(args)?;
    let views = config.node_views();
    let dir = tempfile::Builder::new()
        .prefix("dvipsec-demo-")
        .tempdir()
        .map_err(|e| format!("temporary directory for the CF region: {e}"))?;
    let started = Instant::now();
    let mut site = Site::new(&views, &dir.path().join("cf"), started).map_err(|e| e.to_string())?;
    site.start().map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(args.seconds);
    let mut last_progress = started;
    while started.elapsed() < limit {
        site.round();
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let snapshot = Summary::of(&site, started.elapsed().as_secs_f64());
            eprintln!("{}", snapshot.progress_line());
        }
    }
    let summary = Summary::of(&site, started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}
