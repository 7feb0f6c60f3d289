//! Containers through the CLI, against runc on the same bundle and the
//! same host:
//!
//! - [`start`]: `husk run` vs `runc run` of `/bin/true`, launch → exit of
//!   the CLI, and the host memory of all the processes of the run.
//! - [`exec`]: `husk exec` vs `runc exec` of `/bin/true` into a running
//!   container, and the host memory of the idle container itself.
//!
//! Times come from rounds without memory sampling (reading /proc costs
//! CPU that the emulated test host does not have to spare); memory comes
//! from further rounds sampled every few milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::machine::Machine;
use crate::procs::{run_cli, Group, Sampler};
use crate::workloads::boot::{show, GUEST_MIB};
use crate::workloads::{interleave, mib, millis, Budget, Figure, Section, Side, Unit};

/// The two CLIs compared.
#[derive(Clone, Debug)]
pub struct Tools {
    /// husk's CLI.
    pub husk: PathBuf,
    /// runc.
    pub runc: PathBuf,
}

/// How many rounds, and how long one command may take.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Unrecorded timing rounds first.
    pub warmup: usize,
    /// Recorded timing rounds.
    pub runs: usize,
    /// Memory rounds (sampled, not timed).
    pub mem_runs: usize,
    /// Recorded `exec` rounds.
    pub exec_runs: usize,
    /// Longest one command may take.
    pub timeout: Duration,
    /// How often memory is sampled.
    pub sample_every: Duration,
}

/// Where a workload ran and whether times mean anything there.
#[derive(Clone, Debug)]
pub struct Place {
    /// As the report says it.
    pub name: String,
    /// Software emulation sets the pace: no time budgets.
    pub emulated: bool,
}

/// The static busybox both rootfs copies come from (busybox-static).
const BUSYBOX: &str = "/bin/busybox";
/// The applets the bundles need.
const APPLETS: &[&str] = &["sh", "true", "sleep", "cat", "ls"];

/// Makes `dir/rootfs` (busybox and a few applets) and `dir/config.json`:
/// runc's own default spec (`runc spec`), running `args`, without a
/// terminal, with a writable root and no ambient capabilities.
pub fn make_bundle(runc: &Path, dir: &Path, args: &[&str]) -> Result<(), String> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(sub))
            .map_err(|e| format!("cannot create {:?}: {e}", rootfs.join(sub)))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .map_err(|e| format!("cannot copy {BUSYBOX} (apt-get install busybox-static): {e}"))?;
    for applet in APPLETS {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(|e| format!("cannot link {link:?}: {e}"))?;
        }
    }
    let config = dir.join("config.json");
    let _ = std::fs::remove_file(&config);
    let out = Command::new(runc)
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {runc:?} spec: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "runc spec failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = std::fs::read(&config).map_err(|e| format!("cannot read {config:?}: {e}"))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("runc's spec is not JSON: {e}"))?;
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"]["readonly"] = serde_json::json!(false);
    // runc's default lists ambient capabilities without inheritable ones,
    // which the kernel cannot raise (runc lets that pass, husk's agent
    // refuses the spec): both sides run without ambient capabilities.
    if let Some(caps) = spec["process"]["capabilities"].as_object_mut() {
        caps.remove("ambient");
    }
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    std::fs::write(&config, text).map_err(|e| format!("cannot write {config:?}: {e}"))
}

/// A runtime's command line with its own state root.
fn cli(tools: &Tools, side: Side, state: &Path) -> Command {
    let mut c = Command::new(match side {
        Side::Husk => &tools.husk,
        Side::Peer => &tools.runc,
    });
    c.arg("--root").arg(state.join(side.name()));
    c
}

fn run_command(tools: &Tools, side: Side, state: &Path, bundle: &Path, id: &str) -> Command {
    let mut c = cli(tools, side, state);
    c.args(["run", "--bundle"]).arg(bundle).arg(id);
    c
}

/// One sampled run: the group's peaks.
struct MemRun {
    group: Group,
}

