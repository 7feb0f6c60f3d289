//! Mounts: the spec's mount options turned into mount(2) calls (in the
//! agent, where a bad option is refused early), and the helper's side:
//! the rootfs, each mount at its destination resolved inside the rootfs,
//! default devices, pivot_root, masked and read-only paths.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::plan::{DevicePlan, MountPlan};
use super::resolve::{resolve_in_root, Create, ResolveError, Resolved};
use super::spec::SpecError;

/// What one mount option does.
enum Opt {
    /// Sets flags.
    Set(MsFlags),
    /// Clears flags.
    Clear(MsFlags),
    /// A propagation change after the mount.
    Propagation(MsFlags),
    /// Makes it a bind mount (recursive or not).
    Bind { recursive: bool },
    /// Nothing (`defaults`, userspace `x-` hints).
    Ignore,
}

fn option(name: &str) -> Option<Opt> {
    use MsFlags as F;
    Some(match name {
        "ro" => Opt::Set(F::MS_RDONLY),
        "rw" => Opt::Clear(F::MS_RDONLY),
        "nosuid" => Opt::Set(F::MS_NOSUID),
        "suid" => Opt::Clear(F::MS_NOSUID),
        "nodev" => Opt::Set(F::MS_NODEV),
        "dev" => Opt::Clear(F::MS_NODEV),
        "noexec" => Opt::Set(F::MS_NOEXEC),
        "exec" => Opt::Clear(F::MS_NOEXEC),
        "sync" => Opt::Set(F::MS_SYNCHRONOUS),
        "async" => Opt::Clear(F::MS_SYNCHRONOUS),
        "dirsync" => Opt::Set(F::MS_DIRSYNC),
        "mand" => Opt::Set(F::MS_MANDLOCK),
        "nomand" => Opt::Clear(F::MS_MANDLOCK),
        "noatime" => Opt::Set(F::MS_NOATIME),
        "atime" => Opt::Clear(F::MS_NOATIME),
        "nodiratime" => Opt::Set(F::MS_NODIRATIME),
        "diratime" => Opt::Clear(F::MS_NODIRATIME),
        "relatime" => Opt::Set(F::MS_RELATIME),
        "norelatime" => Opt::Clear(F::MS_RELATIME),
        "strictatime" => Opt::Set(F::MS_STRICTATIME),
        "nostrictatime" => Opt::Clear(F::MS_STRICTATIME),
        "silent" => Opt::Set(F::MS_SILENT),
        "loud" => Opt::Clear(F::MS_SILENT),
        "lazytime" => Opt::Set(F::MS_LAZYTIME),
        "nolazytime" => Opt::Clear(F::MS_LAZYTIME),
        "bind" => Opt::Bind { recursive: false },
        "rbind" => Opt::Bind { recursive: true },
        "private" => Opt::Propagation(F::MS_PRIVATE),
        "rprivate" => Opt::Propagation(F::MS_PRIVATE | F::MS_REC),
        "shared" => Opt::Propagation(F::MS_SHARED),
        "rshared" => Opt::Propagation(F::MS_SHARED | F::MS_REC),
        "slave" => Opt::Propagation(F::MS_SLAVE),
        "rslave" => Opt::Propagation(F::MS_SLAVE | F::MS_REC),
        "unbindable" => Opt::Propagation(F::MS_UNBINDABLE),
        "runbindable" => Opt::Propagation(F::MS_UNBINDABLE | F::MS_REC),
        "defaults" => Opt::Ignore,
        _ if name.starts_with("x-") || name.starts_with("X-") => Opt::Ignore,
        _ => return None,
    })
}

/// Options runc knows that need kernel features husk does not use yet.
fn unsupported(name: &str) -> Option<&'static str> {
    match name {
        "tmpcopyup" => Some("copying the image's directory up into the tmpfs"),
        "idmap" | "ridmap" => Some("id-mapped mounts"),
        "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec"
        | "rnoatime" | "ratime" | "rrelatime" | "rnorelatime" | "rstrictatime"
        | "rnostrictatime" | "rnodiratime" | "rdiratime" | "rnosymfollow" | "rsymfollow" => {
            Some("recursive mount attributes (mount_setattr)")
        }
        _ => None,
    }
}

