//! The event-loop subscriber that notices the end of the VM.

use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

/// Watches `exit_evt` (written by the i8042 reset and by vCPU threads).
pub struct ExitWatcher {
    exit_evt: Arc<EventFd>,
    fired: bool,
}

impl ExitWatcher {
    /// Watches `exit_evt`.
    pub fn new(exit_evt: Arc<EventFd>) -> Self {
        Self {
            exit_evt,
            fired: false,
        }
    }

    /// Whether the VM has ended.
    pub fn fired(&self) -> bool {
        self.fired
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.exit_evt.read();
        self.fired = true;
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.exit_evt.as_ref(), EventSet::IN)) {
            // Never run a VM whose end would go unnoticed.
            log::error!("cannot watch the exit event: {e:?}");
            self.fired = true;
        }
    }
}
