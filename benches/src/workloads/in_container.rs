//! What the network, cpu and fileio workloads share: their common
//! arguments, the run-here-or-in-the-test-host driver, the runtime command
//! lines, and the helpers that put a dynamically linked tool (iperf3, fio)
//! into a busybox rootfs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Args;

use crate::machine::Machine;
use crate::procs::run_cli;
use crate::subcommands::{
    finish, here, husk_binary, inside_place, note_test_host_kvm, print_sections, through_test_host,
    unmeasured, Scratch,
};
use crate::workloads::containers::{Place, Tools};
use crate::workloads::{Budget, Figure, Section, Side, Unit};
use crate::{provenance_of, workspace_root, IN_TEST_HOST};

/// Rounds and the longest one command may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Unrecorded rounds first.
    pub warmup: usize,
    /// Recorded rounds per side.
    pub runs: usize,
    /// Longest one command may take.
    pub timeout: Duration,
}

/// Arguments every one of `network`, `cpu` and `fileio` takes.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Recorded rounds per side [default: 10; emulated host: 3].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Warm-up rounds per side [default: 1; emulated host: 0].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// One short round without warm-up, to keep the harness working.
    #[arg(long)]
    pub smoke: bool,
    /// Results directory [default: results/<workload>-<date>/ in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// husk's binary [default: target/release/husk in the workspace].
    #[arg(long)]
    pub husk: Option<PathBuf>,
    /// runc's binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// Longest one command may take, seconds [default: 120; emulated: 900].
    #[arg(long)]
    pub timeout: Option<u64>,
}

impl CommonArgs {
    /// The schedule where the figures are measured.
    pub fn schedule(&self, emulated: bool) -> Schedule {
        let pick = |smoke: usize, given: Option<usize>, emu: usize, hw: usize| {
            if self.smoke {
                smoke
            } else {
                given.unwrap_or(if emulated { emu } else { hw })
            }
        };
        Schedule {
            warmup: pick(0, self.warmup, 0, 1),
            runs: pick(1, self.runs, 3, 10),
            timeout: Duration::from_secs(self.timeout.unwrap_or(if emulated { 900 } else { 120 })),
        }
    }
}

/// The arguments of a hidden `*-inside` subcommand that [`CommonArgs`]
/// become (everything explicit).
#[derive(Args, Clone, Debug)]
pub struct InsideCommon {
    #[arg(long)]
    runs: usize,
    #[arg(long)]
    warmup: usize,
    #[arg(long)]
    timeout: u64,
    #[arg(long)]
    husk: PathBuf,
    #[arg(long)]
    runc: PathBuf,
}

impl InsideCommon {
    /// The schedule it carries.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            warmup: self.warmup,
            runs: self.runs,
            timeout: Duration::from_secs(self.timeout),
        }
    }

    /// The CLIs it names.
    pub fn tools(&self) -> Tools {
        Tools {
            husk: self.husk.clone(),
            runc: self.runc.clone(),
        }
    }
}

/// The `*-inside` command line of a schedule and the tools, `extra`
/// (the workload's own flags) appended.
pub fn inside_command(
    subcommand: &str,
    sched: Schedule,
    tools: &Tools,
    extra: Vec<OsString>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        subcommand.into(),
        "--runs".into(),
        sched.runs.to_string().into(),
        "--warmup".into(),
        sched.warmup.to_string().into(),
        "--timeout".into(),
        sched.timeout.as_secs().to_string().into(),
        "--husk".into(),
        tools.husk.clone().into(),
        "--runc".into(),
        tools.runc.clone().into(),
    ];
    v.extend(extra);
    v
}

/// Where a workload runs, found out before its plan is made.
pub struct Outer {
    root: PathBuf,
    machine: Machine,
    /// husk and runc.
    pub tools: Tools,
    local: Option<Place>,
    /// Whether the figures come from an emulated host.
    pub emulated: bool,
    /// The rounds.
    pub sched: Schedule,
    out: Option<PathBuf>,
    smoke: bool,
}

/// What names a workload's report.
pub struct Naming<'a> {
    /// Subcommand and results directory name (`network`).
    pub name: &'a str,
    /// Heading of results.md.
    pub report_title: &'a str,
    /// Heading of a section that could not be measured.
    pub section_title: &'a str,
}

