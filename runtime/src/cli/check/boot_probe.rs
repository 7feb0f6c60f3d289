//! The last line of `husk check`: boot a 1-vCPU, 128 MiB microVM to the
//! agent, ask its version, shut it down.

use std::time::Duration;

use husk::config::HuskConfig;
use husk::sandbox::{wait_for_agent, VmProcess};

/// What the boot probe saw.
pub struct BootResult {
    /// One line for the report.
    pub detail: String,
    /// From starting the VMM process to the agent's first answer.
    pub agent_ready: Duration,
}

/// Guest CID of the probe VM (any CID works: its vsock is private).
const PROBE_CID: u64 = 3;
/// How long the guest has to reset after the agent's shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Boots the probe VM and returns its timings, or why it failed (with the
/// end of the console and VMM logs).
pub fn boot_to_agent(config: &HuskConfig, timeout: Duration) -> Result<BootResult, String> {
    let husk_bin =
        std::env::current_exe().map_err(|e| format!("cannot find the husk binary: {e}"))?;
    let dir = config
        .state_dir
        .join(format!("check-{}", std::process::id()));
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("cannot create {:?}: {e}", config.state_dir))?;
    let vm = config.vm_config(1, 128);
    let mut process =
        VmProcess::spawn(&husk_bin, vm, &dir, PROBE_CID).map_err(|e| format!("{e:#}"))?;
    let fail = |process: &VmProcess, why: String| format!("{why}\n{}", process.logs());
    let (client, version) = wait_for_agent(&mut process, timeout).map_err(|e| format!("{e}"))?;
    let agent_ready = process.started().elapsed();
    if let Err(e) = client.shutdown() {
        return Err(fail(&process, format!("agent shutdown call: {e:#}")));
    }
    drop(client);
    match process.wait_timeout(SHUTDOWN_TIMEOUT) {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(fail(
                &process,
                format!("the VMM ended with {status} after shutdown"),
            ))
        }
        None => {
            return Err(fail(
                &process,
                format!("the guest did not reset within {SHUTDOWN_TIMEOUT:?} of shutdown"),
            ))
        }
    }
    Ok(BootResult {
        detail: format!("1 vCPU, 128 MiB, agent {version}"),
        agent_ready,
    })
}
