//! The pod's microVM: booted for the pod's first (sandbox) container,
//! shared by every container of the pod, shut down with the last.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Mutex;
use std::time::Duration;

use husk::agent::AgentClient;
use husk::config::HuskConfig;
use husk::oci::SHARED_FS_TAG;
use husk::sandbox::{net_configs, wait_for_agent, JoinedNetwork, SpawnOptions, VmProcess};
use husk::vmm::config::FsConfig;

use crate::error::TaskError;

/// Guest CID (each VM's vsock is private, any CID works).
const GUEST_CID: u64 = 3;
/// How long a boot to the agent may take (the emulated test host is slow).
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the guest has to reset after Shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The husk binary's name, whose `vmm` verb runs a VMM.
const HUSK_BIN: &str = "husk";

/// A running pod VM and its agent.
pub struct Vm {
    /// The agent.
    pub client: AgentClient,
    /// The VMM's hybrid vsock socket (stdio streams).
    pub vsock: PathBuf,
    /// The VMM's pid: every task of the pod reports it.
    pub pid: u32,
    process: Mutex<VmProcess>,
    /// The pod network joined to the VM, parted when it shuts down.
    network: Mutex<Option<JoinedNetwork>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("pid", &self.pid).finish()
    }
}

/// The `husk` binary: next to the shim, else on `PATH`.
fn husk_binary() -> Result<PathBuf, TaskError> {
    let exe = std::env::current_exe().map_err(|source| TaskError::Io {
        what: "find the shim's own path".into(),
        source,
    })?;
    let sibling = exe.with_file_name(HUSK_BIN);
    if sibling.is_file() {
        return Ok(sibling);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(HUSK_BIN))
        .find(|p| p.is_file())
        .ok_or_else(|| TaskError::Io {
            what: format!("find the {HUSK_BIN} binary next to {exe:?} or on PATH"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

impl Vm {
    /// Boots a VM of `vcpus` and `memory_mib` whose state lives in `dir`
    /// and which shares `shared`, with a NIC for each tap of `network`,
    /// waits for its agent and gives it the pod's network.
    ///
    /// The VMM dies with the thread that spawned it (`PR_SET_PDEATHSIG`),
    /// so it is spawned from a thread that lives as long as the shim.
    pub fn boot(
        config: &HuskConfig,
        vcpus: u8,
        memory_mib: u32,
        dir: &Path,
        shared: &Path,
        mut network: Option<JoinedNetwork>,
    ) -> Result<Self, TaskError> {
        let husk_bin = husk_binary()?;
        let mut vm = config.vm_config(vcpus, memory_mib);
        vm.fs = Some(FsConfig {
            tag: SHARED_FS_TAG.to_string(),
            shared_dir: shared.to_path_buf(),
        });
        let mut taps = Vec::new();
        if let Some(joined) = network.as_mut() {
            vm.net = net_configs(&joined.nics());
            taps = joined.take_tap_fds();
        }
        let dir = dir.to_path_buf();
        let (reply, booted) = channel();
        std::thread::Builder::new()
            .name("vm-owner".into())
            .spawn(move || {
                let options = SpawnOptions {
                    binds: Vec::new(),
                    die_with_parent: true,
                    taps,
                };
                let result = VmProcess::spawn_with(&husk_bin, vm, &dir, GUEST_CID, &options)
                    .map_err(TaskError::from)
                    .and_then(|mut process| {
                        let waited = wait_for_agent(&mut process, AGENT_TIMEOUT);
                        match waited {
                            Ok((client, version)) => Ok((process, client, version)),
                            Err(e) => {
                                log::error!(
                                    "the pod VM did not reach its agent\n{}",
                                    process.logs()
                                );
                                Err(TaskError::from(e))
                            }
                        }
                    });
                let _ = reply.send(result);
                loop {
                    std::thread::park();
                }
            })
            .map_err(|source| TaskError::Io {
                what: "start the VM owner thread".into(),
                source,
            })?;
        let (process, client, version) = booted.recv().map_err(|_| TaskError::NoVm)??;
        let pid = process.pid().unwrap_or(0);
        log::info!("pod VM up: VMM pid {pid}, agent {version}");
        let this = Self {
            client,
            vsock: process.paths().vsock.clone(),
            pid,
            process: Mutex::new(process),
            network: Mutex::new(None),
        };
        if let Some(joined) = network {
            if let Err(e) = this.client.configure_network(&joined.network) {
                this.shut_down();
                return Err(e.into());
            }
            *this.network.lock().unwrap_or_else(|p| p.into_inner()) = Some(joined);
        }
        Ok(this)
    }

    /// Fails if the pod's namespace gained links after the VM started:
    /// they cannot reach the guest.
    pub fn check_network_unchanged(&self) -> Result<(), TaskError> {
        match self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(joined) => Ok(joined.check_no_links_added()?),
            None => Ok(()),
        }
    }

    /// Whether the VMM still runs.
    pub fn alive(&self) -> bool {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait()
            .is_none()
    }

    /// The ends of the VMM's and the guest console's logs.
    pub fn logs(&self) -> String {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .logs()
    }

    /// Asks the guest to power off, then ends the VMM and removes its
    /// state directory (which holds no mounts: the shared directory is
    /// elsewhere).
    pub fn shut_down(&self) {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        if process.try_wait().is_none()
            && (self.client.shutdown().is_err() || process.wait_timeout(SHUTDOWN_TIMEOUT).is_none())
        {
            log::warn!("the pod VM did not power off; killing its VMM");
        }
        process.kill();
        drop(
            self.network
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let dir = process.paths().dir.clone();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {dir:?}: {e}");
            }
        }
    }
}
