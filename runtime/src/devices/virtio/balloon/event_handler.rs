//! The balloon on the VMM thread's event loop. Tokens: the control event
//! (activation and reset) and the three queue events.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Balloon, Discard, DEFLATEQ, INFLATEQ, REPORTINGQ};

const TOKEN_CONTROL: u32 = 0;
const TOKEN_QUEUE_BASE: u32 = 1;

impl<D: Discard> Balloon<D> {
    fn register_queues(&mut self, ops: &mut EventOps) {
        let Some(active) = &self.active else { return };
        if self.queues_registered {
            return;
        }
        for (index, evt) in active.evts.iter().enumerate() {
            let token = TOKEN_QUEUE_BASE + index as u32;
            if let Err(e) = ops.add(Events::with_data(evt, token, EventSet::IN)) {
                log::error!("virtio-balloon: cannot watch queue {index}: {e:?}");
            }
        }
        self.queues_registered = true;
    }

    /// Takes the queue events of an earlier activation off epoll.
    fn bury(&mut self, ops: &mut EventOps) {
        for (evt, registered) in self.dead_evts.drain(..) {
            if registered {
                let _ = ops.remove(Events::empty(&evt));
            }
        }
    }

    /// Serves every queue; a queue left with chains notifies its own
    /// event so the rest follows on the loop's next turn.
    fn run_queues(&mut self) {
        let mut used = false;
        for index in [INFLATEQ, DEFLATEQ, REPORTINGQ] {
            let (added, more) = self.process_queue(index);
            used |= added;
            if more {
                if let Some(active) = &self.active {
                    let _ = active.evts[index].write(1);
                }
            }
        }
        if used {
            self.signal_used();
        }
    }
}

impl<D: Discard> MutEventSubscriber for Balloon<D> {
    fn init(&mut self, ops: &mut EventOps) {
        let control = Events::with_data(&self.control_evt, TOKEN_CONTROL, EventSet::IN);
        if let Err(e) = ops.add(control) {
            log::error!("virtio-balloon: cannot watch the control event: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.bury(ops);
        match events.data() {
            TOKEN_CONTROL => {
                let _ = self.control_evt.read();
                self.register_queues(ops);
            }
            token if (TOKEN_QUEUE_BASE..TOKEN_QUEUE_BASE + 3).contains(&token) => {
                if let Some(active) = &self.active {
                    let _ = active.evts[(token - TOKEN_QUEUE_BASE) as usize].read();
                }
            }
            token => log::debug!("virtio-balloon: event for unknown token {token}"),
        }
        self.run_queues();
    }
}
