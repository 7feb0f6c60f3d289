//! Test doubles for the virtio-net tests: a fake tap, the guest driver's
//! side of the two queues, frames, and a real tap in a private network
//! namespace (also used by the VM config tests).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::header::{NetHeader, VNET_HDR_LEN};
use super::tap::{IfReq, TapBackend};
use crate::devices::virtio::test_utils::activate_context;
use crate::devices::virtio::{ActivateContext, GuestMemoryMmap, VirtioInterrupt};

/// Ethertype of the test frames (IEEE 802 local experimental).
pub const TEST_ETHERTYPE: u16 = 0x88b5;
/// Where the queues live in guest memory.
const QUEUE_BASE: [u64; 2] = [0x0, 0x1_0000];
/// Where the driver's buffers start.
const BUFFER_BASE: u64 = 0x10_0000;
/// Size of the test guest's memory.
pub const GUEST_MEM_SIZE: u64 = 0x400_0000;

/// What the fake tap has seen and will do.
#[derive(Debug, Default)]
pub struct FakeTapState {
    /// Frames (header first) waiting for the device to read.
    pub incoming: VecDeque<Vec<u8>>,
    /// Frames (header first) the device wrote.
    pub written: Vec<Vec<u8>>,
    /// Writes fail with `WouldBlock`.
    pub full: bool,
    /// Writes fail with this.
    pub write_error: Option<io::ErrorKind>,
    /// The last `TUNSETVNETHDRSZ`.
    pub vnet_hdr_size: Option<usize>,
    /// Every `TUNSETOFFLOAD`, in order.
    pub offloads: Vec<u32>,
    /// Read calls made.
    pub reads: usize,
}

/// A tap the test holds the other end of. Its fd is an event fd written
/// whenever the test feeds a frame or makes room, so the edge-triggered
/// epoll registration sees the tap become readable or writable.
#[derive(Debug)]
pub struct FakeTap {
    state: Arc<Mutex<FakeTapState>>,
    evt: EventFd,
}

/// The test's end of a [`FakeTap`].
#[derive(Debug, Clone)]
pub struct FakeTapHandle {
    state: Arc<Mutex<FakeTapState>>,
    evt: Arc<EventFd>,
}

impl FakeTap {
    /// A fake tap and the test's handle on it.
    pub fn new() -> (Self, FakeTapHandle) {
        let state = Arc::new(Mutex::new(FakeTapState::default()));
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let handle = FakeTapHandle {
            state: state.clone(),
            evt: Arc::new(evt.try_clone().unwrap()),
        };
        (Self { state, evt }, handle)
    }
}

impl FakeTapHandle {
    /// The fake's state.
    pub fn state(&self) -> MutexGuard<'_, FakeTapState> {
        self.state.lock().unwrap()
    }

    /// Queues a frame (header first) for the device to read.
    pub fn feed(&self, packet: Vec<u8>) {
        self.state().incoming.push_back(packet);
        self.evt.write(1).unwrap();
    }

    /// Frames the device wrote since the last call.
    pub fn take_written(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.state().written)
    }

    /// Makes writes block (`true`) or go through again (`false`, which
    /// also signals the tap writable).
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
        if !full {
            self.evt.write(1).unwrap();
        }
    }
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }
}

impl TapBackend for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.lock().unwrap();
        s.reads += 1;
        let frame = s.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        // Like the kernel's tap: what does not fit is lost, the whole
        // length is returned.
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(frame.len())
    }

    fn write_frame(
        &mut self,
        header: &[u8; VNET_HDR_LEN],
        body: &[VolatileSlice<'_>],
    ) -> io::Result<usize> {
        let mut s = self.state.lock().unwrap();
        if let Some(kind) = s.write_error {
            return Err(kind.into());
        }
        if s.full {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut packet = header.to_vec();
        for slice in body {
            let mut piece = vec![0u8; slice.len()];
            slice.copy_to(&mut piece[..]);
            packet.extend_from_slice(&piece);
        }
        let n = packet.len();
        s.written.push(packet);
        Ok(n)
    }

    fn set_vnet_hdr_size(&mut self, size: usize) -> io::Result<()> {
        self.state.lock().unwrap().vnet_hdr_size = Some(size);
        Ok(())
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.state.lock().unwrap().offloads.push(flags);
        Ok(())
    }
}

/// Guest memory for the tests.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM_SIZE as usize)]).unwrap()
}

