//! Bridging a container process's stdio between host descriptors and the
//! agent's vsock streams: one thread per direction, plain blocking copies.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use husk_protocol::agent::Stdio;

use crate::agent::{attach_stdio, AttachStdioError, StdioStream};

/// How long attaching a stream may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a process's stdio comes from and goes to on the host.
pub enum HostStdio {
    /// The given descriptors (the monitor's own 0, 1 and 2).
    Fds {
        /// Read and sent to the process's stdin.
        stdin: OwnedFd,
        /// Written with the process's stdout.
        stdout: OwnedFd,
        /// Written with the process's stderr.
        stderr: OwnedFd,
    },
    /// One terminal both ways (the slave of the host pty whose master went
    /// to the console socket).
    Tty(OwnedFd),
}

impl HostStdio {
    /// The streams to ask the agent for.
    pub fn wanted(&self) -> Stdio {
        match self {
            HostStdio::Fds { .. } => Stdio {
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
            HostStdio::Tty(_) => Stdio {
                terminal: true,
                ..Default::default()
            },
        }
    }

    /// Duplicates of this process's 0, 1 and 2.
    pub fn from_own_fds() -> std::io::Result<Self> {
        let dup = |fd| -> std::io::Result<OwnedFd> {
            // SAFETY: dup of a standard descriptor; the result is ours alone.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `new` is a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(new) })
        };
        Ok(HostStdio::Fds {
            stdin: dup(0)?,
            stdout: dup(1)?,
            stderr: dup(2)?,
        })
    }
}

/// The running copies. Output threads are joined by [`StdioBridge::finish`]
/// so nothing the process wrote is lost; the input thread may stay blocked
/// on a host stdin nobody closes and is left to end with the process.
pub struct StdioBridge {
    outputs: Vec<JoinHandle<()>>,
}

/// Copies until EOF or an error; returns the bytes copied.
pub fn pump(mut from: impl Read, mut to: impl Write) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return total,
        };
        if to.write_all(&buf[..n]).is_err() {
            return total;
        }
        let _ = to.flush();
        total += n as u64;
    }
}

impl StdioBridge {
    /// Attaches every stream `host` needs through the VMM's vsock socket
    /// and starts copying. Call after the process was created in the guest
    /// and before it is started.
    pub fn attach(
        vsock: &Path,
        container_id: &str,
        exec_id: &str,
        host: HostStdio,
    ) -> Result<Self, AttachStdioError> {
        let open = |s| attach_stdio(vsock, container_id, exec_id, s, ATTACH_TIMEOUT);
        let mut outputs = Vec::new();
        match host {
            HostStdio::Fds {
                stdin,
                stdout,
                stderr,
            } => {
                let to_guest = open(StdioStream::Stdin)?;
                let from_out = open(StdioStream::Stdout)?;
                let from_err = open(StdioStream::Stderr)?;
                spawn_input(File::from(stdin), to_guest);
                outputs.push(std::thread::spawn(move || {
                    pump(&from_out, File::from(stdout));
                }));
                outputs.push(std::thread::spawn(move || {
                    pump(&from_err, File::from(stderr));
                }));
            }
            HostStdio::Tty(slave) => {
                let tty = open(StdioStream::Tty)?;
                let tty_in = tty.try_clone().map_err(AttachStdioError::Io)?;
                let slave_in = File::from(slave);
                let slave_out = slave_in.try_clone().map_err(AttachStdioError::Io)?;
                spawn_input(slave_in, tty_in);
                outputs.push(std::thread::spawn(move || {
                    pump(&tty, slave_out);
                }));
            }
        }
        Ok(Self { outputs })
    }

    /// Waits until the process's output has reached the host, or `timeout`.
    pub fn finish(self, timeout: Duration) {
        join_outputs(self.outputs, timeout);
    }
}

/// Joins output-copying threads that end within `timeout`; the others are
/// left to end with their streams.
pub fn join_outputs(outputs: Vec<JoinHandle<()>>, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for t in outputs {
        while !t.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("stdio output still open after the process ended; not waiting longer");
        }
    }
}

/// Host input to the guest; EOF on the host becomes EOF in the process.
fn spawn_input(from: File, to: UnixStream) {
    std::thread::spawn(move || {
        pump(from, &to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_copies_everything_until_eof() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert_eq!(pump(data.as_slice(), &mut out), data.len() as u64);
        assert_eq!(out, data);
    }

    #[test]
    fn fds_want_three_streams_and_a_tty_one() {
        let host = HostStdio::from_own_fds().unwrap();
        let w = host.wanted();
        assert!(w.stdin && w.stdout && w.stderr && !w.terminal);
    }
}
