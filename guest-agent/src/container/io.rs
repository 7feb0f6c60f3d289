//! A process's stdio: pipes (or a pty) on the process side, host streams
//! (vsock connections, see `crate::stdio`) on the other, and a pump thread
//! per direction between them.
//!
//! - stdin: host stream → pipe; the host's EOF (or CloseStdin) closes the
//!   pipe, so the process reads EOF.
//! - stdout, stderr: pipe → host stream; at the pipe's EOF the stream's
//!   write side is shut, so the host reads EOF.
//! - tty: one stream both ways with the pty master.
//!
//! The process starts only once every requested stream is attached, and
//! WaitProcess returns only once its output is forwarded: the pumps reached
//! EOF, or (when a process that outlived it still holds the pipe) the pipe
//! is empty and the pump holds nothing unsent.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown};

/// One stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Host → process.
    Stdin,
    /// Process → host.
    Stdout,
    /// Process → host.
    Stderr,
    /// Both ways, with the pty.
    Tty,
}

impl StreamKind {
    /// The name in the STDIO line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Tty => "tty",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    const ALL: [StreamKind; 4] = [Self::Stdin, Self::Stdout, Self::Stderr, Self::Tty];
}

/// Which streams a process asked for (the request's `Stdio`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// stdin stream.
    pub stdin: bool,
    /// stdout stream.
    pub stdout: bool,
    /// stderr stream.
    pub stderr: bool,
    /// A pty and one tty stream instead of the three.
    pub terminal: bool,
}

impl Want {
    fn wants(&self, k: StreamKind) -> bool {
        match k {
            StreamKind::Tty => self.terminal,
            _ if self.terminal => false,
            StreamKind::Stdin => self.stdin,
            StreamKind::Stdout => self.stdout,
            StreamKind::Stderr => self.stderr,
        }
    }
}

