//! The device and its worker thread through real virtio queues in guest
//! memory, with real FUSE messages, over a temporary shared directory; the
//! test plays the guest driver.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{
    Attr, AttrOut, BatchForgetIn, CreateIn, EntryOut, FallocateIn, FlushIn, ForgetIn, ForgetOne,
    FsOptions, FsyncIn, GetattrIn, InitIn, InitOut, Kstatfs, LinkIn, LseekIn, LseekOut, MkdirIn,
    MknodIn, Opcode, OpenIn, OpenOut, ReadIn, ReleaseIn, RenameIn, SetattrIn, WriteIn, WriteOut,
    ROOT_ID,
};
use vm_memory::ByteValued;

use super::*;
use crate::devices::virtio::fs::testing::*;
use crate::devices::virtio::fs::FsWorkerHandle;
use crate::devices::virtio::test_utils;
use crate::devices::virtio::VIRTIO_MMIO_INT_VRING;

const TAG: &str = "husk";
const HELLO: &[u8] = b"hello from the host\n";

struct Setup {
    dir: tempfile::TempDir,
    dev: Fs,
    _worker: FsWorkerHandle,
}

/// A shared directory with `hello.txt` and `sub/`, a device on it and its
/// running worker (no set-up: no filter, same capabilities).
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), HELLO).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let (dev, worker) = Fs::new(TAG, dir.path()).unwrap();
    let worker = worker.spawn(|| Ok::<(), io::Error>(())).unwrap();
    Setup {
        dir,
        dev,
        _worker: worker,
    }
}

fn init(guest: &mut Guest) -> InitOut {
    let flags = FsOptions::MAX_PAGES | FsOptions::BIG_WRITES | FsOptions::DO_READDIRPLUS;
    let body = InitIn {
        major: 7,
        minor: 38,
        max_readahead: 128 * 1024,
        flags: flags.bits() as u32,
    };
    obj(&guest.call(Opcode::Init, 0, body.as_slice(), 256).unwrap())
}

fn lookup(guest: &mut Guest, parent: u64, file: &str) -> Result<EntryOut, i32> {
    guest
        .call(Opcode::Lookup, parent, &name(file), 256)
        .map(|b| obj(&b))
}

fn getattr(guest: &mut Guest, node: u64) -> Result<Attr, i32> {
    guest
        .call(Opcode::Getattr, node, GetattrIn::default().as_slice(), 256)
        .map(|b| obj::<AttrOut>(&b).attr)
}

fn open(guest: &mut Guest, node: u64, flags: i32) -> Result<u64, i32> {
    let body = OpenIn {
        flags: flags as u32,
        fuse_flags: 0,
    };
    guest
        .call(Opcode::Open, node, body.as_slice(), 64)
        .map(|b| obj::<OpenOut>(&b).fh)
}

fn read_in(fh: u64, offset: u64, size: u32) -> ReadIn {
    ReadIn {
        fh,
        offset,
        size,
        ..ReadIn::default()
    }
}

/// A READ the way Linux sends it: the reply header and the data in
/// separate descriptors.
fn read(guest: &mut Guest, node: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
    let unique = guest.next_unique();
    let request = message(
        Opcode::Read as u32,
        unique,
        node,
        0,
        read_in(fh, offset, size).as_slice(),
    );
    let reply = guest.exchange(REQUEST_QUEUE, &request, &[], &[16, size.max(1)]);
    parse_reply(&reply, unique)
}

fn release(guest: &mut Guest, node: u64, fh: u64) {
    let body = ReleaseIn {
        fh,
        ..ReleaseIn::default()
    };
    guest
        .call(Opcode::Release, node, body.as_slice(), 64)
        .unwrap();
}

/// CREATE: the new entry and its open file handle.
fn create(guest: &mut Guest, parent: u64, file: &str, id: u32) -> Result<(EntryOut, u64), i32> {
    let args = CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0o022,
        fuse_flags: 0,
    };
    let body = body(&[args.as_slice(), &name(file)]);
    let reply = guest.call_as(Opcode::Create, parent, &body, 256, id)?;
    let entry: EntryOut = obj(&reply);
    let open: OpenOut = obj(&reply[std::mem::size_of::<EntryOut>()..]);
    Ok((entry, open.fh))
}

