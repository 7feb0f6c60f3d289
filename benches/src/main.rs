//! `husk-bench`: husk against its peers, measured interleaved in one run
//! and reported as medians, p90s and ratios next to DESIGN.md's budgets.
//!
//! ```text
//! husk-bench boot [--runs N] [--only tiny|linux] [--smoke] [--out DIR] …
//! husk-bench containers [--runs N] [--exec-runs N] [--smoke] …
//! husk-bench virtiofs [--runs N] [--file-mib M] [--files N] [--smoke] …
//! husk-bench pods [--runs N] [--parallel 10,50] [--density N] [--smoke] …
//! husk-bench network [--runs N] [--seconds S] [--round-trips N] [--smoke] …
//! husk-bench cpu [--runs N] [--mib M] [--copies K] [--smoke] …
//! husk-bench fileio [--runs N] [--file-mib M] [--files N] [--smoke] …
//! husk-bench all [--smoke] [--runs N] [--only W,…] [--with 'W=ARGS'] …
//! ```
//!
//! Each workload lives in `workloads/` and returns a `Section`; `report`
//! writes `results.md` and an SVG plot into the results directory. A
//! figure over budget never fails the run: the exit status is 1 only when
//! a workload could not measure at all.

mod containerd;
mod machine;
mod measure;
mod procs;
mod report;
mod stats;
mod subcommands;
mod suite;
mod wire;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::machine::{KvmKind, Machine};
use crate::workloads::boot::{self, Binaries, LinuxGuest, Schedule};
use crate::workloads::Section;

#[derive(Parser)]
#[command(
    name = "husk-bench",
    about = "husk benchmarks: husk against its peers, as ratios"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot: the tiny test guest on this /dev/kvm, and a Linux guest to the
    /// agent (inside tests/kvm-host where /dev/kvm cannot boot Linux).
    Boot(BootArgs),
    /// The Linux half of `boot`, run inside tests/kvm-host; prints result
    /// lines on stdout.
    #[command(hide = true)]
    BootInside(InsideArgs),
    /// Containers through the CLI: `husk run` and `husk exec` of /bin/true
    /// against runc's on the same bundle, and their host memory.
    Containers(subcommands::ContainersArgs),
    /// The `containers` workloads, run inside tests/kvm-host.
    #[command(hide = true)]
    ContainersInside(subcommands::ContainersInsideArgs),
    /// virtio-fs: husk's in-process backend against QEMU microvm with
    /// virtiofsd, on the same shared directory.
    Virtiofs(subcommands::VirtiofsArgs),
    /// The `virtiofs` workload, run inside tests/kvm-host.
    #[command(hide = true)]
    VirtiofsInside(subcommands::VirtiofsInsideArgs),
    /// Pods through containerd: husk's shim against runc's, `ctr run
    /// --rm`, idle memory, parallel starts and density.
    Pods(subcommands::PodsArgs),
    /// The `pods` workload, run inside tests/kvm-host.
    #[command(hide = true)]
    PodsInside(subcommands::PodsInsideArgs),
    /// Pod ↔ host TCP: iperf3 throughput both ways and request/response
    /// round trips, husk against runc on the same veth setup.
    Network(workloads::network::NetworkArgs),
    /// The `network` workload, run inside tests/kvm-host.
    #[command(hide = true)]
    NetworkInside(workloads::network::NetworkInsideArgs),
    /// A fixed compute workload on one vCPU and on all, husk against runc,
    /// timed from the host.
    Cpu(workloads::cpu::CpuArgs),
    /// The `cpu` workload, run inside tests/kvm-host.
    #[command(hide = true)]
    CpuInside(workloads::cpu::CpuInsideArgs),
    /// fio on the rootfs and on a bind volume: sequential and random I/O
    /// and small-file metadata, husk against runc.
    Fileio(workloads::fileio::FileioArgs),
    /// The `fileio` workload, run inside tests/kvm-host.
    #[command(hide = true)]
    FileioInside(workloads::fileio::FileioInsideArgs),
    /// Every workload above in one run (inside one boot of tests/kvm-host
    /// where this /dev/kvm cannot boot Linux): one table, one plot.
    All(suite::AllArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The tiny test guest on this machine's /dev/kvm.
    Tiny,
    /// The Linux guest to agent ready.
    Linux,
}

