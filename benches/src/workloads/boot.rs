//! The boot benchmark, against QEMU's microvm machine:
//!
//! - [`tiny`]: the tiny test guest (tests/test-guest) on this machine's own
//!   /dev/kvm, which any KVM runs (PVM included): launch → `boot ok`,
//!   launch → exit after the guest's reset, and the VMM's peak RSS. This
//!   is the VMM's own floor; guest memory is negligible.
//! - [`linux`]: husk's kernel and agent initramfs, 1 vCPU and 128 MiB, to
//!   the agent's ready line and to its first answer, where /dev/kvm boots
//!   Linux (hardware KVM, or inside tests/kvm-host).

use std::fmt::Display;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use husk::agent::{connect_hybrid_vsock, AgentClient};
use husk_protocol::AGENT_VSOCK_PORT;

use crate::machine::Machine;
use crate::measure::Watched;
use crate::workloads::{interleave, mib, millis, Budget, Figure, Section, Side, Unit};

/// The tiny guest's first line.
const BOOT_OK: &str = "husk-test-guest: boot ok";
/// The tiny guest's last line before its reset.
const ALL_PASSED: &str = "husk-test-guest: all checks passed";
/// The agent's line once it serves on vsock.
const AGENT_READY: &str = "husk-agent: ready on vsock://-1:1024";
/// What the agent says when the guest has no vsock device.
const AGENT_NO_VSOCK: &str = "husk-agent: fatal: cannot listen";
/// Any other end of the agent.
const AGENT_FATAL: &str = "husk-agent: fatal:";
/// The guest kernel gave up.
const KERNEL_PANIC: &str = "Kernel panic";
/// Guest memory of every boot, MiB (husk's default).
pub const GUEST_MIB: u64 = 128;
/// The kernel command line husk passes (runtime/src/vmm/builder.rs plus
/// `quiet`), given to QEMU too so both guests boot alike.
pub const LINUX_CMDLINE: &str =
    "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off nomodule i8042.noaux tsc=reliable quiet";
/// QEMU's microvm trimmed as for a fast boot: no option ROMs, RTC or ACPI
/// (neither guest uses them; husk's kernel finds its CPU in the MP table).
pub const QEMU_MACHINE: &str = "microvm,x-option-roms=off,rtc=off,acpi=off";
/// How long the agent has to answer once it said it is ready.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a guest has to reset after the agent's Shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The two programs compared.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// husk's CLI (`husk boot`).
    pub husk: PathBuf,
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
}

/// How many runs, and how long each may take.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Unrecorded rounds first.
    pub warmup: usize,
    /// Recorded rounds.
    pub runs: usize,
    /// Longest a single boot may take.
    pub timeout: Duration,
}

/// The Linux guest to boot.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// vmlinux with a PVH note.
    pub kernel: PathBuf,
    /// The agent's initramfs.
    pub initramfs: PathBuf,
}

/// QEMU microvm with what both workloads share: KVM, the host CPU (less
/// `arch-capabilities`, whose MSR KVM refuses on these hosts), 1 vCPU,
/// 128 MiB, the console on stdout, and an i8042 so that the guest's reset
/// ends QEMU (`-no-reboot`; microvm has none by default).
pub fn qemu_command(qemu: &Path) -> Command {
    qemu_command_on(qemu, QEMU_MACHINE)
}

/// [`qemu_command`] with other `-M` machine options.
pub fn qemu_command_on(qemu: &Path, machine: &str) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-M",
        machine,
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-smp",
        "1",
        "-m",
    ])
    .arg(GUEST_MIB.to_string())
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-serial", "stdio", "-device", "i8042"]);
    c
}

/// A command line as a person would type it (for the report).
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error and its sources, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// An error with the end of the process's output.
fn failed(w: &Watched, e: impl Display) -> String {
    format!("{e}\n{}", w.tail(12))
}

