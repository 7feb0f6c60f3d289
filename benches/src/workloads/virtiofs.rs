//! virtio-fs: husk's in-process passthrough (fuse-backend-rs on its own
//! thread in the VMM) against QEMU's microvm with virtiofsd, one extra
//! daemon per pod, on the same shared directory and the same guest
//! kernel.
//!
//! The shared directory is the guest's root (`rootfstype=virtiofs`): a
//! static busybox and an `/init` script that prints a line, reads a large
//! file, prints a line, creates, lists (`ls -l`: a stat each) and unlinks
//! many small files, prints a line and resets the guest. Every interval
//! is timed on the host, from the moments the lines are read off the
//! VMM's console, never by the guest's clock.
//!
//! Memory: the VMM (and virtiofsd) are sampled from /proc while the guest
//! works; a husk VMM without virtio-fs (and without initramfs, booted to
//! the kernel's panic for want of a root) gives the baseline from which the in-process worker's added
//! RSS is taken.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::measure::Watched;
use crate::procs::{Group, Sampler};
use crate::stats::Summary;
use crate::workloads::boot::{qemu_command_on, show, GUEST_MIB, LINUX_CMDLINE, QEMU_MACHINE};
use crate::workloads::containers::Place;
use crate::workloads::{interleave, mib, millis, Budget, Figure, Section, Side, Unit};

/// The programs compared.
#[derive(Clone, Debug)]
pub struct FsTools {
    /// husk's CLI (`husk boot --shared-dir`).
    pub husk: PathBuf,
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// virtiofsd; `None` when it is not installed (husk is measured alone).
    pub virtiofsd: Option<PathBuf>,
}

/// Rounds and the size of the guest's work.
#[derive(Clone, Copy, Debug)]
pub struct FsPlan {
    /// Unrecorded rounds first.
    pub warmup: usize,
    /// Recorded rounds.
    pub runs: usize,
    /// Longest one boot and workload may take.
    pub timeout: Duration,
    /// Size of the file read, MiB.
    pub file_mib: u64,
    /// Small files created, stat'ed and unlinked.
    pub files: usize,
    /// How often memory is sampled.
    pub sample_every: Duration,
}

/// The virtio-fs tag both guests mount as root.
const TAG: &str = "hbfs";
/// /init's lines.
const M_INIT: &str = "husk-bench-fs: init";
const M_READ: &str = "husk-bench-fs: read done";
const M_META: &str = "husk-bench-fs: meta done";
const M_LISTED: &str = "husk-bench-fs: listed";
const M_LEFT: &str = "husk-bench-fs: left 0";
const KERNEL_PANIC: &str = "Kernel panic";
const BUSYBOX: &str = "/bin/busybox";

/// The kernel command line that boots from the share.
fn root_cmdline() -> String {
    format!("rootfstype=virtiofs root={TAG} rw init=/init")
}

/// `/init`: the guest's whole workload.
fn init_script(plan: &FsPlan) -> String {
    format!(
        "#!/bin/sh\n\
         bb=/bin/busybox\n\
         $bb mount -t devtmpfs dev /dev\n\
         exec </dev/null >/dev/console 2>&1\n\
         echo '{M_INIT}'\n\
         $bb dd if=/data/big of=/dev/null bs=1M 2>&1 | $bb grep 'records in'\n\
         echo '{M_READ}'\n\
         cd /work || exit 1\n\
         i=0\n\
         while [ $i -lt {files} ]; do : > f$i; i=$((i + 1)); done\n\
         echo \"{M_LISTED} $($bb ls -l /work | $bb grep -c ' f')\"\n\
         $bb rm -f /work/f*\n\
         echo '{M_META}'\n\
         echo \"husk-bench-fs: left $($bb ls /work | $bb wc -l)\"\n\
         $bb reboot -f\n",
        files = plan.files
    )
}

