//! The VMM's private mount namespace: the shared directory's binds exist
//! only there, so they vanish with the VMM however it ends (delete, crash,
//! SIGKILL, host reboot) and never leak into the host's mount table.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::oci::SharedBind;

/// Why the binds could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareBindsError {
    /// A bind source vanished since the bundle was checked.
    #[error("bind source {0:?} is gone")]
    Source(PathBuf, #[source] std::io::Error),
    /// A mount point in the shared directory could not be made.
    #[error("cannot create the mount point {0:?}")]
    Target(PathBuf, #[source] std::io::Error),
    /// A path holds a NUL byte.
    #[error("path {0:?} holds a NUL byte")]
    Nul(PathBuf),
}

/// One bind, as C strings ready for the child after fork.
#[derive(Debug)]
struct PreparedBind {
    source: CString,
    target: CString,
    readonly: bool,
}

/// Binds prepared before fork, applied in the child by [`Binds::apply`].
#[derive(Debug)]
pub struct Binds {
    binds: Vec<PreparedBind>,
}

/// `Ok` for a zero return, else the OS error.
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cstring(path: &Path) -> Result<CString, PrepareBindsError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| PrepareBindsError::Nul(path.to_path_buf()))
}

impl Binds {
    /// Creates each bind's mount point under `shared` (a directory for a
    /// directory, an empty file for a file) and keeps the paths ready.
    pub fn prepare(shared: &Path, binds: &[SharedBind]) -> Result<Self, PrepareBindsError> {
        let mut prepared = Vec::with_capacity(binds.len());
        for bind in binds {
            let meta = fs::metadata(&bind.source)
                .map_err(|e| PrepareBindsError::Source(bind.source.clone(), e))?;
            let target = shared.join(&bind.target);
            let made = if meta.is_dir() {
                fs::create_dir_all(&target)
            } else {
                target
                    .parent()
                    .map_or(Ok(()), fs::create_dir_all)
                    .and_then(|()| fs::File::create(&target).map(drop))
            };
            made.map_err(|e| PrepareBindsError::Target(target.clone(), e))?;
            prepared.push(PreparedBind {
                source: cstring(&bind.source)?,
                target: cstring(&target)?,
                readonly: bind.readonly,
            });
        }
        Ok(Self { binds: prepared })
    }

    /// Whether there is nothing to bind.
    pub fn is_empty(&self) -> bool {
        self.binds.is_empty()
    }

    /// In the child, after fork and before exec: a new mount namespace
    /// that receives nothing from the host's, then the binds. Only raw
    /// system calls: the child must not allocate.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: unshare takes no pointers.
        check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
        // SAFETY: the target is a static C string; the other pointers may be null for MS_PRIVATE.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        self.mount_all()
    }

    /// Makes the binds in the calling process's mount namespace (one the
    /// caller made its own). Only raw system calls, as [`Binds::apply`].
    pub fn mount_all(&self) -> std::io::Result<()> {
        for bind in &self.binds {
            // SAFETY: source and target are NUL-terminated strings that live
            // in `self` for the whole call.
            check(unsafe {
                libc::mount(
                    bind.source.as_ptr(),
                    bind.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            })?;
            if bind.readonly {
                // SAFETY: as above; a read-only bind needs a remount.
                check(unsafe {
                    libc::mount(
                        std::ptr::null(),
                        bind.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                        std::ptr::null(),
                    )
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_directory_and_file_mount_points() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("hosts"), "127.0.0.1 x\n").unwrap();
        let shared = tempfile::tempdir().unwrap();
        let binds = [
            SharedBind {
                source: src.path().to_path_buf(),
                target: "rootfs".into(),
                readonly: false,
            },
            SharedBind {
                source: src.path().join("hosts"),
                target: "mounts/1".into(),
                readonly: true,
            },
        ];
        let prepared = Binds::prepare(shared.path(), &binds).unwrap();
        assert!(!prepared.is_empty());
        assert!(shared.path().join("rootfs").is_dir());
        assert!(shared.path().join("mounts/1").is_file());
        let gone = [SharedBind {
            source: "/nonexistent/src".into(),
            target: "x".into(),
            readonly: false,
        }];
        assert!(Binds::prepare(shared.path(), &gone)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/src"));
    }
}
