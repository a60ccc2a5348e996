//! `dvipsecctl metrics`: the box's Prometheus text exposition, as its endpoint would serve it.

use std::process::ExitCode;

use clap::Args;
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    #[command(flatten)]
    listing: ListingArgs,
}

pub fn run(args: MetricsArgs) -> ExitCode {
    match ask(&args.listing.socket, Request::Metrics) {
        Ok(Response::Metrics(metrics)) => {
            print_listing(&args.listing, &metrics, |m| m.text.clone())
        }
        Ok(_) => unexpected("metrics"),
        Err(code) => code,
    }
}
