//! `husk vmm`: one microVM per process, from a JSON config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use husk::vmm::{run_vm, VmConfig, VmExit};

/// Arguments of `husk vmm`.
#[derive(Debug, Args)]
pub struct VmmArgs {
    /// The VM config (JSON; see `husk::vmm::VmConfig`).
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
}

/// Runs the VM until the guest ends; the exit status tells how it ended.
pub fn run(args: VmmArgs) -> anyhow::Result<ExitCode> {
    let config = VmConfig::from_file(&args.config)
        .with_context(|| format!("VM config {:?}", args.config))?;
    let exit = run_vm(&config)?;
    if let VmExit::VcpuError(reason) = &exit {
        eprintln!("husk vmm: {reason}");
    } else if exit == VmExit::TripleFault {
        eprintln!("husk vmm: the guest triple-faulted");
    }
    Ok(super::exit_code(exit.exit_code()))
}
