//! A process's stdio between containerd's FIFOs and the agent's vsock
//! streams: output threads copy each guest stream into its FIFO, one input
//! thread copies the stdin FIFO into the guest; with a terminal one stream
//! carries the guest pty both ways.

use std::fs::{File, OpenOptions};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use husk::agent::{attach_stdio, StdioStream};
use husk::container::stdio::{join_outputs, pump};
use husk_protocol::agent::Stdio;

use crate::error::TaskError;

/// How long attaching a stream may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a stdio path could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStdioError {
    /// The FIFO or file.
    #[error("cannot open {path:?} for the process's {stream}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Which stream.
        stream: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A URI scheme this shim does not run.
    #[error("{stream} {uri:?}: only FIFO paths and file:// URIs are supported")]
    Scheme {
        /// Which stream.
        stream: &'static str,
        /// The URI.
        uri: String,
    },
}

/// The stdio containerd named for a process (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Read and sent to the process.
    pub stdin: String,
    /// Written with its stdout (and, with a terminal, the pty's output).
    pub stdout: String,
    /// Written with its stderr.
    pub stderr: String,
    /// A pty in the guest.
    pub terminal: bool,
}

impl StdioPaths {
    /// The streams to ask the agent for.
    pub fn wanted(&self) -> Stdio {
        if self.terminal {
            return Stdio {
                terminal: true,
                ..Default::default()
            };
        }
        Stdio {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty(),
            ..Default::default()
        }
    }
}

/// Opens an output path: a FIFO (read and write, so opening never waits
/// for containerd's reader) or a `file://` URI (appended).
fn open_output(path: &str, stream: &'static str) -> Result<File, OpenStdioError> {
    let (path, fifo) = match path.split_once("://") {
        None => (path, true),
        Some(("file", rest)) => (rest, false),
        Some(_) => {
            return Err(OpenStdioError::Scheme {
                stream,
                uri: path.to_string(),
            })
        }
    };
    let mut options = OpenOptions::new();
    if fifo {
        options.read(true).write(true);
    } else {
        options.append(true).create(true);
    }
    options.open(path).map_err(|source| OpenStdioError::Open {
        path: PathBuf::from(path),
        stream,
        source,
    })
}

/// The running copies of one process's stdio.
pub struct Bridge {
    outputs: Vec<JoinHandle<()>>,
    /// The guest's stdin (or pty) stream, to end input on CloseIO.
    stdin: Arc<Mutex<Option<UnixStream>>>,
}

impl Bridge {
    /// Opens the outputs, attaches every stream the process was created
    /// with and starts copying.
    pub fn attach(
        vsock: &Path,
        container_id: &str,
        exec_id: &str,
        paths: &StdioPaths,
    ) -> Result<Self, TaskError> {
        let open = |s| attach_stdio(vsock, container_id, exec_id, s, ATTACH_TIMEOUT);
        let mut outputs = Vec::new();
        let stdin = Arc::new(Mutex::new(None));
        if paths.terminal {
            let out = if paths.stdout.is_empty() {
                None
            } else {
                Some(open_output(&paths.stdout, "terminal output")?)
            };
            let tty = open(StdioStream::Tty)?;
            let tty_in = tty.try_clone().map_err(|source| TaskError::Io {
                what: "clone the pty stream".into(),
                source,
            })?;
            if let Some(out) = out {
                outputs.push(std::thread::spawn(move || {
                    pump(&tty, out);
                }));
            }
            if !paths.stdin.is_empty() {
                spawn_input(paths.stdin.clone(), tty_in, false, &stdin);
            }
        } else {
            for (path, stream, name) in [
                (&paths.stdout, StdioStream::Stdout, "stdout"),
                (&paths.stderr, StdioStream::Stderr, "stderr"),
            ] {
                if path.is_empty() {
                    continue;
                }
                let out = open_output(path, name)?;
                let from = open(stream)?;
                outputs.push(std::thread::spawn(move || {
                    pump(&from, out);
                }));
            }
            if !paths.stdin.is_empty() {
                let to_guest = open(StdioStream::Stdin)?;
                spawn_input(paths.stdin.clone(), to_guest, true, &stdin);
            }
        }
        Ok(Self { outputs, stdin })
    }

    /// Ends the process's input (containerd's CloseIO).
    pub fn close_stdin(&self) {
        if let Some(stream) = self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }

    /// Waits until the process's output reached the FIFOs, or `timeout`.
    pub fn finish(self, timeout: Duration) {
        join_outputs(self.outputs, timeout);
    }
}

/// Copies the stdin FIFO into the guest. Opening waits for containerd's
/// writer, so it happens in the thread. At EOF the guest stream's write
/// side is shut (`eof_ends_input`; a pty stream stays open for output).
fn spawn_input(
    path: String,
    to: UnixStream,
    eof_ends_input: bool,
    handle: &Arc<Mutex<Option<UnixStream>>>,
) {
    if let Ok(kept) = to.try_clone() {
        *handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
    }
    let handle = Arc::clone(handle);
    std::thread::spawn(move || {
        let Ok(from) = File::open(&path) else {
            log::warn!("cannot open stdin {path:?}");
            return;
        };
        pump(from, &to);
        if eof_ends_input
            && handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .is_some()
        {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_streams_follow_the_paths() {
        let paths = StdioPaths {
            stdin: String::new(),
            stdout: "/run/x/out".into(),
            stderr: "/run/x/err".into(),
            terminal: false,
        };
        let w = paths.wanted();
        assert!(!w.stdin && w.stdout && w.stderr && !w.terminal);
        let tty = StdioPaths {
            terminal: true,
            ..paths
        };
        let w = tty.wanted();
        assert!(w.terminal && !w.stdout);
    }

    #[test]
    fn outputs_are_fifos_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("log");
        open_output(&format!("file://{}", file.display()), "stdout").unwrap();
        assert!(file.exists());
        let e = open_output("binary:///usr/bin/logger", "stdout").unwrap_err();
        assert!(e.to_string().contains("binary:///usr/bin/logger"), "{e}");
        let e = open_output("/nonexistent/fifo", "stderr").unwrap_err();
        assert!(e.to_string().contains("stderr"), "{e}");
    }
}
