//! File I/O in the container, husk against runc on the same bundle,
//! interleaved: fio (Debian's `/usr/bin/fio`, copied into the rootfs with
//! its libraries) runs sequential write and read (1 MiB blocks),
//! random write and read (4 KiB blocks) and a metadata pass (create, stat
//! and unlink many small files with fio's filecreate, filestat and
//! filedelete engines), once on the container's rootfs and once on a
//! bind-mounted volume. Under husk both reach the host's files through
//! virtio-fs; under runc they are the host's files.
//!
//! The figures are fio's own (bandwidth, IOPS, files per second), taken
//! inside the container: for husk from the guest's clock, which in the
//! emulated test host is not reliable. fio writes its JSON report into
//! the rootfs, which the bench reads from the host.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::machine::Machine;
use crate::procs::run_cli;
use crate::workloads::boot::show;
use crate::workloads::containers::{make_bundle, Place, Tools};
use crate::workloads::in_container::{
    copy_with_libs, edit_spec, figure, inside_command, link_applets, no_budget, not_measured,
    run_command, run_inside, CommonArgs, InsideCommon, Naming, Outer, Schedule,
};
use crate::workloads::{interleave, Section, Side, Unit};

/// Arguments of `husk-bench fileio`.
#[derive(Args)]
pub struct FileioArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// MiB of the file the I/O jobs use [default: 256; emulated host: 64; smoke: 4].
    #[arg(long)]
    pub file_mib: Option<u64>,
    /// Small files of the metadata pass [default: 2000; emulated host: 500; smoke: 50].
    #[arg(long)]
    pub files: Option<usize>,
    /// Longest each random-I/O job runs, seconds [default: 20; smoke: 3].
    #[arg(long)]
    pub job_seconds: Option<u64>,
}

/// Arguments of `husk-bench fileio-inside`.
#[derive(Args)]
pub struct FileioInsideArgs {
    #[command(flatten)]
    common: InsideCommon,
    #[arg(long)]
    file_mib: u64,
    #[arg(long)]
    files: usize,
    #[arg(long)]
    job_seconds: u64,
}

/// The work of one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePlan {
    /// The rounds.
    pub sched: Schedule,
    /// MiB of the I/O jobs' file.
    pub file_mib: u64,
    /// Files of the metadata pass.
    pub files: usize,
    /// Longest each random-I/O job runs.
    pub job_seconds: u64,
}

/// Debian's fio.
const FIO: &str = "/usr/bin/fio";

/// The two places fio works in: (label, directory in the container).
const TARGETS: [(&str, &str); 2] = [("rootfs", "/fio-data"), ("volume", "/vol")];

/// What fio measures, in job order: (job, figure title, unit).
const JOBS: [(&str, &str, Unit); 7] = [
    ("seqwrite", "sequential write, 1 MiB blocks", Unit::MiBps),
    ("seqread", "sequential read, 1 MiB blocks", Unit::MiBps),
    ("randwrite", "random write, 4 KiB blocks", Unit::OpsPerSec),
    ("randread", "random read, 4 KiB blocks", Unit::OpsPerSec),
    ("create", "create small files", Unit::OpsPerSec),
    ("stat", "stat small files", Unit::OpsPerSec),
    ("delete", "unlink small files", Unit::OpsPerSec),
];