/// Fills `dir` as the guests' root: busybox, /init, /data/big, /work.
pub fn prepare_share(dir: &Path, plan: &FsPlan) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what} in {dir:?}: {e}");
    for sub in ["bin", "dev", "proc", "data", "work"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| io(sub, e))?;
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))
        .map_err(|e| format!("cannot copy {BUSYBOX} (apt-get install busybox-static): {e}"))?;
    let sh = dir.join("bin/sh");
    if !sh.exists() {
        std::os::unix::fs::symlink("busybox", &sh).map_err(|e| io("bin/sh", e))?;
    }
    let init = dir.join("init");
    std::fs::write(&init, init_script(plan)).map_err(|e| io("init", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("init", e))?;
    // A pattern, not zeroes: nothing on the way may treat it as sparse.
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut big = Vec::with_capacity((plan.file_mib as usize) << 20);
    for _ in 0..plan.file_mib {
        big.extend_from_slice(&chunk);
    }
    std::fs::write(dir.join("data/big"), big).map_err(|e| io("data/big", e))
}

/// One boot and workload.
struct FsRun {
    boot: Duration,
    read: Duration,
    meta: Duration,
    vmm: Group,
    daemon: Option<Group>,
}

fn husk_command(tools: &FsTools, kernel: &Path, share: &Path, vsock: &Path) -> Command {
    let mut c = Command::new(&tools.husk);
    c.args(["boot", "--kernel"])
        .arg(kernel)
        .args(["--vcpus", "1", "--memory"])
        .arg(GUEST_MIB.to_string())
        .args(["--console", "stdout", "--vsock"])
        .arg(vsock)
        .arg("--shared-dir")
        .arg(share)
        .args(["--fs-tag", TAG, "--cmdline", &root_cmdline()]);
    c
}

fn baseline_command(tools: &FsTools, kernel: &Path, vsock: &Path) -> Command {
    let mut c = Command::new(&tools.husk);
    c.args(["boot", "--kernel"])
        .arg(kernel)
        .args(["--vcpus", "1", "--memory"])
        .arg(GUEST_MIB.to_string())
        .args(["--console", "stdout", "--vsock"])
        .arg(vsock);
    c
}

fn virtiofsd_command(virtiofsd: &Path, share: &Path, socket: &Path) -> Command {
    let mut c = Command::new(virtiofsd);
    c.arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(share)
        // As husk's backend: cache=auto, no writeback, no xattrs, O_PATH
        // fds rather than file handles (virtiofsd's defaults for the last
        // three).
        .args(["--cache", "auto", "--sandbox", "namespace"]);
    c
}

fn qemu_fs_command(qemu: &Path, kernel: &Path, socket: &Path) -> Command {
    // vhost-user needs the guest's memory shareable with the daemon.
    let mut c = qemu_command_on(qemu, &format!("{QEMU_MACHINE},memory-backend=mem"));
    c.args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={GUEST_MIB}M,share=on"),
        "-chardev",
    ])
    .arg(format!("socket,id=vfs,path={}", socket.display()))
    .args([
        "-device",
        &format!("vhost-user-fs-device,chardev=vfs,tag={TAG}"),
    ])
    .arg("-kernel")
    .arg(kernel)
    .args(["-append", &format!("{LINUX_CMDLINE} {}", root_cmdline())]);
    c
}

/// Waits for `marker` (or a panic) on the VMM's console.
fn wait_line(w: &mut Watched, marker: &str, timeout: Duration) -> Result<Duration, String> {
    let (which, at) = w
        .wait_for_any(&[marker, KERNEL_PANIC], timeout)
        .map_err(|e| format!("{e}\n{}", w.tail(12)))?;
    if which == 1 {
        return Err(format!("the guest kernel panicked\n{}", w.tail(12)));
    }
    Ok(at)
}

