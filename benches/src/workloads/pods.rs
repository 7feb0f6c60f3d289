//! Pods through containerd, husk's shim against runc's, on one private
//! containerd and one locally built busybox image:
//!
//! - [`run_rm`]: `ctr run --rm IMAGE ID true`, launch → `ctr` exit.
//! - [`idle`]: `ctr run -d` of `sleep` (launch → task running: the single
//!   start the parallel figures are held against), then the idle pod's host
//!   memory: Σ PSS of its shim and every descendant (husk: the VMM and any
//!   helper; runc: the container's process), split into guest RAM touched
//!   and the rest.
//! - [`parallel`]: N pods started at once, each start timed, every pod then
//!   asked for an exec that must print its token (healthy).
//! - [`density`]: N idle pods started one after another, all healthy, then
//!   their memory per pod.
//!
//! Every part runs husk, runc, husk, runc … in one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::containerd::{
    comm_of, parent_of, parse_task_list, Containerd, HUSK_RUNTIME, RUNC_RUNTIME,
};
use crate::machine::Machine;
use crate::procs::{run_cli, Group, Sampler};
use crate::stats::{percentile, Summary};
use crate::workloads::boot::{show, GUEST_MIB};
use crate::workloads::containers::Place;
use crate::workloads::{interleave, mib, millis, Budget, Figure, Section, Side, Unit};

/// The image every pod runs.
pub const IMAGE: &str = "docker.io/library/husk-bench-busybox:latest";

/// How many rounds and pods.
#[derive(Clone, Debug)]
pub struct PodPlan {
    /// Unrecorded rounds before `run --rm` and the idle rounds.
    pub warmup: usize,
    /// Recorded `ctr run --rm` rounds per side.
    pub runs: usize,
    /// Recorded idle-pod rounds per side (single start and memory).
    pub idle_runs: usize,
    /// Batch sizes of the parallel starts.
    pub parallel: Vec<usize>,
    /// Rounds per side of each batch size.
    pub parallel_rounds: usize,
    /// Idle pods started one after another (0: no density part).
    pub density: usize,
    /// Longest one `ctr` command may take.
    pub timeout: Duration,
    /// How long a pod is left alone before its memory is read.
    pub settle: Duration,
    /// How often memory is sampled.
    pub sample_every: Duration,
}

/// The containerd under test and the names of things.
pub struct Pods<'a> {
    /// The private containerd.
    pub containerd: &'a Containerd,
    /// The machine measured on.
    pub machine: &'a Machine,
    /// Where, and whether emulated.
    pub place: &'a Place,
    /// Rounds and sizes.
    pub plan: &'a PodPlan,
    next: AtomicUsize,
}

impl<'a> Pods<'a> {
    /// Pods on `containerd`, whose image is already imported.
    pub fn new(
        containerd: &'a Containerd,
        machine: &'a Machine,
        place: &'a Place,
        plan: &'a PodPlan,
    ) -> Self {
        Self {
            containerd,
            machine,
            place,
            plan,
            next: AtomicUsize::new(0),
        }
    }

    fn id(&self, side: Side, what: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("hb-{what}-{}-{n}", side.name())
    }

    fn ctr(&self, args: &[&str]) -> Command {
        self.containerd.ctr(args)
    }

    fn guest_kib(side: Side) -> u64 {
        if side == Side::Husk {
            GUEST_MIB * 1024
        } else {
            0
        }
    }

    /// `ctr run --rm --runtime R IMAGE ID true`.
    fn run_rm_command(&self, side: Side, id: &str) -> Command {
        self.ctr(&["run", "--rm", "--runtime", runtime(side), IMAGE, id, "true"])
    }

    /// `ctr run -d --runtime R IMAGE ID sleep 100000`.
    fn detached_command(&self, side: Side, id: &str) -> Command {
        self.ctr(&[
            "run",
            "-d",
            "--runtime",
            runtime(side),
            IMAGE,
            id,
            "sleep",
            "100000",
        ])
    }

    /// Starts an idle pod; launch → `ctr run -d` exit, in ms.
    fn start_idle(&self, side: Side, id: &str) -> Result<f64, String> {
        let mut cmd = self.detached_command(side, id);
        run_cli(&mut cmd, self.plan.timeout, None).map(|r| millis(r.took))
    }

