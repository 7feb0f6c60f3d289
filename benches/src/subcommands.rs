//! The `containers`, `virtiofs` and `pods` subcommands: their arguments, where
//! they run (here where /dev/kvm boots Linux, else inside tests/kvm-host
//! through a hidden `*-inside` subcommand whose result lines come back
//! over stdout), and their results directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;

use crate::machine::{KvmKind, Machine};
use crate::report::{self, Report};
use crate::workloads::containers::{self, Place, Plan, Tools};
use crate::workloads::pods::{self, PodPlan, PodTools};
use crate::workloads::virtiofs::{self, FsPlan, FsTools};
use crate::workloads::Section;
use crate::IN_TEST_HOST;
use crate::{absolute, first_free, provenance_of, run_to_exit, utc_now, wire, workspace_root};

/// Arguments of `husk-bench containers`.
#[derive(Args)]
pub struct ContainersArgs {
    /// Recorded `run` rounds per side [default: 20; emulated host: 5].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Recorded `exec` rounds per side [default: 20; emulated host: 10].
    #[arg(long)]
    pub exec_runs: Option<usize>,
    /// Sampled memory rounds per side, of run and of exec [default: 5;
    /// emulated host: 3].
    #[arg(long)]
    pub mem_runs: Option<usize>,
    /// Warm-up rounds per side [default: 2; emulated host: 1].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// One round of everything without warm-up, to keep the harness working.
    #[arg(long)]
    pub smoke: bool,
    /// Results directory [default: results/containers-<date>/ in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// husk's binary [default: target/release/husk in the workspace].
    #[arg(long)]
    pub husk: Option<PathBuf>,
    /// runc's binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// Longest one command may take, seconds [default: 30; emulated: 180].
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Arguments of `husk-bench containers-inside` (everything explicit).
#[derive(Args)]
pub struct ContainersInsideArgs {
    #[arg(long)]
    runs: usize,
    #[arg(long)]
    exec_runs: usize,
    #[arg(long)]
    mem_runs: usize,
    #[arg(long)]
    warmup: usize,
    #[arg(long)]
    timeout: u64,
    #[arg(long)]
    husk: PathBuf,
    #[arg(long)]
    runc: PathBuf,
}

/// Arguments of `husk-bench virtiofs`.
#[derive(Args)]
pub struct VirtiofsArgs {
    /// Recorded rounds per side [default: 20; emulated host: 5].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Warm-up rounds per side [default: 2; emulated host: 1].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// One round, a small file and few files, to keep the harness working.
    #[arg(long)]
    pub smoke: bool,
    /// Results directory [default: results/virtiofs-<date>/ in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// husk's binary [default: target/release/husk in the workspace].
    #[arg(long)]
    pub husk: Option<PathBuf>,
    /// QEMU's binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// virtiofsd [default: ~/.cache/husk/virtiofsd/bin/virtiofsd, else on PATH].
    #[arg(long)]
    pub virtiofsd: Option<PathBuf>,
    /// Guest kernel [default: from husk's config].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Size of the file the guest reads, MiB [default: 64; smoke: 4].
    #[arg(long)]
    pub file_mib: Option<u64>,
    /// Small files the guest creates, stats and unlinks [default: 500; smoke: 20].
    #[arg(long)]
    pub files: Option<usize>,
    /// Longest one boot and workload may take, seconds [default: 60; emulated: 300].
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Arguments of `husk-bench virtiofs-inside` (everything explicit).
#[derive(Args)]
pub struct VirtiofsInsideArgs {
    #[arg(long)]
    runs: usize,
    #[arg(long)]
    warmup: usize,
    #[arg(long)]
    timeout: u64,
    #[arg(long)]
    file_mib: u64,
    #[arg(long)]
    files: usize,
    #[arg(long)]
    husk: PathBuf,
    #[arg(long)]
    qemu: PathBuf,
    #[arg(long)]
    virtiofsd: Option<PathBuf>,
    #[arg(long)]
    kernel: PathBuf,
}

/// Whether this machine runs Linux guests itself; `place` and `emulated`
/// of a run here.
pub(crate) fn here(machine: &Machine) -> Option<Place> {
    machine.kvm.boots_linux().then(|| Place {
        name: machine.kvm.place().to_string(),
        emulated: machine.kvm.emulated(),
    })
}

/// The place of a run inside tests/kvm-host.
pub(crate) fn inside_place() -> Place {
    Place {
        name: IN_TEST_HOST.to_string(),
        emulated: true,
    }
}

/// A scratch directory under /tmp (writable inside the test host too).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("husk-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn husk_binary(root: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let husk = given.map_or_else(|| root.join("target/release/husk"), Path::to_path_buf);
    anyhow::ensure!(
        husk.is_file(),
        "{husk:?} is missing: build it with `cargo build --release -p husk-runtime --bins`"
    );
    Ok(absolute(&husk))
}

/// Runs this binary with `args` inside tests/kvm-host and reads back its
/// sections.
pub(crate) fn through_test_host(
    root: &Path,
    args: Vec<OsString>,
    host_timeout: u64,
) -> Result<Vec<Section>, String> {
    through_test_host_with(root, args, host_timeout, None)
}

/// [`through_test_host`] with the test host's memory in MiB
/// (`tests/kvm-host --memory`; `None`: its default).
fn through_test_host_with(
    root: &Path,
    args: Vec<OsString>,
    host_timeout: u64,
    memory_mib: Option<u64>,
) -> Result<Vec<Section>, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find husk-bench itself: {e}"))?;
    let mut cmd = Command::new(root.join("tests/kvm-host"));
    cmd.env("HUSK_KVM_HOST", "emulated");
    if let Some(m) = memory_mib {
        cmd.arg("--memory").arg(m.to_string());
    }
    cmd.arg("--timeout")
        .arg(host_timeout.to_string())
        .arg("--")
        .arg(&me)
        .args(args)
        .stdin(Stdio::null());
    eprintln!("husk-bench: booting the emulated test host (tests/kvm-host)");
    let (status, stdout) =
        run_to_exit(&mut cmd).map_err(|e| format!("cannot run tests/kvm-host: {e}"))?;
    match wire::decode_all(&stdout) {
        Ok(mut sections) => {
            if !status.success() {
                for s in &mut sections {
                    s.notes.push(format!("tests/kvm-host ended with {status}"));
                }
            }
            Ok(sections)
        }
        Err(why) => Err(format!("tests/kvm-host ({status}): {why}")),
    }
}