impl Outer {
    /// Probes the machine and finds husk.
    pub fn new(args: &CommonArgs) -> anyhow::Result<Self> {
        let root = workspace_root();
        let machine = Machine::probe();
        let husk = husk_binary(&root, args.husk.as_deref())?;
        let local = here(&machine);
        let emulated = local.as_ref().is_none_or(|p| p.emulated);
        Ok(Self {
            root,
            sched: args.schedule(emulated),
            machine,
            tools: Tools {
                husk,
                runc: args.runc.clone(),
            },
            local,
            emulated,
            out: args.out.clone(),
            smoke: args.smoke,
        })
    }

    /// Measures here (`measure(tools, scratch dir, machine, place)`) when
    /// this machine boots Linux guests, else runs `inside` (the hidden
    /// subcommand's arguments) in tests/kvm-host for at most
    /// `host_timeout` seconds; writes the report.
    pub fn run(
        self,
        naming: Naming<'_>,
        inside: Vec<OsString>,
        host_timeout: u64,
        measure: impl FnOnce(&Tools, &Path, &Machine, &Place) -> Vec<Section>,
    ) -> anyhow::Result<ExitCode> {
        let sections = match &self.local {
            Some(place) => {
                let scratch = Scratch::new(naming.name)?;
                measure(&self.tools, &scratch.0, &self.machine, place)
            }
            None => match through_test_host(&self.root, inside, host_timeout) {
                Ok(s) => s,
                Err(why) => vec![unmeasured(
                    &format!("{} — {IN_TEST_HOST}", naming.section_title),
                    &self.machine,
                    why,
                )],
            },
        };
        let provenance = provenance_of(&self.root, &self.tools.husk, &[("runc", &self.tools.runc)]);
        finish(
            &self.root,
            naming.name,
            naming.report_title,
            self.out,
            self.smoke,
            provenance,
            sections,
        )
    }
}

/// The body of a hidden `*-inside` subcommand: measures in the test host
/// and prints the result lines.
pub fn run_inside(
    name: &str,
    measure: impl FnOnce(&Path, &Machine, &Place) -> Vec<Section>,
) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let scratch = Scratch::new(name)?;
    let mut sections = measure(&scratch.0, &machine, &inside_place());
    note_test_host_kvm(&mut sections, &machine);
    Ok(print_sections(&sections))
}

/// A runtime's command line with its own state root under `state`.
pub fn runtime(tools: &Tools, side: Side, state: &Path) -> Command {
    let mut c = Command::new(match side {
        Side::Husk => &tools.husk,
        Side::Peer => &tools.runc,
    });
    c.arg("--root").arg(state.join(side.name()));
    c
}

/// `run --bundle BUNDLE ID`, to the container's exit.
pub fn run_command(tools: &Tools, side: Side, state: &Path, bundle: &Path, id: &str) -> Command {
    let mut c = runtime(tools, side, state);
    c.args(["run", "--bundle"]).arg(bundle).arg(id);
    c
}

/// The budget of a figure that DESIGN.md gives no budget.
pub fn no_budget(place: &Place) -> Budget {
    Budget::NotApplicable(if place.emulated {
        "emulated".into()
    } else {
        "none in DESIGN.md".into()
    })
}

/// A figure compared against runc.
pub fn figure(
    id: &str,
    title: &str,
    place: &Place,
    unit: Unit,
    husk: Vec<f64>,
    peer: Vec<f64>,
    budget: Budget,
) -> Figure {
    Figure {
        id: id.into(),
        title: title.into(),
        place: place.name.clone(),
        unit,
        peer: "runc".into(),
        husk,
        peer_samples: peer,
        budget,
    }
}

/// A section that could not be measured.
pub fn not_measured(title: String, machine: &Machine, sched: Schedule, why: String) -> Section {
    eprintln!("husk-bench: {title}: not measured: {why}");
    Section {
        title,
        machine: machine.clone(),
        warmup: sched.warmup,
        runs: 0,
        figures: Vec::new(),
        notes: vec![format!("not measured: {why}")],
        commands: Vec::new(),
    }
}

