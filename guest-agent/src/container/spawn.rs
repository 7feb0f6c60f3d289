//! Making container processes, the agent's side.
//!
//! The agent is multi-threaded, so a forked copy of it may only make
//! async-signal-safe calls. The child of `clone` therefore does nothing but
//! move its fds into place and exec the agent binary again as
//! `husk-agent --container-init`: a fresh single-threaded helper that reads
//! its plan from fd 3 and may mount, pivot, setns and setuid freely.
//!
//! - A container's init is cloned with new mount, uts, ipc and pid
//!   namespaces (or, to join a pid namespace by path, the clone happens in
//!   a short-lived thread that entered it first).
//! - An exec is cloned from a short-lived thread that entered the
//!   container's pid namespace through its init's pidfd (`setns` on the
//!   pid namespace is per thread and only affects children), so the
//!   process is the agent's own child and pid N inside the container; the
//!   helper joins the mount, uts, ipc (and cgroup) namespaces itself.
//!
//! The clone happens with the child table locked ([`Children::spawn`]),
//! and with `CLONE_PIDFD`, so the agent holds a pidfd for signals that can
//! never hit a recycled pid.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::plan::{Channel, ChannelError, Control, Plan, Report};
use crate::reaper::{Children, ExitCell};

/// How long the agent waits for a helper to report.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a helper could not be made or did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A socketpair, thread or namespace step in the agent failed.
    #[error("{0}")]
    Prepare(String, #[source] std::io::Error),
    /// clone failed.
    #[error("clone")]
    Clone(#[source] Errno),
    /// The channel to the helper failed.
    #[error("talking to the container's init helper")]
    Channel(#[from] ChannelError),
    /// The helper said what went wrong.
    #[error("{0}")]
    Failed(String),
    /// The helper ended without saying why.
    #[error("the container's init helper ended during set-up ({0})")]
    Died(String),
}

/// Where the new process's namespaces come from.
pub enum SpawnNs<'a> {
    /// A new container: new mount/uts/ipc namespaces, and a new pid
    /// namespace unless one is joined (an fd of `/proc/N/ns/pid`).
    Container {
        /// The pid namespace to join, if any.
        join_pid: Option<&'a OwnedFd>,
    },
    /// An exec: the pid namespace of the process behind this pidfd (the
    /// helper gets the pidfd as fd 4 to join the rest).
    Exec {
        /// The container init's pidfd.
        init_pidfd: &'a OwnedFd,
    },
}

/// A helper process, set up or on its way.
pub struct Helper {
    /// Its pid in the agent's pid namespace.
    pub pid: i32,
    /// Where its exit status lands.
    pub exit: Arc<ExitCell>,
    /// A pidfd of it.
    pub pidfd: OwnedFd,
    chan: Channel,
}

/// What the child of clone needs, prepared before clone (it may not allocate).
struct Prepared {
    path: CString,
    argv: [*const libc::c_char; 3],
    envp: [*const libc::c_char; 1],
    /// Source fds for the child's fds 0..=4 (-1: none).
    fds: [RawFd; 5],
}

/// The argument that makes the agent binary a container-init helper.
pub const INIT_ARG: &str = "--container-init";

/// Clones and execs the helper; the child gets `stdio` as 0/1/2.
pub fn spawn_helper(
    children: &Children,
    ns: SpawnNs<'_>,
    stdio: [BorrowedFd<'_>; 3],
) -> Result<Helper, SpawnError> {
    let (agent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SpawnError::Prepare("socketpair".into(), e.into()))?;
    let (flags, pid_ns, pidfd_for_child) = match ns {
        SpawnNs::Container { join_pid } => {
            let mut f =
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
            if join_pid.is_none() {
                f |= CloneFlags::CLONE_NEWPID;
            }
            (f, join_pid.map(|fd| fd.as_fd()), -1)
        }
        SpawnNs::Exec { init_pidfd } => (
            CloneFlags::empty(),
            Some(init_pidfd.as_fd()),
            init_pidfd.as_raw_fd(),
        ),
    };
    let fds = [
        stdio[0].as_raw_fd(),
        stdio[1].as_raw_fd(),
        stdio[2].as_raw_fd(),
        child_end.as_raw_fd(),
        pidfd_for_child,
    ];
    let spawned = std::thread::scope(|s| {
        let t = std::thread::Builder::new()
            .name("spawn".into())
            .spawn_scoped(s, || {
                if let Some(ns) = pid_ns {
                    // Only this short-lived thread's children are affected.
                    nix::sched::setns(ns, CloneFlags::CLONE_NEWPID).map_err(|e| {
                        SpawnError::Prepare("enter the pid namespace".into(), e.into())
                    })?;
                }
                let exe = CString::new("/proc/self/exe").unwrap_or_default();
                let arg0 = CString::new("husk-agent").unwrap_or_default();
                let arg1 = CString::new(INIT_ARG).unwrap_or_default();
                let prepared = Prepared {
                    argv: [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()],
                    envp: [std::ptr::null()],
                    path: exe,
                    fds,
                };
                let mut pidfd: libc::c_int = -1;
                let (pid, exit) = children
                    // SAFETY: the child of clone only runs child_exec, which
                    // makes async-signal-safe calls on `prepared`.
                    .spawn(|| unsafe { clone_exec(flags, &mut pidfd, &prepared) })
                    .map_err(SpawnError::Clone)?;
                // SAFETY: CLONE_PIDFD stored a new pidfd, owned by nobody else.
                let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
                Ok::<_, SpawnError>((pid, exit, pidfd))
            })
            .map_err(|e| SpawnError::Prepare("spawn thread".into(), e))?;
        t.join().unwrap_or_else(|_| {
            Err(SpawnError::Prepare(
                "spawn thread".into(),
                std::io::Error::other("panicked"),
            ))
        })
    });
    drop(child_end);
    let (pid, exit, pidfd) = spawned?;
    let timeout = nix::sys::time::TimeVal::new(HELPER_TIMEOUT.as_secs() as i64, 0);
    let _ = nix::sys::socket::setsockopt(
        &agent_end,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &timeout,
    );
    Ok(Helper {
        pid,
        exit,
        pidfd,
        chan: Channel::new(agent_end),
    })
}

/// clone(2) without a new stack: a fork that may take namespace flags.
///
/// # Safety
///
/// The child runs [`child_exec`] only; `p` must stay valid until clone returns.
unsafe fn clone_exec(
    flags: CloneFlags,
    pidfd: &mut libc::c_int,
    p: &Prepared,
) -> Result<i32, Errno> {
    let flags = flags.bits() as libc::c_long
        | libc::CLONE_PIDFD as libc::c_long
        | libc::SIGCHLD as libc::c_long;
    // SAFETY: a null stack makes clone behave like fork; CLONE_PIDFD writes
    // an int through the valid pointer `pidfd`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(Errno::last()),
        // SAFETY: this is the child; see child_exec.
        0 => unsafe { child_exec(p) },
        pid => Ok(pid as i32),
    }
}

/// In the child of clone: fds into place, exec the helper.
///
/// # Safety
///
/// Async-signal-safe calls only (no allocation, no locks).
unsafe fn child_exec(p: &Prepared) -> ! {
    let mut tmp: [RawFd; 5] = [-1; 5];
    for (i, src) in p.fds.iter().enumerate() {
        if *src >= 0 {
            // SAFETY: fcntl on an fd number; a copy above the targets so
            // moving one never clobbers another's source.
            tmp[i] = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10) };
            if tmp[i] < 0 {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(126) };
            }
        }
    }
    for (target, t) in tmp.iter().enumerate() {
        // SAFETY: dup2 onto fd numbers 0..=4, clearing close-on-exec.
        if *t >= 0 && unsafe { libc::dup2(*t, target as RawFd) } < 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(126) };
        }
    }
    // SAFETY: path, argv and envp are NUL-terminated and outlive the call.
    unsafe { libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
    // SAFETY: as above.
    unsafe { libc::_exit(127) }
}

