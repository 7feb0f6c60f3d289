//! virtio-vsock with a hybrid-vsock Unix socket backend.
//!
//! The guest sees a virtio socket device (id 19) with the CID it was
//! given; the host sees one Unix socket, `uds_path`:
//!
//! * **Host to guest**: a host process connects to `uds_path`, writes
//!   `CONNECT <port>\n`, and reads `OK <host port>\n` once a guest
//!   listener on `<port>` accepts; the stream then carries the
//!   connection's bytes. If nobody listens, the stream is closed.
//! * **Guest to host**: a guest connection to CID 2, port P, is served by
//!   the Unix socket `<uds_path>_<P>` (refused with `OP_RST` if nothing
//!   listens there).
//!
//! Layers, each testable on its own:
//!
//! * [`packet`]: the header as plain data.
//! * [`connect_line`]: the `CONNECT` / `OK` handshake lines.
//! * [`connection`]: one connection's state machine and credit
//!   accounting, over any [`stream::HostStream`].
//! * [`muxer`]: the connection table: routing, the rx schedule, limits and
//!   timeouts.
//! * [`device`]: the virtio device and its queues;
//!   [`event_handler`]: the same on the event loop.
//!
//! # Bounds against a hostile guest
//!
//! At most [`muxer::MAX_CONNECTIONS`] connections; each buffers at most
//! [`connection::TX_BUF_SIZE`] bytes for a slow host stream (the credit it
//! gives the guest; a guest that overruns it has its tx queue paused until
//! the buffer drains, nothing is dropped); at most
//! [`muxer::MAX_CONTROL_PACKETS`] stray `OP_RST`s queued; handshakes and
//! closing connections time out. Every header field is checked; bad ones
//! end in an `OP_RST` or a dropped packet, never a panic.

mod connect_line;
mod connection;
mod device;
mod event_handler;
mod muxer;
mod packet;
mod ring;
mod stream;
#[cfg(test)]
mod testing;

pub use device::{Vsock, VsockError};
