//! `dvipsecctl takeover DVIPA`: asks the box to take the DVIPA over (a planned move).

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct TakeoverArgs {
    /// The DVIPA to move to this box.
    #[arg(value_name = "DVIPA")]
    dvipa: IpAddr,
    #[command(flatten)]
    listing: ListingArgs,
}

pub fn run(args: TakeoverArgs) -> ExitCode {
    let request = Request::Takeover { dvipa: args.dvipa };
    match ask(&args.listing.socket, request) {
        Ok(Response::Takeover(report)) => print_listing(&args.listing, &report, |r| {
            format!("takeover of {}: {}\n", r.dvipa, r.outcome)
        }),
        Ok(_) => unexpected("takeover"),
        Err(code) => code,
    }
}