/// The flags a bind remount can change.
const BIND_REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Converts `mounts[index]`; `cgroup2` says what `cgroup` mounts become.
pub fn plan_mount(index: usize, m: &Mount) -> Result<MountPlan, SpecError> {
    let field = format!("mounts[{index}]");
    let bad = |sub: &str, why: String| SpecError::new(format!("{field}.{sub}"), why);
    let destination = m.destination().clone();
    if !destination.is_absolute() {
        return Err(bad(
            "destination",
            format!("{destination:?} is not an absolute path"),
        ));
    }
    if super::resolve::is_root(&destination) {
        return Err(bad(
            "destination",
            "mounting over the container's root is not supported".into(),
        ));
    }
    if m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
        || m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(bad(
            "uidMappings",
            "id-mapped mounts are not supported".into(),
        ));
    }
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut bind = None;
    let mut data = Vec::new();
    for (i, o) in m.options().iter().flatten().enumerate() {
        if let Some(what) = unsupported(o) {
            return Err(bad(
                &format!("options[{i}]"),
                format!("{o:?} ({what}) is not supported"),
            ));
        }
        match option(o) {
            Some(Opt::Set(f)) => flags |= f,
            Some(Opt::Clear(f)) => flags &= !f,
            Some(Opt::Propagation(p)) => propagation.push(p.bits()),
            Some(Opt::Bind { recursive }) => bind = Some(recursive || bind == Some(true)),
            Some(Opt::Ignore) => {}
            None => data.push(o.as_str()),
        }
    }
    let typ = m.typ().as_deref().filter(|t| !t.is_empty());
    if typ == Some("bind") && bind.is_none() {
        bind = Some(false);
    }
    let source = m.source().clone();
    if let Some(recursive) = bind {
        let Some(src) = source.as_ref() else {
            return Err(bad("source", "a bind mount needs a source".into()));
        };
        if !src.is_absolute() {
            return Err(bad(
                "source",
                format!("{src:?} is not an absolute guest path"),
            ));
        }
        if let Some(d) = data.first() {
            return Err(bad("options", format!("{d:?} is not a bind mount option")));
        }
        let mut call = MsFlags::MS_BIND;
        if recursive {
            call |= MsFlags::MS_REC;
        }
        let remount = flags & BIND_REMOUNT_FLAGS;
        // The host's files come through the shared directory, which the
        // agent mounts nosuid,nodev; a bind of them would inherit both
        // though the spec asked for neither. Such a bind is always
        // remounted with the spec's flags alone.
        let from_shared = src.starts_with(crate::shared_fs::SHARED_DIR);
        return Ok(MountPlan {
            field,
            destination,
            source,
            fstype: None,
            flags: call.bits(),
            remount_flags: (!remount.is_empty() || from_shared)
                .then(|| (remount | MsFlags::MS_BIND | MsFlags::MS_REMOUNT).bits()),
            propagation,
            data: String::new(),
        });
    }
    let Some(typ) = typ else {
        return Err(bad(
            "type",
            "missing (and the mount is not a bind mount)".into(),
        ));
    };
    // cgroup v1 hierarchies are not offered: a `cgroup` mount is the
    // unified hierarchy (the container's own part with a cgroup namespace).
    let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
    Ok(MountPlan {
        field,
        destination,
        source: source.or_else(|| Some(PathBuf::from(fstype))),
        fstype: Some(fstype.to_string()),
        flags: flags.bits(),
        remount_flags: None,
        propagation,
        data: data.join(","),
    })
}

/// Whether the container's /dev is bind-mounted (then it brings its own
/// devices and the defaults are not made).
pub fn binds_dev(mounts: &[MountPlan]) -> bool {
    mounts
        .iter()
        .any(|m| m.fstype.is_none() && super::resolve::clean(&m.destination) == Path::new("/dev"))
}

/// runc's default device nodes.
pub fn default_devices() -> Vec<DevicePlan> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DevicePlan {
        field: "default devices".into(),
        path: PathBuf::from(path),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Links in /dev every container gets (when /dev is not bind-mounted).
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Why a mount step failed (in the helper; reported to the agent as text).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A path inside the rootfs could not be resolved.
    #[error("{field}: {path:?}")]
    Resolve {
        /// The spec field.
        field: String,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// A system call failed.
    #[error("{field}: {what}")]
    Sys {
        /// The spec field.
        field: String,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: Errno,
    },
}

fn sys(field: &str, what: impl Into<String>) -> impl FnOnce(Errno) -> MountError + '_ {
    let what = what.into();
    move |source| MountError::Sys {
        field: field.to_string(),
        what,
        source,
    }
}

