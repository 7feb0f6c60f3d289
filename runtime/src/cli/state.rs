//! `husk state`: the container's state as the runtime spec defines it.

use std::process::ExitCode;

use clap::Args;
use husk::container::{ContainerDir, ContainerState};

use super::Globals;

/// Arguments of `husk state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The container id.
    pub id: String,
}

/// The runtime-spec state object (plus runc's `rootfs`, `created`, `owner`).
pub fn state_json(state: &ContainerState) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": state.oci_version,
        "id": state.id,
        "status": state.status.to_string(),
        "pid": if state.status == husk::container::Status::Stopped { 0 } else { state.pid },
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": "",
        "annotations": state.annotations,
    })
}

/// Prints it.
pub fn run(args: StateArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let state = ContainerDir::open(&globals.root, &args.id)?.read()?;
    println!("{}", serde_json::to_string_pretty(&state_json(&state))?);
    Ok(ExitCode::SUCCESS)
}
