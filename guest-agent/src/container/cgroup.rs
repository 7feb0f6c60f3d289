//! cgroup v2: one cgroup per container under `<root>/husk/<id>`, the spec's
//! `linux.resources` written into its files, stats and OOM counts read
//! back, freezing, and removal. The file formats are plain functions so
//! they are tested anywhere.
//!
//! Where the cgroup root is not a cgroup2 mount with the memory, cpu and
//! pids controllers (a host process on a hybrid host), containers run
//! without a cgroup and a limit in the spec is refused.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::spec::SpecError;

/// Controllers a container cgroup needs.
const NEEDED: &[&str] = &["cpu", "memory", "pids"];
/// Controllers enabled for containers when the guest has them.
const WANTED: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];
/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup v2 here.
    #[error("{what} needs cgroup v2 with the {} controllers, which {root:?} does not offer ({why})", NEEDED.join(", "))]
    Unavailable {
        /// What asked for it.
        what: String,
        /// The cgroup root.
        root: PathBuf,
        /// Why it is not usable.
        why: String,
    },
    /// A cgroup file could not be read or written.
    #[error("{op} {path:?}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A limit could not be written (the field and file named).
    #[error("{field}: cannot write {value:?} to {path:?}")]
    Limit {
        /// The spec field.
        field: String,
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Freezing or thawing did not finish in time.
    #[error("{path:?} did not report frozen={want} within {secs} s")]
    FreezeTimeout {
        /// The cgroup.
        path: PathBuf,
        /// The state waited for.
        want: u8,
        /// How long.
        secs: u64,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where container cgroups go, and whether they can.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    path: PathBuf,
    /// The controllers on offer, or why there are none.
    controllers: Result<Vec<String>, String>,
}

impl CgroupRoot {
    /// Looks at `path` (normally /sys/fs/cgroup).
    pub fn detect(path: &Path) -> Self {
        let controllers = probe(path);
        match &controllers {
            Ok(c) => log::info!("cgroup v2 at {path:?}: {}", c.join(" ")),
            Err(why) => log::info!("no container cgroups: {why}; limits will be refused"),
        }
        Self {
            path: path.to_path_buf(),
            controllers,
        }
    }

    /// Whether containers get cgroups.
    pub fn usable(&self) -> bool {
        self.controllers.is_ok()
    }

    /// The error for `what` needing a cgroup here.
    pub fn unavailable(&self, what: &str) -> CgroupError {
        CgroupError::Unavailable {
            what: what.to_string(),
            root: self.path.clone(),
            why: self.controllers.clone().err().unwrap_or_default(),
        }
    }

    /// Makes `husk/<id>` with the controllers enabled; `None` without cgroups.
    pub fn create(&self, id: &str) -> Result<Option<Cgroup>, CgroupError> {
        let Ok(controllers) = &self.controllers else {
            return Ok(None);
        };
        let enable: Vec<String> = WANTED
            .iter()
            .filter(|c| controllers.iter().any(|x| x == *c))
            .map(|c| format!("+{c}"))
            .collect();
        let parent = self.path.join("husk");
        enable_controllers(&self.path, &enable)?;
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &parent)(e)),
        }
        enable_controllers(&parent, &enable)?;
        let path = parent.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            // A leftover of a container of the same id that died with the
            // agent: reuse it only if empty.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let cg = Cgroup { path: path.clone() };
                if !cg.procs().unwrap_or_default().is_empty() {
                    return Err(io_err("reuse", &path)(std::io::Error::from(
                        ErrorKind::AlreadyExists,
                    )));
                }
            }
            Err(e) => return Err(io_err("create", &path)(e)),
        }
        Ok(Some(Cgroup { path }))
    }
}

fn probe(path: &Path) -> Result<Vec<String>, String> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| format!("{path:?}: {e}"))?;
    if st.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        return Err(format!("{path:?} is not a cgroup2 mount"));
    }
    let list = std::fs::read_to_string(path.join("cgroup.controllers"))
        .map_err(|e| format!("{path:?}/cgroup.controllers: {e}"))?;
    let controllers: Vec<String> = list.split_whitespace().map(str::to_string).collect();
    let missing: Vec<&str> = NEEDED
        .iter()
        .copied()
        .filter(|n| !controllers.iter().any(|c| c == n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{path:?} lacks the {} controller(s) (it has: {})",
            missing.join(", "),
            if list.trim().is_empty() {
                "none"
            } else {
                list.trim()
            }
        ));
    }
    Ok(controllers)
}

