//! Sandboxes: a microVM in its own VMM process, its state directory, and
//! the connection to its agent.

pub mod agent_wait;
pub mod mount_ns;
pub mod network;
pub mod vm_process;

pub use agent_wait::{wait_for_agent, WaitAgentError};
pub use network::{JoinNetworkError, JoinedNetwork, NetworkRecord};
pub use vm_process::{
    net_configs, SpawnOptions, SpawnVmError, VmProcess, VmProcessPaths, TAP_FD_BASE,
};