/// Links busybox `applets` into `rootfs/bin` (next to `make_bundle`'s).
pub fn link_applets(rootfs: &Path, applets: &[&str]) -> Result<(), String> {
    for applet in applets {
        let link = rootfs.join("bin").join(applet);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(|e| format!("cannot link {link:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Changes the bundle's config.json with `edit`.
pub fn edit_spec(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> Result<(), String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{path:?} is not JSON: {e}"))?;
    edit(&mut spec);
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {path:?}: {e}"))
}

/// The files the dynamic loader maps for a binary, from `ldd`'s output:
/// every `name => /path (addr)` and the loader's own `/path (addr)` line
/// (the vDSO and libraries `ldd` could not find have no path).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Copies the dynamically linked `binary` into `rootfs` at the same path,
/// with every library `ldd` lists and the loader, each at the path `ldd`
/// names (symbolic links followed: the copies are plain files). Returns
/// the bytes copied.
pub fn copy_with_libs(binary: &Path, rootfs: &Path) -> Result<u64, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run ldd {binary:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ldd {binary:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if text.contains("not found") {
        return Err(format!("{binary:?} misses libraries:\n{text}"));
    }
    let mut total = 0;
    for file in std::iter::once(binary.to_path_buf()).chain(parse_ldd(&text)) {
        let inside = rootfs.join(file.strip_prefix("/").unwrap_or(&file));
        if inside.exists() {
            continue;
        }
        if let Some(dir) = inside.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        }
        total += std::fs::copy(&file, &inside)
            .map_err(|e| format!("cannot copy {file:?} to {inside:?}: {e}"))?;
    }
    Ok(total)
}

/// A container of one side left running with `run --detach`, stopped and
/// deleted when dropped.
pub struct Detached<'a> {
    tools: &'a Tools,
    side: Side,
    state: PathBuf,
    id: String,
}

impl<'a> Detached<'a> {
    /// `run --detach --bundle BUNDLE ID`.
    pub fn start(
        tools: &'a Tools,
        side: Side,
        state: &Path,
        bundle: &Path,
        id: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut c = runtime(tools, side, state);
        c.args(["run", "--detach", "--bundle"]).arg(bundle).arg(&id);
        // Made first, so that a half-started container is deleted too.
        let me = Self {
            tools,
            side,
            state: state.to_path_buf(),
            id,
        };
        run_cli(&mut c, timeout, None)?;
        Ok(me)
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let mut kill = runtime(self.tools, self.side, &self.state);
        kill.args(["kill", &self.id, "KILL"]);
        let _ = run_cli(&mut kill, Duration::from_secs(60), None);
        let mut delete = runtime(self.tools, self.side, &self.state);
        delete.args(["delete", "--force", &self.id]);
        if let Err(e) = run_cli(&mut delete, Duration::from_secs(300), None) {
            eprintln!("husk-bench: {} delete {}: {e}", self.side.name(), self.id);
        }
    }
}

/// A command line as a shell would take it: arguments with spaces or
/// shell characters in single quotes.
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dynamically linked tool every bench host has (scripts/setup.sh).
    const IPERF3: &str = "/usr/bin/iperf3";

    #[test]
    fn ldd_lines_give_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007fb69fcd4000)\n\
             \tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007fb69fc8c000)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fb69faaa000)\n\
             \tlibgone.so.1 => not found\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007fb69fcd6000)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fb69faaa000)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libiperf.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn a_binary_runs_from_its_copied_rootfs() {
        // scripts/setup.sh installs iperf3.
        assert!(Path::new(IPERF3).is_file(), "{IPERF3} is missing");
        let dir = std::env::temp_dir().join(format!("husk-bench-libs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = copy_with_libs(Path::new(IPERF3), &dir).unwrap();
        assert!(bytes > 0);
        assert!(dir.join("usr/bin/iperf3").is_file());
        assert!(dir.join("lib64/ld-linux-x86-64.so.2").is_file());
        // Twice is fine (a second workload in the same bundle).
        assert_eq!(copy_with_libs(Path::new(IPERF3), &dir).unwrap(), 0);
        // Only root may chroot; the copy is checked above either way.
        let ran = Command::new("/usr/sbin/chroot")
            .arg(&dir)
            .args([IPERF3, "--version"])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            assert!(ran.status.success(), "{ran:?}");
            assert!(String::from_utf8_lossy(&ran.stdout).starts_with("iperf 3"));
        }
    }
}
