//! A container's cgroup on the host: where its monitor and VMM live.
//!
//! Clients that drive husk like runc find a container's cgroup from its
//! pid (the monitor's) and watch it there: containerd's runc shim (the
//! path Docker 20.10 takes) and conmon (podman) learn of an OOM kill only
//! from that cgroup's memory controller, and `docker stats` reads it. So
//! when the spec names `linux.cgroupsPath`, `create` makes that cgroup in
//! the host's memory, cpu, cpuacct, pids and blkio hierarchies (or the
//! unified one), and the monitor starts in it; the VMM, its child,
//! follows. Nothing is limited there: the spec's resources are applied to
//! the container in the guest. `delete` removes the directories.
//!
//! The guest's OOM killer acts inside the VM, where the host cannot see
//! it. When the agent reports the container's process OOM-killed, the
//! monitor, once the VM is gone, carries that to the host as one real OOM
//! kill in this cgroup ([`HostCgroup::raise_oom`]): it lowers the memory
//! limit to just above what the cgroup holds, and a marker child
//! (`husk-oom-marker`) joins it with `oom_score_adj` 1000 and touches
//! memory until the kernel kills it; then the limit is put back. The host
//! kernel logs that kill. It is only done in a cgroup husk made for one
//! container, never in one it shares.
//!
//! Not made: with `--systemd-cgroup` (the `slice:prefix:name` form needs
//! systemd to make the scope), or when the spec names no cgroup.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The cgroup v1 controllers a container's cgroup is made in: those whose
/// new cgroups take a process as they are (cpuset would need its cpus and
/// mems filled in first; devices and freezer are the guest's business).
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "blkio"];

/// How much the limit is set above the cgroup's unreclaimable memory.
const OOM_HEADROOM: u64 = 8 << 20;

/// How long `remove` waits for the cgroup's last processes to go.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The directories of a container's host cgroup, one per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCgroup {
    /// One directory per hierarchy, each the container's own.
    pub dirs: Vec<PathBuf>,
}

/// Why the container's host cgroup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeHostCgroupError {
    /// The spec's `linux.cgroupsPath` is not a usable path.
    #[error("linux.cgroupsPath {path:?}: {why}")]
    BadPath {
        /// The path as the spec gives it.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host's cgroup mounts could not be read.
    #[error("cannot read the host's cgroup mounts")]
    Mounts(#[source] std::io::Error),
    /// The host has no cgroup hierarchy to make it in.
    #[error("linux.cgroupsPath {0:?}: the host has no memory cgroup hierarchy mounted")]
    NoHierarchy(String),
    /// A directory could not be made.
    #[error("cannot make the container's host cgroup {0:?}")]
    Make(PathBuf, #[source] std::io::Error),
}

/// Why an OOM kill could not be raised in the host cgroup.
#[derive(Debug, thiserror::Error)]
pub enum RaiseOomError {
    /// None of the directories is a memory cgroup.
    #[error("the container's host cgroup has no memory controller")]
    NoMemoryController,
    /// A control file could not be read or written.
    #[error("host cgroup file {0:?}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The marker process could not be started.
    #[error("cannot fork the OOM marker")]
    Fork(#[source] std::io::Error),
    /// The marker ended some other way than by the OOM killer.
    #[error("the OOM marker was not OOM-killed (wait status {0:#x})")]
    NotKilled(i32),
}

/// Why the host cgroup could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot remove the container's host cgroup {0:?}")]
pub struct RemoveHostCgroupError(PathBuf, #[source] std::io::Error);

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// `None` for the unified (v2) hierarchy, else its v1 controllers.
    v1_controllers: Option<Vec<String>>,
}

/// The cgroup hierarchies in `/proc/self/mountinfo` text.
fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let options = after.nth(1).unwrap_or("");
            let mount = PathBuf::from(unescape_mount_path(mount));
            match fstype {
                "cgroup2" => Some(Hierarchy {
                    mount,
                    v1_controllers: None,
                }),
                "cgroup" => Some(Hierarchy {
                    mount,
                    v1_controllers: Some(
                        options
                            .split(',')
                            .filter(|o| !o.contains('=') && *o != "rw" && *o != "ro")
                            .map(str::to_string)
                            .collect(),
                    ),
                }),
                _ => None,
            }
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The hierarchies a container's cgroup goes in: the v1 ones of
/// [`V1_CONTROLLERS`] (none shared with another controller), or the
/// unified one when `unified_has_memory` (a v2-only host).
fn chosen(hierarchies: &[Hierarchy], unified_has_memory: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let v1: Vec<PathBuf> = hierarchies
        .iter()
        .filter_map(|h| {
            let controllers = h.v1_controllers.as_ref()?;
            let wanted = !controllers.is_empty()
                && controllers
                    .iter()
                    .all(|c| V1_CONTROLLERS.contains(&c.as_str()));
            wanted.then(|| h.mount.clone())
        })
        .collect();
    let has_v1_memory = hierarchies.iter().any(|h| {
        h.v1_controllers
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c == "memory"))
    });
    if has_v1_memory {
        return v1;
    }
    hierarchies
        .iter()
        .filter(|h| h.v1_controllers.is_none() && unified_has_memory(&h.mount))
        .map(|h| h.mount.clone())
        .take(1)
        .collect()
}

/// `linux.cgroupsPath` as a path below a hierarchy's root.
fn relative_path(cgroups_path: &str) -> Result<PathBuf, MakeHostCgroupError> {
    let bad = |why| MakeHostCgroupError::BadPath {
        path: cgroups_path.to_string(),
        why,
    };
    if cgroups_path.contains(':') && !cgroups_path.starts_with('/') {
        return Err(bad(
            "the systemd form slice:prefix:name needs --systemd-cgroup",
        ));
    }
    let mut relative = PathBuf::new();
    for component in Path::new(cgroups_path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => relative.push(c),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad("it must not climb out with `..`"))
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(bad(
            "it names the root cgroup, which is not the container's own",
        ));
    }
    Ok(relative)
}

