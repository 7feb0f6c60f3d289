//! The agent's log: `/dev/kmsg` in the guest once `/dev` is mounted (it
//! lands in `dmesg`, and on the console log when the kernel log is
//! verbose), stderr before that and on the host.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

static KMSG: OnceLock<Mutex<File>> = OnceLock::new();

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match KMSG.get() {
            Some(kmsg) => {
                let line = format!(
                    "<{}>husk-agent: {}\n",
                    syslog_priority(record.level()),
                    record.args()
                );
                let mut f = kmsg.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(line.as_bytes());
            }
            None => eprintln!("husk-agent: {}: {}", record.level(), record.args()),
        }
    }

    fn flush(&self) {}
}

/// The syslog priority `/dev/kmsg` takes for a level.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Installs the logger: info and up in the guest, debug on the host.
pub fn init(in_guest: bool) {
    if log::set_logger(&Logger).is_ok() {
        log::set_max_level(if in_guest {
            LevelFilter::Info
        } else {
            LevelFilter::Debug
        });
    }
}

/// Sends the log to `/dev/kmsg` from now on.
pub fn to_kmsg() -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open("/dev/kmsg")?;
    let _ = KMSG.set(Mutex::new(file));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Trace), 7);
    }
}
