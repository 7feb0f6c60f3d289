//! Seccomp filters, one per thread role, kept as data.
//!
//! Each role's policy is a table of the system calls the role makes once
//! its loop runs, with the reason next to each; where a role makes only a
//! few ioctls, `ioctl` is allowed for exactly those request numbers. Anything else kills the
//! whole VMM process: a compromised vCPU or device thread must not be able
//! to do what the VMM itself never does. Filters are compiled once at
//! start (a few microseconds) and applied by each thread right before its
//! loop, after all set-up (opening /dev/kvm, mapping memory, binding
//! sockets) is done.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls every role makes: memory, locks, signals, thread exit.
const COMMON: &[(i64, &str)] = &[
    (libc::SYS_brk, "the allocator grows the heap"),
    (libc::SYS_mmap, "the allocator maps large blocks"),
    (
        libc::SYS_munmap,
        "the allocator frees large blocks; thread stacks on exit",
    ),
    (libc::SYS_mremap, "the allocator grows large blocks"),
    (
        libc::SYS_madvise,
        "the allocator and thread exit release memory",
    ),
    (libc::SYS_futex, "mutexes, channels, thread join"),
    (libc::SYS_rt_sigreturn, "return from the vCPU kick handler"),
    (libc::SYS_rt_sigprocmask, "thread exit masks signals"),
    (
        libc::SYS_sigaltstack,
        "thread exit removes the alternate signal stack",
    ),
    (libc::SYS_sched_yield, "spinning locks back off"),
    (libc::SYS_exit, "a thread ends"),
    (libc::SYS_exit_group, "the process ends"),
    (libc::SYS_write, "event fds, the console, logs on stderr"),
    (libc::SYS_writev, "buffered console and log output"),
    (libc::SYS_read, "event fds"),
    (libc::SYS_close, "dropping files and sockets"),
    (
        libc::SYS_fcntl,
        "non-blocking sockets; debug builds check an fd before closing it",
    ),
    (libc::SYS_getrandom, "hash map seeds"),
    (libc::SYS_clock_gettime, "time when the vDSO cannot answer"),
    (libc::SYS_clock_nanosleep, "short back-off sleeps"),
    (libc::SYS_nanosleep, "short back-off sleeps"),
    (libc::SYS_gettid, "logging and thread identity"),
    (libc::SYS_getpid, "signals to our own threads"),
];

/// The vCPU threads: `KVM_RUN` and the devices they serve synchronously.
const VCPU: &[(i64, &str)] = &[
    (libc::SYS_ioctl, "KVM_RUN and the vCPU's own KVM calls"),
    (
        libc::SYS_openat,
        "the console log is reopened when it rotates",
    ),
    (libc::SYS_rename, "the console log rotates"),
    (libc::SYS_fsync, "flushing the console log"),
];

/// The VMM thread: the device event loop and teardown.
const VMM: &[(i64, &str)] = &[
    (libc::SYS_epoll_wait, "the event loop waits"),
    (libc::SYS_epoll_pwait, "the event loop waits"),
    (libc::SYS_epoll_ctl, "devices add and remove their fds"),
    (libc::SYS_accept4, "host connections to the vsock socket"),
    (libc::SYS_socket, "guest connections to <uds>_<port>"),
    (libc::SYS_connect, "guest connections to <uds>_<port>"),
    (libc::SYS_recvfrom, "vsock stream data"),
    (libc::SYS_sendto, "vsock stream data"),
    (libc::SYS_recvmsg, "vsock stream data"),
    (libc::SYS_sendmsg, "vsock stream data"),
    (libc::SYS_shutdown, "vsock half-close"),
    (
        libc::SYS_timerfd_settime,
        "vsock arms and disarms its connection-timeout timer",
    ),
    (libc::SYS_tgkill, "kicking vCPU threads out of KVM_RUN"),
    (libc::SYS_unlink, "removing the vsock socket at teardown"),
    (libc::SYS_unlinkat, "removing the vsock socket at teardown"),
    (
        libc::SYS_openat,
        "the console log is reopened when it rotates",
    ),
    (libc::SYS_rename, "the console log rotates"),
];

/// The only ioctls the VMM thread makes, matched on the request number
/// (its low 32 bits, all the kernel reads of it).
const VMM_IOCTLS: &[(u64, &str)] = &[
    (
        libc::FIONBIO,
        "non-blocking vsock streams (std's set_nonblocking)",
    ),
    (
        libc::TUNSETVNETHDRSZ,
        "virtio-net activation: the tap's header size",
    ),
    (
        libc::TUNSETOFFLOAD,
        "virtio-net activation: the tap's offloads follow the guest's features",
    ),
];