/// A WRITE with its data spread over several descriptors.
fn write(guest: &mut Guest, node: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
    let args = WriteIn {
        fh,
        offset,
        size: data.len() as u32,
        ..WriteIn::default()
    };
    let unique = guest.next_unique();
    let request = message(
        Opcode::Write as u32,
        unique,
        node,
        0,
        &body(&[args.as_slice(), data]),
    );
    let split = [40 + 40, data.len() / 3];
    let reply = guest.exchange(REQUEST_QUEUE, &request, &split, &[64]);
    parse_reply(&reply, unique).map(|b| obj::<WriteOut>(&b).size)
}

/// A guest whose queues the device was activated with, past FUSE_INIT.
fn activated<'a>(s: &mut Setup, mem: &'a GuestMemoryMmap) -> Guest<'a> {
    let mut guest = Guest::new(mem);
    s.dev.activate(guest.ctx()).unwrap();
    init(&mut guest);
    guest
}

#[test]
fn identity_features_and_config_space() {
    let s = setup();
    let dev = &s.dev;
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.queue_max_sizes(), &[128, 1024]);
    assert_eq!(dev.avail_features(), VIRTIO_F_VERSION_1);
    assert_eq!(dev.tag(), TAG);
    // The tag, NUL-padded to 36 bytes, read byte by byte as Linux does.
    let mut tag = [0xffu8; TAG_MAX_LEN];
    for (i, byte) in tag.iter_mut().enumerate() {
        dev.read_config(i as u64, std::slice::from_mut(byte));
    }
    assert_eq!(&tag[..4], b"husk");
    assert!(tag[4..].iter().all(|&b| b == 0));
    // num_request_queues, little-endian u32 after the tag.
    let mut n = [0xffu8; 4];
    dev.read_config(36, &mut n);
    assert_eq!(u32::from_le_bytes(n), 1);
    // Past the end: zeros, even at absurd offsets.
    let mut tail = [0xffu8; 8];
    dev.read_config(38, &mut tail);
    assert_eq!(tail, [0; 8]);
    dev.read_config(u64::MAX, &mut tail);
    assert_eq!(tail, [0; 8]);

    let mut s = s;
    s.dev.write_config(0, b"evil");
    assert_eq!(s.dev.tag(), TAG);
    s.dev.set_acked_features(u64::MAX);
    assert_eq!(s.dev.acked_features, VIRTIO_F_VERSION_1);
    assert!(!s.dev.is_activated());

    // A tag of the full 36 bytes has no terminator in the config space.
    let full = "t".repeat(TAG_MAX_LEN);
    let (dev, _worker) = Fs::new(&full, s.dir.path()).unwrap();
    assert_eq!(dev.tag(), full);
    let mut last = [0u8; 1];
    dev.read_config(35, &mut last);
    assert_eq!(last, *b"t");
}

