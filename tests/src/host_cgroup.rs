//! The host's cgroups, as the tests look at them: where a container's
//! monitor and VMM were put, and what the kernel counted there.

use std::path::{Path, PathBuf};

/// Where the host's cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The memory cgroup directory of `cgroups_path` (a spec's
/// `linux.cgroupsPath`) on this host, v1 or unified.
pub fn memory_dir(cgroups_path: &str) -> PathBuf {
    let relative = cgroups_path.trim_start_matches('/');
    let v1 = Path::new(CGROUP_ROOT).join("memory");
    if v1.is_dir() {
        v1.join(relative)
    } else {
        Path::new(CGROUP_ROOT).join(relative)
    }
}

/// The kernel's count of OOM kills in a memory cgroup directory.
pub fn oom_kills(dir: &Path) -> Option<u64> {
    ["memory.oom_control", "memory.events"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// Cgroup directories named `name`, up to three levels below each
/// hierarchy's root (Docker's are `docker/ID`).
pub fn named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name() == name {
                found.push(path.clone());
            }
            if depth > 0 {
                walk(&path, name, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new(CGROUP_ROOT), name, 3, &mut found);
    found
}

/// The cgroup directories of `pid` in the memory hierarchy, as
/// `/proc/PID/cgroup` names it.
pub fn of_process(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let memory = controllers.split(',').any(|c| c == "memory") || controllers.is_empty();
        memory.then(|| path.to_string())
    })
}
