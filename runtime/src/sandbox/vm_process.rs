//! A microVM running in its own `husk vmm` process.
//!
//! The VMM runs in a child process so that a VMM crash never takes its
//! parent down, and the other way round. Everything the VM creates lives in
//! one state directory, which [`VmProcess`] removes when dropped, after
//! killing the VMM if it still runs.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use super::mount_ns::Binds;
use crate::oci::SharedBind;
use crate::vmm::config::{ConsoleConfig, VmConfig, VsockConfig};
use crate::vmm::console::console_log_tail;

/// How much of the console and VMM logs an error report carries.
const LOG_TAIL_BYTES: usize = 4096;

/// Files of a sandbox's state directory.
#[derive(Debug, Clone)]
pub struct VmProcessPaths {
    /// The state directory itself.
    pub dir: PathBuf,
    /// The VMM's config.
    pub config: PathBuf,
    /// The hybrid vsock socket.
    pub vsock: PathBuf,
    /// Where the agent's "ready" connection arrives (guest connections to
    /// host port P go to `<vsock>_P`).
    pub ready: PathBuf,
    /// The guest console log.
    pub console_log: PathBuf,
    /// The VMM process's own stderr.
    pub vmm_log: PathBuf,
    /// The directory shared with the guest over virtio-fs.
    pub shared: PathBuf,
}

impl VmProcessPaths {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config: dir.join("vm.json"),
            vsock: dir.join("vsock.sock"),
            ready: dir.join(format!("vsock.sock_{}", husk_protocol::READY_VSOCK_PORT)),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
            shared: dir.join("shared"),
        }
    }
}

/// Why a VMM process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnVmError {
    /// The state directory exists already or cannot be made.
    #[error("cannot create the sandbox state directory {path:?}")]
    StateDir {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VM config could not be written.
    #[error("cannot write the VM config {path:?}")]
    WriteConfig {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shared directory's binds could not be prepared.
    #[error("shared directory")]
    Binds(#[source] super::mount_ns::PrepareBindsError),
    /// The socket for the agent's ready connection could not be made.
    #[error("cannot listen on {path:?} for the agent")]
    ReadySocket {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VMM process could not be started.
    #[error("cannot start the VMM {program:?}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to start a VMM process beyond its config.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Host paths to bind into the shared directory, in the VMM's own
    /// mount namespace.
    pub binds: Vec<SharedBind>,
    /// Kill the VMM when the process that spawned it dies.
    pub die_with_parent: bool,
}

/// A running VMM process and its state directory.
#[derive(Debug)]
pub struct VmProcess {
    child: Option<Child>,
    paths: VmProcessPaths,
    started: Instant,
    /// Listens for the agent's ready connection until it has come.
    ready: Option<UnixListener>,
}

impl VmProcess {
    /// Starts `husk_bin vmm` for `config` with its sockets and logs in a
    /// new state directory `dir`. The config's console and vsock are set
    /// to files in `dir`.
    pub fn spawn(
        husk_bin: &Path,
        config: VmConfig,
        dir: &Path,
        guest_cid: u64,
    ) -> Result<Self, SpawnVmError> {
        Self::spawn_with(husk_bin, config, dir, guest_cid, &SpawnOptions::default())
    }

    /// [`VmProcess::spawn`] with binds into the shared directory (made in
    /// the VMM's own mount namespace) and the VMM's lifetime tied to ours.
    pub fn spawn_with(
        husk_bin: &Path,
        mut config: VmConfig,
        dir: &Path,
        guest_cid: u64,
        options: &SpawnOptions,
    ) -> Result<Self, SpawnVmError> {
        let paths = VmProcessPaths::new(dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|source| SpawnVmError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        // From here on, dropping `process` removes the directory.
        let mut process = Self {
            child: None,
            paths: paths.clone(),
            started: Instant::now(),
            ready: None,
        };
        if config.console != ConsoleConfig::Off {
            config.console = ConsoleConfig::Log {
                path: paths.console_log.clone(),
                max_bytes: 512 * 1024,
            };
        }
        config.vsock = Some(VsockConfig {
            guest_cid,
            uds_path: paths.vsock.clone(),
        });
        let json = serde_json::to_vec_pretty(&config).expect("VmConfig serializes");
        fs::write(&paths.config, json).map_err(|source| SpawnVmError::WriteConfig {
            path: paths.config.clone(),
            source,
        })?;
        let vmm_log = File::create(&paths.vmm_log).map_err(|source| SpawnVmError::WriteConfig {
            path: paths.vmm_log.clone(),
            source,
        })?;
        if !options.binds.is_empty() {
            fs::create_dir_all(&paths.shared).map_err(|source| SpawnVmError::StateDir {
                path: paths.shared.clone(),
                source,
            })?;
        }
        let binds = Binds::prepare(&paths.shared, &options.binds).map_err(SpawnVmError::Binds)?;
        // Bound before the VMM starts, so the agent's connection always
        // finds it.
        let ready = UnixListener::bind(&paths.ready)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| SpawnVmError::ReadySocket {
                path: paths.ready.clone(),
                source,
            })?;
        process.ready = Some(ready);
        let die_with_parent = options.die_with_parent;
        let mut command = Command::new(husk_bin);
        command
            .arg("vmm")
            .arg("--config")
            .arg(&paths.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log);
        let setup = move || child_setup(die_with_parent, &binds);
        // SAFETY: `child_setup` makes only raw system calls (prctl,
        // unshare, mount) on data prepared before fork; it allocates nothing.
        unsafe { command.pre_exec(setup) };
        process.started = Instant::now();
        let child = command.spawn().map_err(|source| SpawnVmError::Spawn {
            program: husk_bin.to_path_buf(),
            source,
        })?;
        process.child = Some(child);
        Ok(process)
    }

    /// The state directory's files.
    pub fn paths(&self) -> &VmProcessPaths {
        &self.paths
    }

    /// The listener for the agent's ready connection, until it has come.
    pub fn ready_listener(&self) -> Option<&UnixListener> {
        self.ready.as_ref()
    }

    /// Closes the ready listener: the agent has said it is ready.
    pub fn agent_is_ready(&mut self) {
        self.ready = None;
        let _ = fs::remove_file(&self.paths.ready);
    }

    /// When the VMM process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The VMM's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The VMM's exit status if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the VMM to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end of the console log and of the VMM's own log, for reports.
    pub fn logs(&self) -> String {
        let console = console_log_tail(&self.paths.console_log, LOG_TAIL_BYTES);
        let vmm = console_log_tail(&self.paths.vmm_log, LOG_TAIL_BYTES);
        let mut out = String::new();
        if !vmm.trim().is_empty() {
            out.push_str("--- VMM log\n");
            out.push_str(vmm.trim_end());
            out.push('\n');
        }
        if !console.trim().is_empty() {
            out.push_str("--- guest console\n");
            out.push_str(console.trim_end());
            out.push('\n');
        }
        out
    }

    /// Kills the VMM if it still runs and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs in the VMM child between fork and exec.
fn child_setup(die_with_parent: bool, binds: &Binds) -> std::io::Result<()> {
    if die_with_parent {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if !binds.is_empty() {
        binds.apply()?;
    }
    Ok(())
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = fs::remove_dir_all(&self.paths.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {:?}: {e}", self.paths.dir);
            }
        }
    }
}
