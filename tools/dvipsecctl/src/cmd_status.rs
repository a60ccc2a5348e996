//! `dvipsecctl status`: the box's role, its DVIPAs, peers and links. Also holds what every
//! control-socket command shares: `--socket`, `--json` and one request/answer round.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dvipsec_config::SiteConfig;
use dvipsec_control::protocol::{DvipaRelation, Role, StatusReport};
use dvipsec_control::{ControlClient, Request, Response};

/// Where the box's control socket is unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/dvipsec/control.sock";

/// Which box to ask: a socket path, or a node of a site file (its `control.socket`, by default
/// `/run/dvipsec/NODE.sock`).
#[derive(Args, Debug, Clone)]
pub struct SocketArgs {
    /// The box's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, conflicts_with = "node")]
    pub socket: PathBuf,
    /// The box by its node name: its socket is the one the site file (`--site`) gives it, or
    /// /run/dvipsec/NODE.sock without one.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The site configuration that `--node` is looked up in.
    #[arg(long, value_name = "FILE", requires = "node")]
    pub site: Option<PathBuf>,
}

impl SocketArgs {
    /// The socket to connect to; a site file that does not load or lacks the node is an error.
    pub fn path(&self) -> Result<PathBuf, String> {
        let Some(node) = &self.node else {
            return Ok(self.socket.clone());
        };
        let Some(site) = &self.site else {
            return Ok(dvipsec_config::default_control_socket(node));
        };
        let config = SiteConfig::load(site).map_err(|e| e.render().trim_end().to_owned())?;
        config
            .node_view(node)
            .map(|view| view.control_socket)
            .map_err(|e| e.to_string())
    }
}

/// Which box to ask, and how to print the listing.
#[derive(Args, Debug, Clone)]
pub struct ListingArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print the box's answer as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Sends `request` to the box; on failure prints `dvipsecctl COMMAND: SOCKET: error`.
pub fn ask(socket: &SocketArgs, request: Request) -> Result<Response, ExitCode> {
    let command = request.name();
    let path = socket.path().map_err(|error| {
        eprintln!("dvipsecctl {command}: {error}");
        ExitCode::FAILURE
    })?;
    let answer = ControlClient::connect(&path).and_then(|mut client| client.request(request));
    answer.map_err(|error| {
        eprintln!("dvipsecctl {command}: {}: {error}", path.display());
        ExitCode::FAILURE
    })
}

/// Prints the answer as JSON, or with `human` when `--json` is not given.
pub fn print_listing<T: serde::Serialize>(
    args: &ListingArgs,
    report: &T,
    human: impl FnOnce(&T) -> String,
) -> ExitCode {
    let text = if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("dvipsecctl: cannot encode the answer as JSON: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        human(report)
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// Says the box answered something other than what was asked.
pub fn unexpected(command: &str) -> ExitCode {
    eprintln!("dvipsecctl {command}: the box answered a different request");
    ExitCode::FAILURE
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Distributor => "distributor",
        Role::Target => "target",
        Role::Backup => "backup",
    }
}

fn relation_name(relation: DvipaRelation) -> &'static str {
    match relation {
        DvipaRelation::Owns => "owns",
        DvipaRelation::Backs => "backs",
        DvipaRelation::Serves => "serves",
    }
}

fn up_name(up: Option<bool>) -> &'static str {
    match up {
        Some(true) => "up",
        Some(false) => "DOWN",
        None => "unknown",
    }
}

fn human(status: &StatusReport) -> String {
    let mut out = format!("{}: {}\n", status.name, role_name(status.role));
    for dvipa in &status.dvipas {
        out += &format!(
            "  dvipa {} {}\n",
            dvipa.dvipa,
            relation_name(dvipa.relation)
        );
    }
    for peer in &status.peers {
        out += &format!(
            "  peer  {} {} {} link {}\n",
            peer.name,
            peer.xcf_address,
            role_name(peer.role),
            up_name(peer.link_up)
        );
    }
    for link in &status.links {
        out += &format!(
            "  link  {} state {} rx {} tx {} dropped {}\n",
            link.name,
            up_name(link.up),
            link.rx_packets,
            link.tx_packets,
            link.drops
        );
    }
    out
}

pub fn run(args: ListingArgs) -> ExitCode {
    match ask(&args.socket, Request::Status) {
        Ok(Response::Status(status)) => print_listing(&args, &status, human),
        Ok(_) => unexpected("status"),
        Err(code) => code,
    }
}