/// An Ethernet frame of `len` bytes (at least the 14-byte header) to the
/// broadcast address, with [`TEST_ETHERTYPE`] and a payload pattern
/// seeded by `seed`.
pub fn eth_frame(len: usize, seed: u8) -> Vec<u8> {
    assert!(len >= 14);
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    f
}

/// `frame` behind `header`.
pub fn packet(header: NetHeader, frame: &[u8]) -> Vec<u8> {
    let mut p = header.to_bytes().to_vec();
    p.extend_from_slice(frame);
    p
}

/// One used-ring entry: chain head and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedEntry {
    /// Head of the chain.
    pub head: u16,
    /// Bytes the device wrote.
    pub len: u32,
}

/// The guest driver's side of the receive and transmit queues.
pub struct Driver<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// Receive and transmit queues.
    pub queues: [MockSplitQueue<'a, GuestMemoryMmap>; 2],
    /// The queues' notification events.
    pub evts: [EventFd; 2],
    /// The device's interrupt line.
    pub interrupt: Arc<VirtioInterrupt>,
    sizes: [u16; 2],
    next_desc: [u16; 2],
    seen_used: [u16; 2],
    next_buffer: u64,
}

impl<'a> Driver<'a> {
    /// A driver with both queues of `size` entries.
    pub fn new(mem: &'a GuestMemoryMmap, size: u16) -> Self {
        Self::with_sizes(mem, [size, size])
    }

    /// A driver with queues of the given sizes (receive, transmit).
    pub fn with_sizes(mem: &'a GuestMemoryMmap, sizes: [u16; 2]) -> Self {
        let queue = |i: usize| MockSplitQueue::create(mem, GuestAddress(QUEUE_BASE[i]), sizes[i]);
        Self {
            mem,
            queues: [queue(0), queue(1)],
            evts: std::array::from_fn(|_| EventFd::new(EFD_NONBLOCK).unwrap()),
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            sizes,
            next_desc: [0; 2],
            seen_used: [0; 2],
            next_buffer: BUFFER_BASE,
        }
    }

    /// What the transport hands the device at `DRIVER_OK`.
    pub fn ctx(&self) -> ActivateContext {
        activate_context(self.mem, &self.interrupt, &self.queues, &self.evts)
    }

    /// `len` bytes of fresh guest memory.
    pub fn alloc(&mut self, len: u32) -> u64 {
        let addr = self.next_buffer;
        self.next_buffer = (addr + u64::from(len) + 0xf) & !0xf;
        assert!(
            self.next_buffer <= GUEST_MEM_SIZE,
            "test guest memory used up"
        );
        addr
    }

    /// Stores a chain of descriptors (address, length, device-writable)
    /// on queue `q` and makes it available. Returns its head.
    pub fn add_chain(&mut self, q: usize, descs: &[(u64, u32, bool)]) -> u16 {
        let size = self.sizes[q];
        let indexes: Vec<u16> = (0..descs.len() as u16)
            .map(|i| (self.next_desc[q] + i) % size)
            .collect();
        self.next_desc[q] = (self.next_desc[q] + descs.len() as u16) % size;
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
            let next = indexes.get(i + 1).copied().unwrap_or(0);
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            let desc = Descriptor::new(addr, len, flags as u16, next);
            self.queues[q]
                .desc_table()
                .store(indexes[i], RawDescriptor::from(desc))
                .unwrap();
        }
        self.offer(q, indexes[0]);
        indexes[0]
    }

    /// Makes available a chain of one descriptor whose next is itself.
    pub fn add_looping_chain(&mut self, q: usize, addr: u64, len: u32, write: bool) -> u16 {
        let index = self.next_desc[q];
        self.next_desc[q] = (index + 1) % self.sizes[q];
        let mut flags = VRING_DESC_F_NEXT;
        if write {
            flags |= VRING_DESC_F_WRITE;
        }
        let desc = Descriptor::new(addr, len, flags as u16, index);
        self.queues[q]
            .desc_table()
            .store(index, RawDescriptor::from(desc))
            .unwrap();
        self.offer(q, index);
        index
    }

    /// Puts `head` on queue `q`'s available ring.
    pub fn offer(&self, q: usize, head: u16) {
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % self.sizes[q]))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
    }

    /// Notifies queue `q`.
    pub fn notify(&self, q: usize) {
        self.evts[q].write(1).unwrap();
    }

    /// Offers one receive chain of writable buffers of the given sizes.
    /// Returns its head and the buffers' addresses.
    pub fn offer_rx(&mut self, sizes: &[u32]) -> (u16, Vec<u64>) {
        let addrs: Vec<u64> = sizes.iter().map(|&len| self.alloc(len)).collect();
        let descs: Vec<_> = addrs
            .iter()
            .zip(sizes)
            .map(|(&a, &len)| (a, len, true))
            .collect();
        (self.add_chain(0, &descs), addrs)
    }

    /// Puts one transmit chain on the queue, one readable descriptor per
    /// part, and notifies. Returns its head.
    pub fn send(&mut self, parts: &[&[u8]]) -> u16 {
        let mut descs = Vec::new();
        for part in parts {
            let addr = self.alloc(part.len() as u32);
            self.mem.write_slice(part, GuestAddress(addr)).unwrap();
            descs.push((addr, part.len() as u32, false));
        }
        let head = self.add_chain(1, &descs);
        self.notify(1);
        head
    }

    /// Used entries of queue `q` since the last call.
    pub fn used(&mut self, q: usize) -> Vec<UsedEntry> {
        let used = self.queues[q].used();
        let mut out = Vec::new();
        while self.seen_used[q] != used.idx().load() {
            let elem = used
                .ring()
                .ref_at(usize::from(self.seen_used[q] % self.sizes[q]))
                .unwrap()
                .load();
            out.push(UsedEntry {
                head: elem.id() as u16,
                len: elem.len(),
            });
            self.seen_used[q] = self.seen_used[q].wrapping_add(1);
        }
        out
    }

    /// `len` bytes of guest memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    /// Sets or clears `VRING_AVAIL_F_NO_INTERRUPT` on queue `q`.
    pub fn suppress_interrupts(&self, q: usize, suppress: bool) {
        let flags: u16 = if suppress { 1 } else { 0 };
        self.mem
            .write_obj(flags, self.queues[q].avail_addr())
            .unwrap();
    }
}

