//! Sandboxes: a microVM in its own VMM process, its state directory, and
//! the connection to its agent.

pub mod vm_process;

pub use vm_process::{SpawnVmError, VmProcess, VmProcessPaths};
