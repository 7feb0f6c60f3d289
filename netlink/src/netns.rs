//! Working inside another network namespace without moving the caller.
//!
//! [`in_netns`] runs a closure on a fresh scoped thread that first joins
//! the namespace (`setns(fd, CLONE_NEWNET)`) and then does all its work
//! there: the netlink socket and `/dev/net/tun` are opened by that thread,
//! so they belong to that namespace, and the caller's threads never change
//! namespace. The thread ends with the closure.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Entering a network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file does not exist.
    #[error("network namespace {} does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The namespace file could not be opened.
    #[error("opening network namespace {}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is not a namespace at all (a plain file, say a mount point
    /// of `ip netns` whose namespace is gone).
    #[error("{} is not a network namespace", path.display())]
    NotANamespace {
        /// The path given.
        path: PathBuf,
    },
    /// The path is a namespace of another kind.
    #[error("{} is a {kind} namespace, not a network namespace", path.display())]
    OtherKind {
        /// The path given.
        path: PathBuf,
        /// The kind it is (`mnt`, `pid`…).
        kind: &'static str,
    },
    /// `setns` refused.
    #[error("entering network namespace {}", path.display())]
    Enter {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The thread for the namespace could not be started.
    #[error("starting a thread for network namespace {}", path.display())]
    Spawn {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Runs `work` on a new thread inside the network namespace at `netns`
/// (`/var/run/netns/NAME`, `/proc/PID/ns/net`) and returns what it returns.
/// The calling thread stays where it is. A panic in `work` is passed on.
pub fn in_netns<T, F>(netns: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let namespace = open_netns(netns)?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("husk-netns".into())
            .spawn_scoped(scope, move || {
                setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Enter {
                        path: netns.to_path_buf(),
                        source,
                    }
                })?;
                drop(namespace);
                Ok(work())
            })
            .map_err(|source| NetnsError::Spawn {
                path: netns.to_path_buf(),
                source,
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Opens `path` and checks that it is a network namespace.
pub(crate) fn open_netns(path: &Path) -> Result<File, NetnsError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => NetnsError::NotFound {
            path: path.to_path_buf(),
        },
        _ => NetnsError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // NS_GET_NSTYPE answers which kind of namespace the file refers to, and
    // fails (ENOTTY) on anything that is not a namespace file.
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the file
    // descriptor, which `file` keeps open for the duration of the call.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(NetnsError::NotANamespace {
            path: path.to_path_buf(),
        });
    }
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::OtherKind {
            path: path.to_path_buf(),
            kind: namespace_kind(kind),
        });
    }
    Ok(file)
}

fn namespace_kind(clone_flag: libc::c_int) -> &'static str {
    match clone_flag {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_network_namespace() {
        let missing = Path::new("/var/run/netns/husk-nl-test-does-not-exist");
        let error = in_netns(missing, || ()).unwrap_err();
        assert!(matches!(error, NetnsError::NotFound { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "network namespace /var/run/netns/husk-nl-test-does-not-exist does not exist"
        );

        let error = in_netns(Path::new("/etc/hostname"), || ()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/hostname is not a network namespace"
        );

        let error = in_netns(Path::new("/proc/self/ns/mnt"), || ()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/proc/self/ns/mnt is a mnt namespace, not a network namespace"
        );
    }

    #[test]
    fn runs_in_the_namespace_and_leaves_the_caller_alone() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let netns = crate::fixture::TestNetns::new();
        let inside = in_netns(netns.path(), || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .unwrap();
        let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(before, after);
        assert_ne!(before, inside);
    }
}
