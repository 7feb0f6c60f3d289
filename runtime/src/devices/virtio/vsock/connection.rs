//! One vsock stream connection: a state machine between the guest peer
//! (packets) and a host stream (bytes), with credit flow control in both
//! directions (virtio 1.2, section 5.10.6.3).
//!
//! ```text
//!  host connects            guest OP_REQUEST
//!       |                         |
//!  AwaitConnect --CONNECT p-->  LocalInit --OP_RESPONSE--> Established <--+
//!   (read line)               (send OP_REQUEST)                           |
//!                                                       (reply OP_RESPONSE)
//! ```
//!
//! Any state can end in a [`Close`]; the connection table removes the
//! connection and, when the guest knows it, sends `OP_RST`.
//!
//! In `Established`, guest data goes straight from guest memory to the
//! host stream; whatever the stream does not take waits in a ring bounded
//! by the credit we give the guest (`buf_alloc`), and `fwd_cnt` counts only
//! what the host stream has taken. Host data is read straight into the
//! guest's rx buffers, never more than the guest's credit allows.
//!
//! Half-close: EOF from the host becomes `OP_SHUTDOWN(SEND)` to the guest
//! (and `RCV` too once the host is gone altogether); a guest
//! `OP_SHUTDOWN(SEND)` becomes `shutdown(Write)` on the host stream once
//! the ring is flushed; a guest shutting both ways gets its `OP_RST` after
//! the flush.

use std::io;
use std::num::Wrapping;
use std::time::{Duration, Instant};

use event_manager::EventSet;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileSlice};

use super::connect_line::{ok_line, ConnectLine, MAX_LINE, MAX_OK_LINE};
use super::packet::{op, shutdown, Header, TYPE_STREAM};
use super::ring::RingBuf;
use super::stream::{io_error, HostStream};

/// The receive buffer we offer the guest per connection (`buf_alloc`):
/// the most guest data that can wait for a slow host stream.
pub const TX_BUF_SIZE: u32 = 256 * 1024;
/// Largest payload of one packet, either way.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// A credit update goes out when the guest believes it has less than this
/// much room and really has at least this much.
pub const CREDIT_UPDATE_THRESHOLD: u32 = TX_BUF_SIZE / 2;
/// How long a host stream may take to send its `CONNECT` line.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest may take to answer our `OP_REQUEST`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may linger: flushing to a host that does
/// not read, or waiting for the guest's `OP_RST` after we shut both ways.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection is over. `rst`: tell the guest with an `OP_RST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Send the guest an `OP_RST` for this connection.
    pub rst: bool,
}

/// What a host stream event led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOutcome {
    /// Nothing the connection table must act on.
    Continue,
    /// The host's `CONNECT` line asked for this guest port.
    Connect(u32),
}

/// What a guest packet led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOutcome {
    /// The packet was handled; its descriptor chain can be returned.
    Consumed,
    /// The packet's data does not fit yet: leave it in the tx queue and
    /// retry once the host stream has taken some of the buffered data.
    Stall,
}

#[derive(Debug)]
enum State {
    /// A host stream that has not finished its `CONNECT` line.
    AwaitConnect(ConnectLine),
    /// Host-initiated, waiting for the guest to accept.
    LocalInit {
        /// Our `OP_REQUEST` has gone to the guest.
        request_sent: bool,
    },
    /// Data flows.
    Established,
}

/// Control packets a connection owes the guest.
mod pending {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
    pub const CREDIT_REQUEST: u8 = 8;
}

/// A connection between guest port `peer_port` and host port `local_port`.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    state: State,
    local_port: u32,
    peer_port: u32,

    // Guest to host.
    tx: RingBuf,
    /// Bytes at the front of `tx` that are ours (the `OK` line), not
    /// guest data, and so do not count in `fwd_cnt`.
    tx_uncounted: usize,
    /// Guest data bytes accepted, ever.
    recv_cnt: Wrapping<u32>,
    /// Guest data bytes the host stream has taken, ever.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last heard it.
    last_fwd_sent: Wrapping<u32>,
    /// The ring shrank since the connection table last asked.
    tx_progress: bool,

    // Host to guest.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Data bytes sent to the guest, ever.
    rx_cnt: Wrapping<u32>,
    /// The host stream may have bytes (or EOF) to read.
    readable: bool,
    credit_requested: bool,

    /// `shutdown` flags the guest sent.
    peer_shut: u32,
    /// `shutdown` flags we sent.
    shut_sent: u32,
    /// The host stream reached EOF.
    host_eof: bool,
    /// The host stream hung up: the host is gone (or both directions are
    /// closed); nothing will be written to it again.
    host_hup: bool,
    /// We shut the host stream's write side.
    host_write_shut: bool,

    pending: u8,
    deadline: Option<Instant>,

    /// The epoll interest the device registered for the stream, if any.
    pub(super) epoll: Option<EventSet>,
    /// The connection is in the connection table's rx queue.
    pub(super) in_rx_queue: bool,
    /// The connection is in the connection table's dirty list.
    pub(super) dirty: bool,
}

