//! `husk-cri-e2e`: drives containerd's CRI plugin as kubelet does, with
//! pods on the husk runtime handler, and says step by step what it saw.
//! Exits non-zero with the failed step's reason.
//!
//! ```sh
//! husk-cri-e2e --socket /run/containerd/containerd.sock --image docker.io/library/busybox:latest \
//!     --log-dir /tmp/pod-logs pod oom
//! ```

mod client;
mod host;
mod oom;
mod pod;
mod specs;
mod steps;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use k8s_cri::v1::{ImageStatusRequest, VersionRequest};

use client::Cri;
use steps::{done, ensure, Steps};

/// A scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One pod, two containers sharing its microVM, exec, stats, update,
    /// logs, stop and remove.
    Pod,
    /// A container over its memory limit ends as OOMKilled.
    Oom,
}

#[derive(Debug, Parser)]
#[command(about = "Kubernetes CRI end-to-end scenarios against containerd, on the husk handler")]
struct Args {
    /// containerd's gRPC socket (where the CRI plugin listens).
    #[arg(long)]
    socket: PathBuf,
    /// The runtime handler pods ask for.
    #[arg(long, default_value = "husk")]
    handler: String,
    /// The container image (already in containerd's k8s.io namespace).
    #[arg(long)]
    image: String,
    /// Where pods' container logs go.
    #[arg(long)]
    log_dir: PathBuf,
    /// Seconds one CRI call (and a wait for a state) may take.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The scenarios, in order.
    #[arg(required = true)]
    scenarios: Vec<Scenario>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout);
    let cri = Cri::connect(&args.socket, timeout).await?;
    let version = cri
        .call(
            "Version",
            cri.rt().version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .await?;
    println!(
        "runtime {} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    let image = cri
        .call(
            "ImageStatus",
            cri.img().image_status(ImageStatusRequest {
                image: Some(k8s_cri::v1::ImageSpec {
                    image: args.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )
        .await?;
    ensure(image.image.is_some(), || {
        format!(
            "image {} is not in containerd's k8s.io namespace",
            args.image
        )
    })?;
    let steps = Steps {
        cri: &cri,
        handler: args.handler.clone(),
    };
    for scenario in &args.scenarios {
        let t = Instant::now();
        let name = format!("{scenario:?}").to_lowercase();
        println!("scenario {name}");
        match scenario {
            Scenario::Pod => pod::run(&steps, &args.image, &args.log_dir).await,
            Scenario::Oom => oom::run(&steps, &args.image, &args.log_dir).await,
        }
        .with_context(|| format!("scenario {name} failed"))?;
        done(&format!("scenario {name}"), t);
    }
    println!("all {} scenarios passed", args.scenarios.len());
    Ok(())
}
