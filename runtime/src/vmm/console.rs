//! Guest console sinks: nowhere, the VMM's stdout, or a bounded log.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::devices::legacy::serial::ConsoleSink;
use crate::vmm::config::ConsoleConfig;

/// A log file that is rotated once when it reaches its limit: the current
/// file moves to `<path>.1` (replacing an older one), so the console never
/// takes more than twice the limit on disk.
#[derive(Debug)]
pub struct BoundedLog {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl BoundedLog {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open_log(path)?,
            written: 0,
            max_bytes: max_bytes.max(1),
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = open_log(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
}

impl Write for BoundedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads the last `max_bytes` of a console log (including its rotated
/// half), for error reports.
pub fn console_log_tail(path: &Path, max_bytes: usize) -> String {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let mut bytes = std::fs::read(&old).unwrap_or_default();
    bytes.extend(std::fs::read(path).unwrap_or_default());
    let start = bytes.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Opens the sink a console config names.
pub fn open_console(config: &ConsoleConfig) -> io::Result<ConsoleSink> {
    Ok(match config {
        ConsoleConfig::Off => Box::new(io::sink()),
        ConsoleConfig::Stdout => Box::new(io::stdout()),
        ConsoleConfig::Log { path, max_bytes } => Box::new(BoundedLog::create(path, *max_bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotates_once_and_tail_reads_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::create(&path, 8).unwrap();
        log.write_all(b"aaaaaaaa").unwrap();
        log.write_all(b"bbbbbbbb").unwrap();
        log.write_all(b"cccc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"cccc");
        assert_eq!(
            std::fs::read(dir.path().join("console.log.1")).unwrap(),
            b"bbbbbbbb"
        );
        assert_eq!(console_log_tail(&path, 6), "bbcccc");
        assert_eq!(console_log_tail(&dir.path().join("none"), 6), "");
    }
}
