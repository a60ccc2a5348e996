//! `dvipsecctl sa list`: the distributor's SAD or a target's shadow SAs, in the spirit of
//! `ip -s xfrm state` and `swanctl --list-sas`. Never keys.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_control::protocol::{SaEntry, SaListReport, SaLocation};
use dvipsec_control::{Request, Response};

use crate::cmd_status::{ask, print_listing, unexpected, ListingArgs};

#[derive(Args, Debug)]
pub struct SaArgs {
    #[command(subcommand)]
    command: SaCommand,
}

#[derive(Subcommand, Debug)]
enum SaCommand {
    /// Lists the SAs: SPI, suite, mode, bytes and packets, lifetime left.
    List(ListingArgs),
}

fn limit(left: Option<u64>, unit: &str) -> String {
    match left {
        Some(n) => format!("{n}({unit})"),
        None => format!("unlimited({unit})"),
    }
}

fn human_sa(sa: &SaEntry) -> String {
    let location = match sa.location {
        SaLocation::Sad => "sad",
        SaLocation::Shadow => "shadow",
    };
    let (src, dst) = sa.tunnel.unwrap_or(match sa.direction.as_str() {
        "inbound" => (sa.peer, sa.dvipa),
        _ => (sa.dvipa, sa.peer),
    });
    let mut out = format!("src {src} dst {dst}\n");
    out += &format!(
        "\tproto {} spi 0x{:08x} {} mode {} suite {} ({location}, cf slot {})\n",
        sa.protocol, sa.spi, sa.direction, sa.mode, sa.suite, sa.cf_slot
    );
    if let Some((sport, dport)) = sa.udp_encap {
        out += &format!("\tencap type espinudp sport {sport} dport {dport}\n");
    }
    out += &format!("\tsel src {} dst {}\n", sa.remote_ts, sa.local_ts);
    out += &format!(
        "\tlifetime current:\n\t  {}(bytes), {}(packets)\n",
        sa.bytes, sa.packets
    );
    out += &format!(
        "\tlifetime left: {}\n\t  {}, {}, {}\n",
        sa.lifetime_state,
        limit(sa.lifetime_left.bytes, "bytes"),
        limit(sa.lifetime_left.packets, "packets"),
        limit(sa.lifetime_left.seconds, "seconds"),
    );
    out += &format!(
        "\tstats:\n\t  replay {} failed {}\n",
        sa.replays, sa.auth_failures
    );
    out
}

fn human(list: &SaListReport) -> String {
    if list.sas.is_empty() {
        return "no SAs\n".into();
    }
    list.sas.iter().map(human_sa).collect()
}

pub fn run(args: SaArgs) -> ExitCode {
    let SaCommand::List(args) = args.command;
    match ask(&args.socket, Request::SaList) {
        Ok(Response::SaList(list)) => print_listing(&args, &list, human),
        Ok(_) => unexpected("sa list"),
        Err(code) => code,
    }
}