/// A real tap in a network namespace of its own, up, with an `AF_PACKET`
/// socket bound to it: what the socket sends, the tap's reader receives;
/// what the tap's writer sends, the socket receives.
#[derive(Debug)]
pub struct NetnsTap {
    /// The tap (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` unless asked otherwise).
    pub tap: OwnedFd,
    /// A non-blocking packet socket on the tap's interface.
    pub packet: OwnedFd,
    /// Room for one received frame, allocated up front (a test under a
    /// seccomp filter cannot grow a thread's heap).
    buf: Vec<u8>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl NetnsTap {
    /// A tap opened with `flags`, in a new network namespace (made by a
    /// thread of its own). `None` when not running as root.
    pub fn create(flags: libc::c_int) -> Option<Self> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: a tap in a private network namespace needs root");
            return None;
        }
        let made = std::thread::spawn(move || Self::create_here(flags))
            .join()
            .unwrap();
        Some(made.unwrap())
    }

    fn create_here(flags: libc::c_int) -> io::Result<Self> {
        const NAME: &str = "husk-tap0";
        // SAFETY: unshare takes no pointers; it moves only this thread.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        // SAFETY: the path is a NUL-terminated literal.
        let fd =
            check(unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let tap = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq::new(NAME, flags as libc::c_short);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, `req`'s size.
        check(unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) })?;

        // SAFETY: plain socket creation.
        let inet = check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `inet` is a new descriptor nothing else owns.
        let inet = unsafe { OwnedFd::from_raw_fd(inet) };
        let mut up = IfReq::new(NAME, 0);
        // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write one
        // `struct ifreq`, `up`'s size.
        unsafe {
            check(libc::ioctl(
                inet.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut up as *mut IfReq,
            ))?;
            up.flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(
                inet.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &mut up as *mut IfReq,
            ))?;
        }

        let name = std::ffi::CString::new(NAME).unwrap();
        // SAFETY: `name` is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation.
        let packet = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(protocol),
            )
        })?;
        // SAFETY: `packet` is a new descriptor nothing else owns.
        let packet = unsafe { OwnedFd::from_raw_fd(packet) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: bind reads one sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                packet.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        Ok(Self {
            tap,
            packet,
            buf: vec![0u8; 70_000],
        })
    }

    /// Sends `frame` out of the tap's interface: the tap's reader gets it.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: send reads `frame.len()` bytes from `frame`.
        let n = unsafe {
            libc::send(
                self.packet.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }

    /// The next test frame ([`TEST_ETHERTYPE`]) the interface received
    /// (written to the tap), if one is there; other frames are skipped.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    self.packet.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return None;
            }
            let frame = &self.buf[..(n as usize).min(self.buf.len())];
            if frame.len() >= 14 && frame[12..14] == TEST_ETHERTYPE.to_be_bytes() {
                return Some(frame.to_vec());
            }
        }
    }
}
