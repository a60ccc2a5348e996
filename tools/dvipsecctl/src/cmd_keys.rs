//! `dvipsecctl keys export --wireshark`: the box's ESP keys as Wireshark `esp_sa` records, on
//! stdout, with a warning on stderr and no prompt. The only command that prints keys.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_control::keys::wireshark_line;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, unexpected, SocketArgs};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Exports the keys of the box's SAs.
    Export {
        /// Write Wireshark/tshark `esp_sa` UAT records (the only format).
        #[arg(long, required = true)]
        wireshark: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

const WARNING: &str = "dvipsecctl keys export: WARNING: the output holds secret ESP keys; \
anyone who has it can decrypt and forge this traffic. Keep it off shared storage.";

pub fn run(args: KeysArgs) -> ExitCode {
    let KeysCommand::Export { socket, .. } = args.command;
    let export = match ask(&socket, Request::KeysExport) {
        Ok(Response::KeysExport(export)) => export,
        Ok(_) => return unexpected("keys export"),
        Err(code) => return code,
    };
    eprintln!("{WARNING}");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = 0;
    for sa in &export.sas {
        match wireshark_line(sa) {
            Ok(line) => {
                if let Err(error) = writeln!(out, "{}", line.as_str()) {
                    eprintln!("dvipsecctl keys export: writing to stdout: {error}");
                    return ExitCode::FAILURE;
                }
                written += 1;
            }
            Err(error) => eprintln!("dvipsecctl keys export: skipped: {error}"),
        }
    }
    if written == 0 {
        eprintln!("dvipsecctl keys export: no SA could be exported");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
