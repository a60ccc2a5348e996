//! `dvipsec`: the firmware binary. Each subcommand lives in its own module.

#![forbid(unsafe_code)]

mod answers_common;
mod boot;
mod cmd_boot;
mod cmd_cf;
mod cmd_config;
mod cmd_demo;
mod demo;
mod lifesize_sink;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dvipsec",
    version,
    about = "IPsec for a distributed virtual IP address"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run this box: open its ports and hold the site's state until SIGTERM.
    Boot(cmd_boot::BootArgs),
    /// The coupling facility: serve it over the network.
    Cf(cmd_cf::CfArgs),
    /// The site configuration: check a file, show a node's resolved view.
    Config(cmd_config::ConfigArgs),
    /// Boot the figure-4 site in one process and run traffic through it.
    Demo(cmd_demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Boot(args) => cmd_boot::run(args),
        Command::Cf(args) => cmd_cf::run(args),
        Command::Config(args) => cmd_config::run(args),
        Command::Demo(args) => cmd_demo::run(args),
    }
}