impl HostCgroup {
    /// Makes the cgroup `cgroups_path` (the spec's `linux.cgroupsPath`,
    /// below each hierarchy's root) in the host's hierarchies. One that
    /// exists already is taken, as runc takes it; either way it is the
    /// container's, and goes with it.
    pub fn make(cgroups_path: &str) -> Result<Self, MakeHostCgroupError> {
        let relative = relative_path(cgroups_path)?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(MakeHostCgroupError::Mounts)?;
        let mounts = chosen(&parse_mountinfo(&mountinfo), |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        if mounts.is_empty() {
            return Err(MakeHostCgroupError::NoHierarchy(cgroups_path.to_string()));
        }
        let mut made = HostCgroup { dirs: Vec::new() };
        for mount in &mounts {
            let dir = mount.join(&relative);
            if let Some(parent) = dir.parent() {
                let created = std::fs::create_dir_all(parent)
                    .and_then(|()| enable_unified_memory(mount, parent));
                if let Err(e) = created {
                    made.remove_quietly();
                    return Err(MakeHostCgroupError::Make(dir, e));
                }
            }
            let created = std::fs::create_dir(&dir);
            if let Err(e) = created.or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            }) {
                made.remove_quietly();
                return Err(MakeHostCgroupError::Make(dir, e));
            }
            made.dirs.push(dir);
        }
        Ok(made)
    }

    /// Each directory's `cgroup.procs`, open for writing, for
    /// [`join_in_child`] in a process about to exec.
    pub fn procs_files(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                File::options()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// The memory cgroup directory and its version's file names.
    fn memory(&self) -> Option<(&Path, MemoryFiles)> {
        self.dirs.iter().find_map(|d| {
            if d.join("memory.limit_in_bytes").exists() {
                Some((d.as_path(), MemoryFiles::V1))
            } else if d.join("memory.max").exists() {
                Some((d.as_path(), MemoryFiles::V2))
            } else {
                None
            }
        })
    }

    /// Raises one OOM kill in the memory cgroup (see the module's notes),
    /// so that whoever watches it sees the container's OOM. The calling
    /// process may be in the cgroup; the VMM must be gone.
    pub fn raise_oom(&self) -> Result<(), RaiseOomError> {
        let (dir, files) = self.memory().ok_or(RaiseOomError::NoMemoryController)?;
        let io = |name: &str| {
            let path = dir.join(name);
            move |e| RaiseOomError::Io(path, e)
        };
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(io("cgroup.procs"))?;
        let old_limit =
            std::fs::read_to_string(dir.join(files.limit())).map_err(io(files.limit()))?;
        let old_swap = files.no_swap(dir);
        let marked = set_low_limit(dir, files).and_then(|limit| {
            let marked = run_marker(procs.as_raw_fd(), limit);
            let restored = std::fs::write(dir.join(files.limit()), old_limit.trim());
            marked.and(restored.map_err(io(files.limit())))
        });
        if let Some((name, old)) = old_swap {
            let _ = std::fs::write(dir.join(name), old.trim());
        }
        marked
    }

    /// Kills whatever is left in the cgroup and removes its directories.
    pub fn remove(&self) -> Result<(), RemoveHostCgroupError> {
        for dir in &self.dirs {
            let deadline = Instant::now() + REMOVE_TIMEOUT;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(RemoveHostCgroupError(dir.clone(), e))
                    }
                    Err(_) => {
                        kill_members(dir);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Self::remove`] on a failure path, where its error would hide the first.
    pub fn remove_quietly(&self) {
        if let Err(e) = self.remove() {
            log::warn!("{}", crate::error_chain(&e));
        }
    }
}

/// On the unified hierarchy, lets the new cgroup have a memory controller
/// (each ancestor's `cgroup.subtree_control` must enable it).
fn enable_unified_memory(mount: &Path, parent: &Path) -> std::io::Result<()> {
    if !mount.join("cgroup.subtree_control").exists() {
        return Ok(());
    }
    let mut dir = mount.to_path_buf();
    let below = parent.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut components = below.components();
    loop {
        let control = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)?;
        if !enabled.split_whitespace().any(|c| c == "memory") {
            std::fs::write(&control, "+memory")?;
        }
        match components.next() {
            Some(c) => dir.push(c),
            None => return Ok(()),
        }
    }
}

/// SIGKILLs the processes in one cgroup directory.
fn kill_members(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The memory controller's file names in each cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryFiles {
    V1,
    V2,
}

impl MemoryFiles {
    fn limit(self) -> &'static str {
        match self {
            MemoryFiles::V1 => "memory.limit_in_bytes",
            MemoryFiles::V2 => "memory.max",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            MemoryFiles::V1 => "memory.usage_in_bytes",
            MemoryFiles::V2 => "memory.current",
        }
    }

    /// The `memory.stat` key of anonymous memory, which only swap frees.
    fn anon_stat(self) -> &'static str {
        match self {
            MemoryFiles::V1 => "total_rss",
            MemoryFiles::V2 => "anon",
        }
    }

    /// Keeps the marker's pages out of swap; returns the file and the
    /// value to put back.
    fn no_swap(self, dir: &Path) -> Option<(&'static str, String)> {
        let (name, none) = match self {
            MemoryFiles::V1 => ("memory.swappiness", "0"),
            MemoryFiles::V2 => ("memory.swap.max", "0"),
        };
        let old = std::fs::read_to_string(dir.join(name)).ok()?;
        std::fs::write(dir.join(name), none).ok()?;
        Some((name, old))
    }
}

/// Sets the limit a little above the cgroup's anonymous memory (the
/// kernel reclaims its page cache to fit), or above its whole usage if
/// that cannot be reclaimed; returns the limit set.
fn set_low_limit(dir: &Path, files: MemoryFiles) -> Result<u64, RaiseOomError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| RaiseOomError::Io(dir.join(name), e))
    };
    let anon = stat_value(&read("memory.stat")?, files.anon_stat()).unwrap_or(0);
    let usage = read(files.usage())?.trim().parse::<u64>().unwrap_or(0);
    let mut last = None;
    for base in [anon, usage] {
        let limit = (base + OOM_HEADROOM).next_multiple_of(4096);
        match std::fs::write(dir.join(files.limit()), limit.to_string()) {
            Ok(()) => return Ok(limit),
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("tried at least once");
    Err(RaiseOomError::Io(dir.join(files.limit()), e))
}

/// One value of a `memory.stat` file.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Forks the marker, which joins the cgroup through `procs_fd` and
/// touches up to `bound` bytes, and waits for it. Ok if the kernel
/// killed it.
fn run_marker(procs_fd: RawFd, bound: u64) -> Result<(), RaiseOomError> {
    // SAFETY: the child runs only `marker_child`, which makes raw system
    // calls and writes to its own fresh mappings: nothing that could need
    // a lock another thread of ours held at the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RaiseOomError::Fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        marker_child(procs_fd, bound);
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status to our local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(RaiseOomError::Fork(std::io::Error::last_os_error()));
        }
    }
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
        Ok(())
    } else {
        Err(RaiseOomError::NotKilled(status))
    }
}

/// The marker: joins the cgroup, asks to be the OOM killer's first
/// choice, and touches memory until killed. Exits 2 if it could not join,
/// 3 if `bound` bytes were touched without a kill.
fn marker_child(procs_fd: RawFd, bound: u64) -> ! {
    const CHUNK: usize = 4 << 20;
    // SAFETY: raw system calls on our own descriptors and on mappings made
    // here; `_exit` never returns.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"husk-oom-marker".as_ptr());
        if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(2);
        }
        let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
        if adj >= 0 {
            libc::write(adj, b"1000".as_ptr().cast(), 4);
            libc::close(adj);
        }
        let mut touched = 0u64;
        while touched <= bound {
            let chunk = libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if chunk == libc::MAP_FAILED {
                libc::_exit(3);
            }
            let bytes = chunk.cast::<u8>();
            for offset in (0..CHUNK).step_by(4096) {
                std::ptr::write_volatile(bytes.add(offset), 1);
            }
            touched += CHUNK as u64;
        }
        libc::_exit(3)
    }
}

/// In a child about to exec: joins the cgroup through descriptors from
/// [`HostCgroup::procs_files`]. Raw writes only, so it is safe after fork.
pub fn join_in_child(procs: &[RawFd]) -> std::io::Result<()> {
    for &fd in procs {
        // SAFETY: write from a static buffer to a descriptor we own.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn a_hybrid_host_uses_its_v1_hierarchies_without_cpuset_or_devices() {
        let chosen = chosen(&parse_mountinfo(HYBRID), |_| true);
        assert_eq!(
            chosen,
            ["cpu,cpuacct", "memory", "pids"]
                .iter()
                .map(|c| Path::new("/sys/fs/cgroup").join(c))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_unified_host_uses_its_one_hierarchy() {
        let unified = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            chosen(&parse_mountinfo(unified), |_| true),
            [PathBuf::from("/sys/fs/cgroup")]
        );
        assert!(chosen(&parse_mountinfo(unified), |_| false).is_empty());
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mount_path(r"/a\x"), r"/a\x");
    }

    #[test]
    fn cgroups_paths_stay_below_the_root() {
        assert_eq!(
            relative_path("/docker/abc").unwrap(),
            Path::new("docker/abc")
        );
        assert_eq!(relative_path("pod/c1").unwrap(), Path::new("pod/c1"));
        for bad in ["/", "", "/docker/../../etc", "system.slice:docker:abc"] {
            let e = relative_path(bad).unwrap_err().to_string();
            assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }

    #[test]
    fn stat_values_are_found_by_key() {
        let stat = "cache 4096\nrss 8192\ntotal_rss 12288\n";
        assert_eq!(stat_value(stat, "total_rss"), Some(12288));
        assert_eq!(stat_value(stat, "rss"), Some(8192));
        assert_eq!(stat_value(stat, "anon"), None);
    }

    /// Needs root and a memory cgroup hierarchy, as CI has: a real OOM
    /// kill in a real cgroup, counted by the kernel.
    #[test]
    fn an_oom_is_raised_in_the_cgroup_and_the_cgroup_removed() {
        let path = format!("/husk-unit-{}/container", std::process::id());
        let cgroup = HostCgroup::make(&path).expect("make the cgroup");
        let (dir, files) = cgroup.memory().expect("a memory cgroup");
        let dir = dir.to_path_buf();
        let limit_before = std::fs::read_to_string(dir.join(files.limit())).unwrap();
        cgroup.raise_oom().expect("raise an OOM");
        let kills = match files {
            MemoryFiles::V1 => stat_value(
                &std::fs::read_to_string(dir.join("memory.oom_control")).unwrap(),
                "oom_kill",
            ),
            MemoryFiles::V2 => stat_value(
                &std::fs::read_to_string(dir.join("memory.events")).unwrap(),
                "oom_kill",
            ),
        };
        assert_eq!(kills, Some(1));
        assert_eq!(
            std::fs::read_to_string(dir.join(files.limit())).unwrap(),
            limit_before,
            "the limit is put back"
        );
        // A process left in it is killed by remove.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        for d in &cgroup.dirs {
            std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        }
        cgroup.remove().expect("remove");
        assert!(!dir.exists());
        let status = sleeper.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        for parent in cgroup.dirs.iter().filter_map(|d| d.parent()) {
            std::fs::remove_dir(parent).unwrap();
        }
    }
}