#[derive(Args)]
struct BootArgs {
    /// Recorded runs per side [default: 20; the Linux part inside the
    /// emulated test host: 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Recorded runs per side of the Linux part (overrides --runs there).
    #[arg(long)]
    linux_runs: Option<usize>,
    /// Warm-up runs per side [default: 2; inside the emulated host: 1].
    #[arg(long)]
    warmup: Option<usize>,
    /// One run of everything without warm-up, to keep the harness working.
    #[arg(long)]
    smoke: bool,
    /// Only this part [default: both].
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Results directory [default: results/boot-<date>/ in the workspace].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// husk's binary [default: target/release/husk in the workspace].
    #[arg(long)]
    husk: Option<PathBuf>,
    /// QEMU's binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// The tiny test guest [default: built with tests/test-guest/build.sh].
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Guest kernel for the Linux part [default: from husk's config].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Agent initramfs for the Linux part [default: from husk's config].
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Longest one boot may take, seconds [default: 20; emulated: 180].
    #[arg(long)]
    timeout: Option<u64>,
}

#[derive(Args)]
struct InsideArgs {
    #[arg(long)]
    runs: usize,
    #[arg(long)]
    warmup: usize,
    #[arg(long)]
    timeout: u64,
    #[arg(long)]
    husk: PathBuf,
    #[arg(long)]
    qemu: PathBuf,
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initramfs: PathBuf,
}

/// Where results of `tests/kvm-host` come from, as the report says it.
pub(crate) const IN_TEST_HOST: &str = "inside tests/kvm-host (emulated host, nested KVM)";
/// Runs of a Linux boot inside the emulated host unless told otherwise.
const EMULATED_RUNS: usize = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Boot(args) => run_boot(args),
        Cmd::BootInside(args) => run_inside(args),
        Cmd::Containers(args) => subcommands::run_containers(args),
        Cmd::ContainersInside(args) => subcommands::run_containers_inside(args),
        Cmd::Virtiofs(args) => subcommands::run_virtiofs(args),
        Cmd::VirtiofsInside(args) => subcommands::run_virtiofs_inside(args),
        Cmd::Pods(args) => subcommands::run_pods(args),
        Cmd::PodsInside(args) => subcommands::run_pods_inside(args),
        Cmd::Network(args) => workloads::network::run(args),
        Cmd::NetworkInside(args) => workloads::network::run_inside_cmd(args),
        Cmd::Cpu(args) => workloads::cpu::run(args),
        Cmd::CpuInside(args) => workloads::cpu::run_inside_cmd(args),
        Cmd::Fileio(args) => workloads::fileio::run(args),
        Cmd::FileioInside(args) => workloads::fileio::run_inside_cmd(args),
        Cmd::All(args) => suite::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("husk-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace: this package's parent directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run_boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let machine = Machine::probe();
    let husk = args
        .husk
        .clone()
        .unwrap_or_else(|| root.join("target/release/husk"));
    anyhow::ensure!(
        husk.is_file(),
        "{husk:?} is missing: build it with `cargo build --release -p husk-runtime --bins`"
    );
    let bins = Binaries {
        husk: absolute(&husk),
        qemu: args.qemu.clone(),
    };
    let (smoke_runs, smoke_warmup) = (args.smoke.then_some(1), args.smoke.then_some(0));
    let mut sections = Vec::new();

    if args.only != Some(Part::Linux) {
        let sched = Schedule {
            warmup: smoke_warmup.or(args.warmup).unwrap_or(2),
            runs: smoke_runs.or(args.runs).unwrap_or(20),
            timeout: Duration::from_secs(args.timeout.unwrap_or(20)),
        };
        let section = match tiny_guest(&root, args.guest.as_deref()) {
            Ok(guest) => {
                let section = boot::tiny(&bins, &guest, &machine, sched);
                if args.guest.is_none() {
                    let _ = guest.parent().map(std::fs::remove_dir_all);
                }
                section
            }
            Err(why) => {
                subcommands::unmeasured("Tiny test guest on this machine's /dev/kvm", &machine, why)
            }
        };
        sections.push(section);
    }
    if args.only != Some(Part::Tiny) {
        let section = linux_part(&args, &root, &bins, &machine, smoke_runs, smoke_warmup);
        sections.push(section);
    }
    subcommands::finish(
        &root,
        "boot",
        "husk boot benchmark",
        args.out.clone(),
        args.smoke,
        provenance(&root, &bins),
        sections,
    )
}

