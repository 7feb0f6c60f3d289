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

pub use husk_protocol::error_chain;