fn resolve(
    root: &OwnedFd,
    field: &str,
    path: &Path,
    create: Create,
) -> Result<Resolved, MountError> {
    resolve_in_root(root.as_fd(), path, create).map_err(|source| MountError::Resolve {
        field: field.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// Makes the rootfs a mount point (a bind onto itself) and returns an fd
/// of its root.
pub fn bind_rootfs(rootfs: &Path) -> Result<OwnedFd, MountError> {
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("root.path", format!("bind {rootfs:?} onto itself")))?;
    // Without the nosuid and nodev of the shared directory it comes from
    // (see plan_mount): setuid programs and device nodes of the image work
    // as under runc. `root.readonly` is applied after pivot_root.
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
        None::<&str>,
    )
    .map_err(sys(
        "root.path",
        format!("remount {rootfs:?} with suid and dev"),
    ))?;
    let fd = nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("root.path", format!("open {rootfs:?}")))?;
    // SAFETY: open just returned this fd and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Carries out one mount inside the rootfs.
pub fn do_mount(root: &OwnedFd, m: &MountPlan) -> Result<(), MountError> {
    let field = m.field.as_str();
    let flags = MsFlags::from_bits_truncate(m.flags);
    let is_bind = m.fstype.is_none();
    let source = m.source.as_deref();
    // A bind of a file needs a file to cover.
    let create = match source {
        Some(src) if is_bind => match std::fs::metadata(src) {
            Ok(md) if !md.is_dir() => Create::File,
            Ok(_) => Create::Dirs,
            Err(e) => {
                return Err(MountError::Sys {
                    field: format!("{field}.source"),
                    what: format!("{src:?}"),
                    source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })
            }
        },
        _ => Create::Dirs,
    };
    let target = resolve(root, field, &m.destination, create)?;
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    mount(
        source,
        &target.proc_path(),
        m.fstype.as_deref(),
        flags,
        data,
    )
    .map_err(sys(
        field,
        format!(
            "mount {} {:?} on {:?}",
            m.fstype.as_deref().unwrap_or("bind"),
            source.unwrap_or(Path::new("")),
            m.destination
        ),
    ))?;
    // Later calls name the mount point through its directory, so they
    // reach the new mount rather than the directory it covers.
    let here = target.proc_path_by_name();
    if let Some(remount) = m.remount_flags {
        mount(
            None::<&str>,
            &here,
            None::<&str>,
            MsFlags::from_bits_truncate(remount),
            None::<&str>,
        )
        .map_err(sys(
            field,
            format!("remount {:?} with its options", m.destination),
        ))?;
    }
    for p in &m.propagation {
        mount(
            None::<&str>,
            &here,
            None::<&str>,
            MsFlags::from_bits_truncate(*p),
            None::<&str>,
        )
        .map_err(sys(
            field,
            format!("set propagation of {:?}", m.destination),
        ))?;
    }
    Ok(())
}

/// Makes a device node (replacing a non-directory already there).
pub fn make_device(root: &OwnedFd, d: &DevicePlan) -> Result<(), MountError> {
    let field = d.field.as_str();
    let parent_path = d.path.parent().unwrap_or(Path::new("/"));
    let name = d.path.file_name().unwrap_or(OsStr::new(""));
    let parent = resolve(root, field, parent_path, Create::Dirs)?;
    let dir = parent.fd.as_raw_fd();
    let kind = SFlag::from_bits_truncate(d.kind);
    let mk = || {
        mknodat(
            Some(dir),
            name,
            kind,
            Mode::from_bits_truncate(d.mode),
            makedev(d.major, d.minor),
        )
    };
    match mk() {
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(Some(dir), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(sys(field, format!("replace {:?}", d.path)))?;
            mk()
        }
        other => other,
    }
    .map_err(sys(field, format!("mknod {:?}", d.path)))?;
    nix::unistd::fchownat(
        Some(dir),
        name,
        Some(nix::unistd::Uid::from_raw(d.uid)),
        Some(nix::unistd::Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys(field, format!("chown {:?}", d.path)))
}

/// The /dev links (fd, stdin…, ptmx), where nothing is there yet.
pub fn make_dev_links(root: &OwnedFd) -> Result<(), MountError> {
    let dev = resolve(root, "/dev", Path::new("/dev"), Create::Dirs)?;
    for (name, target) in DEV_LINKS {
        match nix::unistd::symlinkat(*target, Some(dev.fd.as_raw_fd()), *name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys("/dev", format!("symlink /dev/{name}"))(e)),
        }
    }
    Ok(())
}

/// Resolves (making it a file if needed) `path` for a bind of a single file.
pub fn resolve_file(root: &OwnedFd, field: &str, path: &Path) -> Result<Resolved, MountError> {
    resolve(root, field, path, Create::File)
}

/// Resolves a directory inside the rootfs, making it if needed.
pub fn resolve_dir(root: &OwnedFd, field: &str, path: &Path) -> Result<Resolved, MountError> {
    resolve(root, field, path, Create::Dirs)
}

/// Resolves an existing path inside the rootfs.
pub fn resolve_existing(root: &OwnedFd, field: &str, path: &Path) -> Result<Resolved, MountError> {
    resolve(root, field, path, Create::Nothing)
}

/// Makes the rootfs `/` and detaches the old root.
pub fn pivot_root(root: &OwnedFd) -> Result<(), MountError> {
    let field = "root.path";
    nix::unistd::fchdir(root.as_raw_fd()).map_err(sys(field, "chdir to the rootfs"))?;
    // Stacking the old root under the new one and detaching it leaves no
    // directory for it inside the rootfs.
    nix::unistd::pivot_root(".", ".").map_err(sys(field, "pivot_root"))?;
    // Keep the detach from propagating to the agent's mounts.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(field, "make the old root a slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys(field, "detach the old root"))?;
    nix::unistd::chdir("/").map_err(sys(field, "chdir to /"))
}

/// The per-mount flags of `path`'s mount a bind remount must keep.
fn kept_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Remounts the bind mount at `path` read-only, keeping its other flags.
fn remount_readonly(field: &str, path: &Path) -> Result<(), MountError> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags(path),
        None::<&str>,
    )
    .map_err(sys(field, format!("remount {path:?} read-only")))
}

