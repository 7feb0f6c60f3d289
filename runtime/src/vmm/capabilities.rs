//! Capabilities per thread role, kept as data like the seccomp policy.
//!
//! Linux keeps capabilities per thread. Once the VM is built (KVM opened,
//! guest memory mapped, sockets bound), every thread of the VMM keeps only
//! what its role needs, in every set: bounding, permitted, effective and
//! inheritable; the ambient set is cleared. The virtio-fs worker keeps
//! [`FS_WORKER`]; the VMM thread and the vCPU threads keep nothing. Each
//! thread drops its own before its loop starts ([`restrict_thread`]), and
//! threads started later inherit what their parent kept.
//!
//! A VMM started without `CAP_SETPCAP` (not root) cannot shrink its
//! bounding set, which is left as it is then: with no permitted
//! capabilities, and `no_new_privs` set by seccomp, it grants nothing.

use std::io;

use crate::vmm::config::VmConfig;

/// Capability numbers (`linux/capability.h`).
pub mod cap {
    /// Change file ownership.
    pub const CHOWN: u32 = 0;
    /// Bypass file read, write and execute permission checks.
    pub const DAC_OVERRIDE: u32 = 1;
    /// Bypass file read and directory search permission checks.
    pub const DAC_READ_SEARCH: u32 = 2;
    /// Bypass checks that the file's owner is the caller.
    pub const FOWNER: u32 = 3;
    /// Keep set-user/group-ID bits when a file is modified.
    pub const FSETID: u32 = 4;
    /// Change group ids.
    pub const SETGID: u32 = 6;
    /// Change user ids.
    pub const SETUID: u32 = 7;
    /// Change capability sets (and shrink the bounding set).
    pub const SETPCAP: u32 = 8;
    /// Create special files.
    pub const MKNOD: u32 = 27;
}

/// What the virtio-fs worker keeps, and why. PassthroughFs refers to
/// inodes by `O_PATH` fds, not file handles, so it does not need
/// `CAP_DAC_READ_SEARCH` (`open_by_handle_at`); `CAP_DAC_OVERRIDE` covers
/// the searches and opens it makes as root.
pub const FS_WORKER: &[(u32, &str)] = &[
    (
        cap::CHOWN,
        "SETATTR owner and group changes the guest asks for",
    ),
    (
        cap::DAC_OVERRIDE,
        "the server looks up and opens any file of the tree whatever its mode; the guest kernel checks permissions",
    ),
    (
        cap::FOWNER,
        "chmod, utimes and sticky-directory operations on files the guest's user owns but the server does not",
    ),
    (
        cap::FSETID,
        "set-user/group-ID bits the guest sets survive chmod and writes",
    ),
    (
        cap::SETGID,
        "CREATE, MKDIR, MKNOD and SYMLINK switch the thread to the guest caller's group",
    ),
    (
        cap::SETUID,
        "CREATE, MKDIR, MKNOD and SYMLINK switch the thread to the guest caller's user",
    ),
    (
        cap::MKNOD,
        "MKNOD of device nodes (never opened by the server: it opens only files and directories)",
    ),
];

/// A set of capabilities: bit n is capability n.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(u64);

impl CapSet {
    /// No capabilities.
    pub const EMPTY: CapSet = CapSet(0);

    /// The capabilities of a role's table.
    pub fn of(table: &[(u32, &str)]) -> Self {
        Self(table.iter().fold(0, |bits, (cap, _)| bits | 1 << cap))
    }

    /// The set as the kernel's mask (as `/proc/<pid>/status` shows it).
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }

    /// Both sets together.
    pub fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }
}

/// What each thread role keeps for one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleCaps {
    /// The VMM thread (device event loop, teardown).
    pub vmm: CapSet,
    /// Each vCPU thread.
    pub vcpu: CapSet,
    /// The virtio-fs worker, when the VM has one.
    pub fs: Option<CapSet>,
}

impl RoleCaps {
    /// The roles of the VM `config` describes.
    pub fn for_config(config: &VmConfig) -> Self {
        Self {
            vmm: CapSet::EMPTY,
            vcpu: CapSet::EMPTY,
            fs: config.fs.as_ref().map(|_| CapSet::of(FS_WORKER)),
        }
    }

    /// What the VMM process holds as a whole while the VM runs.
    pub fn process(&self) -> CapSet {
        self.vmm
            .union(self.vcpu)
            .union(self.fs.unwrap_or(CapSet::EMPTY))
    }
}

