//! virtio-fs served in-process: a FUSE passthrough of one host directory.
//!
//! The guest sees a virtio file system device (id 26) with a tag it mounts
//! (`mount -t virtiofs TAG /mnt`, or `root=TAG rootfstype=virtiofs`). The
//! FUSE requests on its queues are served by fuse-backend-rs's
//! [`Server`](fuse_backend_rs::api::server::Server) over a
//! [`PassthroughFs`](fuse_backend_rs::passthrough::PassthroughFs) rooted
//! at the shared directory.
//!
//! Two halves, so that a slow host file system never stalls the VMM's
//! event loop or a vCPU:
//!
//! * [`device`]: the virtio device the transport drives on a vCPU thread
//!   (features, config space, activation, reset). It only hands the queues
//!   over to the worker and waits for a reset to be acknowledged.
//! * [`worker`]: the worker thread, created by [`Fs::new`] and started by
//!   [`FsWorker::spawn`] once the VM is built. It waits on the two queue
//!   events itself (plus a control event and a stop event), runs each
//!   request to completion, and raises the interrupt. It has its own
//!   seccomp role and its own capabilities, applied by the set-up closure
//!   the VMM gives `spawn` before the first request is read.
//!
//! # Staying inside the shared directory
//!
//! PassthroughFs holds an `O_PATH` file descriptor per inode the guest
//! looked up and resolves every name with `openat(parent_fd, name,
//! O_NOFOLLOW)`, one component at a time; names with `/` are refused, so
//! the host never walks a guest path. Symbolic links are never followed on
//! the host: a link is looked up as the link itself, and `OPEN` of
//! anything but a regular file or a directory is refused, so a link's
//! target is only ever resolved by the guest kernel, in the guest.
//! PassthroughFs maps `..` of the root to the root itself, and otherwise
//! lets `LOOKUP` of `.` and `..` through (for NFS export). The worker
//! refuses both names in every `LOOKUP` before PassthroughFs sees them
//! (Linux sends them only with export support, which is not offered), so
//! a directory a host process moved out of the shared tree cannot be used
//! to climb further. Files are reopened through `/proc/self/fd`, which
//! needs `/proc` in the VMM's mount namespace.
//!
//! # Bounds against a hostile guest
//!
//! Every descriptor is checked against guest memory before use; a chain
//! that does not fit, does not hold a FUSE header, or has no room for the
//! reply is returned to the guest with nothing written (used length 0).
//! Requests longer than fuse-backend-rs's 1 MiB limit are answered with
//! `ENOMEM`. The guest can hold at most one host file descriptor per inode
//! and per open file, bounded by the VMM's `RLIMIT_NOFILE`.

mod device;
mod worker;

pub use device::{validate_tag, Fs, FsError, QUEUE_SIZES, TAG_MAX_LEN};
pub use worker::{FsWorker, FsWorkerHandle};

#[cfg(test)]
mod testing;
