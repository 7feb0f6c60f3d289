//! Device models. Each is a state machine that can be driven without KVM;
//! the VMM wires them to buses, interrupts and the event loop.

pub mod bus;
pub mod legacy;
pub mod virtio;
