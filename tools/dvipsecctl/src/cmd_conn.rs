//! `dvipsecctl conn list`: configured connections, in the spirit of `swanctl --list-conns`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_control::protocol::ConnListReport;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct ConnArgs {
    #[command(subcommand)]
    command: ConnCommand,
}

#[derive(Subcommand, Debug)]
enum ConnCommand {
    /// Lists the configured connections.
    List(ListingArgs),
}

fn human(list: &ConnListReport) -> String {
    let mut out = String::new();
    for conn in &list.conns {
        out += &format!(
            "{}: {}...{} IKEv2\n  {}: {}\n    local:  {}\n    remote: {}\n    esp:    {}\n",
            conn.name,
            conn.local,
            conn.remote,
            conn.name,
            conn.mode.to_uppercase(),
            conn.local_ts.join(" "),
            conn.remote_ts.join(" "),
            conn.esp_proposals.join(", ")
        );
    }
    if out.is_empty() {
        out = "no connections\n".into();
    }
    out
}

pub fn run(args: ConnArgs) -> ExitCode {
    let ConnCommand::List(args) = args.command;
    match ask(&args.socket, Request::ConnList) {
        Ok(Response::ConnList(list)) => print_listing(&args, &list, human),
        Ok(_) => unexpected("conn list"),
        Err(code) => code,
    }
}
