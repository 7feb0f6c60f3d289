//! `husk-bench all`: every workload in one run, one table and one plot.
//!
//! Each workload runs as this binary's own subcommand in a child process,
//! one after another, and hands its sections back through a file named
//! by [`SECTIONS_ENV`] (written by `subcommands::finish`). Where this
//! machine's /dev/kvm cannot boot Linux, the tiny-guest boot runs here
//! and everything else runs inside one boot of tests/kvm-host, where this
//! same subcommand (with `--inside`) runs the workloads and prints their
//! sections on stdout as each finishes, so a test host that ends early
//! still returns what it measured.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::{Args, ValueEnum};

use crate::machine::Machine;
use crate::subcommands::{finish, print_sections, unmeasured, Scratch};
use crate::workloads::Section;
use crate::{provenance_of, run_to_exit, wire, workspace_root, IN_TEST_HOST};

/// A child workload appends its sections (the wire format) to this file.
pub const SECTIONS_ENV: &str = "HUSK_BENCH_SECTIONS";

/// The workloads, in the order `all` runs them: the ones that start many
/// pods at once last, so the rest is measured when the emulated host
/// cannot keep up with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Boot to agent ready against QEMU microvm (and the tiny guest).
    Boot,
    /// `husk run`/`exec` of /bin/true and their memory, against runc.
    Containers,
    /// In-process virtio-fs against virtiofsd.
    Virtiofs,
    /// A fixed compute workload on one vCPU and on all.
    Cpu,
    /// fio on the rootfs and on a bind volume.
    Fileio,
    /// iperf3 and request/response pod ↔ host.
    Network,
    /// containerd: `ctr run --rm`, idle pod memory, parallel starts, density.
    Pods,
}

impl Workload {
    /// Every workload, in running order.
    pub const ALL: [Workload; 7] = [
        Workload::Boot,
        Workload::Containers,
        Workload::Virtiofs,
        Workload::Cpu,
        Workload::Fileio,
        Workload::Network,
        Workload::Pods,
    ];

    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Boot => "boot",
            Workload::Containers => "containers",
            Workload::Virtiofs => "virtiofs",
            Workload::Cpu => "cpu",
            Workload::Fileio => "fileio",
            Workload::Network => "network",
            Workload::Pods => "pods",
        }
    }
}

/// Arguments of `husk-bench all`.
#[derive(Args, Clone)]
pub struct AllArgs {
    /// One round of every workload (each one's --smoke), to keep the
    /// harness working.
    #[arg(long)]
    pub smoke: bool,
    /// Recorded rounds per side, passed to every workload as --runs
    /// [default: each workload's own].
    #[arg(long)]
    pub runs: Option<usize>,
    /// The workloads to run, comma-separated [default: all, in the order
    /// boot,containers,virtiofs,cpu,fileio,network,pods].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Option<Vec<Workload>>,
    /// More arguments for one workload, as `WORKLOAD=ARGS` with ARGS split
    /// on spaces (`--with 'pods=--parallel 10 --density 50'`); repeatable.
    #[arg(long = "with", value_name = "WORKLOAD=ARGS", value_parser = parse_with)]
    pub with: Vec<(Workload, Vec<String>)>,
    /// Results directory: results.md and all.svg, and each workload's own
    /// report in a subdirectory [default: results/all-<date>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// husk's binary [default: target/release/husk in the workspace].
    #[arg(long)]
    pub husk: Option<PathBuf>,
    /// Memory of the emulated test host, MiB [default: 8448, what the pods
    /// workload's 100 idle pods need; smoke: 4096].
    #[arg(long)]
    pub host_memory: Option<u64>,
    /// vCPUs of the emulated test host [default: 1].
    #[arg(long)]
    pub host_cpus: Option<u32>,
    /// Longest the emulated test host may run, seconds [default: 12 h;
    /// smoke: 1 h]; the workloads finished by then come back.
    #[arg(long)]
    pub host_timeout: Option<u64>,
    /// Run the workloads here and print their sections on stdout (what
    /// `all` runs inside tests/kvm-host).
    #[arg(long, hide = true)]
    pub inside: bool,
}

/// `WORKLOAD=ARGS` of `--with`.
fn parse_with(s: &str) -> Result<(Workload, Vec<String>), String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--with takes WORKLOAD=ARGS, got {s:?}"))?;
    let workload = Workload::from_str(name.trim(), true).map_err(|_| {
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        format!(
            "--with: unknown workload {name:?} (one of {})",
            names.join(", ")
        )
    })?;
    Ok((
        workload,
        rest.split_whitespace().map(String::from).collect(),
    ))
}

