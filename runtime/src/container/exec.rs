//! Another process in a running container (`husk exec`). The `husk exec`
//! process stands for it as the monitor stands for the container: its
//! stdio is the process's, its exit status the process's, and signals to
//! it are forwarded. With `--detach`, `husk exec` starts a copy of itself
//! in its own session for that and returns once the process runs.

use std::fs::File;
use std::path::PathBuf;

use super::console::{send_console, take_controlling_terminal, ConsoleSocketError};
use super::lifecycle::{connect, expect_status, LifecycleError};
use super::monitor::{block_forwarded_signals, forward_signals, notify};
use super::state::{ContainerDir, Status};
use super::stdio::{HostStdio, StdioBridge};
use crate::agent::{AgentCallError, AttachStdioError};

/// How long the output may take to drain after the process ended.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What to run.
#[derive(Debug)]
pub struct ExecRequest {
    /// The runtime root.
    pub root: PathBuf,
    /// The container.
    pub id: String,
    /// The new process's id within the container.
    pub exec_id: String,
    /// The OCI `process` object, as JSON.
    pub process_json: Vec<u8>,
    /// Whether it has a terminal.
    pub terminal: bool,
    /// Where to send the pty master, with a terminal.
    pub console_socket: Option<PathBuf>,
}

/// Why the process could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container is not there or not running.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The container directory.
    #[error(transparent)]
    Dir(#[from] super::state::ContainerDirError),
    /// A terminal was asked for without a console socket.
    #[error("process.terminal is true: --console-socket is required")]
    NoConsoleSocket,
    /// The console socket.
    #[error(transparent)]
    Console(#[from] ConsoleSocketError),
    /// Our own descriptors.
    #[error("exec stdio")]
    Stdio(#[source] std::io::Error),
    /// A stream could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachStdioError),
    /// The agent refused it.
    #[error(transparent)]
    Call(#[from] AgentCallError),
    /// Signals could not be set up.
    #[error("cannot block signals")]
    Signals(#[source] nix::Error),
}

/// Runs the process to its end; returns its exit status. `ready` gets
/// `ok` (or the error) once the process runs.
pub fn run(req: &ExecRequest, ready: Option<File>) -> Result<i32, ExecError> {
    let signals = block_forwarded_signals().map_err(ExecError::Signals)?;
    let started = start(req);
    let (client, bridge, tty) = match started {
        Ok(s) => s,
        Err(e) => {
            notify(ready, &format!("error: {}\n", crate::error_chain(&e)));
            return Err(e);
        }
    };
    notify(ready, "ok\n");
    {
        let client = client.clone();
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        std::thread::spawn(move || forward_signals(&client, &id, &exec_id, signals, tty));
    }
    let waited = client.wait_process(&req.id, &req.exec_id)?;
    bridge.finish(DRAIN_TIMEOUT);
    Ok(waited.exit_status)
}

type Started = (
    crate::agent::AgentClient,
    StdioBridge,
    Option<std::os::fd::OwnedFd>,
);

fn start(req: &ExecRequest) -> Result<Started, ExecError> {
    let dir = ContainerDir::open(&req.root, &req.id)?;
    expect_status(&dir, "exec in", &[Status::Running], " (start it first)")?;
    let client = connect(&dir)?;
    let (host, tty) = if req.terminal {
        let socket = req
            .console_socket
            .as_ref()
            .ok_or(ExecError::NoConsoleSocket)?;
        let slave = send_console(socket)?;
        if let Err(e) = take_controlling_terminal(&slave) {
            log::debug!("the exec pty is not our controlling terminal ({e}): no resize events");
        }
        let kept = slave.try_clone().map_err(ExecError::Stdio)?;
        (HostStdio::Tty(slave), Some(kept))
    } else {
        (HostStdio::from_own_fds().map_err(ExecError::Stdio)?, None)
    };
    let wanted = host.wanted();
    // The agent holds streams that arrive before the process exists, and
    // ExecProcess waits for them: attach first, then exec.
    let bridge = StdioBridge::attach(&dir.vsock_path(), &req.id, &req.exec_id, host)?;
    client.exec_process(&req.id, &req.exec_id, req.process_json.clone(), wanted)?;
    Ok((client, bridge, tty))
}
