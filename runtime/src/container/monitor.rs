//! The monitor: the host process that stands for one container.
//!
//! `husk create` starts it (as `husk monitor`) and returns once the
//! container is created; the monitor stays, as runc's container process
//! does, so that whoever drives husk like runc (containerd-shim-runc-v2,
//! conmon, podman, the benchmark harness) finds what it expects:
//!
//! * its pid is the container's pid (`--pid-file`, `state`);
//! * its stdin, stdout and stderr are the container's, bridged to the
//!   guest process over vsock (or, with a terminal, a host pty whose
//!   master went to `--console-socket`);
//! * its exit status is the container's (code, or 128 + signal);
//! * signals sent to it go to the container's process.
//!
//! It owns the microVM: the VMM is its child and dies with it
//! (`PR_SET_PDEATHSIG`), and when the container's process ends the
//! monitor records the exit, shuts the guest down and exits.
//!
//! The pod's network: a spec whose network namespace has a `path` (CNI,
//! a pod's) names it; one without a path asks for a new namespace, which
//! the monitor makes for itself (`unshare`), so that `/proc/<its pid>/ns/net`
//! is the container's, as runc's container process's is. Then it runs the
//! `prestart` and `createRuntime` hooks (in the host's namespace; Docker's
//! moves the container's veth into the new one), and only then joins that
//! namespace's links to the VM. A new namespace still empty after the
//! hooks (only `lo`) gives the guest no NIC, as before. The VMM inherits
//! the namespace; it uses only its tap descriptors and Unix sockets. The
//! namespace, and the redirects on its links, go when the monitor and the
//! VMM end, so it is not recorded for `delete` to part.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use super::console::{send_console, take_controlling_terminal, window_size, ConsoleSocketError};
use super::hooks::{ContainerHooks, HookRunner, HookState, HooksFileError, RunHookError};
use super::sizing::vm_size;
use super::state::{process_start_time, ContainerDir, ContainerDirError, Status};
use super::stdio::{HostStdio, StdioBridge};
use crate::agent::{AgentCallError, AgentClient, AttachStdioError};
use crate::config::{HuskConfig, LoadConfigError};
use crate::oci::{guest_spec, Bundle, GuestLayout, LoadBundleError, SHARED_FS_TAG};
use crate::sandbox::{
    net_configs, wait_for_agent, JoinNetworkError, JoinedNetwork, SpawnOptions, SpawnVmError,
    VmProcess, WaitAgentError,
};
use crate::vmm::config::FsConfig;

/// Guest CID of a container's VM (any CID works: each vsock is private).
const GUEST_CID: u64 = 3;
/// How long a boot to the agent may take (the emulated test host is slow).
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the output may take to drain after the process ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest has to reset after Shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status when the VM died under the container (as if SIGKILLed).
const VM_DIED_STATUS: i32 = 128 + libc::SIGKILL;

/// Signals the monitor passes on to the container's process.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What the monitor is asked to run.
#[derive(Debug)]
pub struct MonitorRequest {
    /// The runtime root.
    pub root: PathBuf,
    /// The container id (its directory exists, state `creating`).
    pub id: String,
    /// The bundle.
    pub bundle: PathBuf,
    /// Where to send the pty master, for a terminal.
    pub console_socket: Option<PathBuf>,
    /// The husk configuration file, if named.
    pub config_path: Option<PathBuf>,
}