#[test]
fn creation_checks_the_tag_and_the_shared_dir() {
    let dir = tempfile::tempdir().unwrap();
    for tag in ["", "a\0b", "a\nb", &"x".repeat(TAG_MAX_LEN + 1)] {
        assert!(
            matches!(Fs::new(tag, dir.path()), Err(FsError::Tag(_))),
            "{tag:?}"
        );
    }
    let missing = dir.path().join("missing");
    let err = Fs::new(TAG, &missing).unwrap_err();
    assert!(matches!(err, FsError::SharedDir { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(
        Fs::new(TAG, &file),
        Err(FsError::SharedDir { .. })
    ));
    // A symbolic link to a directory is resolved once, at creation.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    assert!(Fs::new(TAG, &link).is_ok());
}

#[test]
fn activation_checks_the_queue_count() {
    let mut s = setup();
    let mem = guest_memory();
    let guest = Guest::new(&mem);
    let mut ctx = guest.ctx();
    ctx.queues.pop();
    let err = s.dev.activate(ctx).unwrap_err();
    assert!(matches!(
        err,
        ActivateError::QueueCount {
            expected: 2,
            got: 1
        }
    ));
    assert!(!s.dev.is_activated());
}

#[test]
fn init_lookup_getattr_open_read() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.activate(guest.ctx()).unwrap();
    assert!(s.dev.is_activated());

    let umask = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find(|l| l.starts_with("Umask:"))
            .map(str::to_string)
    };
    let before = umask();
    let out = init(&mut guest);
    // FUSE_INIT cleared the worker's umask, not the process's.
    assert_eq!(umask(), before);
    assert_eq!(out.major, 7);
    assert!(out.minor >= 31, "{out:?}");
    // Raised from what PassthroughFs asks for to the server's limit.
    assert_eq!(out.max_pages, 256);
    assert_eq!(out.max_write, 1 << 20);
    assert!(out.flags & FsOptions::MAX_PAGES.bits() as u32 != 0);
    assert!(guest.interrupt.status() & VIRTIO_MMIO_INT_VRING != 0);

    let root = getattr(&mut guest, ROOT_ID).unwrap();
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);
    let entry = lookup(&mut guest, ROOT_ID, "hello.txt").unwrap();
    assert_ne!(entry.nodeid, ROOT_ID);
    assert_eq!(entry.attr.size, HELLO.len() as u64);
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
    let attr = getattr(&mut guest, entry.nodeid).unwrap();
    assert_eq!(attr.ino, entry.attr.ino);
    assert_eq!(attr.size, HELLO.len() as u64);
    assert_eq!(
        lookup(&mut guest, ROOT_ID, "nope").err(),
        Some(libc::ENOENT)
    );

    let fh = open(&mut guest, entry.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(read(&mut guest, entry.nodeid, fh, 0, 4096).unwrap(), HELLO);
    assert_eq!(read(&mut guest, entry.nodeid, fh, 6, 4).unwrap(), b"from");
    assert_eq!(read(&mut guest, entry.nodeid, fh, 1000, 4096).unwrap(), b"");
    release(&mut guest, entry.nodeid, fh);
    // The handle is gone.
    assert_eq!(read(&mut guest, entry.nodeid, fh, 0, 16), Err(libc::EBADF));
}

#[test]
fn large_reads_fill_many_descriptors() {
    let mut s = setup();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(s.dir.path().join("big"), &data).unwrap();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);
    let entry = lookup(&mut guest, ROOT_ID, "big").unwrap();
    let fh = open(&mut guest, entry.nodeid, libc::O_RDONLY).unwrap();
    // 1 MiB in 256 pages, as Linux sends it.
    let unique = guest.next_unique();
    let request = message(
        Opcode::Read as u32,
        unique,
        entry.nodeid,
        0,
        read_in(fh, 0, 1 << 20).as_slice(),
    );
    let mut outs = vec![16u32];
    outs.extend(std::iter::repeat_n(4096u32, 256));
    let reply = guest.exchange(REQUEST_QUEUE, &request, &[], &outs);
    assert!(parse_reply(&reply, unique).unwrap() == data);
}