impl<S: HostStream> Connection<S> {
    fn with_state(stream: S, state: State) -> Self {
        Self {
            stream,
            state,
            local_port: 0,
            peer_port: 0,
            tx: RingBuf::new(TX_BUF_SIZE as usize + MAX_OK_LINE),
            tx_uncounted: 0,
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_sent: Wrapping(0),
            tx_progress: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            readable: false,
            credit_requested: false,
            peer_shut: 0,
            shut_sent: 0,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            pending: 0,
            deadline: None,
            epoll: None,
            in_rx_queue: false,
            dirty: false,
        }
    }

    /// A host stream just accepted on the device socket.
    pub fn host(stream: S, now: Instant) -> Self {
        let mut c = Self::with_state(stream, State::AwaitConnect(ConnectLine::default()));
        c.deadline = Some(now + CONNECT_TIMEOUT);
        c
    }

    /// A guest `OP_REQUEST` that `stream` now serves: it owes the guest
    /// an `OP_RESPONSE`.
    pub fn guest(stream: S, request: &Header) -> Self {
        let mut c = Self::with_state(stream, State::Established);
        c.local_port = request.dst_port;
        c.peer_port = request.src_port;
        c.update_peer_credit(request);
        c.pending = pending::RESPONSE;
        c
    }

    /// The connection's (host port, guest port), once it has them.
    pub fn key(&self) -> Option<(u32, u32)> {
        match self.state {
            State::AwaitConnect(_) => None,
            _ => Some((self.local_port, self.peer_port)),
        }
    }

