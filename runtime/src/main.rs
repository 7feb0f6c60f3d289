//! `husk`: the command line of the husk runtime.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::logging::init(args.debug);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("husk: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
