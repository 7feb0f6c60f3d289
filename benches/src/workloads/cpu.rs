//! A fixed compute workload in the container, husk against runc on the
//! same bundle, interleaved: busybox `sha256sum` over `dd`'s zeros, once
//! ("one vCPU": no CPU limit, so husk's VM has its default single vCPU)
//! and as one copy per host CPU in parallel ("all vCPUs": the spec's
//! `linux.resources.cpu` quota allows that many CPUs, which sizes husk's
//! VM at ceil(limit) + its default vCPU, runtime/src/container/sizing.rs).
//!
//! Times come from the host the runtimes run on, never from a guest's
//! clock: each `run` is timed from spawn to exit and the median `run
//! /bin/true` of the same side, measured in the same rounds, is
//! subtracted, which leaves the workload's own time plus the difference in
//! exit and clean-up.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::machine::Machine;
use crate::procs::run_cli;
use crate::stats::Summary;
use crate::workloads::boot::show;
use crate::workloads::containers::{make_bundle, Place, Tools};
use crate::workloads::in_container::{
    edit_spec, figure, inside_command, link_applets, no_budget, not_measured, run_command,
    run_inside, CommonArgs, InsideCommon, Naming, Outer, Schedule,
};
use crate::workloads::{interleave, millis, Section, Side, Unit};

/// Arguments of `husk-bench cpu`.
#[derive(Args)]
pub struct CpuArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// MiB each copy hashes [default: 256; emulated host: 32; smoke: 4].
    #[arg(long)]
    pub mib: Option<u64>,
    /// Copies run at once in the "all vCPUs" case [default: the CPUs of
    /// the host the runtimes run on].
    #[arg(long)]
    pub copies: Option<usize>,
}

/// Arguments of `husk-bench cpu-inside`.
#[derive(Args)]
pub struct CpuInsideArgs {
    #[command(flatten)]
    common: InsideCommon,
    #[arg(long)]
    mib: u64,
    #[arg(long)]
    copies: Option<usize>,
}

/// The work of one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPlan {
    /// The rounds.
    pub sched: Schedule,
    /// MiB each copy hashes.
    pub mib: u64,
    /// Copies in the "all vCPUs" case (`None`: the host's CPUs).
    pub copies: Option<usize>,
}

/// Period of the CPU quota, µs (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// `husk-bench cpu`.
pub fn run(args: CpuArgs) -> anyhow::Result<ExitCode> {
    let outer = Outer::new(&args.common)?;
    let plan = CpuPlan {
        sched: outer.sched,
        mib: args.mib.unwrap_or(if args.common.smoke {
            4
        } else if outer.emulated {
            32
        } else {
            256
        }),
        copies: args.copies,
    };
    let mut extra = vec!["--mib".into(), plan.mib.to_string().into()];
    if let Some(k) = plan.copies {
        extra.push("--copies".into());
        extra.push(k.to_string().into());
    }
    let inside = inside_command("cpu-inside", plan.sched, &outer.tools, extra);
    let rounds = 2 * (plan.sched.warmup + plan.sched.runs) as u64;
    let host_timeout = 600 + rounds * 3 * (plan.sched.timeout.as_secs() / 3 + 30);
    outer.run(
        Naming {
            name: "cpu",
            report_title: "husk CPU benchmark: a fixed compute workload against runc",
            section_title: "CPU",
        },
        inside,
        host_timeout,
        |tools, work, machine, place| vec![measure(tools, work, machine, place, plan)],
    )
}

/// `husk-bench cpu-inside`.
pub fn run_inside_cmd(args: CpuInsideArgs) -> anyhow::Result<ExitCode> {
    let plan = CpuPlan {
        sched: args.common.schedule(),
        mib: args.mib,
        copies: args.copies,
    };
    let tools = args.common.tools();
    run_inside("cpu", |work, machine, place| {
        vec![measure(&tools, work, machine, place, plan)]
    })
}