pub(crate) fn unmeasured(title: &str, machine: &Machine, why: String) -> Section {
    eprintln!("husk-bench: {title}: not measured: {why}");
    Section {
        title: title.into(),
        machine: machine.clone(),
        warmup: 0,
        runs: 0,
        figures: Vec::new(),
        notes: vec![format!("not measured: {why}")],
        commands: Vec::new(),
    }
}

/// Writes the report and says whether every section measured something.
pub(crate) fn finish(
    root: &Path,
    name: &str,
    title: &str,
    out: Option<PathBuf>,
    smoke: bool,
    provenance: Vec<(String, String)>,
    sections: Vec<Section>,
) -> anyhow::Result<ExitCode> {
    let unmeasured: Vec<String> = sections
        .iter()
        .filter(|s| !s.measured_anything())
        .map(|s| s.title.clone())
        .collect();
    let (date, when) = utc_now();
    let out = out.unwrap_or_else(|| {
        let suffix = if smoke { "-smoke" } else { "" };
        first_free(&root.join("results").join(format!("{name}-{date}{suffix}")))
    });
    let report = Report {
        title: title.into(),
        when,
        provenance,
        sections,
    };
    report::write(&out, name, &report)?;
    if let Some(file) = std::env::var_os(crate::suite::SECTIONS_ENV) {
        let lines: String = report
            .sections
            .iter()
            .flat_map(wire::encode)
            .map(|l| l + "\n")
            .collect();
        std::fs::write(&file, lines)?;
    }
    println!("{}", report::markdown(&report, &format!("{name}.svg")));
    eprintln!("husk-bench: results in {}", out.display());
    if unmeasured.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("husk-bench: could not measure: {}", unmeasured.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

pub(crate) fn print_sections(sections: &[Section]) -> ExitCode {
    for s in sections {
        for line in wire::encode(s) {
            println!("{line}");
        }
    }
    if sections.iter().all(Section::measured_anything) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn note_test_host_kvm(sections: &mut [Section], machine: &Machine) {
    if machine.kvm != KvmKind::NestedEmulated {
        for s in sections {
            s.notes.push(format!(
                "the test host's KVM looked like: {}",
                machine.kvm.describe()
            ));
        }
    }
}

/// `husk-bench containers`.
pub fn run_containers(args: ContainersArgs) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let machine = Machine::probe();
    let husk = husk_binary(&root, args.husk.as_deref())?;
    let local = here(&machine);
    let emulated = local.as_ref().is_none_or(|p| p.emulated);
    let pick = |smoke: usize, given: Option<usize>, emu: usize, hw: usize| {
        if args.smoke {
            smoke
        } else {
            given.unwrap_or(if emulated { emu } else { hw })
        }
    };
    let plan = Plan {
        warmup: pick(0, args.warmup, 1, 2),
        runs: pick(1, args.runs, 5, 20),
        mem_runs: pick(1, args.mem_runs, 3, 5),
        exec_runs: pick(1, args.exec_runs, 10, 20),
        timeout: Duration::from_secs(args.timeout.unwrap_or(if emulated { 180 } else { 30 })),
        sample_every: Duration::from_millis(if emulated { 20 } else { 2 }),
    };
    let tools = Tools {
        husk: husk.clone(),
        runc: args.runc.clone(),
    };
    let sections = match local {
        Some(place) => {
            let scratch = Scratch::new("containers")?;
            vec![
                containers::start(&tools, &scratch.0, &machine, &place, plan),
                containers::exec(&tools, &scratch.0, &machine, &place, plan),
            ]
        }
        None => {
            let n = |v: usize| v.to_string().into();
            let inside: Vec<OsString> = vec![
                "containers-inside".into(),
                "--runs".into(),
                n(plan.runs),
                "--exec-runs".into(),
                n(plan.exec_runs),
                "--mem-runs".into(),
                n(plan.mem_runs),
                "--warmup".into(),
                n(plan.warmup),
                "--timeout".into(),
                plan.timeout.as_secs().to_string().into(),
                "--husk".into(),
                husk.clone().into(),
                "--runc".into(),
                args.runc.clone().into(),
            ];
            let rounds = 2 * (plan.warmup * 2 + plan.runs + plan.exec_runs + 2 * plan.mem_runs + 4);
            let host_timeout = 300 + rounds as u64 * (plan.timeout.as_secs() / 2 + 30);
            match through_test_host(&root, inside, host_timeout) {
                Ok(s) => s,
                Err(why) => vec![unmeasured(
                    &format!("Containers — {IN_TEST_HOST}"),
                    &machine,
                    why,
                )],
            }
        }
    };
    let provenance = provenance_of(&root, &husk, &[("runc", &args.runc)]);
    finish(
        &root,
        "containers",
        "husk container benchmark: CLI start and exec against runc",
        args.out,
        args.smoke,
        provenance,
        sections,
    )
}

/// `husk-bench containers-inside`: measures here, prints result lines.
pub fn run_containers_inside(args: ContainersInsideArgs) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let plan = Plan {
        warmup: args.warmup,
        runs: args.runs,
        mem_runs: args.mem_runs,
        exec_runs: args.exec_runs,
        timeout: Duration::from_secs(args.timeout),
        sample_every: Duration::from_millis(20),
    };
    let tools = Tools {
        husk: args.husk,
        runc: args.runc,
    };
    let place = inside_place();
    let scratch = Scratch::new("containers")?;
    let mut sections = vec![
        containers::start(&tools, &scratch.0, &machine, &place, plan),
        containers::exec(&tools, &scratch.0, &machine, &place, plan),
    ];
    note_test_host_kvm(&mut sections, &machine);
    Ok(print_sections(&sections))
}

/// virtiofsd where `cargo install --root ~/.cache/husk/virtiofsd` put it,
/// else on PATH.
fn find_virtiofsd(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let cached = husk::config::HuskConfig::default()
        .kernel
        .parent()
        .map(|cache| cache.join("virtiofsd/bin/virtiofsd"));
    if let Some(p) = cached.filter(|p| p.is_file()) {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("virtiofsd"))
            .find(|p| p.is_file())
    })
}

