//! Launching a VMM process and watching it from outside: when markers
//! appear on its stdout, when it exits (through a pidfd, so the exit time
//! is exact and the PID cannot be reused while we look at /proc), and the
//! peak RSS of the executed image (`VmHWM`, sampled until it exits).
//!
//! `wait4`'s `ru_maxrss` is not used: it also counts the memory of the
//! forked harness before `exec`, which is the same order as a small VMM.

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Most stdout kept for marker searches and diagnostics.
const MAX_OUTPUT: usize = 1 << 20;
/// Most stderr kept (its tail) for diagnostics.
const MAX_STDERR: usize = 16 << 10;

/// Why watching a process did not give the wanted event.
#[derive(Debug)]
pub enum WatchError {
    /// Nothing happened in time.
    Timeout {
        /// What was awaited.
        what: String,
        /// After how long it was given up.
        after: Duration,
    },
    /// The process ended first.
    Exited {
        /// What was awaited.
        what: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// Starting or watching the process failed.
    Io(io::Error),
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { what, after } => {
                write!(f, "no {what} after {:.1} s", after.as_secs_f64())
            }
            Self::Exited { what, status } => {
                write!(f, "the process ended ({status}) before {what}")
            }
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WatchError {}

impl From<io::Error> for WatchError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A launched process under watch. Dropping it kills the process if it
/// still runs, so no VMM outlives a failed measurement.
pub struct Watched {
    child: Child,
    started: Instant,
    pidfd: OwnedFd,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    output: Vec<u8>,
    stderr_tail: Vec<u8>,
    /// Markers looked for and when each was first seen.
    seen: Vec<(String, Option<Duration>)>,
    exited: Option<(Duration, ExitStatus)>,
    peak_rss_kib: Option<u64>,
    sample_every: Duration,
    last_sample: Instant,
}

impl Watched {
    /// Starts `cmd` with stdin from /dev/null and stdout/stderr captured;
    /// the clock starts just before the `spawn`. `VmHWM` is sampled every
    /// `sample_every` while nothing else happens.
    pub fn spawn(cmd: &mut Command, sample_every: Duration) -> io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let pidfd = match pidfd_open(child.id()) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Self {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            started,
            pidfd,
            output: Vec::new(),
            stderr_tail: Vec::new(),
            seen: Vec::new(),
            exited: None,
            peak_rss_kib: None,
            sample_every,
            last_sample: started,
        })
    }