/// The container's shell command: `copies` pipelines of `dd` into
/// `sha256sum` at once, each over `mib` MiB of zeros, then `wait`.
pub fn workload_script(mib: u64, copies: usize) -> String {
    let one = format!("dd if=/dev/zero bs=1M count={mib} 2>/dev/null | sha256sum >/dev/null");
    if copies <= 1 {
        return one;
    }
    format!("for i in $(seq {copies}); do ( {one} ) & done; wait")
}

/// The spec's CPU limit for `copies` CPUs: quota = copies × period.
fn cpu_limit(copies: usize) -> serde_json::Value {
    serde_json::json!({
        "quota": copies as u64 * PERIOD_US,
        "period": PERIOD_US,
    })
}

/// One round of one side: `run` of /bin/true, of one copy, of k copies.
#[derive(Clone, Copy, Debug)]
struct CpuRun {
    true_ms: f64,
    one_ms: f64,
    all_ms: f64,
}

/// The bundles: /bin/true, one copy, k copies with a k-CPU limit.
fn bundles(tools: &Tools, work: &Path, plan: CpuPlan, copies: usize) -> Result<(), String> {
    let cases = [
        ("bundle-true", "/bin/true".to_string(), None),
        ("bundle-one", workload_script(plan.mib, 1), None),
        (
            "bundle-all",
            workload_script(plan.mib, copies),
            Some(copies),
        ),
    ];
    for (name, script, limit) in cases {
        let dir = work.join(name);
        let args: Vec<&str> = if name == "bundle-true" {
            vec!["/bin/true"]
        } else {
            vec!["/bin/sh", "-c", &script]
        };
        make_bundle(&tools.runc, &dir, &args)?;
        link_applets(&dir.join("rootfs"), &["dd", "sha256sum", "seq"])?;
        if let Some(k) = limit {
            edit_spec(&dir, |s| {
                s["linux"]["resources"]["cpu"] = cpu_limit(k);
            })?;
        }
    }
    Ok(())
}

/// Each sample less the median of `baseline`.
fn less_median(samples: &[f64], baseline: &[f64]) -> Vec<f64> {
    match Summary::of(baseline) {
        Some(b) => samples.iter().map(|s| s - b.median).collect(),
        None => Vec::new(),
    }
}