fn spawn(cmd: &mut Command, sample_every: Duration) -> Result<Watched, String> {
    Watched::spawn(cmd, sample_every)
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

/// One boot of the tiny guest.
struct TinyRun {
    boot_ok: Duration,
    exit: Duration,
    peak_rss_kib: Option<u64>,
}

fn tiny_run(mut cmd: Command, timeout: Duration) -> Result<TinyRun, String> {
    let mut w = spawn(&mut cmd, Duration::from_millis(1))?;
    let (_, boot_ok) = w
        .wait_for_any(&[BOOT_OK], timeout)
        .map_err(|e| failed(&w, e))?;
    w.sample_rss();
    let (exit, status) = w.wait_exit(timeout).map_err(|e| failed(&w, e))?;
    if !status.success() {
        return Err(failed(&w, format!("exited with {status}")));
    }
    if !w.output_contains(ALL_PASSED) {
        return Err(failed(&w, "the guest's checks did not pass"));
    }
    Ok(TinyRun {
        boot_ok,
        exit,
        peak_rss_kib: w.peak_rss_kib(),
    })
}

/// Boots the tiny guest with husk and with QEMU microvm, interleaved.
pub fn tiny(bins: &Binaries, guest: &Path, machine: &Machine, sched: Schedule) -> Section {
    let husk_cmd = || {
        let mut c = Command::new(&bins.husk);
        c.args(["boot", "--kernel"])
            .arg(guest)
            .args(["--console", "stdout"]);
        c
    };
    let qemu_cmd = || {
        let mut c = qemu_command(&bins.qemu);
        c.arg("-kernel").arg(guest);
        c
    };
    let result = interleave(
        "boot/tiny",
        sched.warmup,
        sched.runs,
        |side, _| {
            tiny_run(
                if side == Side::Husk {
                    husk_cmd()
                } else {
                    qemu_cmd()
                },
                sched.timeout,
            )
        },
        |r| {
            format!(
                "boot ok {:.1} ms, exit {:.1} ms, peak RSS {}",
                millis(r.boot_ok),
                millis(r.exit),
                r.peak_rss_kib
                    .map_or("?".into(), |k| format!("{:.2} MiB", mib(k)))
            )
        },
    );
    let place = machine.kvm.place().to_string();
    let time_budget = if machine.kvm.emulated() {
        Budget::NotApplicable("emulated".into())
    } else {
        Budget::RatioAtMost(1.0)
    };
    let peer = "QEMU microvm".to_string();
    let figure =
        |id: &str, title: &str, unit, budget, pick: &dyn Fn(&TinyRun) -> Option<f64>| Figure {
            id: id.into(),
            title: title.into(),
            place: place.clone(),
            unit,
            peer: peer.clone(),
            husk: result.husk.iter().filter_map(pick).collect(),
            peer_samples: result.peer.iter().filter_map(pick).collect(),
            budget,
        };
    let mut notes = result.failures.clone();
    notes.push(
        "Peak RSS is the highest VmHWM of /proc/PID/status, sampled every 1 ms and at the `boot ok` \
         line until the process exits; the tiny guest touches a few pages, so it is the VMM's own."
            .into(),
    );
    if !machine.kvm.emulated() && machine.kvm != crate::machine::KvmKind::Hardware {
        notes.push(format!(
            "{}: both VMMs run on the same software KVM, so ratios compare the VMMs; absolute \
             times are not those of hardware KVM.",
            machine.kvm.describe()
        ));
    }
    Section {
        title: "Tiny test guest on this machine's /dev/kvm".into(),
        machine: machine.clone(),
        warmup: sched.warmup,
        runs: sched.runs,
        figures: vec![
            figure(
                "boot.tiny.boot_ok",
                "tiny guest: launch → `boot ok` on the console",
                Unit::Millis,
                time_budget.clone(),
                &|r| Some(millis(r.boot_ok)),
            ),
            figure(
                "boot.tiny.exit",
                "tiny guest: launch → VMM exit after the guest's reset",
                Unit::Millis,
                time_budget,
                &|r| Some(millis(r.exit)),
            ),
            figure(
                "boot.tiny.rss",
                "tiny guest: VMM peak RSS (VmHWM)",
                Unit::MiB,
                Budget::AtMost(5.0),
                &|r| r.peak_rss_kib.map(mib),
            ),
        ],
        notes,
        commands: vec![
            ("husk".into(), show(&husk_cmd())),
            ("QEMU microvm".into(), show(&qemu_cmd())),
        ],
    }
}

/// One boot of the Linux guest.
struct LinuxRun {
    /// Launch → the agent's line (ready, or `cannot listen` for a peer
    /// without vsock).
    ready: Duration,
    /// Launch → the agent's answer to Version.
    answered: Option<Duration>,
    /// Peak VmHWM, guest pages touched included.
    peak_rss_kib: Option<u64>,
    /// RSS when ready outside the guest RAM mapping.
    vmm_rss_kib: Option<u64>,
}

/// How the peer reaches the agent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerVsock {
    /// `vhost-vsock-device`: the agent serves, reached over AF_VSOCK.
    Vhost,
    /// No vsock: the agent fails to listen and resets the guest.
    None,
}

