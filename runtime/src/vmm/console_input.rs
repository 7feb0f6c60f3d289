//! Host standard input to the guest console, served by the event loop.

use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::devices::legacy::serial::SerialConsole;

const STDIN_FD: i32 = 0;

/// Feeds bytes read from the VMM's stdin to the guest UART.
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialConsole>>,
}

impl ConsoleInput {
    /// Input for `serial`.
    pub fn new(serial: Arc<Mutex<SerialConsole>>) -> Self {
        Self { serial }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let room = serial.input_room();
        let mut buf = [0u8; 64];
        let want = room.min(buf.len());
        // With a full FIFO, leave the bytes in stdin until the guest reads.
        if want == 0 && !events.event_set().contains(EventSet::HANG_UP) {
            return;
        }
        // Unbuffered: a buffered reader would hide bytes from epoll.
        match nix::unistd::read(STDIN_FD, &mut buf[..want.max(1)]) {
            Ok(0) | Err(_) => {
                // EOF or a broken stdin: stop watching it.
                let _ = ops.remove(Events::new_raw(STDIN_FD, EventSet::IN));
            }
            Ok(n) => {
                serial.enqueue_input(&buf[..n]);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(STDIN_FD, EventSet::IN)) {
            // A stdin epoll cannot watch (a regular file) is no console input.
            log::debug!("console input not watched: {e:?}");
        }
    }
}
