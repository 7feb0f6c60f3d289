//! The husk agent API, shared by the runtime (client) and the guest agent
//! (server): protobuf messages and ttrpc services generated from
//! `proto/agent.proto`, and the constants both sides agree on.

#![allow(missing_docs)]

/// What ttrpc-codegen generates: protobuf messages and the ttrpc glue
/// (`agent_ttrpc` refers to its messages as `super::agent`).
#[allow(
    clippy::all,
    clippy::pedantic,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_upper_case_globals,
    unused_imports,
    dead_code
)]
mod generated {
    /// The protobuf messages.
    pub mod agent {
        include!(concat!(env!("OUT_DIR"), "/agent.rs"));
    }

    /// The ttrpc client and server glue.
    pub mod agent_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
    }
}

pub use generated::{agent, agent_ttrpc};

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The vsock port of process stdio streams (see `Stdio` in the .proto).
pub const STDIO_VSOCK_PORT: u32 = 1025;

/// The host vsock port the agent connects to once it serves its API. The
/// host waits for that connection instead of knocking on the guest's port
/// while it boots: each knock costs the booting guest an interrupt and a
/// reply, which adds up when many guests boot on few CPUs.
pub const READY_VSOCK_PORT: u32 = 1026;

/// The API version this build speaks. Peers with another version refuse
/// each other with a clear message instead of a decode error.
///
/// 2: `ConfigureNetwork`, and the agent connects to [`READY_VSOCK_PORT`]
/// once it serves.
pub const API_VERSION: u32 = 2;

/// An error and its sources, `: `-separated, for one-line reports on
/// either side of the API.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
