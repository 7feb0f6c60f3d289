//! Waiting for a booting microVM's agent.

use std::time::{Duration, Instant};

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

/// Connects to the agent of a booting VM, retrying until `timeout`, and
/// checks its API version.
pub fn wait_for_agent(
    process: &mut VmProcess,
    timeout: Duration,
) -> Result<(AgentClient, AgentVersion), WaitAgentError> {
    let deadline = Instant::now() + timeout;
    let stream = loop {
        if let Some(status) = process.try_wait() {
            return Err(WaitAgentError::VmmEnded {
                status,
                logs: process.logs(),
            });
        }
        match connect_hybrid_vsock(
            &process.paths().vsock,
            husk_protocol::AGENT_VSOCK_PORT,
            Duration::from_millis(500),
        ) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() >= deadline => {
                return Err(WaitAgentError::Timeout {
                    timeout,
                    last: e.to_string(),
                    logs: process.logs(),
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
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