/// Sends a signal through a pidfd (ESRCH once the process has ended).
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: a plain system call on an fd and integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

impl Helper {
    /// Sends the plan.
    pub fn send_plan(&self, plan: &Plan) -> Result<(), SpawnError> {
        self.chan.send(plan, &[]).map_err(|e| self.explain(e))
    }

    /// Waits for `Ready`; returns the fd sent along (a pty master).
    pub fn wait_ready(&self) -> Result<Option<OwnedFd>, SpawnError> {
        match self.chan.recv::<Report>() {
            Ok((Report::Ready, fds)) => Ok(fds.into_iter().next()),
            Ok((Report::Failed(why), _)) => Err(SpawnError::Failed(why)),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Lets the process exec; returns once it did (the helper's end of the
    /// channel closes on exec) or failed.
    pub fn start(&self) -> Result<(), SpawnError> {
        self.chan
            .send(&Control::Start, &[])
            .map_err(|e| self.explain(e))?;
        match self.chan.recv_or_closed::<Report>() {
            Ok(None) => Ok(()),
            Ok(Some(Report::Failed(why))) => Err(SpawnError::Failed(why)),
            Ok(Some(Report::Ready)) => Err(SpawnError::Failed("unexpected second Ready".into())),
            Err(e) => Err(self.explain(e)),
        }
    }

    fn explain(&self, e: ChannelError) -> SpawnError {
        if matches!(e, ChannelError::Closed) {
            let status = self
                .exit
                .wait(Some(std::time::Instant::now() + Duration::from_secs(1)))
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "still running".into());
            return SpawnError::Died(status);
        }
        SpawnError::Channel(e)
    }

    /// Kills the helper and waits for it (set-up failed).
    pub fn kill(&self) {
        let _ = pidfd_signal(self.pidfd.as_fd(), libc::SIGKILL);
        self.exit
            .wait(Some(std::time::Instant::now() + Duration::from_secs(5)));
    }
}