fn enable_controllers(dir: &Path, enable: &[String]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let have = std::fs::read_to_string(&file).unwrap_or_default();
    for c in enable {
        if have.split_whitespace().any(|h| h == &c[1..]) {
            continue;
        }
        std::fs::write(&file, c).map_err(io_err("enable controllers in", &file))?;
    }
    Ok(())
}

/// Whether `res` asks for anything a cgroup must enforce (device rules do
/// not count: see [`resource_writes`]).
pub fn has_limits(res: &LinuxResources) -> bool {
    res.memory()
        .as_ref()
        .is_some_and(|m| m.limit().is_some() || m.reservation().is_some() || m.swap().is_some())
        || res.cpu().as_ref().is_some_and(|c| {
            c.shares().is_some()
                || c.quota().is_some()
                || c.period().is_some()
                || c.cpus().is_some()
                || c.mems().is_some()
                || c.idle().is_some()
                || c.burst().is_some()
        })
        || res.pids().is_some()
        || res.block_io().as_ref().is_some_and(|b| {
            b.weight().is_some()
                || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_read_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_write_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_read_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_write_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
        })
        || res
            .hugepage_limits()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        || res.unified().as_ref().is_some_and(|u| !u.is_empty())
}

/// Checks what cannot be converted at all, without a cgroup.
pub fn check_resources(prefix: &str, res: &LinuxResources) -> Result<(), SpecError> {
    resource_writes(prefix, res).map(|_| ())
}

/// cpu.shares (2..262144) as cpu.weight (1..10000), the usual mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn limit_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// One write into a cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    /// The spec field it comes from.
    pub field: String,
    /// The file, relative to the cgroup.
    pub file: String,
    /// The value.
    pub value: String,
    /// Skipped when the file does not exist (swap without swap accounting).
    pub optional: bool,
}

