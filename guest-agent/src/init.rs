//! Guest setup as PID 1: the base mounts, the console, and what happens
//! when the agent cannot go on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

/// One mount of the base guest file systems.
struct BaseMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The guest's own mounts, in order (each target's parent exists by then).
const BASE_MOUNTS: &[BaseMount] = &[
    BaseMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620"),
    },
    BaseMount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
    },
    BaseMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    BaseMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// Why the guest could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupGuestError {
    /// A mount point could not be made.
    #[error("cannot create {0}")]
    MountPoint(&'static str, #[source] std::io::Error),
    /// The root could not be moved off the initramfs rootfs.
    #[error("cannot leave the initramfs rootfs: {what}")]
    LeaveRootfs {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A base file system could not be mounted.
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        /// The file system type.
        fstype: &'static str,
        /// Where.
        target: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Where the initramfs is bound while the root moves onto it.
const BOUND_ROOT: &str = "/.husk-root";

/// Moves the agent's root off the initramfs `rootfs` mount onto a bind
/// mount of itself (the same files, no copy). pivot_root(2) refuses to
/// work when the current root is `rootfs` (it has no parent mount), and
/// every container's mount namespace starts as a copy of the agent's.
fn leave_rootfs() -> Result<(), SetupGuestError> {
    let step = |what: &'static str| move |source| SetupGuestError::LeaveRootfs { what, source };
    match std::fs::create_dir(BOUND_ROOT) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SetupGuestError::MountPoint(BOUND_ROOT, e)),
    }
    mount(
        Some("/"),
        BOUND_ROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("bind / onto itself"))?;
    nix::unistd::chdir(BOUND_ROOT).map_err(step("chdir"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("move the bound root onto /"))?;
    nix::unistd::chroot(".").map_err(step("chroot"))?;
    nix::unistd::chdir("/").map_err(step("chdir"))?;
    // The mount point itself shows up (empty) in the bound root.
    let _ = std::fs::remove_dir(BOUND_ROOT);
    Ok(())
}

/// Mounts the base file systems and moves the log to `/dev/kmsg`.
pub fn setup_guest() -> Result<(), SetupGuestError> {
    leave_rootfs()?;
    for m in BASE_MOUNTS {
        std::fs::create_dir_all(m.target).map_err(|e| SetupGuestError::MountPoint(m.target, e))?;
        mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data).map_err(|source| {
            SetupGuestError::Mount {
                fstype: m.fstype,
                target: m.target,
                source,
            }
        })?;
    }
    for (link, target) in [("/dev/ptmx", "pts/ptmx"), ("/dev/fd", "/proc/self/fd")] {
        if !Path::new(link).exists() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    if let Err(e) = crate::logger::to_kmsg() {
        log::warn!("cannot open /dev/kmsg: {e}");
    }
    if let Err(e) = protect_agent_binary() {
        log::warn!("cannot make /init read-only: {e}");
    }
    bring_up_loopback();
    log::info!("guest set up");
    Ok(())
}

/// Sets loopback up at boot, so that a pod without interfaces (which the
/// host may never send a ConfigureNetwork) still has localhost: applying
/// an empty pod network does only that. ConfigureNetwork sets it up again
/// and reports a failure to the host.
fn bring_up_loopback() {
    if let Err(e) = husk_netlink::apply_in_guest(&husk_netlink::PodNetwork::default()) {
        log::warn!("cannot set loopback up: {}", husk_protocol::error_chain(&e));
    }
}

/// Makes the agent binary read-only (a bind of itself, remounted ro).
/// Container processes start as this binary re-executed; one that execs
/// `/proc/self/exe` again must not be able to rewrite the agent through
/// it (runc's CVE-2019-5736).
fn protect_agent_binary() -> nix::Result<()> {
    let me = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "/init".into());
    mount(Some(&me), &me, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    mount(
        None::<&str>,
        &me,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

/// Writes a line where a person will see it: the guest console (which
/// the VMM logs even under `quiet`) and, on the host, stderr.
fn to_console(in_guest: bool, line: &str) {
    if in_guest {
        if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
            let _ = console.write_all(format!("{line}\n").as_bytes());
            return;
        }
    }
    eprintln!("{line}");
}

/// Says on the console that the agent serves, once: the marker a person
/// (and the boot benchmark) looks for in the console log.
pub fn announce_ready(in_guest: bool, addr: &str) {
    log::info!("serving the agent API on {addr}");
    to_console(in_guest, &format!("husk-agent: ready on {addr}"));
    if in_guest {
        tell_host_ready();
    }
}

/// Connects to the host's ready port and hangs up: the host waits for this
/// instead of knocking on the agent's port while the guest boots. If it
/// fails the host still finds the agent by an occasional knock.
fn tell_host_ready() {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    use std::os::fd::AsRawFd;
    let addr = VsockAddr::new(libc::VMADDR_CID_HOST, husk_protocol::READY_VSOCK_PORT);
    let mut last = None;
    for _ in 0..5 {
        let attempt = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .and_then(|fd| connect(fd.as_raw_fd(), &addr));
        match attempt {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let Some(e) = last {
        log::warn!("cannot tell the host the agent is ready: {e}");
    }
}

/// Makes a panic visible on the console before the process aborts (in the
/// guest the kernel then panics on init's death and the guest resets).
pub fn install_panic_hook(in_guest: bool) {
    std::panic::set_hook(Box::new(move |info| {
        to_console(in_guest, &format!("husk-agent: panic: {info}"));
    }));
}

/// Reports an error the agent cannot live with and ends: in the guest by
/// resetting it (the VMM then exits), on the host by exiting.
pub fn fatal(why: &str) -> ! {
    let in_guest = std::process::id() == 1;
    to_console(in_guest, &format!("husk-agent: fatal: {why}"));
    if in_guest {
        end_guest();
    }
    std::process::exit(1)
}

/// Syncs and resets the guest (`reboot=k` makes the reset end the VMM).
pub fn end_guest() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    // reboot(2) does not return on success; if it did, PID 1 must not exit.
    loop {
        std::thread::park();
    }
}