/// `husk-bench virtiofs`.
pub fn run_virtiofs(args: VirtiofsArgs) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let machine = Machine::probe();
    let husk = husk_binary(&root, args.husk.as_deref())?;
    let config = husk::config::HuskConfig::default();
    let kernel = absolute(args.kernel.as_deref().unwrap_or(&config.kernel));
    let virtiofsd = find_virtiofsd(args.virtiofsd.as_deref()).map(|p| absolute(&p));
    let local = here(&machine);
    let emulated = local.as_ref().is_none_or(|p| p.emulated);
    let plan = FsPlan {
        warmup: if args.smoke {
            0
        } else {
            args.warmup.unwrap_or(if emulated { 1 } else { 2 })
        },
        runs: if args.smoke {
            1
        } else {
            args.runs.unwrap_or(if emulated { 5 } else { 20 })
        },
        timeout: Duration::from_secs(args.timeout.unwrap_or(if emulated { 300 } else { 60 })),
        file_mib: args.file_mib.unwrap_or(if args.smoke { 4 } else { 64 }),
        files: args.files.unwrap_or(if args.smoke { 20 } else { 500 }),
        sample_every: Duration::from_millis(if emulated { 100 } else { 10 }),
    };
    let title = "virtio-fs: in-process vs virtiofsd";
    let tools = FsTools {
        husk: husk.clone(),
        qemu: args.qemu.clone(),
        virtiofsd: virtiofsd.clone(),
    };
    let mut sections = Vec::new();
    if !kernel.is_file() {
        sections.push(unmeasured(
            title,
            &machine,
            format!("{kernel:?} is missing: build the guest with `scripts/setup.sh --no-check`"),
        ));
    } else {
        sections = match local {
            Some(place) => {
                let scratch = Scratch::new("virtiofs")?;
                vec![virtiofs::compare(
                    &tools, &kernel, &scratch.0, &machine, &place, plan,
                )]
            }
            None => {
                let mut inside: Vec<OsString> = vec![
                    "virtiofs-inside".into(),
                    "--runs".into(),
                    plan.runs.to_string().into(),
                    "--warmup".into(),
                    plan.warmup.to_string().into(),
                    "--timeout".into(),
                    plan.timeout.as_secs().to_string().into(),
                    "--file-mib".into(),
                    plan.file_mib.to_string().into(),
                    "--files".into(),
                    plan.files.to_string().into(),
                    "--husk".into(),
                    husk.clone().into(),
                    "--qemu".into(),
                    args.qemu.clone().into(),
                    "--kernel".into(),
                    kernel.clone().into(),
                ];
                if let Some(v) = &virtiofsd {
                    inside.push("--virtiofsd".into());
                    inside.push(v.clone().into());
                }
                let rounds = 3 * (plan.warmup + plan.runs) + plan.runs;
                let host_timeout = 300 + rounds as u64 * (plan.timeout.as_secs() / 2 + 60);
                match through_test_host(&root, inside, host_timeout) {
                    Ok(s) => s,
                    Err(why) => vec![unmeasured(
                        &format!("{title} — {IN_TEST_HOST}"),
                        &machine,
                        why,
                    )],
                }
            }
        };
    }
    let mut peers: Vec<(&str, &Path)> = vec![("QEMU", &args.qemu)];
    if let Some(v) = &virtiofsd {
        peers.push(("virtiofsd", v));
    }
    let provenance = provenance_of(&root, &husk, &peers);
    finish(
        &root,
        "virtiofs",
        "husk virtio-fs benchmark: in-process backend against virtiofsd",
        args.out,
        args.smoke,
        provenance,
        sections,
    )
}

