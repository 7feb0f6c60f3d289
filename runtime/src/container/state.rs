//! A container's directory under the runtime root (`--root`, default
//! `/run/husk`) and its `state.json`.
//!
//! The directory holds `state.json`, the monitor's log, and `vm/`, the
//! sandbox state directory of its microVM (sockets, console log, shared
//! directory). It lives from `create` until `delete`. Where `vm/`'s socket
//! paths would not fit in a Unix socket address (Docker's root and 64-digit
//! ids do not), the VM's directory is `<root>/.vm-<hash of the id>`
//! instead, beside it (no container id starts with a dot).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::{validate_container_id, ContainerIdError};

/// The runtime-spec version husk reports.
pub const OCI_VERSION: &str = "1.0.2";

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest socket name in a VM directory: the vsock socket with a port.
const LONGEST_SOCKET_NAME: &str = "vsock.sock_4294967295";

/// A container's lifecycle status (runtime-spec, plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The VM and container are being made.
    Creating,
    /// Created; the process waits for `start`.
    Created,
    /// The process runs.
    Running,
    /// Frozen.
    Paused,
    /// The process ended (or its monitor is gone).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Runtime-spec version.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// Lifecycle status as last recorded (see [`ContainerDir::read`]).
    pub status: Status,
    /// The monitor's pid: the host process that stands for the container
    /// (its exit status is the container's).
    pub pid: i32,
    /// The monitor's start time (clock ticks since boot), against pid reuse.
    #[serde(default)]
    pub pid_start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs on the host.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// How the process ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Whether the guest's OOM killer ended it.
    #[serde(default)]
    pub oom_killed: bool,
    /// The pod network joined to the VM, to part on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::sandbox::NetworkRecord>,
    /// The host cgroup the monitor and VMM run in, to remove on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cgroup: Option<super::host_cgroup::HostCgroup>,
}

/// Why a container directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContainerDirError {
    /// The id is not valid.
    #[error(transparent)]
    Id(#[from] ContainerIdError),
    /// A container of that id exists.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// No container of that id.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// The directory or its state could not be read or written.
    #[error("container {id:?}: {path:?}")]
    Io {
        /// The container.
        id: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is damaged.
    #[error("container {id:?}: state file {path:?} is damaged")]
    Parse {
        /// The container.
        id: String,
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// The container id.
    pub id: String,
    /// `<root>/<id>`.
    pub dir: PathBuf,
}

impl ContainerDir {
    fn at(root: &Path, id: &str) -> Result<Self, ContainerDirError> {
        validate_container_id(id)?;
        Ok(Self {
            id: id.to_string(),
            dir: root.join(id),
        })
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerDirError + '_ {
        let path = path.to_path_buf();
        move |source| ContainerDirError::Io {
            id: self.id.clone(),
            path,
            source,
        }
    }

    /// Makes the directory of a new container.
    pub fn create(root: &Path, id: &str) -> Result<Self, ContainerDirError> {
        let this = Self::at(root, id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(this.io(root))?;
        match fs::DirBuilder::new().mode(0o700).create(&this.dir) {
            Ok(()) => Ok(this),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ContainerDirError::Exists(id.to_string()))
            }
            Err(e) => Err(this.io(&this.dir)(e)),
        }
    }

    /// Opens an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<Self, ContainerDirError> {
        let this = Self::at(root, id)?;
        if !this.state_path().exists() {
            return Err(ContainerDirError::NotFound(id.to_string()));
        }
        Ok(this)
    }

    /// Every container under `root`, by id.
    pub fn list(root: &Path) -> Vec<Self> {
        let mut dirs: Vec<Self> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Self::open(root, &e.file_name().to_string_lossy()).ok())
            .collect();
        dirs.sort_by(|a, b| a.id.cmp(&b.id));
        dirs
    }

    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The microVM's sandbox state directory: `vm/` inside the container's
    /// directory, or `<root>/.vm-<hash>` where that would make the VM's
    /// socket paths too long to bind.
    pub fn vm_dir(&self) -> PathBuf {
        let inside = self.dir.join("vm");
        if inside.join(LONGEST_SOCKET_NAME).as_os_str().len() <= MAX_SOCKET_PATH {
            return inside;
        }
        let root = self.dir.parent().unwrap_or(Path::new("/"));
        root.join(format!(".vm-{:016x}", fnv1a(self.id.as_bytes())))
    }

    /// The monitor's log (it has no stderr of its own: that is the container's).
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }

    /// The VMM's hybrid-vsock socket.
    pub fn vsock_path(&self) -> PathBuf {
        crate::sandbox::VmProcessPaths::new(&self.vm_dir()).vsock
    }

    /// Reads the state, turning a created/running/paused container whose
    /// monitor is gone into `stopped`.
    pub fn read(&self) -> Result<ContainerState, ContainerDirError> {
        let path = self.state_path();
        let text = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ContainerDirError::NotFound(self.id.clone())
            } else {
                self.io(&path)(e)
            }
        })?;
        let mut state: ContainerState =
            serde_json::from_slice(&text).map_err(|source| ContainerDirError::Parse {
                id: self.id.clone(),
                path: path.clone(),
                source,
            })?;
        if state.status != Status::Stopped
            && state.pid > 0
            && !process_alive(state.pid, state.pid_start_time)
        {
            state.status = Status::Stopped;
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn write(&self, state: &ContainerState) -> Result<(), ContainerDirError> {
        let path = self.state_path();
        let tmp = self.dir.join(".state.json.tmp");
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_data()))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(self.io(&path))
    }

    /// Reads, changes and writes the state under the directory's lock, so
    /// the monitor and `start`/`pause` never lose each other's updates.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut ContainerState) -> T,
    ) -> Result<T, ContainerDirError> {
        let lock_path = self.dir.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(self.io(&lock_path))?;
        // SAFETY: flock on an fd we own for the duration of the call.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(self.io(&lock_path)(std::io::Error::last_os_error()));
        }
        let mut state = self.read()?;
        let out = change(&mut state);
        self.write(&state)?;
        Ok(out)
    }

    /// Removes the directory and everything in it, and the VM's directory
    /// where it lives beside it (a VMM killed with its monitor leaves it).
    pub fn remove(&self) -> Result<(), ContainerDirError> {
        let vm_dir = self.vm_dir();
        if !vm_dir.starts_with(&self.dir) {
            match fs::remove_dir_all(&vm_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&vm_dir)(e)),
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(&self.dir)(e)),
        }
    }
}