    /// Whether the pod answers an exec that prints a token of its own.
    fn healthy(&self, id: &str) -> Result<(), String> {
        let token = format!("up-{id}");
        let mut cmd = self.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("health-{id}"),
            id,
            "echo",
            &token,
        ]);
        let ran = run_cli(&mut cmd, self.plan.timeout, None)?;
        if ran.output.contains(&token) {
            Ok(())
        } else {
            Err(format!(
                "{id}: the exec did not print {token}: {}",
                ran.output.trim()
            ))
        }
    }

    /// The pod's shim: the parent of the task's pid (husk: the VMM; runc:
    /// the container's process).
    fn shim_of(&self, id: &str) -> Result<u32, String> {
        let mut cmd = self.ctr(&["task", "ls"]);
        let ran = run_cli(&mut cmd, self.plan.timeout, None)?;
        let (_, pid, status) = parse_task_list(&ran.output)
            .into_iter()
            .find(|(t, _, _)| t == id)
            .ok_or_else(|| format!("{id} is not in ctr task ls"))?;
        if status != "RUNNING" || pid == 0 {
            return Err(format!("{id} is {status} (pid {pid})"));
        }
        let shim = parent_of(pid).ok_or_else(|| format!("{id}: pid {pid} has no parent"))?;
        let comm = comm_of(shim);
        if comm.starts_with("containerd-shim") {
            Ok(shim)
        } else {
            Err(format!(
                "{id}: the parent of task pid {pid} is {comm:?}, not a shim"
            ))
        }
    }

    /// Kills and deletes the pod's task and container.
    fn remove(&self, id: &str) -> Result<(), String> {
        let mut rm = self.ctr(&["task", "rm", "-f", id]);
        let task = run_cli(&mut rm, self.plan.timeout, None);
        let mut crm = self.ctr(&["container", "rm", id]);
        let container = run_cli(&mut crm, self.plan.timeout, None);
        match (task, container) {
            (_, Ok(_)) => Ok(()),
            (Err(t), Err(c)) => Err(format!("{id}: task rm: {t}; container rm: {c}")),
            (Ok(_), Err(c)) => Err(format!("{id}: container rm: {c}")),
        }
    }

    /// Runs `f` on every item, `width` at a time; the results in order.
    fn each<T: Sync, R: Send>(items: &[T], width: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(width.max(1)) {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunk.iter().map(|item| s.spawn(|| f(item))).collect();
                for h in handles {
                    // A panic in `f` is a bug of the harness: pass it on.
                    out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
            });
        }
        out
    }

    /// Removes `ids`, a few at a time; one line per failure.
    fn remove_all(&self, ids: &[String]) -> Vec<String> {
        Self::each(ids, 4, |id| self.remove(id))
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    /// Whatever containerd still lists, removed; a note if there was any.
    fn leftovers(&self) -> Option<String> {
        let mut ls = self.ctr(&["container", "ls", "-q"]);
        let ids: Vec<String> = run_cli(&mut ls, self.plan.timeout, None)
            .map(|r| r.output.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return None;
        }
        let failed = self.remove_all(&ids);
        Some(format!(
            "left behind and removed afterwards: {}{}",
            ids.join(", "),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (failures: {})", failed.join("; "))
            }
        ))
    }

    fn section(&self, title: String, runs: usize, figures: Vec<Figure>) -> Section {
        Section {
            title: format!("{title} — {}", self.place.name),
            machine: self.machine.clone(),
            warmup: self.plan.warmup,
            runs,
            figures,
            notes: Vec::new(),
            commands: Vec::new(),
        }
    }

    fn figure(&self, id: &str, title: &str, unit: Unit, budget: Budget) -> Figure {
        Figure {
            id: id.into(),
            title: title.into(),
            place: self.place.name.clone(),
            unit,
            peer: "runc".into(),
            husk: Vec::new(),
            peer_samples: Vec::new(),
            budget,
        }
    }

    fn time_budget(&self, on_hardware: Budget) -> Budget {
        if self.place.emulated {
            Budget::NotApplicable("emulated".into())
        } else {
            on_hardware
        }
    }

    fn finish(&self, section: &mut Section, failures: &[String]) {
        section.notes.extend(failures.iter().cloned());
        section.notes.extend(self.leftovers());
        section.commands = vec![
            (
                "husk".into(),
                show(&self.detached_command(Side::Husk, "ID")),
            ),
            (
                "runc".into(),
                show(&self.detached_command(Side::Peer, "ID")),
            ),
        ];
    }
}