fn start_figures(
    place: &Place,
    times: &crate::workloads::Interleaved<f64>,
    mem: &crate::workloads::Interleaved<MemRun>,
) -> Vec<Figure> {
    let peer = "runc".to_string();
    let time_budget = if place.emulated {
        Budget::NotApplicable("emulated".into())
    } else {
        Budget::RatioAtMost(1.5)
    };
    let mem_figure =
        |id: &str, title: &str, with_peer: bool, pick: &dyn Fn(&Group) -> u64| Figure {
            id: id.into(),
            title: title.into(),
            place: place.name.clone(),
            unit: Unit::MiB,
            peer: if with_peer {
                peer.clone()
            } else {
                String::new()
            },
            husk: mem.husk.iter().map(|r| mib(pick(&r.group))).collect(),
            peer_samples: if with_peer {
                mem.peer.iter().map(|r| mib(pick(&r.group))).collect()
            } else {
                Vec::new()
            },
            budget: Budget::NotApplicable("guest memory included".into()),
        };
    let mut host_only = mem_figure(
        "start.rss_host",
        "run /bin/true: peak Σ RSS outside guest RAM",
        true,
        &|g| g.peak_host_rss_kib,
    );
    host_only.budget = Budget::NotApplicable("no budget for one run".into());
    vec![
        Figure {
            id: "start.time".into(),
            title: "run /bin/true: launch → CLI exit".into(),
            place: place.name.clone(),
            unit: Unit::Millis,
            peer: peer.clone(),
            husk: times.husk.clone(),
            peer_samples: times.peer.clone(),
            budget: time_budget,
        },
        mem_figure(
            "start.hwm_sum",
            "run /bin/true: Σ peak RSS (VmHWM) of every process",
            true,
            &Group::hwm_sum_kib,
        ),
        mem_figure(
            "start.pss_peak",
            "run /bin/true: peak Σ PSS of every process",
            true,
            &|g| g.peak_pss.pss_kib,
        ),
        host_only,
        mem_figure(
            "start.guest_touched",
            "run /bin/true: guest RAM touched (VMM RSS in the guest-RAM mapping)",
            false,
            &|g| g.peak_guest_rss_kib,
        ),
    ]
}

/// `husk run` vs `runc run` of /bin/true on one bundle in `work`.
pub fn start(tools: &Tools, work: &Path, machine: &Machine, place: &Place, plan: Plan) -> Section {
    let title = format!(
        "Container start: run /bin/true, husk vs runc — {}",
        place.name
    );
    let bundle = work.join("bundle-true");
    let state = work.join("state");
    if let Err(why) = make_bundle(&tools.runc, &bundle, &["/bin/true"]) {
        return not_measured(title, machine, plan, why);
    }
    let mut n = 0usize;
    let mut next_id = |side: Side| {
        n += 1;
        format!("hb-start-{}-{n}", side.name())
    };
    let times = interleave(
        "containers/start",
        plan.warmup,
        plan.runs,
        |side, _| {
            let id = next_id(side);
            let mut cmd = run_command(tools, side, &state, &bundle, &id);
            run_cli(&mut cmd, plan.timeout, None).map(|r| millis(r.took))
        },
        |t| format!("{t:.0} ms"),
    );
    let mem = interleave(
        "containers/start memory",
        0,
        plan.mem_runs,
        |side, _| {
            let id = next_id(side);
            let mut cmd = run_command(tools, side, &state, &bundle, &id);
            let ran = run_cli(
                &mut cmd,
                plan.timeout,
                Some((plan.sample_every, GUEST_MIB * 1024)),
            )?;
            let group = ran.group.unwrap_or_default();
            Ok(MemRun { group })
        },
        |r| {
            format!(
                "Σ VmHWM {:.1} MiB, peak Σ PSS {:.1} MiB over {}",
                mib(r.group.hwm_sum_kib()),
                mib(r.group.peak_pss.pss_kib),
                r.group.names()
            )
        },
    );
    let mut notes: Vec<String> = times.failures.clone();
    notes.extend(mem.failures.iter().cloned());
    let seen = |runs: &[MemRun]| {
        runs.iter()
            .max_by_key(|r| r.group.seen.len())
            .map_or_else(|| "none".to_string(), |r| r.group.names())
    };
    notes.push(format!(
        "Processes sampled: husk: {}; runc: {}. The `run` CLI process and all its descendants, \
         found through /proc/PID/task/*/children every {} ms in {} separate, untimed round(s) per \
         side.",
        seen(&mem.husk),
        seen(&mem.peer),
        plan.sample_every.as_millis(),
        plan.mem_runs
    ));
    notes.push(format!(
        "Σ VmHWM adds each process's own peak RSS (an upper bound of the group's peak); PSS and \
         the guest split are the highest sums seen in one sample. Guest RAM touched is the VMM's \
         RSS in mappings larger than three quarters of {GUEST_MIB} MiB (the guest's memory); the rest is the VMM's \
         own and the CLI's and monitor's. Under runc nothing is a guest: all of it is host memory."
    ));
    notes.push(
        "Time runs from spawning the CLI to its exit (pidfd), measured from the host the \
         containers run on, never from a guest clock."
            .into(),
    );
    if place.emulated {
        notes.push(
            "In the emulated test host every husk start boots a Linux guest under nested KVM on a \
             CPU ~12–17× slower than the host's, while runc forks on the (emulated) host itself: \
             the husk/runc start ratio is decided by emulation, so its budget (≤ 1.5× runc on \
             hardware KVM) reads n/a (emulated); the figure is recorded."
                .into(),
        );
    }
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.warmup,
        runs: plan.runs,
        figures: start_figures(place, &times, &mem),
        notes,
        commands: vec![
            (
                "husk".into(),
                show(&run_command(tools, Side::Husk, &state, &bundle, "ID")),
            ),
            (
                "runc".into(),
                show(&run_command(tools, Side::Peer, &state, &bundle, "ID")),
            ),
        ],
    }
}