/// One workload's command line after `husk-bench`, without `--out`.
pub fn workload_argv(args: &AllArgs, workload: Workload, boot_part: Option<&str>) -> Vec<String> {
    let mut argv = vec![workload.name().to_string()];
    if let Some(part) = boot_part {
        argv.extend(["--only".to_string(), part.to_string()]);
    }
    if args.smoke {
        argv.push("--smoke".into());
    }
    if let Some(n) = args.runs {
        argv.extend(["--runs".to_string(), n.to_string()]);
    }
    if let Some(husk) = &args.husk {
        argv.extend(["--husk".to_string(), husk.display().to_string()]);
    }
    for (w, extra) in &args.with {
        if *w == workload {
            argv.extend(extra.iter().cloned());
        }
    }
    argv
}

/// The workloads asked for, in running order.
fn chosen(args: &AllArgs) -> Vec<Workload> {
    Workload::ALL
        .into_iter()
        .filter(|w| args.only.as_ref().is_none_or(|only| only.contains(w)))
        .collect()
}

/// The command lines of the workloads that boot Linux guests (all but the
/// tiny-guest half of `boot`).
fn linux_jobs(args: &AllArgs) -> Vec<(Workload, Vec<String>)> {
    chosen(args)
        .into_iter()
        .map(|w| {
            let part = (w == Workload::Boot).then_some("linux");
            (w, workload_argv(args, w, part))
        })
        .collect()
}

/// Runs `husk-bench ARGV --out DIR` as a child, its stdout on our stderr,
/// and reads back its sections.
fn run_child(argv: &[String], out: &Path, machine: &Machine) -> Vec<Section> {
    let title = format!("husk-bench {}", argv.join(" "));
    eprintln!("husk-bench all: {title}");
    child_sections(argv, out).unwrap_or_else(|why| vec![unmeasured(&title, machine, why)])
}

fn child_sections(argv: &[String], out: &Path) -> Result<Vec<Section>, String> {
    let sections_file = out.with_extension("sections");
    let _ = std::fs::remove_file(&sections_file);
    let status = Command::new(myself()?)
        .args(argv)
        .arg("--out")
        .arg(out)
        .env(SECTIONS_ENV, &sections_file)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = std::fs::read_to_string(&sections_file).unwrap_or_default();
    let _ = std::fs::remove_file(&sections_file);
    match wire::decode_all(&text) {
        Ok(sections) if !sections.is_empty() => Ok(sections),
        Ok(_) => Err(format!("it ended with {status} and reported nothing")),
        Err(why) => Err(format!("{status}: {why}")),
    }
}

/// This binary, to run again as a child.
fn myself() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find husk-bench itself: {e}"))
}

/// `husk-bench all`.
pub fn run(args: AllArgs) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let machine = Machine::probe();
    if args.inside {
        return run_inside(&args, &machine);
    }
    let (date, _) = crate::utc_now();
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = if args.smoke { "-smoke" } else { "" };
        crate::first_free(&root.join("results").join(format!("all-{date}{suffix}")))
    });
    std::fs::create_dir_all(&out)?;
    let out = crate::absolute(&out);
    let mut sections = Vec::new();
    if chosen(&args).contains(&Workload::Boot) {
        let argv = workload_argv(&args, Workload::Boot, Some("tiny"));
        sections.extend(run_child(&argv, &out.join("boot-tiny"), &machine));
    }
    let jobs = linux_jobs(&args);
    if machine.kvm.boots_linux() {
        for (w, argv) in &jobs {
            sections.extend(run_child(argv, &out.join(w.name()), &machine));
        }
    } else if !jobs.is_empty() {
        sections.extend(through_test_host(&root, &args, &machine));
    }
    let husk = args
        .husk
        .clone()
        .unwrap_or_else(|| root.join("target/release/husk"));
    let peers: [(&str, &Path); 5] = [
        ("runc", Path::new("runc")),
        ("QEMU", Path::new("qemu-system-x86_64")),
        ("containerd", Path::new("containerd")),
        ("iperf3", Path::new("iperf3")),
        ("fio", Path::new("fio")),
    ];
    let provenance = provenance_of(&root, &crate::absolute(&husk), &peers);
    finish(
        &root,
        "all",
        "husk against runc and QEMU microvm: every workload",
        Some(out),
        args.smoke,
        provenance,
        sections,
    )
}

/// The test host's memory for a run: room for the pods workload's
/// density part unless told otherwise.
pub fn host_memory(args: &AllArgs) -> u64 {
    args.host_memory
        .unwrap_or(if args.smoke { 4096 } else { 2048 + 64 * 100 })
}

/// Boots tests/kvm-host once and runs `all --inside` there.
fn through_test_host(root: &Path, args: &AllArgs, machine: &Machine) -> Vec<Section> {
    test_host_sections(root, args).unwrap_or_else(|why| {
        vec![unmeasured(
            &format!("Every Linux workload — {IN_TEST_HOST}"),
            machine,
            why,
        )]
    })
}