/// `linux.readonlyPaths` (after pivot_root): a read-only bind of each onto
/// itself. Paths that do not exist are skipped.
pub fn readonly_path(field: &str, path: &Path) -> Result<(), MountError> {
    match mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => remount_readonly(field, path),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys(field, format!("bind {path:?}"))(e)),
    }
}

/// `linux.maskedPaths` (after pivot_root): /dev/null over files, an empty
/// read-only tmpfs with the kernel's defaults over directories, as runc
/// mounts them. Paths that do not exist are skipped.
pub fn mask_path(field: &str, path: &Path) -> Result<(), MountError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(_) => return Ok(()),
    };
    let res = if md.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match res {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys(field, format!("mask {path:?}"))(e)),
    }
}

/// `root.readonly` (after pivot_root).
pub fn readonly_root() -> Result<(), MountError> {
    remount_readonly("root.readonly", Path::new("/"))
}

/// Sets the propagation of `path`'s mount (MS_* bits).
pub fn set_propagation(field: &str, path: &Path, flags: u64) -> Result<(), MountError> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::from_bits_truncate(flags),
        None::<&str>,
    )
    .map_err(sys(field, format!("set the propagation of {path:?}")))
}

/// Parses `linux.rootfsPropagation` into (the flags for `/` before the
/// rootfs is set up, the flags for the new root after pivot_root).
pub fn rootfs_propagation(value: Option<&str>) -> Result<(u64, Option<u64>), SpecError> {
    use MsFlags as F;
    let slave = (F::MS_SLAVE | F::MS_REC).bits();
    Ok(match value.unwrap_or("") {
        "" | "slave" | "rslave" => (slave, None),
        "private" | "rprivate" => ((F::MS_PRIVATE | F::MS_REC).bits(), None),
        "shared" | "rshared" => (slave, Some((F::MS_SHARED | F::MS_REC).bits())),
        "unbindable" | "runbindable" => (slave, Some((F::MS_UNBINDABLE | F::MS_REC).bits())),
        other => {
            return Err(SpecError::new(
                "linux.rootfsPropagation",
                format!("{other:?} is not one of private, slave, shared, unbindable"),
            ))
        }
    })
}

