//! The i8042 keyboard controller, reduced to what a microVM needs: the
//! reset line. Linux booted with `reboot=k` resets the machine by writing
//! `0xfe` to the command port; husk turns that into the end of the VMM.

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// Port-I/O base of the controller (data port 0x60, command/status 0x64).
pub const I8042_PORT_BASE: u64 = 0x60;
/// Length of the port range.
pub const I8042_PORT_LEN: u64 = 5;

/// Offset of the command/status port from [`I8042_PORT_BASE`].
const COMMAND_OFFSET: u64 = 4;
/// The "pulse output line 0" command: CPU reset.
const CMD_RESET_CPU: u8 = 0xfe;

/// The reset half of an i8042.
#[derive(Debug)]
pub struct I8042 {
    reset_evt: EventFd,
    resets: u32,
}

impl I8042 {
    /// A controller that writes `reset_evt` when the guest asks for a reset.
    pub fn new(reset_evt: EventFd) -> Self {
        Self {
            reset_evt,
            resets: 0,
        }
    }

    /// How many resets the guest asked for.
    pub fn resets(&self) -> u32 {
        self.resets
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so the guest
        // never waits on us. The data port reads as 0 (no keys).
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.resets += 1;
            if let Err(e) = self.reset_evt.write(1) {
                log::error!("i8042: cannot signal the guest reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn reset_command_signals_the_event() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        let mut status = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0xfd]);
        assert!(evt.read().is_err(), "only 0xfe on the command port resets");
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(dev.resets(), 1);
    }
}
