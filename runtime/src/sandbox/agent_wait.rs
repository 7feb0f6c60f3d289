//! Waiting for a booting microVM's agent.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::VmProcess;
use crate::agent::{connect_hybrid_vsock, AgentCallError, AgentClient, AgentVersion};

/// Why the agent was not reached.
#[derive(Debug, thiserror::Error)]
pub enum WaitAgentError {
    /// The VMM process ended first.
    #[error("the VMM ended before the agent answered ({status})\n{logs}")]
    VmmEnded {
        /// How it ended.
        status: std::process::ExitStatus,
        /// The end of its logs and the guest console.
        logs: String,
    },
    /// Nothing answered in time.
    #[error("no agent after {timeout:?}: {last}\n{logs}")]
    Timeout {
        /// How long it waited.
        timeout: Duration,
        /// The last connection error.
        last: String,
        /// The end of the logs.
        logs: String,
    },
    /// The agent answered but refused, or speaks another API.
    #[error("agent: {source}\n{logs}")]
    Agent {
        /// The call's error.
        #[source]
        source: AgentCallError,
        /// The end of the logs.
        logs: String,
    },
}

/// How often [`wait_for_agent`] checks that the VMM still runs.
const WATCH_SLICE: Duration = Duration::from_millis(100);
/// How often it also knocks on the agent's port directly, in case the
/// agent's ready connection was lost: rarely, since each knock costs the
/// booting guest an interrupt.
const FALLBACK_KNOCK: Duration = Duration::from_secs(2);
/// How long one connection attempt may wait for the guest's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Connects to the agent of a booting VM once it says it is ready (or
/// answers a rare direct knock), until `timeout`, and checks its API
/// version.
pub fn wait_for_agent(
    process: &mut VmProcess,
    timeout: Duration,
) -> Result<(AgentClient, AgentVersion), WaitAgentError> {
    let deadline = Instant::now() + timeout;
    let mut next_knock = Instant::now() + FALLBACK_KNOCK;
    let mut last = String::from("the agent never said it was ready");
    let stream = loop {
        if let Some(status) = process.try_wait() {
            return Err(WaitAgentError::VmmEnded {
                status,
                logs: process.logs(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitAgentError::Timeout {
                timeout,
                last,
                logs: process.logs(),
            });
        }
        let knock = if wait_ready(process, WATCH_SLICE.min(deadline - now)) {
            // Ready: its server listens, so this normally connects at once;
            // a failure is retried on the next turn.
            true
        } else {
            Instant::now() >= next_knock
        };
        if !knock {
            continue;
        }
        next_knock = Instant::now() + FALLBACK_KNOCK;
        match connect_hybrid_vsock(
            &process.paths().vsock,
            husk_protocol::AGENT_VSOCK_PORT,
            CONNECT_TIMEOUT,
        ) {
            Ok(stream) => break stream,
            Err(e) => {
                last = e.to_string();
                if process.ready_listener().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    };
    let agent_err = |source, process: &VmProcess| WaitAgentError::Agent {
        source,
        logs: process.logs(),
    };
    let client = AgentClient::new(stream).map_err(|e| agent_err(e, process))?;
    let version = client.version().map_err(|e| agent_err(e, process))?;
    Ok((client, version))
}

/// Waits up to `slice` for the agent's ready connection; true once it has
/// come (now or before).
fn wait_ready(process: &mut VmProcess, slice: Duration) -> bool {
    let Some(listener) = process.ready_listener() else {
        return true;
    };
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(slice.as_millis()).unwrap_or(u16::MAX);
    if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
        return false;
    }
    match listener.accept() {
        Ok(_) => {
            process.agent_is_ready();
            true
        }
        Err(_) => false,
    }
}
