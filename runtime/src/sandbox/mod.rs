//! Sandboxes: a microVM in its own VMM process, its state directory, and
//! the connection to its agent.

pub mod agent_wait;
pub mod mount_ns;
pub mod vm_process;

pub use agent_wait::{wait_for_agent, WaitAgentError};
pub use vm_process::{SpawnOptions, SpawnVmError, VmProcess, VmProcessPaths};