/// husk vs runc: the workload on one vCPU and on all.
pub fn measure(
    tools: &Tools,
    work: &Path,
    machine: &Machine,
    place: &Place,
    plan: CpuPlan,
) -> Section {
    let copies = plan.copies.unwrap_or(machine.cores.max(1));
    let title = format!(
        "CPU: sha256sum over {} MiB, 1 and {copies} copies, husk vs runc — {}",
        plan.mib, place.name
    );
    let state = work.join("state");
    if let Err(why) = bundles(tools, work, plan, copies) {
        return not_measured(title, machine, plan.sched, why);
    }
    // One untimed `run /bin/true` per side first: the first run of each
    // reads the runtime, the kernel and the rootfs cold.
    let mut primed = Vec::new();
    for side in [Side::Husk, Side::Peer] {
        let id = format!("hb-cpu-{}-prime", side.name());
        let mut c = run_command(tools, side, &state, &work.join("bundle-true"), &id);
        if let Err(e) = run_cli(&mut c, plan.sched.timeout, None) {
            primed.push(format!("{} priming run failed: {e}", side.name()));
        }
    }
    let mut n = 0usize;
    let runs = interleave(
        "cpu",
        plan.sched.warmup,
        plan.sched.runs,
        |side, _| {
            let mut time = |bundle: &str| {
                n += 1;
                let id = format!("hb-cpu-{}-{n}", side.name());
                let mut c = run_command(tools, side, &state, &work.join(bundle), &id);
                run_cli(&mut c, plan.sched.timeout, None).map(|r| millis(r.took))
            };
            Ok(CpuRun {
                true_ms: time("bundle-true")?,
                one_ms: time("bundle-one")?,
                all_ms: time("bundle-all")?,
            })
        },
        |r| {
            format!(
                "run true {:.0} ms, one copy {:.0} ms, {copies} at once {:.0} ms",
                r.true_ms, r.one_ms, r.all_ms
            )
        },
    );
    let pick = |v: &[CpuRun], f: fn(&CpuRun) -> f64| v.iter().map(f).collect::<Vec<_>>();
    let net =
        |v: &[CpuRun], f: fn(&CpuRun) -> f64| less_median(&pick(v, f), &pick(v, |r| r.true_ms));
    let figures = vec![
        figure(
            "cpu.one",
            "1 copy (1 vCPU): run time − median run /bin/true",
            place,
            Unit::Millis,
            net(&runs.husk, |r| r.one_ms),
            net(&runs.peer, |r| r.one_ms),
            no_budget(place),
        ),
        figure(
            "cpu.all",
            &format!(
                "all vCPUs: {copies} at once ({copies}-CPU limit): run time − median run /bin/true"
            ),
            place,
            Unit::Millis,
            net(&runs.husk, |r| r.all_ms),
            net(&runs.peer, |r| r.all_ms),
            no_budget(place),
        ),
        figure(
            "cpu.true",
            "run /bin/true (subtracted above)",
            place,
            Unit::Millis,
            pick(&runs.husk, |r| r.true_ms),
            pick(&runs.peer, |r| r.true_ms),
            no_budget(place),
        ),
    ];
    let mut notes = primed;
    notes.extend(runs.failures.iter().cloned());
    notes.push(format!(
        "The workload is `{}` (busybox); the parallel case runs `{}` with a CPU limit of \
         {copies} CPUs (quota {} µs per {PERIOD_US} µs), so husk's VM gets {copies} + 1 vCPUs \
         (ceil(limit) + its default, runtime/src/container/sizing.rs) and runc's container \
         {copies} CPUs' worth of time; the single case has no limit (husk: 1 vCPU). \"All \
         vCPUs\" means one copy per CPU of the host the runtimes run on ({} here).",
        workload_script(plan.mib, 1),
        workload_script(plan.mib, copies),
        copies as u64 * PERIOD_US,
        machine.cores
    ));
    notes.push(
        "Timed from the host the runtimes run on, never by a guest's clock: each `run` from \
         spawn to exit, less the median `run /bin/true` of the same side in the same rounds (the \
         last figure; one untimed `run /bin/true` per side went first), so the start-up of the VM or container is taken out and what is left is \
         the workload's time plus any difference in its exit."
            .into(),
    );
    if place.emulated {
        notes.push(format!(
            "Emulated test host ({} CPU): the nested guest's CPU is ~17× slower than the host's and \
             the test host's own ~12×, so husk/runc shows emulation, not husk (n/a (emulated)).",
            machine.cores
        ));
    }
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.sched.warmup,
        runs: plan.sched.runs,
        figures,
        notes,
        commands: vec![
            (
                "husk".into(),
                show(&run_command(
                    tools,
                    Side::Husk,
                    &state,
                    &work.join("bundle-one"),
                    "ID",
                )),
            ),
            (
                "runc".into(),
                show(&run_command(
                    tools,
                    Side::Peer,
                    &state,
                    &work.join("bundle-one"),
                    "ID",
                )),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_and_its_limit() {
        assert_eq!(
            workload_script(8, 1),
            "dd if=/dev/zero bs=1M count=8 2>/dev/null | sha256sum >/dev/null"
        );
        assert_eq!(
            workload_script(8, 2),
            "for i in $(seq 2); do ( dd if=/dev/zero bs=1M count=8 2>/dev/null | sha256sum \
             >/dev/null ) & done; wait"
        );
        assert_eq!(
            cpu_limit(3),
            serde_json::json!({"quota": 300_000, "period": 100_000})
        );
    }

    #[test]
    fn the_baseline_median_is_subtracted() {
        assert_eq!(
            less_median(&[110.0, 130.0], &[10.0, 30.0, 20.0]),
            [90.0, 110.0]
        );
        assert!(less_median(&[1.0], &[]).is_empty());
    }
}