/// FNV-1a, 64 bits: a short name for a container id that every husk
/// version computes alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The start time of a process (field 22 of /proc/PID/stat), if it lives.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so starttime (22) is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start_time`
/// (0: any process with that pid).
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    match process_start_time(pid) {
        Some(t) => start_time == 0 || t == start_time,
        None => false,
    }
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str) -> ContainerState {
        ContainerState {
            oci_version: OCI_VERSION.into(),
            id: id.into(),
            status: Status::Created,
            pid: std::process::id() as i32,
            pid_start_time: process_start_time(std::process::id() as i32).unwrap(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            exit_status: None,
            oom_killed: false,
            network: None,
            host_cgroup: None,
        }
    }

    #[test]
    fn create_write_read_update_remove() {
        let root = tempfile::tempdir().unwrap();
        let dir = ContainerDir::create(root.path(), "c1").unwrap();
        assert!(matches!(
            ContainerDir::create(root.path(), "c1"),
            Err(ContainerDirError::Exists(_))
        ));
        assert!(matches!(
            ContainerDir::open(root.path(), "c2"),
            Err(ContainerDirError::NotFound(_))
        ));
        dir.write(&state("c1")).unwrap();
        assert_eq!(dir.read().unwrap().status, Status::Created);
        dir.update(|s| s.status = Status::Running).unwrap();
        assert_eq!(
            ContainerDir::open(root.path(), "c1")
                .unwrap()
                .read()
                .unwrap()
                .status,
            Status::Running
        );
        assert_eq!(ContainerDir::list(root.path()).len(), 1);
        dir.remove().unwrap();
        assert!(ContainerDir::list(root.path()).is_empty());
    }

    #[test]
    fn the_vm_dir_moves_beside_when_its_sockets_would_not_bind() {
        let root = tempfile::tempdir().unwrap();
        let short = ContainerDir::create(root.path(), "c1").unwrap();
        assert_eq!(short.vm_dir(), short.dir.join("vm"));
        // Docker's layout: a 33-byte root and a 64-digit id.
        let docker_root = Path::new("/var/run/docker/runtime-runc/moby");
        let long_id = "ab".repeat(32);
        let long = ContainerDir::at(docker_root, &long_id).unwrap();
        let vm_dir = long.vm_dir();
        assert_eq!(vm_dir.parent(), Some(docker_root));
        let name = vm_dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".vm-") && name.len() == 20, "{name}");
        assert!(long.vsock_path().as_os_str().len() + 11 <= MAX_SOCKET_PATH);
        // Another id gets another directory; the same id the same one.
        let other = ContainerDir::at(docker_root, &"cd".repeat(32)).unwrap();
        assert_ne!(other.vm_dir(), vm_dir);
        assert_eq!(
            ContainerDir::at(docker_root, &long_id).unwrap().vm_dir(),
            vm_dir
        );
        // Removing the container removes the VM's directory beside it.
        let root_path = root.path().join("r".repeat(40));
        let dir = ContainerDir::create(&root_path, &long_id).unwrap();
        fs::create_dir(dir.vm_dir()).unwrap();
        fs::write(dir.vm_dir().join("console.log"), "x").unwrap();
        dir.write(&state(&long_id)).unwrap();
        assert_eq!(
            ContainerDir::list(&root_path).len(),
            1,
            "the VM dir is no container"
        );
        dir.remove().unwrap();
        assert_eq!(fs::read_dir(&root_path).unwrap().count(), 0);
    }

    #[test]
    fn a_dead_monitor_means_stopped() {
        let root = tempfile::tempdir().unwrap();
        let dir = ContainerDir::create(root.path(), "c1").unwrap();
        let mut s = state("c1");
        s.pid_start_time += 1; // another process now has this pid
        dir.write(&s).unwrap();
        assert_eq!(dir.read().unwrap().status, Status::Stopped);
    }

    #[test]
    fn bad_ids_are_refused() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            ContainerDir::create(root.path(), "../x"),
            Err(ContainerDirError::Id(_))
        ));
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        let now = now_rfc3339();
        assert_eq!(now.len(), 30, "{now}");
        assert!(now.ends_with('Z'));
    }
}
