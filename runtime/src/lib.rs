//! husk: a lightweight-VM container runtime.
//!
//! Each pod runs in its own KVM microVM with a guest agent. This crate holds
//! the VMM ([`vmm`]), its device models ([`devices`]), the architecture
//! setup ([`arch`]), the host-side agent client ([`agent`]) and the husk
//! configuration file ([`config`]). The `husk` binary is a thin CLI over it.

#![warn(missing_docs)]

pub mod agent;
pub mod arch;
pub mod config;
pub mod container;
pub mod devices;
pub mod oci;
pub mod sandbox;
pub mod vmm;

/// An error and its sources, `: `-separated, for one-line reports.
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