/// Why a thread could not drop its capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// The current sets could not be read.
    #[error("capget")]
    Get(#[source] io::Error),
    /// A capability could not be dropped from the bounding set.
    #[error("cannot drop capability {cap} from the bounding set")]
    Bounding {
        /// The capability.
        cap: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The ambient set could not be cleared.
    #[error("cannot clear the ambient capabilities")]
    Ambient(#[source] io::Error),
    /// The new sets were refused.
    #[error("capset")]
    Set(#[source] io::Error),
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and the two data structs are the layout capget
    // expects for version 3; the kernel writes only into `data`.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: as in `capget`; the kernel only reads `data`.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability of the calling thread that is not in `keep`,
/// from every set; clears the inheritable and ambient sets.
pub fn restrict_thread(keep: CapSet) -> Result<(), CapsError> {
    let mut data = capget().map_err(CapsError::Get)?;
    let effective = u64::from(data[0].effective) | u64::from(data[1].effective) << 32;
    if CapSet(effective).contains(cap::SETPCAP) {
        for cap in (0..64).filter(|&c| !keep.contains(c)) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    libc::c_ulong::from(cap),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    // Past the kernel's last capability.
                    break;
                }
                return Err(CapsError::Bounding { cap, source: e });
            }
        }
    } else {
        log::debug!("no CAP_SETPCAP: the bounding set stays as it is");
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(CapsError::Ambient(e));
        }
    }
    for (half, d) in data.iter_mut().enumerate() {
        let kept = (keep.0 >> (32 * half)) as u32;
        d.effective &= kept;
        d.permitted &= kept;
        d.inheritable = 0;
    }
    capset(&data).map_err(CapsError::Set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::config::{ConsoleConfig, FsConfig};

    fn config(fs: bool) -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 128,
            kernel: "/k".into(),
            initramfs: None,
            cmdline: String::new(),
            verbose_boot: false,
            console: ConsoleConfig::Off,
            vsock: None,
            fs: fs.then(|| FsConfig {
                tag: "husk".into(),
                shared_dir: "/".into(),
            }),
            net: Vec::new(),
            seccomp: true,
        }
    }

    #[test]
    fn roles_keep_nothing_but_the_fs_worker_set() {
        let roles = RoleCaps::for_config(&config(false));
        assert_eq!(roles.process(), CapSet::EMPTY);
        assert_eq!(roles.fs, None);

        let roles = RoleCaps::for_config(&config(true));
        assert_eq!((roles.vmm, roles.vcpu), (CapSet::EMPTY, CapSet::EMPTY));
        // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD.
        assert_eq!(roles.fs.unwrap().bits(), 0x0800_00db);
        assert_eq!(roles.process().bits(), 0x0800_00db);
        assert!(!roles.process().contains(cap::DAC_READ_SEARCH));
        assert!(!roles.process().contains(cap::SETPCAP));
        for (_, why) in FS_WORKER {
            assert!(!why.is_empty());
        }
    }

    /// Set in the child process of the restriction test.
    const CHILD: &str = "HUSK_CAPS_CHILD";

    fn status_mask(status: &str, field: &str) -> u64 {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    /// Restricting changes the process for good, so it runs in a child
    /// process running just this test, on its own thread.
    #[test]
    fn restricting_a_thread_leaves_only_the_kept_set() {
        if std::env::var_os(CHILD).is_none() {
            let name = "vmm::capabilities::tests::restricting_a_thread_leaves_only_the_kept_set";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child: {:?}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
            return;
        }
        let keep = CapSet::of(FS_WORKER);
        std::thread::spawn(move || {
            let before = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let had_setpcap = CapSet(status_mask(&before, "CapEff:")).contains(cap::SETPCAP);
            let permitted = status_mask(&before, "CapPrm:");
            let bounding = status_mask(&before, "CapBnd:");
            restrict_thread(keep).unwrap();
            let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert_eq!(status_mask(&after, "CapPrm:"), permitted & keep.bits());
            assert_eq!(status_mask(&after, "CapEff:"), permitted & keep.bits());
            assert_eq!(status_mask(&after, "CapInh:"), 0);
            assert_eq!(status_mask(&after, "CapAmb:"), 0);
            let expected_bounding = if had_setpcap {
                bounding & keep.bits()
            } else {
                bounding
            };
            assert_eq!(status_mask(&after, "CapBnd:"), expected_bounding);
            // A thread it starts inherits the sets; dropping the rest works
            // without CAP_SETPCAP (the bounding set then stays).
            std::thread::spawn(move || {
                restrict_thread(CapSet::EMPTY).unwrap();
                let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                assert_eq!(status_mask(&status, "CapEff:"), 0);
                assert_eq!(status_mask(&status, "CapPrm:"), 0);
                assert_eq!(status_mask(&status, "CapBnd:"), expected_bounding);
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }
}
