//! A private containerd for the `pods` workload: its root, state, socket
//! and log in one directory (under `/run`, where overlayfs can make
//! layers inside the test host), the CRI plugin off, husk's shim found on
//! its `PATH` next to the `husk` binary measured, runc's shim from the
//! system. `ctr` commands are built against its socket.
//!
//! The test suite's own launcher (`husk_tests::containerd`) asserts on
//! every failure, as a test should; a benchmark has to say "not measured"
//! and go on, so this one returns [`StartContainerdError`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// husk's shim binary, as containerd derives it from the runtime name.
pub const HUSK_SHIM: &str = "containerd-shim-husk-v2";
/// husk's runtime name.
pub const HUSK_RUNTIME: &str = "io.containerd.husk.v2";
/// runc's runtime name.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// Why a private containerd could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StartContainerdError {
    /// The husk shim is not next to the husk binary.
    #[error("{0:?} is missing: build it with `cargo build --release -p husk-shim --bins`")]
    NoShim(PathBuf),
    /// Its directory or files could not be written.
    #[error("cannot prepare {path:?}")]
    Prepare {
        /// What was being written.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// `containerd` would not start.
    #[error("cannot start containerd (apt-get install containerd)")]
    Spawn(#[source] std::io::Error),
    /// It started but never answered `ctr version`.
    #[error("containerd did not answer within {0:?}; its log ends:\n{1}")]
    NotUp(Duration, String),
}

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportImageError {
    /// The archive could not be built.
    #[error("cannot build the busybox image archive")]
    Build(#[source] std::io::Error),
    /// `ctr image import` failed.
    #[error("ctr image import failed: {0}")]
    Import(String),
}

/// A running private containerd; stopped and cleaned up on drop.
pub struct Containerd {
    dir: PathBuf,
    child: Child,
    address: PathBuf,
}

impl Containerd {
    /// Starts containerd in a fresh directory `dir` (removed on drop),
    /// with husk's shim taken from next to `husk`, husk's pods of the
    /// default size from `kernel` and `initramfs`.
    pub fn start(
        dir: &Path,
        husk: &Path,
        kernel: &Path,
        initramfs: &Path,
    ) -> Result<Self, StartContainerdError> {
        let shim = husk.with_file_name(HUSK_SHIM);
        if !shim.is_file() {
            return Err(StartContainerdError::NoShim(shim));
        }
        let prepare = |path: &Path, result: std::io::Result<()>| {
            result.map_err(|source| StartContainerdError::Prepare {
                path: path.to_path_buf(),
                source,
            })
        };
        let _ = std::fs::remove_dir_all(dir);
        prepare(dir, std::fs::create_dir_all(dir))?;
        let address = dir.join("containerd.sock");
        let husk_config = dir.join("husk.toml");
        prepare(
            &husk_config,
            std::fs::write(
                &husk_config,
                format!(
                    "kernel = {:?}\ninitramfs = {:?}\nstate_dir = {:?}\n",
                    kernel,
                    initramfs,
                    dir.join("husk")
                ),
            ),
        )?;
        let config = dir.join("config.toml");
        prepare(
            &config,
            std::fs::write(
                &config,
                format!(
                    "version = 2\nroot = {root:?}\nstate = {state:?}\n\
                     disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                     [grpc]\n  address = {address:?}\n[ttrpc]\n  address = \"{address}.ttrpc\"\n",
                    root = dir.join("root"),
                    state = dir.join("state"),
                    address = address.display().to_string(),
                ),
            ),
        )?;
        let log_path = dir.join("containerd.log");
        let log =
            std::fs::File::create(&log_path).map_err(|source| StartContainerdError::Prepare {
                path: log_path.clone(),
                source,
            })?;
        let log_err = log
            .try_clone()
            .map_err(|source| StartContainerdError::Prepare {
                path: log_path.clone(),
                source,
            })?;
        let path = format!(
            "{}:{}",
            shim.parent().unwrap_or(Path::new("/")).display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("HUSK_CONFIG", &husk_config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(StartContainerdError::Spawn)?;
        let me = Self {
            dir: dir.to_path_buf(),
            child,
            address,
        };
        let wait = Duration::from_secs(120);
        let began = Instant::now();
        while began.elapsed() < wait {
            let up = me
                .ctr(&["version"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(StartContainerdError::NotUp(wait, me.log_tail(20)))
    }

    /// `ctr --address SOCK ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.address).args(args);
        c
    }

    /// Builds the busybox image archive in `work` and imports it as `name`.
    pub fn import_busybox(&self, work: &Path, name: &str) -> Result<(), ImportImageError> {
        let archive = husk_tests::image::busybox_image_archive(work, name)
            .map_err(ImportImageError::Build)?;
        let out = self
            .ctr(&["image", "import"])
            .arg(&archive)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ImportImageError::Import(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ImportImageError::Import(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on containerd, our own child, not yet reaped; it
        // touches no memory.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(15) {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots left mounted by a pod that failed half way.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("root"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the
/// parenthesised `comm`, which may itself hold spaces or parentheses).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The `comm` of `pid`.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The PID and STATUS of every task in `ctr task ls` output, by id.
pub fn parse_task_list(text: &str) -> Vec<(String, u32, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let id = w.next()?.to_string();
            let pid = w.next()?.parse().ok()?;
            let status = w.next()?.to_string();
            Some((id, pid, status))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_past_an_odd_comm() {
        assert_eq!(parse_ppid("42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn reads_ctr_task_ls() {
        let text =
            "TASK      PID     STATUS    \nhp-1      1234    RUNNING\nhp-2      0       STOPPED\n";
        assert_eq!(
            parse_task_list(text),
            [
                ("hp-1".to_string(), 1234, "RUNNING".to_string()),
                ("hp-2".to_string(), 0, "STOPPED".to_string())
            ]
        );
        assert!(parse_task_list("TASK PID STATUS\n").is_empty());
    }
}
