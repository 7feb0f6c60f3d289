//! `husk create`: boot the container's microVM and create the container
//! in it; its process waits for `husk start`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle::{self, CreateOptions};

use super::Globals;

/// Arguments of `husk create` (runc's).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility; the guest always uses pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility; keyrings are the guest's.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Not supported in a VM: descriptors cannot cross into the guest.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

/// The options `create` and `run` share.
pub fn options(args: &CreateArgs, globals: &Globals) -> anyhow::Result<CreateOptions> {
    if args.preserve_fds > 0 {
        anyhow::bail!(
            "--preserve-fds {}: descriptors cannot be passed into a microVM",
            args.preserve_fds
        );
    }
    if args.no_pivot || args.no_new_keyring {
        log::debug!("--no-pivot/--no-new-keyring accepted and ignored: they concern the guest");
    }
    Ok(CreateOptions {
        root: globals.root.clone(),
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        config_path: globals.config.clone(),
        log_args: globals.log_args(),
        systemd_cgroup: globals.systemd_cgroup,
    })
}

/// Creates the container and leaves its monitor running.
pub fn run(args: CreateArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let created = lifecycle::create(&options(&args, globals)?)?;
    // The monitor outlives us: our parent (a subreaper such as a shim or
    // conmon) or init inherits it.
    drop(created.monitor);
    Ok(ExitCode::SUCCESS)
}
