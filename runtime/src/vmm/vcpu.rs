//! vCPU threads.
//!
//! Each vCPU runs [`run_vcpu`] on its own thread: a loop around `KVM_RUN`
//! that dispatches port and MMIO exits to the buses and turns every other
//! way out of the guest into a [`VcpuEvent`] for the VMM thread. The loop
//! is a small state machine ([`VcpuState`]): it keeps running until the
//! VMM asks it to stop (a shared flag plus a kick signal that interrupts
//! `KVM_RUN`) or the guest ends (reset, triple fault, an error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::bus::Bus;

/// `KVM_SYSTEM_EVENT_SHUTDOWN`: the guest powered off (PSCI/ACPI).
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`: the guest asked for a reset.
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// Why a vCPU stopped running the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The guest asked for a reset or power-off through the hypervisor.
    GuestReset,
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault {
        /// The vCPU that faulted.
        vcpu: u8,
    },
    /// KVM could not run the guest any more.
    Error {
        /// The failing vCPU.
        vcpu: u8,
        /// What went wrong.
        reason: String,
    },
}

/// What the vCPU loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Enter the guest again.
    Running,
    /// Leave the loop; report the event, if any.
    Exited(Option<VcpuEvent>),
}

/// The devices and signals a vCPU thread shares with the VMM.
#[derive(Clone)]
pub struct VcpuContext {
    /// Port-I/O devices.
    pub pio_bus: Arc<Bus>,
    /// MMIO devices.
    pub mmio_bus: Arc<Bus>,
    /// Set by the VMM thread to ask every vCPU to leave its loop.
    pub stop: Arc<AtomicBool>,
    /// Where a vCPU reports why it stopped.
    pub events: Sender<VcpuEvent>,
    /// Written after an event is sent, to wake the VMM thread.
    pub exit_evt: Arc<EventFd>,
}

/// One exit from `KVM_RUN`, turned into the loop's next state.
fn handle_exit(id: u8, exit: VcpuExit<'_>, ctx: &VcpuContext) -> VcpuState {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio_bus.read(u64::from(port), data) {
                // Nothing on that port: the bus floats high.
                data.fill(0xff);
            }
            VcpuState::Running
        }
        VcpuExit::IoOut(port, data) => {
            ctx.pio_bus.write(u64::from(port), data);
            VcpuState::Running
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio_bus.read(addr, data) {
                log::debug!("vcpu{id}: MMIO read at unmapped {addr:#x}");
                data.fill(0);
            }
            VcpuState::Running
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio_bus.write(addr, data) {
                log::debug!("vcpu{id}: MMIO write at unmapped {addr:#x}");
            }
            VcpuState::Running
        }
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET | KVM_SYSTEM_EVENT_SHUTDOWN, _) => {
            VcpuState::Exited(Some(VcpuEvent::GuestReset))
        }
        VcpuExit::Shutdown => VcpuState::Exited(Some(VcpuEvent::TripleFault { vcpu: id })),
        VcpuExit::FailEntry(reason, cpu) => VcpuState::Exited(Some(VcpuEvent::Error {
            vcpu: id,
            reason: format!("KVM entry failed: hardware reason {reason:#x} on CPU {cpu}"),
        })),
        VcpuExit::InternalError => VcpuState::Exited(Some(VcpuEvent::Error {
            vcpu: id,
            reason: "KVM internal error (emulation failure)".into(),
        })),
        VcpuExit::Hlt => VcpuState::Exited(Some(VcpuEvent::Error {
            vcpu: id,
            reason: "guest halted with interrupts off".into(),
        })),
        other => VcpuState::Exited(Some(VcpuEvent::Error {
            vcpu: id,
            reason: format!("unexpected KVM exit {other:?}"),
        })),
    }
}

/// The vCPU loop. Returns when the guest ends or the VMM asks it to stop.
pub fn run_vcpu(id: u8, mut vcpu: VcpuFd, ctx: VcpuContext) {
    let mut state = VcpuState::Running;
    while state == VcpuState::Running {
        if ctx.stop.load(Ordering::Acquire) {
            state = VcpuState::Exited(None);
            break;
        }
        state = match vcpu.run() {
            Ok(exit) => handle_exit(id, exit, &ctx),
            // Kicked (or a spurious wake-up): look at the stop flag again.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => VcpuState::Running,
            Err(e) => VcpuState::Exited(Some(VcpuEvent::Error {
                vcpu: id,
                reason: format!("KVM_RUN failed: {e}"),
            })),
        };
    }
    if let VcpuState::Exited(Some(event)) = state {
        log::debug!("vcpu{id}: {event:?}");
        // The VMM thread may already be gone; nothing more to do then.
        let _ = ctx.events.send(event);
        let _ = ctx.exit_evt.write(1);
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that interrupts `KVM_RUN` on a vCPU thread.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the (empty) handler for the kick signal, so that it interrupts
/// `KVM_RUN` with `EINTR` instead of killing the process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), kick_handler)
}

/// Asks every vCPU thread to stop and waits for all of them.
///
/// The kick is repeated until each thread has left: a kick that lands just
/// before a thread enters `KVM_RUN` would otherwise be lost.
pub fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for thread in threads {
        while !thread.is_finished() {
            if let Err(e) = thread.kill(kick_signal()) {
                log::warn!("cannot kick a vCPU thread: {e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if thread.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}
