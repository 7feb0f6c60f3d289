//! The container-init helper: `husk-agent --container-init`, exec'd by the
//! child of the agent's clone, already in the container's new namespaces.
//! It is single-threaded, so it may mount, pivot_root, setns and setuid.
//!
//! It reads its [`Plan`] from fd 3, sets up the container (rootfs, mounts,
//! devices, pivot_root, sysctls, masked and read-only paths) or joins a
//! running one, prepares the process (limits, user, capabilities, seccomp),
//! reports `Ready` (with the pty master when there is a terminal) and
//! blocks until the agent says `Start`: that is the create/start split.
//! Then it execs the process; the channel closes on exec, which tells the
//! agent it worked. On any failure it reports the step and exits.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use nix::unistd::{Gid, Uid};

use super::caps;
use super::mounts;
use super::plan::{Channel, ContainerPlan, Control, ExecPlan, Plan, ProcessPlan, Report};
use super::seccomp;
use super::user::resolve_user;

/// The channel to the agent.
const CHANNEL_FD: RawFd = 3;
/// An exec helper's pidfd of the container's init.
const INIT_PIDFD: RawFd = 4;
/// PATH for the executable lookup when the process env has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

type Step<T> = Result<T, String>;

/// `e` and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn step<T, E: std::error::Error>(what: impl std::fmt::Display, r: Result<T, E>) -> Step<T> {
    r.map_err(|e| format!("{what}: {}", chain(&e)))
}

/// A mount step's result: its error names the spec field already.
fn mounted<T>(r: Result<T, mounts::MountError>) -> Step<T> {
    r.map_err(|e| chain(&e))
}

/// The channel at fd 3, not closed on drop (exec closes it).
fn channel() -> ManuallyDrop<Channel> {
    // SAFETY: fd 3 is the agent's socket, set up by the clone child; it is
    // used only through this channel and never closed by us.
    ManuallyDrop::new(Channel::new(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) }))
}

/// The helper's main: never returns.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        let _ = channel().send(
            &Report::Failed(format!("container init helper panicked: {info}")),
            &[],
        );
    }));
    let Err(why) = run();
    let _ = channel().send(&Report::Failed(why), &[]);
    std::process::exit(1)
}

