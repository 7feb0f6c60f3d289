//! `husk`: the command line of the husk runtime.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    args.init_logging();
    let monitor = matches!(args.command, cli::Command::Monitor(_));
    let logs_to_file = monitor || args.log.is_some();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // A log file (runc's --log, read by containerd's shim) gets the
            // error too; the monitor's stderr belongs to the container.
            if logs_to_file {
                log::error!("{e:#}");
            }
            if !monitor {
                eprintln!("husk: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