/// `husk-bench fileio`.
pub fn run(args: FileioArgs) -> anyhow::Result<ExitCode> {
    let outer = Outer::new(&args.common)?;
    let smoke = args.common.smoke;
    let pick = |smoke_v: u64, emu: u64, hw: u64| {
        if smoke {
            smoke_v
        } else if outer.emulated {
            emu
        } else {
            hw
        }
    };
    let plan = FilePlan {
        sched: outer.sched,
        file_mib: args.file_mib.unwrap_or(pick(4, 64, 256)),
        files: args.files.unwrap_or(pick(50, 500, 2000) as usize),
        job_seconds: args.job_seconds.unwrap_or(pick(3, 20, 20)),
    };
    let extra = vec![
        "--file-mib".into(),
        plan.file_mib.to_string().into(),
        "--files".into(),
        plan.files.to_string().into(),
        "--job-seconds".into(),
        plan.job_seconds.to_string().into(),
    ];
    let inside = inside_command("fileio-inside", plan.sched, &outer.tools, extra);
    let rounds = 2 * (plan.sched.warmup + plan.sched.runs) as u64;
    let host_timeout = 600 + rounds * (plan.sched.timeout.as_secs() / 2 + 60);
    outer.run(
        Naming {
            name: "fileio",
            report_title: "husk file I/O benchmark: fio on the rootfs and a volume against runc",
            section_title: "File I/O",
        },
        inside,
        host_timeout,
        |tools, work, machine, place| vec![measure(tools, work, machine, place, plan)],
    )
}

/// `husk-bench fileio-inside`.
pub fn run_inside_cmd(args: FileioInsideArgs) -> anyhow::Result<ExitCode> {
    let plan = FilePlan {
        sched: args.common.schedule(),
        file_mib: args.file_mib,
        files: args.files,
        job_seconds: args.job_seconds,
    };
    let tools = args.common.tools();
    run_inside("fileio", |work, machine, place| {
        vec![measure(&tools, work, machine, place, plan)]
    })
}

/// fio's job file for `directory`: the I/O jobs on one file, then the
/// metadata jobs, each after the one before (`stonewall`). Buffered I/O
/// (tmpfs, where the test host keeps its files, has no O_DIRECT), the
/// page cache of the file dropped before each job (`invalidate`), writes
/// flushed before a job ends (`end_fsync`).
pub fn job_file(directory: &str, plan: FilePlan) -> String {
    let size = plan.file_mib;
    let secs = plan.job_seconds;
    format!(
        "[global]\n\
         directory={directory}\n\
         ioengine=psync\n\
         invalidate=1\n\
         \n\
         [seqwrite]\n\
         filename=fio.data\n\
         rw=write\n\
         bs=1M\n\
         size={size}M\n\
         end_fsync=1\n\
         \n\
         [seqread]\n\
         stonewall\n\
         filename=fio.data\n\
         rw=read\n\
         bs=1M\n\
         size={size}M\n\
         \n\
         [randwrite]\n\
         stonewall\n\
         filename=fio.data\n\
         rw=randwrite\n\
         bs=4k\n\
         size={size}M\n\
         runtime={secs}\n\
         end_fsync=1\n\
         \n\
         [randread]\n\
         stonewall\n\
         filename=fio.data\n\
         rw=randread\n\
         bs=4k\n\
         size={size}M\n\
         runtime={secs}\n\
         \n\
         [create]\n\
         stonewall\n\
         ioengine=filecreate\n\
         create_on_open=1\n\
         filename_format=meta.$filenum\n\
         nrfiles={files}\n\
         filesize=4k\n\
         openfiles=1\n\
         \n\
         [stat]\n\
         stonewall\n\
         ioengine=filestat\n\
         filename_format=meta.$filenum\n\
         nrfiles={files}\n\
         filesize=4k\n\
         openfiles=1\n\
         \n\
         [delete]\n\
         stonewall\n\
         ioengine=filedelete\n\
         filename_format=meta.$filenum\n\
         nrfiles={files}\n\
         filesize=4k\n\
         openfiles=1\n",
        files = plan.files
    )
}

/// One job's figure from fio's JSON report: MiB/s for the sequential
/// jobs, operations per second for the others (fio counts a file its
/// filecreate, filestat or filedelete engine handles as one read).
#[derive(Clone, Debug, PartialEq)]
pub struct JobResult {
    /// The job's name.
    pub job: String,
    /// Its figure in the job's unit.
    pub value: f64,
}