    /// The host stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Gives the host stream back (the connection is over).
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// When the connection's current wait runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether data may flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Bytes waiting for the host stream.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.tx.len()
    }

    /// Whether the ring shrank since the last call.
    pub fn take_tx_progress(&mut self) -> bool {
        std::mem::take(&mut self.tx_progress)
    }

    /// The host's `CONNECT` named guest port `peer_port`; `local_port` is
    /// the fresh host port for it. An `OP_REQUEST` is now owed.
    pub fn start_local_init(&mut self, local_port: u32, peer_port: u32) {
        self.local_port = local_port;
        self.peer_port = peer_port;
        self.state = State::LocalInit {
            request_sent: false,
        };
        self.pending |= pending::REQUEST;
        self.deadline = None;
    }

    fn guest_knows(&self) -> bool {
        match self.state {
            State::AwaitConnect(_) => false,
            State::LocalInit { request_sent } => request_sent,
            State::Established => true,
        }
    }

    fn close(&self) -> Close {
        Close {
            rst: self.guest_knows(),
        }
    }

    /// Credit the guest gives us: how many more bytes it can take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        let before = self.peer_credit();
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > before {
            self.credit_requested = false;
        }
    }

    /// Whether host data may be read for the guest now.
    fn can_read(&self) -> bool {
        self.is_established()
            && self.peer_shut & shutdown::RCV == 0
            && !self.host_eof
            && self.peer_credit() > 0
    }

    /// `OP_SHUTDOWN` flags the host side has earned.
    fn local_shut_wanted(&self) -> u32 {
        let mut flags = 0;
        if self.host_eof {
            flags |= shutdown::SEND;
        }
        if self.host_hup {
            flags |= shutdown::RCV;
            if self.peer_shut & shutdown::RCV != 0 {
                // The guest reads no more: nothing else will be sent either.
                flags |= shutdown::SEND;
            }
        }
        flags
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.pending != 0
            || (self.is_established()
                && ((self.readable && self.can_read())
                    || self.local_shut_wanted() & !self.shut_sent != 0))
    }

    /// The epoll interest the host stream needs; `None`: not watched at
    /// all (after a hang-up, when epoll would report it forever).
    pub fn wanted_epoll(&self) -> Option<EventSet> {
        match self.state {
            State::AwaitConnect(_) => Some(EventSet::IN),
            // Only hang-ups and errors (always reported).
            State::LocalInit { .. } => Some(EventSet::empty()),
            State::Established if self.host_hup => None,
            State::Established => {
                let mut set = EventSet::empty();
                if !self.readable && self.can_read() {
                    set |= EventSet::IN;
                }
                if !self.tx.is_empty() {
                    set |= EventSet::OUT;
                }
                Some(set)
            }
        }
    }

    /// A packet header for this connection (cids are the table's job).
    /// Every packet tells the guest our credit.
    fn header(&mut self, op: u16) -> Header {
        self.last_fwd_sent = self.fwd_cnt;
        self.pending &= !pending::CREDIT_UPDATE;
        Header {
            src_port: self.local_port,
            dst_port: self.peer_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
            ..Header::default()
        }
    }

    /// Handles readiness of the host stream.
    pub fn on_host_event(&mut self, events: EventSet) -> Result<HostOutcome, Close> {
        if events.contains(EventSet::ERROR) {
            log::debug!(
                "vsock {}:{}: host stream error",
                self.local_port,
                self.peer_port
            );
            return Err(self.close());
        }
        match &mut self.state {
            State::AwaitConnect(line) => read_connect_line(&mut self.stream, line),
            State::LocalInit { .. } => {
                if events.contains(EventSet::HANG_UP) {
                    return Err(self.close());
                }
                Ok(HostOutcome::Continue)
            }
            State::Established => {
                if events.contains(EventSet::OUT) {
                    self.flush()?;
                }
                if events.contains(EventSet::IN) {
                    self.readable = true;
                }
                if events.contains(EventSet::HANG_UP) {
                    self.host_hup = true;
                    // Read what is left, up to EOF, without epoll.
                    self.readable = true;
                    if !self.tx.is_empty() {
                        self.flush()?;
                        if !self.tx.is_empty() {
                            // The host is gone with guest data undelivered.
                            return Err(self.close());
                        }
                    }
                }
                Ok(HostOutcome::Continue)
            }
        }
    }

    /// Handles a guest packet addressed to this connection (cids and type
    /// already checked). `data` is the payload of an `OP_RW`.
    pub fn on_guest_packet<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Result<GuestOutcome, Close> {
        if hdr.op == op::RST {
            return Err(Close { rst: false });
        }
        // Every packet carries the guest's credit.
        self.update_peer_credit(hdr);
        match (&self.state, hdr.op) {
            (State::LocalInit { request_sent: true }, op::RESPONSE) => {
                self.state = State::Established;
                self.deadline = None;
                let (mut line, len) = ok_line(self.local_port);
                self.send_to_host(&VolatileSlice::from(&mut line[..len]), false)?;
                Ok(GuestOutcome::Consumed)
            }
            (State::Established, op::RW) => self.recv_data(hdr, data),
            (State::Established, op::CREDIT_UPDATE) => Ok(GuestOutcome::Consumed),
            (State::Established, op::CREDIT_REQUEST) => {
                self.pending |= pending::CREDIT_UPDATE;
                Ok(GuestOutcome::Consumed)
            }
            (State::Established, op::SHUTDOWN) => self.recv_shutdown(hdr.flags, now),
            (state, op) => {
                log::debug!(
                    "vsock {}:{}: guest op {op} in state {state:?}",
                    self.local_port,
                    self.peer_port
                );
                Err(self.close())
            }
        }
    }

    fn recv_data<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) -> Result<GuestOutcome, Close> {
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            return if hdr.len == 0 {
                Ok(GuestOutcome::Consumed)
            } else {
                Err(self.close())
            };
        };
        if self.peer_shut & shutdown::SEND != 0 || self.host_hup || self.host_write_shut {
            log::debug!(
                "vsock {}:{}: guest data after shutdown",
                self.local_port,
                self.peer_port
            );
            return Err(self.close());
        }
        let outcome = self.send_to_host(data, true)?;
        if outcome == GuestOutcome::Consumed {
            self.recv_cnt += Wrapping(data.len() as u32);
            self.maybe_credit_update();
        }
        Ok(outcome)
    }

    /// Writes to the host stream what it takes now and buffers the rest;
    /// `counted`: guest data, which `fwd_cnt` counts.
    fn send_to_host<B: BitmapSlice>(
        &mut self,
        data: &VolatileSlice<'_, B>,
        counted: bool,
    ) -> Result<GuestOutcome, Close> {
        let len = data.len();
        if !self.tx.is_empty() {
            // Keep the order: behind what is already waiting.
            if !self.tx.push(data) {
                return Ok(GuestOutcome::Stall);
            }
            if !counted {
                // Only our own line goes here, and it comes first.
                self.tx_uncounted += len;
            }
            return Ok(GuestOutcome::Consumed);
        }
        let mut written = 0;
        while written < len {
            let Ok(rest) = data.offset(written) else {
                break;
            };
            match self.stream.write_volatile(&rest).map_err(io_error) {
                Ok(0) => return Err(self.close()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!(
                        "vsock {}:{}: host write: {e}",
                        self.local_port,
                        self.peer_port
                    );
                    return Err(self.close());
                }
            }
        }
        if counted {
            self.fwd_cnt += Wrapping(written as u32);
        }
        if written < len {
            let pushed = data.offset(written).map(|rest| self.tx.push(&rest));
            if !matches!(pushed, Ok(true)) {
                // More than a whole credit window: the guest overran it.
                log::debug!(
                    "vsock {}:{}: guest overran its credit",
                    self.local_port,
                    self.peer_port
                );
                return Err(self.close());
            }
            if !counted {
                self.tx_uncounted = len - written;
            }
        }
        Ok(GuestOutcome::Consumed)
    }

    /// Writes buffered bytes to the host stream.
    fn flush(&mut self) -> Result<(), Close> {
        if self.tx.is_empty() {
            return Ok(());
        }
        match self.tx.write_to(&mut self.stream) {
            Ok(n) => {
                let ours = n.min(self.tx_uncounted);
                self.tx_uncounted -= ours;
                self.fwd_cnt += Wrapping((n - ours) as u32);
                if n > 0 {
                    self.tx_progress = true;
                    self.maybe_credit_update();
                }
            }
            Err(e) => {
                log::debug!(
                    "vsock {}:{}: host write: {e}",
                    self.local_port,
                    self.peer_port
                );
                return Err(self.close());
            }
        }
        if self.tx.is_empty() {
            self.after_flushed()?;
        }
        Ok(())
    }

    /// Everything the guest sent has reached the host stream.
    fn after_flushed(&mut self) -> Result<(), Close> {
        if self.peer_shut & shutdown::SEND != 0 && !self.host_write_shut {
            // The host may have gone already; nothing more to do then.
            let _ = self.stream.shutdown_write();
            self.host_write_shut = true;
        }
        if self.peer_shut == shutdown::BOTH {
            return Err(Close { rst: true });
        }
        Ok(())
    }

    fn recv_shutdown(&mut self, flags: u32, now: Instant) -> Result<GuestOutcome, Close> {
        self.peer_shut |= flags & shutdown::BOTH;
        if self.tx.is_empty() {
            self.after_flushed()?;
        } else if self.peer_shut == shutdown::BOTH && self.deadline.is_none() {
            self.deadline = Some(now + CLOSE_TIMEOUT);
        }
        Ok(GuestOutcome::Consumed)
    }

    /// Queues a credit update when the guest is about to run out of room
    /// it really has.
    fn maybe_credit_update(&mut self) {
        if !self.is_established() || self.peer_shut & shutdown::SEND != 0 {
            return;
        }
        let believed = TX_BUF_SIZE.saturating_sub((self.recv_cnt - self.last_fwd_sent).0);
        let real = TX_BUF_SIZE.saturating_sub((self.recv_cnt - self.fwd_cnt).0);
        if self.fwd_cnt != self.last_fwd_sent
            && believed < CREDIT_UPDATE_THRESHOLD
            && real >= CREDIT_UPDATE_THRESHOLD
        {
            self.pending |= pending::CREDIT_UPDATE;
        }
    }

    /// Produces the next packet for the guest into `hdr` (and, for data,
    /// `buf`). Returns the payload length, or `None` if there is nothing.
    pub fn fill_rx<B: BitmapSlice>(
        &mut self,
        hdr: &mut Header,
        buf: &VolatileSlice<'_, B>,
        now: Instant,
    ) -> Result<Option<u32>, Close> {
        if self.pending & pending::REQUEST != 0 {
            self.pending &= !pending::REQUEST;
            self.state = State::LocalInit { request_sent: true };
            self.deadline = Some(now + RESPONSE_TIMEOUT);
            *hdr = self.header(op::REQUEST);
            return Ok(Some(0));
        }
        if self.pending & pending::RESPONSE != 0 {
            self.pending &= !pending::RESPONSE;
            *hdr = self.header(op::RESPONSE);
            return Ok(Some(0));
        }
        if !self.is_established() {
            return Ok(None);
        }
        if self.readable && self.can_read() {
            if let Some(len) = self.read_host(hdr, buf)? {
                return Ok(Some(len));
            }
        }
        if self.pending & pending::CREDIT_UPDATE != 0 {
            *hdr = self.header(op::CREDIT_UPDATE);
            return Ok(Some(0));
        }
        if self.pending & pending::CREDIT_REQUEST != 0 {
            self.pending &= !pending::CREDIT_REQUEST;
            *hdr = self.header(op::CREDIT_REQUEST);
            return Ok(Some(0));
        }
        let wanted = self.local_shut_wanted();
        if wanted & !self.shut_sent != 0 {
            self.shut_sent |= wanted;
            *hdr = self.header(op::SHUTDOWN);
            hdr.flags = self.shut_sent;
            if self.shut_sent == shutdown::BOTH && self.deadline.is_none() {
                // Give the guest time to read what it has and answer RST.
                self.deadline = Some(now + CLOSE_TIMEOUT);
            }
            return Ok(Some(0));
        }
        Ok(None)
    }

    /// Reads host data into `buf`, within the guest's credit.
    fn read_host<B: BitmapSlice>(
        &mut self,
        hdr: &mut Header,
        buf: &VolatileSlice<'_, B>,
    ) -> Result<Option<u32>, Close> {
        let limit = (self.peer_credit().min(MAX_PKT_DATA) as usize).min(buf.len());
        if limit == 0 {
            return Ok(None);
        }
        let Ok(mut dst) = buf.subslice(0, limit) else {
            return Ok(None);
        };
        for _ in 0..3 {
            match self.stream.read_volatile(&mut dst).map_err(io_error) {
                Ok(0) => {
                    self.host_eof = true;
                    self.readable = false;
                    return Ok(None);
                }
                Ok(n) => {
                    self.rx_cnt += Wrapping(n as u32);
                    if n < limit && !self.host_hup {
                        // Probably drained; epoll says when there is more.
                        self.readable = false;
                    }
                    if self.peer_credit() == 0 && !self.credit_requested {
                        self.pending |= pending::CREDIT_REQUEST;
                        self.credit_requested = true;
                    }
                    *hdr = self.header(op::RW);
                    hdr.len = n as u32;
                    return Ok(Some(n as u32));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.host_hup {
                        // A hung-up stream that would block has nothing left.
                        self.host_eof = true;
                    }
                    self.readable = false;
                    return Ok(None);
                }
                Err(e) => {
                    log::debug!(
                        "vsock {}:{}: host read: {e}",
                        self.local_port,
                        self.peer_port
                    );
                    return Err(self.close());
                }
            }
        }
        Ok(None)
    }

    /// Ends the connection if its deadline has passed.
    pub fn on_deadline(&mut self, now: Instant) -> Option<Close> {
        if self.deadline.is_none_or(|d| now < d) {
            return None;
        }
        log::debug!(
            "vsock {}:{}: timed out in {:?}",
            self.local_port,
            self.peer_port,
            self.state
        );
        Some(match self.state {
            State::AwaitConnect(_) => Close { rst: false },
            _ => Close { rst: true },
        })
    }
}

/// Takes the `CONNECT` line one byte at a time: nothing after its newline
/// leaves the stream.
fn read_connect_line<S: ReadVolatile>(
    stream: &mut S,
    line: &mut ConnectLine,
) -> Result<HostOutcome, Close> {
    let host_only = Close { rst: false };
    for _ in 0..MAX_LINE {
        let mut byte = [0u8; 1];
        match stream
            .read_volatile(&mut VolatileSlice::from(&mut byte[..]))
            .map_err(io_error)
        {
            Ok(0) => return Err(host_only),
            Ok(_) => match line.push(byte[0]) {
                Ok(Some(port)) => return Ok(HostOutcome::Connect(port)),
                Ok(None) => {}
                Err(e) => {
                    log::debug!("vsock: host connection refused: {e}");
                    return Err(host_only);
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(host_only),
        }
    }
    Ok(HostOutcome::Continue)
}

#[cfg(test)]
mod tests;