    /// When the process was launched.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The highest `VmHWM` seen, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.peak_rss_kib
    }

    /// Whether `text` appeared on stdout so far.
    pub fn output_contains(&self, text: &str) -> bool {
        find(&self.output, text.as_bytes(), 0).is_some()
    }

    /// The end of stdout and stderr, for an error message.
    pub fn tail(&self, max_lines: usize) -> String {
        let mut lines: Vec<String> = Vec::new();
        for (name, bytes) in [("stdout", &self.output), ("stderr", &self.stderr_tail)] {
            let text = String::from_utf8_lossy(bytes);
            let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            for line in &all[all.len().saturating_sub(max_lines)..] {
                lines.push(format!("  {name}| {}", line.trim_end()));
            }
        }
        lines.join("\n")
    }

    /// Waits until one of `markers` appears on stdout (the first one in
    /// the list wins if several appear in one read); returns its index
    /// and the time since launch at which it was read.
    pub fn wait_for_any(
        &mut self,
        markers: &[&str],
        timeout: Duration,
    ) -> Result<(usize, Duration), WatchError> {
        for m in markers {
            if !self.seen.iter().any(|(s, _)| s == m) {
                let at = find(&self.output, m.as_bytes(), 0).map(|_| self.started.elapsed());
                self.seen.push(((*m).to_string(), at));
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            for (i, m) in markers.iter().enumerate() {
                if let Some((_, Some(at))) = self.seen.iter().find(|(s, _)| s == m) {
                    return Ok((i, *at));
                }
            }
            let what = || format!("{:?} on the console", markers.join(" | "));
            if let Some((_, status)) = self.exited {
                return Err(WatchError::Exited {
                    what: what(),
                    status,
                });
            }
            if Instant::now() >= deadline {
                return Err(WatchError::Timeout {
                    what: what(),
                    after: timeout,
                });
            }
            self.pump(deadline)?;
        }
    }

    /// Waits until the process exits; returns the time since launch.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(Duration, ExitStatus), WatchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exited {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                return Err(WatchError::Timeout {
                    what: "exit".into(),
                    after: timeout,
                });
            }
            self.pump(deadline)?;
        }
    }

    /// Kills the process (if it runs) and reaps it.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some((self.started.elapsed(), status));
            }
        }
    }

    /// Samples `VmHWM` now (while the process runs).
    pub fn sample_rss(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.last_sample = Instant::now();
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        if let Some(kib) = status_kib(&status, "VmHWM:") {
            self.peak_rss_kib = Some(self.peak_rss_kib.map_or(kib, |p| p.max(kib)));
        }
    }

    /// The resident memory now, in KiB, leaving out every mapping of at
    /// least `guest_ram_mib` (the guest RAM; nothing else a VMM maps is
    /// that large). `None` once the process has ended.
    pub fn rss_outside_guest_ram_kib(&self, guest_ram_mib: u64) -> Option<u64> {
        if self.exited.is_some() {
            return None;
        }
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid())).ok()?;
        Some(rss_outside_large_mappings(&smaps, guest_ram_mib * 1024))
    }

    /// Waits for one event (output, exit, or the sampling tick) and
    /// handles it.
    fn pump(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        let next_sample = self.last_sample + self.sample_every;
        let wake = deadline.min(next_sample);
        let timeout_ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        let mut push = |fd: RawFd| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        };
        if let Some(out) = &self.stdout {
            push(out.as_raw_fd());
        }
        if let Some(err) = &self.stderr {
            push(err.as_raw_fd());
        }
        push(self.pidfd.as_raw_fd());
        // SAFETY: `fds` is a valid, initialised array of `fds.len()`
        // pollfd structs that outlives the call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout_ms as libc::c_int,
            )
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        if Instant::now() >= next_sample {
            self.sample_rss();
        }
        let readable = |fd: RawFd| fds.iter().any(|p| p.fd == fd && p.revents != 0);
        // Output before exit: a marker printed just before the end counts.
        if self
            .stdout
            .as_ref()
            .is_some_and(|o| readable(o.as_raw_fd()))
        {
            self.read_stdout()?;
        }
        if self
            .stderr
            .as_ref()
            .is_some_and(|e| readable(e.as_raw_fd()))
        {
            self.read_stderr()?;
        }
        if readable(self.pidfd.as_raw_fd()) {
            let at = self.started.elapsed();
            let status = self.child.wait()?;
            self.exited = Some((at, status));
            self.drain()?;
        }
        Ok(())
    }

    fn read_stdout(&mut self) -> io::Result<()> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 16 << 10];
        let n = match out.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        let at = self.started.elapsed();
        if n == 0 {
            self.stdout = None;
            return Ok(());
        }
        let old_len = self.output.len();
        if old_len + n > MAX_OUTPUT {
            // A chatty guest: keep the recent half for markers and tails.
            let keep_from = self.output.len() - MAX_OUTPUT / 2;
            self.output.drain(..keep_from);
        }
        let old_len = old_len.min(self.output.len());
        self.output.extend_from_slice(&buf[..n]);
        for (marker, at_seen) in &mut self.seen {
            if at_seen.is_none() {
                let from = old_len.saturating_sub(marker.len());
                if find(&self.output, marker.as_bytes(), from).is_some() {
                    *at_seen = Some(at);
                }
            }
        }
        Ok(())
    }

    fn read_stderr(&mut self) -> io::Result<()> {
        let Some(err) = self.stderr.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 8 << 10];
        match err.read(&mut buf) {
            Ok(0) => self.stderr = None,
            Ok(n) => {
                self.stderr_tail.extend_from_slice(&buf[..n]);
                let excess = self.stderr_tail.len().saturating_sub(MAX_STDERR);
                self.stderr_tail.drain(..excess);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// After exit: reads what is left in the pipes, without blocking on a
    /// pipe some other process might still hold open.
    fn drain(&mut self) -> io::Result<()> {
        for _ in 0..64 {
            let mut fds: Vec<libc::pollfd> = [
                self.stdout.as_ref().map(|o| o.as_raw_fd()),
                self.stderr.as_ref().map(|e| e.as_raw_fd()),
            ]
            .into_iter()
            .flatten()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
            if fds.is_empty() {
                break;
            }
            // SAFETY: as in `pump`: a valid pollfd array for the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            if ready <= 0 {
                break;
            }
            let readable = |fd: RawFd| fds.iter().any(|p| p.fd == fd && p.revents != 0);
            if self
                .stdout
                .as_ref()
                .is_some_and(|o| readable(o.as_raw_fd()))
            {
                self.read_stdout()?;
            }
            if self
                .stderr
                .as_ref()
                .is_some_and(|e| readable(e.as_raw_fd()))
            {
                self.read_stderr()?;
            }
        }
        Ok(())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pidfd for `pid` (Linux ≥ 5.3): readable once the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The first index at or after `from` where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// The value in kB of a `/proc/PID/status` line such as `VmHWM:  4000 kB`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Sums `Rss:` over the mappings of a /proc/PID/smaps text whose `Size:`
/// is below `min_kib`.
fn rss_outside_large_mappings(smaps: &str, min_kib: u64) -> u64 {
    let mut total = 0;
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(v) = status_kib(line, "Size:") {
            size = v;
        } else if let Some(v) = status_kib(line, "Rss:") {
            if size < min_kib {
                total += v;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_across_reads() {
        assert_eq!(find(b"abc boot ok\n", b"boot ok", 0), Some(4));
        assert_eq!(find(b"boot o", b"boot ok", 0), None);
        assert_eq!(find(b"xx boot ok", b"boot ok", 5), None);
    }

    #[test]
    fn parses_proc_figures() {
        assert_eq!(
            status_kib("Name:\thusk\nVmHWM:\t    4096 kB\n", "VmHWM:"),
            Some(4096)
        );
        let smaps = "\
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               20000 kB
55d000000000-55d000100000 r-xp 00000000 08:01 42 /usr/bin/husk
Size:               1024 kB
Rss:                 900 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Rss:                  16 kB
";
        assert_eq!(rss_outside_large_mappings(smaps, 128 * 1024), 916);
    }

    #[test]
    fn watches_a_process_to_its_marker_and_exit() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo starting; sleep 0.05; echo 'marker here'; exit 3",
        ]);
        let mut w = Watched::spawn(&mut cmd, Duration::from_millis(5)).unwrap();
        let (i, at) = w
            .wait_for_any(&["nope", "marker"], Duration::from_secs(10))
            .unwrap();
        assert_eq!(i, 1);
        assert!(at >= Duration::from_millis(50), "{at:?}");
        let (end, status) = w.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(end >= at);
        assert_eq!(status.code(), Some(3));
        assert!(w.output_contains("starting"));
        let err = w
            .wait_for_any(&["never"], Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, WatchError::Exited { .. }), "{err}");
    }

    #[test]
    fn a_silent_process_times_out_and_is_killed() {
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        let mut w = Watched::spawn(&mut cmd, Duration::from_millis(5)).unwrap();
        let err = w
            .wait_for_any(&["x"], Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, WatchError::Timeout { .. }), "{err}");
        assert!(w.peak_rss_kib().is_some_and(|k| k > 0));
        w.kill();
        assert!(w.wait_exit(Duration::ZERO).is_ok());
    }
}
