//! Test helpers: the guest driver's side of the two queues, and FUSE
//! messages built from fuse-backend-rs's ABI structs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{HIPRIO_QUEUE, QUEUE_SIZES, REQUEST_QUEUE};
use crate::devices::virtio::{ActivateContext, GuestMemoryMmap, VirtioInterrupt};

/// Guest memory of the tests.
pub const MEM_SIZE: u64 = 0x400_0000;
/// Where request and reply buffers go.
const BUF_START: u64 = 0x10_0000;
/// How long a test waits for the worker to use a chain.
const WAIT: Duration = Duration::from_secs(10);

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// One descriptor of a chain a test builds: where, how long, and whether
/// the device writes it.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// The guest driver's side of the hiprio and request queues.
pub struct Guest<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub queues: [MockSplitQueue<'a, GuestMemoryMmap>; 2],
    pub evts: [EventFd; 2],
    pub interrupt: Arc<VirtioInterrupt>,
    next_desc: [u16; 2],
    seen: [u16; 2],
    next_buf: u64,
    unique: u64,
}

impl<'a> Guest<'a> {
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        let queue = |i: usize| {
            MockSplitQueue::create(mem, GuestAddress(i as u64 * 0x4_0000), QUEUE_SIZES[i])
        };
        Self {
            mem,
            queues: [queue(HIPRIO_QUEUE), queue(REQUEST_QUEUE)],
            evts: std::array::from_fn(|_| EventFd::new(EFD_NONBLOCK).unwrap()),
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            next_desc: [0; 2],
            seen: [0; 2],
            next_buf: BUF_START,
            unique: 0,
        }
    }

    pub fn ctx(&self) -> ActivateContext {
        crate::devices::virtio::test_utils::activate_context(
            self.mem,
            &self.interrupt,
            &self.queues,
            &self.evts,
        )
    }

    /// Room for `len` bytes in guest memory (requests run one at a time,
    /// so the space is reused from the start when it runs out).
    pub fn alloc(&mut self, len: u32) -> u64 {
        let len = u64::from(len.max(1)).next_multiple_of(64);
        if self.next_buf + len > MEM_SIZE {
            self.next_buf = BUF_START;
        }
        let addr = self.next_buf;
        self.next_buf += len;
        addr
    }

    /// Puts raw descriptors (flags and `next` as given) in the table.
    pub fn store_raw(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let desc = Descriptor::new(addr, len, flags, next);
        self.queues[q]
            .desc_table()
            .store(index, RawDescriptor::from(desc))
            .unwrap();
    }

    /// Makes the chain starting at `head` available and notifies.
    pub fn offer(&self, q: usize, head: u16) {
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % QUEUE_SIZES[q]))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
        self.evts[q].write(1).unwrap();
    }

    /// Builds a chain of `descs` and offers it; returns its head.
    pub fn send(&mut self, q: usize, descs: &[Desc]) -> u16 {
        let size = QUEUE_SIZES[q];
        let head = self.next_desc[q];
        for (i, d) in descs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let mut flags = if d.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let last = i + 1 == descs.len();
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.store_raw(q, index, d.addr, d.len, flags, (index + 1) % size);
        }
        self.next_desc[q] = (head + descs.len() as u16) % size;
        self.offer(q, head);
        head
    }

    /// Waits for the next used element of a queue: (head, length).
    pub fn wait_used(&mut self, q: usize) -> (u16, u32) {
        let used = self.queues[q].used();
        let started = Instant::now();
        while used.idx().load() == self.seen[q] {
            assert!(started.elapsed() < WAIT, "queue {q}: no used buffer");
            std::thread::sleep(Duration::from_millis(1));
        }
        let elem = used
            .ring()
            .ref_at(usize::from(self.seen[q] % QUEUE_SIZES[q]))
            .unwrap()
            .load();
        self.seen[q] = self.seen[q].wrapping_add(1);
        (elem.id() as u16, elem.len())
    }

    /// Whether the device has used nothing more on a queue (after a grace
    /// period).
    pub fn nothing_used(&self, q: usize) -> bool {
        std::thread::sleep(Duration::from_millis(50));
        self.queues[q].used().idx().load() == self.seen[q]
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    pub fn next_unique(&mut self) -> u64 {
        self.unique += 2;
        self.unique
    }

    /// Sends `request` on queue `q` with its readable bytes in one
    /// descriptor per element of `in_split` (lengths; the rest in a last
    /// one) and `out_lens` writable descriptors, and waits for the reply.
    /// Returns the bytes the device wrote, read back across the writable
    /// descriptors.
    pub fn exchange(
        &mut self,
        q: usize,
        request: &[u8],
        in_split: &[usize],
        out_lens: &[u32],
    ) -> Vec<u8> {
        let mut descs = Vec::new();
        let mut rest = request;
        for &n in in_split {
            let (part, tail) = rest.split_at(n.min(rest.len()));
            descs.push(self.readable(part));
            rest = tail;
        }
        if !rest.is_empty() || descs.is_empty() {
            descs.push(self.readable(rest));
        }
        let outs: Vec<Desc> = out_lens
            .iter()
            .map(|&len| Desc {
                addr: self.alloc(len),
                len,
                write: true,
            })
            .collect();
        descs.extend(&outs);
        let head = self.send(q, &descs);
        let (used_head, used_len) = self.wait_used(q);
        assert_eq!(used_head, head);
        let mut reply = Vec::new();
        let mut left = used_len as usize;
        for d in outs {
            let n = left.min(d.len as usize);
            reply.extend(self.read(d.addr, n));
            left -= n;
        }
        assert_eq!(left, 0, "used length beyond the writable descriptors");
        reply
    }

    fn readable(&mut self, bytes: &[u8]) -> Desc {
        let addr = self.alloc(bytes.len() as u32);
        self.write(addr, bytes);
        Desc {
            addr,
            len: bytes.len() as u32,
            write: false,
        }
    }

    /// A FUSE call on the request queue with a single reply buffer of
    /// `out_len` bytes: the reply body, or the errno the server answered.
    pub fn call(
        &mut self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
        out_len: u32,
    ) -> Result<Vec<u8>, i32> {
        self.call_as(opcode, nodeid, body, out_len, 0)
    }

    /// [`Guest::call`] on behalf of guest user and group `id`.
    pub fn call_as(
        &mut self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
        out_len: u32,
        id: u32,
    ) -> Result<Vec<u8>, i32> {
        let unique = self.next_unique();
        let request = message(opcode as u32, unique, nodeid, id, body);
        let reply = self.exchange(REQUEST_QUEUE, &request, &[], &[out_len]);
        parse_reply(&reply, unique)
    }
}

