//! The virtio-fs device: virtio registers, the config space, and the
//! hand-over of the queues to the worker thread.
//!
//! The transport calls into the device on a vCPU thread. Activation sends
//! the queues to the worker over a channel and wakes it; a reset sends a
//! numbered reset and waits (bounded) for the worker to acknowledge it, so
//! that the worker has stopped touching the old queues before the driver
//! reuses their memory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker::FsWorker;
use crate::devices::virtio::{
    device_type, ActivateContext, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1,
};

/// Longest tag the config space holds (virtio 1.2, section 5.11.4).
pub const TAG_MAX_LEN: usize = 36;
/// Number of request queues (one: the worker serves them in order anyway).
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Queue sizes: the high-priority queue (FORGET, INTERRUPT), then the
/// request queue. Linux sizes its largest request by the ring (one
/// descriptor per page, no indirect descriptors offered), so 1024 lets it
/// send 1 MiB reads and writes.
pub const QUEUE_SIZES: [u16; 2] = [128, 1024];
/// Index of the high-priority queue.
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the (only) request queue.
pub const REQUEST_QUEUE: usize = 1;
/// Size of the config space: the tag, then `num_request_queues`.
const CONFIG_SIZE: usize = TAG_MAX_LEN + 4;
/// How long a reset waits for the worker to let go of the queues.
const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the virtio-fs device could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty, too long, or holds a NUL or newline.
    #[error("fs tag {0:?}: must be 1 to {TAG_MAX_LEN} bytes without NUL or newline")]
    Tag(String),
    /// The shared directory cannot be used.
    #[error("shared directory {path:?}")]
    SharedDir {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// PassthroughFs could not be created (it opens `/proc/self/fd` and
    /// `/proc/self/mountinfo`).
    #[error("cannot set up the passthrough file system")]
    Passthrough(#[source] io::Error),
    /// An event fd could not be created or cloned.
    #[error("cannot create a virtio-fs event fd")]
    EventFd(#[source] io::Error),
    /// The worker thread could not be started.
    #[error("cannot start the virtio-fs worker thread")]
    Spawn(#[source] io::Error),
    /// The worker thread could not leave the other threads' file system
    /// attributes (umask, cwd).
    #[error("the virtio-fs worker cannot unshare its file system attributes")]
    Unshare(#[source] nix::Error),
    /// The set-up the VMM asked the worker to run (capabilities, seccomp)
    /// failed.
    #[error("the virtio-fs worker set-up failed")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether `tag` fits the config space and Linux accepts it: 1 to
/// [`TAG_MAX_LEN`] bytes, no NUL (the field's terminator) and no newline
/// (which Linux refuses in a tag).
pub fn validate_tag(tag: &str) -> bool {
    (1..=TAG_MAX_LEN).contains(&tag.len()) && !tag.contains(['\0', '\n'])
}

/// What activation hands the worker.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<VirtioInterrupt>,
    pub(super) queues: [Queue; 2],
    pub(super) evts: [EventFd; 2],
}

/// What the device asks of the worker.
pub(super) enum Command {
    /// Serve these queues (replacing any earlier ones).
    Activate(Box<Active>),
    /// Drop the queues, close every file the guest had open, forget its
    /// inodes, and acknowledge with this number.
    Reset(u64),
}

/// A virtio-fs device whose requests a [`FsWorker`] serves.
pub struct Fs {
    config: [u8; CONFIG_SIZE],
    acked_features: u64,
    activated: bool,
    commands: Sender<Command>,
    /// Written after each command, to wake the worker.
    wake: EventFd,
    resets_done: Receiver<u64>,
    next_reset: u64,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("tag", &self.tag())
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl Fs {
    /// A device with tag `tag` serving `shared_dir`, and the worker that
    /// will serve it once started ([`FsWorker::spawn`]). Nothing is
    /// served, and no thread runs, before that.
    pub fn new(tag: &str, shared_dir: &Path) -> Result<(Self, FsWorker), FsError> {
        if !validate_tag(tag) {
            return Err(FsError::Tag(tag.to_string()));
        }
        let dir_err = |source| FsError::SharedDir {
            path: shared_dir.to_path_buf(),
            source,
        };
        // PassthroughFs opens its root by path with O_NOFOLLOW at every
        // FUSE_INIT: give it an absolute path without symbolic links.
        let root = std::fs::canonicalize(shared_dir).map_err(dir_err)?;
        if !root.is_dir() {
            return Err(dir_err(io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let root_dir = root
            .to_str()
            .ok_or_else(|| dir_err(io::Error::other("the path is not UTF-8")))?
            .to_string();
        let passthrough = PassthroughFs::new(Config {
            root_dir,
            // Import the root at FUSE_INIT (and again after DESTROY).
            do_import: true,
            // Close-to-open consistency: host processes may change the
            // tree too (the runtime writes /etc/hosts and friends).
            cache_policy: CachePolicy::Auto,
            // Writes go through to the host file at once.
            writeback: false,
            // O_PATH fds, not file handles: no CAP_DAC_READ_SEARCH.
            inode_file_handles: false,
            // No extended attributes: Linux then answers EOPNOTSUPP itself.
            xattr: false,
            ..Config::default()
        })
        .map_err(FsError::Passthrough)?;
        let fs = Arc::new(passthrough);

        let mut config = [0u8; CONFIG_SIZE];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_MAX_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());

        let wake = EventFd::new(EFD_NONBLOCK).map_err(FsError::EventFd)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(FsError::EventFd)?;
        let (commands, commands_rx) = mpsc::channel();
        let (resets_done_tx, resets_done) = mpsc::channel();
        let worker = FsWorker {
            server: Server::new(fs.clone()),
            fs,
            commands: commands_rx,
            wake: wake.try_clone().map_err(FsError::EventFd)?,
            resets_done: resets_done_tx,
            stop,
            active: None,
        };
        let device = Self {
            config,
            acked_features: 0,
            activated: false,
            commands,
            wake,
            resets_done,
            next_reset: 0,
        };
        Ok((device, worker))
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        let end = self.config[..TAG_MAX_LEN]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TAG_MAX_LEN);
        std::str::from_utf8(&self.config[..end]).unwrap_or_default()
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the worker has ended"))?;
        self.wake.write(1)
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        // No notification queue, no DAX window, no event index.
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::warn!(
            "virtio-fs: guest wrote {} bytes of read-only config at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let (queues, evts) = ctx.take_queues::<2>()?;
        let active = Active {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            queues,
            evts,
        };
        self.send(Command::Activate(Box::new(active)))
            .map_err(|e| ActivateError::Backend(Box::new(e)))?;
        self.activated = true;
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.activated
    }

    /// A real reset: the worker drops the queues, closes every host file
    /// the guest had open and forgets its inodes (the next FUSE_INIT starts
    /// from the root again). Waits up to [`RESET_TIMEOUT`] for the worker
    /// to finish the request it is on; if it does not, the device cannot
    /// be reset now (the transport sets `DEVICE_NEEDS_RESET`), and the
    /// worker resets when it gets there.
    fn reset(&mut self) -> bool {
        self.acked_features = 0;
        self.activated = false;
        let id = self.next_reset;
        self.next_reset += 1;
        if let Err(e) = self.send(Command::Reset(id)) {
            // No worker: nothing touches the queues any more.
            log::debug!("virtio-fs: reset: {e}");
            return true;
        }
        let deadline = Instant::now() + RESET_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.resets_done.recv_timeout(left) {
                Ok(done) if done == id => return true,
                // The late answer to an earlier reset that timed out.
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "virtio-fs: the worker did not finish its request in time for a reset"
                    );
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
