//! `husk pause` and `husk resume`: freeze and thaw the container's cgroup
//! in the guest.

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle::{self, LifecycleError};
use husk::container::{ContainerDir, Status};

use super::Globals;

/// Arguments of `husk pause` / `husk resume`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The container id.
    pub id: String,
}

/// Freezes it.
pub fn pause(args: PauseArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dir = ContainerDir::open(&globals.root, &args.id)?;
    lifecycle::expect_status(&dir, "pause", &[Status::Running], "")?;
    lifecycle::connect(&dir)?
        .pause_container(&args.id)
        .map_err(|e| LifecycleError::Call(args.id.clone(), e))?;
    dir.update(|s| s.status = Status::Paused)?;
    Ok(ExitCode::SUCCESS)
}

/// Thaws it.
pub fn resume(args: PauseArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dir = ContainerDir::open(&globals.root, &args.id)?;
    lifecycle::expect_status(&dir, "resume", &[Status::Paused], "")?;
    lifecycle::connect(&dir)?
        .resume_container(&args.id)
        .map_err(|e| LifecycleError::Call(args.id.clone(), e))?;
    dir.update(|s| s.status = Status::Running)?;
    Ok(ExitCode::SUCCESS)
}
