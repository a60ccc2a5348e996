//! `dvipsecctl config check FILE [--node NAME]`: validates a site configuration where the
//! operator stands, and says for each node where its control socket and metrics endpoint are.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dvipsec_config::{check_site, NodeView, EXIT_INVALID};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validates FILE: two lines per node (roles and DVIPAs; operator endpoints) and exit 0,
    /// or `FILE:LINE:COLUMN: message` per error and exit 2.
    Check {
        file: PathBuf,
        /// Only this node (an unknown node is an error).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

fn endpoints(view: &NodeView) -> String {
    let metrics = view.metrics_listen.map_or_else(
        || "none".to_owned(),
        |address| format!("http://{address}/metrics"),
    );
    format!(
        "  control socket {}; metrics {metrics}\n",
        view.control_socket.display()
    )
}

fn check(file: &Path, node: Option<&str>) -> Result<String, dvipsec_config::ConfigError> {
    Ok(check_site(file, node)?
        .views
        .iter()
        .map(|view| format!("{}\n{}", view.summary(), endpoints(view)))
        .collect())
}

pub fn run(args: ConfigArgs) -> ExitCode {
    let ConfigCommand::Check { file, node } = args.command;
    match check(&file, node.as_deref()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprint!("{}", error.render());
            ExitCode::from(EXIT_INVALID)
        }
    }
}
