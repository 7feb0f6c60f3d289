//! The 8250 UART on COM1, the guest's console.
//!
//! The register model is vm-superio's; this file puts it on the port-I/O
//! bus, raises its interrupt through an irqfd and feeds it host input.

use std::io::Write;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// Port-I/O base of COM1.
pub const COM1_PORT_BASE: u64 = 0x3f8;
/// Length of the UART's port range.
pub const COM1_PORT_LEN: u64 = 8;

/// Raises the UART's interrupt by writing an `EventFd` registered as irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// A trigger writing `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest console goes.
pub type ConsoleSink = Box<dyn Write + Send>;

/// COM1 as a bus device.
pub struct SerialConsole {
    uart: Serial<EventFdTrigger, vm_superio::serial::NoEvents, ConsoleSink>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole").finish_non_exhaustive()
    }
}

impl SerialConsole {
    /// A UART that raises `irq_evt` and writes the guest's output to `sink`.
    pub fn new(irq_evt: EventFd, sink: ConsoleSink) -> Self {
        Self {
            uart: Serial::new(EventFdTrigger::new(irq_evt), sink),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(input.len());
        match self.uart.enqueue_raw_bytes(&input[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: dropping console input: {e:?}");
                0
            }
        }
    }

    /// Free room in the input FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) => *byte = self.uart.read(offset),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(offset), [byte]) = (u8::try_from(offset), data) {
            if let Err(e) = self.uart.write(offset, *byte) {
                log::warn!("serial: write to register {offset}: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_output_reaches_the_sink_and_input_the_guest() {
        let out = Shared::default();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut com1 = SerialConsole::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        for b in b"hi" {
            com1.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi");

        // Enable the received-data interrupt, then feed input.
        com1.write(1, &[0x01]);
        assert_eq!(com1.enqueue_input(b"x"), 1);
        assert!(irq.read().is_ok());
        let mut lsr = [0u8];
        com1.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        com1.read(0, &mut rbr);
        assert_eq!(&rbr, b"x");
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut com1 = SerialConsole::new(irq, Box::new(std::io::sink()));
        let mut wide = [0u8; 2];
        com1.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
        com1.write(0, &[1, 2]);
    }
}
