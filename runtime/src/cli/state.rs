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

/// The runtime-spec state object, plus runc's `rootfs`, `created` and
/// `owner` and husk's `oomKilled` (whether the guest's OOM killer ended the
/// process), extra fields that runc-compatible parsers ignore.
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
        "oomKilled": state.oom_killed,
        "annotations": state.annotations,
    })
}

/// Prints it.
pub fn run(args: StateArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let state = ContainerDir::open(&globals.root, &args.id)?.read()?;
    println!("{}", serde_json::to_string_pretty(&state_json(&state))?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk::container::Status;

    fn stopped(oom_killed: bool) -> ContainerState {
        ContainerState {
            oci_version: husk::container::state::OCI_VERSION.into(),
            id: "c1".into(),
            status: Status::Stopped,
            pid: 42,
            pid_start_time: 7,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-12-01T00:00:00.000000000Z".into(),
            annotations: [("k".to_string(), "v".to_string())].into(),
            exit_status: Some(137),
            oom_killed,
            network: None,
            host_cgroup: None,
        }
    }

    #[test]
    fn the_spec_fields_and_whether_the_oom_killer_ended_it() {
        let json = state_json(&stopped(true));
        for field in ["ociVersion", "id", "status", "pid", "bundle", "annotations"] {
            assert!(json.get(field).is_some(), "no {field}: {json}");
        }
        assert_eq!(json["status"], "stopped");
        assert_eq!(json["pid"], 0, "a stopped container has no pid");
        assert_eq!(json["annotations"]["k"], "v");
        assert_eq!(json["oomKilled"], true);
        assert_eq!(state_json(&stopped(false))["oomKilled"], false);
    }
}