fn test_host_sections(root: &Path, args: &AllArgs) -> Result<Vec<Section>, String> {
    let me = myself()?;
    let memory = host_memory(args);
    let cpus = args.host_cpus.unwrap_or(1);
    let timeout = args
        .host_timeout
        .unwrap_or(if args.smoke { 3600 } else { 12 * 3600 });
    let mut inside: Vec<OsString> = vec!["all".into(), "--inside".into()];
    let names: Vec<&str> = chosen(args).iter().map(|w| w.name()).collect();
    inside.extend(["--only".into(), names.join(",").into()]);
    if args.smoke {
        inside.push("--smoke".into());
    }
    if let Some(n) = args.runs {
        inside.extend(["--runs".into(), n.to_string().into()]);
    }
    if let Some(h) = &args.husk {
        inside.extend(["--husk".into(), crate::absolute(h).into()]);
    }
    for (w, extra) in &args.with {
        inside.extend([
            "--with".into(),
            format!("{}={}", w.name(), extra.join(" ")).into(),
        ]);
    }
    let mut cmd = Command::new(root.join("tests/kvm-host"));
    cmd.env("HUSK_KVM_HOST", "emulated")
        .args(["--memory", &memory.to_string()])
        .args(["--cpus", &cpus.to_string()])
        .args(["--timeout", &timeout.to_string()])
        .arg("--")
        .arg(&me)
        .args(&inside)
        .stdin(Stdio::null());
    eprintln!(
        "husk-bench all: booting the emulated test host once ({memory} MiB, {cpus} vCPU) for: {}",
        names.join(", ")
    );
    let (status, stdout) =
        run_to_exit(&mut cmd).map_err(|e| format!("cannot run tests/kvm-host: {e}"))?;
    let mut sections = wire::decode_all(&stdout).map_err(|why| format!("{status}: {why}"))?;
    if sections.is_empty() {
        return Err(format!(
            "tests/kvm-host ended with {status} and returned nothing"
        ));
    }
    for s in &mut sections {
        s.notes.push(format!(
            "Measured in one boot of the test host ({memory} MiB, {cpus} vCPU, tests/kvm-host \
             --memory/--cpus)."
        ));
        if !status.success() {
            s.notes.push(format!("tests/kvm-host ended with {status}"));
        }
    }
    Ok(sections)
}

/// `all --inside`: each Linux workload here, its sections on stdout as
/// soon as it ends.
fn run_inside(args: &AllArgs, machine: &Machine) -> anyhow::Result<ExitCode> {
    let scratch = Scratch::new("all")?;
    let mut all_measured = true;
    for (w, argv) in linux_jobs(args) {
        let sections = run_child(&argv, &scratch.0.join(w.name()), machine);
        all_measured &= print_sections(&sections) == ExitCode::SUCCESS;
        let _ = std::io::stdout().flush();
    }
    Ok(if all_measured {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        all: AllArgs,
    }

    fn args(argv: &[&str]) -> AllArgs {
        Wrap::try_parse_from(std::iter::once("all").chain(argv.iter().copied()))
            .unwrap()
            .all
    }

    #[test]
    fn every_workload_in_order_with_the_shared_flags() {
        let a = args(&["--smoke", "--runs", "3"]);
        let jobs = linux_jobs(&a);
        let names: Vec<&str> = jobs.iter().map(|(w, _)| w.name()).collect();
        assert_eq!(
            names,
            [
                "boot",
                "containers",
                "virtiofs",
                "cpu",
                "fileio",
                "network",
                "pods"
            ]
        );
        assert_eq!(
            jobs[0].1,
            ["boot", "--only", "linux", "--smoke", "--runs", "3"]
        );
        assert_eq!(jobs[6].1, ["pods", "--smoke", "--runs", "3"]);
        assert_eq!(host_memory(&a), 4096);
    }

    #[test]
    fn only_and_with_reach_the_named_workload() {
        let a = args(&[
            "--only",
            "pods,cpu",
            "--with",
            "pods=--parallel 10,50 --density 40",
            "--with",
            "cpu=--mib 8",
        ]);
        let jobs = linux_jobs(&a);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].1, ["cpu", "--mib", "8"]);
        assert_eq!(
            jobs[1].1,
            ["pods", "--parallel", "10,50", "--density", "40"]
        );
        assert_eq!(host_memory(&a), 2048 + 6400);
    }

    #[test]
    fn a_with_for_an_unknown_workload_is_refused_by_name() {
        let err = Wrap::try_parse_from(["all", "--with", "disk=--x"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown workload \"disk\""), "{err}");
        let err = Wrap::try_parse_from(["all", "--with", "pods"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("WORKLOAD=ARGS"), "{err}");
    }
}