#[test]
fn create_and_write_reach_the_host() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);

    let (entry, fh) = create(&mut guest, ROOT_ID, "new.txt", 0).unwrap();
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
    let text = b"written by the guest through three descriptors";
    assert_eq!(
        write(&mut guest, entry.nodeid, fh, 0, text),
        Ok(text.len() as u32)
    );
    assert_eq!(write(&mut guest, entry.nodeid, fh, 100, b"!"), Ok(1));
    release(&mut guest, entry.nodeid, fh);
    let host = std::fs::read(s.dir.path().join("new.txt")).unwrap();
    assert_eq!(&host[..text.len()], text);
    assert_eq!(host.len(), 101);
    // The mode the guest asked for, its umask applied by the guest's
    // value, not the VMM's.
    let meta = std::fs::metadata(s.dir.path().join("new.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);

    // The file is visible to a fresh lookup, with the new size.
    let again = lookup(&mut guest, ROOT_ID, "new.txt").unwrap();
    assert_eq!(again.nodeid, entry.nodeid);
    assert_eq!(again.attr.size, 101);

    // MKDIR inside `sub`, then a file in it.
    let sub = lookup(&mut guest, ROOT_ID, "sub").unwrap();
    let mkdir = MkdirIn {
        mode: 0o750,
        umask: 0,
    };
    let made: EntryOut = obj(&guest
        .call(
            Opcode::Mkdir,
            sub.nodeid,
            &body(&[mkdir.as_slice(), &name("deeper")]),
            256,
        )
        .unwrap());
    let (inner, fh) = create(&mut guest, made.nodeid, "f", 0).unwrap();
    write(&mut guest, inner.nodeid, fh, 0, b"deep").unwrap();
    release(&mut guest, inner.nodeid, fh);
    assert_eq!(
        std::fs::read(s.dir.path().join("sub/deeper/f")).unwrap(),
        b"deep"
    );
}

#[test]
fn lookups_stay_inside_the_shared_dir() {
    let mut s = setup();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), s.dir.path().join("escape")).unwrap();
    std::os::unix::fs::symlink("../..", s.dir.path().join("sub/up")).unwrap();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);

    // `.` and `..` are refused everywhere, and so is a path.
    let sub = lookup(&mut guest, ROOT_ID, "sub").unwrap();
    for (parent, file) in [
        (ROOT_ID, ".."),
        (ROOT_ID, "."),
        (sub.nodeid, ".."),
        (sub.nodeid, "."),
    ] {
        assert_eq!(
            lookup(&mut guest, parent, file).err(),
            Some(libc::EINVAL),
            "{file}"
        );
    }
    assert_eq!(
        lookup(&mut guest, ROOT_ID, "sub/up").err(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        lookup(&mut guest, ROOT_ID, "/etc").err(),
        Some(libc::EINVAL)
    );

    // A symbolic link is looked up as itself and never followed on the
    // host: opening it is refused, reading it gives the guest the text.
    let link = lookup(&mut guest, ROOT_ID, "escape").unwrap();
    assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert!(open(&mut guest, link.nodeid, libc::O_RDONLY).is_err());
    let target = guest
        .call(Opcode::Readlink, link.nodeid, &[], 4096)
        .unwrap();
    assert_eq!(target, outside.path().as_os_str().as_encoded_bytes());
    let up = lookup(&mut guest, sub.nodeid, "up").unwrap();
    assert_eq!(up.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        getattr(&mut guest, up.nodeid).unwrap().mode & libc::S_IFMT,
        libc::S_IFLNK
    );
}

