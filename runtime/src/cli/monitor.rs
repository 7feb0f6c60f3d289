//! `husk monitor` (hidden): the process that stands for one container,
//! started by `husk create`. See `husk::container::monitor`.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use husk::container::monitor::{self, MonitorRequest};

use super::Globals;

/// Arguments of `husk monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The bundle.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Where to send a terminal's pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Descriptor to report `ok` or `error: …` on, then close.
    #[arg(long)]
    pub notify_fd: Option<i32>,
    /// The container id.
    pub id: String,
}

/// Runs the monitor until the container's process ends.
pub fn run(args: MonitorArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let notify = args.notify_fd.map(|fd| {
        // SAFETY: `husk create` hands us this pipe's write end as `fd` and
        // nothing else in this process uses it.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: F_SETFD on a descriptor we own: children must not hold it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        file
    });
    let request = MonitorRequest {
        root: globals.root.clone(),
        id: args.id,
        bundle: args.bundle,
        console_socket: args.console_socket,
        config_path: globals.config.clone(),
    };
    Ok(super::exit_code(monitor::run(request, notify)))
}
