//! `dvipsecctl`: operator commands. Each subcommand lives in its own module.

mod cmd_cf;
mod cmd_esp;

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
    /// The coupling facility: take numbers from a slot.
    Cf(cmd_cf::CfArgs),
    /// ESP with known keys: seal, open or peek packets from a file or stdin.
    Esp(cmd_esp::EspArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cf(args) => cmd_cf::run(args),
        Command::Esp(args) => cmd_esp::run(args),
    }
}
