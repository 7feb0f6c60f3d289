//! The device through real virtio queues in guest memory, the real event
//! loop and real Unix sockets; the test plays the guest driver.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

use super::*;
use crate::devices::virtio::test_utils;
use crate::devices::virtio::vsock::connection::TX_BUF_SIZE;
use crate::devices::virtio::vsock::muxer::FIRST_LOCAL_PORT;
use crate::devices::virtio::vsock::packet::{op, shutdown, TYPE_STREAM};
use crate::devices::virtio::vsock::testing::guest_hdr as hdr;
use crate::devices::virtio::VIRTIO_MMIO_INT_VRING;

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 256;
const SLOTS: u16 = 64;
const RX_BASE: u64 = 0x10_0000;
const RX_STRIDE: u64 = 0x2000;
const RX_DATA: u32 = 4096;
const TX_BASE: u64 = 0x40_0000;
const TX_STRIDE: u64 = 0x1_1000;
const DATA_OFFSET: u64 = 0x100;

type Em = EventManager<Arc<Mutex<Vsock>>>;

/// The guest driver's side of the three queues.
struct Guest<'a> {
    mem: &'a GuestMemoryMmap,
    queues: [MockSplitQueue<'a, GuestMemoryMmap>; 3],
    evts: [EventFd; 3],
    interrupt: Arc<VirtioInterrupt>,
    rx_offered: u16,
    rx_seen: u16,
    tx_sent: u16,
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let queue = |i: u64| MockSplitQueue::create(mem, GuestAddress(i * 0x1_0000), QSIZE);
        Self {
            mem,
            queues: [queue(0), queue(1), queue(2)],
            evts: std::array::from_fn(|_| EventFd::new(EFD_NONBLOCK).unwrap()),
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            rx_offered: 0,
            rx_seen: 0,
            tx_sent: 0,
        }
    }

    fn ctx(&self) -> ActivateContext {
        crate::devices::virtio::test_utils::activate_context(
            self.mem,
            &self.interrupt,
            &self.queues,
            &self.evts,
        )
    }

    fn offer(&self, q: usize, head: u16) {
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % QSIZE))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
    }

    fn store(&self, q: usize, index: u16, addr: u64, len: u32, flags: u32, next: u16) {
        let desc = Descriptor::new(addr, len, flags as u16, next);
        self.queues[q]
            .desc_table()
            .store(index, RawDescriptor::from(desc))
            .unwrap();
    }

    /// Gives the device `n` rx buffers (header and data descriptors).
    fn offer_rx(&mut self, n: u16) {
        for _ in 0..n {
            let slot = self.rx_offered % SLOTS;
            let base = RX_BASE + u64::from(slot) * RX_STRIDE;
            let head = 2 * slot;
            let flags = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT;
            self.store(RXQ, head, base, HEADER_SIZE as u32, flags, head + 1);
            self.store(
                RXQ,
                head + 1,
                base + DATA_OFFSET,
                RX_DATA,
                VRING_DESC_F_WRITE,
                0,
            );
            self.offer(RXQ, head);
            self.rx_offered += 1;
        }
        self.evts[RXQ].write(1).unwrap();
    }

    /// Puts a packet on the tx queue and notifies it.
    fn send(&mut self, hdr: Header, data: &[u8]) {
        let slot = self.tx_sent % SLOTS;
        let base = TX_BASE + u64::from(slot) * TX_STRIDE;
        let head = 2 * slot;
        let hdr = Header {
            len: data.len() as u32,
            ..hdr
        };
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(base))
            .unwrap();
        if data.is_empty() {
            self.store(TXQ, head, base, HEADER_SIZE as u32, 0, 0);
        } else {
            self.mem
                .write_slice(data, GuestAddress(base + DATA_OFFSET))
                .unwrap();
            self.store(
                TXQ,
                head,
                base,
                HEADER_SIZE as u32,
                VRING_DESC_F_NEXT,
                head + 1,
            );
            self.store(TXQ, head + 1, base + DATA_OFFSET, data.len() as u32, 0, 0);
        }
        self.offer(TXQ, head);
        self.tx_sent += 1;
        self.evts[TXQ].write(1).unwrap();
    }

    fn send_op(&mut self, op: u16, src: u32, dst: u32) {
        self.send(hdr(op, src, dst), &[]);
    }

    /// Packets the device has put in rx buffers since the last call.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.queues[RXQ].used();
        let mut out = Vec::new();
        while self.rx_seen != used.idx().load() {
            let elem = used
                .ring()
                .ref_at(usize::from(self.rx_seen % QSIZE))
                .unwrap()
                .load();
            let slot = u64::from(elem.id() / 2);
            let base = RX_BASE + slot * RX_STRIDE;
            let mut raw = [0u8; HEADER_SIZE];
            self.mem.read_slice(&mut raw, GuestAddress(base)).unwrap();
            let hdr = Header::from_bytes(&raw);
            let len = elem.len() as usize - HEADER_SIZE;
            assert_eq!(len, hdr.len as usize);
            let mut data = vec![0u8; len];
            self.mem
                .read_slice(&mut data, GuestAddress(base + DATA_OFFSET))
                .unwrap();
            out.push((hdr, data));
            self.rx_seen += 1;
        }
        out
    }

    fn tx_used(&self) -> u16 {
        self.queues[TXQ].used().idx().load()
    }
}

