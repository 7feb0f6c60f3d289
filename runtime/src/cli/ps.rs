//! `husk ps`: the container's processes (guest pids).

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle;
use husk::container::{ContainerDir, Status};

use super::Globals;

/// Arguments of `husk ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// `table` or `json` (a list of pids, as containerd's runc shim expects).
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// The container id.
    pub id: String,
}

/// Lists them.
pub fn run(args: PsArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dir = ContainerDir::open(&globals.root, &args.id)?;
    lifecycle::expect_status(
        &dir,
        "list the processes of",
        &[Status::Created, Status::Running, Status::Paused],
        "",
    )?;
    let processes = lifecycle::connect(&dir)?
        .list_processes(&args.id)
        .map_err(|e| lifecycle::LifecycleError::Call(args.id.clone(), e))?
        .processes;
    match args.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string(&processes.iter().map(|p| p.pid).collect::<Vec<_>>())?
        ),
        "table" => {
            println!("{:>8} CMD", "PID");
            for p in &processes {
                println!("{:>8} {}", p.pid, p.args.join(" "));
            }
        }
        other => anyhow::bail!("--format {other:?}: expected table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