/// The Linux part: here when /dev/kvm boots Linux, else through
/// tests/kvm-host.
fn linux_part(
    args: &BootArgs,
    root: &Path,
    bins: &Binaries,
    machine: &Machine,
    smoke_runs: Option<usize>,
    smoke_warmup: Option<usize>,
) -> Section {
    let title = "Linux guest to agent ready";
    let config = husk::config::HuskConfig::default();
    let guest = LinuxGuest {
        kernel: absolute(args.kernel.as_deref().unwrap_or(&config.kernel)),
        initramfs: absolute(args.initramfs.as_deref().unwrap_or(&config.initramfs)),
    };
    for file in [&guest.kernel, &guest.initramfs] {
        if !file.is_file() {
            return subcommands::unmeasured(
                title,
                machine,
                format!("{file:?} is missing: build the guest with `scripts/setup.sh --no-check`"),
            );
        }
    }
    let direct = machine.kvm.boots_linux();
    let emulated = !direct || machine.kvm.emulated();
    let runs = smoke_runs
        .or(args.linux_runs)
        .or(args.runs)
        .unwrap_or(if emulated { EMULATED_RUNS } else { 20 });
    let warmup = smoke_warmup
        .or(args.warmup)
        .unwrap_or(if emulated { 1 } else { 2 });
    let timeout = args.timeout.unwrap_or(if emulated { 180 } else { 20 });
    if direct {
        let sched = Schedule {
            warmup,
            runs,
            timeout: Duration::from_secs(timeout),
        };
        return boot::linux(bins, &guest, machine, machine.kvm.place(), emulated, sched);
    }
    match through_test_host(root, bins, &guest, warmup, runs, timeout) {
        Ok(section) => section,
        Err(why) => subcommands::unmeasured(&format!("{title} — {IN_TEST_HOST}"), machine, why),
    }
}

/// Re-runs this binary as `boot-inside` in the emulated KVM host and reads
/// its result lines back.
fn through_test_host(
    root: &Path,
    bins: &Binaries,
    guest: &LinuxGuest,
    warmup: usize,
    runs: usize,
    timeout: u64,
) -> Result<Section, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find husk-bench itself: {e}"))?;
    // The test host's boot, then every boot at its worst.
    let host_timeout = 300 + (warmup + runs) as u64 * 2 * (timeout + 60);
    let mut cmd = Command::new(root.join("tests/kvm-host"));
    cmd.env("HUSK_KVM_HOST", "emulated")
        .arg("--timeout")
        .arg(host_timeout.to_string())
        .arg("--")
        .arg(&me)
        .arg("boot-inside")
        .args(["--runs", &runs.to_string(), "--warmup", &warmup.to_string()])
        .args(["--timeout", &timeout.to_string()])
        .arg("--husk")
        .arg(&bins.husk)
        .arg("--qemu")
        .arg(&bins.qemu)
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initramfs")
        .arg(&guest.initramfs)
        .stdin(Stdio::null());
    eprintln!("husk-bench: booting the emulated test host (tests/kvm-host); Linux boots take seconds there");
    let (status, stdout) =
        run_to_exit(&mut cmd).map_err(|e| format!("cannot run tests/kvm-host: {e}"))?;
    match wire::decode(&stdout) {
        Ok(mut section) => {
            if !status.success() {
                section
                    .notes
                    .push(format!("tests/kvm-host ended with {status}"));
            }
            Ok(section)
        }
        Err(why) => Err(format!("tests/kvm-host ({status}): {why}")),
    }
}