/// The runtime name of a side.
pub fn runtime(side: Side) -> &'static str {
    match side {
        Side::Husk => HUSK_RUNTIME,
        Side::Peer => RUNC_RUNTIME,
    }
}

/// `ctr run --rm IMAGE ID true` through each shim.
pub fn run_rm(p: &Pods) -> Section {
    let times = interleave(
        "pods/run --rm",
        p.plan.warmup,
        p.plan.runs,
        |side, _| {
            let id = p.id(side, "rm");
            run_cli(&mut p.run_rm_command(side, &id), p.plan.timeout, None).map(|r| millis(r.took))
        },
        |t| format!("{t:.0} ms"),
    );
    let mut f = p.figure(
        "pods.run_rm",
        "ctr run --rm IMAGE true: launch → ctr exit",
        Unit::Millis,
        p.time_budget(Budget::RatioAtMost(1.5)),
    );
    f.husk = times.husk;
    f.peer_samples = times.peer;
    let mut s = p.section(
        "Pod start: ctr run --rm true, husk vs runc".into(),
        p.plan.runs,
        vec![f],
    );
    p.finish(&mut s, &times.failures);
    s.commands = vec![
        ("husk".into(), show(&p.run_rm_command(Side::Husk, "ID"))),
        ("runc".into(), show(&p.run_rm_command(Side::Peer, "ID"))),
    ];
    if p.place.emulated {
        s.notes.push(
            "Emulated test host: each husk pod boots a Linux guest under nested KVM on a CPU \
             ~12–17× slower than the host's, while runc forks on the emulated host itself; the \
             husk/runc ratio is decided by emulation, so the ≤ 1.5× budget reads n/a (emulated). \
             The figure is recorded."
                .into(),
        );
    }
    s
}

/// One idle pod: its start and its memory.
#[derive(Clone, Debug)]
struct IdleRound {
    start_ms: f64,
    group: Group,
}

impl IdleRound {
    fn total_kib(&self) -> u64 {
        self.group.peak_pss.pss_kib
    }

    fn guest_kib(&self) -> u64 {
        self.group.peak_pss.guest_rss_kib
    }

    fn host_kib(&self) -> u64 {
        self.total_kib().saturating_sub(self.guest_kib())
    }
}

/// What [`idle`] gives the parallel part: each side's median single start.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleStart {
    /// husk's median, ms.
    pub husk: Option<f64>,
    /// runc's median, ms.
    pub runc: Option<f64>,
}

/// Memory of the pod rooted at `shim`, sampled a few times.
fn sample_pod(roots: Vec<u32>, side: Side, every: Duration) -> Group {
    let guest = Pods::guest_kib(side);
    let sampler = Sampler::start(roots, every, guest);
    std::thread::sleep(every * 4);
    sampler.stop(guest)
}