/// Setting this to `off` runs the peer without vsock (to try the fallback).
pub const PEER_VSOCK_ENV: &str = "HUSK_BENCH_PEER_VSOCK";

/// Makes /dev/vhost-vsock available (loading vhost_vsock if it can);
/// `Err` says why QEMU has to go without vsock.
fn vhost_vsock() -> Result<(), String> {
    if std::env::var(PEER_VSOCK_ENV).is_ok_and(|v| v == "off") {
        return Err(format!("{PEER_VSOCK_ENV}=off"));
    }
    let dev = Path::new("/dev/vhost-vsock");
    if dev.exists() {
        return Ok(());
    }
    let out = Command::new("modprobe").arg("vhost_vsock").output();
    if dev.exists() {
        return Ok(());
    }
    Err(match out {
        Ok(o) => format!(
            "/dev/vhost-vsock is missing and `modprobe vhost_vsock` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("/dev/vhost-vsock is missing and modprobe could not run: {e}"),
    })
}

/// Connects to `port` of guest `cid` over AF_VSOCK (QEMU's vhost-vsock).
/// The stream is a vsock socket in a `UnixStream`: the agent client only
/// takes its fd.
fn vsock_connect(cid: u32, port: u32) -> io::Result<UnixStream> {
    // SAFETY: socket(2) with constant arguments; it returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain data for which all zeroes is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: `addr` is an initialised sockaddr_vm and the length passed
    // is its size; connect(2) only reads it.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

/// Connects (retrying until `deadline`: the ready line comes just after
/// `listen`) and asks the agent's version.
fn ask_version(
    mut connect: impl FnMut() -> Result<UnixStream, String>,
    deadline: Instant,
) -> Result<AgentClient, String> {
    let stream = loop {
        match connect() {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot reach the agent: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let client = AgentClient::new(stream).map_err(|e| format!("agent client: {}", chain(&e)))?;
    client
        .version()
        .map_err(|e| format!("agent Version: {}", chain(&e)))?;
    Ok(client)
}

/// Asks the agent to end the guest and waits for the VMM to exit; kills
/// it otherwise. Returns a remark if it did not go cleanly.
fn shut_down(w: &mut Watched, client: AgentClient) -> Option<String> {
    let asked = client.shutdown();
    drop(client);
    let remark = match (asked, w.wait_exit(SHUTDOWN_TIMEOUT)) {
        (Ok(()), Ok((_, status))) if status.success() => None,
        (Ok(()), Ok((_, status))) => Some(format!("exited with {status} after Shutdown")),
        (Err(e), _) => Some(format!("Shutdown failed: {}", chain(&e))),
        (_, Err(e)) => Some(format!("after Shutdown: {e}")),
    };
    w.kill();
    remark
}

fn linux_run(
    side: Side,
    bins: &Binaries,
    guest: &LinuxGuest,
    vsock: PeerVsock,
    cid: u32,
    sched: Schedule,
    sample_every: Duration,
) -> Result<(LinuxRun, Option<String>), String> {
    let dir = std::env::temp_dir().join(format!("husk-bench-{}-{cid}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let socket = dir.join("v.sock");
    let mut cmd = match side {
        Side::Husk => husk_linux_command(bins, guest, &socket),
        Side::Peer => qemu_linux_command(bins, guest, vsock, cid),
    };
    let result = (|| {
        let mut w = spawn(&mut cmd, sample_every)?;
        // Without a vsock device the agent either fails to listen or (a
        // kernel that binds AF_VSOCK without a transport) says it is ready
        // but cannot be reached: either line ends that boot. The console
        // comes a byte at a time, so the generic fatal line, a prefix of
        // the no-vsock one, is not looked for then.
        let no_vsock = side == Side::Peer && vsock == PeerVsock::None;
        let markers: &[&str] = if no_vsock {
            &[AGENT_READY, AGENT_NO_VSOCK, KERNEL_PANIC]
        } else {
            &[AGENT_READY, AGENT_FATAL, KERNEL_PANIC]
        };
        let (which, ready) = w
            .wait_for_any(markers, sched.timeout)
            .map_err(|e| failed(&w, e))?;
        if which == markers.len() - 1 || (which == 1 && !no_vsock) {
            return Err(failed(&w, "the guest failed before the agent was ready"));
        }
        let vmm_rss_kib = w.rss_outside_guest_ram_kib(GUEST_MIB);
        w.sample_rss();
        let deadline = Instant::now() + AGENT_TIMEOUT;
        let client = match (side, vsock) {
            (Side::Husk, _) => Some(ask_version(
                || {
                    connect_hybrid_vsock(&socket, AGENT_VSOCK_PORT, Duration::from_secs(5))
                        .map_err(|e| chain(&e))
                },
                deadline,
            )),
            (Side::Peer, PeerVsock::Vhost) => Some(ask_version(
                || vsock_connect(cid, AGENT_VSOCK_PORT).map_err(|e| e.to_string()),
                deadline,
            )),
            (Side::Peer, PeerVsock::None) => None,
        };
        let answered = w.started().elapsed();
        let (answered, remark) = match client {
            Some(client) => {
                let client = client.map_err(|e| failed(&w, e))?;
                (Some(answered), shut_down(&mut w, client))
            }
            None if which == 0 => {
                w.kill();
                let remark =
                    "the agent said ready without a vsock device (unreachable); QEMU killed";
                (None, Some(remark.to_string()))
            }
            None => {
                // The agent resets the guest by itself.
                let remark = w.wait_exit(SHUTDOWN_TIMEOUT).err().map(|e| e.to_string());
                w.kill();
                (None, remark)
            }
        };
        Ok((
            LinuxRun {
                ready,
                answered,
                peak_rss_kib: w.peak_rss_kib(),
                vmm_rss_kib,
            },
            remark,
        ))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn husk_linux_command(bins: &Binaries, guest: &LinuxGuest, socket: &Path) -> Command {
    let mut c = Command::new(&bins.husk);
    c.args(["boot", "--kernel"])
        .arg(&guest.kernel)
        .arg("--initramfs")
        .arg(&guest.initramfs)
        .args(["--vcpus", "1", "--memory"])
        .arg(GUEST_MIB.to_string())
        .args(["--console", "stdout", "--vsock"])
        .arg(socket);
    c
}

fn qemu_linux_command(bins: &Binaries, guest: &LinuxGuest, vsock: PeerVsock, cid: u32) -> Command {
    let mut c = qemu_command(&bins.qemu);
    c.arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initramfs)
        .args(["-append", LINUX_CMDLINE]);
    if vsock == PeerVsock::Vhost {
        c.args(["-device", &format!("vhost-vsock-device,guest-cid={cid}")]);
    }
    c
}

/// Boots the Linux guest to the agent with husk and with QEMU microvm,
/// interleaved. `place` says where (the caller knows whether this is the
/// emulated test host); `emulated` drops the time budgets.
pub fn linux(
    bins: &Binaries,
    guest: &LinuxGuest,
    machine: &Machine,
    place: &str,
    emulated: bool,
    sched: Schedule,
) -> Section {
    let mut notes = Vec::new();
    let vsock = match vhost_vsock() {
        Ok(()) => PeerVsock::Vhost,
        Err(why) => {
            notes.push(format!(
                "QEMU runs without vsock ({why}): its agent cannot be reached, so its boot is \
                 timed to the agent's first line, `{AGENT_READY}` (the guest kernel binds AF_VSOCK \
                 without a device) or `{AGENT_NO_VSOCK}`, and it has no agent-answered row."
            ));
            PeerVsock::None
        }
    };
    let sample_every = if emulated {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(5)
    };
    let mut remarks = Vec::new();
    let result = interleave(
        "boot/linux",
        sched.warmup,
        sched.runs,
        |side, round| {
            // A fresh CID each round: a vhost-vsock CID may linger briefly.
            let cid = 3 + round.index as u32;
            let (run, remark) = linux_run(side, bins, guest, vsock, cid, sched, sample_every)?;
            if let Some(r) = remark {
                remarks.push(format!("{} round {}: {r}", side.name(), round.index + 1));
            }
            Ok(run)
        },
        |r| {
            format!(
                "ready {:.0} ms, answered {}, peak RSS {}",
                millis(r.ready),
                r.answered
                    .map_or("—".into(), |a| format!("{:.0} ms", millis(a))),
                r.peak_rss_kib
                    .map_or("?".into(), |k| format!("{:.1} MiB", mib(k)))
            )
        },
    );
    notes.extend(result.failures.iter().cloned());
    notes.extend(remarks);
    notes.push(format!(
        "Times run from launching the VMM process to reading the line on its stdout (or the \
         agent's Version answer), measured outside the guest{}.",
        if emulated {
            "; the nested guest's own clock is unreliable"
        } else {
            ""
        }
    ));
    notes.push(format!(
        "Peak RSS (VmHWM) includes the guest memory the boot touched. The guest-RAM-excluded RSS \
         is /proc/PID/smaps at the ready line, leaving out mappings of {GUEST_MIB} MiB or more."
    ));
    if emulated {
        notes.push(
            "Inside the emulated test host the CPU is ~12× slower than the host's and ~17× inside \
             the nested guest: times and ratios show the shape, not production figures."
                .into(),
        );
    }
    let time_budget = |comparable: bool| {
        if emulated {
            Budget::NotApplicable("emulated".into())
        } else if !comparable {
            Budget::NotApplicable("peer without vsock".into())
        } else {
            Budget::RatioAtMost(1.0)
        }
    };
    let with_vsock = vsock == PeerVsock::Vhost;
    let qemu = if with_vsock {
        "QEMU microvm (vhost-vsock)"
    } else {
        "QEMU microvm (no vsock)"
    }
    .to_string();
    let figure = |id: &str,
                  title: &str,
                  peer: String,
                  unit,
                  budget,
                  pick: &dyn Fn(&LinuxRun) -> Option<f64>| Figure {
        id: id.into(),
        title: title.into(),
        place: place.into(),
        unit,
        husk: result.husk.iter().filter_map(pick).collect(),
        peer_samples: if peer.is_empty() {
            Vec::new()
        } else {
            result.peer.iter().filter_map(pick).collect()
        },
        peer,
        budget,
    };
    let figures = vec![
        figure(
            "boot.linux.ready",
            "Linux: launch → agent `ready` on the console",
            if with_vsock {
                qemu.clone()
            } else {
                "QEMU microvm, no vsock: to the agent's first line".to_string()
            },
            Unit::Millis,
            time_budget(with_vsock),
            &|r| Some(millis(r.ready)),
        ),
        figure(
            "boot.linux.answered",
            "Linux: launch → agent answered Version",
            if with_vsock {
                qemu.clone()
            } else {
                String::new()
            },
            Unit::Millis,
            time_budget(with_vsock),
            &|r| r.answered.map(millis),
        ),
        figure(
            "boot.linux.rss_peak",
            "Linux: VMM peak RSS, guest memory touched included",
            qemu.clone(),
            Unit::MiB,
            Budget::NotApplicable("guest memory included".into()),
            &|r| r.peak_rss_kib.map(mib),
        ),
        figure(
            "boot.linux.rss_vmm",
            "Linux: VMM RSS at ready, guest RAM excluded",
            qemu.clone(),
            Unit::MiB,
            Budget::AtMost(5.0),
            &|r| r.vmm_rss_kib.map(mib),
        ),
    ];
    let socket = std::env::temp_dir().join("husk-bench-PID-CID/v.sock");
    Section {
        title: format!("Linux guest to agent ready — {place}"),
        machine: machine.clone(),
        warmup: sched.warmup,
        runs: sched.runs,
        figures,
        notes,
        commands: vec![
            (
                "husk".into(),
                show(&husk_linux_command(bins, guest, &socket)),
            ),
            (
                "QEMU microvm".into(),
                show(&qemu_linux_command(bins, guest, vsock, 3)),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_commands_as_typed() {
        let mut c = Command::new("qemu");
        c.args(["-append", "console=ttyS0 quiet", "-m", "128"]);
        assert_eq!(show(&c), "qemu -append 'console=ttyS0 quiet' -m 128");
    }

    #[test]
    fn the_peer_gets_husks_command_line() {
        let bins = Binaries {
            husk: "husk".into(),
            qemu: "qemu".into(),
        };
        let guest = LinuxGuest {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let line = show(&qemu_linux_command(&bins, &guest, PeerVsock::Vhost, 7));
        assert!(
            line.contains(&format!("-append '{LINUX_CMDLINE}'")),
            "{line}"
        );
        assert!(
            line.ends_with("-device vhost-vsock-device,guest-cid=7"),
            "{line}"
        );
        assert!(!show(&qemu_linux_command(&bins, &guest, PeerVsock::None, 7)).contains("vsock"));
    }
}
