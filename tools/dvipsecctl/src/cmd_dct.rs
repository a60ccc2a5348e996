//! `dvipsecctl dct list`: the distributor's connection table.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_control::protocol::DctReport;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct DctArgs {
    #[command(subcommand)]
    command: DctCommand,
}

#[derive(Subcommand, Debug)]
enum DctCommand {
    /// Lists the DCT: entries, counters and the flows the box can enumerate.
    List(ListingArgs),
}

fn human(dct: &DctReport) -> String {
    let mut out = format!(
        "dct: {} entries, added {}, expired {}, closed {}, refused (full) {}\n",
        dct.entries, dct.added, dct.expired, dct.closed, dct.full_drops
    );
    for flow in &dct.flows {
        out += &format!(
            "  proto {} {}:{} -> {}:{} target {}\n",
            flow.protocol, flow.src, flow.src_port, flow.dst, flow.dst_port, flow.target
        );
    }
    out
}

pub fn run(args: DctArgs) -> ExitCode {
    let DctCommand::List(args) = args.command;
    match ask(&args.socket, Request::DctList) {
        Ok(Response::DctList(dct)) => print_listing(&args, &dct, human),
        Ok(_) => unexpected("dct list"),
        Err(code) => code,
    }
}
