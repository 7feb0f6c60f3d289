//! husk's own log: stderr by default (`husk[pid]: level: message`), or the
//! `--log` file, as text or as runc's JSON lines (`--log-format json`:
//! `{"level":…,"msg":…,"time":…}`), which containerd's runc shim reads to
//! report why a call failed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use log::{LevelFilter, Log, Metadata, Record};

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `husk[pid]: level: message`.
    Text,
    /// One JSON object per line.
    Json,
}

struct Logger {
    file: Option<Mutex<File>>,
    format: LogFormat,
}

impl Logger {
    fn line(&self, record: &Record<'_>) -> String {
        let level = record.level().as_str().to_ascii_lowercase();
        match self.format {
            LogFormat::Text => {
                format!("husk[{}]: {level}: {}\n", std::process::id(), record.args())
            }
            LogFormat::Json => {
                let obj = serde_json::json!({
                    "level": level,
                    "msg": record.args().to_string(),
                    "time": husk::container::state::now_rfc3339(),
                });
                format!("{obj}\n")
            }
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = self.line(record);
        match &self.file {
            Some(file) => {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger: warnings by default, debug with `--debug` or
/// `HUSK_LOG=debug`; into `file` when given (created if needed, appended).
pub fn init(debug: bool, file: Option<&Path>, format: LogFormat) {
    let level = match std::env::var("HUSK_LOG").ok().as_deref() {
        _ if debug => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        Some("debug") => LevelFilter::Debug,
        Some("info") => LevelFilter::Info,
        Some("error") => LevelFilter::Error,
        _ => LevelFilter::Warn,
    };
    let file = file.and_then(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| eprintln!("husk: cannot open log {path:?}: {e}; logging to stderr"))
            .ok()
    });
    let logger = Logger {
        file: file.map(Mutex::new),
        format,
    };
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
}
