//! What the agent tells the container-init helper to do, and the channel
//! they talk over.
//!
//! The agent validates a spec and turns it into a plan: inert data with
//! every option already converted (mount flags, capability masks, compiled
//! seccomp filters), so bad input is refused before any process exists.
//! The helper (`husk-agent --container-init`, a fresh single-threaded
//! process in the new namespaces) only carries the plan out. They talk over
//! a Unix stream socketpair at fd 3 of the helper: length-prefixed JSON
//! frames, file descriptors riding along with a frame's first byte.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Largest frame accepted (a spec with a big seccomp profile is ~100 KiB).
const MAX_FRAME: usize = 16 << 20;
/// Most file descriptors passed with one frame.
const MAX_FDS: usize = 4;

/// Agent → helper, first message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Plan {
    /// Set up a new container and become its init.
    Container(Box<ContainerPlan>),
    /// Join a running container (its init's pidfd is fd 4) and run a process.
    Exec(Box<ExecPlan>),
}

/// Agent → helper, after `Ready`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Control {
    /// Exec the process now.
    Start,
}

/// Helper → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// Set up and waiting for `Start`; with a terminal, its master rides along.
    Ready,
    /// Set-up (or the final exec) failed; the helper exits.
    Failed(String),
}

/// A namespace the helper joins by path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NsJoin {
    /// `CLONE_NEW*` of the namespace type.
    pub nstype: i32,
    /// Its path in the guest, e.g. `/proc/42/ns/ipc`.
    pub path: PathBuf,
    /// The spec field it came from, for errors.
    pub field: String,
}

/// Everything a new container's init does before it waits for `Start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// `root.path`, absolute in the guest.
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub root_readonly: bool,
    /// Propagation set on `/` of the new mount namespace first (MS_* bits).
    pub initial_propagation: u64,
    /// Propagation set on the new root after pivot_root, if any.
    pub final_propagation: Option<u64>,
    /// `mounts`, in order.
    pub mounts: Vec<MountPlan>,
    /// Whether to create runc's default /dev nodes and links.
    pub default_devices: bool,
    /// `linux.devices`.
    pub devices: Vec<DevicePlan>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `domainname`.
    pub domainname: Option<String>,
    /// `linux.sysctl`, as (path under /proc/sys, value).
    pub sysctls: Vec<(String, String)>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<String>,
    /// Namespaces joined by path instead of made new.
    pub join_namespaces: Vec<NsJoin>,
    /// Unshare a new cgroup namespace (after the agent put us in our cgroup).
    pub new_cgroup_ns: bool,
    /// The init process.
    pub process: ProcessPlan,
}

/// One entry of `mounts`, converted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountPlan {
    /// The spec field, e.g. `mounts[3]`, for errors.
    pub field: String,
    /// Where, inside the container.
    pub destination: PathBuf,
    /// What (a guest path for bind mounts).
    pub source: Option<PathBuf>,
    /// The file system type; `None` for bind mounts.
    pub fstype: Option<String>,
    /// Flags of the mount call (MS_BIND|MS_REC for recursive binds).
    pub flags: u64,
    /// For bind mounts with flags (ro, nosuid…): the remount's flags.
    pub remount_flags: Option<u64>,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<u64>,
    /// File-system specific options.
    pub data: String,
}

/// One entry of `linux.devices`, or a default device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicePlan {
    /// The spec field, for errors.
    pub field: String,
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: u32,
    /// Device major.
    pub major: u64,
    /// Device minor.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an exec helper joins and runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecPlan {
    /// `CLONE_NEW*` flags to join through the init's pidfd (the pid
    /// namespace is already joined by the clone).
    pub namespaces: i32,
    /// The process.
    pub process: ProcessPlan,
}

/// A resource limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RlimitPlan {
    /// The spec field, for errors.
    pub field: String,
    /// RLIMIT_* number.
    pub resource: i32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Capability sets as bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsPlan {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump if true.
    pub jt: u8,
    /// Jump if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// A converted seccomp profile: filters installed in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeccompPlan {
    /// The programs.
    pub filters: Vec<Vec<BpfInsn>>,
    /// SECCOMP_FILTER_FLAG_* bits.
    pub flags: u32,
}