#[test]
fn hostile_chains_get_an_error_or_are_dropped() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);
    let q = REQUEST_QUEUE;
    let getattr_req = |guest: &mut Guest| {
        let u = guest.next_unique();
        message(
            Opcode::Getattr as u32,
            u,
            ROOT_ID,
            0,
            GetattrIn::default().as_slice(),
        )
    };

    // A readable descriptor outside guest memory: dropped.
    let reply = guest.alloc(256);
    let head = guest.send(
        q,
        &[
            Desc {
                addr: MEM_SIZE - 8,
                len: 64,
                write: false,
            },
            Desc {
                addr: reply,
                len: 256,
                write: true,
            },
        ],
    );
    assert_eq!(guest.wait_used(q), (head, 0));
    // A writable descriptor at an absurd address: dropped.
    let request = getattr_req(&mut guest);
    let at = guest.alloc(request.len() as u32);
    guest.write(at, &request);
    let head = guest.send(
        q,
        &[
            Desc {
                addr: at,
                len: request.len() as u32,
                write: false,
            },
            Desc {
                addr: u64::MAX - 100,
                len: 256,
                write: true,
            },
        ],
    );
    assert_eq!(guest.wait_used(q), (head, 0));

    // Shorter than a FUSE header: dropped.
    assert_eq!(
        guest.exchange(q, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[], &[256]),
        b""
    );
    // No room for the reply: dropped.
    let request = getattr_req(&mut guest);
    assert_eq!(guest.exchange(q, &request, &[], &[8]), b"");
    let request = getattr_req(&mut guest);
    assert_eq!(guest.exchange(q, &request, &[], &[]), b"");

    // A header claiming more than the 1 MiB limit: an error reply.
    let unique = guest.next_unique();
    let mut request = message(Opcode::Getattr as u32, unique, ROOT_ID, 0, &[0; 16]);
    request[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let reply = guest.exchange(q, &request, &[], &[256]);
    assert_eq!(parse_reply(&reply, unique), Err(libc::ENOMEM));
    // A header claiming less than it holds is served on what is there.
    let unique = guest.next_unique();
    let mut request = message(Opcode::Getattr as u32, unique, ROOT_ID, 0, &[0; 16]);
    request[..4].copy_from_slice(&3u32.to_le_bytes());
    let reply = guest.exchange(q, &request, &[], &[256]);
    assert!(parse_reply(&reply, unique).is_ok());
    // A body cut short: dropped or an error, never a panic.
    let unique = guest.next_unique();
    let request = message(Opcode::Read as u32, unique, ROOT_ID, 0, &[0; 8]);
    let reply = guest.exchange(q, &request, &[], &[256]);
    assert!(reply.is_empty() || parse_reply(&reply, unique).is_err());
    // An unknown opcode.
    let unique = guest.next_unique();
    let request = message(9999, unique, ROOT_ID, 0, &[]);
    let reply = guest.exchange(q, &request, &[], &[256]);
    assert_eq!(parse_reply(&reply, unique), Err(libc::ENOSYS));

    // Lying lengths in the body: a WRITE claiming 4096 bytes it does not
    // carry writes what is there; a READ larger than its buffer fails.
    let (entry, fh) = create(&mut guest, ROOT_ID, "victim", 0).unwrap();
    let args = WriteIn {
        fh,
        size: 4096,
        ..WriteIn::default()
    };
    let unique = guest.next_unique();
    let request = message(
        Opcode::Write as u32,
        unique,
        entry.nodeid,
        0,
        &body(&[args.as_slice(), b"tiny"]),
    );
    let reply = guest.exchange(q, &request, &[], &[64]);
    match parse_reply(&reply, unique) {
        Ok(b) => assert!(obj::<WriteOut>(&b).size <= 4),
        Err(e) => assert!(e > 0),
    }
    assert!(
        std::fs::metadata(s.dir.path().join("victim"))
            .unwrap()
            .len()
            <= 4
    );
    let unique = guest.next_unique();
    let request = message(
        Opcode::Read as u32,
        unique,
        entry.nodeid,
        0,
        read_in(fh, 0, 1 << 20).as_slice(),
    );
    let reply = guest.exchange(q, &request, &[], &[16, 64]);
    assert!(reply.is_empty() || parse_reply(&reply, unique).is_err());
    // A huge size claim on a WRITE.
    let args = WriteIn {
        fh,
        size: u32::MAX,
        offset: u64::MAX - 10,
        ..WriteIn::default()
    };
    let unique = guest.next_unique();
    let request = message(
        Opcode::Write as u32,
        unique,
        entry.nodeid,
        0,
        &body(&[args.as_slice(), b"x"]),
    );
    let reply = guest.exchange(q, &request, &[], &[64]);
    assert!(reply.is_empty() || parse_reply(&reply, unique).is_err());

    // A descriptor loop: the chain ends at the queue size, whatever it
    // holds is served or dropped.
    let request = getattr_req(&mut guest);
    let at = guest.alloc(64);
    guest.write(at, &request);
    guest.store_raw(q, 900, at, request.len() as u32, VRING_DESC_F_NEXT_U16, 900);
    guest.offer(q, 900);
    let (head, _) = guest.wait_used(q);
    assert_eq!(head, 900);
    // A head index past the table: nothing to serve, nothing used, and
    // the queue goes on.
    guest.offer(q, 5000);
    assert!(guest.nothing_used(q));

    // Still serving.
    assert!(getattr(&mut guest, ROOT_ID).is_ok());
}

const VRING_DESC_F_NEXT_U16: u16 = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT as u16;

#[test]
fn garbage_requests_never_bring_the_worker_down() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..400 {
        // Everything but MKNOD (no device nodes in /tmp) and INIT.
        let opcode = match (next() % 52) as u32 {
            8 | 26 => 3,
            op => op,
        };
        let unique = guest.next_unique();
        let len = (next() % 160) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let nodeid = next() % 4;
        let request = message(opcode, unique, nodeid, 0, &junk);
        let split = [(next() % 64) as usize];
        let outs = [16, (next() % 512) as u32];
        let out_n = (next() % 3) as usize;
        let reply = guest.exchange(REQUEST_QUEUE, &request, &split, &outs[..out_n]);
        if reply.len() >= 16 {
            let header: fuse_backend_rs::abi::fuse_abi::OutHeader = obj(&reply);
            assert_eq!(header.unique, unique);
        }
    }
    init(&mut guest);
    assert!(getattr(&mut guest, ROOT_ID).is_ok());
}

