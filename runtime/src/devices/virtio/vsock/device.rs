//! The virtio-vsock device: virtio registers, the queues, and the
//! hybrid-vsock Unix socket.
//!
//! The transport calls into the device on a vCPU thread (config reads,
//! activation, reset); the event loop calls it on the VMM thread
//! ([`super::event_handler`]). Both go through the same mutex, so the
//! device is plain single-threaded state. Activation only stores the
//! queues and wakes the event loop through `control_evt`; everything that
//! touches sockets or epoll happens on the VMM thread.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{GuestOutcome, MAX_PKT_DATA};
use super::muxer::Muxer;
use super::packet::{Header, HEADER_SIZE, HOST_CID};
use super::stream::UdsBackend;
use crate::devices::virtio::{
    device_type, ActivateContext, ActivateError, GuestMemoryMmap, QueueEvents, VirtioDevice,
    VirtioInterrupt, VIRTIO_F_VERSION_1,
};

/// `VIRTIO_VSOCK_F_STREAM`: stream sockets (the only kind served).
pub const VIRTIO_VSOCK_F_STREAM: u64 = 1 << 0;
/// Queue sizes: rx, tx, event.
pub const QUEUE_SIZES: [u16; 3] = [256; 3];
/// Index of the receive (device to driver) queue.
pub const RXQ: usize = 0;
/// Index of the transmit (driver to device) queue.
pub const TXQ: usize = 1;
/// Index of the event queue.
pub const EVQ: usize = 2;