/// An idle pod of each side: `ctr run -d` of `sleep`, left to settle, its
/// memory sampled, then removed.
pub fn idle(p: &Pods) -> (Section, SingleStart) {
    let rounds = interleave(
        "pods/idle",
        p.plan.warmup,
        p.plan.idle_runs,
        |side, _| {
            let id = p.id(side, "idle");
            let result = p.start_idle(side, &id).and_then(|start_ms| {
                std::thread::sleep(p.plan.settle);
                let shim = p.shim_of(&id)?;
                let group = sample_pod(vec![shim], side, p.plan.sample_every);
                Ok(IdleRound { start_ms, group })
            });
            let removed = p.remove(&id);
            let round = result?;
            removed?;
            Ok(round)
        },
        |r| {
            format!(
                "started in {:.0} ms; Σ PSS {:.1} MiB (guest {:.1}) over {}",
                r.start_ms,
                mib(r.total_kib()),
                mib(r.guest_kib()),
                r.group.names()
            )
        },
    );
    let pick = |side: Side, f: &dyn Fn(&IdleRound) -> f64| -> Vec<f64> {
        let runs = if side == Side::Husk {
            &rounds.husk
        } else {
            &rounds.peer
        };
        runs.iter().map(f).collect()
    };
    let mut start = p.figure(
        "pods.single_start",
        "one pod: ctr run -d sleep: launch → task running",
        Unit::Millis,
        p.time_budget(Budget::RatioAtMost(1.5)),
    );
    start.husk = pick(Side::Husk, &|r| r.start_ms);
    start.peer_samples = pick(Side::Peer, &|r| r.start_ms);
    let mut host = p.figure(
        "pods.idle_host",
        "idle pod: Σ PSS of shim + VMM + helpers, guest RAM excluded",
        Unit::MiB,
        Budget::NotApplicable("part of the total".into()),
    );
    host.husk = pick(Side::Husk, &|r| mib(r.host_kib()));
    host.peer_samples = pick(Side::Peer, &|r| mib(r.host_kib()));
    let mut guest = p.figure(
        "pods.idle_guest",
        "idle pod: guest RAM touched (VMM RSS in the guest-RAM mapping)",
        Unit::MiB,
        Budget::NotApplicable("part of the total".into()),
    );
    guest.peer = String::new();
    guest.husk = pick(Side::Husk, &|r| mib(r.guest_kib()));
    let mut total = p.figure(
        "pods.idle_total",
        "idle pod: host memory, Σ PSS with guest pages touched",
        Unit::MiB,
        Budget::AtMost(40.0),
    );
    total.husk = pick(Side::Husk, &|r| mib(r.total_kib()));
    total.peer_samples = pick(Side::Peer, &|r| mib(r.total_kib()));
    let single = SingleStart {
        husk: Summary::of(&start.husk).map(|s| s.median),
        runc: Summary::of(&start.peer_samples).map(|s| s.median),
    };
    let names = |runs: &[IdleRound]| {
        runs.iter()
            .map(|r| &r.group)
            .max_by_key(|g| g.seen.len())
            .map_or_else(|| "none".to_string(), Group::names)
    };
    let mut s = p.section(
        "Idle pod: one start and its host memory, husk vs runc".into(),
        p.plan.idle_runs,
        vec![start, host, guest, total],
    );
    p.finish(&mut s, &rounds.failures);
    s.notes.push(format!(
        "The pod is `sleep 100000` started with `ctr run -d` (launch → ctr exit, when containerd \
         reports the task started), left alone {} ms, then its shim (the parent of the task's \
         pid) and all the shim's descendants are sampled every {} ms: husk: {}; runc: {}. PSS \
         counts the guest pages the VMM touched (its private memory); guest RAM is every mapping \
         larger than three quarters of the guest's {GUEST_MIB} MiB. containerd itself is shared \
         by all pods and not counted. DESIGN.md budgets ≤ 40 MiB per idle pod; Kata Containers \
         publishes ~124 MiB.",
        p.plan.settle.as_millis(),
        p.plan.sample_every.as_millis(),
        names(&rounds.husk),
        names(&rounds.peer),
    ));
    (s, single)
}

/// One batch of pods started at once (or one after another).
#[derive(Clone, Debug, Default)]
struct Batch {
    /// Launch → running of every pod that started, ms.
    starts: Vec<f64>,
    /// Pods asked for.
    asked: usize,
    /// Pods that answered the health exec.
    healthy: usize,
    /// Σ memory of all the pods, when sampled.
    group: Option<Group>,
    /// What went wrong, one line each.
    problems: Vec<String>,
}

impl Batch {
    fn describe(&self) -> String {
        let s = Summary::of(&self.starts);
        let mem = self.group.as_ref().map_or_else(String::new, |g| {
            format!(
                "; Σ PSS {:.0} MiB ({:.1} MiB per pod)",
                mib(g.peak_pss.pss_kib),
                mib(g.peak_pss.pss_kib) / self.asked.max(1) as f64
            )
        });
        format!(
            "{}/{} started, {} healthy, p50 {:.0} ms, max {:.0} ms{mem}",
            self.starts.len(),
            self.asked,
            self.healthy,
            s.map_or(f64::NAN, |s| s.median),
            s.map_or(f64::NAN, |s| s.max),
        )
    }
}

