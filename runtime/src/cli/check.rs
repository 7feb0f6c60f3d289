//! `husk check`: can this host run husk microVMs? Each line says `ok` or
//! `FAIL: <why and how to fix>`; then a real microVM is booted to the agent
//! and shut down. Exit 0 only if every line passed; nothing is left behind.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use husk::config::HuskConfig;

mod boot_probe;
mod host_probes;

/// Arguments of `husk check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Seconds to wait for the agent of the test microVM.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The result of one check: `Ok(detail)` or `Err(why and how to fix)`.
pub type Probe = Result<String, String>;

fn report(name: &str, probe: &Probe) -> bool {
    match probe {
        Ok(detail) if detail.is_empty() => println!("{name}: ok"),
        Ok(detail) => println!("{name}: ok ({detail})"),
        Err(why) => println!("{name}: FAIL: {why}"),
    }
    probe.is_ok()
}

/// Runs every check, then the boot.
pub fn run(args: CheckArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, loaded_from) = HuskConfig::load(config_path)?;
    let mut all_ok = true;
    let kvm = host_probes::kvm();
    let linux = host_probes::linux_guests();
    all_ok &= report("kvm", &kvm);
    all_ok &= report("linux guests", &linux);
    all_ok &= report("tun", &host_probes::tun());
    all_ok &= report("network namespaces", &host_probes::network_namespaces());
    all_ok &= report("cgroups", &host_probes::cgroups());
    let source = match &loaded_from {
        Some(path) => format!("from {path:?}"),
        None => "built-in default; set it in /etc/husk/config.toml".into(),
    };
    let kernel = host_probes::guest_file(
        &config.kernel,
        b"\x7fELF",
        "scripts/setup.sh builds it",
        &source,
    );
    let initramfs = host_probes::guest_file(
        &config.initramfs,
        b"07070",
        "scripts/setup.sh builds it",
        &source,
    );
    all_ok &= report("kernel", &kernel);
    all_ok &= report("initramfs", &initramfs);

    let boot = if kvm.is_err() || linux.is_err() || kernel.is_err() || initramfs.is_err() {
        Err("not tried: fix the lines above first".to_string())
    } else {
        boot_probe::boot_to_agent(&config, Duration::from_secs(args.timeout))
    };
    all_ok &= report(
        "boot",
        &boot
            .as_ref()
            .map(|b| b.detail.clone())
            .map_err(Clone::clone),
    );
    if let Ok(b) = &boot {
        println!(
            "boot: {} ms from VMM start to agent ready",
            b.agent_ready.as_millis()
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
