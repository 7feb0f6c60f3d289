//! The VMM: one microVM per process.
//!
//! # Thread model
//!
//! * The **VMM thread** (the process's main thread) builds the VM
//!   ([`builder::build_vm`]), starts the other threads, then runs the one
//!   device event loop (event-manager over epoll): the vsock device and its
//!   connections, the virtio-net devices and their taps (including the
//!   taps' offload ioctls after the guest's driver starts), console input,
//!   and the exit event. It owns teardown.
//! * One **vCPU thread** per vCPU ([`vcpu::run_vcpu`]) runs `KVM_RUN` and
//!   serves port-I/O and MMIO exits synchronously through the buses. Queue
//!   notifications do not go through it: they are ioeventfds that wake the
//!   event loop (or a device's worker) directly, and device interrupts are
//!   irqfds.
//! * The **virtio-fs worker** (`husk-fs`, when the VM has a shared
//!   directory) serves FUSE requests on its own
//!   ([`crate::devices::virtio::fs`]): it polls its two queue ioeventfds, a
//!   control event (activation and reset, sent by the device on a vCPU
//!   thread) and a stop event, so a slow host file system stalls neither
//!   the event loop nor a vCPU.
//! * The VM ends when the guest resets (i8042 or a KVM system event), a
//!   vCPU fails, or the VMM is signalled. The event that ended it is sent on
//!   a channel and `exit_evt` wakes the VMM thread, which sets the stop
//!   flag, kicks every vCPU out of `KVM_RUN` with a signal, joins them,
//!   stops the virtio-fs worker (waiting a bounded time for the request it
//!   is on), and drops the devices (removing their sockets).
//!
//! Start-up order, once the VM is built: the virtio-fs worker starts and
//! drops to its own capabilities ([`capabilities::FS_WORKER`]) and seccomp
//! filter before it reads a request; the VMM thread then drops every
//! capability (bounding, permitted, effective, inheritable, ambient); the
//! vCPU threads start after that, inheriting none, and install their
//! filter; the VMM thread installs its own last and enters the loop. Each
//! thread's seccomp filter ([`seccomp`]) is installed right before its
//! loop starts.

pub mod builder;
pub mod capabilities;
pub mod config;
pub mod console;
mod console_input;
mod exit;
pub mod seccomp;
pub mod vcpu;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use event_manager::SubscriberOps;

pub use builder::{build_vm, BuildVmError, Vm};
pub use config::{ConsoleConfig, FsConfig, NetConfig, VmConfig, VmConfigError, VsockConfig};

use exit::ExitWatcher;
use vcpu::{install_kick_handler, run_vcpu, stop_vcpus, VcpuContext, VcpuEvent};

/// How a microVM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset or powered off: the normal end.
    GuestReset,
    /// The guest triple-faulted.
    TripleFault,
    /// A vCPU could not go on.
    VcpuError(String),
}

impl VmExit {
    /// Exit status of the VMM process for this end.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::GuestReset => 0,
            VmExit::TripleFault => 2,
            VmExit::VcpuError(_) => 1,
        }
    }
}

impl From<VcpuEvent> for VmExit {
    fn from(event: VcpuEvent) -> Self {
        match event {
            VcpuEvent::GuestReset => VmExit::GuestReset,
            VcpuEvent::TripleFault { .. } => VmExit::TripleFault,
            VcpuEvent::Error { vcpu, reason } => {
                VmExit::VcpuError(format!("vCPU {vcpu}: {reason}"))
            }
        }
    }
}