/// The process half of a plan, shared by init and exec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// `args`.
    pub args: Vec<String>,
    /// `env`.
    pub env: Vec<String>,
    /// `cwd`, absolute.
    pub cwd: PathBuf,
    /// `user.uid`.
    pub uid: u32,
    /// `user.gid`.
    pub gid: u32,
    /// `user.additionalGids`.
    pub additional_gids: Vec<u32>,
    /// `user.username`: looked up in the container's /etc/passwd.
    pub username: Option<String>,
    /// `user.umask`.
    pub umask: u32,
    /// `rlimits`.
    pub rlimits: Vec<RlimitPlan>,
    /// `capabilities`; `None` leaves the capabilities as they are.
    pub caps: Option<CapsPlan>,
    /// Highest capability number the kernel knows.
    pub cap_last_cap: u8,
    /// `noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `linux.seccomp`.
    pub seccomp: Option<SeccompPlan>,
    /// `oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `ioPriority` as an ioprio value.
    pub io_priority: Option<i32>,
    /// `linux.personality` as a persona value.
    pub personality: Option<u64>,
    /// Allocate a pty in the container and make it the controlling terminal.
    pub terminal: bool,
}

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed.
    #[error("socket")]
    Io(#[from] std::io::Error),
    /// The peer closed the channel.
    #[error("the other side closed the channel")]
    Closed,
    /// A frame was not what was expected.
    #[error("bad frame")]
    Decode(#[from] serde_json::Error),
    /// A frame was too large.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
}

/// One end of the agent ⇄ helper socketpair.
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Wraps a connected stream socket.
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The socket.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message with `fds` attached.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<(), ChannelError> {
        let body = serde_json::to_vec(msg)?;
        let len = (body.len() as u32).to_le_bytes();
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        // The header goes with the fds; the body follows.
        let sent = retry(|| {
            sendmsg::<()>(
                self.fd(),
                &[IoSlice::new(&len)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
        })?;
        self.write_all(&len[sent..])?;
        self.write_all(&body)
    }

    fn write_all(&self, mut buf: &[u8]) -> Result<(), ChannelError> {
        while !buf.is_empty() {
            let n = retry(|| nix::sys::socket::send(self.fd(), buf, MsgFlags::MSG_NOSIGNAL))?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Receives one message and the fds that came with it.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let mut len = [0u8; 4];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < len.len() {
            let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut len[got..])];
            let msg = loop {
                match recvmsg::<()>(
                    self.fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(std::io::Error::from)?,
                }
            };
            if msg.bytes == 0 {
                return Err(ChannelError::Closed);
            }
            for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: SCM_RIGHTS just installed these fds in this
                    // process; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            got += msg.bytes;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ChannelError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = retry(|| nix::unistd::read(self.fd(), &mut body[got..]))?;
            if n == 0 {
                return Err(ChannelError::Closed);
            }
            got += n;
        }
        Ok((serde_json::from_slice(&body)?, fds))
    }

    /// Waits for the peer to close its end (a successful exec closes the
    /// helper's end) or to send a message first.
    pub fn recv_or_closed<T: for<'de> Deserialize<'de>>(&self) -> Result<Option<T>, ChannelError> {
        match self.recv() {
            Ok((msg, _)) => Ok(Some(msg)),
            Err(ChannelError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn pair() -> (Channel, Channel) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (Channel::new(a), Channel::new(b))
    }

    #[test]
    fn frames_carry_messages_and_fds() {
        let (a, b) = pair();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        a.send(&Report::Ready, &[file.as_raw_fd()]).unwrap();
        let big = Report::Failed("x".repeat(300_000));
        let t = std::thread::spawn(move || {
            a.send(&big, &[]).unwrap();
            a
        });
        let (msg, fds): (Report, _) = b.recv().unwrap();
        assert!(matches!(msg, Report::Ready));
        assert_eq!(fds.len(), 1);
        let (msg, fds): (Report, _) = b.recv().unwrap();
        assert!(matches!(msg, Report::Failed(s) if s.len() == 300_000));
        assert!(fds.is_empty());
        drop(t.join().unwrap());
        assert!(b.recv_or_closed::<Report>().unwrap().is_none());
    }
}