/// Converts `linux.resources` into cgroup v2 file writes, in order.
///
/// Device rules (`devices`) are not enforced: the guest holds only this
/// pod's devices, and cgroup v2 device control needs eBPF programs.
/// `memory.swappiness`, `kernel`, `kernelTCP` and `disableOOMKiller` have no
/// cgroup v2 equivalent and are ignored as runc does; `network`, `rdma` and
/// real-time CPU limits are refused.
pub fn resource_writes(prefix: &str, res: &LinuxResources) -> Result<Vec<CgroupWrite>, SpecError> {
    let mut out = Vec::new();
    let mut put = |field: String, file: &str, value: String| {
        out.push(CgroupWrite {
            field,
            optional: file == "memory.swap.max",
            file: file.to_string(),
            value,
        })
    };
    let f = |name: &str| format!("{prefix}.{name}");
    if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        log::debug!("{prefix}.devices: device rules are not enforced in the guest");
    }
    if let Some(m) = res.memory() {
        if let Some(r) = m.reservation() {
            put(f("memory.reservation"), "memory.low", limit_value(r));
        }
        if let Some(l) = m.limit() {
            put(f("memory.limit"), "memory.max", limit_value(l));
        }
        if let Some(s) = m.swap() {
            // The spec's swap is memory + swap; cgroup v2 counts swap alone.
            let value = match (s, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(SpecError::new(
                            f("memory.swap"),
                            format!("{s} is below memory.limit {l} (swap counts memory + swap)"),
                        ));
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            put(f("memory.swap"), "memory.swap.max", value);
        }
        if m.swappiness().is_some() || m.kernel().is_some() || m.kernel_tcp().is_some() {
            log::debug!("{prefix}.memory: swappiness/kernel/kernelTCP have no cgroup v2 equivalent; ignored");
        }
        if m.disable_oom_killer() == Some(true) {
            log::debug!("{prefix}.memory.disableOOMKiller: not available in cgroup v2; ignored");
        }
    }
    if let Some(c) = res.cpu() {
        if c.realtime_runtime().is_some_and(|v| v != 0)
            || c.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(SpecError::new(
                f("cpu.realtimeRuntime"),
                "real-time CPU limits are not supported",
            ));
        }
        if let Some(s) = c.shares() {
            if s != 0 {
                put(
                    f("cpu.shares"),
                    "cpu.weight",
                    shares_to_weight(s).to_string(),
                );
            }
        }
        if c.quota().is_some() || c.period().is_some() {
            let period = c.period().filter(|p| *p != 0).unwrap_or(100_000);
            if !(1000..=1_000_000).contains(&period) {
                return Err(SpecError::new(
                    f("cpu.period"),
                    format!("{period} is outside 1000..1000000"),
                ));
            }
            let quota = match c.quota() {
                Some(q) if q > 0 => {
                    if q < 1000 {
                        return Err(SpecError::new(f("cpu.quota"), format!("{q} is below 1000")));
                    }
                    q.to_string()
                }
                _ => "max".to_string(),
            };
            put(f("cpu.quota"), "cpu.max", format!("{quota} {period}"));
        }
        if let Some(b) = c.burst() {
            put(f("cpu.burst"), "cpu.max.burst", b.to_string());
        }
        if let Some(i) = c.idle() {
            put(f("cpu.idle"), "cpu.idle", i.to_string());
        }
        for (name, v, file) in [
            ("cpu.cpus", c.cpus(), "cpuset.cpus"),
            ("cpu.mems", c.mems(), "cpuset.mems"),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
                {
                    return Err(SpecError::new(
                        f(name),
                        format!("{v:?} is not a CPU or node list"),
                    ));
                }
                put(f(name), file, v.to_string());
            }
        }
    }
    if let Some(p) = res.pids() {
        put(
            f("pids.limit"),
            "pids.max",
            if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            },
        );
    }
    if let Some(b) = res.block_io() {
        if let Some(w) = b.weight() {
            if !(10..=1000).contains(&w) {
                return Err(SpecError::new(
                    f("blockIO.weight"),
                    format!("{w} is outside 10..1000"),
                ));
            }
            put(f("blockIO.weight"), "io.weight", format!("default {w}"));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(w) = d.weight() {
                put(
                    f(&format!("blockIO.weightDevice[{i}]")),
                    "io.weight",
                    format!("{}:{} {w}", d.major(), d.minor()),
                );
            }
        }
        for (name, list, key) in [
            (
                "throttleReadBpsDevice",
                b.throttle_read_bps_device(),
                "rbps",
            ),
            (
                "throttleWriteBpsDevice",
                b.throttle_write_bps_device(),
                "wbps",
            ),
            (
                "throttleReadIOPSDevice",
                b.throttle_read_iops_device(),
                "riops",
            ),
            (
                "throttleWriteIOPSDevice",
                b.throttle_write_iops_device(),
                "wiops",
            ),
        ] {
            for (i, d) in list.iter().flatten().enumerate() {
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                put(
                    f(&format!("blockIO.{name}[{i}]")),
                    "io.max",
                    format!("{}:{} {key}={rate}", d.major(), d.minor()),
                );
            }
        }
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let size = h.page_size();
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SpecError::new(
                f(&format!("hugepageLimits[{i}].pageSize")),
                format!("{size:?} is not a page size"),
            ));
        }
        put(
            f(&format!("hugepageLimits[{i}]")),
            &format!("hugetlb.{size}.max"),
            limit_value(h.limit()),
        );
    }
    if res.network().is_some() {
        return Err(SpecError::new(
            f("network"),
            "net_cls/net_prio do not exist in cgroup v2",
        ));
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(SpecError::new(f("rdma"), "is not supported"));
    }
    let mut unified: Vec<_> = res.unified().iter().flatten().collect();
    unified.sort();
    for (file, value) in unified {
        let field = f(&format!("unified.{file}"));
        let ok = !file.is_empty()
            && !file.contains('/')
            && file.contains('.')
            && !file.starts_with("cgroup.")
            && file != "."
            && file != "..";
        if !ok {
            return Err(SpecError::new(
                field,
                "is not a controller file of the container's cgroup",
            ));
        }
        put(field, file, value.clone());
    }
    Ok(out)
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
}

