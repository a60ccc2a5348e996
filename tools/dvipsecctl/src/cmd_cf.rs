//! `dvipsecctl cf take`: takes numbers from a CF slot, for operators and diagnostics.
//! `dvipsecctl cf show`: a box's view of the CF (epoch, slots, lifesize counters).

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_cf::proto::{Op, OpResult, MAX_OPS, MAX_TAKE};
use dvipsec_cf::{CfError, NetClient, SlotId};

#[derive(Args, Debug)]
pub struct CfArgs {
    #[command(subcommand)]
    command: CfCommand,
}

#[derive(Subcommand, Debug)]
enum CfCommand {
    /// Takes COUNT numbers from a slot and prints them in decimal, one per line.
    Take {
        /// The CF server.
        #[arg(long, value_name = "ADDR:PORT")]
        server: SocketAddr,
        /// The numeric slot id.
        #[arg(long, value_name = "N")]
        slot: u64,
        /// How many numbers to take (at least 1).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },
    /// Shows the CF as a box sees it: epoch, incarnation, slots and lifesize counters.
    Show(crate::cmd_status::ListingArgs),
}

pub fn run(args: CfArgs) -> ExitCode {
    let (server, slot, count) = match args.command {
        CfCommand::Take {
            server,
            slot,
            count,
        } => (server, slot, count),
        CfCommand::Show(listing) => return show(listing),
    };
    match take(server, SlotId(slot), count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dvipsecctl cf take: server {server} slot {slot}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The FetchAdd operations of one request, taking at most `remaining` numbers.
fn batch(slot: SlotId, remaining: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut left = remaining;
    while left > 0 && ops.len() < MAX_OPS {
        let count = left.min(u64::from(MAX_TAKE)) as u32;
        ops.push(Op::FetchAdd { slot, count });
        left -= u64::from(count);
    }
    ops
}

fn take(server: SocketAddr, slot: SlotId, count: u64) -> Result<(), CfError> {
    let client = NetClient::connect_adopting(server)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let write_error = |e| CfError::Io {
        context: "writing to stdout".into(),
        source: e,
    };
    let mut remaining = count;
    while remaining > 0 {
        let ops = batch(slot, remaining);
        let results = client.call(&ops)?;
        for (op, result) in ops.into_iter().zip(results) {
            let OpResult::Range(range) = client.check(op, result)? else {
                return Err(CfError::InvalidArgument(
                    "the server answered a take with something else",
                ));
            };
            for seq in range.iter() {
                writeln!(out, "{seq}").map_err(write_error)?;
            }
            remaining -= u64::from(range.count);
        }
    }
    out.flush().map_err(write_error)
}

fn show_human(cf: &dvipsec_control::protocol::CfReport) -> String {
    let mut out = format!(
        "cf: epoch {} incarnation {} slots {} in use {}\n",
        cf.epoch,
        cf.incarnation,
        cf.slot_capacity,
        cf.slots.len()
    );
    for slot in &cf.slots {
        out += &format!(
            "  slot {} dvipa {} spi 0x{:08x}\n    lifesize in  {}(bytes), {}(packets)\n    lifesize out {}(bytes), {}(packets)\n",
            slot.slot,
            slot.dvipa,
            slot.spi,
            slot.bytes_in,
            slot.packets_in,
            slot.bytes_out,
            slot.packets_out
        );
    }
    out
}

fn show(listing: crate::cmd_status::ListingArgs) -> ExitCode {
    use crate::cmd_status::{ask, print_listing, unexpected};
    match ask(&listing.socket, dvipsec_control::Request::CfShow) {
        Ok(dvipsec_control::Response::CfShow(cf)) => print_listing(&listing, &cf, show_human),
        Ok(_) => unexpected("cf show"),
        Err(code) => code,
    }
}
