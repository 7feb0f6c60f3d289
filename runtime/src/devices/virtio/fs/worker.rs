//! The virtio-fs worker thread: waits on its queue events and serves each
//! FUSE request to completion with fuse-backend-rs's `Server`.
//!
//! The thread polls four fds: the stop event (teardown), the control event
//! (a [`Command`] from the device: activation, reset), and once active the
//! two queue ioeventfds. A request blocks only this thread; the device
//! event loop and the vCPUs go on. Each chain gets its used-ring entry and,
//! if the driver wants one, an interrupt as soon as it is done.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{FsOptions, InHeader, InitIn, InitOut, Opcode, OutHeader};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{Server, MAX_REQ_PAGES};
use fuse_backend_rs::passthrough::PassthroughFs;
use fuse_backend_rs::transport::{pagesize, Reader, VirtioFsWriter, Writer};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{ByteValued, Bytes};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Active, Command, FsError, HIPRIO_QUEUE, REQUEST_QUEUE};
use crate::devices::virtio::GuestMemoryMmap;

/// The name of the worker thread (what `/proc/<pid>/task/*/comm` shows).
pub const THREAD_NAME: &str = "husk-fs";
/// How long teardown waits for the worker to finish its request.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest name a `LOOKUP` is checked for (`NAME_MAX` and its NUL).
const NAME_PEEK: usize = 256;

/// The file system the worker serves.
type Passthrough = PassthroughFs<()>;

/// The worker of one virtio-fs device, not started yet. Made by
/// [`super::Fs::new`]; [`FsWorker::spawn`] starts it.
pub struct FsWorker {
    pub(super) server: Server<Arc<Passthrough>>,
    pub(super) fs: Arc<Passthrough>,
    pub(super) commands: Receiver<Command>,
    pub(super) wake: EventFd,
    pub(super) resets_done: Sender<u64>,
    pub(super) stop: EventFd,
    pub(super) active: Option<Box<Active>>,
}

impl std::fmt::Debug for FsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsWorker")
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

/// A running worker; dropping it (or [`FsWorkerHandle::stop`]) ends it.
#[derive(Debug)]
pub struct FsWorkerHandle {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl FsWorker {
    /// Starts the worker thread. On it, before the first request is read,
    /// the thread stops sharing its umask and working directory with the
    /// other threads (PassthroughFs clears the umask so that the guest's
    /// modes apply as they are), then runs `setup` (the VMM drops
    /// capabilities and installs the thread's seccomp filter there).
    /// Returns once the set-up is done, with its error if it failed.
    pub fn spawn<F, E>(self, setup: F) -> Result<FsWorkerHandle, FsError>
    where
        F: FnOnce() -> Result<(), E> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stop = self.stop.try_clone().map_err(FsError::EventFd)?;
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let prepared = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(FsError::Unshare)
                    .and_then(|()| setup().map_err(|e| FsError::Setup(e.into())));
                let ok = prepared.is_ok();
                let _ = ready_tx.send(prepared);
                if ok {
                    self.serve();
                }
            })
            .map_err(FsError::Spawn)?;
        let handle = FsWorkerHandle {
            stop,
            thread: Some(thread),
        };
        match ready.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FsError::Setup(
                "the worker thread ended during set-up".into(),
            )),
        }
    }

    /// The thread's loop, until the stop event.
    fn serve(mut self) {
        loop {
            let mut fds = [pollfd(&self.stop), pollfd(&self.wake), IDLE, IDLE];
            let mut watched = 2;
            if let Some(active) = &self.active {
                fds[2] = pollfd(&active.evts[HIPRIO_QUEUE]);
                fds[3] = pollfd(&active.evts[REQUEST_QUEUE]);
                watched = 4;
            }
            // SAFETY: `fds` holds at least `watched` pollfds and lives
            // across the call; their fds stay open (owned by `self`).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), watched as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("virtio-fs: poll: {e}; the worker stops");
                return;
            }
            let ready = |i: usize| i < watched && fds[i].revents != 0;
            if ready(0) {
                log::debug!("virtio-fs: worker stopping");
                return;
            }
            let hiprio = ready(2);
            let request = ready(3);
            if ready(1) {
                let _ = self.wake.read();
                self.run_commands();
            }
            if hiprio {
                self.serve_queue(HIPRIO_QUEUE);
            }
            if request {
                self.serve_queue(REQUEST_QUEUE);
            }
        }
    }

    fn run_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Activate(active) => {
                    self.active = Some(active);
                    // Requests queued before the activation reached us.
                    self.serve_queue(HIPRIO_QUEUE);
                    self.serve_queue(REQUEST_QUEUE);
                }
                Command::Reset(id) => {
                    self.active = None;
                    // Closes every file and inode fd the guest held and
                    // imports the root again for the next FUSE_INIT.
                    self.fs.destroy();
                    let _ = self.resets_done.send(id);
                }
            }
        }
    }

    /// Serves every chain the driver has made available on a queue.
    fn serve_queue(&mut self, index: usize) {
        let server = &self.server;
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let _ = active.evts[index].read();
        let mem = &active.mem;
        let queue = &mut active.queues[index];
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = handle_chain(server, mem, chain);
            if let Err(e) = queue.add_used(mem, head, len) {
                log::warn!("virtio-fs: used ring: {e}");
            }
            // Without VIRTIO_RING_F_EVENT_IDX this is the driver's
            // NO_INTERRUPT flag.
            if queue.needs_notification(mem).unwrap_or(true) {
                if let Err(e) = active.interrupt.signal_used_queue() {
                    log::warn!("virtio-fs: cannot raise the interrupt: {e}");
                }
            }
        }
    }
}

