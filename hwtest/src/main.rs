//! `dvipsec-hwtest`: the hardware-in-the-loop harness.

mod cmd_topology;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dvipsec_hwtest::preflight;

#[derive(Parser, Debug)]
#[command(
    name = "dvipsec-hwtest",
    version,
    about = "Hardware-in-the-loop tests for dvipsec"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this machine can build the harness's namespace topologies.
    Preflight,
    /// Bring a site up on network namespaces, one `dvipsec boot` per node, or tear it down.
    Topology(cmd_topology::TopologyArgs),
    /// Run a throughput scenario against strongSwan and dvipsec; write result.json and report.html.
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Preflight => run_preflight(),
        Command::Topology(args) => cmd_topology::run(args),
        Command::Run(args) => run::run(args),
    }
}

fn run_preflight() -> ExitCode {
    let checks = preflight::run(&std::process::id().to_string());
    for check in &checks {
        println!("{check}");
    }
    if checks.iter().all(preflight::Check::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
