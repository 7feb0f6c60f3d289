//! The host memory of a group of processes, read from outside: a process
//! and its descendants (`/proc/PID/task/*/children`), each one's peak RSS
//! (`VmHWM`), its PSS (`smaps_rollup`) and, for a VMM or a vhost-user
//! daemon, how much of its RSS lies in the guest-RAM mappings: every
//! mapping larger than three quarters of the guest's memory. A vhost-user
//! daemon may map guest RAM in pieces a little smaller than the whole
//! (QEMU hands it the regions around the legacy holes), and nothing else
//! such a process maps comes near (glibc's thread arenas reserve 64 MiB,
//! half of a 128 MiB guest).
//!
//! Samples are taken while the processes run; each process's `VmHWM` is
//! its own peak, so the sum over processes of their last `VmHWM` bounds
//! the peak of the group from above (the processes need not peak at the
//! same instant). PSS and the guest split are instantaneous: the group's
//! figure is the highest sum seen in one sample.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What is known of one process of the group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcPeak {
    /// `comm`, for notes.
    pub name: String,
    /// Highest `VmHWM` seen, KiB.
    pub hwm_kib: u64,
}

/// One look at the group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Σ PSS, KiB.
    pub pss_kib: u64,
    /// Σ RSS, KiB.
    pub rss_kib: u64,
    /// Σ RSS inside guest-RAM mappings, KiB.
    pub guest_rss_kib: u64,
    /// Processes seen.
    pub processes: usize,
}

impl Sample {
    /// Σ RSS outside the guest-RAM mappings.
    pub fn host_rss_kib(&self) -> u64 {
        self.rss_kib - self.guest_rss_kib
    }
}

/// The peaks of a group of processes over a run.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Every process seen, by pid.
    pub seen: BTreeMap<u32, ProcPeak>,
    /// The sample with the highest Σ PSS.
    pub peak_pss: Sample,
    /// Highest Σ RSS outside guest RAM in one sample, KiB.
    pub peak_host_rss_kib: u64,
    /// Highest Σ RSS inside guest RAM in one sample, KiB.
    pub peak_guest_rss_kib: u64,
}

impl Group {
    /// Σ of each process's peak RSS, KiB.
    pub fn hwm_sum_kib(&self) -> u64 {
        self.seen.values().map(|p| p.hwm_kib).sum()
    }

    /// The names of the processes seen, in pid order, for notes.
    pub fn names(&self) -> String {
        self.seen
            .values()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Samples `roots` and all their descendants now; `guest_ram_kib`
    /// sizes the guest-RAM mappings (0: no guest, skip the split).
    pub fn sample(&mut self, roots: &[u32], guest_ram_kib: u64) -> Sample {
        let mut now = Sample::default();
        for pid in tree(roots) {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let Some(hwm) = kib_field(&status, "VmHWM:") else {
                // A zombie or a kernel thread: nothing resident.
                continue;
            };
            let comm = status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .map_or_else(String::new, |n| n.trim().to_string());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let name = role(&comm, &cmdline);
            let entry = self.seen.entry(pid).or_default();
            entry.name = name;
            entry.hwm_kib = entry.hwm_kib.max(hwm);
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            now.pss_kib += kib_field(&rollup, "Pss:").unwrap_or(0);
            now.rss_kib += kib_field(&status, "VmRSS:").unwrap_or(0);
            if guest_ram_kib > 0 {
                let smaps =
                    std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
                now.guest_rss_kib += rss_in_large_mappings(&smaps, guest_ram_kib / 4 * 3 + 1);
            }
            now.processes += 1;
        }
        // VmRSS and smaps are read a moment apart: never let the guest
        // part exceed the whole.
        now.guest_rss_kib = now.guest_rss_kib.min(now.rss_kib);
        if now.pss_kib > self.peak_pss.pss_kib {
            self.peak_pss = now;
        }
        self.peak_host_rss_kib = self.peak_host_rss_kib.max(now.host_rss_kib());
        self.peak_guest_rss_kib = self.peak_guest_rss_kib.max(now.guest_rss_kib);
        now
    }
}

/// A thread sampling a group every so often until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    roots: Vec<u32>,
    handle: JoinHandle<Group>,
}

impl Sampler {
    /// Samples `roots` and their descendants every `every` (and once at
    /// once); `guest_ram_kib` as for [`Group::sample`].
    pub fn start(roots: Vec<u32>, every: Duration, guest_ram_kib: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = std::thread::spawn({
            let stop = Arc::clone(&stop);
            let roots = roots.clone();
            move || {
                let mut group = Group::default();
                while !stop.load(Ordering::Relaxed) {
                    group.sample(&roots, guest_ram_kib);
                    std::thread::sleep(every);
                }
                group
            }
        });
        Self {
            stop,
            roots,
            handle,
        }
    }

    /// Takes one last sample and returns the group's peaks.
    pub fn stop(self, guest_ram_kib: u64) -> Group {
        self.stop.store(true, Ordering::Relaxed);
        let mut group = self.handle.join().unwrap_or_default();
        group.sample(&self.roots, guest_ram_kib);
        group
    }
}

