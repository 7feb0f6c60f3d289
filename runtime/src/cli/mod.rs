//! The `husk` commands, one file per verb.

pub mod boot;
pub mod check;
pub mod logging;
pub mod vmm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// husk: containers in KVM microVMs.
#[derive(Debug, Parser)]
#[command(name = "husk", version, about)]
pub struct Cli {
    /// Log debug messages on stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// husk configuration file (default $HUSK_CONFIG, then /etc/husk/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this host can run husk microVMs, then boot one.
    Check(check::CheckArgs),
    /// Boot a kernel in the foreground until the guest resets.
    Boot(boot::BootArgs),
    /// Run one microVM from a JSON config (started by husk itself).
    #[command(hide = true)]
    Vmm(vmm::VmmArgs),
}

/// Runs the command line's verb.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(args, cli.config.as_deref()),
        Command::Boot(args) => boot::run(args),
        Command::Vmm(args) => vmm::run(args),
    }
}

/// The exit code for a VMM exit status (0–255).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