#[test]
fn hiprio_forgets_get_no_reply_and_lose_the_inode() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);
    let entry = lookup(&mut guest, ROOT_ID, "hello.txt").unwrap();
    let unique = guest.next_unique();
    let forget = message(
        Opcode::Forget as u32,
        unique,
        entry.nodeid,
        0,
        ForgetIn { nlookup: 1 }.as_slice(),
    );
    let reply = guest.exchange(HIPRIO_QUEUE, &forget, &[], &[]);
    assert!(reply.is_empty());
    assert_eq!(getattr(&mut guest, entry.nodeid).err(), Some(libc::EBADF));
}

#[test]
fn reset_closes_everything_and_the_device_comes_back() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = activated(&mut s, &mem);
    let entry = lookup(&mut guest, ROOT_ID, "hello.txt").unwrap();
    let fh = open(&mut guest, entry.nodeid, libc::O_RDONLY).unwrap();

    assert!(s.dev.reset());
    assert!(!s.dev.is_activated());
    // The old queues are no longer served.
    let request = message(
        Opcode::Getattr as u32,
        99,
        ROOT_ID,
        0,
        GetattrIn::default().as_slice(),
    );
    let at = guest.alloc(256);
    guest.write(at, &request);
    let out = guest.alloc(256);
    guest.send(
        REQUEST_QUEUE,
        &[
            Desc {
                addr: at,
                len: request.len() as u32,
                write: false,
            },
            Desc {
                addr: out,
                len: 256,
                write: true,
            },
        ],
    );
    assert!(guest.nothing_used(REQUEST_QUEUE));

    // The driver starts over with fresh queues: the old inode and handle
    // are gone, the tree is still there.
    let mut guest = activated(&mut s, &mem);
    assert_eq!(read(&mut guest, entry.nodeid, fh, 0, 16), Err(libc::EBADF));
    let entry = lookup(&mut guest, ROOT_ID, "hello.txt").unwrap();
    let fh = open(&mut guest, entry.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(read(&mut guest, entry.nodeid, fh, 0, 64).unwrap(), HELLO);
}

#[test]
fn worker_set_up_errors_come_back_and_stop_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, worker) = Fs::new(TAG, dir.path()).unwrap();
    let err = worker
        .spawn(|| Err(io::Error::other("no seccomp for you")))
        .unwrap_err();
    assert!(matches!(err, FsError::Setup(_)), "{err:?}");

    let (mut dev, worker) = Fs::new(TAG, dir.path()).unwrap();
    let handle = worker.spawn(|| Ok::<(), io::Error>(())).unwrap();
    let started = Instant::now();
    handle.stop();
    assert!(started.elapsed() < Duration::from_secs(1));
    // With the worker gone, activation fails and reset has nothing to wait for.
    let mem = guest_memory();
    let guest = Guest::new(&mem);
    assert!(matches!(
        dev.activate(guest.ctx()),
        Err(ActivateError::Backend(_))
    ));
    assert!(dev.reset());
}

/// Set in the child process of the seccomp test: the shared directory.
const SECCOMP_CHILD_DIR: &str = "HUSK_FS_SECCOMP_CHILD_DIR";

