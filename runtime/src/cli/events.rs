//! `husk events`: the container's resource usage, as runc's events JSON.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use husk::container::lifecycle::{self, LifecycleError};
use husk::container::{ContainerDir, Status};

use super::Globals;

/// Arguments of `husk events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Seconds between statistics.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// The container id.
    pub id: String,
}

fn stats_event(id: &str, s: &husk_protocol::agent::ContainerStatsResponse) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": { "usage": { "total": s.cpu_usage_usec * 1000, "user": s.cpu_user_usec * 1000, "kernel": s.cpu_system_usec * 1000 } },
            "memory": { "usage": { "usage": s.memory_usage_bytes, "limit": s.memory_limit_bytes }, "oom_kills": s.oom_kills },
            "pids": { "current": s.pids_current, "limit": s.pids_limit },
            "blkio": { "ioServiceBytesRecursive": [
                { "op": "Read", "value": s.io_read_bytes },
                { "op": "Write", "value": s.io_write_bytes }
            ] }
        }
    })
}

/// Prints statistics once (`--stats`) or every `--interval` seconds.
pub fn run(args: EventsArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dir = ContainerDir::open(&globals.root, &args.id)?;
    lifecycle::expect_status(
        &dir,
        "watch",
        &[Status::Created, Status::Running, Status::Paused],
        "",
    )?;
    let client = lifecycle::connect(&dir)?;
    loop {
        let stats = client
            .container_stats(&args.id)
            .map_err(|e| LifecycleError::Call(args.id.clone(), e))?;
        println!("{}", stats_event(&args.id, &stats));
        if args.stats {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}