fn run() -> Step<Infallible> {
    // Signals blocked in the agent (SIGCHLD) must not stay blocked in the
    // container, and modes set while setting up must be exact.
    step("unblock signals", SigSet::empty().thread_set_mask())?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    for fd in [CHANNEL_FD, INIT_PIDFD] {
        // SAFETY: fcntl on fd numbers; EBADF (no pidfd) is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let chan = channel();
    let (plan, _) = step("read the plan", chan.recv::<Plan>())?;
    match plan {
        Plan::Container(p) => {
            early_process_setup(&p.process)?;
            let tty = setup_container(&p)?;
            run_process(&chan, &p.process, tty)
        }
        Plan::Exec(p) => {
            early_process_setup(&p.process)?;
            let tty = join_container(&p)?;
            run_process(&chan, &p.process, tty)
        }
    }
}

/// What is done through the guest's /proc, before the container's root
/// replaces it.
fn early_process_setup(p: &ProcessPlan) -> Step<()> {
    if let Some(adj) = p.oom_score_adj {
        step(
            "process.oomScoreAdj",
            std::fs::write("/proc/self/oom_score_adj", adj.to_string()),
        )?;
    }
    Ok(())
}

fn setns_path(field: &str, path: &Path, nstype: i32) -> Step<()> {
    let f = step(format!("{field}: open {path:?}"), std::fs::File::open(path))?;
    step(
        format!("{field}: join {path:?}"),
        nix::sched::setns(f.as_fd(), CloneFlags::from_bits_truncate(nstype)),
    )
}

/// Sets up a new container's root; returns the pty master with a terminal.
fn setup_container(p: &ContainerPlan) -> Step<Option<OwnedFd>> {
    for j in &p.join_namespaces {
        setns_path(&j.field, &j.path, j.nstype)?;
    }
    if p.new_cgroup_ns {
        // The agent put us in our cgroup before sending the plan.
        step(
            "linux.namespaces: new cgroup namespace",
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
        )?;
    }
    // Nothing mounted from here on may propagate back to the guest.
    mounted(mounts::set_propagation(
        "linux.rootfsPropagation",
        Path::new("/"),
        p.initial_propagation,
    ))?;
    if let Some(h) = &p.hostname {
        step("hostname", nix::unistd::sethostname(h))?;
    }
    if let Some(d) = &p.domainname {
        // SAFETY: the pointer and length describe `d`'s bytes.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(format!("domainname: {}", std::io::Error::last_os_error()));
        }
    }
    let root = mounted(mounts::bind_rootfs(&p.rootfs))?;
    for m in &p.mounts {
        mounted(mounts::do_mount(&root, m))?;
    }
    for d in &p.devices {
        mounted(mounts::make_device(&root, d))?;
    }
    if p.default_devices {
        mounted(mounts::make_dev_links(&root))?;
    }
    let tty = if p.process.terminal {
        Some(container_pty(&root)?)
    } else {
        None
    };
    mounted(mounts::resolve_dir(&root, "process.cwd", &p.process.cwd))?;
    mounted(mounts::pivot_root(&root))?;
    drop(root);
    for (path, value) in &p.sysctls {
        let file = Path::new("/proc/sys").join(path);
        step(
            format!("linux.sysctl: write {value:?} to {file:?}"),
            std::fs::write(&file, value),
        )?;
    }
    for (i, path) in p.readonly_paths.iter().enumerate() {
        let field = format!("linux.readonlyPaths[{i}]");
        mounted(mounts::readonly_path(&field, Path::new(path)))?;
    }
    for (i, path) in p.masked_paths.iter().enumerate() {
        let field = format!("linux.maskedPaths[{i}]");
        mounted(mounts::mask_path(&field, Path::new(path)))?;
    }
    if p.root_readonly {
        mounted(mounts::readonly_root())?;
    }
    if let Some(flags) = p.final_propagation {
        mounted(mounts::set_propagation(
            "linux.rootfsPropagation",
            Path::new("/"),
            flags,
        ))?;
    }
    Ok(tty)
}

/// A pty from the container's own devpts: the slave becomes fds 0-2 and
/// /dev/console; the master goes to the agent.
fn container_pty(root: &OwnedFd) -> Step<OwnedFd> {
    let field = "process.terminal";
    let ptmx = step(
        format!("{field}: /dev/ptmx in the container (is devpts mounted at /dev/pts?)"),
        mounts::resolve_existing(root, field, Path::new("/dev/ptmx")),
    )?;
    let master = open_master(&ptmx.proc_path())?;
    let slave = open_slave(&master)?;
    let console = step(
        format!("{field}: /dev/console"),
        mounts::resolve_file(root, field, Path::new("/dev/console")),
    )?;
    step(
        format!("{field}: bind the pty onto /dev/console"),
        mounts::bind_file(field, &super::resolve::fd_path(slave.as_fd()), &console),
    )?;
    stdio_to(&slave)?;
    Ok(master)
}

