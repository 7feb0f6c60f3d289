//! virtio-net with a tap backend.
//!
//! The guest sees a network card (device id 1) with the MAC address and
//! MTU it was given and one receive/transmit queue pair; the host sees a
//! tap that whoever started the VMM opened in the pod's network namespace
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) and passed down as an inherited
//! file descriptor. The VMM itself never opens a tap or enters a
//! namespace.
//!
//! Features offered: `VERSION_1`, `MAC`, `MTU`, `STATUS` (link always up),
//! `MRG_RXBUF`, `CSUM` and `HOST_TSO4/6` (the guest may hand over partial
//! checksums and TCP GSO frames; the host kernel finishes them), and
//! `GUEST_CSUM` and `GUEST_TSO4/6` (the tap may hand over the same; its
//! `TUNSETOFFLOAD` follows what the driver negotiated). Not offered:
//! UFO/USO/ECN, the control queue, multiqueue, event index, indirect
//! descriptors.
//!
//! Frames cross between the queues and the tap with their 12-byte header
//! (`struct virtio_net_hdr_v1`) in place, the tap being set to that
//! header size (`TUNSETVNETHDRSZ`).
//!
//! Layers, each testable on its own:
//!
//! * [`header`]: the header as plain data, the feature bits, and which
//!   offloads a header may carry for a driver.
//! * [`tap`]: the [`TapBackend`] trait and the real [`Tap`].
//! * [`Net`]: the virtio device, its config space, activation and reset;
//!   `rx` and `tx`: the two directions; `event_handler`: the device on the
//!   VMM thread's event loop, which does all frame traffic and the tap's
//!   ioctls.
//!
//! # No allocation per frame
//!
//! Transmit frames go to the tap with one `writev` straight from guest
//! memory (the iovecs built on the stack from the descriptor chain, every
//! range checked by vm-memory). Received frames are read into one frame
//! buffer the device allocated at creation, where a frame waits if the
//! guest has too few buffers for it, and are copied from there into the
//! guest's buffers.
//!
//! # Bounds against a hostile guest
//!
//! Every descriptor is checked against guest memory before use; a chain
//! follows at most [`MAX_CHAIN_DESCRIPTORS`] descriptors; a transmit
//! frame is at most [`header::MAX_PACKET_LEN`] bytes. A malformed chain
//! is given back (length 0) and dropped, a transmit header asking for an
//! offload that was not negotiated drops its frame; the queues go on. At
//! most 256 frames move each way per event (the rest on the loop's next
//! turn), so one busy NIC leaves room for the other devices. A
//! guest that posts no receive buffers only stops the tap being read: its
//! frames wait in the kernel's tap queue, which drops on overflow as a
//! real link does.

mod device;
mod event_handler;
pub mod header;
mod rx;
pub mod tap;
mod tx;

#[cfg(test)]
pub(crate) mod testing;

pub use device::{Net, NetError, NetStats, MIN_MTU, QUEUE_SIZES, RXQ, TXQ};
pub use rx::MAX_CHAIN_DESCRIPTORS;
pub use tap::{check_tap_fd, Tap, TapBackend, TapFdError};
