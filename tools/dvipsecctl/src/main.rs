//! `dvipsecctl`: operator commands. Each subcommand lives in its own module.

#![forbid(unsafe_code)]

mod cmd_cf;
mod cmd_config;
mod cmd_conn;
mod cmd_dct;
mod cmd_esp;
mod cmd_ike;
mod cmd_keys;
mod cmd_metrics;
mod cmd_sa;
mod cmd_status;
mod cmd_takeover;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dvipsecctl",
    version,
    about = "Operate and debug a dvipsec cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The coupling facility: take numbers from a slot, or show a box's view of it.
    Cf(cmd_cf::CfArgs),
    /// The site configuration: check a file and see each node's operator endpoints.
    Config(cmd_config::ConfigArgs),
    /// ESP with known keys: seal, open or peek packets from a file or stdin.
    Esp(cmd_esp::EspArgs),
    /// A box's role, DVIPAs, peers and links.
    Status(cmd_status::ListingArgs),
    /// Security associations (never keys).
    Sa(cmd_sa::SaArgs),
    /// The distributed connection table.
    Dct(cmd_dct::DctArgs),
    /// IKE SAs.
    Ike(cmd_ike::IkeArgs),
    /// Configured connections.
    Conn(cmd_conn::ConnArgs),
    /// A planned move of a DVIPA to this box.
    Takeover(cmd_takeover::TakeoverArgs),
    /// Key export for Wireshark.
    Keys(cmd_keys::KeysArgs),
    /// The Prometheus metrics text.
    Metrics(cmd_metrics::MetricsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cf(args) => cmd_cf::run(args),
        Command::Config(args) => cmd_config::run(args),
        Command::Esp(args) => cmd_esp::run(args),
        Command::Status(args) => cmd_status::run(args),
        Command::Sa(args) => cmd_sa::run(args),
        Command::Dct(args) => cmd_dct::run(args),
        Command::Ike(args) => cmd_ike::run(args),
        Command::Conn(args) => cmd_conn::run(args),
        Command::Takeover(args) => cmd_takeover::run(args),
        Command::Keys(args) => cmd_keys::run(args),
        Command::Metrics(args) => cmd_metrics::run(args),
    }
}