/// A container of one side left running for `exec`.
struct Running {
    side: Side,
    id: String,
}

impl Running {
    /// `run --detach` of the sleeping bundle.
    fn start(
        tools: &Tools,
        side: Side,
        state: &Path,
        bundle: &Path,
        plan: Plan,
    ) -> Result<Self, String> {
        let id = format!("hb-exec-{}", side.name());
        let mut c = cli(tools, side, state);
        c.args(["run", "--detach", "--bundle"]).arg(bundle).arg(&id);
        run_cli(&mut c, plan.timeout, None)?;
        Ok(Self { side, id })
    }

    /// The host pid standing for the container (husk: the monitor, whose
    /// child is the VMM; runc: the container's process), from `state`.
    fn pid(&self, tools: &Tools, state: &Path) -> Result<u32, String> {
        let mut c = cli(tools, self.side, state);
        c.arg("state").arg(&self.id);
        let ran = run_cli(&mut c, Duration::from_secs(60), None)?;
        let json_start = ran.output.find('{').unwrap_or(0);
        let v: serde_json::Value = serde_json::from_str(&ran.output[json_start..])
            .map_err(|e| format!("{} state: not JSON: {e}", self.side.name()))?;
        v["pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .map(|p| p as u32)
            .ok_or_else(|| format!("{} state has no pid: {}", self.side.name(), ran.output))
    }

    fn stop(&self, tools: &Tools, state: &Path) {
        let mut kill = cli(tools, self.side, state);
        kill.args(["kill", &self.id, "KILL"]);
        let _ = run_cli(&mut kill, Duration::from_secs(60), None);
        let mut delete = cli(tools, self.side, state);
        delete.args(["delete", "--force", &self.id]);
        if let Err(e) = run_cli(&mut delete, Duration::from_secs(120), None) {
            eprintln!("containers/exec: {} delete: {e}", self.side.name());
        }
    }
}

fn exec_command(tools: &Tools, side: Side, state: &Path, id: &str) -> Command {
    let mut c = cli(tools, side, state);
    c.args(["exec", id, "/bin/true"]);
    c
}

/// One sampled exec and, just before it, the idle container's memory.
struct ExecMem {
    exec: Group,
    idle: Group,
}

/// `husk exec` vs `runc exec` of /bin/true into a running container of
/// each, and the host memory of each idle container.
pub fn exec(tools: &Tools, work: &Path, machine: &Machine, place: &Place, plan: Plan) -> Section {
    let title = format!(
        "Container exec: exec /bin/true, husk vs runc — {}",
        place.name
    );
    let bundle = work.join("bundle-sleep");
    let state = work.join("state");
    if let Err(why) = make_bundle(&tools.runc, &bundle, &["/bin/sleep", "100000"]) {
        return not_measured(title, machine, plan, why);
    }
    let husk = Running::start(tools, Side::Husk, &state, &bundle, plan);
    let runc = Running::start(tools, Side::Peer, &state, &bundle, plan);
    let (husk, runc) = match (husk, runc) {
        (Ok(h), Ok(r)) => (h, r),
        (h, r) => {
            let mut why = Vec::new();
            for (side, res) in [("husk", h), ("runc", r)] {
                match res {
                    Ok(c) => c.stop(tools, &state),
                    Err(e) => why.push(format!("{side} run --detach failed: {e}")),
                }
            }
            return not_measured(title, machine, plan, why.join("; "));
        }
    };
    let pids = [husk.pid(tools, &state), runc.pid(tools, &state)];
    let running = |side: Side| if side == Side::Husk { &husk } else { &runc };
    let times = interleave(
        "containers/exec",
        plan.warmup,
        plan.exec_runs,
        |side, _| {
            let mut cmd = exec_command(tools, side, &state, &running(side).id);
            run_cli(&mut cmd, plan.timeout, None).map(|r| millis(r.took))
        },
        |t| format!("{t:.0} ms"),
    );
    let mem = interleave(
        "containers/exec memory",
        0,
        plan.mem_runs,
        |side, _| {
            let pid = pids[usize::from(side == Side::Peer)].clone()?;
            let guest_kib = if side == Side::Husk {
                GUEST_MIB * 1024
            } else {
                0
            };
            let idle = Sampler::start(vec![pid], plan.sample_every, guest_kib);
            std::thread::sleep(plan.sample_every * 3);
            let idle = idle.stop(guest_kib);
            let mut cmd = exec_command(tools, side, &state, &running(side).id);
            let ran = run_cli(&mut cmd, plan.timeout, Some((plan.sample_every, guest_kib)))?;
            Ok(ExecMem {
                exec: ran.group.unwrap_or_default(),
                idle,
            })
        },
        |r| {
            format!(
                "exec Σ VmHWM {:.1} MiB; idle container Σ PSS {:.1} MiB over {}",
                mib(r.exec.hwm_sum_kib()),
                mib(r.idle.peak_pss.pss_kib),
                r.idle.names()
            )
        },
    );
    husk.stop(tools, &state);
    runc.stop(tools, &state);

    let mut notes: Vec<String> = times.failures.clone();
    notes.extend(mem.failures.iter().cloned());
    for (side, pid) in [("husk", &pids[0]), ("runc", &pids[1])] {
        if let Err(e) = pid {
            notes.push(format!("{side}: no pid for the idle container: {e}"));
        }
    }
    let names = |runs: &[ExecMem], pick: fn(&ExecMem) -> &Group| {
        runs.iter()
            .map(pick)
            .max_by_key(|g| g.seen.len())
            .map_or_else(|| "none".to_string(), Group::names)
    };
    notes.push(format!(
        "The idle container is `sleep 100000` started with `run --detach`; its memory is the \
         process `state` names and its descendants (husk: {}; runc: {}), sampled just before an \
         exec. For husk that is the monitor and the VMM, guest pages touched included (PSS \
         counts them: they are the VMM's private memory); DESIGN.md budgets ≤ 40 MiB per idle \
         pod. The exec figures sample the exec CLI and its descendants (husk: {}; runc: {}).",
        names(&mem.husk, |m| &m.idle),
        names(&mem.peer, |m| &m.idle),
        names(&mem.husk, |m| &m.exec),
        names(&mem.peer, |m| &m.exec),
    ));
    if place.emulated {
        notes.push(
            "Emulated test host: a husk exec crosses vsock into a nested guest whose CPU is \
             ~17× slower than the host's, so exec times show the shape only."
                .into(),
        );
    }
    let peer = "runc".to_string();
    let mem_figure = |id: &str, title: &str, budget, pick: &dyn Fn(&ExecMem) -> u64| Figure {
        id: id.into(),
        title: title.into(),
        place: place.name.clone(),
        unit: Unit::MiB,
        peer: peer.clone(),
        husk: mem.husk.iter().map(|r| mib(pick(r))).collect(),
        peer_samples: mem.peer.iter().map(|r| mib(pick(r))).collect(),
        budget,
    };
    let mut figures = vec![
        Figure {
            id: "exec.time".into(),
            title: "exec /bin/true: launch → CLI exit".into(),
            place: place.name.clone(),
            unit: Unit::Millis,
            peer: peer.clone(),
            husk: times.husk.clone(),
            peer_samples: times.peer.clone(),
            budget: Budget::NotApplicable(if place.emulated {
                "emulated".into()
            } else {
                "none in DESIGN.md".into()
            }),
        },
        mem_figure(
            "exec.hwm_sum",
            "exec /bin/true: Σ peak RSS (VmHWM) of the exec's processes",
            Budget::NotApplicable("none in DESIGN.md".into()),
            &|r| r.exec.hwm_sum_kib(),
        ),
        mem_figure(
            "idle.pss",
            "idle container: Σ PSS of its host processes (guest pages touched included)",
            Budget::AtMost(40.0),
            &|r| r.idle.peak_pss.pss_kib,
        ),
    ];
    figures.push(Figure {
        peer: String::new(),
        peer_samples: Vec::new(),
        ..mem_figure(
            "idle.guest_touched",
            "idle container: guest RAM touched (VMM RSS in the guest-RAM mapping)",
            Budget::NotApplicable("part of the idle PSS".into()),
            &|r| r.idle.peak_guest_rss_kib,
        )
    });
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.warmup,
        runs: plan.exec_runs,
        figures,
        notes,
        commands: vec![
            (
                "husk".into(),
                show(&exec_command(tools, Side::Husk, &state, "ID")),
            ),
            (
                "runc".into(),
                show(&exec_command(tools, Side::Peer, &state, "ID")),
            ),
        ],
    }
}