/// The virtio-fs worker thread: FUSE requests served by PassthroughFs on
/// the host directory, one at a time. Paths are never walked: every call
/// works on a file descriptor the worker holds (`*at` calls relative to
/// an inode's `O_PATH` fd, reopening through `/proc/self/fd`). Extended
/// attributes are off, so no xattr calls; opcodes PassthroughFs does not
/// implement (locks, ioctl, poll, copy_file_range) answer ENOSYS without
/// a system call.
const FS: &[(i64, &str)] = &[
    (libc::SYS_poll, "the worker waits on its queue, control and stop events"),
    (
        libc::SYS_openat,
        "LOOKUP opens names O_PATH under their parent; OPEN and CREATE; reopening through /proc/self/fd; the root at FUSE_INIT",
    ),
    (libc::SYS_newfstatat, "GETATTR and LOOKUP stat an inode's fd"),
    (libc::SYS_statx, "LOOKUP reads the inode's mount id with statx"),
    (libc::SYS_preadv, "READ into the guest's buffers"),
    (libc::SYS_pwritev, "WRITE from the guest's buffers"),
    (libc::SYS_lseek, "READDIR offsets and LSEEK"),
    (libc::SYS_getdents64, "READDIR and READDIRPLUS"),
    (libc::SYS_mkdirat, "MKDIR"),
    (libc::SYS_mknodat, "MKNOD (device nodes stay inert: only files and directories are opened)"),
    (libc::SYS_symlinkat, "SYMLINK"),
    (libc::SYS_readlinkat, "READLINK"),
    (libc::SYS_linkat, "LINK"),
    (libc::SYS_unlinkat, "UNLINK and RMDIR"),
    (libc::SYS_renameat2, "RENAME and RENAME2"),
    (libc::SYS_fchmod, "SETATTR mode through an open file"),
    (libc::SYS_fchmodat, "SETATTR mode by inode"),
    (libc::SYS_fchownat, "SETATTR owner and group"),
    (libc::SYS_utimensat, "SETATTR times"),
    (libc::SYS_ftruncate, "SETATTR size"),
    (libc::SYS_fallocate, "FALLOCATE"),
    (libc::SYS_fsync, "FSYNC and FSYNCDIR"),
    (libc::SYS_fdatasync, "FSYNC with the datasync flag"),
    (libc::SYS_fstatfs, "STATFS"),
    (libc::SYS_dup, "FLUSH emulates a close on a duplicate"),
    (
        libc::SYS_setresuid,
        "CREATE, MKDIR, MKNOD, SYMLINK run as the guest caller (this thread only)",
    ),
    (libc::SYS_setresgid, "as setresuid, for the group"),
    (
        libc::SYS_umask,
        "FUSE_INIT clears this thread's umask: the guest applies its own",
    ),
];

/// Why a filter could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The policy could not be compiled.
    #[error("cannot compile the {role} filter")]
    Compile {
        /// The thread role.
        role: &'static str,
        /// The compiler's error.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("cannot apply a seccomp filter")]
    Apply(#[source] seccompiler::Error),
}

/// The compiled filters of every role.
#[derive(Debug, Clone)]
pub struct Filters {
    /// For the VMM thread.
    pub vmm: BpfProgram,
    /// For each vCPU thread.
    pub vcpu: BpfProgram,
    /// For the virtio-fs worker thread.
    pub fs: BpfProgram,
}

/// Compiles a role's tables into a filter that kills the process on any
/// system call not in them. The calls in `tables` are allowed with any
/// arguments; `ioctl` only with the requests in `ioctls`, if any.
fn compile(
    role: &'static str,
    tables: &[&[(i64, &str)]],
    ioctls: &[(u64, &str)],
) -> Result<BpfProgram, SeccompError> {
    let compile_err = |source| SeccompError::Compile { role, source };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|(nr, _why)| (*nr, Vec::new()))
        .collect();
    // glibc grows a thread's own malloc arena with mprotect(READ|WRITE):
    // allowed for every role, but never to make memory executable.
    let read_write = SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        (libc::PROT_READ | libc::PROT_WRITE) as u64,
    )
    .map_err(compile_err)?;
    rules.insert(
        libc::SYS_mprotect,
        vec![SeccompRule::new(vec![read_write]).map_err(compile_err)?],
    );
    if !ioctls.is_empty() {
        let mut requests = Vec::with_capacity(ioctls.len());
        for (request, _why) in ioctls {
            let condition =
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
                    .map_err(compile_err)?;
            requests.push(SeccompRule::new(vec![condition]).map_err(compile_err)?);
        }
        rules.insert(libc::SYS_ioctl, requests);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(compile_err)?;
    filter.try_into().map_err(compile_err)
}

/// Compiles the filters of every role.
pub fn compile_filters() -> Result<Filters, SeccompError> {
    Ok(Filters {
        vmm: compile("vmm", &[COMMON, VMM], VMM_IOCTLS)?,
        vcpu: compile("vcpu", &[COMMON, VCPU], &[])?,
        fs: compile("fs", &[COMMON, FS], &[])?,
    })
}