/// Why a stream could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The process did not ask for it.
    #[error("the process did not ask for a {0} stream")]
    NotWanted(&'static str),
    /// It is attached already.
    #[error("the {0} stream is attached already")]
    Duplicate(&'static str),
    /// The process has started.
    #[error("the process has started already")]
    Started,
    /// The reply could not be written.
    #[error("cannot answer")]
    Ack(#[source] std::io::Error),
}

/// The process's ends, handed to the helper as its fds 0-2.
pub struct ChildStdio {
    /// fd 0.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

impl ChildStdio {
    /// The three, borrowed.
    pub fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [self.stdin.as_fd(), self.stdout.as_fd(), self.stderr.as_fd()]
    }
}

#[derive(Default)]
struct State {
    stdin_w: Option<File>,
    stdout_r: Option<File>,
    stderr_r: Option<File>,
    master: Option<Arc<File>>,
    streams: [Option<Arc<File>>; 4],
    started: bool,
    stdin_closed: bool,
    /// Shut down: nothing will attach any more.
    closed: bool,
}

/// An outbound pump's progress.
struct Pump {
    src: Arc<File>,
    done: Mutex<bool>,
    finished: Condvar,
    /// Holding bytes read but not yet written.
    busy: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes waiting in a pipe or pty.
fn pending(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int through the valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

impl Pump {
    #[cfg(test)]
    fn is_done(&self) -> bool {
        *lock(&self.done)
    }

    /// Nothing left to forward right now (read pending before busy: see
    /// the module docs).
    fn is_idle(&self) -> bool {
        pending(self.src.as_fd()) == 0 && !self.busy.load(Ordering::SeqCst)
    }

    fn run(&self, dst: Arc<File>, what: &str) {
        let mut buf = vec![0u8; 32 * 1024];
        let mut out = Some(dst.clone());
        loop {
            let mut fds = [PollFd::new(self.src.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("{what}: poll: {e}");
                    break;
                }
            }
            self.busy.store(true, Ordering::SeqCst);
            let n = match (&*self.src).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.busy.store(false, Ordering::SeqCst);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.busy.store(false, Ordering::SeqCst);
                    continue;
                }
                // A pty master reads EIO once every slave fd is closed.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => {
                    log::warn!("{what}: read: {e}");
                    break;
                }
            };
            if let Some(o) = &out {
                if let Err(e) = (&**o).write_all(&buf[..n]) {
                    // The host went away: keep draining so the process
                    // never blocks on a full pipe.
                    log::debug!("{what}: host stream closed ({e}); discarding the rest");
                    out = None;
                }
            }
            self.busy.store(false, Ordering::SeqCst);
        }
        self.busy.store(false, Ordering::SeqCst);
        let _ = shutdown(dst.as_raw_fd(), Shutdown::Write);
        *lock(&self.done) = true;
        self.finished.notify_all();
    }
}

/// Copies a host stream into `dst` until the host's EOF; `close` closes
/// `dst` then (stdin), else it stays open (the pty master).
fn copy_in(src: Arc<File>, dst: Arc<File>, what: &str) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match (&*src).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("{what}: read: {e}");
                break;
            }
        };
        if let Err(e) = (&*dst).write_all(&buf[..n]) {
            log::debug!("{what}: the process no longer reads ({e})");
            break;
        }
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    let r = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(128 * 1024)
        .spawn(f);
    if let Err(e) = r {
        log::warn!("cannot start the {name} thread: {e}");
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// A process's stdio.
pub struct ProcessIo {
    want: Want,
    state: Mutex<State>,
    changed: Condvar,
    pumps: Mutex<Vec<Arc<Pump>>>,
}

impl ProcessIo {
    /// Makes the pipes; returns the agent's side and the process's fds.
    pub fn new(want: Want) -> std::io::Result<(Self, ChildStdio)> {
        let mut st = State::default();
        let end = |wanted: bool, inbound: bool| -> std::io::Result<(Option<File>, OwnedFd)> {
            if !wanted || want.terminal {
                // With a terminal the helper puts the pty slave there.
                return Ok((None, dev_null()?));
            }
            let (r, w) = pipe()?;
            Ok(if inbound {
                (Some(File::from(w)), r)
            } else {
                (Some(File::from(r)), w)
            })
        };
        let (stdin_w, stdin) = end(want.stdin, true)?;
        let (stdout_r, stdout) = end(want.stdout, false)?;
        let (stderr_r, stderr) = end(want.stderr, false)?;
        st.stdin_w = stdin_w;
        st.stdout_r = stdout_r;
        st.stderr_r = stderr_r;
        Ok((
            Self {
                want,
                state: Mutex::new(st),
                changed: Condvar::new(),
                pumps: Mutex::default(),
            },
            ChildStdio {
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// Sets the pty master (and its first size).
    pub fn set_master(&self, master: OwnedFd, size: Option<(u16, u16)>) {
        let m = Arc::new(File::from(master));
        if let Some((rows, cols)) = size.filter(|(r, c)| *r > 0 && *c > 0) {
            let _ = set_winsize(m.as_fd(), rows, cols);
        }
        lock(&self.state).master = Some(m);
    }

    /// Attaches a host stream; `ack` runs (the OK reply) once it is sure
    /// to be attached, before any pump can write to the stream.
    pub fn attach(
        &self,
        kind: StreamKind,
        stream: OwnedFd,
        ack: &dyn Fn() -> std::io::Result<()>,
    ) -> Result<(), AttachError> {
        if !self.want.wants(kind) {
            return Err(AttachError::NotWanted(kind.name()));
        }
        let mut st = lock(&self.state);
        if st.started {
            return Err(AttachError::Started);
        }
        let slot = &mut st.streams[kind.index()];
        if slot.is_some() {
            return Err(AttachError::Duplicate(kind.name()));
        }
        ack().map_err(AttachError::Ack)?;
        *slot = Some(Arc::new(File::from(stream)));
        self.changed.notify_all();
        Ok(())
    }

    fn missing(&self, st: &State) -> Vec<&'static str> {
        StreamKind::ALL
            .iter()
            .filter(|k| self.want.wants(**k) && st.streams[k.index()].is_none())
            .map(|k| k.name())
            .collect()
    }

    /// Waits until every requested stream is attached; the missing ones
    /// when `deadline` passes first.
    pub fn wait_attached(&self, deadline: Instant) -> Result<(), Vec<&'static str>> {
        let mut st = lock(&self.state);
        loop {
            let missing = self.missing(&st);
            if missing.is_empty() {
                return Ok(());
            }
            if st.closed {
                return Err(missing);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(missing);
            };
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Starts the pumps (once every stream is attached).
    pub fn start(&self, what: &str) {
        let mut st = lock(&self.state);
        if st.started {
            return;
        }
        st.started = true;
        let mut pumps = lock(&self.pumps);
        let mut out = |src: Option<Arc<File>>, dst: Option<Arc<File>>, name: String| {
            if let (Some(src), Some(dst)) = (src, dst) {
                let pump = Arc::new(Pump {
                    src,
                    done: Mutex::new(false),
                    finished: Condvar::new(),
                    busy: AtomicBool::new(false),
                });
                pumps.push(pump.clone());
                let n = name.clone();
                spawn_named(&name, move || pump.run(dst, &n));
            }
        };
        let stdout_r = st.stdout_r.take().map(Arc::new);
        let stderr_r = st.stderr_r.take().map(Arc::new);
        out(stdout_r, st.streams[1].clone(), format!("{what} stdout"));
        out(stderr_r, st.streams[2].clone(), format!("{what} stderr"));
        out(
            st.master.clone(),
            st.streams[3].clone(),
            format!("{what} tty out"),
        );
        if let (Some(m), Some(s)) = (st.master.clone(), st.streams[3].clone()) {
            let n = format!("{what} tty in");
            spawn_named(&n.clone(), move || copy_in(s, m, &n));
        }
        let stdin_w = st.stdin_w.take();
        if let (Some(w), Some(s), false) = (stdin_w, st.streams[0].clone(), st.stdin_closed) {
            let n = format!("{what} stdin");
            // Dropping the pipe's write end at the host's EOF is the EOF
            // the process reads.
            spawn_named(&n.clone(), move || copy_in(s, Arc::new(w), &n));
        }
    }

    /// EOF on stdin now, whatever the host stream does.
    pub fn close_stdin(&self) {
        let mut st = lock(&self.state);
        st.stdin_closed = true;
        st.stdin_w = None;
        if let Some(s) = &st.streams[StreamKind::Stdin.index()] {
            // Wakes the stdin pump with EOF; it then closes the pipe.
            let _ = shutdown(s.as_raw_fd(), Shutdown::Read);
        }
    }

    /// Sets the pty's window size; false without a pty.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<bool, Errno> {
        let master = lock(&self.state).master.clone();
        match master {
            Some(m) => set_winsize(m.as_fd(), rows, cols).map(|()| true),
            None => Ok(false),
        }
    }

    /// Waits until the output is forwarded (see the module docs); false
    /// when `deadline` passed first.
    pub fn wait_output(&self, deadline: Option<Instant>) -> bool {
        let pumps = lock(&self.pumps).clone();
        for p in pumps {
            let mut idle_checks = 0;
            let mut done = lock(&p.done);
            while !*done {
                drop(done);
                // Twice idle in a row: a pty's flip buffer may lag a moment.
                idle_checks = if p.is_idle() { idle_checks + 1 } else { 0 };
                if idle_checks >= 2 {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    return false;
                }
                done = lock(&p.done);
                if *done {
                    break;
                }
                done = p
                    .finished
                    .wait_timeout(done, Duration::from_millis(10))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        true
    }

    /// Whether every pump reached EOF.
    #[cfg(test)]
    pub fn output_done(&self) -> bool {
        lock(&self.pumps).iter().all(|p| p.is_done())
    }

    /// Shuts every host stream (the container is being removed).
    pub fn shutdown(&self) {
        let mut st = lock(&self.state);
        for s in st.streams.iter().flatten() {
            let _ = shutdown(s.as_raw_fd(), Shutdown::Both);
        }
        st.stdin_w = None;
        st.closed = true;
        self.changed.notify_all();
    }
}

fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the valid struct.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn ok() -> std::io::Result<()> {
        Ok(())
    }

    fn want(stdin: bool, stdout: bool, stderr: bool) -> Want {
        Want {
            stdin,
            stdout,
            stderr,
            terminal: false,
        }
    }

    #[test]
    fn streams_must_be_asked_for_and_attached_once() {
        let (io, _child) = ProcessIo::new(want(false, true, false)).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            io.attach(StreamKind::Stdin, a.into(), &ok),
            Err(AttachError::NotWanted("stdin"))
        ));
        let (a, _b2) = UnixStream::pair().unwrap();
        assert!(matches!(
            io.attach(StreamKind::Tty, a.into(), &ok),
            Err(AttachError::NotWanted("tty"))
        ));
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(io.wait_attached(soon), Err(vec!["stdout"]));
        let (a, _b3) = UnixStream::pair().unwrap();
        io.attach(StreamKind::Stdout, a.into(), &ok).unwrap();
        let (a, _b4) = UnixStream::pair().unwrap();
        assert!(matches!(
            io.attach(StreamKind::Stdout, a.into(), &ok),
            Err(AttachError::Duplicate(_))
        ));
        assert_eq!(io.wait_attached(Instant::now()), Ok(()));
    }

    #[test]
    fn output_is_forwarded_then_eof() {
        let (io, child) = ProcessIo::new(want(true, true, true)).unwrap();
        let (out_agent, mut out_host) = UnixStream::pair().unwrap();
        let (err_agent, mut err_host) = UnixStream::pair().unwrap();
        let (in_agent, mut in_host) = UnixStream::pair().unwrap();
        io.attach(StreamKind::Stdout, out_agent.into(), &ok)
            .unwrap();
        io.attach(StreamKind::Stderr, err_agent.into(), &ok)
            .unwrap();
        io.attach(StreamKind::Stdin, in_agent.into(), &ok).unwrap();
        io.start("test");
        // The "process": writes to its stdout and stderr ends, then exits.
        let ChildStdio {
            stdin,
            stdout,
            stderr,
        } = child;
        File::from(stdout)
            .write_all(&vec![b'x'; 200_000])
            .unwrap_or(());
        drop(stderr);
        let mut got = Vec::new();
        out_host.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 200_000);
        let mut e = Vec::new();
        err_host.read_to_end(&mut e).unwrap();
        assert!(e.is_empty());
        assert!(io.wait_output(Some(Instant::now() + Duration::from_secs(5))));
        assert!(io.output_done());
        // stdin: the host's data, then its EOF is the process's EOF.
        in_host.write_all(b"hello").unwrap();
        in_host.shutdown(std::net::Shutdown::Write).unwrap();
        let mut s = String::new();
        File::from(stdin).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn close_stdin_ends_input_while_the_host_stays() {
        let (io, child) = ProcessIo::new(want(true, false, false)).unwrap();
        let (in_agent, _in_host) = UnixStream::pair().unwrap();
        io.attach(StreamKind::Stdin, in_agent.into(), &ok).unwrap();
        io.start("test");
        io.close_stdin();
        let mut s = String::new();
        File::from(child.stdin).read_to_string(&mut s).unwrap();
        assert_eq!(s, "");
    }

    #[test]
    fn a_lingering_writer_does_not_block_the_wait() {
        let (io, child) = ProcessIo::new(want(false, true, false)).unwrap();
        let (out_agent, mut out_host) = UnixStream::pair().unwrap();
        io.attach(StreamKind::Stdout, out_agent.into(), &ok)
            .unwrap();
        io.start("test");
        // Something still holds the write end (a daemon the process left).
        let mut w = File::from(child.stdout);
        w.write_all(b"bye").unwrap();
        assert!(io.wait_output(Some(Instant::now() + Duration::from_secs(5))));
        let mut buf = [0u8; 3];
        out_host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"bye");
        assert!(!io.output_done());
    }
}