fn not_measured(title: String, machine: &Machine, plan: Plan, why: String) -> Section {
    eprintln!("husk-bench: {title}: not measured: {why}");
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.warmup,
        runs: 0,
        figures: Vec::new(),
        notes: vec![format!("not measured: {why}")],
        commands: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_runcs_spec_running_the_args() {
        if !Path::new(BUSYBOX).is_file() || Command::new("runc").arg("--version").output().is_err()
        {
            eprintln!("skipped: needs {BUSYBOX} and runc");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-bench-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_bundle(Path::new("runc"), &dir, &["/bin/sleep", "5"]).unwrap();
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(
            spec["process"]["args"],
            serde_json::json!(["/bin/sleep", "5"])
        );
        assert_eq!(spec["process"]["terminal"], serde_json::json!(false));
        assert_eq!(spec["root"]["path"], serde_json::json!("rootfs"));
        assert!(spec["process"]["capabilities"].get("ambient").is_none());
        assert!(dir.join("rootfs/bin/true").exists());
        // The same call again (a second workload in the same dir) works.
        make_bundle(Path::new("runc"), &dir, &["/bin/true"]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commands_name_the_bundle_and_a_state_root_per_side() {
        let tools = Tools {
            husk: "husk".into(),
            runc: "runc".into(),
        };
        let line = show(&run_command(
            &tools,
            Side::Peer,
            Path::new("/w/state"),
            Path::new("/w/b"),
            "x",
        ));
        assert_eq!(line, "runc --root /w/state/peer run --bundle /w/b x");
        let line = show(&exec_command(&tools, Side::Husk, Path::new("/s"), "c"));
        assert_eq!(line, "husk --root /s/husk exec c /bin/true");
    }
}
