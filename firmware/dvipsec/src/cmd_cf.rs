//! `dvipsec cf serve`: the networked coupling facility, for boxes that share no memory.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};
use dvipsec_cf::server::{self, BlockSizes};
use dvipsec_cf::CfError;

#[derive(Args, Debug)]
pub struct CfArgs {
    #[command(subcommand)]
    command: CfCommand,
}

#[derive(Subcommand, Debug)]
enum CfCommand {
    /// Serves sequence numbers, replay state and lifesize counters over TCP.
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// Directory of the persistent state (created if missing; a corrupt state stops the
        /// server).
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
}

pub fn run(args: CfArgs) -> ExitCode {
    let CfCommand::Serve { listen, state } = args.command;
    match serve(listen, state) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dvipsec cf serve: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(listen: SocketAddr, state: PathBuf) -> Result<(), CfError> {
    let core = server::open_file_core(&state, BlockSizes::default())?;
    let listener = TcpListener::bind(listen).map_err(|e| CfError::Io {
        context: format!("listening on {listen}"),
        source: e,
    })?;
    let bound = listener.local_addr().map_err(|e| CfError::Io {
        context: "reading the listening address".into(),
        source: e,
    })?;
    let announcement = format!(
        "cf serving on {bound} incarnation {:#018x} epoch {}",
        core.incarnation(),
        core.epoch()
    );
    let mut stdout = std::io::stdout();
    // The address line is what scripts wait for; a closed stdout must not stop the server.
    let _ = writeln!(stdout, "{announcement}").and_then(|()| stdout.flush());
    server::serve(listener, Arc::new(Mutex::new(core)))
}