/// Counters of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// cpu.stat usage_usec.
    pub cpu_usage_usec: u64,
    /// cpu.stat user_usec.
    pub cpu_user_usec: u64,
    /// cpu.stat system_usec.
    pub cpu_system_usec: u64,
    /// memory.current.
    pub memory_usage: u64,
    /// memory.max, 0 when unlimited.
    pub memory_limit: u64,
    /// pids.current.
    pub pids_current: u64,
    /// pids.max, 0 when unlimited.
    pub pids_limit: u64,
    /// io.stat rbytes, summed over devices.
    pub io_read_bytes: u64,
    /// io.stat wbytes, summed over devices.
    pub io_write_bytes: u64,
    /// memory.events oom_kill.
    pub oom_kills: u64,
}

/// `key value` lines (cpu.stat, memory.events) as a map.
pub fn parse_flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// A single-value file: a number, or 0 for `max`/missing.
pub fn parse_single(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// io.stat (`8:0 rbytes=1 wbytes=2 …` per device): summed (rbytes, wbytes).
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in text.lines() {
        for kv in line.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", v)) => r = r.saturating_add(v.parse().unwrap_or(0)),
                Some(("wbytes", v)) => w = w.saturating_add(v.parse().unwrap_or(0)),
                _ => {}
            }
        }
    }
    (r, w)
}

