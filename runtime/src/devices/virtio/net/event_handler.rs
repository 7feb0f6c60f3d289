//! The virtio-net device on the VMM thread's event loop.
//!
//! Tokens: the control event (activation and reset), the tap, and the two
//! queue events. The tap is watched edge-triggered for both directions
//! from the start: a readable edge marks it readable until a read finds
//! nothing (so a tap the guest has no buffers for is left alone, without
//! a busy loop), a writable edge resumes a stalled transmit queue.
//!
//! Every call ends the same way: send what the transmit queue holds if it
//! was notified (or the tap drained), fill the receive queue, raise the
//! interrupt. A turn that hit its burst limit notifies its own queue
//! event, so the rest follows on the next turn of the loop.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Net, RXQ, TXQ};
use super::tap::TapBackend;

const TOKEN_CONTROL: u32 = 0;
const TOKEN_TAP: u32 = 1;
const TOKEN_RXQ: u32 = 2;
const TOKEN_TXQ: u32 = 3;
const _: () = assert!(TOKEN_TXQ == TOKEN_RXQ + TXQ as u32 && RXQ == 0);

impl<T: TapBackend> Net<T> {
    fn register_queues(&mut self, ops: &mut EventOps) {
        if let Some(active) = &self.active {
            self.queue_events
                .register(ops, &active.evts, TOKEN_RXQ, "virtio-net");
        }
    }

    fn read_queue_evt(&self, index: usize) {
        if let Some(active) = &self.active {
            let _ = active.evts[index].read();
        }
    }

    /// Notifies a queue's own event: its turn ran out with work left.
    fn kick(&self, index: usize) {
        if let Some(active) = &self.active {
            let _ = active.evts[index].write(1);
        }
    }

    /// Serves the queues after an event.
    fn run_queues(&mut self, tx_wanted: bool) {
        let mut tx_used = false;
        if tx_wanted {
            let turn = self.process_tx();
            tx_used = turn.used;
            if turn.more {
                self.kick(TXQ);
            }
        }
        let rx = self.process_rx();
        if rx.more {
            self.kick(RXQ);
        }
        self.signal_used(rx.used, tx_used);
    }
}

impl<T: TapBackend> MutEventSubscriber for Net<T> {
    fn init(&mut self, ops: &mut EventOps) {
        let control = Events::with_data(&self.control_evt, TOKEN_CONTROL, EventSet::IN);
        if let Err(e) = ops.add(control) {
            log::error!("virtio-net: cannot watch the control event: {e:?}");
        }
        let tap_set = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        let tap = Events::with_data_raw(self.tap.as_raw_fd(), TOKEN_TAP, tap_set);
        if let Err(e) = ops.add(tap) {
            log::error!("virtio-net: cannot watch the tap: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        // A reset on a vCPU thread may have left fds to take off epoll.
        self.queue_events.bury(ops);
        let mut tx_wanted = false;
        match events.data() {
            TOKEN_CONTROL => {
                let _ = self.control_evt.read();
                self.configure_tap();
                self.register_queues(ops);
                tx_wanted = true;
            }
            TOKEN_TAP => {
                let set = events.event_set();
                // An error or hang-up shows on the next read.
                if set.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
                    self.rx.tap_readable = true;
                }
                tx_wanted = set.contains(EventSet::OUT) && self.tx_stalled;
            }
            TOKEN_RXQ => self.read_queue_evt(RXQ),
            TOKEN_TXQ => {
                self.read_queue_evt(TXQ);
                tx_wanted = true;
            }
            token => log::debug!("virtio-net: event for unknown token {token}"),
        }
        self.run_queues(tx_wanted);
    }
}
