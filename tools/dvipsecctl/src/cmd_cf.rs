//! `dvipsecctl cf take`: takes numbers from a CF slot, for operators and diagnostics.

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
}

pub fn run(args: CfArgs) -> ExitCode {
    let CfCommand::Take {
        server,
        slot,
        count,
    } = args.command;
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
