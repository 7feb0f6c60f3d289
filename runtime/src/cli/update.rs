//! `husk update`: change a running container's resources (cgroup v2 in the
//! guest), as `runc update --resources FILE|-` does.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use husk::container::lifecycle::{self, LifecycleError};
use husk::container::{ContainerDir, Status};
use oci_spec::runtime::LinuxResources;

use super::Globals;

/// Arguments of `husk update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// An OCI `linux.resources` JSON file, or `-` for stdin.
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    /// CPU quota in microseconds per period.
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// Most processes the container may have.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// The container id.
    pub id: String,
}

/// The resources to apply: the file, else the flags.
fn resources(args: &UpdateArgs) -> anyhow::Result<LinuxResources> {
    if let Some(path) = &args.resources {
        let mut text = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin()
                .read_to_end(&mut text)
                .context("cannot read --resources from stdin")?;
        } else {
            text =
                std::fs::read(path).with_context(|| format!("cannot read --resources {path:?}"))?;
        }
        return serde_json::from_slice(&text)
            .with_context(|| format!("--resources {path:?} is not OCI linux.resources"));
    }
    let mut json = serde_json::json!({});
    if let Some(m) = args.memory {
        json["memory"] = serde_json::json!({ "limit": m });
    }
    if args.cpu_quota.is_some() || args.cpu_period.is_some() {
        json["cpu"] = serde_json::json!({ "quota": args.cpu_quota, "period": args.cpu_period });
    }
    if let Some(p) = args.pids_limit {
        json["pids"] = serde_json::json!({ "limit": p });
    }
    if json.as_object().is_some_and(|o| o.is_empty()) {
        anyhow::bail!("nothing to update: give --resources or a limit flag");
    }
    Ok(serde_json::from_value(json)?)
}

/// Applies them.
pub fn run(args: UpdateArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let resources = resources(&args)?;
    let dir = ContainerDir::open(&globals.root, &args.id)?;
    lifecycle::expect_status(
        &dir,
        "update",
        &[Status::Created, Status::Running, Status::Paused],
        "",
    )?;
    lifecycle::connect(&dir)?
        .update_container(&args.id, serde_json::to_vec(&resources)?)
        .map_err(|e| LifecycleError::Call(args.id.clone(), e))?;
    Ok(ExitCode::SUCCESS)
}
