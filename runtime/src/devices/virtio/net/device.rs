//! The virtio-net device: virtio registers, the config space, activation
//! and reset, and the state the two queue paths share.
//!
//! The transport calls into the device on a vCPU thread (config reads,
//! activation, reset); the event loop calls it on the VMM thread
//! ([`super::event_handler`]). Both go through the same mutex, so the
//! device is plain single-threaded state. Activation only stores the
//! queues and wakes the event loop through `control_evt`; the tap's
//! ioctls and all frame traffic happen on the VMM thread.

use std::io;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::header::{tap_offloads, AVAIL_FEATURES, MAX_PACKET_LEN, VNET_HDR_LEN};
use super::tap::{TapBackend, TapFdError};
use crate::devices::virtio::{
    device_type, ActivateContext, ActivateError, GuestMemoryMmap, QueueEvents, VirtioDevice,
    VirtioInterrupt,
};

/// Queue sizes: receive, transmit.
pub const QUEUE_SIZES: [u16; 2] = [256; 2];
/// Index of the receive (device to driver) queue.
pub const RXQ: usize = 0;
/// Index of the transmit (driver to device) queue.
pub const TXQ: usize = 1;
/// Smallest MTU a guest accepts (Linux refuses the device's MTU below
/// this, the IPv4 minimum).
pub const MIN_MTU: u16 = 68;
/// Size of the config space: `mac`, `status`, `max_virtqueue_pairs`, `mtu`.
const CONFIG_SIZE: usize = 12;

/// Why a virtio-net device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap cannot be used.
    #[error("tap")]
    Tap(#[source] TapFdError),
    /// The MTU is below [`MIN_MTU`].
    #[error("MTU {0} is below {MIN_MTU}")]
    Mtu(u16),
    /// `TUNSETVNETHDRSZ` failed.
    #[error("cannot set the tap's virtio-net header size")]
    VnetHdrSize(#[source] io::Error),
    /// `TUNSETOFFLOAD` failed.
    #[error("cannot set the tap's offloads")]
    Offloads(#[source] io::Error),
    /// The activation event fd could not be created.
    #[error("cannot create the virtio-net event fd")]
    EventFd(#[source] io::Error),
}

/// Counters of what went through the device, and what did not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Frames from the tap the guest could not be given (too big for its
    /// buffers, or with offloads it did not negotiate).
    pub rx_dropped: u64,
    /// Frames written to the tap.
    pub tx_frames: u64,
    /// Frames from the guest that were dropped (bad header, bad chain, or
    /// the tap refused them).
    pub tx_dropped: u64,
    /// Descriptor chains given back unused because they were malformed.
    pub bad_chains: u64,
}

/// What activation hands the device.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<VirtioInterrupt>,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    pub(super) evts: [EventFd; 2],
}

/// The receive side's state between events.
pub(super) struct RxState {
    /// Room for one frame from the tap, allocated once.
    pub(super) frame: Box<[u8]>,
    /// Length of a frame read from the tap that waits in `frame` for
    /// receive buffers.
    pub(super) pending: Option<usize>,
    /// The tap may have frames to read (set by its epoll events, cleared
    /// when a read finds none). The fd is edge-triggered: while the guest
    /// has no buffers the tap is simply not read.
    pub(super) tap_readable: bool,
    /// Chains holding the frame being delivered: head and length used.
    /// Allocated once for a full ring.
    pub(super) used: Vec<(u16, u32)>,
    /// Malformed chains met half-way through the frame, given back after
    /// it. Allocated once for a full ring.
    pub(super) broken: Vec<u16>,
}

/// A virtio-net device whose host side is a tap.
pub struct Net<T: TapBackend> {
    pub(super) tap: T,
    pub(super) config: [u8; CONFIG_SIZE],
    pub(super) acked_features: u64,
    /// Written on activation and reset; the event loop then sets the tap
    /// up and (de)registers the queue events.
    pub(super) control_evt: EventFd,
    pub(super) active: Option<Active>,
    /// The tap's header size and offloads match the current activation.
    pub(super) tap_configured: bool,
    pub(super) queue_events: QueueEvents,
    pub(super) rx: RxState,
    /// A write found the tap full: the transmit queue waits for it to
    /// become writable.
    pub(super) tx_stalled: bool,
    pub(super) stats: NetStats,
}

impl<T: TapBackend> std::fmt::Debug for Net<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &self.mac())
            .field("mtu", &self.mtu())
            .field("activated", &self.active.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: TapBackend> Net<T> {
    /// A device with `mac` and `mtu` in its config space, over `tap`. The
    /// tap is set to the 12-byte header and to no offloads until a driver
    /// negotiates some.
    pub fn new(mut tap: T, mac: [u8; 6], mtu: u16) -> Result<Self, NetError> {
        if mtu < MIN_MTU {
            return Err(NetError::Mtu(mtu));
        }
        tap.set_vnet_hdr_size(VNET_HDR_LEN)
            .map_err(NetError::VnetHdrSize)?;
        tap.set_offloads(0).map_err(NetError::Offloads)?;
        let control_evt = EventFd::new(EFD_NONBLOCK).map_err(NetError::EventFd)?;
        let mut config = [0u8; CONFIG_SIZE];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Ok(Self {
            tap,
            config,
            acked_features: 0,
            control_evt,
            active: None,
            tap_configured: false,
            queue_events: QueueEvents::default(),
            rx: RxState {
                frame: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
                pending: None,
                tap_readable: false,
                used: Vec::with_capacity(usize::from(QUEUE_SIZES[RXQ])),
                broken: Vec::with_capacity(usize::from(QUEUE_SIZES[RXQ])),
            },
            tx_stalled: false,
            stats: NetStats::default(),
        })
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }

    /// The guest's MTU.
    pub fn mtu(&self) -> u16 {
        u16::from_le_bytes([self.config[10], self.config[11]])
    }

    /// What went through the device so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sets the tap's header size and offloads for the current driver
    /// (on the event loop, after activation). A tap that refuses the
    /// offloads keeps none: it then hands over only complete,
    /// checksummed frames, which every driver takes.
    pub(super) fn configure_tap(&mut self) {
        if self.active.is_none() || self.tap_configured {
            return;
        }
        if let Err(e) = self.tap.set_vnet_hdr_size(VNET_HDR_LEN) {
            log::error!("virtio-net: cannot set the tap's header size again: {e}");
        }
        let offloads = tap_offloads(self.acked_features);
        if let Err(e) = self.tap.set_offloads(offloads) {
            log::error!(
                "virtio-net: the tap refuses offloads {offloads:#x}: {e}; it hands over plain frames"
            );
            if let Err(e) = self.tap.set_offloads(0) {
                log::error!("virtio-net: cannot clear the tap's offloads: {e}");
            }
        }
        self.tap_configured = true;
    }

    /// Takes the current activation's queue events out of service.
    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            self.queue_events.retire(active.evts);
        }
        self.tap_configured = false;
        self.rx.pending = None;
        self.tx_stalled = false;
    }

    /// Raises the interrupt if a queue got used buffers and its driver did
    /// not turn interrupts off for it.
    pub(super) fn signal_used(&mut self, rx: bool, tx: bool) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let wants = |q: &Queue| wants_interrupt(&active.mem, q);
        if (rx && wants(&active.rx)) || (tx && wants(&active.tx)) {
            if let Err(e) = active.interrupt.signal_used_queue() {
                log::warn!("virtio-net: cannot raise the interrupt: {e}");
            }
        }
    }
}