/// A command line run to its end.
pub struct Ran {
    /// Launch → exit, seen through a pidfd.
    pub took: Duration,
    /// The memory of the command and its descendants, when sampled.
    pub group: Option<Group>,
    /// Its stdout and stderr, together.
    pub output: String,
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr into a temp
/// file) to its exit, sampling its process tree if given `(every,
/// guest_ram_kib)` (as for [`Group::sample`]). `Err` when it cannot start, runs past `timeout` (it is killed)
/// or exits non-zero; the error carries the end of its output.
pub fn run_cli(
    cmd: &mut Command,
    timeout: Duration,
    sample: Option<(Duration, u64)>,
) -> Result<Ran, String> {
    let path = std::env::temp_dir().join(format!(
        "husk-bench-out-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("cannot create {path:?}: {e}"))?;
    let _ = std::fs::remove_file(&path);
    let err_file = file.try_clone().map_err(|e| e.to_string())?;
    let out_file = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out_file))
        .stderr(Stdio::from(err_file));
    let program = cmd.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let sampler =
        sample.map(|(every, guest)| (Sampler::start(vec![child.id()], every, guest), guest));
    let exited = wait_pidfd(child.id(), timeout);
    let took = started.elapsed();
    let group = sampler.map(|(s, guest)| s.stop(guest));
    let status: Result<ExitStatus, String> = match exited {
        Ok(true) => child.wait().map_err(|e| e.to_string()),
        Ok(false) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{program}: no exit after {:.0} s",
                timeout.as_secs_f64()
            ))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{program}: cannot wait: {e}"))
        }
    };
    let mut output = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut output);
    let tail = || {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n  | ")
    };
    match status {
        Ok(s) if s.success() => Ok(Ran {
            took,
            group,
            output,
        }),
        Ok(s) => Err(format!("{program} exited with {s}\n  | {}", tail())),
        Err(e) => Err(format!("{e}\n  | {}", tail())),
    }
}

/// Waits until `pid` (our child) exits or `timeout` passes; `Ok(true)`
/// once it exited (it is left to be reaped).
fn wait_pidfd(pid: u32, timeout: Duration) -> std::io::Result<bool> {
    let fd = crate::measure::pidfd_open(pid)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// A process's name for notes: its `comm` and the first argument that
/// is neither a flag nor a path (`husk vmm`, `runc:[2:INIT] init`).
fn role(comm: &str, cmdline: &[u8]) -> String {
    let verb = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .map(String::from_utf8_lossy)
        .find(|a| !a.is_empty() && !a.starts_with('-') && !a.contains('/'));
    match verb {
        Some(v) => format!("{comm} {v}"),
        None => comm.to_string(),
    }
}

/// `roots` and their descendants, parents first.
pub fn tree(roots: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        if out.contains(&pid) || !Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        out.push(pid);
        queue.extend(children(pid));
    }
    out
}

/// The children of `pid`, from every thread's `children` file (a child
/// belongs to the thread that forked it).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(parse_pids(&text));
    }
    out
}

fn parse_pids(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split_whitespace().filter_map(|p| p.parse().ok())
}

/// The value in kB of a `/proc` line such as `VmHWM:  4000 kB`.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Σ `Rss:` over the mappings of a /proc/PID/smaps text whose `Size:` is
/// at least `min_kib`.
pub fn rss_in_large_mappings(smaps: &str, min_kib: u64) -> u64 {
    let mut total = 0;
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(v) = kib_field(line, "Size:") {
            size = v;
        } else if let Some(v) = kib_field(line, "Rss:") {
            if size >= min_kib {
                total += v;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn splits_guest_ram_from_the_rest() {
        let smaps = "\
7f0000000000-7f0008000000 rw-s 00000000 00:01 7 /memfd:mem (deleted)
Size:             131072 kB
Rss:               20000 kB
55d000000000-55d000100000 r-xp 00000000 08:01 42 /usr/bin/qemu
Size:               1024 kB
Rss:                 900 kB
";
        assert_eq!(rss_in_large_mappings(smaps, 128 * 1024), 20000);
        assert_eq!(rss_in_large_mappings(smaps, 256 * 1024), 0);
        assert_eq!(kib_field("Pss:  12 kB\n", "Pss:"), Some(12));
        assert_eq!(parse_pids("12 34 \n").collect::<Vec<_>>(), [12, 34]);
        assert_eq!(
            role("husk", b"/x/husk\0--root\0/run/h\0run\0--bundle\0b\0"),
            "husk run"
        );
        assert_eq!(role("sleep", b"/bin/sleep\x00100000\x00"), "sleep 100000");
        assert_eq!(role("true", b"/bin/true\0"), "true");
    }

    #[test]
    fn finds_a_grandchild_and_its_memory() {
        // sh → sh → sleep: the group is three processes deep.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/bin/sh")
            .args(["-c", "/bin/sh -c 'sleep 5; true' & wait"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut group = Group::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The middle shell's command line also says "sleep", so wait for a
        // process that is named sleep itself.
        let has_sleep = |g: &Group| g.seen.values().any(|p| p.name.starts_with("sleep"));
        while Instant::now() < deadline {
            group.sample(&[child.id()], 0);
            if has_sleep(&group) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on the process group this test just made; it
        // touches no memory.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
        assert!(has_sleep(&group), "{}", group.names());
        assert!(group.seen.len() >= 3, "{:?}", group.seen);
        assert!(group.hwm_sum_kib() > 0);
        assert!(group.peak_pss.pss_kib > 0);
        assert_eq!(group.peak_guest_rss_kib, 0);
    }
}