/// Reads the figure of every job of [`JOBS`] from a fio `--output-format
/// json` report; `Err` names a job that is missing or failed.
pub fn parse_fio(json: &str) -> Result<Vec<JobResult>, String> {
    let start = json.find('{').ok_or("fio's report has no JSON")?;
    let v: serde_json::Value = serde_json::from_str(&json[start..])
        .map_err(|e| format!("fio's report is not JSON: {e}"))?;
    let jobs = v["jobs"].as_array().ok_or("fio's report has no jobs")?;
    let mut out = Vec::new();
    for (name, _, unit) in JOBS {
        let job = jobs
            .iter()
            .find(|j| j["jobname"] == name)
            .ok_or_else(|| format!("fio's report has no job {name}"))?;
        if job["error"].as_i64().unwrap_or(0) != 0 {
            return Err(format!("fio job {name} failed: error {}", job["error"]));
        }
        let dir = if name.contains("write") {
            "write"
        } else {
            "read"
        };
        let value = match unit {
            // fio's bw is KiB/s.
            Unit::MiBps => job[dir]["bw"].as_f64().map(|kib| kib / 1024.0),
            _ => job[dir]["iops"].as_f64(),
        }
        .ok_or_else(|| format!("fio job {name} has no {dir} figure"))?;
        out.push(JobResult {
            job: name.to_string(),
            value,
        });
    }
    Ok(out)
}