/// Starts virtiofsd and waits for its socket.
fn start_daemon(
    virtiofsd: &Path,
    share: &Path,
    socket: &Path,
    log: &Path,
) -> Result<Child, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
    let mut child = virtiofsd_command(virtiofsd, share, socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {virtiofsd:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "virtiofsd exited with {status}: {}",
                log_text().trim()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "virtiofsd made no socket in 60 s: {}",
                log_text().trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}

fn fs_run(
    side: Side,
    tools: &FsTools,
    kernel: &Path,
    share: &Path,
    work: &Path,
    plan: &FsPlan,
) -> Result<FsRun, String> {
    let guest_kib = GUEST_MIB * 1024;
    let socket = work.join(format!("{}.sock", side.name()));
    let _ = std::fs::remove_file(&socket);
    let mut daemon = None;
    let mut daemon_sampler = None;
    let mut cmd = match side {
        Side::Husk => husk_command(tools, kernel, share, &socket),
        Side::Peer => {
            let virtiofsd = tools
                .virtiofsd
                .as_deref()
                .ok_or("virtiofsd is not installed")?;
            let child = start_daemon(virtiofsd, share, &socket, &work.join("virtiofsd.log"))?;
            daemon_sampler = Some(Sampler::start(
                vec![child.id()],
                plan.sample_every,
                guest_kib,
            ));
            daemon = Some(child);
            qemu_fs_command(&tools.qemu, kernel, &socket)
        }
    };
    let result = (|| {
        let mut w = Watched::spawn(&mut cmd, Duration::from_millis(200))
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        let sampler = Sampler::start(vec![w.pid()], plan.sample_every, guest_kib);
        let lines = (|| {
            let init = wait_line(&mut w, M_INIT, plan.timeout)?;
            let read = wait_line(&mut w, M_READ, plan.timeout)?;
            let meta = wait_line(&mut w, M_META, plan.timeout)?;
            wait_line(&mut w, M_LEFT, plan.timeout)?;
            Ok::<_, String>((init, read, meta))
        })();
        let vmm = sampler.stop(guest_kib);
        let (init, read, meta) = lines?;
        let records = format!("{}+0 records in", plan.file_mib);
        let listed = format!("{M_LISTED} {}", plan.files);
        for (want, what) in [
            (&records, "read the whole file"),
            (&listed, "list every file"),
        ] {
            if !w.output_contains(want) {
                return Err(format!(
                    "the guest did not {what} (no {want:?})\n{}",
                    w.tail(12)
                ));
            }
        }
        match w.wait_exit(plan.timeout) {
            Ok((_, status)) if status.success() => {}
            Ok((_, status)) => return Err(format!("the VMM exited with {status}\n{}", w.tail(8))),
            Err(e) => return Err(format!("after the workload: {e}\n{}", w.tail(8))),
        }
        Ok(FsRun {
            boot: init,
            read: read - init,
            meta: meta - read,
            vmm,
            daemon: None,
        })
    })();
    let daemon_group = daemon_sampler.map(|s| s.stop(guest_kib));
    if let Some(mut child) = daemon {
        // It ends by itself when QEMU goes; give it a moment, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_file(&socket);
    result.map(|mut r| {
        r.daemon = daemon_group;
        r
    })
}

/// A husk VMM without virtio-fs or initramfs (both would add to its
/// RSS: an initramfs is read into the VMM's memory), booted until the
/// kernel finds no root and panics: its peak RSS outside guest RAM.
fn baseline_run(tools: &FsTools, kernel: &Path, work: &Path, plan: &FsPlan) -> Result<u64, String> {
    let guest_kib = GUEST_MIB * 1024;
    let socket = work.join("baseline.sock");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = baseline_command(tools, kernel, &socket);
    let mut w = Watched::spawn(&mut cmd, Duration::from_millis(200))
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let sampler = Sampler::start(vec![w.pid()], plan.sample_every, guest_kib);
    let panicked = w
        .wait_for_any(&[KERNEL_PANIC], plan.timeout)
        .map_err(|e| format!("{e}\n{}", w.tail(12)));
    let group = sampler.stop(guest_kib);
    w.kill();
    let _ = std::fs::remove_file(&socket);
    panicked.map(|_| group.peak_host_rss_kib)
}

/// husk's in-process virtio-fs against QEMU microvm + virtiofsd.
pub fn compare(
    tools: &FsTools,
    kernel: &Path,
    work: &Path,
    machine: &Machine,
    place: &Place,
    plan: FsPlan,
) -> Section {
    let title = format!("virtio-fs: in-process vs virtiofsd — {}", place.name);
    let share = work.join("share");
    let mut notes = Vec::new();
    if let Err(why) = std::fs::create_dir_all(&share)
        .map_err(|e| e.to_string())
        .and_then(|()| prepare_share(&share, &plan))
    {
        notes.push(format!("not measured: {why}"));
        return Section {
            title,
            machine: machine.clone(),
            warmup: plan.warmup,
            runs: 0,
            figures: Vec::new(),
            notes,
            commands: Vec::new(),
        };
    }
    let with_peer = tools.virtiofsd.is_some();
    if !with_peer {
        notes.push(
            "virtiofsd is not installed, so husk is measured alone: `apt-get install \
             libseccomp-dev libcap-ng-dev && cargo install virtiofsd --root \
             ~/.cache/husk/virtiofsd` (or --virtiofsd PATH)."
                .into(),
        );
    }
    let result = interleave(
        "virtiofs",
        plan.warmup,
        plan.runs,
        |side, _| {
            if side == Side::Peer && !with_peer {
                return Err("virtiofsd is not installed".into());
            }
            fs_run(side, tools, kernel, &share, work, &plan)
        },
        |r| {
            format!(
                "boot {:.0} ms, read {:.0} ms, meta {:.0} ms, VMM host RSS {:.1} MiB{}",
                millis(r.boot),
                millis(r.read),
                millis(r.meta),
                mib(r.vmm.peak_host_rss_kib),
                r.daemon.as_ref().map_or(String::new(), |d| format!(
                    ", virtiofsd host RSS {:.1} MiB",
                    mib(d.peak_host_rss_kib)
                ))
            )
        },
    );
    let mut baseline = Vec::new();
    for i in 0..plan.runs.max(1) {
        match baseline_run(tools, kernel, work, &plan) {
            Ok(kib) => {
                eprintln!(
                    "virtiofs: husk baseline {}/{}: VMM host RSS {:.2} MiB",
                    i + 1,
                    plan.runs.max(1),
                    mib(kib)
                );
                baseline.push(mib(kib));
            }
            Err(e) => notes.push(format!("baseline run {} failed: {e}", i + 1)),
        }
    }
    if !with_peer {
        // Not a failure of the harness: the peer is missing.
        notes.extend(
            result
                .failures
                .iter()
                .filter(|f| !f.starts_with("peer"))
                .cloned(),
        );
    } else {
        notes.extend(result.failures.iter().cloned());
    }
    let base = Summary::of(&baseline).map(|s| s.median);
    let peer_name = if with_peer {
        "QEMU microvm + virtiofsd".to_string()
    } else {
        String::new()
    };
    let time_budget = || {
        Budget::NotApplicable(
            if place.emulated {
                "emulated"
            } else {
                "none in DESIGN.md"
            }
            .into(),
        )
    };
    let figure = |id: &str, title: String, unit, budget, husk: Vec<f64>, peer: Vec<f64>| Figure {
        id: id.into(),
        title,
        place: place.name.clone(),
        unit,
        peer: peer_name.clone(),
        husk,
        peer_samples: if with_peer { peer } else { Vec::new() },
        budget,
    };
    let times = |pick: fn(&FsRun) -> Duration| {
        (
            result
                .husk
                .iter()
                .map(|r| millis(pick(r)))
                .collect::<Vec<_>>(),
            result
                .peer
                .iter()
                .map(|r| millis(pick(r)))
                .collect::<Vec<_>>(),
        )
    };
    let daemon = |pick: fn(&Group) -> u64| -> Vec<f64> {
        result
            .peer
            .iter()
            .filter_map(|r| r.daemon.as_ref().map(|d| mib(pick(d))))
            .collect()
    };
    let (boot_h, boot_p) = times(|r| r.boot);
    let (read_h, read_p) = times(|r| r.read);
    let (meta_h, meta_p) = times(|r| r.meta);
    let added: Vec<f64> = base.map_or_else(Vec::new, |b| {
        result
            .husk
            .iter()
            .map(|r| (mib(r.vmm.peak_host_rss_kib) - b).max(0.0))
            .collect()
    });
    let pod = |pick: fn(&Group) -> u64| -> (Vec<f64>, Vec<f64>) {
        (
            result.husk.iter().map(|r| mib(pick(&r.vmm))).collect(),
            result
                .peer
                .iter()
                .map(|r| mib(pick(&r.vmm) + r.daemon.as_ref().map_or(0, pick)))
                .collect(),
        )
    };
    let (pss_h, pss_p) = pod(|g| g.peak_pss.pss_kib);
    let (host_h, host_p) = pod(|g| g.peak_host_rss_kib);
    let mem_budget = || Budget::NotApplicable("no budget for virtio-fs alone".into());
    let mut figures = vec![
        figure("fs.boot", "launch VMM → /init on a virtio-fs root".into(), Unit::Millis, time_budget(), boot_h, boot_p),
        figure(
            "fs.read",
            format!("read a {} MiB file (dd bs=1M), guest page cache cold", plan.file_mib),
            Unit::Millis,
            time_budget(),
            read_h,
            read_p,
        ),
        figure(
            "fs.meta",
            format!("create, ls -l (stat) and unlink {} small files", plan.files),
            Unit::Millis,
            time_budget(),
            meta_h,
            meta_p,
        ),
        figure(
            "fs.backend_rss",
            "virtio-fs backend's host memory per pod: in-process worker's added VMM RSS vs virtiofsd RSS (guest RAM excluded)".into(),
            Unit::MiB,
            mem_budget(),
            added,
            daemon(|g| g.peak_host_rss_kib),
        ),
        figure(
            "fs.pod_host_rss",
            "pod: peak Σ RSS outside guest RAM (husk VMM vs QEMU + virtiofsd)".into(),
            Unit::MiB,
            mem_budget(),
            host_h,
            host_p,
        ),
        figure(
            "fs.pod_pss",
            "pod: peak Σ PSS, guest pages touched included (husk VMM vs QEMU + virtiofsd)".into(),
            Unit::MiB,
            Budget::NotApplicable("guest memory included".into()),
            pss_h,
            pss_p,
        ),
    ];
    figures.push(Figure {
        peer: String::new(),
        peer_samples: Vec::new(),
        ..figure(
            "fs.baseline_rss",
            "husk VMM without virtio-fs or initramfs (boot to the no-root panic): peak RSS outside guest RAM".into(),
            Unit::MiB,
            Budget::AtMost(5.0),
            baseline.clone(),
            Vec::new(),
        )
    });
    if with_peer {
        let d_pss = Summary::of(&daemon(|g| g.peak_pss.pss_kib));
        let d_rss = Summary::of(&daemon(|g| g.peak_pss.rss_kib));
        let d_guest = Summary::of(&daemon(|g| g.peak_guest_rss_kib));
        if let (Some(pss), Some(rss), Some(guest_part)) = (d_pss, d_rss, d_guest) {
            notes.push(format!(
                "virtiofsd alone, medians: PSS {:.2} MiB, RSS {:.2} MiB of which {:.2} MiB are \
                 guest pages it mapped (the memfd guest RAM that vhost-user shares; QEMU and \
                 virtiofsd split those in PSS).",
                pss.median, rss.median, guest_part.median
            ));
        }
    }
    let rate =
        |samples: &[f64]| Summary::of(samples).map(|s| plan.file_mib as f64 / (s.median / 1000.0));
    let read_rate = |v: Option<f64>| v.map_or("—".to_string(), |r| format!("{r:.1} MiB/s"));
    notes.push(format!(
        "Read throughput from the medians: husk {}, QEMU + virtiofsd {}.",
        read_rate(rate(&figures[1].husk)),
        read_rate(rate(&figures[1].peer_samples)),
    ));
    notes.push(format!(
        "Both guests boot the same kernel from the same shared directory as root \
         (`{}`), 1 vCPU and {GUEST_MIB} MiB; the workload is /init in that directory. Intervals \
         run between /init's console lines as the host reads them; boot runs from launching the \
         VMM (virtiofsd is started first and is not counted).",
        root_cmdline()
    ));
    notes.push(format!(
        "Memory is sampled every {} ms from /proc while the guest works. The in-process worker's \
         added RSS is each husk run's peak RSS outside guest RAM less the median of {} husk \
         boot(s) of the same kernel without virtio-fs or initramfs, to the kernel's panic for \
         want of a root (both with a vsock device; an initramfs would add its own size, as the \
         VMM reads it); the guest-RAM mappings are those larger than three quarters of {GUEST_MIB} MiB (virtiofsd maps guest RAM in the pieces QEMU hands it).",
        plan.sample_every.as_millis(),
        baseline.len()
    ));
    if place.emulated {
        notes.push(
            "Emulated test host: the CPU is ~12× slower than the host's and ~17× inside the \
             nested guest; times show the shape, not production figures."
                .into(),
        );
    }
    let socket = work.join("peer.sock");
    let mut commands = vec![(
        "husk".to_string(),
        show(&husk_command(
            tools,
            kernel,
            &share,
            &work.join("husk.sock"),
        )),
    )];
    if let Some(virtiofsd) = &tools.virtiofsd {
        commands.push((
            "virtiofsd".into(),
            show(&virtiofsd_command(virtiofsd, &share, &socket)),
        ));
        commands.push((
            "QEMU microvm".into(),
            show(&qemu_fs_command(&tools.qemu, kernel, &socket)),
        ));
    }
    commands.push((
        "husk baseline".into(),
        show(&baseline_command(
            tools,
            kernel,
            &work.join("baseline.sock"),
        )),
    ));
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.warmup,
        runs: plan.runs,
        figures,
        notes,
        commands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_shares_guest_memory_with_the_daemon() {
        let line = show(&qemu_fs_command(
            Path::new("qemu"),
            Path::new("/k"),
            Path::new("/s.sock"),
        ));
        assert!(
            line.contains(&format!("-M {QEMU_MACHINE},memory-backend=mem ")),
            "{line}"
        );
        assert!(
            line.contains("memory-backend-memfd,id=mem,size=128M,share=on"),
            "{line}"
        );
        assert!(line.contains("-chardev socket,id=vfs,path=/s.sock -device vhost-user-fs-device,chardev=vfs,tag=hbfs"), "{line}");
        assert!(line.ends_with("init=/init'"), "{line}");
    }

    #[test]
    fn the_share_holds_the_workload() {
        if !Path::new(BUSYBOX).is_file() {
            eprintln!("skipped: needs {BUSYBOX}");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-bench-share-{}", std::process::id()));
        let plan = FsPlan {
            warmup: 0,
            runs: 1,
            timeout: Duration::from_secs(1),
            file_mib: 2,
            files: 7,
            sample_every: Duration::from_millis(10),
        };
        prepare_share(&dir, &plan).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("data/big")).unwrap().len(),
            2 << 20
        );
        let init = std::fs::read_to_string(dir.join("init")).unwrap();
        assert!(init.contains("-lt 7 ]"), "{init}");
        // The script is valid sh as far as the shell's parser goes.
        let ok = Command::new(BUSYBOX)
            .args(["sh", "-n"])
            .arg(dir.join("init"))
            .status()
            .unwrap();
        assert!(ok.success());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
