//! The balloon on the VMM thread's event loop. Tokens: the control event
//! (activation and reset) and the three queue events.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Balloon, Discard, DEFLATEQ, INFLATEQ, REPORTINGQ};

const TOKEN_CONTROL: u32 = 0;
const TOKEN_QUEUE_BASE: u32 = 1;

impl<D: Discard> Balloon<D> {
    fn register_queues(&mut self, ops: &mut EventOps) {
        if let Some(active) = &self.active {
            self.queue_events
                .register(ops, &active.evts, TOKEN_QUEUE_BASE, "virtio-balloon");
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
        self.queue_events.bury(ops);
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
