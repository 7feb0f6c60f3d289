//! The microVM suite: boots husk's real guest kernel and agent and talks
//! to it. Runs inside `tests/kvm-host` (or directly on hardware KVM).

mod containerd;
mod containers;
mod cri;
mod differential;
mod docker;
mod fs;
mod memory;
mod network;
mod podman;

use std::time::Duration;

use husk::agent::AgentClient;
use husk::sandbox::{wait_for_agent, VmProcess};
use husk::vmm::{ConsoleConfig, VmConfig};
use husk_tests::{describe, husk, husk_bin, initramfs, kernel};

/// The emulated test host is ~12x slower than hardware; boots take seconds.
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

fn vm_config(vcpus: u8, memory_mib: u32) -> VmConfig {
    VmConfig {
        vcpus,
        memory_mib,
        kernel: kernel(),
        initramfs: Some(initramfs()),
        cmdline: String::new(),
        verbose_boot: false,
        console: ConsoleConfig::Stdout,
        vsock: None,
        fs: None,
        net: Vec::new(),
        seccomp: true,
    }
}

struct Booted {
    process: VmProcess,
    client: AgentClient,
}

fn boot(name: &str, vcpus: u8, memory_mib: u32) -> Booted {
    let dir = std::env::temp_dir().join(format!("husk-microvm-{name}-{}", std::process::id()));
    let mut process = VmProcess::spawn(&husk_bin(), vm_config(vcpus, memory_mib), &dir, 3)
        .unwrap_or_else(|e| panic!("spawn VMM: {e:#}"));
    let (client, _version) =
        wait_for_agent(&mut process, AGENT_TIMEOUT).unwrap_or_else(|e| panic!("no agent: {e:#}"));
    Booted { process, client }
}

fn shutdown(mut booted: Booted) {
    booted.client.shutdown().expect("shutdown call");
    drop(booted.client);
    let status = booted
        .process
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("guest did not reset\n{}", booted.process.logs()));
    assert!(
        status.success(),
        "VMM exit {status}\n{}",
        booted.process.logs()
    );
    let dir = booted.process.paths().dir.clone();
    drop(booted.process);
    assert!(!dir.exists(), "state dir left behind");
}

fn assert_guest(booted: &Booted, vcpus: u32, memory_mib: u64) {
    let details = booted.client.guest_details().expect("guest details");
    assert_eq!(details.vcpus_online, vcpus, "{details:?}");
    let total_mib = details.memory_total_bytes >> 20;
    // The kernel keeps some memory for itself; it reports most of the rest.
    assert!(
        total_mib <= memory_mib && total_mib >= memory_mib * 3 / 4,
        "guest sees {total_mib} MiB of {memory_mib}: {details:?}"
    );
}

/// Every thread of the VMM runs under a seccomp filter.
fn assert_seccomp_on_every_thread(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("VMM tasks");
    let mut threads = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(str::trim);
        assert_eq!(
            mode,
            Some("2"),
            "thread {:?} has no seccomp filter",
            task.file_name()
        );
        threads += 1;
    }
    assert!(
        threads >= 2,
        "expected a VMM and a vCPU thread, saw {threads}"
    );
}

#[test]
fn boots_one_vcpu_128_mib_to_the_agent() {
    let booted = boot("1x128", 1, 128);
    let version = booted.client.version().expect("version");
    assert!(!version.to_string().is_empty());
    assert_guest(&booted, 1, 128);
    assert_seccomp_on_every_thread(booted.process.pid().unwrap());
    shutdown(booted);
}

#[test]
fn boots_two_vcpus_512_mib_to_the_agent() {
    let booted = boot("2x512", 2, 512);
    assert_guest(&booted, 2, 512);
    shutdown(booted);
}

#[test]
fn husk_check_passes_and_reports_the_boot_time() {
    let out = husk(&["check", "--timeout", "120"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stdout.contains("FAIL"), "{}", describe(&out));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("boot: ") && l.ends_with("ms from VMM start to agent ready")),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_guest_is_our_kernel_with_the_base_mounts() {
    let booted = boot("details", 1, 128);
    let details = booted.client.guest_details().expect("guest details");
    assert!(details.kernel_release.starts_with("6.12"), "{details:?}");
    assert_eq!(details.boot_id.len(), 36, "{details:?}");
    // cgroup2 is mounted and offers the controllers containers need.
    for controller in ["cpu", "memory", "pids"] {
        assert!(
            details.cgroup_controllers.iter().any(|c| c == controller),
            "no {controller} controller: {details:?}"
        );
    }
    assert!(booted.client.health().is_ok());
    shutdown(booted);
}

#[test]
fn husk_check_boot_line_fails_for_a_guest_without_an_agent() {
    // The tiny test guest boots and resets at once: no agent ever answers.
    let dir = tempfile::tempdir().unwrap();
    let built =
        std::process::Command::new(husk_tests::workspace_root().join("tests/test-guest/build.sh"))
            .arg(dir.path())
            .output()
            .expect("build the tiny guest");
    assert!(built.status.success(), "{}", describe(&built));
    let guest = String::from_utf8(built.stdout).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "kernel = {:?}\ninitramfs = {:?}\nstate_dir = {:?}\n",
            guest.lines().last().unwrap(),
            initramfs(),
            dir.path().join("state")
        ),
    )
    .unwrap();
    let out = husk(&[
        "--config",
        config.to_str().unwrap(),
        "check",
        "--timeout",
        "60",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("boot: FAIL: the VMM ended before the agent answered"),
        "{}",
        describe(&out)
    );
    // The failed probe left no sandbox directory behind.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_guest_without_init_ends_the_vmm_and_the_console_says_why() {
    let dir = std::env::temp_dir().join(format!("husk-microvm-noinit-{}", std::process::id()));
    let mut config = vm_config(1, 128);
    config.cmdline = "rdinit=/nonexistent".into();
    let mut process = VmProcess::spawn(&husk_bin(), config, &dir, 3)
        .unwrap_or_else(|e| panic!("spawn VMM: {e:#}"));
    let status = process.wait_timeout(AGENT_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "the VMM kept running a guest with no init\n{}",
            process.logs()
        )
    });
    let logs = process.logs();
    // panic=-1 turns the kernel's panic into a reset: the VMM ends cleanly.
    assert!(status.success(), "VMM exit {status}\n{logs}");
    assert!(
        logs.contains("Kernel panic"),
        "the console does not show the panic:\n{logs}"
    );
    drop(process);
    assert!(!dir.exists(), "state dir left behind");
}