/// Binds `what` (an fd's `/proc/self/fd` path) onto the file at `onto`.
pub fn bind_file(field: &str, what: &Path, onto: &Resolved) -> Result<(), MountError> {
    mount(
        Some(what),
        &onto.proc_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(field, "bind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mnt(dest: &str, typ: Option<&str>, source: Option<&str>, opts: &[&str]) -> Mount {
        let mut b = MountBuilder::default()
            .destination(dest)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(s) = source {
            b = b.source(s);
        }
        b.build().unwrap()
    }

    #[test]
    fn fs_mount_options_become_flags_and_data() {
        let p = plan_mount(
            1,
            &mnt(
                "/dev",
                Some("tmpfs"),
                Some("tmpfs"),
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
        )
        .unwrap();
        assert_eq!(p.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(
            MsFlags::from_bits_truncate(p.flags),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME
        );
        assert_eq!(p.data, "mode=755,size=65536k");
        assert_eq!(p.remount_flags, None);
        let p = plan_mount(
            2,
            &mnt(
                "/sys/fs/cgroup",
                Some("cgroup"),
                Some("cgroup"),
                &["ro", "nosuid"],
            ),
        )
        .unwrap();
        assert_eq!(p.fstype.as_deref(), Some("cgroup2"));
        assert!(MsFlags::from_bits_truncate(p.flags).contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn bind_options_become_a_remount_and_propagation() {
        let p = plan_mount(
            0,
            &mnt(
                "/data",
                Some("bind"),
                Some("/srv"),
                &["rbind", "ro", "nosuid", "rprivate"],
            ),
        )
        .unwrap();
        assert!(p.fstype.is_none());
        assert_eq!(
            MsFlags::from_bits_truncate(p.flags),
            MsFlags::MS_BIND | MsFlags::MS_REC
        );
        let r = MsFlags::from_bits_truncate(p.remount_flags.unwrap());
        assert!(r.contains(
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_REMOUNT | MsFlags::MS_BIND
        ));
        assert_eq!(
            p.propagation,
            vec![(MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()]
        );
        // A "none" type with a bind option is a bind too; rw clears ro.
        let p = plan_mount(
            0,
            &mnt("/d", Some("none"), Some("/srv"), &["bind", "ro", "rw"]),
        )
        .unwrap();
        assert!(p.fstype.is_none());
        assert_eq!(MsFlags::from_bits_truncate(p.flags), MsFlags::MS_BIND);
        assert_eq!(p.remount_flags, None);
    }

    #[test]
    fn a_bind_of_the_hosts_files_always_gets_the_specs_flags() {
        let shared = format!("{}/mounts/3", crate::shared_fs::SHARED_DIR);
        let p = plan_mount(
            0,
            &mnt("/vol", Some("bind"), Some(&shared), &["rbind", "rw"]),
        )
        .unwrap();
        assert_eq!(
            MsFlags::from_bits_truncate(p.remount_flags.unwrap()),
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            "no nosuid or nodev from the shared directory"
        );
        let p = plan_mount(
            0,
            &mnt("/f", Some("bind"), Some(&shared), &["bind", "ro", "nodev"]),
        )
        .unwrap();
        assert_eq!(
            MsFlags::from_bits_truncate(p.remount_flags.unwrap()),
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV
        );
    }

    #[test]
    fn bad_mounts_name_the_field() {
        let e = plan_mount(3, &mnt("data", Some("tmpfs"), None, &[])).unwrap_err();
        assert_eq!(e.field, "mounts[3].destination");
        let e = plan_mount(0, &mnt("/d", Some("bind"), Some("/s"), &["mode=755"])).unwrap_err();
        assert_eq!(e.field, "mounts[0].options");
        let e = plan_mount(0, &mnt("/d", Some("bind"), None, &[])).unwrap_err();
        assert_eq!(e.field, "mounts[0].source");
        let e = plan_mount(0, &mnt("/d", Some("bind"), Some("rel"), &[])).unwrap_err();
        assert_eq!(e.field, "mounts[0].source");
        let e = plan_mount(0, &mnt("/d", None, Some("x"), &[])).unwrap_err();
        assert_eq!(e.field, "mounts[0].type");
        let e =
            plan_mount(4, &mnt("/d", Some("tmpfs"), None, &["nosuid", "tmpcopyup"])).unwrap_err();
        assert_eq!(e.field, "mounts[4].options[1]");
        assert!(e.reason.contains("not supported"), "{e}");
        let e = plan_mount(0, &mnt("/", Some("tmpfs"), None, &[])).unwrap_err();
        assert_eq!(e.field, "mounts[0].destination");
    }

    #[test]
    fn rootfs_propagation_values() {
        assert_eq!(rootfs_propagation(None).unwrap().1, None);
        assert!(rootfs_propagation(Some("rshared")).unwrap().1.is_some());
        assert_eq!(
            rootfs_propagation(Some("private")).unwrap().0,
            (MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()
        );
        assert_eq!(
            rootfs_propagation(Some("weird")).unwrap_err().field,
            "linux.rootfsPropagation"
        );
    }

    #[test]
    fn dev_bind_is_detected() {
        let bind = plan_mount(0, &mnt("/dev", Some("bind"), Some("/dev"), &["rbind"])).unwrap();
        let tmpfs = plan_mount(0, &mnt("/dev", Some("tmpfs"), None, &[])).unwrap();
        assert!(binds_dev(&[bind]));
        assert!(!binds_dev(&[tmpfs]));
    }
}
