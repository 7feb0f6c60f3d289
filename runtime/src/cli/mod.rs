//! The `husk` commands, one file per verb: runc's command set (so that
//! anything that drives runc drives husk), plus `check` and `boot`.

pub mod boot;
pub mod check;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod logging;
pub mod monitor;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;
pub mod vmm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logging::LogFormat;

/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/husk";

/// husk: containers in KVM microVMs.
#[derive(Debug, Parser)]
#[command(name = "husk", version, about)]
pub struct Cli {
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// husk configuration file (default $HUSK_CONFIG, then /etc/husk/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Root directory of container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log to this file instead of stderr.
    #[arg(long, global = true, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// linux.cgroupsPath is systemd's slice:prefix:name; husk then makes
    /// no host cgroup for the monitor (the container's limits are the guest's).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long, global = true, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility (no checkpointing in husk).
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every verb sees.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--root`.
    pub root: PathBuf,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--debug`.
    pub debug: bool,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
}

impl Globals {
    /// The logging flags, to pass on to a child `husk`.
    pub fn log_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.debug {
            args.push("--debug".into());
        }
        args
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this host can run husk microVMs, then boot one.
    Check(check::CheckArgs),
    /// Boot a kernel in the foreground until the guest resets.
    Boot(boot::BootArgs),
    /// Create a container (its process waits for start).
    Create(create::CreateArgs),
    /// Start a created container.
    Start(start::StartArgs),
    /// Print a container's state.
    State(state::StateArgs),
    /// Send a signal to a container's process.
    Kill(kill::KillArgs),
    /// Delete a container.
    Delete(delete::DeleteArgs),
    /// Run another process in a running container.
    Exec(exec::ExecArgs),
    /// Create and start a container.
    Run(run::RunArgs),
    /// List containers.
    List(list::ListArgs),
    /// List a container's processes.
    Ps(ps::PsArgs),
    /// Freeze a container.
    Pause(pause::PauseArgs),
    /// Thaw a container.
    Resume(pause::PauseArgs),
    /// A container's resource usage.
    Events(events::EventsArgs),
    /// Change a container's resources.
    Update(update::UpdateArgs),
    /// Write a default config.json.
    Spec(spec::SpecArgs),
    /// Print the runtime's features.
    Features,
    /// Run one microVM from a JSON config (started by husk itself).
    #[command(hide = true)]
    Vmm(vmm::VmmArgs),
    /// The process that stands for one container (started by create).
    #[command(hide = true)]
    Monitor(monitor::MonitorArgs),
}

impl Cli {
    /// The global options.
    pub fn globals(&self) -> Globals {
        Globals {
            root: self.root.clone(),
            config: self.config.clone(),
            debug: self.debug,
            systemd_cgroup: self.systemd_cgroup,
        }
    }

    /// Installs the logger this verb wants: the monitor's stderr is the
    /// container's, so it logs to its own file.
    pub fn init_logging(&self) {
        match &self.command {
            Command::Monitor(m) => {
                let log = self.root.join(&m.id).join("monitor.log");
                logging::init(true, Some(&log), LogFormat::Text);
            }
            _ => logging::init(self.debug, self.log.as_deref(), self.log_format),
        }
        if self.rootless.is_some() || self.criu.is_some() {
            log::debug!("--rootless/--criu accepted and ignored");
        }
    }
}

/// Runs the command line's verb.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.globals();
    match cli.command {
        Command::Check(args) => check::run(args, g.config.as_deref()),
        Command::Boot(args) => boot::run(args),
        Command::Create(args) => create::run(args, &g),
        Command::Start(args) => start::run(args, &g),
        Command::State(args) => state::run(args, &g),
        Command::Kill(args) => kill::run(args, &g),
        Command::Delete(args) => delete::run(args, &g),
        Command::Exec(args) => exec::run(args, &g),
        Command::Run(args) => run::run(args, &g),
        Command::List(args) => list::run(args, &g),
        Command::Ps(args) => ps::run(args, &g),
        Command::Pause(args) => pause::pause(args, &g),
        Command::Resume(args) => pause::resume(args, &g),
        Command::Events(args) => events::run(args, &g),
        Command::Update(args) => update::run(args, &g),
        Command::Spec(args) => spec::run(args),
        Command::Features => features::run(),
        Command::Vmm(args) => vmm::run(args),
        Command::Monitor(args) => monitor::run(args, &g),
    }
}

/// The exit code for a status (0–255).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A child's exit status in the shell convention (code, or 128 + signal).
pub fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