/// Whether the driver wants an interrupt for new used buffers on `queue`:
/// without event index, unless it set `VRING_AVAIL_F_NO_INTERRUPT` (Linux
/// does while it polls). Unreadable flags count as "yes".
fn wants_interrupt(mem: &GuestMemoryMmap, queue: &Queue) -> bool {
    // The used entries must be visible before the flags are read, or a
    // driver that just turned interrupts back on could be missed.
    fence(Ordering::SeqCst);
    match mem.load::<u16>(GuestAddress(queue.avail_ring()), Ordering::Acquire) {
        Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0,
        Err(_) => true,
    }
}

impl<T: TapBackend> VirtioDevice for Net<T> {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        AVAIL_FEATURES
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & AVAIL_FEATURES;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // With VERSION_1 the MAC is read-only (a driver changes it through
        // the control queue, which is not offered).
        log::warn!(
            "virtio-net: guest wrote {} bytes of read-only config at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let (queues, evts) = ctx.take_queues::<2>()?;
        // A second activation without a reset replaces the first.
        self.retire();
        let [rx, tx] = queues;
        self.active = Some(Active {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            rx,
            tx,
            evts,
        });
        self.control_evt.write(1).map_err(ActivateError::EventFd)
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// A real reset: the queues are dropped, a frame waiting for receive
    /// buffers is dropped, and the event loop takes the old queue events
    /// off epoll when `control_evt` wakes it. The tap stays; its offloads
    /// are set again at the next activation.
    fn reset(&mut self) -> bool {
        self.retire();
        self.acked_features = 0;
        if let Err(e) = self.control_evt.write(1) {
            log::warn!("virtio-net: reset: cannot wake the event loop: {e}");
        }
        true
    }
}

#[cfg(test)]
mod tests;