/// A FUSE request: the header (with the true length) and the body.
pub fn message(opcode: u32, unique: u64, nodeid: u64, id: u32, body: &[u8]) -> Vec<u8> {
    let header = InHeader {
        len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid: id,
        gid: id,
        pid: 1,
        padding: 0,
    };
    [header.as_slice(), body].concat()
}

/// Checks a reply's header and returns its body, or its errno.
pub fn parse_reply(reply: &[u8], unique: u64) -> Result<Vec<u8>, i32> {
    let size = std::mem::size_of::<OutHeader>();
    assert!(reply.len() >= size, "short reply: {reply:?}");
    let header: OutHeader = obj(reply);
    assert_eq!(header.unique, unique);
    assert_eq!(
        header.len as usize,
        reply.len(),
        "header length vs used length"
    );
    if header.error != 0 {
        assert!(header.error < 0);
        return Err(-header.error);
    }
    Ok(reply[size..].to_vec())
}

/// A body of plain structs and bytes.
pub fn body(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A NUL-terminated name.
pub fn name(s: &str) -> Vec<u8> {
    [s.as_bytes(), b"\0"].concat()
}

/// Reads a `T` from the front of `bytes`.
pub fn obj<T: ByteValued + Default>(bytes: &[u8]) -> T {
    let size = std::mem::size_of::<T>();
    assert!(bytes.len() >= size, "{} bytes, want {size}", bytes.len());
    let mut out = T::default();
    out.as_mut_slice().copy_from_slice(&bytes[..size]);
    out
}