/// Why the vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0–2) or does not fit vsock's 32 bits.
    #[error("guest CID {0} is reserved or out of range")]
    GuestCid(u64),
    /// The Unix socket could not be bound.
    #[error("cannot bind the vsock socket {path:?}")]
    Bind {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Unix socket could not be made non-blocking.
    #[error("cannot make the vsock socket non-blocking")]
    NonBlocking(#[source] io::Error),
    /// The activation event fd could not be created.
    #[error("cannot create the vsock event fd")]
    EventFd(#[source] io::Error),
    /// The connection timer could not be created.
    #[error("cannot create the vsock timer")]
    Timer(#[source] io::Error),
}

/// What activation hands the device.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<VirtioInterrupt>,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    pub(super) evts: [EventFd; 3],
}

/// A virtio-vsock device whose host side is a Unix socket (hybrid vsock).
pub struct Vsock {
    pub(super) guest_cid: u64,
    pub(super) uds_path: PathBuf,
    pub(super) listener: UnixListener,
    /// Taken off epoll after an accept error it would otherwise repeat
    /// forever (out of fds); retried on the timer.
    pub(super) listener_paused: bool,
    pub(super) acked_features: u64,
    /// Written on activation and reset; the event loop then (de)registers
    /// the queue events and buries closed streams.
    pub(super) control_evt: EventFd,
    pub(super) timer: TimerFd,
    pub(super) timer_armed: bool,
    pub(super) active: Option<Active>,
    pub(super) queue_events: QueueEvents,
    pub(super) muxer: Muxer<UdsBackend>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.guest_cid)
            .field("uds_path", &self.uds_path)
            .field("activated", &self.active.is_some())
            .field("connections", &self.muxer.len())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// A device for guest `guest_cid`, listening on `uds_path` for host
    /// connections (`CONNECT <port>\n`); guest connections to host port P
    /// go to `<uds_path>_<P>`. The socket file is removed on drop.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::GuestCid(guest_cid));
        }
        let control_evt = EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        let timer = TimerFd::new().map_err(|e| VsockError::Timer(e.into()))?;
        fcntl(timer.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| VsockError::Timer(e.into()))?;
        let listener = UnixListener::bind(&uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        if let Err(e) = listener.set_nonblocking(true) {
            let _ = std::fs::remove_file(&uds_path);
            return Err(VsockError::NonBlocking(e));
        }
        Ok(Self {
            guest_cid,
            muxer: Muxer::new(guest_cid, UdsBackend::new(&uds_path)),
            uds_path,
            listener,
            listener_paused: false,
            acked_features: 0,
            control_evt,
            timer,
            timer_armed: false,
            active: None,
            queue_events: QueueEvents::default(),
        })
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The socket host processes connect to.
    pub fn uds_path(&self) -> &std::path::Path {
        &self.uds_path
    }

    /// Takes the current activation's queue events out of service.
    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            self.queue_events.retire(active.evts);
        }
    }

    /// Serves the tx queue. Returns whether used buffers were added.
    pub(super) fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used = false;
        while !self.muxer.is_tx_stalled() {
            let Some(chain) = active.tx.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let mut parse = chain.clone();
            let outcome =
                match VsockPacket::from_tx_virtq_chain(&active.mem, &mut parse, MAX_PKT_DATA) {
                    Ok(pkt) => self
                        .muxer
                        .guest_packet(&Header::from_packet(&pkt), pkt.data_slice()),
                    Err(e) => {
                        log::debug!("vsock: bad tx descriptor chain: {e}");
                        if let Some(hdr) = head_header(&active.mem, chain) {
                            self.muxer.bad_guest_packet(&hdr);
                        }
                        GuestOutcome::Consumed
                    }
                };
            match outcome {
                GuestOutcome::Consumed => {
                    if let Err(e) = active.tx.add_used(&active.mem, head, 0) {
                        log::warn!("vsock: tx used ring: {e}");
                    }
                    used = true;
                }
                GuestOutcome::Stall => {
                    active.tx.go_to_previous_position();
                    break;
                }
            }
        }
        used
    }

    /// Fills rx buffers while there is something for the guest. Returns
    /// whether used buffers were added.
    pub(super) fn process_rx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used = false;
        while self.muxer.has_rx_work() {
            // No buffers: the work waits for the guest's rx notification.
            let Some(mut chain) = active.rx.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let pkt = VsockPacket::from_rx_virtq_chain(&active.mem, &mut chain, MAX_PKT_DATA);
            let (mut pkt, data) = match pkt {
                Ok(pkt) => match pkt.data_slice().copied() {
                    Some(data) => (pkt, data),
                    None => {
                        let _ = active.rx.add_used(&active.mem, head, 0);
                        used = true;
                        continue;
                    }
                },
                Err(e) => {
                    // The guest's own broken buffer: give it back empty.
                    log::debug!("vsock: bad rx descriptor chain: {e}");
                    let _ = active.rx.add_used(&active.mem, head, 0);
                    used = true;
                    continue;
                }
            };
            let mut hdr = Header::default();
            let Some(len) = self.muxer.next_rx_packet(&mut hdr, &data) else {
                active.rx.go_to_previous_position();
                break;
            };
            if let Err(e) = pkt.set_header_from_raw(&hdr.to_bytes()) {
                log::warn!("vsock: rx header: {e}");
            }
            if let Err(e) = active
                .rx
                .add_used(&active.mem, head, HEADER_SIZE as u32 + len)
            {
                log::warn!("vsock: rx used ring: {e}");
            }
            used = true;
        }
        used
    }

    /// Raises the interrupt if the driver wants one for either queue.
    pub(super) fn signal_used(&mut self, rx: bool, tx: bool) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut notify = false;
        if rx {
            notify |= active.rx.needs_notification(&active.mem).unwrap_or(true);
        }
        if tx {
            notify |= active.tx.needs_notification(&active.mem).unwrap_or(true);
        }
        if notify {
            if let Err(e) = active.interrupt.signal_used_queue() {
                log::warn!("vsock: cannot raise the interrupt: {e}");
            }
        }
    }
}

/// The header of a chain virtio-vsock refused, if its head is a readable
/// descriptor large enough to hold one.
fn head_header(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Option<Header> {
    let desc = chain.clone().next()?;
    if desc.is_write_only() || (desc.len() as usize) < HEADER_SIZE {
        return None;
    }
    let mut bytes = [0u8; HEADER_SIZE];
    mem.read_slice(&mut bytes, desc.addr()).ok()?;
    Some(Header::from_bytes(&bytes))
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_VSOCK_F_STREAM
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.guest_cid.to_le_bytes();
        super::super::read_config_space(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::warn!(
            "vsock: guest wrote {} bytes of read-only config at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let (queues, evts) = ctx.take_queues::<3>()?;
        // A second activation without a reset replaces the first.
        self.retire();
        let [rx, tx, _event] = queues;
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

    /// A real reset: every connection ends (host streams are closed, the
    /// guest is not told; its driver is starting over), the queues are
    /// dropped, and the listener stays. The event loop takes the old fds
    /// off epoll when `control_evt` wakes it.
    fn reset(&mut self) -> bool {
        self.retire();
        self.muxer.reset();
        self.acked_features = 0;
        if let Err(e) = self.control_evt.write(1) {
            log::warn!("vsock: reset: cannot wake the event loop: {e}");
        }
        true
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.uds_path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("vsock: cannot remove {:?}: {e}", self.uds_path);
            }
        }
    }
}

#[cfg(test)]
mod tests;
