//! `dvipsec-hwtest topology up|down SITE.yaml`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_config::SiteConfig;
use dvipsec_hwtest::topology::{self, TopologyError, TopologyOptions};

/// Where run directories go unless `--run-dir` says otherwise.
const RUN_ROOT: &str = "/run/dvipsec-hwtest";

#[derive(Args, Debug)]
pub struct TopologyArgs {
    #[command(subcommand)]
    command: TopologyCommand,
}

#[derive(Subcommand, Debug)]
enum TopologyCommand {
    /// Build the namespaces, veths and bridges and start `dvipsec boot` in every node.
    Up {
        site: PathBuf,
        #[command(flatten)]
        run_dir: RunDir,
        /// The firmware binary (default: `dvipsec` next to this program, else on PATH).
        #[arg(long, value_name = "PATH")]
        dvipsec: Option<PathBuf>,
    },
    /// Stop the nodes and remove everything `up` recorded; does nothing when nothing is up.
    Down {
        site: PathBuf,
        #[command(flatten)]
        run_dir: RunDir,
    },
}

#[derive(Args, Debug)]
struct RunDir {
    /// Where the state file and the nodes' logs go (default /run/dvipsec-hwtest/SITE).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
}

pub fn run(args: TopologyArgs) -> ExitCode {
    let result = match args.command {
        TopologyCommand::Up {
            site,
            run_dir,
            dvipsec,
        } => up(&site, run_dir, dvipsec),
        TopologyCommand::Down { site, run_dir } => down(&site, run_dir),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dvipsec-hwtest topology: {error}");
            ExitCode::FAILURE
        }
    }
}

fn up(site: &Path, run_dir: RunDir, dvipsec: Option<PathBuf>) -> Result<String, TopologyError> {
    let run_dir = resolve_run_dir(site, run_dir)?;
    let options = TopologyOptions {
        run_dir: run_dir.clone(),
        dvipsec: dvipsec.unwrap_or_else(default_dvipsec),
    };
    topology::up(site, &options)?;
    Ok(format!(
        "topology up; state and logs in {}",
        run_dir.display()
    ))
}

fn down(site: &Path, run_dir: RunDir) -> Result<String, TopologyError> {
    let run_dir = resolve_run_dir(site, run_dir)?;
    topology::down(&run_dir)?;
    Ok(format!("topology down ({} removed)", run_dir.display()))
}

fn resolve_run_dir(site: &Path, run_dir: RunDir) -> Result<PathBuf, TopologyError> {
    if let Some(dir) = run_dir.run_dir {
        return Ok(dir);
    }
    let config = SiteConfig::load(site)?;
    Ok(Path::new(RUN_ROOT).join(topology::Names::for_site(&config.site).prefix()))
}

fn default_dvipsec() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("dvipsec")))
        .filter(|candidate| candidate.exists())
        .unwrap_or_else(|| PathBuf::from("dvipsec"))
}