fn open_master(ptmx: &Path) -> Step<OwnedFd> {
    let fd = step(
        "process.terminal: open ptmx",
        nix::fcntl::open(
            ptmx,
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    )?;
    // SAFETY: open just returned this fd.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(format!(
            "process.terminal: unlock the pty: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(master)
}

fn open_slave(master: &OwnedFd) -> Step<OwnedFd> {
    // SAFETY: TIOCGPTPEER opens the slave of this master and returns a new fd.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "process.terminal: open the pty slave: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the ioctl just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stdio_to(fd: &OwnedFd) -> Step<()> {
    for target in 0..3 {
        step(
            "process.terminal: pty as stdio",
            nix::unistd::dup2(fd.as_raw_fd(), target),
        )?;
    }
    Ok(())
}

/// Joins a running container for an exec; returns the pty master with a terminal.
fn join_container(p: &ExecPlan) -> Step<Option<OwnedFd>> {
    // SAFETY: fd 4 is the init's pidfd the agent passed; only borrowed here.
    let pidfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(INIT_PIDFD) };
    step(
        "join the container's namespaces (has its init ended?)",
        nix::sched::setns(pidfd, CloneFlags::from_bits_truncate(p.namespaces)),
    )?;
    if !p.process.terminal {
        return Ok(None);
    }
    let master = open_master(Path::new("/dev/ptmx"))?;
    let slave = open_slave(&master)?;
    stdio_to(&slave)?;
    Ok(Some(master))
}

fn cstring(field: &str, s: &OsStr) -> Step<CString> {
    CString::new(s.as_bytes()).map_err(|_| format!("{field}: contains a NUL byte"))
}

/// The executable `arg0` names: as given when it has a slash, else the
/// first executable file of that name on PATH.
fn find_executable(arg0: &str, env: &[String]) -> Step<PathBuf> {
    if arg0.contains('/') {
        let c = cstring("process.args[0]", OsStr::new(arg0))?;
        // SAFETY: access on a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("process.args[0]: {arg0:?}: {e}"));
        }
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        let Ok(c) = cstring("process.args[0]", candidate.as_os_str()) else {
            continue;
        };
        let is_file = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file());
        // SAFETY: access on a NUL-terminated path.
        if is_file && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
    }
    Err(format!(
        "process.args[0]: {arg0:?} not found in PATH {path:?}"
    ))
}

/// The environment the process gets, as runc builds it: a name given more
/// than once keeps its first place and its last value, and HOME, when
/// missing or empty, is the user's home directory.
fn process_env(env: &[String], home: &str) -> Vec<String> {
    let mut merged: Vec<String> = Vec::with_capacity(env.len() + 1);
    for entry in env {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        let same = |e: &String| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == name;
        match merged.iter_mut().find(|e| same(e)) {
            Some(earlier) => earlier.clone_from(entry),
            None => merged.push(entry.clone()),
        }
    }
    match merged.iter_mut().find(|e| e.starts_with("HOME=")) {
        Some(e) if e == "HOME=" => *e = format!("HOME={home}"),
        Some(_) => {}
        None => merged.push(format!("HOME={home}")),
    }
    merged
}

