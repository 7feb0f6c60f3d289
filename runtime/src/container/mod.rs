//! Containers: a bundle running in its own microVM, and the host process
//! (the monitor) that stands for it.

pub mod console;
pub mod exec;
pub mod hooks;
pub mod host_cgroup;
pub mod lifecycle;
pub mod monitor;
pub mod sizing;
pub mod state;
pub mod stdio;

pub use state::{ContainerDir, ContainerDirError, ContainerState, Status};
