//! Paths inside a container's rootfs, resolved without ever leaving it.
//!
//! An image is hostile: `/etc` may be a symlink to `/../../host/etc`. Every
//! path the agent acts on before pivot_root (mount destinations, device
//! nodes, the working directory) is walked one component at a time from an
//! fd of the rootfs with `openat(O_PATH|O_NOFOLLOW)`. A symlink is read and
//! its target walked the same way, as if the rootfs were `/` (an absolute
//! target restarts at the rootfs, `..` stops there), exactly as the process
//! will see it after pivot_root. The result is an fd, and the caller acts
//! on the fd (`/proc/self/fd/N` for mount(2)), so nothing is looked up by
//! name outside the walk.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// How many symlinks one walk follows (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// What to do when a component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Fail with ENOENT.
    Nothing,
    /// Make missing directories, the last one included.
    Dirs,
    /// Make missing directories and the last component as an empty file.
    File,
}

/// A path resolved inside the root.
#[derive(Debug)]
pub struct Resolved {
    /// An `O_PATH` fd of what the path names.
    pub fd: OwnedFd,
    /// Its directory (`None` for the root itself).
    pub parent: Option<OwnedFd>,
    /// Its name in `parent`.
    pub name: OsString,
}

impl Resolved {
    /// `/proc/self/fd/N` of the target: a name for mount(2) and open(2)
    /// that refers to exactly this inode.
    pub fn proc_path(&self) -> PathBuf {
        fd_path(self.fd.as_fd())
    }

    /// `/proc/self/fd/P/name`: the name again, looked up from its
    /// directory, so it lands on whatever is mounted there now.
    pub fn proc_path_by_name(&self) -> PathBuf {
        match &self.parent {
            Some(p) => fd_path(p.as_fd()).join(&self.name),
            None => self.proc_path(),
        }
    }
}

