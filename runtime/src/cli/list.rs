//! `husk list`: the containers under the runtime root.

use std::process::ExitCode;

use clap::Args;
use husk::container::ContainerDir;

use super::Globals;

/// Arguments of `husk list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `table` or `json`.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Only the ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Lists them.
pub fn run(args: ListArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let states: Vec<_> = ContainerDir::list(&globals.root)
        .iter()
        .filter_map(|d| d.read().ok())
        .collect();
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format.as_str() {
        "json" => {
            let all: Vec<_> = states.iter().map(super::state::state_json).collect();
            println!("{}", serde_json::to_string(&all)?);
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<30} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<30} root",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created
                );
            }
        }
        other => anyhow::bail!("--format {other:?}: expected table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
