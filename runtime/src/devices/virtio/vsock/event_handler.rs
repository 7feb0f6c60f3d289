//! The vsock device on the VMM thread's event loop.
//!
//! Tokens (the epoll data of each fd): the listener, the control event
//! (activation and reset), the connection timer, the three queue events,
//! and from [`FIRST_CONN_ID`] on one per connection's host stream.
//!
//! Every call ends the same way: serve the tx queue if it was notified
//! (or a stall cleared), fill the rx queue, apply the connections' epoll
//! changes, bury closed streams, (dis)arm the timer, raise the interrupt.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::connection::Close;
use super::device::{Vsock, EVQ, RXQ, TXQ};
use super::muxer::{ConnId, FIRST_CONN_ID};

const TOKEN_LISTENER: u32 = 0;
const TOKEN_CONTROL: u32 = 1;
const TOKEN_TIMER: u32 = 2;
const TOKEN_RXQ: u32 = 3;
const TOKEN_TXQ: u32 = 4;
const TOKEN_EVQ: u32 = 5;
const _: () = assert!(TOKEN_EVQ < FIRST_CONN_ID);
// Queue i is watched with token TOKEN_RXQ + i.
const _: () =
    assert!(RXQ == 0 && TOKEN_TXQ == TOKEN_RXQ + TXQ as u32 && TOKEN_EVQ == TOKEN_RXQ + EVQ as u32);

/// Period of the connection timer while a connection waits on a deadline.
const TICK: Duration = Duration::from_secs(1);
/// Most host connections accepted per listener event.
const ACCEPT_BURST: usize = 32;

impl Vsock {
    fn register_queues(&mut self, ops: &mut EventOps) {
        if let Some(active) = &self.active {
            self.queue_events
                .register(ops, &active.evts, TOKEN_RXQ, "vsock");
        }
    }

    /// Takes dead queue events and closed streams off epoll and closes them.
    fn bury(&mut self, ops: &mut EventOps) {
        self.queue_events.bury(ops);
        for closed in self.muxer.take_closed() {
            if closed.registered {
                let _ = ops.remove(Events::empty(&closed.stream));
            }
        }
    }

    /// Brings each changed connection's epoll registration in line with
    /// what it wants. Returns whether a connection had to be closed.
    fn sync_epoll(&mut self, ops: &mut EventOps) -> bool {
        let mut closed = false;
        while let Some(id) = self.muxer.pop_dirty() {
            let Some(conn) = self.muxer.conn(id) else {
                continue;
            };
            let fd = conn.stream().as_raw_fd();
            let wanted = conn.wanted_epoll();
            let result = match (conn.epoll, wanted) {
                (None, Some(set)) => ops.add(Events::with_data_raw(fd, id, set)),
                (Some(old), Some(set)) if old != set => {
                    ops.modify(Events::with_data_raw(fd, id, set))
                }
                (Some(_), None) => ops.remove(Events::empty_raw(fd)),
                _ => Ok(()),
            };
            match result {
                Ok(()) => self.muxer.set_registered(id, wanted),
                Err(e) if wanted.is_none() => {
                    log::debug!("vsock: epoll remove: {e:?}");
                    self.muxer.set_registered(id, None);
                }
                Err(e) => {
                    log::warn!("vsock: cannot watch a connection: {e:?}");
                    self.muxer.close(id, Close { rst: true });
                    closed = true;
                }
            }
        }
        self.bury(ops);
        closed
    }

    fn accept(&mut self, ops: &mut EventOps) {
        for _ in 0..ACCEPT_BURST {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("vsock: host connection: {e}");
                        continue;
                    }
                    self.muxer.add_host_stream(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Typically out of fds: epoll would report the pending
                    // connection forever. Retry on the timer.
                    log::warn!("vsock: accept: {e}; pausing the listener");
                    let _ = ops.remove(Events::empty(&self.listener));
                    self.listener_paused = true;
                    break;
                }
            }
        }
    }

    fn resume_listener(&mut self, ops: &mut EventOps) {
        if !self.listener_paused {
            return;
        }
        match ops.add(Events::with_data(
            &self.listener,
            TOKEN_LISTENER,
            EventSet::IN,
        )) {
            Ok(()) => self.listener_paused = false,
            Err(e) => log::warn!("vsock: cannot watch the listener again: {e:?}"),
        }
    }

    fn update_timer(&mut self) {
        let wanted = self.muxer.needs_timer() || self.listener_paused;
        if wanted == self.timer_armed {
            return;
        }
        let result = if wanted {
            self.timer.reset(TICK, Some(TICK))
        } else {
            self.timer.clear()
        };
        match result {
            Ok(()) => self.timer_armed = wanted,
            Err(e) => log::warn!("vsock: timer: {e}"),
        }
    }

    fn read_queue_evt(&self, index: usize) {
        if let Some(active) = &self.active {
            let _ = active.evts[index].read();
        }
    }

    fn host_event(&mut self, id: ConnId, events: &Events) {
        // Ignore events of a stream that is no longer the one behind `id`.
        match self.muxer.conn(id) {
            Some(conn) if conn.stream().as_raw_fd() == events.fd() => {}
            _ => return,
        }
        self.muxer.host_event(id, events.event_set());
    }

    /// Serves the queues after an event.
    fn run_queues(&mut self, tx_notified: bool) {
        let mut tx_used = false;
        if tx_notified || self.muxer.take_tx_resume() {
            tx_used |= self.process_tx();
        }
        let mut rx_used = self.process_rx();
        // Filling rx can end connections, which can un-stall tx.
        if self.muxer.take_tx_resume() {
            tx_used |= self.process_tx();
            rx_used |= self.process_rx();
        }
        self.signal_used(rx_used, tx_used);
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            (self.listener.as_raw_fd(), TOKEN_LISTENER, "listener"),
            (self.control_evt.as_raw_fd(), TOKEN_CONTROL, "control event"),
            (self.timer.as_raw_fd(), TOKEN_TIMER, "timer"),
        ];
        for (fd, token, what) in fds {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("vsock: cannot watch the {what}: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.muxer.set_now(Instant::now());
        // A reset on a vCPU thread may have left fds to take off epoll.
        self.bury(ops);
        let mut tx_notified = false;
        match events.data() {
            TOKEN_CONTROL => {
                let _ = self.control_evt.read();
                self.register_queues(ops);
                tx_notified = true;
            }
            TOKEN_LISTENER => self.accept(ops),
            TOKEN_TIMER => {
                let _ = self.timer.wait();
                self.muxer.tick();
                self.resume_listener(ops);
            }
            TOKEN_RXQ => self.read_queue_evt(RXQ),
            TOKEN_TXQ => {
                self.read_queue_evt(TXQ);
                tx_notified = true;
            }
            // The device sends no events; the driver's buffers stay put.
            TOKEN_EVQ => self.read_queue_evt(EVQ),
            id if id >= FIRST_CONN_ID => self.host_event(id, &events),
            token => log::debug!("vsock: event for unknown token {token}"),
        }
        self.run_queues(tx_notified);
        if self.sync_epoll(ops) {
            // Send the RSTs of connections epoll refused.
            self.run_queues(false);
            self.sync_epoll(ops);
        }
        self.update_timer();
    }
}
