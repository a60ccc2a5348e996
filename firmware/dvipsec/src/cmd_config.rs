//! `dvipsec config check|show`: validate a site configuration and print a node's part.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
// The exit status of a site that does not load (clap uses 2 for usage errors too).
use dvipsec_config::{check_site, ConfigError, NodeView, SiteConfig, EXIT_INVALID};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validates FILE. Prints one line per node (its roles and the DVIPAs it owns, backs
    /// and serves) and exits 0, or prints `FILE:LINE:COLUMN: message` per error and exits 2.
    Check {
        file: PathBuf,
        /// Print only this node's line (and fail if there is no such node).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Also read every secret the node (or the whole site) needs, to prove it is
        /// available. Secrets are never printed.
        #[arg(long)]
        secrets: bool,
    },
    /// Prints the resolved view of one node: what it owns, backs and serves, and its peers.
    Show {
        file: PathBuf,
        #[arg(long, value_name = "NAME")]
        node: String,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ConfigArgs) -> ExitCode {
    let result = match args.command {
        ConfigCommand::Check {
            file,
            node,
            secrets,
        } => check(&file, node.as_deref(), secrets),
        ConfigCommand::Show { file, node, json } => show(&file, &node, json),
    };
    match result {
        Ok(output) => print_output(&output),
        Err(CommandError::Config(error)) => {
            eprint!("{}", error.render());
            ExitCode::from(EXIT_INVALID)
        }
        Err(CommandError::Serialize(message)) => {
            eprintln!("dvipsec config show: cannot serialize the view: {message}");
            ExitCode::FAILURE
        }
    }
}

enum CommandError {
    Config(ConfigError),
    Serialize(String),
}

impl From<ConfigError> for CommandError {
    fn from(error: ConfigError) -> Self {
        CommandError::Config(error)
    }
}

fn check(file: &Path, node: Option<&str>, secrets: bool) -> Result<String, CommandError> {
    let checked = check_site(file, node)?;
    let (config, views) = (checked.config, checked.views);
    let mut output: String = views
        .iter()
        .map(|view| format!("{}\n", view.summary()))
        .collect();
    if secrets {
        let count = config.check_secrets(node)?;
        output.push_str(&format!("secrets: {count} readable\n"));
    }
    Ok(output)
}

fn show(file: &Path, node: &str, json: bool) -> Result<String, CommandError> {
    let config = SiteConfig::load(file)?;
    let view = config.node_view(node)?;
    render_view(&view, json).map_err(CommandError::Serialize)
}

fn render_view(view: &NodeView, json: bool) -> Result<String, String> {
    if json {
        serde_json::to_string_pretty(view)
            .map(|text| text + "\n")
            .map_err(|e| e.to_string())
    } else {
        view.to_yaml().map_err(|e| e.to_string())
    }
}

fn print_output(output: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dvipsec config: cannot write the output: {error}");
            ExitCode::FAILURE
        }
    }
}
