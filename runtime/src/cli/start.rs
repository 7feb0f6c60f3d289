//! `husk start`: start a created container's process.

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle;

use super::Globals;

/// Arguments of `husk start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The container id.
    pub id: String,
}

/// Starts it.
pub fn run(args: StartArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    lifecycle::start(&globals.root, &args.id)?;
    Ok(ExitCode::SUCCESS)
}
