//! virtio devices and their MMIO transport.
//!
//! A device implements [`VirtioDevice`]; [`mmio::MmioTransport`] puts it on
//! the MMIO bus, runs feature negotiation and queue setup for it, and calls
//! [`VirtioDevice::activate`] once the driver sets `DRIVER_OK`. Activation
//! happens on a vCPU thread; a device whose queues are served by the event
//! loop signals the loop (an activation `EventFd`) and registers its queue
//! events there.

pub mod balloon;
pub mod fs;
pub mod mmio;
pub mod net;
#[cfg(test)]
pub(crate) mod test_utils;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as the devices see it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// `VIRTIO_F_VERSION_1`: the only virtio version husk offers (no legacy).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// virtio device ids (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Memory balloon.
    pub const BALLOON: u32 = 5;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device.
    pub const FS: u32 = 26;
}

/// Interrupt status bit: a used buffer was added to a queue.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x01;
/// Interrupt status bit: the device configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x02;

/// A device's interrupt line: the status register the driver reads and
/// acknowledges, and the `EventFd` registered with KVM as an irqfd.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq_evt: EventFd,
}

impl VirtioInterrupt {
    /// An interrupt line that raises `irq_evt`.
    pub fn new(irq_evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irq_evt,
        }
    }

    /// The `EventFd` to register with KVM as the device's irqfd.
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// Raises the interrupt for a used buffer.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_VRING)
    }

    /// Raises the interrupt for a configuration change.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_CONFIG)
    }

    fn raise(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irq_evt.write(1)
    }

    /// The `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver's write to `InterruptACK`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears all pending bits (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver configured a different number of queues than the device has.
    #[error("driver set up {got} queues, device has {expected}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues the driver handed over.
        got: usize,
    },
    /// A queue the driver handed over is not valid.
    #[error("queue {index} is not valid")]
    InvalidQueue {
        /// Queue index.
        index: usize,
    },
    /// An `EventFd` could not be created, cloned or written.
    #[error("event fd")]
    EventFd(#[source] std::io::Error),
    /// The device's own backend failed to start.
    #[error("backend")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Everything a device needs when the driver sets `DRIVER_OK`.
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device's interrupt line.
    pub interrupt: Arc<VirtioInterrupt>,
    /// The queues as the driver configured them, in index order.
    pub queues: Vec<Queue>,
    /// One notification `EventFd` per queue (the transport's ioeventfds,
    /// cloned), in index order.
    pub queue_evts: Vec<EventFd>,
}

/// Copies `data.len()` bytes of a read-only config space from `offset`;
/// bytes beyond it read as zero.
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = offset
            .checked_add(i as u64)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// The queues and their notification fds of an activation, as arrays of a
/// device's own queue count `N`.
pub type ActiveQueues<const N: usize> = ([Queue; N], [EventFd; N]);

impl ActivateContext {
    /// Takes the queues and their fds out of the context, refusing a driver
    /// that set up other than `N`.
    pub fn take_queues<const N: usize>(&mut self) -> Result<ActiveQueues<N>, ActivateError> {
        let count = |got: usize| ActivateError::QueueCount { expected: N, got };
        let queues: [Queue; N] = std::mem::take(&mut self.queues)
            .try_into()
            .map_err(|q: Vec<Queue>| count(q.len()))?;
        let evts: [EventFd; N] = std::mem::take(&mut self.queue_evts)
            .try_into()
            .map_err(|e: Vec<EventFd>| count(e.len()))?;
        Ok((queues, evts))
    }
}

/// The queue notification events of a device whose queues the VMM
/// thread's event loop serves: watched once per activation, and taken off
/// epoll on the loop after a reset or a new activation retired them (the
/// transport retires them on a vCPU thread, which has no `EventOps`).
#[derive(Debug, Default)]
pub struct QueueEvents {
    registered: bool,
    dead: Vec<(EventFd, bool)>,
}

impl QueueEvents {
    /// Watches the current activation's `evts` for input, queue `i` with
    /// token `first_token + i`, unless already watched.
    pub fn register(
        &mut self,
        ops: &mut event_manager::EventOps,
        evts: &[EventFd],
        first_token: u32,
        device: &str,
    ) {
        if self.registered {
            return;
        }
        for (index, evt) in evts.iter().enumerate() {
            let token = first_token + index as u32;
            let watch = event_manager::Events::with_data(evt, token, event_manager::EventSet::IN);
            if let Err(e) = ops.add(watch) {
                log::error!("{device}: cannot watch queue {index}: {e:?}");
            }
        }
        self.registered = true;
    }

    /// Takes an activation's events out of service; they go off epoll at
    /// the next [`QueueEvents::bury`].
    pub fn retire(&mut self, evts: impl IntoIterator<Item = EventFd>) {
        let registered = self.registered;
        self.dead.extend(evts.into_iter().map(|e| (e, registered)));
        self.registered = false;
    }

    /// Takes retired events off epoll and closes them (on the event loop).
    pub fn bury(&mut self, ops: &mut event_manager::EventOps) {
        for (evt, registered) in self.dead.drain(..) {
            if registered {
                let _ = ops.remove(event_manager::Events::empty(&evt));
            }
        }
    }
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device id ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (including [`VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// Records the features the driver accepted (a subset of the offer).
    fn set_acked_features(&mut self, features: u64);
    /// Reads the device configuration space; out-of-range bytes read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; out-of-range writes are dropped.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver's queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Whether [`VirtioDevice::activate`] succeeded and no reset came since.
    fn is_activated(&self) -> bool;
    /// Driver-requested reset. Returns false when the device cannot be reset
    /// (the transport then sets `DEVICE_NEEDS_RESET`).
    fn reset(&mut self) -> bool {
        false
    }
}