/// `husk-bench virtiofs-inside`: measures here, prints result lines.
pub fn run_virtiofs_inside(args: VirtiofsInsideArgs) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let plan = FsPlan {
        warmup: args.warmup,
        runs: args.runs,
        timeout: Duration::from_secs(args.timeout),
        file_mib: args.file_mib,
        files: args.files,
        sample_every: Duration::from_millis(100),
    };
    let tools = FsTools {
        husk: args.husk,
        qemu: args.qemu,
        virtiofsd: args.virtiofsd,
    };
    let scratch = Scratch::new("virtiofs")?;
    let mut sections = vec![virtiofs::compare(
        &tools,
        &args.kernel,
        &scratch.0,
        &machine,
        &inside_place(),
        plan,
    )];
    note_test_host_kvm(&mut sections, &machine);
    Ok(print_sections(&sections))
}

/// Arguments of `husk-bench pods`.
#[derive(Args)]
pub struct PodsArgs {
    /// Recorded `ctr run --rm … true` rounds per side [default: 20; emulated host: 5].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Recorded idle-pod rounds per side [default: 5; emulated host: 3].
    #[arg(long)]
    pub idle_runs: Option<usize>,
    /// Warm-up rounds per side [default: 2; emulated host: 1].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Batch sizes started at once, comma-separated [default: 10,50].
    #[arg(long, value_delimiter = ',')]
    pub parallel: Option<Vec<usize>>,
    /// Rounds per side of each batch [default: 3; emulated host: 1].
    #[arg(long)]
    pub parallel_rounds: Option<usize>,
    /// Idle pods kept running at once for the density part; 0 skips it
    /// [default: 100].
    #[arg(long)]
    pub density: Option<usize>,
    /// Memory of the emulated test host, MiB [default: enough for the
    /// largest batch or the density part: 2048 + 64 per pod, at least 4096].
    #[arg(long)]
    pub host_memory: Option<u64>,
    /// Longest the emulated test host may run, seconds [default: every
    /// command at its worst]; the parts measured by then come back.
    #[arg(long)]
    pub host_timeout: Option<u64>,
    /// One round of everything, 2 pods at once, 2 for density, no warm-up.
    #[arg(long)]
    pub smoke: bool,
    /// Results directory [default: results/pods-<date>/ in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// husk's binary; containerd-shim-husk-v2 must lie next to it
    /// [default: target/release/husk in the workspace].
    #[arg(long)]
    pub husk: Option<PathBuf>,
    /// Guest kernel [default: from husk's config].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Agent initramfs [default: from husk's config].
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Longest one ctr command may take, seconds [default: 60; emulated: 900].
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Arguments of `husk-bench pods-inside` (everything explicit).
#[derive(Args)]
pub struct PodsInsideArgs {
    #[arg(long)]
    runs: usize,
    #[arg(long)]
    idle_runs: usize,
    #[arg(long)]
    warmup: usize,
    #[arg(long, value_delimiter = ',')]
    parallel: Vec<usize>,
    #[arg(long)]
    parallel_rounds: usize,
    #[arg(long)]
    density: usize,
    #[arg(long)]
    timeout: u64,
    #[arg(long)]
    husk: PathBuf,
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initramfs: PathBuf,
}

/// The test host's memory for a plan: 2048 MiB for its own kernel,
/// containerd and page cache, and 64 MiB per pod alive at once (an idle
/// husk pod's guest pages, VMM and shim come to ~45 MiB), at least
/// tests/kvm-host's own default.
pub fn host_memory_for(plan: &PodPlan) -> u64 {
    let most = plan
        .parallel
        .iter()
        .copied()
        .chain([plan.density])
        .max()
        .unwrap_or(0);
    (2048 + 64 * most as u64).max(4096)
}

/// Pacing of memory reads: slower in the emulated host, whose one CPU
/// the sampler would take from the pods.
fn pod_pacing(emulated: bool) -> (Duration, Duration) {
    if emulated {
        (Duration::from_secs(3), Duration::from_millis(100))
    } else {
        (Duration::from_millis(500), Duration::from_millis(20))
    }
}

fn pod_plan(args: &PodsArgs, emulated: bool) -> PodPlan {
    let pick = |smoke: usize, given: Option<usize>, emu: usize, hw: usize| {
        if args.smoke {
            smoke
        } else {
            given.unwrap_or(if emulated { emu } else { hw })
        }
    };
    let (settle, sample_every) = pod_pacing(emulated);
    PodPlan {
        warmup: pick(0, args.warmup, 1, 2),
        runs: pick(1, args.runs, 5, 20),
        idle_runs: pick(1, args.idle_runs, 3, 5),
        parallel: if args.smoke {
            vec![2]
        } else {
            args.parallel.clone().unwrap_or_else(|| vec![10, 50])
        },
        parallel_rounds: pick(1, args.parallel_rounds, 1, 3),
        density: pick(2, args.density, 100, 100),
        timeout: Duration::from_secs(args.timeout.unwrap_or(if emulated { 900 } else { 60 })),
        settle,
        sample_every,
    }
}

/// `husk-bench pods`.
pub fn run_pods(args: PodsArgs) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let machine = Machine::probe();
    let husk = husk_binary(&root, args.husk.as_deref())?;
    let config = husk::config::HuskConfig::default();
    let tools = PodTools {
        husk: husk.clone(),
        kernel: absolute(args.kernel.as_deref().unwrap_or(&config.kernel)),
        initramfs: absolute(args.initramfs.as_deref().unwrap_or(&config.initramfs)),
    };
    let local = here(&machine);
    let emulated = local.as_ref().is_none_or(|p| p.emulated);
    let plan = pod_plan(&args, emulated);
    let title = "Pods through containerd";
    let missing = [&tools.kernel, &tools.initramfs]
        .into_iter()
        .find(|f| !f.is_file());
    let sections = if let Some(file) = missing {
        vec![unmeasured(
            title,
            &machine,
            format!("{file:?} is missing: build the guest with `scripts/setup.sh --no-check`"),
        )]
    } else if let Some(place) = local {
        let scratch = Scratch::new("pods")?;
        pods::measure(&tools, &scratch.0, &machine, &place, &plan, &mut |_| {})
    } else {
        let n = |v: usize| -> OsString { v.to_string().into() };
        let list = plan
            .parallel
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut inside: Vec<OsString> = vec![
            "pods-inside".into(),
            "--runs".into(),
            n(plan.runs),
            "--idle-runs".into(),
            n(plan.idle_runs),
            "--warmup".into(),
            n(plan.warmup),
            "--parallel-rounds".into(),
            n(plan.parallel_rounds),
            "--density".into(),
            n(plan.density),
            "--timeout".into(),
            plan.timeout.as_secs().to_string().into(),
            "--husk".into(),
            husk.clone().into(),
            "--kernel".into(),
            tools.kernel.clone().into(),
            "--initramfs".into(),
            tools.initramfs.clone().into(),
        ];
        if !list.is_empty() {
            inside.push("--parallel".into());
            inside.push(list.into());
        }
        // Every pod at its worst: the test host's boot, each round's
        // start and removal, each batch's pods and the density pods.
        let rounds = 2 * (2 * plan.warmup + plan.runs + plan.idle_runs) as u64;
        let pods_at_once: usize = plan.parallel.iter().sum::<usize>() * plan.parallel_rounds;
        let host_timeout = args.host_timeout.unwrap_or(
            600 + rounds * 90 + 2 * pods_at_once as u64 * 30 + 2 * plan.density as u64 * 40,
        );
        let memory = args.host_memory.unwrap_or_else(|| host_memory_for(&plan));
        match through_test_host_with(&root, inside, host_timeout, Some(memory)) {
            Ok(mut s) => {
                for section in &mut s {
                    section.notes.push(format!(
                        "The test host had {memory} MiB (tests/kvm-host --memory)."
                    ));
                }
                s
            }
            Err(why) => vec![unmeasured(
                &format!("{title} — {IN_TEST_HOST}"),
                &machine,
                why,
            )],
        }
    };
    let peers: [(&str, &Path); 3] = [
        ("containerd", Path::new("containerd")),
        ("runc", Path::new("runc")),
        ("ctr", Path::new("ctr")),
    ];
    let provenance = provenance_of(&root, &husk, &peers);
    finish(
        &root,
        "pods",
        "husk pod benchmark: containerd with husk's shim against runc's",
        args.out,
        args.smoke,
        provenance,
        sections,
    )
}