/// Runs every kind of request PassthroughFs serves (as root and as
/// another user), a reset and the stop on a worker that installed the
/// `fs` seccomp filter the way the VMM does. Any system call outside it
/// kills the process, so the work happens in a child process running just
/// this test.
#[test]
fn the_worker_stays_within_the_fs_seccomp_filter() {
    let Some(dir) = test_utils::rerun_in_child(
        "devices::virtio::fs::device::tests::the_worker_stays_within_the_fs_seccomp_filter",
        SECCOMP_CHILD_DIR,
    ) else {
        return;
    };
    let dir = Path::new(&dir);
    std::fs::write(dir.join("hello.txt"), HELLO).unwrap();
    let open_dir = dir.join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (mut dev, worker) = Fs::new(TAG, dir).unwrap();
    let filters = crate::vmm::seccomp::compile_filters().unwrap();
    let filter = filters.fs.clone();
    let handle = worker
        .spawn(move || crate::vmm::seccomp::apply(&filter))
        .unwrap();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    dev.activate(guest.ctx()).unwrap();
    init(&mut guest);

    // Reading.
    let hello = lookup(&mut guest, ROOT_ID, "hello.txt").unwrap();
    getattr(&mut guest, hello.nodeid).unwrap();
    let fh = open(&mut guest, hello.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(read(&mut guest, hello.nodeid, fh, 0, 4096).unwrap(), HELLO);
    let lseek = LseekIn {
        fh,
        offset: 0,
        whence: libc::SEEK_END as u32,
        padding: 0,
    };
    let end: LseekOut = obj(&guest
        .call(Opcode::Lseek, hello.nodeid, lseek.as_slice(), 64)
        .unwrap());
    assert_eq!(end.offset, HELLO.len() as u64);
    let flush = FlushIn {
        fh,
        ..FlushIn::default()
    };
    guest
        .call(Opcode::Flush, hello.nodeid, flush.as_slice(), 64)
        .unwrap();
    release(&mut guest, hello.nodeid, fh);

    // Writing, syncing, attributes.
    let (new, fh) = create(&mut guest, ROOT_ID, "new", 0).unwrap();
    write(&mut guest, new.nodeid, fh, 0, b"data").unwrap();
    let fsync = FsyncIn {
        fh,
        fsync_flags: 0,
        padding: 0,
    };
    guest
        .call(Opcode::Fsync, new.nodeid, fsync.as_slice(), 64)
        .unwrap();
    let fsync = FsyncIn {
        fh,
        fsync_flags: 1,
        padding: 0,
    };
    guest
        .call(Opcode::Fsync, new.nodeid, fsync.as_slice(), 64)
        .unwrap();
    let fallocate = FallocateIn {
        fh,
        offset: 0,
        length: 8192,
        mode: 0,
        padding: 0,
    };
    guest
        .call(Opcode::Fallocate, new.nodeid, fallocate.as_slice(), 64)
        .unwrap();
    let setattrs = [
        SetattrIn {
            valid: 0x1, // mode
            mode: 0o600,
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x1 | 0x40, // mode, through the handle
            fh,
            mode: 0o640,
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x8 | 0x40, // size, through the handle
            fh,
            size: 2,
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x8, // size, by path
            size: 3,
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x10 | 0x20, // atime, mtime
            atime: 1,
            mtime: 2,
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x80 | 0x100, // atime, mtime now
            ..SetattrIn::default()
        },
        SetattrIn {
            valid: 0x2 | 0x4, // uid, gid
            uid: 1000,
            gid: 1000,
            ..SetattrIn::default()
        },
    ];
    for set in setattrs {
        guest
            .call(Opcode::Setattr, new.nodeid, set.as_slice(), 256)
            .unwrap();
    }
    release(&mut guest, new.nodeid, fh);
    let statfs = guest.call(Opcode::Statfs, ROOT_ID, &[], 256).unwrap();
    assert!(obj::<Kstatfs>(&statfs).bsize > 0);
    let _ = guest.call(
        Opcode::Getxattr,
        new.nodeid,
        &body(&[&[0; 8], &name("user.x")]),
        256,
    );
    let _ = guest.call(Opcode::Access, new.nodeid, &[4, 0, 0, 0, 0, 0, 0, 0], 64);

    // Names: directories, links, renames, device-less nodes, removal.
    let mkdir = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let d: EntryOut = obj(&guest
        .call(
            Opcode::Mkdir,
            ROOT_ID,
            &body(&[mkdir.as_slice(), &name("d")]),
            256,
        )
        .unwrap());
    let link = LinkIn {
        oldnodeid: new.nodeid,
    };
    guest
        .call(
            Opcode::Link,
            d.nodeid,
            &body(&[link.as_slice(), &name("hard")]),
            256,
        )
        .unwrap();
    let sym: EntryOut = obj(&guest
        .call(
            Opcode::Symlink,
            d.nodeid,
            &body(&[&name("soft"), &name("../new")]),
            256,
        )
        .unwrap());
    guest.call(Opcode::Readlink, sym.nodeid, &[], 256).unwrap();
    let fifo = MknodIn {
        mode: libc::S_IFIFO | 0o644,
        rdev: 0,
        umask: 0,
        padding: 0,
    };
    guest
        .call(
            Opcode::Mknod,
            d.nodeid,
            &body(&[fifo.as_slice(), &name("fifo")]),
            256,
        )
        .unwrap();
    let rename = RenameIn { newdir: ROOT_ID };
    guest
        .call(
            Opcode::Rename,
            d.nodeid,
            &body(&[rename.as_slice(), &name("hard"), &name("moved")]),
            64,
        )
        .unwrap();
    let opendir = OpenIn::default();
    let dh: OpenOut = obj(&guest
        .call(Opcode::Opendir, d.nodeid, opendir.as_slice(), 64)
        .unwrap());
    for op in [Opcode::Readdir, Opcode::Readdirplus] {
        let entries = guest
            .call(op, d.nodeid, read_in(dh.fh, 0, 4096).as_slice(), 4096 + 16)
            .unwrap();
        assert!(!entries.is_empty());
    }
    let fsyncdir = FsyncIn {
        fh: dh.fh,
        fsync_flags: 0,
        padding: 0,
    };
    guest
        .call(Opcode::Fsyncdir, d.nodeid, fsyncdir.as_slice(), 64)
        .unwrap();
    let releasedir = ReleaseIn {
        fh: dh.fh,
        ..ReleaseIn::default()
    };
    guest
        .call(Opcode::Releasedir, d.nodeid, releasedir.as_slice(), 64)
        .unwrap();
    for file in ["soft", "fifo"] {
        guest
            .call(Opcode::Unlink, d.nodeid, &name(file), 64)
            .unwrap();
    }
    guest.call(Opcode::Rmdir, ROOT_ID, &name("d"), 64).unwrap();
    guest
        .call(Opcode::Unlink, ROOT_ID, &name("moved"), 64)
        .unwrap();

    // On behalf of another guest user: the thread switches credentials.
    let open_entry = lookup(&mut guest, ROOT_ID, "open").unwrap();
    let result = create(&mut guest, open_entry.nodeid, "theirs", 1000);
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        let (theirs, fh) = result.unwrap();
        release(&mut guest, theirs.nodeid, fh);
        let meta = std::fs::metadata(open_dir.join("theirs")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        let mkdir = MkdirIn {
            mode: 0o755,
            umask: 0o022,
        };
        guest
            .call_as(
                Opcode::Mkdir,
                open_entry.nodeid,
                &body(&[mkdir.as_slice(), &name("theirdir")]),
                256,
                1000,
            )
            .unwrap();
    }

    // Forgetting, on the high-priority queue.
    let forget = message(
        Opcode::Forget as u32,
        1,
        hello.nodeid,
        0,
        ForgetIn { nlookup: 1 }.as_slice(),
    );
    guest.exchange(HIPRIO_QUEUE, &forget, &[], &[]);
    let batch = BatchForgetIn { count: 1, dummy: 0 };
    let one = ForgetOne {
        nodeid: new.nodeid,
        nlookup: 1,
    };
    let forget = message(
        Opcode::BatchForget as u32,
        3,
        0,
        0,
        &body(&[batch.as_slice(), one.as_slice()]),
    );
    guest.exchange(HIPRIO_QUEUE, &forget, &[], &[]);

    // DESTROY, a reset, a new session, the stop.
    assert_eq!(
        guest.call(Opcode::Destroy, ROOT_ID, &[], 64),
        Ok(Vec::new())
    );
    // The reset and the new activation on a thread under the vCPU filter,
    // where the transport makes them.
    let mut guest = Guest::new(&mem);
    let ctx = guest.ctx();
    let vcpu = filters.vcpu.clone();
    let dev = std::thread::spawn(move || {
        crate::vmm::seccomp::apply(&vcpu).unwrap();
        assert!(dev.reset());
        dev.activate(ctx).unwrap();
        dev
    })
    .join()
    .unwrap();
    assert!(dev.is_activated());
    init(&mut guest);
    assert!(lookup(&mut guest, ROOT_ID, "hello.txt").is_ok());
    handle.stop();
}
