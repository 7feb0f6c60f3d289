//! The connection table: routes guest packets to connections, schedules
//! what goes to the guest, answers strays with `OP_RST`, and keeps every
//! guest-driven quantity bounded.
//!
//! It does no epoll itself. The device asks it which connections changed
//! their wanted interest ([`Muxer::pop_dirty`]) and which streams were
//! closed ([`Muxer::take_closed`]) and applies that to the event loop.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use event_manager::EventSet;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

use super::connection::{Close, Connection, GuestOutcome, HostOutcome};
use super::packet::{op, Header, HOST_CID, TYPE_STREAM};
use super::stream::Backend;

/// Most connections at once, host- and guest-initiated together.
pub const MAX_CONNECTIONS: usize = 256;
/// Most control packets (stray `OP_RST`s) waiting for rx buffers; more
/// are dropped.
pub const MAX_CONTROL_PACKETS: usize = 1024;
/// First host port handed to host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// First connection id; lower epoll tokens are the device's own.
pub const FIRST_CONN_ID: u32 = 16;

/// A connection's id: its epoll token.
pub type ConnId = u32;

/// A host stream whose connection ended, to be taken off epoll and closed.
#[derive(Debug)]
pub struct ClosedStream<S> {
    /// The stream.
    pub stream: S,
    /// Whether it is registered with epoll.
    pub registered: bool,
}

/// All connections of one device.
#[derive(Debug)]
pub struct Muxer<B: Backend> {
    guest_cid: u64,
    backend: B,
    conns: HashMap<ConnId, Connection<B::Stream>>,
    by_key: HashMap<(u32, u32), ConnId>,
    next_id: ConnId,
    next_local_port: u32,
    /// Connections with a packet for the guest, each at most once.
    rx_queue: VecDeque<ConnId>,
    /// Packets for connections that do not exist (or no longer do).
    control: VecDeque<Header>,
    dirty: Vec<ConnId>,
    closed: Vec<ClosedStream<B::Stream>>,
    expired: Vec<ConnId>,
    stalled_on: Option<ConnId>,
    tx_resume: bool,
    deadlines: bool,
    now: Instant,
}

impl<B: Backend> Muxer<B> {
    /// An empty table for the guest `guest_cid`.
    pub fn new(guest_cid: u64, backend: B) -> Self {
        Self {
            guest_cid,
            backend,
            conns: HashMap::with_capacity(MAX_CONNECTIONS),
            by_key: HashMap::with_capacity(MAX_CONNECTIONS),
            next_id: FIRST_CONN_ID,
            next_local_port: FIRST_LOCAL_PORT,
            rx_queue: VecDeque::with_capacity(MAX_CONNECTIONS),
            control: VecDeque::with_capacity(MAX_CONTROL_PACKETS),
            dirty: Vec::with_capacity(MAX_CONNECTIONS),
            closed: Vec::new(),
            expired: Vec::new(),
            stalled_on: None,
            tx_resume: false,
            deadlines: false,
            now: Instant::now(),
        }
    }

    /// Sets the time the next calls see.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// A connection.
    pub fn conn(&self, id: ConnId) -> Option<&Connection<B::Stream>> {
        self.conns.get(&id)
    }

    /// The id of the connection between host port `local` and guest port
    /// `peer`.
    pub fn find(&self, local: u32, peer: u32) -> Option<ConnId> {
        self.by_key.get(&(local, peer)).copied()
    }

    fn alloc_id(&mut self) -> ConnId {
        loop {
            let id = self.next_id;
            self.next_id = id.checked_add(1).unwrap_or(FIRST_CONN_ID);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn alloc_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.by_key.contains_key(&(port, peer)) {
                return port;
            }
        }
    }

    fn queue_control(&mut self, hdr: Header) {
        if self.control.len() >= MAX_CONTROL_PACKETS {
            log::debug!(
                "vsock: control queue full, dropping op {} to port {}",
                hdr.op,
                hdr.dst_port
            );
            return;
        }
        self.control.push_back(hdr);
    }