/// The container's command: fio on each target, reports into /fio-out.
fn container_script() -> String {
    TARGETS
        .iter()
        .map(|(label, dir)| {
            format!(
                "mkdir -p {dir} && {FIO} --output-format=json --output=/fio-out/{label}.json \
                 /fio-jobs/{label}.fio && rm -f {dir}/fio.data"
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The bundle: busybox, fio with its libraries, the job files and a
/// bind volume at /vol.
fn fio_bundle(tools: &Tools, dir: &Path, plan: FilePlan) -> Result<(), String> {
    let script = container_script();
    make_bundle(&tools.runc, dir, &["/bin/sh", "-c", &script])?;
    let rootfs = dir.join("rootfs");
    link_applets(&rootfs, &["mkdir", "rm"])?;
    copy_with_libs(Path::new(FIO), &rootfs).map_err(|e| format!("{e} (apt-get install fio)"))?;
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("{p:?}: {e}"));
    for sub in ["fio-jobs", "fio-out", "fio-data", "vol"] {
        mkdir(&rootfs.join(sub))?;
    }
    let volume = dir.join("volume");
    mkdir(&volume)?;
    for (label, target) in TARGETS {
        let path = rootfs.join("fio-jobs").join(format!("{label}.fio"));
        std::fs::write(&path, job_file(target, plan)).map_err(|e| format!("{path:?}: {e}"))?;
    }
    edit_spec(dir, |s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({
            "limit": memory_limit_mib(plan) << 20
        });
        if let Some(m) = s["mounts"].as_array_mut() {
            m.push(serde_json::json!({
                "destination": "/vol", "type": "bind", "source": volume,
                "options": ["rbind", "rw"]
            }));
        }
    })
}

/// The container's memory limit, MiB: room for the file in a tmpfs page
/// cache twice over, and for Debian's fio, which links libceph-common
/// (~130 MiB of zero-fill data), more than a default 128 MiB guest will
/// map. husk's VM grows by the limit (runtime/src/container/sizing.rs).
pub fn memory_limit_mib(plan: FilePlan) -> u64 {
    256 + 2 * plan.file_mib
}

/// One round of one side: fio's figures per target, in [`JOBS`] order.
type FileRun = Vec<Vec<f64>>;

fn fio_round(
    tools: &Tools,
    side: Side,
    state: &Path,
    bundle: &Path,
    n: usize,
    plan: FilePlan,
) -> Result<FileRun, String> {
    let out = bundle.join("rootfs/fio-out");
    for (label, _) in TARGETS {
        let _ = std::fs::remove_file(out.join(format!("{label}.json")));
    }
    let id = format!("hb-fio-{}-{n}", side.name());
    let mut c = run_command(tools, side, state, bundle, &id);
    run_cli(&mut c, plan.sched.timeout, None)?;
    TARGETS
        .iter()
        .map(|(label, _)| {
            let path = out.join(format!("{label}.json"));
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
            let jobs = parse_fio(&text).map_err(|e| format!("{label}: {e}"))?;
            Ok(jobs.into_iter().map(|j| j.value).collect())
        })
        .collect()
}

/// husk vs runc: fio on the rootfs and on a bind volume.
pub fn measure(
    tools: &Tools,
    work: &Path,
    machine: &Machine,
    place: &Place,
    plan: FilePlan,
) -> Section {
    let title = format!(
        "File I/O: fio on the rootfs and a bind volume, husk vs runc — {}",
        place.name
    );
    let bundle = work.join("bundle-fio");
    let state = work.join("state");
    if let Err(why) = fio_bundle(tools, &bundle, plan) {
        return not_measured(title, machine, plan.sched, why);
    }
    let mut n = 0usize;
    let runs = interleave(
        "fileio",
        plan.sched.warmup,
        plan.sched.runs,
        |side, _| {
            n += 1;
            fio_round(tools, side, &state, &bundle, n, plan)
        },
        |r| {
            let first = |t: usize| r.get(t).and_then(|v| v.first()).copied().unwrap_or(0.0);
            format!(
                "seq write {:.0} MiB/s on the rootfs, {:.0} MiB/s on the volume",
                first(0),
                first(1)
            )
        },
    );
    let mut figures = Vec::new();
    for (t, (label, _)) in TARGETS.iter().enumerate() {
        for (j, (job, what, unit)) in JOBS.iter().enumerate() {
            let pick = |v: &[FileRun]| v.iter().map(|r| r[t][j]).collect::<Vec<_>>();
            figures.push(figure(
                &format!("fileio.{label}.{job}"),
                &format!("{label}: {what} (fio)"),
                place,
                *unit,
                pick(&runs.husk),
                pick(&runs.peer),
                no_budget(place),
            ));
        }
    }
    let mut notes = runs.failures.clone();
    notes.push(format!(
        "fio {FIO} (psync, buffered, page cache dropped before each job, end_fsync on writes) \
         on a {} MiB file: sequential write and read with 1 MiB blocks, random write and read \
         with 4 KiB blocks (each at most {} s), then {} files of 4 KiB created, stat'ed and \
         unlinked (fio's filecreate, filestat and filedelete engines; op/s is files per second). \
         Once in the rootfs (/fio-data) and once on a bind volume (/vol, a host directory). \
         Higher is better: husk/runc below 1 means husk is slower.",
        plan.file_mib, plan.job_seconds, plan.files
    ));
    notes.push(format!(
        "The container has a memory limit of {} MiB on both sides (so husk's VM has its default \
         128 MiB plus that): Debian's fio links libceph-common, whose ~130 MiB of zero-fill \
         pages a 128 MiB guest refuses to map, and the file's page cache must fit.",
        memory_limit_mib(plan)
    ));
    notes.push(
        "These figures are fio's own, measured inside the container: for husk by the guest's \
         clock (in the emulated test host the nested guest's clock is unreliable), for runc by \
         the host's. Not timed from outside: a run's start-up would swamp the jobs."
            .into(),
    );
    if place.emulated {
        notes.push(
            "Emulated test host: the host directories are on its tmpfs, and under husk every \
             request crosses virtio-fs into a nested guest on a CPU ~17× slower than the host's; \
             husk/runc shows emulation (n/a (emulated))."
                .into(),
        );
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
                show(&run_command(tools, Side::Husk, &state, &bundle, "ID")),
            ),
            (
                "runc".into(),
                show(&run_command(tools, Side::Peer, &state, &bundle, "ID")),
            ),
            (
                "container".into(),
                crate::workloads::in_container::shell_line(&[
                    "/bin/sh".into(),
                    "-c".into(),
                    container_script(),
                ]),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FilePlan {
        FilePlan {
            sched: Schedule {
                warmup: 0,
                runs: 1,
                timeout: std::time::Duration::from_secs(1),
            },
            file_mib: 4,
            files: 50,
            job_seconds: 3,
        }
    }

    /// A fio report trimmed to what is read, as fio 3.33 writes it.
    fn report(create_error: i64) -> String {
        let job = |name: &str, rbw: u64, riops: f64, wbw: u64, wiops: f64, err: i64| {
            format!(
                r#"{{"jobname":"{name}","groupid":0,"error":{err},
                  "read":{{"io_bytes":0,"bw":{rbw},"iops":{riops},"runtime":2}},
                  "write":{{"io_bytes":0,"bw":{wbw},"iops":{wiops},"runtime":2}}}}"#
            )
        };
        let jobs = [
            job("seqwrite", 0, 0.0, 204800, 200.0, 0),
            job("seqread", 409600, 400.0, 0, 0.0, 0),
            job("randwrite", 0, 0.0, 4000, 1000.0, 0),
            job("randread", 8000, 2000.0, 0, 0.0, 0),
            job("create", 14545, 3636.36, 0, 0.0, create_error),
            job("stat", 400000, 100000.0, 0, 0.0, 0),
            job("delete", 32000, 8000.0, 0, 0.0, 0),
        ];
        format!(
            "fio: a warning on stderr\n{{\"fio version\":\"fio-3.33\",\"jobs\":[{}]}}",
            jobs.join(",")
        )
    }

    #[test]
    fn fio_reports_give_one_figure_per_job() {
        let got = parse_fio(&report(0)).unwrap();
        let values: Vec<(String, f64)> = got.into_iter().map(|j| (j.job, j.value)).collect();
        assert_eq!(
            values,
            [
                ("seqwrite".to_string(), 200.0),
                ("seqread".to_string(), 400.0),
                ("randwrite".to_string(), 1000.0),
                ("randread".to_string(), 2000.0),
                ("create".to_string(), 3636.36),
                ("stat".to_string(), 100000.0),
                ("delete".to_string(), 8000.0),
            ]
        );
        assert!(parse_fio(&report(5)).unwrap_err().contains("create failed"));
        assert!(parse_fio(r#"{"jobs":[]}"#)
            .unwrap_err()
            .contains("no job seqwrite"));
        assert!(parse_fio("nothing").is_err());
    }

    #[test]
    fn the_job_file_and_the_container_command() {
        let jobs = job_file("/vol", plan());
        assert!(jobs.starts_with("[global]\ndirectory=/vol\nioengine=psync\n"));
        for (name, _, _) in JOBS {
            assert!(jobs.contains(&format!("[{name}]\n")), "{name}: {jobs}");
        }
        assert_eq!(jobs.matches("stonewall").count(), JOBS.len() - 1);
        assert!(jobs.contains("size=4M\n") && jobs.contains("runtime=3\n"));
        assert!(jobs.contains("nrfiles=50\n"));
        assert_eq!(memory_limit_mib(plan()), 264);
        assert_eq!(
            container_script(),
            "mkdir -p /fio-data && /usr/bin/fio --output-format=json \
             --output=/fio-out/rootfs.json /fio-jobs/rootfs.fio && rm -f /fio-data/fio.data && \
             mkdir -p /vol && /usr/bin/fio --output-format=json --output=/fio-out/volume.json \
             /fio-jobs/volume.fio && rm -f /vol/fio.data"
        );
    }

    #[test]
    fn the_job_file_runs_under_this_fio() {
        if !Path::new(FIO).is_file() {
            eprintln!("skipped: needs {FIO}");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-bench-fio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = plan();
        p.file_mib = 1;
        p.files = 10;
        p.job_seconds = 1;
        let jobs = dir.join("t.fio");
        std::fs::write(&jobs, job_file(dir.to_str().unwrap(), p)).unwrap();
        let out = std::process::Command::new(FIO)
            .arg("--output-format=json")
            .arg(&jobs)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{out:?}");
        let got = parse_fio(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(got.len(), JOBS.len());
        assert!(got.iter().all(|j| j.value > 0.0), "{got:?}");
    }
}
