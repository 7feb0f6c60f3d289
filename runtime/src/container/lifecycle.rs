//! The lifecycle verbs of the runtime, as plain functions: create (which
//! starts the monitor), start, kill, delete. The CLI is a thin layer over
//! them.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::hooks::{ContainerHooks, HookRunner, HookSpecError, HookState, HooksFileError};
use super::host_cgroup::{join_in_child, HostCgroup, MakeHostCgroupError, RemoveHostCgroupError};
use super::state::{
    now_rfc3339, process_alive, ContainerDir, ContainerDirError, ContainerState, Status,
    OCI_VERSION,
};
use crate::agent::{AgentCallError, AgentClient, ConnectAgentError};
use crate::oci::{Bundle, LoadBundleError};

/// How long `delete --force` waits for the monitor to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a lifecycle verb failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The container directory or state.
    #[error(transparent)]
    Dir(#[from] ContainerDirError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] LoadBundleError),
    /// The spec's hooks cannot be run.
    #[error(transparent)]
    Hooks(#[from] HookSpecError),
    /// The container's saved hooks.
    #[error(transparent)]
    HooksFile(#[from] HooksFileError),
    /// The verb does not apply in this state.
    #[error("container {id:?} is {status}: cannot {verb} it{hint}")]
    WrongState {
        /// The container.
        id: String,
        /// Its status.
        status: Status,
        /// The verb.
        verb: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The monitor could not be started.
    #[error("cannot start the container monitor")]
    SpawnMonitor(#[source] std::io::Error),
    /// The monitor reported that creation failed.
    #[error("{0}")]
    CreateFailed(String),
    /// The agent of the container's VM was not reached.
    #[error("container {0:?}: cannot reach its agent")]
    Connect(String, #[source] ConnectAgentError),
    /// An agent call failed.
    #[error("container {0:?}")]
    Call(String, #[source] AgentCallError),
    /// The pid file could not be written.
    #[error("cannot write the pid file {0:?}")]
    PidFile(PathBuf, #[source] std::io::Error),
    /// The monitor did not die.
    #[error("container {0:?}: its monitor (pid {1}) did not end")]
    Unkillable(String, i32),
    /// The container's host cgroup could not be made.
    #[error(transparent)]
    MakeCgroup(#[from] MakeHostCgroupError),
    /// The container's host cgroup could not be removed.
    #[error(transparent)]
    RemoveCgroup(#[from] RemoveHostCgroupError),
}

/// What `create` needs.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The runtime root.
    pub root: PathBuf,
    /// The container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to send a terminal's pty master.
    pub console_socket: Option<PathBuf>,
    /// Where to write the container's (monitor's) pid.
    pub pid_file: Option<PathBuf>,
    /// The husk configuration file, if named.
    pub config_path: Option<PathBuf>,
    /// husk's log file and format flags, passed to the monitor.
    pub log_args: Vec<String>,
    /// `--systemd-cgroup`: `linux.cgroupsPath` is systemd's
    /// `slice:prefix:name`, and no host cgroup is made.
    pub systemd_cgroup: bool,
}

/// A created container whose monitor is our child.
#[derive(Debug)]
pub struct CreatedContainer {
    /// The monitor process.
    pub monitor: Child,
    /// The container's directory.
    pub dir: ContainerDir,
}

/// Creates a container: checks the bundle, makes its directory and its
/// host cgroup, starts the monitor (which boots the VM and creates the
/// container in it) in that cgroup with our stdio as the container's, and
/// waits until it reports. On failure nothing is left.
pub fn create(opts: &CreateOptions) -> Result<CreatedContainer, LifecycleError> {
    crate::oci::validate_container_id(&opts.id).map_err(ContainerDirError::from)?;
    let bundle = Bundle::load(&opts.bundle)?;
    let hooks = ContainerHooks::from_spec(&bundle.spec)?;
    let cgroups_path = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .filter(|_| !opts.systemd_cgroup);
    let dir = ContainerDir::create(&opts.root, &opts.id)?;
    let made = cgroups_path.map(|p| HostCgroup::make(&p.to_string_lossy()));
    let cgroup = match made.transpose() {
        Ok(cgroup) => cgroup,
        Err(e) => {
            let _ = dir.remove();
            return Err(e.into());
        }
    };
    let result = hooks
        .save(&dir.dir)
        .map_err(LifecycleError::from)
        .and_then(|()| start_monitor(opts, &bundle, &dir, cgroup.as_ref()));
    if result.is_err() {
        if let Some(cgroup) = &cgroup {
            cgroup.remove_quietly();
        }
        let _ = dir.remove();
    }
    result
}

fn start_monitor(
    opts: &CreateOptions,
    bundle: &Bundle,
    dir: &ContainerDir,
    cgroup: Option<&HostCgroup>,
) -> Result<CreatedContainer, LifecycleError> {
    dir.write(&ContainerState {
        oci_version: OCI_VERSION.into(),
        id: opts.id.clone(),
        status: Status::Creating,
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: now_rfc3339(),
        annotations: bundle
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<HashMap<_, _>>(),
        exit_status: None,
        oom_killed: false,
        network: None,
        host_cgroup: cgroup.cloned(),
    })?;
    let exe = std::env::current_exe().map_err(LifecycleError::SpawnMonitor)?;
    let mut command = Command::new(exe);
    command.arg("--root").arg(&opts.root).args(&opts.log_args);
    if let Some(config) = &opts.config_path {
        command.arg("--config").arg(config);
    }
    command
        .arg("monitor")
        .arg("--notify-fd")
        .arg("3")
        .arg("--bundle")
        .arg(&bundle.dir);
    if let Some(socket) = &opts.console_socket {
        command.arg("--console-socket").arg(socket);
    }
    command.arg(&opts.id);
    if bundle.terminal() {
        // The container's stdio is the pty; as runc's container does not,
        // the monitor must not hold ours (containerd's runc shim reads our
        // output until every holder closes it).
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // The monitor starts in the container's host cgroup, so the pid the
    // caller watches is there from the first (see host_cgroup).
    let cgroup_procs = cgroup
        .map(HostCgroup::procs_files)
        .transpose()
        .map_err(LifecycleError::SpawnMonitor)?
        .unwrap_or_default();
    if !cgroup_procs.is_empty() {
        let procs_fds: Vec<i32> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure only writes to descriptors opened above.
        unsafe { command.pre_exec(move || join_in_child(&procs_fds)) };
    }
    let (monitor, report) = spawn_reporting(command).map_err(LifecycleError::SpawnMonitor)?;
    drop(cgroup_procs);
    let monitor = finish_report(monitor, &report, opts.pid_file.as_deref(), &opts.id)?;
    Ok(CreatedContainer {
        monitor,
        dir: dir.clone(),
    })
}

/// Starts `command` (a `husk` that reports `ok` or `error: …` on fd 3 and
/// then stays) in its own session, with our stdio, and reads its report.
pub fn spawn_reporting(mut command: Command) -> std::io::Result<(Child, String)> {
    // Close-on-exec: only the dup at fd 3 reaches the child, so its close
    // is the end of the report.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let notify_fd = write_end.as_raw_fd();
    let setup = move || monitor_child_setup(notify_fd);
    // SAFETY: the closure makes only raw system calls (setsid, dup2).
    unsafe { command.pre_exec(setup) };
    let child = command.spawn()?;
    drop(write_end);
    Ok((child, read_report(read_end)))
}

/// The child (its pid written to `pid_file`) if it reported `ok`, else
/// the error it reported (the child killed and reaped).
pub fn finish_report(
    mut child: Child,
    report: &str,
    pid_file: Option<&Path>,
    id: &str,
) -> Result<Child, LifecycleError> {
    if report.trim() == "ok" {
        if let Some(pid_file) = pid_file {
            write_pid_file(pid_file, child.id())?;
        }
        return Ok(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    let why = report
        .trim()
        .strip_prefix("error: ")
        .unwrap_or(report.trim());
    let why = if why.is_empty() {
        "the process standing for it ended without a report (see its log)".to_string()
    } else {
        why.to_string()
    };
    Err(LifecycleError::CreateFailed(format!(
        "container {id:?}: {why}"
    )))
}

/// In the monitor child: its own session (it outlives `create`, and may
/// take a terminal), and the notify pipe as fd 3.
fn monitor_child_setup(notify_fd: i32) -> std::io::Result<()> {
    // SAFETY: setsid and dup2 take no pointers.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(notify_fd, 3) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn read_report(read_end: OwnedFd) -> String {
    let mut report = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut report);
    report
}

/// Writes a pid file atomically, as runc does.
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), LifecycleError> {
    let tmp = path.with_extension("husk-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| LifecycleError::PidFile(path.to_path_buf(), e))
}

/// A client of a live container's agent.
pub fn connect(dir: &ContainerDir) -> Result<AgentClient, LifecycleError> {
    let stream = crate::agent::connect_hybrid_vsock(
        &dir.vsock_path(),
        husk_protocol::AGENT_VSOCK_PORT,
        Duration::from_secs(10),
    )
    .map_err(|e| LifecycleError::Connect(dir.id.clone(), e))?;
    AgentClient::new(stream).map_err(|e| LifecycleError::Call(dir.id.clone(), e))
}

/// The state, required to be one of `allowed`.
pub fn expect_status(
    dir: &ContainerDir,
    verb: &'static str,
    allowed: &[Status],
    hint: &'static str,
) -> Result<ContainerState, LifecycleError> {
    let state = dir.read()?;
    if allowed.contains(&state.status) {
        Ok(state)
    } else {
        Err(LifecycleError::WrongState {
            id: dir.id.clone(),
            status: state.status,
            verb,
            hint,
        })
    }
}

/// Starts a created container's process.
pub fn start(root: &Path, id: &str) -> Result<(), LifecycleError> {
    let dir = ContainerDir::open(root, id)?;
    expect_status(&dir, "start", &[Status::Created], "")?;
    let client = connect(&dir)?;
    client
        .start_container(id)
        .map_err(|e| LifecycleError::Call(id.to_string(), e))?;
    let state = dir.update(|s| {
        if s.status == Status::Created {
            s.status = Status::Running;
        }
        s.clone()
    })?;
    let hooks = ContainerHooks::load(&dir.dir)?;
    HookRunner::new()
        .run_poststart_hooks(&hooks, &HookState::of(&state, Status::Running, state.pid));
    Ok(())
}

/// Sends a signal to the container's process (or all of its processes).
pub fn kill(root: &Path, id: &str, signal: u32, all: bool) -> Result<(), LifecycleError> {
    let dir = ContainerDir::open(root, id)?;
    expect_status(
        &dir,
        "kill",
        &[Status::Created, Status::Running, Status::Paused],
        " (it is not running)",
    )?;
    let client = connect(&dir)?;
    client
        .signal_process(id, "", signal, all)
        .map_err(|e| LifecycleError::Call(id.to_string(), e))
}

/// Deletes a container: a stopped one at once; a created one (never
/// started) or, with `force`, a running one after killing its monitor
/// (which takes the VM down with it).
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), LifecycleError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.read()?;
    let live = matches!(
        state.status,
        Status::Creating | Status::Created | Status::Running | Status::Paused
    );
    if live && !force && state.status != Status::Created {
        return Err(LifecycleError::WrongState {
            id: id.to_string(),
            status: state.status,
            verb: "delete",
            hint: " (stop it first or use --force)",
        });
    }
    if live && state.pid > 0 {
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(state.pid, libc::SIGKILL) };
        let deadline = Instant::now() + KILL_TIMEOUT;
        while process_alive(state.pid, state.pid_start_time) {
            if Instant::now() > deadline {
                return Err(LifecycleError::Unkillable(id.to_string(), state.pid));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    wait_for_vmm_exit(&dir);
    if let Some(cgroup) = &state.host_cgroup {
        cgroup.remove()?;
    }
    // The monitor parts the network when it ends by itself; after a crash
    // (or a forced delete) the redirects are still on the pod's links.
    if let Some(network) = &state.network {
        network.part();
    }
    match ContainerHooks::load(&dir.dir) {
        Ok(hooks) => {
            HookRunner::new().run_poststop_hooks(&hooks, &HookState::of(&state, Status::Stopped, 0))
        }
        Err(e) => log::warn!(
            "container {id:?}: poststop hooks not run: {}",
            crate::error_chain(&e)
        ),
    }
    dir.remove()?;
    Ok(())
}

/// The VMM dies with its monitor (PR_SET_PDEATHSIG); wait until its
/// socket owner is gone so the state directory is not removed under it.
fn wait_for_vmm_exit(dir: &ContainerDir) {
    let deadline = Instant::now() + KILL_TIMEOUT;
    let needle = dir.vm_dir().join("vm.json");
    let needle = needle.to_string_lossy();
    while Instant::now() < deadline && vmm_running(&needle) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn vmm_running(config_path: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(config_path))
                .unwrap_or(false)
        })
}