fn pump(em: &mut Em) {
    for _ in 0..4 {
        em.run_with_timeout(5).unwrap();
    }
}

/// Runs the loop until the guest has received `n` packets.
fn pump_recv(em: &mut Em, guest: &mut Guest, n: usize) -> Vec<(Header, Vec<u8>)> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(guest.recv());
        if got.len() >= n {
            return got;
        }
        em.run_with_timeout(10).unwrap();
    }
    panic!("guest got {got:?}, wanted {n} packets");
}

/// Runs the loop until the host stream has `n` bytes (or EOF).
fn pump_read(em: &mut Em, stream: &mut UnixStream, n: usize) -> (Vec<u8>, bool) {
    stream.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    for _ in 0..200 {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            // Closed with bytes we never read: the kernel says so.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, true),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got.len() >= n {
                    return (got, false);
                }
                em.run_with_timeout(10).unwrap();
            }
            Err(e) => panic!("host read: {e}"),
        }
    }
    panic!("host got {got:?}, wanted {n} bytes");
}

struct Setup {
    _dir: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
    dev: Arc<Mutex<Vsock>>,
    em: Em,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let dev = Arc::new(Mutex::new(Vsock::new(GUEST_CID, path.clone()).unwrap()));
    let mut em = Em::new().unwrap();
    em.add_subscriber(dev.clone());
    Setup {
        _dir: Some(dir),
        path,
        dev,
        em,
    }
}

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

/// The host connects to guest port `port`; the guest accepts. Returns the
/// host stream and its host port.
fn host_connect(s: &mut Setup, guest: &mut Guest, port: u32) -> (UnixStream, u32) {
    let mut host = UnixStream::connect(&s.path).unwrap();
    host.write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let got = pump_recv(&mut s.em, guest, 1);
    let req = got[0].0;
    assert_eq!(req.op, op::REQUEST);
    guest.send_op(op::RESPONSE, port, req.src_port);
    let (ok, eof) = pump_read(&mut s.em, &mut host, 1);
    assert!(!eof);
    assert_eq!(ok, format!("OK {}\n", req.src_port).as_bytes());
    (host, req.src_port)
}

#[test]
fn identity_features_and_config_space() {
    let s = setup();
    let dev = s.dev.lock().unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(
        dev.avail_features(),
        VIRTIO_F_VERSION_1 | VIRTIO_VSOCK_F_STREAM
    );
    let mut cid = [0xffu8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    // The driver reads it as two 32-bit halves.
    let (mut lo, mut hi) = ([0u8; 4], [0xffu8; 4]);
    dev.read_config(0, &mut lo);
    dev.read_config(4, &mut hi);
    assert_eq!((u32::from_le_bytes(lo), u32::from_le_bytes(hi)), (3, 0));
    // Past the end: zeros, even at absurd offsets.
    let mut tail = [0xffu8; 4];
    dev.read_config(6, &mut tail);
    assert_eq!(tail, [0, 0, 0, 0]);
    dev.read_config(u64::MAX, &mut tail);
    assert_eq!(tail, [0; 4]);
    drop(dev);
    // Read-only.
    let mut dev = s.dev.lock().unwrap();
    dev.write_config(0, &[9; 8]);
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    dev.set_acked_features(u64::MAX);
    assert_eq!(dev.acked_features, dev.avail_features());
    assert!(!dev.is_activated());
}

#[test]
fn creation_checks_and_the_socket_is_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(
            matches!(Vsock::new(cid, path.clone()), Err(VsockError::GuestCid(_))),
            "{cid}"
        );
    }
    let dev = Vsock::new(GUEST_CID, path.clone()).unwrap();
    assert!(path.exists());
    assert!(matches!(
        Vsock::new(4, path.clone()),
        Err(VsockError::Bind { .. })
    ));
    drop(dev);
    assert!(!path.exists());
    let missing = dir.path().join("no/such/dir/v.sock");
    assert!(matches!(
        Vsock::new(GUEST_CID, missing),
        Err(VsockError::Bind { .. })
    ));
}