/// Why the container could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateContainerError {
    /// The husk configuration.
    #[error(transparent)]
    Config(#[from] LoadConfigError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] LoadBundleError),
    /// The container directory.
    #[error(transparent)]
    Dir(#[from] ContainerDirError),
    /// The spec asks for a terminal but no console socket was given.
    #[error("process.terminal is true: --console-socket is required")]
    NoConsoleSocket,
    /// The console socket.
    #[error(transparent)]
    Console(#[from] ConsoleSocketError),
    /// The monitor's own descriptors.
    #[error("monitor stdio")]
    Stdio(#[source] std::io::Error),
    /// The container's new network namespace could not be made.
    #[error("cannot make the container's network namespace")]
    NewNetns(#[source] std::io::Error),
    /// The container's saved hooks.
    #[error(transparent)]
    HooksFile(#[from] HooksFileError),
    /// A prestart or createRuntime hook failed.
    #[error(transparent)]
    Hook(#[from] RunHookError),
    /// The pod's network namespace could not be joined.
    #[error(transparent)]
    Network(#[from] JoinNetworkError),
    /// The microVM did not start.
    #[error("cannot start the microVM")]
    Spawn(#[from] SpawnVmError),
    /// The agent was not reached.
    #[error(transparent)]
    Agent(#[from] WaitAgentError),
    /// The agent refused the container.
    #[error(transparent)]
    Call(#[from] AgentCallError),
    /// A stdio stream could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachStdioError),
}

/// A created container, waiting for `start`.
struct Created {
    process: VmProcess,
    client: AgentClient,
    bridge: StdioBridge,
    tty: Option<OwnedFd>,
    /// Parted when the container ends.
    network: Option<JoinedNetwork>,
}

/// Boots the VM and creates the container in it.
fn create(req: &MonitorRequest, dir: &ContainerDir) -> Result<Created, CreateContainerError> {
    let (config, _) = HuskConfig::load(req.config_path.as_deref())?;
    let bundle = Bundle::load(&req.bundle)?;
    let hooks = ContainerHooks::load(&dir.dir)?;
    // Still one thread: the namespace is the whole process's.
    let host_netns = match bundle.network_namespace() {
        Some(_) => None,
        None => Some(enter_new_netns().map_err(CreateContainerError::NewNetns)?),
    };
    let (host_stdio, tty) = if bundle.terminal() {
        let socket = req
            .console_socket
            .as_ref()
            .ok_or(CreateContainerError::NoConsoleSocket)?;
        let slave = send_console(socket)?;
        if let Err(e) = take_controlling_terminal(&slave) {
            log::warn!("the console pty is not our controlling terminal ({e}): no resize events");
        }
        let kept = slave.try_clone().map_err(CreateContainerError::Stdio)?;
        (HostStdio::Tty(slave), Some(kept))
    } else {
        (
            HostStdio::from_own_fds().map_err(CreateContainerError::Stdio)?,
            None,
        )
    };

    let (vcpus, memory_mib) = vm_size(&config, &bundle.spec);
    let vm_dir = dir.vm_dir();
    let shared_dir = crate::sandbox::VmProcessPaths::new(&vm_dir).shared;
    let mut vm = config.vm_config(vcpus, memory_mib);
    vm.fs = Some(FsConfig {
        tag: SHARED_FS_TAG.to_string(),
        shared_dir,
    });
    let mut options = SpawnOptions {
        binds: GuestLayout::for_bundle(&bundle).binds,
        die_with_parent: true,
        ..SpawnOptions::default()
    };
    let me = std::process::id() as i32;
    let runner = match &host_netns {
        Some(host) => HookRunner::in_netns(host.as_fd()),
        None => HookRunner::new(),
    };
    let state = dir.read()?;
    runner.run_create_hooks(&hooks, &HookState::of(&state, Status::Creating, me))?;
    drop(host_netns);
    let mut network = match bundle.network_namespace() {
        Some(path) => Some(JoinedNetwork::join(path)?),
        None => Some(JoinedNetwork::join(&PathBuf::from(format!(
            "/proc/{me}/ns/net"
        )))?)
        .filter(|joined| !joined.network.interfaces.is_empty()),
    };
    if let Some(joined) = network.as_mut() {
        if bundle.network_namespace().is_some() {
            // Recorded first, so a `delete` after a crash parts it. (The
            // monitor's own namespace goes with it and the VMM.)
            let record = joined.record().clone();
            dir.update(|s| s.network = Some(record))?;
        }
        vm.net = net_configs(&joined.nics());
        options.taps = joined.take_tap_fds();
    }
    let husk_bin = std::env::current_exe().map_err(CreateContainerError::Stdio)?;
    let mut process = VmProcess::spawn_with(&husk_bin, vm, &vm_dir, GUEST_CID, &options)?;
    drop(options);
    let (client, version) = wait_for_agent(&mut process, AGENT_TIMEOUT)?;
    log::info!("container {}: agent {version} ready", dir.id);
    if let Some(joined) = &network {
        client.configure_network(&joined.network)?;
    }

    let spec = serde_json::to_vec(&guest_spec(&bundle)).expect("spec serializes");
    let guest_pid = client.create_container(&dir.id, spec, host_stdio.wanted())?;
    let bridge = StdioBridge::attach(&process.paths().vsock, &dir.id, "", host_stdio)?;
    log::info!("container {}: created, guest pid {guest_pid}", dir.id);
    Ok(Created {
        process,
        client,
        bridge,
        tty,
        network,
    })
}

/// Moves the monitor into a new network namespace, the container's;
/// returns the one it was in (the host's), for the hooks.
fn enter_new_netns() -> std::io::Result<OwnedFd> {
    let host = std::fs::File::open("/proc/self/ns/net")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(host.into())
}

/// Writes `line` to the creator's notify pipe and closes it.
pub(crate) fn notify(pipe: Option<std::fs::File>, line: &str) {
    if let Some(mut pipe) = pipe {
        let _ = pipe.write_all(line.as_bytes());
    }
}

/// Runs the monitor to the end; returns its exit status (the container's).
pub fn run(req: MonitorRequest, notify_pipe: Option<std::fs::File>) -> i32 {
    // Signals are taken by one thread; block them before any thread starts.
    let signals = match block_forwarded_signals() {
        Ok(s) => s,
        Err(e) => {
            notify(notify_pipe, &format!("error: cannot block signals: {e}\n"));
            return 1;
        }
    };
    let dir = match ContainerDir::open(&req.root, &req.id) {
        Ok(d) => d,
        Err(e) => {
            notify(notify_pipe, &format!("error: {e}\n"));
            return 1;
        }
    };
    let created = match create(&req, &dir) {
        Ok(c) => c,
        Err(e) => {
            log::error!("container {}: {e}", req.id);
            notify(notify_pipe, &format!("error: {}\n", crate::error_chain(&e)));
            return 1;
        }
    };
    let me = std::process::id() as i32;
    let recorded = dir.update(|s| {
        s.status = Status::Created;
        s.pid = me;
        s.pid_start_time = process_start_time(me).unwrap_or(0);
    });
    if let Err(e) = recorded {
        notify(notify_pipe, &format!("error: {e}\n"));
        return 1;
    }
    notify(notify_pipe, "ok\n");
    wait_and_end(created, &dir, signals)
}

/// Serves signals until the container's process ends, then records its
/// exit, shuts the VM down and returns the exit status.
fn wait_and_end(created: Created, dir: &ContainerDir, signals: SigSet) -> i32 {
    let Created {
        mut process,
        client,
        bridge,
        tty,
        network,
    } = created;
    let id = dir.id.clone();
    {
        let client = client.clone();
        let id = id.clone();
        std::thread::spawn(move || forward_signals(&client, &id, "", signals, tty));
    }
    let waited = client.wait_process(&id, "");
    bridge.finish(DRAIN_TIMEOUT);
    let (status, oom_killed) = match waited {
        Ok(w) => (w.exit_status, w.oom_killed),
        Err(e) => {
            log::error!(
                "container {id}: lost the agent while waiting ({e}); the VM died\n{}",
                process.logs()
            );
            (VM_DIED_STATUS, false)
        }
    };
    log::info!(
        "container {id}: exited with {status}{}",
        if oom_killed { " (OOM killed)" } else { "" }
    );
    let recorded = dir.update(|s| {
        s.status = Status::Stopped;
        s.exit_status = Some(status);
        s.oom_killed = oom_killed;
        s.host_cgroup.clone()
    });
    let host_cgroup = match recorded {
        Ok(cgroup) => cgroup,
        Err(e) => {
            log::warn!("container {id}: cannot record the exit: {e}");
            None
        }
    };
    if client.shutdown().is_ok() && process.wait_timeout(SHUTDOWN_TIMEOUT).is_none() {
        log::warn!("container {id}: the guest did not reset after shutdown; killing the VMM");
    }
    drop(process);
    drop(network);
    // With the VM gone, before our exit: a watcher of the host cgroup
    // sees the OOM, then the exit, as it would under runc.
    if let (true, Some(cgroup)) = (oom_killed, host_cgroup) {
        match cgroup.raise_oom() {
            Ok(()) => log::info!("container {id}: OOM kill raised in its host cgroup"),
            Err(e) => log::warn!(
                "container {id}: cannot raise its OOM in the host cgroup: {}",
                crate::error_chain(&e)
            ),
        }
    }
    status
}

/// Passes signals the monitor gets on to the container's init; SIGWINCH
/// becomes a resize of the guest pty.
pub(crate) fn forward_signals(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    signals: SigSet,
    tty: Option<OwnedFd>,
) {
    if let Some((rows, cols)) = tty.as_ref().and_then(window_size) {
        let _ = client.resize_tty(id, exec_id, rows, cols);
    }
    loop {
        let Ok(signal) = signals.wait() else { continue };
        if signal == Signal::SIGWINCH {
            if let Some((rows, cols)) = tty.as_ref().and_then(window_size) {
                let _ = client.resize_tty(id, exec_id, rows, cols);
            }
            continue;
        }
        if let Err(e) = client.signal_process(id, exec_id, signal as u32, false) {
            log::warn!("container {id}: cannot forward {signal}: {e}");
        }
    }
}

/// Blocks the signals a monitor forwards (and SIGWINCH) in the calling
/// thread, before any other thread starts, so only `forward_signals` takes them.
pub(crate) fn block_forwarded_signals() -> nix::Result<SigSet> {
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(*s);
    }
    signals.add(Signal::SIGWINCH);
    signals.thread_block()?;
    Ok(signals)
}