/// Starts `ids` (all at once with `at_once`, else one after another),
/// checks each answers an exec, samples their memory if `sample`, and
/// removes them.
fn batch(p: &Pods, side: Side, ids: &[String], at_once: bool, sample: bool) -> Batch {
    let starts = if at_once {
        Pods::each(ids, ids.len(), |id| p.start_idle(side, id))
    } else {
        ids.iter().map(|id| p.start_idle(side, id)).collect()
    };
    let mut b = Batch {
        asked: ids.len(),
        ..Batch::default()
    };
    let mut running = Vec::new();
    for (id, start) in ids.iter().zip(starts) {
        match start {
            Ok(ms) => {
                b.starts.push(ms);
                running.push(id.clone());
            }
            Err(e) => b
                .problems
                .push(format!("{id} did not start: {}", first_line(&e))),
        }
    }
    for result in Pods::each(&running, 8, |id| p.healthy(id)) {
        match result {
            Ok(()) => b.healthy += 1,
            Err(e) => b.problems.push(format!("unhealthy: {}", first_line(&e))),
        }
    }
    if sample {
        let mut shims = Vec::new();
        for id in &running {
            match p.shim_of(id) {
                Ok(pid) => shims.push(pid),
                Err(e) => b.problems.push(first_line(&e).to_string()),
            }
        }
        std::thread::sleep(p.plan.settle);
        b.group = Some(sample_pod(shims, side, p.plan.sample_every));
    }
    b.problems.extend(
        p.remove_all(ids)
            .iter()
            .map(|e| format!("removal: {}", first_line(e))),
    );
    b
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// How the batches of one side went, for the notes.
fn health_note(side: &str, batches: &[Batch]) -> String {
    let asked: usize = batches.iter().map(|b| b.asked).sum();
    let started: usize = batches.iter().map(|b| b.starts.len()).sum();
    let healthy: usize = batches.iter().map(|b| b.healthy).sum();
    let mut note = format!(
        "{side}: {started}/{asked} pods started, {healthy}/{asked} answered the health exec{}",
        if healthy == asked {
            " (all healthy)"
        } else {
            ""
        }
    );
    let problems: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.problems.iter().map(String::as_str))
        .take(5)
        .collect();
    if !problems.is_empty() {
        note.push_str(&format!("; first problems: {}", problems.join("; ")));
    }
    note
}

/// `n` pods started at once, `parallel_rounds` times per side.
pub fn parallel(p: &Pods, n: usize, single: SingleStart) -> Section {
    let rounds = interleave(
        &format!("pods/parallel {n}"),
        0,
        p.plan.parallel_rounds,
        |side, _| {
            let ids: Vec<String> = (0..n).map(|_| p.id(side, &format!("par{n}"))).collect();
            let b = batch(p, side, &ids, true, false);
            if b.starts.is_empty() {
                Err(format!("no pod of {n} started: {}", b.problems.join("; ")))
            } else {
                Ok(b)
            }
        },
        Batch::describe,
    );
    let all = |bs: &[Batch]| bs.iter().flat_map(|b| b.starts.iter().copied()).collect();
    let p99s = |bs: &[Batch]| -> Vec<f64> {
        bs.iter()
            .filter_map(|b| percentile(&b.starts, 0.99))
            .collect()
    };
    let mut each = p.figure(
        &format!("pods.parallel{n}.start"),
        &format!("{n} pods at once: each ctr run -d → task running (median = p50)"),
        Unit::Millis,
        p.time_budget(Budget::RatioAtMost(1.5)),
    );
    each.husk = all(&rounds.husk);
    each.peer_samples = all(&rounds.peer);
    let mut p99 = p.figure(
        &format!("pods.parallel{n}.p99"),
        &format!("{n} pods at once: p99 start of a batch"),
        Unit::Millis,
        Budget::NotApplicable("see the ratio to one start".into()),
    );
    p99.husk = p99s(&rounds.husk);
    p99.peer_samples = p99s(&rounds.peer);
    let over = |v: &[f64], one: Option<f64>| -> Vec<f64> {
        one.filter(|o| *o > 0.0)
            .map_or_else(Vec::new, |o| v.iter().map(|x| x / o).collect())
    };
    let mut ratio = p.figure(
        &format!("pods.parallel{n}.p99_over_single"),
        &format!("{n} pods at once: p99 start ÷ the median single start of the same runtime"),
        Unit::Times,
        p.time_budget(Budget::AtMost(3.0)),
    );
    ratio.husk = over(&p99.husk, single.husk);
    ratio.peer_samples = over(&p99.peer_samples, single.runc);
    let mut s = p.section(
        format!("Parallel starts: {n} pods at once, husk vs runc"),
        p.plan.parallel_rounds,
        vec![each, p99, ratio],
    );
    s.warmup = 0;
    p.finish(&mut s, &rounds.failures);
    s.notes.push(health_note("husk", &rounds.husk));
    s.notes.push(health_note("runc", &rounds.peer));
    s.notes.push(
        "Every pod of a batch is launched at once (one thread per `ctr run -d`); each start is \
         launch → ctr exit. Once all have returned, each pod must answer `ctr task exec … echo \
         TOKEN` with its token (healthy), eight at a time, then all are removed. The budget is \
         p99 ≤ 3× a single start (the idle part's median)."
            .into(),
    );
    if p.place.emulated {
        s.notes.push(
            "Emulated test host: all pods of a batch share one emulated CPU, so a batch's starts \
             queue behind each other's guest boots (husk) or forks (runc); the ratios read n/a \
             (emulated) and are recorded."
                .into(),
        );
    }
    s
}