/// Why a microVM could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunVmError {
    /// The config was refused.
    #[error("invalid VM config")]
    Config(#[source] VmConfigError),
    /// The VM could not be built.
    #[error("cannot build the VM")]
    Build(#[source] BuildVmError),
    /// The vCPU kick signal handler could not be installed.
    #[error("cannot install the vCPU kick handler")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    /// A seccomp filter could not be built or applied.
    #[error("seccomp")]
    Seccomp(#[source] seccomp::SeccompError),
    /// The VMM thread could not drop its capabilities.
    #[error("cannot drop the VMM's capabilities")]
    Capabilities(#[source] capabilities::CapsError),
    /// The virtio-fs worker could not be started.
    #[error("cannot start the virtio-fs worker")]
    FsWorker(#[source] crate::devices::virtio::fs::FsError),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread")]
    SpawnVcpu(#[source] std::io::Error),
    /// The event loop failed.
    #[error("event loop")]
    EventLoop(#[source] event_manager::Error),
}

/// Validates `config`, builds the VM, runs it until it ends, and tears it
/// down. Returns how the guest ended.
pub fn run_vm(config: &VmConfig) -> Result<VmExit, RunVmError> {
    config.validate().map_err(RunVmError::Config)?;
    install_kick_handler().map_err(RunVmError::KickHandler)?;
    let filters = if config.seccomp {
        Some(seccomp::compile_filters().map_err(RunVmError::Seccomp)?)
    } else {
        None
    };
    let mut vm = build_vm(config).map_err(RunVmError::Build)?;
    log::debug!("kernel command line: {}", vm.cmdline);

    // Capabilities are per thread: the worker drops to its own set first,
    // then this thread drops everything, and the vCPU threads inherit that.
    let roles = capabilities::RoleCaps::for_config(config);
    let _fs_worker = match vm.fs_worker.take() {
        Some(worker) => {
            let keep = roles.fs.unwrap_or(capabilities::CapSet::EMPTY);
            let filter = filters.as_ref().map(|f| f.fs.clone());
            let setup = move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                capabilities::restrict_thread(keep)?;
                if let Some(filter) = filter {
                    seccomp::apply(&filter)?;
                }
                Ok(())
            };
            Some(worker.spawn(setup).map_err(RunVmError::FsWorker)?)
        }
        None => None,
    };
    capabilities::restrict_thread(roles.vmm).map_err(RunVmError::Capabilities)?;

    let exit = Arc::new(Mutex::new(ExitWatcher::new(vm.exit_evt.clone())));
    vm.event_manager.add_subscriber(exit.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let ctx = VcpuContext {
        pio_bus: vm.pio_bus.clone(),
        mmio_bus: vm.mmio_bus.clone(),
        stop: stop.clone(),
        events: vm.vcpu_event_sender.clone(),
        exit_evt: vm.exit_evt.clone(),
    };
    let mut threads = Vec::with_capacity(vm.vcpus.len());
    for (id, vcpu) in vm.vcpus.drain(..).enumerate() {
        let ctx = ctx.clone();
        let filter = filters.as_ref().map(|f| f.vcpu.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("husk-vcpu{id}"))
            .spawn(move || {
                if let Some(filter) = filter {
                    if let Err(e) = seccomp::apply(&filter) {
                        let _ = ctx.events.send(VcpuEvent::Error {
                            vcpu: id as u8,
                            reason: format!("cannot apply the vCPU seccomp filter: {e}"),
                        });
                        let _ = ctx.exit_evt.write(1);
                        return;
                    }
                }
                run_vcpu(id as u8, vcpu, ctx)
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                stop_vcpus(&stop, threads);
                return Err(RunVmError::SpawnVcpu(e));
            }
        }
    }

    if let Some(filters) = &filters {
        if let Err(e) = seccomp::apply(&filters.vmm) {
            stop_vcpus(&stop, threads);
            return Err(RunVmError::Seccomp(e));
        }
    }

    let result = loop {
        if let Err(e) = vm.event_manager.run() {
            break Err(RunVmError::EventLoop(e));
        }
        if exit.lock().unwrap_or_else(|p| p.into_inner()).fired() {
            let event = vm.vcpu_events.try_recv().ok();
            break Ok(event.map(VmExit::from).unwrap_or(VmExit::GuestReset));
        }
    };
    stop_vcpus(&stop, threads);
    // `_fs_worker` is stopped as it goes out of scope, after the vCPUs.
    result
}