/// `husk-bench pods-inside`: measures here, prints result lines.
pub fn run_pods_inside(args: PodsInsideArgs) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let (settle, sample_every) = pod_pacing(true);
    let plan = PodPlan {
        warmup: args.warmup,
        runs: args.runs,
        idle_runs: args.idle_runs,
        parallel: args.parallel,
        parallel_rounds: args.parallel_rounds,
        density: args.density,
        timeout: Duration::from_secs(args.timeout),
        settle,
        sample_every,
    };
    let tools = PodTools {
        husk: args.husk,
        kernel: args.kernel,
        initramfs: args.initramfs,
    };
    let scratch = Scratch::new("pods")?;
    let sections = pods::measure(
        &tools,
        &scratch.0,
        &machine,
        &inside_place(),
        &plan,
        &mut |s| {
            let mut s = [s.clone()];
            note_test_host_kvm(&mut s, &machine);
            print_sections(&s);
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
    );
    Ok(if sections.iter().all(Section::measured_anything) {
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
        pods: PodsArgs,
    }

    fn plan(args: &[&str], emulated: bool) -> PodPlan {
        let all = std::iter::once("pods").chain(args.iter().copied());
        pod_plan(&Wrap::try_parse_from(all).unwrap().pods, emulated)
    }

    #[test]
    fn pod_plans_by_place_smoke_and_flags() {
        let emu = plan(&[], true);
        assert_eq!((emu.warmup, emu.runs, emu.idle_runs), (1, 5, 3));
        assert_eq!(
            (emu.parallel.clone(), emu.parallel_rounds),
            (vec![10, 50], 1)
        );
        assert_eq!(emu.density, 100);
        let smoke = plan(&["--smoke", "--density", "40"], true);
        assert_eq!(
            (smoke.warmup, smoke.runs, smoke.parallel.clone()),
            (0, 1, vec![2])
        );
        assert_eq!(smoke.density, 2);
        let given = plan(
            &["--parallel", "4,8", "--density", "0", "--runs", "7"],
            false,
        );
        assert_eq!(
            (given.parallel.clone(), given.density, given.runs),
            (vec![4, 8], 0, 7)
        );
        assert_eq!(given.parallel_rounds, 3);
    }

    #[test]
    fn the_test_host_gets_memory_for_the_most_pods_at_once() {
        assert_eq!(host_memory_for(&plan(&[], true)), 2048 + 64 * 100);
        assert_eq!(host_memory_for(&plan(&["--smoke"], true)), 4096);
        let batches = plan(&["--parallel", "10,60", "--density", "20"], true);
        assert_eq!(host_memory_for(&batches), 2048 + 64 * 60);
    }
}