#[test]
fn activation_checks_the_queue_count() {
    let s = setup();
    let mem = guest_memory();
    let guest = Guest::new(&mem);
    let mut ctx = guest.ctx();
    ctx.queues.pop();
    let err = s.dev.lock().unwrap().activate(ctx).unwrap_err();
    assert!(matches!(
        err,
        ActivateError::QueueCount {
            expected: 3,
            got: 2
        }
    ));
    assert!(!s.dev.lock().unwrap().is_activated());
}

#[test]
fn host_initiated_connection_end_to_end() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);

    // The host connects before the guest driver is up: it waits.
    let mut host = UnixStream::connect(&s.path).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    pump(&mut s.em);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    pump(&mut s.em);
    assert!(guest.recv().is_empty(), "no rx buffers yet");

    guest.offer_rx(16);
    let got = pump_recv(&mut s.em, &mut guest, 1);
    let req = got[0].0;
    assert_eq!(
        (
            req.op,
            req.src_cid,
            req.dst_cid,
            req.src_port,
            req.dst_port,
            req.type_
        ),
        (
            op::REQUEST,
            HOST_CID,
            GUEST_CID,
            FIRST_LOCAL_PORT,
            1234,
            TYPE_STREAM
        )
    );
    assert_eq!(req.buf_alloc, TX_BUF_SIZE);
    assert_ne!(guest.interrupt.status() & VIRTIO_MMIO_INT_VRING, 0);
    assert!(guest.interrupt.irq_evt().read().unwrap() >= 1);

    guest.send_op(op::RESPONSE, 1234, FIRST_LOCAL_PORT);
    // Exactly the OK line, as the host reads it before handing the socket
    // to its RPC client.
    let (ok, _) = pump_read(&mut s.em, &mut host, 14);
    assert_eq!(ok, b"OK 1073741824\n");
    assert_eq!(guest.tx_used(), 1);

    host.write_all(b"ping").unwrap();
    let got = pump_recv(&mut s.em, &mut guest, 1);
    let (pkt, data) = &got[0];
    assert_eq!(
        (pkt.op, pkt.src_port, pkt.dst_port, data.as_slice()),
        (op::RW, FIRST_LOCAL_PORT, 1234, &b"ping"[..])
    );

    guest.send(hdr(op::RW, 1234, FIRST_LOCAL_PORT), b"pong");
    let (data, _) = pump_read(&mut s.em, &mut host, 4);
    assert_eq!(data, b"pong");

    // A big write from the host arrives whole, in rx-buffer-sized pieces.
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    host.set_nonblocking(false).unwrap();
    host.write_all(&big).unwrap();
    let mut received = Vec::new();
    while received.len() < big.len() {
        for (pkt, data) in pump_recv(&mut s.em, &mut guest, 1) {
            assert_eq!(pkt.op, op::RW);
            assert!(data.len() <= RX_DATA as usize);
            received.extend(data);
        }
        guest.offer_rx(1);
    }
    assert_eq!(received, big);

    // Half-close from the host: SHUTDOWN(SEND) to the guest.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (got[0].0.op, got[0].0.flags),
        (op::SHUTDOWN, shutdown::SEND)
    );
    // The guest can still send, then closes: the host reads the data and
    // EOF, the guest gets its RST.
    guest.send(hdr(op::RW, 1234, FIRST_LOCAL_PORT), b"bye");
    let close = Header {
        flags: shutdown::BOTH,
        ..hdr(op::SHUTDOWN, 1234, FIRST_LOCAL_PORT)
    };
    guest.send(close, &[]);
    let (data, eof) = pump_read(&mut s.em, &mut host, usize::MAX);
    assert_eq!((data.as_slice(), eof), (&b"bye"[..], true));
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(s.dev.lock().unwrap().muxer.len(), 0);
}