/// Installs `filter` on the calling thread (sets `no_new_privs` too).
pub fn apply(filter: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(filter).map_err(SeccompError::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles_and_lists_each_call_once() {
        let filters = compile_filters().unwrap();
        assert!(!filters.vmm.is_empty() && !filters.vcpu.is_empty() && !filters.fs.is_empty());
        for table in [COMMON, VCPU, VMM, FS] {
            let mut seen = std::collections::BTreeSet::new();
            for (nr, why) in table {
                assert!(seen.insert(nr), "syscall {nr} listed twice");
                assert!(!why.is_empty());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (request, why) in VMM_IOCTLS {
            assert!(seen.insert(request), "ioctl {request:#x} listed twice");
            assert!(!why.is_empty());
        }
        // Listed as a whole, ioctl would override the request rules.
        assert!(!COMMON
            .iter()
            .chain(VMM)
            .any(|(nr, _)| *nr == libc::SYS_ioctl));
    }

    /// Runs `calls` in a child under `filter`; returns the signal that
    /// ended it, or `None` if it got through them all.
    fn run_filtered(filter: &BpfProgram, calls: fn()) -> Option<libc::c_int> {
        // SAFETY: the child only applies the filter and makes raw system
        // calls before `_exit`; it touches no locks the parent might hold.
        match unsafe { libc::fork() } {
            0 => {
                if apply(filter).is_err() {
                    // SAFETY: ends the child without running destructors.
                    unsafe { libc::_exit(3) };
                }
                calls();
                // SAFETY: as above.
                unsafe { libc::_exit(0) };
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if libc::WIFSIGNALED(status) {
                    return Some(libc::WTERMSIG(status));
                }
                assert_eq!(libc::WEXITSTATUS(status), 0, "status {status:#x}");
                None
            }
            _ => panic!("fork failed"),
        }
    }

    #[test]
    fn the_vmm_thread_makes_only_its_own_ioctls() {
        let filters = compile_filters().unwrap();
        let allowed = run_filtered(&filters.vmm, || {
            let mut on: libc::c_int = 1;
            let size: libc::c_int = 12;
            // SAFETY: ioctls on an fd number that is never open: they fail
            // with EBADF once the filter let them through.
            unsafe {
                libc::ioctl(-1, libc::FIONBIO, &mut on);
                libc::ioctl(-1, libc::TUNSETVNETHDRSZ, &size);
                libc::ioctl(-1, libc::TUNSETOFFLOAD, 0 as libc::c_ulong);
            }
        });
        assert_eq!(allowed, None);
        // Pushing bytes into a terminal's input is not among them.
        let forbidden = run_filtered(&filters.vmm, || {
            let byte = 0u8;
            // SAFETY: as above.
            unsafe { libc::ioctl(-1, libc::TIOCSTI, &byte) };
        });
        assert_eq!(forbidden, Some(libc::SIGSYS));
        let other_tun = run_filtered(&filters.vmm, || {
            // SAFETY: as above.
            unsafe { libc::ioctl(-1, libc::TUNSETIFF, std::ptr::null_mut::<u8>()) };
        });
        assert_eq!(other_tun, Some(libc::SIGSYS));
    }

    #[test]
    fn threads_may_grow_their_heap_but_not_make_memory_executable() {
        let filters = compile_filters().unwrap();
        for filter in [&filters.vmm, &filters.vcpu, &filters.fs] {
            let grow = run_filtered(filter, || {
                // SAFETY: mprotect of a null range fails or does nothing
                // once the filter let it through.
                unsafe {
                    libc::mprotect(std::ptr::null_mut(), 0, libc::PROT_READ | libc::PROT_WRITE)
                };
            });
            assert_eq!(grow, None);
            let exec = run_filtered(filter, || {
                // SAFETY: as above.
                unsafe {
                    libc::mprotect(std::ptr::null_mut(), 0, libc::PROT_READ | libc::PROT_EXEC)
                };
            });
            assert_eq!(exec, Some(libc::SIGSYS));
        }
    }

    #[test]
    fn the_fs_worker_cannot_reach_the_network_exec_or_open_by_handle() {
        let allowed: Vec<i64> = [COMMON, FS]
            .iter()
            .flat_map(|t| t.iter())
            .map(|(nr, _)| *nr)
            .collect();
        for nr in [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ioctl,
            libc::SYS_open_by_handle_at,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_capset,
            libc::SYS_setuid,
        ] {
            assert!(!allowed.contains(&nr), "syscall {nr} is allowed");
        }
    }

    #[test]
    fn a_forbidden_call_kills_the_process() {
        // Run in a child so the kill does not take the test runner down.
        let filters = compile_filters().unwrap();
        // SAFETY: the child only applies the filter and makes raw system
        // calls before `_exit`; it touches no locks the parent might hold.
        match unsafe { libc::fork() } {
            0 => {
                if apply(&filters.vcpu).is_err() {
                    // SAFETY: ends the child without running destructors.
                    unsafe { libc::_exit(3) };
                }
                // SAFETY: a plain system call the vCPU role must not make.
                unsafe {
                    libc::syscall(
                        libc::SYS_mkdirat,
                        libc::AT_FDCWD,
                        c"/nonexistent-x".as_ptr(),
                        0,
                    )
                };
                // SAFETY: as above.
                unsafe { libc::_exit(0) };
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFSIGNALED(status), "status {status:#x}");
                assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
            }
            _ => panic!("fork failed"),
        }
    }
}
