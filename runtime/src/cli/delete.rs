//! `husk delete`: remove a container and everything it made.

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle;

use super::Globals;

/// Arguments of `husk delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it still runs.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// Deletes it; with `--force`, a container that does not exist is no error.
pub fn run(args: DeleteArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    match lifecycle::delete(&globals.root, &args.id, args.force) {
        Err(lifecycle::LifecycleError::Dir(husk::container::ContainerDirError::NotFound(_)))
            if args.force =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => {
            other?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