#[test]
fn refused_and_malformed_host_connections_are_closed() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(16);

    // Nobody listens on the guest port.
    let mut host = UnixStream::connect(&s.path).unwrap();
    host.write_all(b"CONNECT 99\n").unwrap();
    let req = pump_recv(&mut s.em, &mut guest, 1)[0].0;
    guest.send_op(op::RST, 99, req.src_port);
    assert_eq!(
        pump_read(&mut s.em, &mut host, usize::MAX),
        (Vec::new(), true)
    );

    // Not a CONNECT line; too long a line; EOF mid-line.
    for line in [&b"HELLO 1\n"[..], &[b'9'; 100], b"CONNECT 12"] {
        let mut host = UnixStream::connect(&s.path).unwrap();
        host.write_all(line).unwrap();
        if line == b"CONNECT 12" {
            host.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_eq!(
            pump_read(&mut s.em, &mut host, usize::MAX),
            (Vec::new(), true),
            "{line:?}"
        );
    }
    pump(&mut s.em);
    assert!(guest.recv().is_empty(), "the guest heard of none of them");
    assert_eq!(s.dev.lock().unwrap().muxer.len(), 0);
}

#[test]
fn guest_initiated_connection_end_to_end() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    pump(&mut s.em);
    guest.offer_rx(32);

    let port_path = Path::new(&format!("{}_5000", s.path.display())).to_path_buf();
    let listener = std::os::unix::net::UnixListener::bind(&port_path).unwrap();
    guest.send_op(op::REQUEST, 777, 5000);
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (
            got[0].0.op,
            got[0].0.src_port,
            got[0].0.dst_port,
            got[0].0.dst_cid
        ),
        (op::RESPONSE, 5000, 777, GUEST_CID)
    );
    let (mut service, _) = listener.accept().unwrap();

    guest.send(hdr(op::RW, 777, 5000), b"request");
    let (data, _) = pump_read(&mut s.em, &mut service, 7);
    assert_eq!(data, b"request");
    service.set_nonblocking(false).unwrap();
    service.write_all(b"response").unwrap();
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (got[0].0.op, got[0].1.as_slice()),
        (op::RW, &b"response"[..])
    );

    // Nothing listens on port 6000.
    guest.send_op(op::REQUEST, 778, 6000);
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RST, 6000, 778)
    );

    // The host service goes away: the guest is told both ways are shut,
    // answers RST, and the connection is gone.
    drop(service);
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (got[0].0.op, got[0].0.flags),
        (op::SHUTDOWN, shutdown::BOTH)
    );
    guest.send_op(op::RST, 777, 5000);
    pump(&mut s.em);
    assert_eq!(s.dev.lock().unwrap().muxer.len(), 0);
    // Packets for it now are strays.
    guest.send(hdr(op::RW, 777, 5000), b"late");
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(got[0].0.op, op::RST);
}

#[test]
fn rx_work_waits_for_buffers() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(1);
    let (mut host, _) = host_connect(&mut s, &mut guest, 1);
    host.write_all(b"queued").unwrap();
    pump(&mut s.em);
    assert!(guest.recv().is_empty());
    guest.offer_rx(1);
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(got[0].1, b"queued");
}

#[test]
fn hostile_tx_chains_are_returned_and_reset_their_connection() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(8);
    let (mut host, local) = host_connect(&mut s, &mut guest, 1);

    // A header descriptor too short to hold a header.
    guest.store(TXQ, 200, TX_BASE, 10, 0, 0);
    guest.offer(TXQ, 200);
    // A header claiming more data than its descriptor holds.
    let lying = Header {
        len: 1000,
        ..hdr(op::RW, 1, local)
    };
    let base = TX_BASE + 0x10_0000;
    mem.write_slice(&lying.to_bytes(), GuestAddress(base))
        .unwrap();
    guest.store(TXQ, 202, base, HEADER_SIZE as u32, VRING_DESC_F_NEXT, 203);
    guest.store(TXQ, 203, base + DATA_OFFSET, 10, 0, 0);
    guest.offer(TXQ, 202);
    // An oversized length.
    let huge = Header {
        len: u32::MAX,
        ..hdr(op::RW, 1, local)
    };
    mem.write_slice(&huge.to_bytes(), GuestAddress(base + 0x1000))
        .unwrap();
    guest.store(TXQ, 204, base + 0x1000, HEADER_SIZE as u32, 0, 0);
    guest.offer(TXQ, 204);
    // A descriptor pointing outside guest memory.
    guest.store(TXQ, 206, 0xffff_ffff_0000, HEADER_SIZE as u32, 0, 0);
    guest.offer(TXQ, 206);
    guest.evts[TXQ].write(1).unwrap();
    pump(&mut s.em);
    assert_eq!(guest.tx_used(), 5, "the response and all four returned");

    // The connection the lying header named was reset, the host closed.
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RST, local, 1)
    );
    assert_eq!(
        pump_read(&mut s.em, &mut host, usize::MAX),
        (Vec::new(), true)
    );
}