/// N idle pods one after another, then their memory per pod.
pub fn density(p: &Pods) -> Section {
    let n = p.plan.density;
    let rounds = interleave(
        &format!("pods/density {n}"),
        0,
        1,
        |side, _| {
            let ids: Vec<String> = (0..n).map(|_| p.id(side, "dense")).collect();
            let b = batch(p, side, &ids, false, true);
            if b.starts.is_empty() {
                Err(format!("no pod started: {}", b.problems.join("; ")))
            } else {
                Ok(b)
            }
        },
        Batch::describe,
    );
    let per_pod = |bs: &[Batch], pick: fn(&Group) -> u64| -> Vec<f64> {
        bs.iter()
            .filter_map(|b| {
                let g = b.group.as_ref()?;
                (!b.starts.is_empty()).then(|| mib(pick(g)) / b.starts.len() as f64)
            })
            .collect()
    };
    let mut start = p.figure(
        "pods.density.start",
        &format!("{n} pods one after another: each ctr run -d → task running"),
        Unit::Millis,
        p.time_budget(Budget::RatioAtMost(1.5)),
    );
    start.husk = rounds.husk.iter().flat_map(|b| b.starts.clone()).collect();
    start.peer_samples = rounds.peer.iter().flat_map(|b| b.starts.clone()).collect();
    let mut total = p.figure(
        "pods.density.total_per_pod",
        &format!("{n} idle pods: Σ PSS with guest pages touched, per pod"),
        Unit::MiB,
        Budget::AtMost(40.0),
    );
    total.husk = per_pod(&rounds.husk, |g| g.peak_pss.pss_kib);
    total.peer_samples = per_pod(&rounds.peer, |g| g.peak_pss.pss_kib);
    let mut host = p.figure(
        "pods.density.host_per_pod",
        &format!("{n} idle pods: Σ PSS outside guest RAM, per pod"),
        Unit::MiB,
        Budget::NotApplicable("part of the total".into()),
    );
    host.husk = per_pod(&rounds.husk, |g| {
        g.peak_pss.pss_kib.saturating_sub(g.peak_pss.guest_rss_kib)
    });
    host.peer_samples = per_pod(&rounds.peer, |g| {
        g.peak_pss.pss_kib.saturating_sub(g.peak_pss.guest_rss_kib)
    });
    let mut guest = p.figure(
        "pods.density.guest_per_pod",
        &format!("{n} idle pods: guest RAM touched, per pod"),
        Unit::MiB,
        Budget::NotApplicable("part of the total".into()),
    );
    guest.peer = String::new();
    guest.husk = per_pod(&rounds.husk, |g| g.peak_pss.guest_rss_kib);
    let mut s = p.section(
        format!("Density: {n} idle pods, husk vs runc"),
        1,
        vec![start, total, host, guest],
    );
    s.warmup = 0;
    p.finish(&mut s, &rounds.failures);
    s.notes.push(health_note("husk", &rounds.husk));
    s.notes.push(health_note("runc", &rounds.peer));
    s.notes.push(format!(
        "{n} `sleep` pods are started one after another and all left running; each must answer \
         a health exec; then the shims of all of them and their descendants are sampled \
         together and the sums divided by the pods that started. The start figure has one \
         sample per pod, so its p90 shows whether starts slow down as pods pile up."
    ));
    s
}

