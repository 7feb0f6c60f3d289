//! `husk exec`: run another process in a running container.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use husk::container::exec::{self, ExecRequest};
use husk::container::lifecycle;
use husk::container::ContainerDir;
use oci_spec::runtime::{Process, Spec};

use super::Globals;

/// Arguments of `husk exec` (runc's).
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The process as an OCI `process` JSON file (instead of ARGS).
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Give the process a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Return once the process runs; a `husk exec` in its own session stands for it.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// File to write the pid of what stands for the process.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Extra environment (KEY=VALUE), repeatable.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Not supported in a VM: descriptors cannot cross into the guest.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Report `ok` on this descriptor once the process runs (used by --detach).
    #[arg(long, hide = true)]
    pub notify_fd: Option<i32>,
    /// Id of the process within the container (default: generated).
    #[arg(long, hide = true)]
    pub exec_id: Option<String>,
    /// The container id.
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The process to run: `--process`, or the container's own process with
/// ARGS and the flags applied, as runc builds it.
fn process_json(args: &ExecArgs, globals: &Globals) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &args.process {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read --process {path:?}"))?;
        let process: Process = serde_json::from_slice(&text)
            .with_context(|| format!("--process {path:?} is not an OCI process"))?;
        return Ok(serde_json::to_vec(&process)?);
    }
    if args.args.is_empty() {
        anyhow::bail!("give the command to run after the container id, or --process FILE");
    }
    let state = ContainerDir::open(&globals.root, &args.id)?.read()?;
    let spec = Spec::load(state.bundle.join("config.json"))
        .with_context(|| format!("cannot read the spec of container {:?}", args.id))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.args.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.into());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        process.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let mut u = process.user().clone();
        u.set_uid(
            uid.parse()
                .with_context(|| format!("--user {user:?}: UID[:GID] expected"))?,
        );
        u.set_gid(
            gid.parse()
                .with_context(|| format!("--user {user:?}: UID[:GID] expected"))?,
        );
        process.set_user(u);
    }
    Ok(serde_json::to_vec(&process)?)
}

/// Runs it, in the foreground or detached.
pub fn run(args: ExecArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    if args.preserve_fds > 0 {
        anyhow::bail!(
            "--preserve-fds {}: descriptors cannot be passed into a microVM",
            args.preserve_fds
        );
    }
    let process_json = process_json(&args, globals)?;
    let terminal = serde_json::from_slice::<Process>(&process_json)?
        .terminal()
        .unwrap_or(false);
    if args.detach {
        return detach(&args, globals, terminal);
    }
    let ready = args.notify_fd.map(|fd| {
        // SAFETY: the detaching `husk exec` hands us this pipe's write end
        // as `fd`; nothing else here uses it.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: F_SETFD on a descriptor we own: children must not hold it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        file
    });
    let request = ExecRequest {
        root: globals.root.clone(),
        id: args.id.clone(),
        exec_id: args.exec_id.clone().unwrap_or_else(new_exec_id),
        process_json,
        terminal,
        console_socket: args.console_socket.clone(),
    };
    let status = exec::run(&request, ready)?;
    Ok(super::exit_code(status))
}

/// A fresh exec id.
fn new_exec_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("exec-{}-{nanos}", std::process::id())
}

/// Starts a foreground `husk exec` of the same process in its own
/// session and returns once the process runs. With a terminal, the
/// process's stdio is the pty, and the child holds none of ours.
fn detach(args: &ExecArgs, globals: &Globals, terminal: bool) -> anyhow::Result<ExitCode> {
    let mut command = Command::new(std::env::current_exe()?);
    if terminal {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    command
        .arg("--root")
        .arg(&globals.root)
        .args(globals.log_args());
    if let Some(config) = &globals.config {
        command.arg("--config").arg(config);
    }
    command
        .args(["exec", "--notify-fd", "3", "--exec-id"])
        .arg(new_exec_id());
    if let Some(p) = &args.process {
        command.arg("--process").arg(p);
    }
    if args.tty {
        command.arg("--tty");
    }
    if let Some(s) = &args.console_socket {
        command.arg("--console-socket").arg(s);
    }
    if let Some(cwd) = &args.cwd {
        command.arg("--cwd").arg(cwd);
    }
    for e in &args.env {
        command.arg("--env").arg(e);
    }
    if let Some(u) = &args.user {
        command.arg("--user").arg(u);
    }
    command.arg(&args.id).args(&args.args);
    let (child, report) = lifecycle::spawn_reporting(command)?;
    lifecycle::finish_report(child, &report, args.pid_file.as_deref(), &args.id)?;
    Ok(ExitCode::SUCCESS)
}
