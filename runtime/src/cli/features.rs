//! `husk features`: what this runtime supports (runtime-spec features.md).

use std::process::ExitCode;

/// Prints the features document.
pub fn run() -> anyhow::Result<ExitCode> {
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": husk::container::state::OCI_VERSION,
        "hooks": husk::container::hooks::SUPPORTED_HOOKS,
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec", "relatime", "private", "rprivate"],
        "linux": {
            "namespaces": ["mount", "pid", "uts", "ipc", "network"],
            "capabilities": [],
            "cgroup": { "v1": false, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"] },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "io.husk.runtime": "microvm"
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