/// The binaries and guest the pods use.
#[derive(Clone, Debug)]
pub struct PodTools {
    /// husk's CLI; its shim lies next to it.
    pub husk: PathBuf,
    /// Guest kernel of every husk pod.
    pub kernel: PathBuf,
    /// Agent initramfs of every husk pod.
    pub initramfs: PathBuf,
}

/// Every part of the plan on a private containerd (state under `/run`)
/// with the busybox image built in `work`: `ctr run --rm`, the idle pod,
/// density, then each parallel batch. Each section goes to `emit` as soon
/// as it is measured (inside the test host: onto stdout, so a run cut
/// short by its timeout still brings back what it measured).
pub fn measure(
    tools: &PodTools,
    work: &Path,
    machine: &Machine,
    place: &Place,
    plan: &PodPlan,
    emit: &mut dyn FnMut(&Section),
) -> Vec<Section> {
    let unmeasured = |why: String| {
        let title = format!("Pods through containerd — {}", place.name);
        eprintln!("husk-bench: {title}: not measured: {why}");
        Section {
            title,
            machine: machine.clone(),
            warmup: 0,
            runs: 0,
            figures: Vec::new(),
            notes: vec![format!("not measured: {why}")],
            commands: Vec::new(),
        }
    };
    let dir = Path::new("/run").join(format!("husk-bench-containerd-{}", std::process::id()));
    let failed = |section: Section, emit: &mut dyn FnMut(&Section)| {
        emit(&section);
        vec![section]
    };
    let containerd = match Containerd::start(&dir, &tools.husk, &tools.kernel, &tools.initramfs) {
        Ok(c) => c,
        Err(e) => return failed(unmeasured(husk::error_chain(&e)), emit),
    };
    if let Err(e) = containerd.import_busybox(work, IMAGE) {
        return failed(unmeasured(husk::error_chain(&e)), emit);
    }
    let server = containerd_version(&containerd);
    let note = format!(
        "One private containerd {server} (CRI plugin off, overlayfs snapshotter, state under \
         /run) serves both runtimes; the image is busybox built locally and imported once."
    );
    let pods = Pods::new(&containerd, machine, place, plan);
    let mut sections = Vec::new();
    let mut done = |mut s: Section, emit: &mut dyn FnMut(&Section)| {
        s.notes.push(note.clone());
        emit(&s);
        sections.push(s);
    };
    done(run_rm(&pods), emit);
    let (idle_section, single) = idle(&pods);
    done(idle_section, emit);
    if plan.density > 0 {
        done(density(&pods), emit);
    }
    for &n in &plan.parallel {
        done(parallel(&pods, n, single), emit);
    }
    sections
}

/// The server version `ctr version` reports.
fn containerd_version(containerd: &Containerd) -> String {
    let version = containerd
        .ctr(&["version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    version
        .lines()
        .skip_while(|l| !l.starts_with("Server"))
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map_or_else(|| "unknown".to_string(), |v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_keeps_the_order_and_bounds_the_width() {
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<usize> = (0..10).collect();
        let out = Pods::each(&items, 3, |i| {
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            live.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(peak.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn a_batch_says_how_many_were_healthy() {
        let b = Batch {
            starts: vec![100.0, 300.0],
            asked: 3,
            healthy: 2,
            group: None,
            problems: vec!["hb-3 did not start: boom".into()],
        };
        assert_eq!(
            b.describe(),
            "2/3 started, 2 healthy, p50 200 ms, max 300 ms"
        );
        let note = health_note("husk", &[b]);
        assert!(
            note.starts_with("husk: 2/3 pods started, 2/3 answered"),
            "{note}"
        );
        assert!(note.contains("boom"), "{note}");
        assert!(!note.contains("all healthy"), "{note}");
    }

    #[test]
    fn runtimes_by_side() {
        assert_eq!(runtime(Side::Husk), "io.containerd.husk.v2");
        assert_eq!(runtime(Side::Peer), "io.containerd.runc.v2");
    }
}
