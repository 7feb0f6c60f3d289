//! The pod's mounts: each container's rootfs (the snapshotter's mounts
//! from containerd's Create request) and bind mounts, made under the
//! directory the VM shares over virtio-fs.
//!
//! They are made in the shim's own mount namespace, which the VMM shares:
//! the host never sees them, and they vanish with the shim and its VMM
//! however those end.

use std::fs;
use std::path::{Path, PathBuf};

use husk::oci::SharedBind;
use husk::sandbox::mount_ns::{Binds, PrepareBindsError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Why a container's mounts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount point could not be made.
    #[error("cannot create the mount point {0:?}")]
    Target(PathBuf, #[source] std::io::Error),
    /// A rootfs mount failed.
    #[error("cannot mount the rootfs ({fstype} from {source_path:?}) on {target:?}")]
    Rootfs {
        /// Its type.
        fstype: String,
        /// Its source.
        source_path: String,
        /// Where.
        target: PathBuf,
        /// Why.
        #[source]
        errno: nix::Error,
    },
    /// A rootfs mount type this shim does not handle.
    #[error("rootfs mount type {0:?} is not supported (use overlay, bind or a local file system)")]
    Unsupported(String),
    /// A bind mount of the bundle.
    #[error(transparent)]
    Prepare(#[from] PrepareBindsError),
    /// A bind mount of the bundle failed.
    #[error("cannot bind the container's mounts into the shared directory")]
    Bind(#[source] std::io::Error),
}

/// One mount of containerd's rootfs list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// The file system type (`overlay`, `bind`, `ext4`...).
    pub fstype: String,
    /// The source.
    pub source: String,
    /// fstab-style options.
    pub options: Vec<String>,
}

/// Splits fstab-style options into mount flags and file system data.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(option.as_str());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// The mounts made for one container, undone in reverse by
/// [`ContainerMounts::unmount`] (or on drop).
#[derive(Debug)]
pub struct ContainerMounts {
    /// `shared/<container id>`.
    root: PathBuf,
    /// Every mount point made, in order, and whether it is a directory.
    points: Vec<(PathBuf, bool)>,
}

/// Creates `path` as a mount point (a directory, or an empty file).
fn make_point(path: &Path, dir: bool) -> Result<(), MountError> {
    let made = if dir {
        fs::create_dir_all(path)
    } else {
        path.parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::File::create(path).map(drop))
    };
    made.map_err(|e| MountError::Target(path.to_path_buf(), e))
}

impl ContainerMounts {
    /// Mounts container `id`'s rootfs at `shared/<id>/rootfs` (`rootfs`,
    /// or, when containerd gave none, the bundle's own rootfs, the first
    /// of `binds`) and its bind mounts at the other targets of `binds`.
    pub fn mount(
        shared: &Path,
        id: &str,
        rootfs: &[RootfsMount],
        binds: &[SharedBind],
    ) -> Result<Self, MountError> {
        let mut made = Self {
            root: shared.join(id),
            points: Vec::new(),
        };
        let target = made.root.join("rootfs");
        let binds = if rootfs.is_empty() {
            binds
        } else {
            make_point(&target, true)?;
            made.points.push((target.clone(), true));
            for m in rootfs {
                mount_one(m, &target)?;
            }
            binds.get(1..).unwrap_or_default()
        };
        let prepared = Binds::prepare(shared, binds)?;
        for bind in binds {
            let point = shared.join(&bind.target);
            let dir = point.is_dir();
            made.points.push((point, dir));
        }
        prepared.mount_all().map_err(MountError::Bind)?;
        Ok(made)
    }

    /// Unmounts everything (lazily: a busy mount is detached) and removes
    /// the mount points. Never removes anything recursively: a mount that
    /// could not be undone keeps its directory, and what is under it.
    pub fn unmount(&mut self) {
        for (point, dir) in self.points.drain(..).rev() {
            // Stacked rootfs mounts: undo all of them.
            while umount2(&point, MntFlags::MNT_DETACH).is_ok() {}
            let removed = if dir {
                fs::remove_dir(&point)
            } else {
                fs::remove_file(&point)
            };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove the mount point {point:?}: {e}");
                }
            }
        }
        for dir in [self.root.join("mounts"), self.root.clone()] {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for ContainerMounts {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Mounts one rootfs mount on `target`.
fn mount_one(m: &RootfsMount, target: &Path) -> Result<(), MountError> {
    let (flags, data) = parse_options(&m.options);
    let failed = |errno| MountError::Rootfs {
        fstype: m.fstype.clone(),
        source_path: m.source.clone(),
        target: target.to_path_buf(),
        errno,
    };
    let bind = m.fstype == "bind" || flags.contains(MsFlags::MS_BIND);
    if bind {
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(failed)?;
        if flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                None::<&str>,
            )
            .map_err(failed)?;
        }
        return Ok(());
    }
    if m.fstype.is_empty() || m.fstype.contains('/') {
        return Err(MountError::Unsupported(m.fstype.clone()));
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(m.source.as_str()),
        target,
        Some(m.fstype.as_str()),
        flags,
        data,
    )
    .map_err(failed)
}

/// Gives the calling process (single-threaded still) its own mount
/// namespace, which receives the host's later mounts but sends none back.
pub fn enter_own_namespace() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&strings(&[
            "index=off",
            "ro",
            "nosuid",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "workdir=/w",
        ]));
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w");
        let (flags, data) = parse_options(&strings(&["rbind", "ro", "rw"]));
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(data.is_empty());
    }

    #[test]
    fn unmount_removes_only_empty_mount_points() {
        let shared = tempfile::tempdir().unwrap();
        let mut made = ContainerMounts {
            root: shared.path().join("c1"),
            points: vec![
                (shared.path().join("c1/rootfs"), true),
                (shared.path().join("c1/mounts/1"), false),
            ],
        };
        make_point(&shared.path().join("c1/rootfs"), true).unwrap();
        make_point(&shared.path().join("c1/mounts/1"), false).unwrap();
        // Something inside a point (as if a mount could not be undone).
        fs::write(shared.path().join("c1/rootfs/keep"), "x").unwrap();
        made.unmount();
        assert!(shared.path().join("c1/rootfs/keep").exists());
        assert!(!shared.path().join("c1/mounts").exists());
    }

    #[test]
    fn odd_rootfs_types_are_refused_by_name() {
        let e = mount_one(
            &RootfsMount {
                fstype: "../x".into(),
                source: "s".into(),
                options: vec![],
            },
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("../x"), "{e}");
    }
}