/// Process set-up shared by init and exec; reports Ready, waits for Start, execs.
fn run_process(chan: &Channel, p: &ProcessPlan, tty: Option<OwnedFd>) -> Step<Infallible> {
    if let Some(persona) = p.personality {
        // SAFETY: personality with an integer.
        if unsafe { libc::personality(persona as libc::c_ulong) } < 0 {
            return Err(format!(
                "linux.personality: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for r in &p.rlimits {
        let rl = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads the valid struct.
        if unsafe { libc::setrlimit(r.resource as _, &rl) } != 0 {
            return Err(format!("{}: {}", r.field, std::io::Error::last_os_error()));
        }
    }
    if let Some(prio) = p.io_priority {
        // SAFETY: ioprio_set on ourselves (IOPRIO_WHO_PROCESS, pid 0).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) } != 0 {
            return Err(format!("ioPriority: {}", std::io::Error::last_os_error()));
        }
    }
    step("setsid", nix::unistd::setsid())?;
    if tty.is_some() {
        // SAFETY: TIOCSCTTY on stdin (the pty slave) with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!(
                "process.terminal: make it the controlling terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    step(
        format!("process.cwd: chdir {:?}", p.cwd),
        nix::unistd::chdir(&p.cwd),
    )?;
    // Without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in
    // before the user switch (the profile must allow what follows).
    if let Some(s) = p.seccomp.as_ref().filter(|_| !p.no_new_privileges) {
        step("linux.seccomp: install", seccomp::install(s))?;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = resolve_user(
        &passwd,
        &group,
        p.username.as_deref(),
        p.uid,
        p.gid,
        &p.additional_gids,
    )?;
    let env = process_env(&p.env, &user.home);
    if let Some(c) = &p.caps {
        step(
            "process.capabilities.bounding",
            caps::apply_bounding(c, p.cap_last_cap),
        )?;
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    step(
        "process.user.additionalGids: setgroups",
        nix::unistd::setgroups(&groups),
    )?;
    let gid = Gid::from_raw(user.gid);
    step(
        "process.user.gid: setresgid",
        nix::unistd::setresgid(gid, gid, gid),
    )?;
    let uid = Uid::from_raw(user.uid);
    step(
        "process.user.uid: setresuid",
        nix::unistd::setresuid(uid, uid, uid),
    )?;
    if let Some(c) = &p.caps {
        step("process.capabilities", caps::apply_sets(c))?;
    }
    let exe = find_executable(&p.args[0], &env)?;
    let exe_c = cstring("process.args[0]", exe.as_os_str())?;
    let args: Vec<CString> = p
        .args
        .iter()
        .map(|a| cstring("process.args", OsStr::new(a)))
        .collect::<Step<_>>()?;
    let env_c: Vec<CString> = env
        .iter()
        .map(|e| cstring("process.env", OsStr::new(e)))
        .collect::<Step<_>>()?;
    let master: Vec<RawFd> = tty.iter().map(|t| t.as_raw_fd()).collect();
    step("report ready", chan.send(&Report::Ready, &master))?;
    drop(tty);
    match step("wait for start", chan.recv::<Control>())? {
        (Control::Start, _) => {}
    }
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "process.noNewPrivileges: {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Some(s) = &p.seccomp {
            step("linux.seccomp: install", seccomp::install(s))?;
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(p.umask));
    // SAFETY: restoring the default disposition (Rust's runtime ignores SIGPIPE).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Nothing but stdio crosses the exec (fd 3 closes and tells the agent).
    // SAFETY: close_range with plain integers.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = env_c
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: NUL-terminated strings and arrays that outlive the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = std::io::Error::last_os_error();
    Err(format!("process.args[0]: exec {exe:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_once_last_value_first_place_and_a_home() {
        let env: Vec<String> = ["PATH=/bin", "DUP=first", "EQ=a=b=", "DUP=second", "HOME="]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            process_env(&env, "/root"),
            ["PATH=/bin", "DUP=second", "EQ=a=b=", "HOME=/root"]
        );
        let given = vec!["HOME=/data".to_string()];
        assert_eq!(process_env(&given, "/root"), ["HOME=/data"]);
        assert_eq!(process_env(&[], "/home/app"), ["HOME=/home/app"]);
    }

    #[test]
    fn executables_are_found_on_the_process_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let sh = find_executable("sh", &env).unwrap();
        assert!(sh.ends_with("sh"), "{sh:?}");
        assert_eq!(
            find_executable("/bin/sh", &env).unwrap(),
            Path::new("/bin/sh")
        );
        let e = find_executable("/x/y", &env).unwrap_err();
        assert!(e.contains("\"/x/y\"") && e.contains("No such file"), "{e}");
        let e = find_executable("no-such-binary-here", &env).unwrap_err();
        assert!(
            e.contains("process.args[0]") && e.contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn errors_carry_their_chain() {
        let e = std::io::Error::other("inner");
        let r: Result<(), _> = Err(mounts::MountError::Sys {
            field: "mounts[0]".into(),
            what: "mount".into(),
            source: nix::errno::Errno::EPERM,
        });
        let s = mounted(r).unwrap_err();
        assert!(s.starts_with("mounts[0]: mount: "), "{s}");
        assert!(s.contains("EPERM"), "{s}");
        assert_eq!(step::<(), _>("x", Err(e)).unwrap_err(), "x: inner");
    }
}