/// `/proc/self/fd/N`.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A component failed.
    #[error("{path:?}: {op} {component:?}")]
    Component {
        /// The path being resolved.
        path: PathBuf,
        /// The component.
        component: OsString,
        /// What was done to it.
        op: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Too many symlinks.
    #[error("{0:?}: too many levels of symbolic links")]
    Loop(PathBuf),
    /// A component that must be a directory is not.
    #[error("{path:?}: {component:?} is not a directory")]
    NotDir {
        /// The path being resolved.
        path: PathBuf,
        /// The component.
        component: OsString,
    },
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    fd.try_clone_to_owned()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolves `path` inside the directory `root` (an fd of the rootfs).
pub fn resolve_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    create: Create,
) -> Result<Resolved, ResolveError> {
    let err = |component: &OsStr, op, source| ResolveError::Component {
        path: path.to_path_buf(),
        component: component.to_os_string(),
        op,
        source,
    };
    let root_fd = dup(root).map_err(|e| err(OsStr::new("/"), "dup", e))?;
    // The directories walked below the root so far; `..` pops one.
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut todo: VecDeque<OsString> = components(path).collect();
    let mut links = 0;
    // The last component opened and its name, once the walk is over.
    let mut last: Option<(OwnedFd, OsString)> = None;
    while let Some(name) = todo.pop_front() {
        if let Some((fd, n)) = last.take() {
            // The previous component turned out not to be the last one.
            if !is_dir(fd.as_fd()) {
                return Err(ResolveError::NotDir {
                    path: path.to_path_buf(),
                    component: n,
                });
            }
            stack.push((fd, n));
        }
        if name == ".." {
            stack.pop();
            continue;
        }
        let dir = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
        let fd = match open_path(dir, &name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create != Create::Nothing => {
                let is_last = todo.is_empty();
                let made = if is_last && create == Create::File {
                    openat(
                        Some(dir.as_raw_fd()),
                        name.as_os_str(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(|fd| {
                        // SAFETY: openat just returned this fd.
                        drop(unsafe { OwnedFd::from_raw_fd(fd) })
                    })
                } else {
                    mkdirat(
                        Some(dir.as_raw_fd()),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                };
                match made {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(&name, "create", e)),
                }
                open_path(dir, &name).map_err(|e| err(&name, "open", e))?
            }
            Err(e) => return Err(err(&name, "open", e)),
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| err(&name, "stat", e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ResolveError::Loop(path.to_path_buf()));
            }
            // An empty path reads the link the O_PATH fd refers to.
            let target =
                readlinkat(Some(fd.as_raw_fd()), "").map_err(|e| err(&name, "readlink", e))?;
            let target = PathBuf::from(target);
            if target.has_root() {
                stack.clear();
            }
            for (i, c) in components(&target).enumerate() {
                todo.insert(i, c);
            }
            continue;
        }
        last = Some((fd, name));
    }
    let (fd, name) = match last.or_else(|| stack.pop()) {
        Some(found) => found,
        // The path named the root itself.
        None => {
            return Ok(Resolved {
                fd: root_fd,
                parent: None,
                name: OsString::from("/"),
            })
        }
    };
    let parent = stack.pop().map(|(fd, _)| fd).unwrap_or(root_fd);
    Ok(Resolved {
        fd,
        parent: Some(parent),
        name,
    })
}

fn is_dir(fd: BorrowedFd<'_>) -> bool {
    fstat(fd.as_raw_fd())
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .unwrap_or(false)
}

/// `path` as an absolute path with `.`, `..` and repeated `/` folded
/// lexically (`..` stops at `/`), as it names a place inside a root.
pub fn clean(path: &Path) -> PathBuf {
    let mut parts: Vec<OsString> = Vec::new();
    for c in components(path) {
        if c == ".." {
            parts.pop();
        } else {
            parts.push(c);
        }
    }
    let mut out = PathBuf::from("/");
    out.extend(parts);
    out
}

/// Whether `path` names the root itself once `.`, `..` and `/` are folded.
pub fn is_root(path: &Path) -> bool {
    let mut depth = 0usize;
    for c in components(path) {
        if c == ".." {
            depth = depth.saturating_sub(1);
        } else {
            depth += 1;
        }
    }
    depth == 0 && !path.as_os_str().as_bytes().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree {
        _tmp: tempfile::TempDir,
        outside: PathBuf,
        root: PathBuf,
        root_fd: std::fs::File,
    }

    /// A rootfs next to an `outside` directory the walk must never touch.
    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(outside.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root\n").unwrap();
        let root_fd = std::fs::File::open(&root).unwrap();
        Tree {
            outside,
            root,
            root_fd,
            _tmp: tmp,
        }
    }

    fn real_path(r: &Resolved) -> PathBuf {
        std::fs::read_link(r.proc_path()).unwrap()
    }

    #[test]
    fn plain_paths_and_creation() {
        let t = tree();
        let r =
            resolve_in_root(t.root_fd.as_fd(), Path::new("/etc/passwd"), Create::Nothing).unwrap();
        assert_eq!(real_path(&r), t.root.join("etc/passwd"));
        assert_eq!(r.name, "passwd");
        let r = resolve_in_root(t.root_fd.as_fd(), Path::new("/a/b/c"), Create::Dirs).unwrap();
        assert!(t.root.join("a/b/c").is_dir());
        assert_eq!(real_path(&r), t.root.join("a/b/c"));
        resolve_in_root(t.root_fd.as_fd(), Path::new("/a/f"), Create::File).unwrap();
        assert!(t.root.join("a/f").is_file());
        let e =
            resolve_in_root(t.root_fd.as_fd(), Path::new("/nope/x"), Create::Nothing).unwrap_err();
        assert!(
            matches!(
                e,
                ResolveError::Component {
                    source: Errno::ENOENT,
                    ..
                }
            ),
            "{e}"
        );
        let e = resolve_in_root(t.root_fd.as_fd(), Path::new("/etc/passwd/x"), Create::Dirs)
            .unwrap_err();
        assert!(matches!(e, ResolveError::NotDir { .. }), "{e}");
    }

    #[test]
    fn absolute_symlinks_stay_inside() {
        let t = tree();
        // An image's /escape points at a real directory outside the rootfs.
        symlink(&t.outside, t.root.join("escape")).unwrap();
        let r = resolve_in_root(t.root_fd.as_fd(), Path::new("/escape/mnt"), Create::Dirs).unwrap();
        let inside = t
            .root
            .join(t.outside.strip_prefix("/").unwrap())
            .join("mnt");
        assert_eq!(real_path(&r), inside);
        assert!(
            !t.outside.join("mnt").exists(),
            "created outside the rootfs"
        );
    }

    #[test]
    fn dotdot_symlinks_stop_at_the_root() {
        let t = tree();
        symlink("../../../../outside", t.root.join("up")).unwrap();
        symlink("../../..", t.root.join("etc/top")).unwrap();
        let r = resolve_in_root(t.root_fd.as_fd(), Path::new("/up/etc"), Create::Dirs).unwrap();
        assert_eq!(real_path(&r), t.root.join("outside/etc"));
        assert!(!t.outside.join("etc/x").exists());
        let r = resolve_in_root(
            t.root_fd.as_fd(),
            Path::new("/etc/top/etc/passwd"),
            Create::Nothing,
        )
        .unwrap();
        assert_eq!(real_path(&r), t.root.join("etc/passwd"));
        let r =
            resolve_in_root(t.root_fd.as_fd(), Path::new("/../../.."), Create::Nothing).unwrap();
        assert_eq!(real_path(&r), t.root);
        assert!(r.parent.is_none());
    }

    #[test]
    fn the_last_component_is_followed_inside_too() {
        let t = tree();
        symlink("/etc/passwd", t.root.join("pw")).unwrap();
        symlink(t.outside.join("etc"), t.root.join("etc/hostetc")).unwrap();
        let r = resolve_in_root(t.root_fd.as_fd(), Path::new("pw"), Create::Nothing).unwrap();
        assert_eq!(real_path(&r), t.root.join("etc/passwd"));
        // The target does not exist inside: it is made inside, never outside.
        let r =
            resolve_in_root(t.root_fd.as_fd(), Path::new("/etc/hostetc"), Create::Dirs).unwrap();
        assert!(real_path(&r).starts_with(&t.root));
    }

    #[test]
    fn symlink_loops_end() {
        let t = tree();
        symlink("b", t.root.join("a")).unwrap();
        symlink("a", t.root.join("b")).unwrap();
        let e = resolve_in_root(t.root_fd.as_fd(), Path::new("/a/x"), Create::Dirs).unwrap_err();
        assert!(matches!(e, ResolveError::Loop(_)), "{e}");
    }

    #[test]
    fn lexical_cleaning() {
        assert_eq!(clean(Path::new("/dev/")), Path::new("/dev"));
        assert_eq!(clean(Path::new("//a/./b/../../dev")), Path::new("/dev"));
        assert_eq!(clean(Path::new("/../x")), Path::new("/x"));
    }

    #[test]
    fn root_detection() {
        assert!(is_root(Path::new("/")));
        assert!(is_root(Path::new("/a/..")));
        assert!(is_root(Path::new("/..")));
        assert!(!is_root(Path::new("/a")));
        assert!(!is_root(Path::new("")));
    }
}
