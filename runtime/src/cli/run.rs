//! `husk run`: create and start a container, and (unless `--detach`) wait
//! for it and exit with its status.

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle;

use super::create::{self, CreateArgs};
use super::Globals;

/// Arguments of `husk run`: those of create, and `--detach`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Return once the container runs.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Keep the state after the container ends (default: remove it).
    #[arg(long)]
    pub keep: bool,
    /// As for create.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// Runs it.
pub fn run(args: RunArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let opts = create::options(&args.create, globals)?;
    let mut created = lifecycle::create(&opts)?;
    if let Err(e) = lifecycle::start(&globals.root, &opts.id) {
        let _ = lifecycle::delete(&globals.root, &opts.id, true);
        return Err(e.into());
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let status = created.monitor.wait()?;
    if !args.keep {
        lifecycle::delete(&globals.root, &opts.id, true)?;
    }
    Ok(super::exit_code(super::status_code(status)))
}