    /// Bookkeeping after anything happened to connection `id`.
    fn after(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.in_rx_queue && conn.has_rx_work() {
            conn.in_rx_queue = true;
            self.rx_queue.push_back(id);
        }
        if !conn.dirty && conn.wanted_epoll() != conn.epoll {
            conn.dirty = true;
            self.dirty.push(id);
        }
        if conn.deadline().is_some() {
            self.deadlines = true;
        }
        if conn.take_tx_progress() && self.stalled_on == Some(id) {
            self.stalled_on = None;
            self.tx_resume = true;
        }
    }

    /// Ends connection `id`.
    pub fn close(&mut self, id: ConnId, close: Close) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some((local, peer)) = conn.key() {
            self.by_key.remove(&(local, peer));
            if close.rst {
                self.queue_control(Header {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: local,
                    dst_port: peer,
                    type_: TYPE_STREAM,
                    op: op::RST,
                    ..Header::default()
                });
            }
        }
        if self.stalled_on == Some(id) {
            self.stalled_on = None;
            self.tx_resume = true;
        }
        let registered = conn.epoll.is_some();
        self.closed.push(ClosedStream {
            stream: conn.into_stream(),
            registered,
        });
    }

    /// A host stream accepted on the device socket. Returns its id, or
    /// `None` (and closes it) when the table is full.
    pub fn add_host_stream(&mut self, stream: B::Stream) -> Option<ConnId> {
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!("vsock: {MAX_CONNECTIONS} connections open, refusing a host connection");
            return None;
        }
        let id = self.alloc_id();
        self.conns.insert(id, Connection::host(stream, self.now));
        self.after(id);
        Some(id)
    }

    /// Readiness of connection `id`'s host stream.
    pub fn host_event(&mut self, id: ConnId, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.on_host_event(events) {
            Ok(HostOutcome::Continue) => {}
            Ok(HostOutcome::Connect(peer)) => {
                let local = self.alloc_local_port(peer);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.start_local_init(local, peer);
                }
                self.by_key.insert((local, peer), id);
                log::debug!("vsock: host connection {local} -> guest port {peer}");
            }
            Err(close) => return self.close(id, close),
        }
        self.after(id);
    }

    /// A packet from the guest's tx queue.
    pub fn guest_packet<S: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, S>>,
    ) -> GuestOutcome {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            log::debug!(
                "vsock: dropping a packet from cid {} to cid {}",
                hdr.src_cid,
                hdr.dst_cid
            );
            return GuestOutcome::Consumed;
        }
        if hdr.type_ != TYPE_STREAM {
            log::debug!("vsock: refusing socket type {}", hdr.type_);
            if hdr.op != op::RST {
                self.queue_control(hdr.rst_reply());
            }
            return GuestOutcome::Consumed;
        }
        let Some(id) = self.find(hdr.dst_port, hdr.src_port) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(hdr),
                op::RST => {}
                _ => {
                    log::debug!(
                        "vsock: op {} for unknown connection {}:{}",
                        hdr.op,
                        hdr.dst_port,
                        hdr.src_port
                    );
                    self.queue_control(hdr.rst_reply());
                }
            }
            return GuestOutcome::Consumed;
        };
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return GuestOutcome::Consumed;
        };
        match conn.on_guest_packet(hdr, data, now) {
            Ok(GuestOutcome::Consumed) => {
                self.after(id);
                GuestOutcome::Consumed
            }
            Ok(GuestOutcome::Stall) => {
                self.stalled_on = Some(id);
                self.after(id);
                GuestOutcome::Stall
            }
            Err(close) => {
                self.close(id, close);
                GuestOutcome::Consumed
            }
        }
    }

    /// A tx chain that is not a valid packet but whose header could be
    /// read: reset the connection it names.
    pub fn bad_guest_packet(&mut self, hdr: &Header) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            return;
        }
        match self.find(hdr.dst_port, hdr.src_port) {
            Some(id) => self.close(id, Close { rst: true }),
            None if hdr.op != op::RST => self.queue_control(hdr.rst_reply()),
            None => {}
        }
    }

    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!(
                "vsock: {MAX_CONNECTIONS} connections open, refusing guest port {}",
                hdr.src_port
            );
            return self.queue_control(hdr.rst_reply());
        }
        match self.backend.connect(hdr.dst_port) {
            Ok(stream) => {
                let id = self.alloc_id();
                self.conns.insert(id, Connection::guest(stream, hdr));
                self.by_key.insert((hdr.dst_port, hdr.src_port), id);
                log::debug!(
                    "vsock: guest port {} -> host port {}",
                    hdr.src_port,
                    hdr.dst_port
                );
                self.after(id);
            }
            Err(e) => {
                log::debug!("vsock: guest connection to host port {}: {e}", hdr.dst_port);
                self.queue_control(hdr.rst_reply());
            }
        }
    }

    /// Whether a packet may be waiting for the guest.
    pub fn has_rx_work(&self) -> bool {
        !self.control.is_empty() || !self.rx_queue.is_empty()
    }

    /// Produces the next packet for the guest: its header into `hdr`, its
    /// payload into `buf`. Returns the payload length, or `None` if there
    /// is nothing to send.
    pub fn next_rx_packet<S: BitmapSlice>(
        &mut self,
        hdr: &mut Header,
        buf: &VolatileSlice<'_, S>,
    ) -> Option<u32> {
        if let Some(h) = self.control.pop_front() {
            *hdr = h;
            return Some(0);
        }
        // Each queued connection gets one go per call, so a connection
        // that wrongly claims work cannot spin us.
        for _ in 0..self.rx_queue.len() {
            let id = self.rx_queue.pop_front()?;
            let now = self.now;
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.in_rx_queue = false;
            match conn.fill_rx(hdr, buf, now) {
                Ok(Some(len)) => {
                    hdr.src_cid = HOST_CID;
                    hdr.dst_cid = self.guest_cid;
                    self.after(id);
                    return Some(len);
                }
                Ok(None) => self.after(id),
                Err(close) => {
                    self.close(id, close);
                    if let Some(h) = self.control.pop_front() {
                        *hdr = h;
                        return Some(0);
                    }
                }
            }
        }
        None
    }

    /// Ends the connections whose deadline passed.
    pub fn tick(&mut self) {
        if !self.deadlines {
            return;
        }
        let now = self.now;
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        let mut any = false;
        for (id, conn) in &self.conns {
            if let Some(deadline) = conn.deadline() {
                any = true;
                if deadline <= now {
                    expired.push(*id);
                }
            }
        }
        for id in expired.drain(..) {
            if let Some(close) = self.conns.get_mut(&id).and_then(|c| c.on_deadline(now)) {
                self.close(id, close);
            }
        }
        self.expired = expired;
        self.deadlines = any;
    }

    /// Whether some connection waits on a deadline.
    pub fn needs_timer(&self) -> bool {
        self.deadlines
    }

    /// Whether the tx queue must wait for a connection's buffer to drain.
    pub fn is_tx_stalled(&self) -> bool {
        self.stalled_on.is_some()
    }

    /// Whether a stalled tx queue may be retried (once).
    pub fn take_tx_resume(&mut self) -> bool {
        std::mem::take(&mut self.tx_resume)
    }

    /// The next connection whose wanted epoll interest may have changed.
    pub fn pop_dirty(&mut self) -> Option<ConnId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
                return Some(id);
            }
        }
        None
    }

    /// Records the interest the device registered for connection `id`.
    pub fn set_registered(&mut self, id: ConnId, set: Option<EventSet>) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.epoll = set;
        }
    }

    /// Streams of ended connections, to be taken off epoll and closed.
    pub fn take_closed(&mut self) -> std::vec::Drain<'_, ClosedStream<B::Stream>> {
        self.closed.drain(..)
    }

    /// Ends every connection without telling the guest (device reset).
    pub fn reset(&mut self) {
        for (_, conn) in self.conns.drain() {
            let registered = conn.epoll.is_some();
            self.closed.push(ClosedStream {
                stream: conn.into_stream(),
                registered,
            });
        }
        self.by_key.clear();
        self.rx_queue.clear();
        self.control.clear();
        self.dirty.clear();
        self.stalled_on = None;
        self.tx_resume = false;
        self.deadlines = false;
    }
}

#[cfg(test)]
mod tests;