#[test]
fn reset_closes_everything_and_the_device_comes_back() {
    let mut s = setup();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(4);
    let (mut host, _) = host_connect(&mut s, &mut guest, 1);

    assert!(s.dev.lock().unwrap().reset());
    assert!(!s.dev.lock().unwrap().is_activated());
    assert_eq!(
        pump_read(&mut s.em, &mut host, usize::MAX),
        (Vec::new(), true)
    );

    // The driver starts over with fresh queues.
    let mut guest = Guest::new(&mem);
    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(4);
    let (mut host, local) = host_connect(&mut s, &mut guest, 2);
    assert_eq!(local, FIRST_LOCAL_PORT + 1);
    host.write_all(b"again").unwrap();
    let got = pump_recv(&mut s.em, &mut guest, 1);
    assert_eq!(got[0].1, b"again");
}

/// Set in the child process of the seccomp test: the socket directory.
const SECCOMP_CHILD_DIR: &str = "HUSK_VSOCK_SECCOMP_CHILD_DIR";

/// Runs a whole exchange (both directions, data, shutdowns, a refused
/// guest connection, the timer, a reset) on a thread under the VMM
/// thread's seccomp filter. Any system call outside it kills the process,
/// so the work happens in a child process running just this test.
#[test]
fn the_event_loop_stays_within_the_vmm_seccomp_filter() {
    let Some(dir) = test_utils::rerun_in_child(
        "devices::virtio::vsock::device::tests::the_event_loop_stays_within_the_vmm_seccomp_filter",
        SECCOMP_CHILD_DIR,
    ) else {
        return;
    };
    // Everything that needs more than the VMM's calls happens first.
    let path = Path::new(&dir).join("v.sock");
    let dev = Arc::new(Mutex::new(Vsock::new(GUEST_CID, path.clone()).unwrap()));
    let mut em = Em::new().unwrap();
    em.add_subscriber(dev.clone());
    let mut s = Setup {
        _dir: None,
        path,
        dev,
        em,
    };
    let port_path = format!("{}_5000", s.path.display());
    let listener = std::os::unix::net::UnixListener::bind(&port_path).unwrap();
    let mem = guest_memory();
    let mut guest = Guest::new(&mem);
    let filters = crate::vmm::seccomp::compile_filters().unwrap();
    crate::vmm::seccomp::apply(&filters.vmm).unwrap();

    s.dev.lock().unwrap().activate(guest.ctx()).unwrap();
    guest.offer_rx(32);
    let (mut host, local) = host_connect(&mut s, &mut guest, 1234);
    host.write_all(b"ping").unwrap();
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].1, b"ping");
    guest.send(hdr(op::RW, 1234, local), b"pong");
    assert_eq!(pump_read(&mut s.em, &mut host, 4).0, b"pong");

    // A host connection that has not sent its line yet arms the timer.
    let quiet = UnixStream::connect(&s.path).unwrap();
    pump(&mut s.em);
    assert!(s.dev.lock().unwrap().timer_armed);

    // Guest-initiated, accepted and refused.
    guest.send_op(op::REQUEST, 777, 5000);
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].0.op, op::RESPONSE);
    let (mut service, _) = listener.accept().unwrap();
    guest.send(hdr(op::RW, 777, 5000), b"req");
    assert_eq!(pump_read(&mut s.em, &mut service, 3).0, b"req");
    guest.send_op(op::REQUEST, 778, 6000);
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].0.op, op::RST);
    drop(service);
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].0.op, op::SHUTDOWN);
    guest.send_op(op::RST, 777, 5000);

    // Host half-close, guest close.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].0.op, op::SHUTDOWN);
    let close = Header {
        flags: shutdown::BOTH,
        ..hdr(op::SHUTDOWN, 1234, local)
    };
    guest.send(close, &[]);
    assert!(pump_read(&mut s.em, &mut host, usize::MAX).1);
    assert_eq!(pump_recv(&mut s.em, &mut guest, 1)[0].0.op, op::RST);

    // It goes away; the next tick finds no deadline and disarms.
    drop(quiet);
    let started = std::time::Instant::now();
    while s.dev.lock().unwrap().timer_armed {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the timer stays armed"
        );
        s.em.run_with_timeout(100).unwrap();
    }

    // A reset (on a vCPU thread in the VMM) and its clean-up.
    let (mut host, _) = host_connect(&mut s, &mut guest, 1);
    assert!(s.dev.lock().unwrap().reset());
    assert!(pump_read(&mut s.em, &mut host, usize::MAX).1);
    assert_eq!(s.dev.lock().unwrap().muxer.len(), 0);
    // Dropping the device removes its socket (unlink is allowed); the
    // directory is the parent's to remove.
}
