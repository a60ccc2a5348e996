//! `dvipsecctl ike list`: IKE SAs, in the spirit of `swanctl --list-sas`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_control::protocol::IkeListReport;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct IkeArgs {
    #[command(subcommand)]
    command: IkeCommand,
}

#[derive(Subcommand, Debug)]
enum IkeCommand {
    /// Lists the IKE SAs and their child SAs.
    List(ListingArgs),
}

fn human(list: &IkeListReport) -> String {
    let mut out = String::new();
    for ike in &list.ike_sas {
        out += &format!(
            "{}: {}, {}[{}]...{}\n  spis {}_i {}_r\n",
            ike.name,
            ike.state,
            ike.local,
            ike.local,
            ike.remote,
            ike.initiator_spi,
            ike.responder_spi
        );
        for (spi_in, spi_out) in &ike.children {
            out += &format!("  child: in 0x{spi_in:08x}, out 0x{spi_out:08x}\n");
        }
    }
    if out.is_empty() {
        out = "no IKE SAs\n".into();
    }
    out
}

pub fn run(args: IkeArgs) -> ExitCode {
    let IkeCommand::List(args) = args.command;
    match ask(&args.socket, Request::IkeList) {
        Ok(Response::IkeList(list)) => print_listing(&args, &list, human),
        Ok(_) => unexpected("ike list"),
        Err(code) => code,
    }
}
