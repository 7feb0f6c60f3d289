//! `containerd-shim-husk-v2`: containerd's shim v2 for husk.
//!
//! containerd runs it once per pod (`start`), and the daemon it leaves
//! serves the task API for every container of that pod, all inside one
//! microVM. `delete` cleans up after a shim that died.

mod error;
mod events;
mod grouping;
mod pod;
mod service;
mod shim;
mod stdio;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.husk.v2";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let serving = containerd_shim::parse(&args[1..]).is_ok_and(|flags| flags.action.is_empty());
    if serving {
        // Before any thread exists: the rootfs mounts of the pod's containers
        // then live only in the shim's (and its VMM's) mount namespace.
        if let Err(e) = pod::mounts::enter_own_namespace() {
            eprintln!("{RUNTIME_ID}: cannot make a mount namespace for the pod: {e}");
            std::process::exit(1);
        }
    }
    let config = containerd_shim::Config {
        // The VMM is our only child and is waited for by its owner; the
        // containers' processes live in the guest.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<shim::HuskShim>(RUNTIME_ID, Some(config));
}