impl Cgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }

    /// Writes `linux.resources`.
    pub fn apply(&self, prefix: &str, res: &LinuxResources) -> Result<(), CgroupError> {
        let writes = resource_writes(prefix, res).map_err(|e| CgroupError::Limit {
            field: e.field,
            path: self.path.clone(),
            value: String::new(),
            source: std::io::Error::new(ErrorKind::InvalidInput, e.reason),
        })?;
        for w in writes {
            let path = self.path.join(&w.file);
            if w.optional && !path.exists() {
                log::debug!(
                    "{}: {path:?} does not exist (no swap accounting); skipped",
                    w.field
                );
                continue;
            }
            std::fs::write(&path, &w.value).map_err(|source| CgroupError::Limit {
                field: w.field.clone(),
                path,
                value: w.value.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.procs");
        std::fs::write(&file, pid.to_string()).map_err(io_err("add a process to", &file))
    }

    /// The pids in the cgroup and its descendants.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        collect_procs(&self.path, &mut out)?;
        Ok(out)
    }

    /// memory.events oom_kill.
    pub fn oom_kills(&self) -> u64 {
        oom_kills_in(&self.path)
    }

    /// The counters.
    pub fn stats(&self) -> CgroupStats {
        let cpu = parse_flat_keyed(&self.read("cpu.stat"));
        let (io_read_bytes, io_write_bytes) = parse_io_stat(&self.read("io.stat"));
        CgroupStats {
            cpu_usage_usec: cpu.get("usage_usec").copied().unwrap_or(0),
            cpu_user_usec: cpu.get("user_usec").copied().unwrap_or(0),
            cpu_system_usec: cpu.get("system_usec").copied().unwrap_or(0),
            memory_usage: parse_single(&self.read("memory.current")),
            memory_limit: parse_single(&self.read("memory.max")),
            pids_current: parse_single(&self.read("pids.current")),
            pids_limit: parse_single(&self.read("pids.max")),
            io_read_bytes,
            io_write_bytes,
            oom_kills: self.oom_kills(),
        }
    }

    /// Freezes (or thaws) and waits until cgroup.events says so.
    pub fn freeze(&self, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.freeze");
        std::fs::write(&file, if frozen { "1" } else { "0" }).map_err(io_err("write", &file))?;
        let want = u8::from(frozen);
        let deadline = Instant::now() + timeout;
        loop {
            let events = parse_flat_keyed(&self.read("cgroup.events"));
            if events.get("frozen").copied() == Some(u64::from(want)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::FreezeTimeout {
                    path: self.path.clone(),
                    want,
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs everything inside (cgroup.kill), or signals each pid.
    pub fn signal_all(&self, sig: i32) -> Result<(), CgroupError> {
        if sig == libc::SIGKILL && std::fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return Ok(());
        }
        for pid in self.procs()? {
            // SAFETY: kill with plain integers.
            unsafe { libc::kill(pid, sig) };
        }
        Ok(())
    }

    /// Removes the cgroup once it is empty (waiting up to `timeout`).
    pub fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        loop {
            match remove_tree(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                // Busy: processes are still on their way out.
                Err(e) if Instant::now() < deadline => {
                    log::debug!("cgroup {:?} not removable yet: {e}", self.path);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io_err("remove", &self.path)(e)),
            }
        }
    }
}

/// memory.events oom_kill of the cgroup at `dir`.
pub fn oom_kills_in(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    parse_flat_keyed(&text)
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&file).map_err(io_err("read", &file))?;
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

/// rmdir of a cgroup and the cgroups a container made inside it.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn files(json: &str) -> Vec<(String, String)> {
        resource_writes("linux.resources", &res(json))
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn memory_limits() {
        assert_eq!(
            files(r#"{"memory":{"limit":104857600,"reservation":52428800,"swap":209715200}}"#),
            pairs(&[
                ("memory.low", "52428800"),
                ("memory.max", "104857600"),
                ("memory.swap.max", "104857600")
            ])
        );
        assert_eq!(
            files(r#"{"memory":{"limit":-1,"swap":-1}}"#),
            pairs(&[("memory.max", "max"), ("memory.swap.max", "max")])
        );
        let e = resource_writes("r", &res(r#"{"memory":{"limit":200,"swap":100}}"#)).unwrap_err();
        assert_eq!(e.field, "r.memory.swap");
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(
            files(
                r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"}}"#
            ),
            pairs(&[
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0")
            ])
        );
        assert_eq!(
            files(r#"{"cpu":{"quota":-1}}"#),
            pairs(&[("cpu.max", "max 100000")])
        );
        let e = resource_writes("r", &res(r#"{"cpu":{"cpus":"0;rm"}}"#)).unwrap_err();
        assert_eq!(e.field, "r.cpu.cpus");
        let e = resource_writes("r", &res(r#"{"cpu":{"realtimeRuntime":5}}"#)).unwrap_err();
        assert_eq!(e.field, "r.cpu.realtimeRuntime");
    }

    #[test]
    fn pids_io_hugetlb_unified() {
        assert_eq!(
            files(r#"{"pids":{"limit":100}}"#),
            pairs(&[("pids.max", "100")])
        );
        assert_eq!(
            files(r#"{"pids":{"limit":-1}}"#),
            pairs(&[("pids.max", "max")])
        );
        assert_eq!(
            files(
                r#"{"blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]}}"#
            ),
            pairs(&[("io.weight", "default 500"), ("io.max", "8:0 rbps=1048576")])
        );
        assert_eq!(
            files(
                r#"{"hugepageLimits":[{"pageSize":"2MB","limit":-1}],"unified":{"memory.high":"1G"}}"#
            ),
            pairs(&[("hugetlb.2MB.max", "max"), ("memory.high", "1G")])
        );
        let e = resource_writes("r", &res(r#"{"unified":{"../x":"1"}}"#)).unwrap_err();
        assert_eq!(e.field, "r.unified.../x");
        let e = resource_writes("r", &res(r#"{"unified":{"cgroup.procs":"1"}}"#)).unwrap_err();
        assert_eq!(e.field, "r.unified.cgroup.procs");
        let e = resource_writes("r", &res(r#"{"network":{"classID":1}}"#)).unwrap_err();
        assert_eq!(e.field, "r.network");
    }

    #[test]
    fn device_rules_alone_are_no_limit() {
        let r = res(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#);
        assert!(!has_limits(&r));
        assert!(files(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).is_empty());
        assert!(has_limits(&res(r#"{"memory":{"limit":1}}"#)));
        assert!(has_limits(&res(r#"{"pids":{"limit":1}}"#)));
        assert!(!has_limits(&res(r#"{"memory":{}}"#)));
    }

    #[test]
    fn stat_files() {
        let cpu = parse_flat_keyed("usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 0\n");
        assert_eq!(cpu["usage_usec"], 100);
        assert_eq!(cpu["system_usec"], 40);
        let ev = parse_flat_keyed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n");
        assert_eq!(ev["oom_kill"], 2);
        assert_eq!(parse_single("max\n"), 0);
        assert_eq!(parse_single("4096\n"), 4096);
        assert_eq!(
            parse_io_stat(
                "8:0 rbytes=100 wbytes=5 rios=1 wios=1 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=2\n"
            ),
            (101, 7)
        );
    }

    #[test]
    fn a_hybrid_host_has_no_usable_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = CgroupRoot::detect(tmp.path());
        assert!(!root.usable());
        assert!(root.create("c").unwrap().is_none());
        let e = root.unavailable("linux.resources").to_string();
        assert!(e.contains("not a cgroup2 mount"), "{e}");
    }
}