/// Runs `cmd` until it exits, its stdout into a temp file and its stderr
/// forwarded to ours, and returns the status and stdout. It does not wait
/// for EOF on either: a process the command leaves behind (tests/kvm-host's
/// watchdog `sleep`) may hold them open until long after it exits.
pub(crate) fn run_to_exit(
    cmd: &mut Command,
) -> std::io::Result<(std::process::ExitStatus, String)> {
    use std::io::{Read, Seek, Write};
    let path = std::env::temp_dir().join(format!("husk-bench-stdout-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    let mut child = cmd
        .stdout(file.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut err) = child.stderr.take() {
        // Never joined: it may block on a pipe nobody closes.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 || std::io::stderr().write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let status = child.wait()?;
    // Let the forwarder pass on the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let mut stdout = String::new();
    file.rewind()?;
    file.read_to_string(&mut stdout)?;
    Ok((status, stdout))
}

fn run_inside(args: InsideArgs) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let bins = Binaries {
        husk: args.husk,
        qemu: args.qemu,
    };
    let guest = LinuxGuest {
        kernel: args.kernel,
        initramfs: args.initramfs,
    };
    let sched = Schedule {
        warmup: args.warmup,
        runs: args.runs,
        timeout: Duration::from_secs(args.timeout),
    };
    let mut section = boot::linux(&bins, &guest, &machine, IN_TEST_HOST, true, sched);
    if machine.kvm != KvmKind::NestedEmulated {
        section.notes.push(format!(
            "the test host's KVM looked like: {}",
            machine.kvm.describe()
        ));
    }
    for line in wire::encode(&section) {
        println!("{line}");
    }
    Ok(if section.measured_anything() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The tiny guest: the given path, or a fresh build into a temp dir.
fn tiny_guest(root: &Path, given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let dir = std::env::temp_dir().join(format!("husk-bench-guest-{}", std::process::id()));
    let out = Command::new(root.join("tests/test-guest/build.sh"))
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run tests/test-guest/build.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(path) if out.status.success() => Ok(PathBuf::from(path.trim())),
        _ => Err(format!(
            "tests/test-guest/build.sh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `base`, or `base-2`, `base-3` … if it exists.
pub(crate) fn first_free(base: &Path) -> PathBuf {
    if !base.exists() {
        return base.to_path_buf();
    }
    (2..)
        .map(|n| PathBuf::from(format!("{}-{n}", base.display())))
        .find(|p| !p.exists())
        .unwrap_or_else(|| base.to_path_buf())
}

/// What was measured: husk's commit and binary, QEMU's version.
fn provenance(root: &Path, bins: &Binaries) -> Vec<(String, String)> {
    provenance_of(root, &bins.husk, &[("peer", &bins.qemu)])
}

/// husk's commit and binary, and the first line of `--version` of each
/// peer program, under its label.
pub(crate) fn provenance_of(
    root: &Path,
    husk: &Path,
    peers: &[(&str, &Path)],
) -> Vec<(String, String)> {
    let first_line = |cmd: &mut Command| {
        cmd.stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
    };
    let commit =
        first_line(
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let dirty = first_line(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["status", "--porcelain"]),
    )
    .is_some();
    let mut rows = vec![(
        "husk".to_string(),
        format!(
            "`{}` at commit {}{}",
            husk.display(),
            commit.unwrap_or_else(|| "?".into()),
            if dirty {
                " with uncommitted changes"
            } else {
                ""
            }
        ),
    )];
    for (label, program) in peers {
        rows.push((
            (*label).to_string(),
            first_line(Command::new(program).arg("--version"))
                .unwrap_or_else(|| format!("{program:?} (version unknown)")),
        ));
    }
    rows
}

/// Today as `YYYY-MM-DD` and now as `YYYY-MM-DD HH:MM`, in UTC.
pub(crate) fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let when = format!("{date} {:02}:{:02}", secs % 86_400 / 3600, secs % 3600 / 60);
    (date, when)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's days-to-civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "husk-bench",
            "boot",
            "--smoke",
            "--only",
            "tiny",
            "--runs",
            "3",
        ])
        .unwrap();
        let Cmd::Boot(args) = cli.command else {
            panic!("not boot")
        };
        assert!(args.smoke);
        assert!(args.only == Some(Part::Tiny));
        assert_eq!(args.runs, Some(3));
    }
}
