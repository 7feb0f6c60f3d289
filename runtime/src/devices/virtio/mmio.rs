//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2).
//!
//! A register-level state machine: the driver negotiates features, sets
//! up the queues and sets `DRIVER_OK`, at which point the device is
//! activated with the queues. Everything the guest writes is checked; bad
//! accesses are logged and ignored, never trusted.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateContext, GuestMemoryMmap, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

/// Offset of the QueueNotify register (the VMM puts ioeventfds there).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Offset of the device configuration space.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4b53_5548; // "HUSK"

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}
use status::*;

mod reg {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const DEVICE_ID: u64 = 0x08;
    pub const VENDOR_ID: u64 = 0x0c;
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = super::QUEUE_NOTIFY_OFFSET;
    pub const INTERRUPT_STATUS: u64 = 0x60;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    pub const QUEUE_DRIVER_LOW: u64 = 0x90;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x94;
    pub const QUEUE_DEVICE_LOW: u64 = 0xa0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0xa4;
    pub const SHM_SEL: u64 = 0xac;
    pub const SHM_LEN_LOW: u64 = 0xb0;
    pub const SHM_LEN_HIGH: u64 = 0xb4;
    pub const SHM_BASE_LOW: u64 = 0xb8;
    pub const SHM_BASE_HIGH: u64 = 0xbc;
    pub const CONFIG_GENERATION: u64 = 0xfc;
}

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MmioTransportError {
    /// A queue notification `EventFd` could not be created.
    #[error("cannot create a queue event fd")]
    EventFd(#[source] std::io::Error),
    /// The device declares a queue size virtio-queue refuses.
    #[error("queue {index}: invalid maximum size {size}")]
    QueueSize {
        /// Queue index.
        index: usize,
        /// The size.
        size: u16,
    },
}

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    mem: GuestMemoryMmap,
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_id: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_id", &self.device_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A transport for `device`, raising `interrupt`.
    pub fn new<D: VirtioDevice + 'static>(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<D>>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<Self, MmioTransportError> {
        let device: Arc<Mutex<dyn VirtioDevice>> = device;
        let (device_id, sizes) = {
            let d = lock(&device);
            (d.device_type(), d.queue_max_sizes().to_vec())
        };
        let mut queues = Vec::with_capacity(sizes.len());
        let mut queue_evts = Vec::with_capacity(sizes.len());
        for (index, size) in sizes.into_iter().enumerate() {
            queues
                .push(Queue::new(size).map_err(|_| MmioTransportError::QueueSize { index, size })?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(MmioTransportError::EventFd)?);
        }
        Ok(Self {
            mem,
            device,
            interrupt,
            queues,
            queue_evts,
            device_id,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
        })
    }

    /// One notification `EventFd` per queue, in index order.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt line.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK,
    /// and only while the selected queue is not ready.
    fn queue_writable(&mut self) -> bool {
        let phase = self.status & (FEATURES_OK | DRIVER_OK | FAILED) == FEATURES_OK;
        phase && self.selected_queue().is_some_and(|q| !q.ready())
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = lock(&self.device).avail_features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            // No shared memory regions: length and base read as all ones.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => 0,
            _ => {
                log::warn!(
                    "virtio-mmio {}: read of write-only or unknown register {offset:#x}",
                    self.device_id
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if self.status & (DRIVER | FEATURES_OK) != DRIVER {
                    log::warn!(
                        "virtio-mmio {}: feature write outside negotiation",
                        self.device_id
                    );
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => self.with_queue(|q| q.set_size(value as u16)),
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            reg::QUEUE_DESC_HIGH => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::QUEUE_DRIVER_LOW => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::QUEUE_DRIVER_HIGH => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::QUEUE_DEVICE_LOW => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::QUEUE_DEVICE_HIGH => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            reg::QUEUE_READY => {
                let phase = self.status & (FEATURES_OK | DRIVER_OK | FAILED) == FEATURES_OK;
                match self.selected_queue() {
                    Some(q) if phase => q.set_ready(value == 1),
                    _ => log::warn!("virtio-mmio: QueueReady write out of place"),
                }
            }
            reg::QUEUE_NOTIFY => match self.queue_evts.get(value as usize) {
                Some(evt) => {
                    if let Err(e) = evt.write(1) {
                        log::warn!("virtio-mmio: queue notify: {e}");
                    }
                }
                None => log::warn!("virtio-mmio: notify of queue {value}, which does not exist"),
            },
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::SHM_SEL => {}
            _ => log::warn!(
                "virtio-mmio {}: write of read-only or unknown register {offset:#x}",
                self.device_id
            ),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if self.queue_writable() {
            if let Some(q) = self.selected_queue() {
                f(q);
            }
        } else {
            log::warn!(
                "virtio-mmio {}: queue register write out of place",
                self.device_id
            );
        }
    }

    /// The status state machine. Only the next step of the protocol (or 0,
    /// reset, or FAILED) is accepted.
    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let added = value & !self.status;
        if value & self.status != self.status {
            log::warn!(
                "virtio-mmio {}: status {value:#x} clears bits of {:#x}",
                self.device_id,
                self.status
            );
            return;
        }
        if added & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        let expected = match self.status & !DEVICE_NEEDS_RESET {
            0 => ACKNOWLEDGE,
            ACKNOWLEDGE => DRIVER,
            s if s == ACKNOWLEDGE | DRIVER => FEATURES_OK,
            s if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => DRIVER_OK,
            _ => 0,
        };
        if added != expected {
            log::warn!(
                "virtio-mmio {}: status step {added:#x} out of order",
                self.device_id
            );
            return;
        }
        match added {
            FEATURES_OK => {
                let offered = lock(&self.device).avail_features();
                if self.driver_features & !offered != 0
                    || self.driver_features & VIRTIO_F_VERSION_1 == 0
                {
                    // Leave FEATURES_OK unset: the driver reads it back and gives up.
                    log::warn!(
                        "virtio-mmio {}: driver features {:#x} not acceptable (offered {offered:#x})",
                        self.device_id,
                        self.driver_features
                    );
                    return;
                }
                lock(&self.device).set_acked_features(self.driver_features);
                self.status |= FEATURES_OK;
            }
            DRIVER_OK => {
                self.status |= DRIVER_OK;
                self.activate();
            }
            bit => self.status |= bit,
        }
    }

    fn activate(&mut self) {
        for (index, q) in self.queues.iter().enumerate() {
            if !q.is_valid(&self.mem) {
                log::warn!("virtio-mmio {}: queue {index} is not valid", self.device_id);
                self.status |= DEVICE_NEEDS_RESET;
                return;
            }
        }
        let mut queue_evts = Vec::with_capacity(self.queue_evts.len());
        for evt in &self.queue_evts {
            match evt.try_clone() {
                Ok(e) => queue_evts.push(e),
                Err(e) => {
                    log::error!(
                        "virtio-mmio {}: cannot clone a queue event: {e}",
                        self.device_id
                    );
                    self.status |= DEVICE_NEEDS_RESET;
                    return;
                }
            }
        }
        // The device gets its own copies; the transport keeps the
        // registers' view for reads and for reset.
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            match Queue::try_from(q.state()) {
                Ok(copy) => queues.push(copy),
                Err(e) => {
                    log::warn!("virtio-mmio {}: queue copy: {e}", self.device_id);
                    self.status |= DEVICE_NEEDS_RESET;
                    return;
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            queue_evts,
        };
        if let Err(e) = lock(&self.device).activate(ctx) {
            log::error!("virtio-mmio {}: activation failed: {e}", self.device_id);
            self.status |= DEVICE_NEEDS_RESET;
            let _ = self.interrupt.signal_config_change();
        }
    }

    fn reset(&mut self) {
        if self.status & DRIVER_OK != 0 && !lock(&self.device).reset() {
            log::warn!("virtio-mmio {}: device cannot be reset", self.device_id);
            self.status = DEVICE_NEEDS_RESET;
            return;
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
        for q in &mut self.queues {
            q.reset();
        }
    }
}

fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) => *word = self.read_register(offset).to_le_bytes(),
            Err(_) => {
                log::warn!(
                    "virtio-mmio {}: {}-byte register read at {offset:#x}",
                    self.device_id,
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(word) => self.write_register(offset, u32::from_le_bytes(word)),
            Err(_) => log::warn!(
                "virtio-mmio {}: {}-byte register write at {offset:#x}",
                self.device_id,
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