/// An unused slot of the poll array.
const IDLE: libc::pollfd = libc::pollfd {
    fd: -1,
    events: 0,
    revents: 0,
};

fn pollfd(evt: &EventFd) -> libc::pollfd {
    use std::os::fd::AsRawFd;
    libc::pollfd {
        fd: evt.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// What the worker needs to know of a request before the server sees it.
struct Peek {
    opcode: u32,
    unique: u64,
    /// A `LOOKUP` of `.` or `..`.
    dot_lookup: bool,
    /// The flags a `FUSE_INIT` offers.
    init_flags: u32,
}

fn peek(reader: &Reader<'_>) -> Option<Peek> {
    let mut peek = reader.clone();
    let header: InHeader = peek.read_obj().ok()?;
    let mut out = Peek {
        opcode: header.opcode,
        unique: header.unique,
        dot_lookup: false,
        init_flags: 0,
    };
    if header.opcode == Opcode::Lookup as u32 {
        let mut name = [0u8; NAME_PEEK];
        let len = peek.available_bytes().min(NAME_PEEK);
        io::Read::read_exact(&mut peek, &mut name[..len]).ok()?;
        let name = name[..len].split(|&b| b == 0).next().unwrap_or_default();
        out.dot_lookup = matches!(name, b"." | b"..");
    } else if header.opcode == Opcode::Init as u32 {
        out.init_flags = peek.read_obj::<InitIn>().map_or(0, |init| init.flags);
    }
    Some(out)
}

/// Serves one request chain; returns the bytes written to it (0 when the
/// chain is unusable: nothing was written then).
fn handle_chain(
    server: &Server<Arc<Passthrough>>,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            log::debug!("virtio-fs: bad request descriptors: {e}");
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain.clone()) {
        Ok(w) => w,
        Err(e) => {
            log::debug!("virtio-fs: bad reply descriptors: {e}");
            return 0;
        }
    };
    let room = writer.available_bytes();
    let peeked = peek(&reader);
    if let Some(p) = peeked.as_ref().filter(|p| p.dot_lookup) {
        return reply_error(writer, p.unique, libc::EINVAL);
    }
    let len = match server.handle_message(reader, Writer::from(writer), None, None) {
        Ok(len) => len,
        Err(e) => {
            log::debug!("virtio-fs: request dropped: {e}");
            return 0;
        }
    };
    match peeked {
        Some(p) if p.opcode == Opcode::Init as u32 => {
            raise_init_sizes(mem, chain, len, p.init_flags);
        }
        // The server writes DESTROY's reply header but reports 0 bytes.
        Some(p) if p.opcode == Opcode::Destroy as u32 && len == 0 && room >= OUT_HEADER_LEN => {
            return OUT_HEADER_LEN as u32;
        }
        _ => {}
    }
    u32::try_from(len).unwrap_or(0)
}

const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();
/// A full `FUSE_INIT` reply (protocol 7.23 and later).
const INIT_REPLY_LEN: usize = OUT_HEADER_LEN + std::mem::size_of::<InitOut>();

/// PassthroughFs on its own (without fuse-backend-rs's `Vfs`) does not ask
/// for `MAX_PAGES` or `BIG_WRITES`, so the server answers `FUSE_INIT` with
/// 4 KiB writes and Linux's default 128 KiB requests. The server takes
/// requests up to its `MAX_BUFFER_SIZE` (1 MiB of data) either way: raise
/// the sizes in the reply to that, for the flags the driver offered.
fn raise_init_sizes(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    len: usize,
    offered: u32,
) {
    if len != INIT_REPLY_LEN {
        // An error, or an old protocol's short reply.
        return;
    }
    let mut reply = [0u8; INIT_REPLY_LEN];
    let mut at = 0;
    for desc in chain.clone().writable() {
        let n = (desc.len() as usize).min(INIT_REPLY_LEN - at);
        if mem.read_slice(&mut reply[at..at + n], desc.addr()).is_err() {
            return;
        }
        at += n;
        if at == INIT_REPLY_LEN {
            break;
        }
    }
    // Copied out and back: the byte array has no alignment to speak of.
    let mut out = InitOut::default();
    out.as_mut_slice().copy_from_slice(&reply[OUT_HEADER_LEN..]);
    let offered = FsOptions::from_bits_truncate(u64::from(offered));
    let max_write = u32::from(MAX_REQ_PAGES) * pagesize() as u32;
    if offered.contains(FsOptions::MAX_PAGES) {
        out.flags |= FsOptions::MAX_PAGES.bits() as u32;
        out.max_pages = MAX_REQ_PAGES;
        out.max_write = max_write;
    }
    if offered.contains(FsOptions::BIG_WRITES) {
        out.flags |= FsOptions::BIG_WRITES.bits() as u32;
        out.max_write = max_write;
    }
    reply[OUT_HEADER_LEN..].copy_from_slice(out.as_slice());
    let result = VirtioFsWriter::new(mem, chain)
        .map_err(io::Error::other)
        .and_then(|mut w| w.write_all(&reply));
    if let Err(e) = result {
        log::debug!("virtio-fs: cannot rewrite the INIT reply: {e}");
    }
}

/// Writes a reply that carries only an error; returns its length, or 0 if
/// the chain has no room for it.
fn reply_error(mut writer: VirtioFsWriter<'_>, unique: u64, errno: i32) -> u32 {
    let header = OutHeader {
        len: std::mem::size_of::<OutHeader>() as u32,
        error: -errno,
        unique,
    };
    match writer.write_all(header.as_slice()) {
        Ok(()) => header.len,
        Err(e) => {
            log::debug!("virtio-fs: no room for an error reply: {e}");
            0
        }
    }
}

impl FsWorkerHandle {
    /// Stops the worker: it finishes the request it is on and ends. Waits
    /// at most [`STOP_TIMEOUT`] (a host file system can hang); a worker
    /// still busy after that is left to the process's exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.stop.write(1) {
            log::warn!("virtio-fs: cannot signal the worker to stop: {e}");
            return;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !thread.is_finished() {
            log::warn!("virtio-fs: the worker is still busy; not waiting for it");
        } else if thread.join().is_err() {
            log::error!("virtio-fs: the worker panicked");
        }
    }
}

impl Drop for FsWorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
