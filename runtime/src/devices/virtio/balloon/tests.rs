//! The balloon through real virtio queues in guest memory and the real
//! event loop; the test plays the guest driver. Reported pages are given
//! back with the real `madvise`, so the tests see them read as zeros.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{
    Balloon, Discard, AVAIL_FEATURES, DEFLATEQ, INFLATEQ, QUEUE_SIZES, REPORTINGQ,
    VIRTIO_BALLOON_F_REPORTING,
};
use super::reporting_order_param;
use crate::devices::virtio::test_utils::activate_context;
use crate::devices::virtio::{
    device_type, ActivateError, GuestMemoryMmap, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

const MEM_SIZE: usize = 0x80_0000;
const QUEUE_BASE: [u64; 3] = [0x0, 0x1_0000, 0x2_0000];
/// The ring of each mock queue; larger than the device's own sizes, so a
/// test can queue more chains than one turn serves.
const MOCK_QUEUE_SIZE: u16 = 256;
/// Page-frame lists of inflate and deflate buffers go here.
const PFN_LIST: u64 = 0x3_0000;
/// Where the "free" guest pages of the tests start.
const PAGES: u64 = 0x40_0000;
const PAGE: u64 = 4096;

type Em = EventManager<Arc<Mutex<Balloon>>>;

struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    queues: [MockSplitQueue<'a, GuestMemoryMmap>; 3],
    evts: [EventFd; 3],
    interrupt: Arc<VirtioInterrupt>,
    next_desc: [u16; 3],
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let queue =
            |i: usize| MockSplitQueue::create(mem, GuestAddress(QUEUE_BASE[i]), MOCK_QUEUE_SIZE);
        Self {
            mem,
            queues: [queue(0), queue(1), queue(2)],
            evts: std::array::from_fn(|_| EventFd::new(EFD_NONBLOCK).unwrap()),
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            next_desc: [0; 3],
        }
    }

    /// Stores a chain (address, length, device-writable) on queue `q`,
    /// makes it available and notifies. Returns its head.
    fn add_chain(&mut self, q: usize, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc[q];
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let index = head + i as u16;
            let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            let desc = Descriptor::new(addr, len, flags as u16, index + 1);
            self.queues[q]
                .desc_table()
                .store(index, RawDescriptor::from(desc))
                .unwrap();
        }
        self.next_desc[q] += descs.len() as u16;
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % MOCK_QUEUE_SIZE))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
        self.evts[q].write(1).unwrap();
        head
    }

    /// (head, length) of every used entry of queue `q`.
    fn used(&self, q: usize) -> Vec<(u32, u32)> {
        let used = self.queues[q].used();
        (0..used.idx().load())
            .map(|i| {
                let e = used.ring().ref_at(usize::from(i)).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    fn irq(&self) -> bool {
        self.interrupt.irq_evt().read().is_ok()
    }
}

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Fills `pages` pages at `addr` with a non-zero pattern.
fn dirty(mem: &GuestMemoryMmap, addr: u64, pages: u64) {
    mem.write_slice(&vec![0xa5; (pages * PAGE) as usize], GuestAddress(addr))
        .unwrap();
}

/// Whether every byte of `pages` pages at `addr` reads zero.
fn zeroed(mem: &GuestMemoryMmap, addr: u64, pages: u64) -> bool {
    let mut buf = vec![0xff; (pages * PAGE) as usize];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf.iter().all(|&b| b == 0)
}

struct Setup {
    dev: Arc<Mutex<Balloon>>,
    em: Em,
}

impl Setup {
    fn new() -> Self {
        let dev = Arc::new(Mutex::new(Balloon::new().unwrap()));
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.clone());
        Self { dev, em }
    }

    fn start(&mut self, driver: &Driver) {
        {
            let mut dev = self.dev.lock().unwrap();
            dev.set_acked_features(AVAIL_FEATURES);
            dev.activate(activate_context(
                driver.mem,
                &driver.interrupt,
                &driver.queues,
                &driver.evts,
            ))
            .unwrap();
        }
        self.pump();
    }

    fn pump(&mut self) {
        for _ in 0..64 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("the event loop does not settle");
    }

    fn stats(&self) -> super::BalloonStats {
        self.dev.lock().unwrap().stats()
    }
}

#[test]
fn offers_reporting_and_an_empty_balloon() {
    let dev = Balloon::new().unwrap();
    assert_eq!(dev.device_type(), device_type::BALLOON);
    assert_eq!(
        dev.avail_features(),
        VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING
    );
    assert_eq!(dev.queue_max_sizes(), &QUEUE_SIZES);
    let mut config = [0xffu8; 8];
    dev.read_config(0, &mut config);
    assert_eq!(config, [0; 8], "num_pages and actual start at 0");
    assert_eq!(
        reporting_order_param(),
        "page_reporting.page_reporting_order=8"
    );
}

#[test]
fn the_driver_writes_actual_and_nothing_else() {
    let mut dev = Balloon::new().unwrap();
    dev.write_config(4, &7u32.to_le_bytes());
    assert_eq!(dev.actual_pages(), 7);
    dev.write_config(0, &9u32.to_le_bytes());
    dev.write_config(6, &[1, 2, 3]);
    let mut num_pages = [0u8; 4];
    dev.read_config(0, &mut num_pages);
    assert_eq!(
        u32::from_le_bytes(num_pages),
        0,
        "num_pages is the device's"
    );
    assert_eq!(
        dev.actual_pages(),
        7,
        "a write past the end is dropped whole"
    );
}

#[test]
fn reported_pages_go_back_to_the_host_and_read_as_zeros() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut s = Setup::new();
    s.start(&driver);
    dirty(&mem, PAGES, 8);
    // One report of two runs, as Linux sends them: device-writable.
    let head = driver.add_chain(
        REPORTINGQ,
        &[
            (PAGES, 2 * PAGE as u32, true),
            (PAGES + 4 * PAGE, 4 * PAGE as u32, true),
        ],
    );
    s.pump();
    assert_eq!(driver.used(REPORTINGQ), [(u32::from(head), 0)]);
    assert!(driver.irq());
    assert!(zeroed(&mem, PAGES, 2));
    assert!(
        !zeroed(&mem, PAGES + 2 * PAGE, 1),
        "the page between was not reported"
    );
    assert!(zeroed(&mem, PAGES + 4 * PAGE, 4));
    let stats = s.stats();
    assert_eq!(
        (stats.reports, stats.reported_bytes, stats.refused),
        (1, 6 * PAGE, 0)
    );
}

#[test]
fn bad_report_ranges_are_refused_and_the_chain_still_returned() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut s = Setup::new();
    s.start(&driver);
    dirty(&mem, PAGES, 4);
    let head = driver.add_chain(
        REPORTINGQ,
        &[
            (PAGES + 16, PAGE as u32, true),                 // not page-aligned
            (PAGES + PAGE, PAGE as u32, false),              // driver-readable
            (MEM_SIZE as u64 - PAGE, 2 * PAGE as u32, true), // past the end
            (PAGES + 3 * PAGE, 0, true),                     // empty
        ],
    );
    s.pump();
    assert_eq!(driver.used(REPORTINGQ), [(u32::from(head), 0)]);
    assert!(!zeroed(&mem, PAGES, 1) && !zeroed(&mem, PAGES + PAGE, 1));
    assert!(!zeroed(&mem, PAGES + 3 * PAGE, 1));
    assert_eq!(s.stats().refused, 4);
    assert_eq!(s.stats().reported_bytes, 0);
}

#[test]
fn inflated_pages_are_given_back_and_deflation_only_counted() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut s = Setup::new();
    s.start(&driver);
    dirty(&mem, PAGES, 3);
    let pfns: Vec<u8> = [PAGES / PAGE, PAGES / PAGE + 2]
        .iter()
        .flat_map(|p| (*p as u32).to_le_bytes())
        .collect();
    mem.write_slice(&pfns, GuestAddress(PFN_LIST)).unwrap();
    driver.add_chain(INFLATEQ, &[(PFN_LIST, 8, false)]);
    s.pump();
    assert!(zeroed(&mem, PAGES, 1) && zeroed(&mem, PAGES + 2 * PAGE, 1));
    assert!(!zeroed(&mem, PAGES + PAGE, 1));
    driver.add_chain(DEFLATEQ, &[(PFN_LIST, 8, false)]);
    // A frame number beyond guest memory is refused.
    mem.write_obj(
        (MEM_SIZE as u64 / PAGE + 1) as u32,
        GuestAddress(PFN_LIST + 64),
    )
    .unwrap();
    driver.add_chain(INFLATEQ, &[(PFN_LIST + 64, 4, false)]);
    s.pump();
    assert_eq!(driver.used(INFLATEQ).len(), 2);
    assert_eq!(driver.used(DEFLATEQ).len(), 1);
    let stats = s.stats();
    assert_eq!(
        (stats.inflated_pages, stats.deflated_pages, stats.refused),
        (2, 2, 1)
    );
}

#[test]
fn more_reports_than_one_turn_serves_are_all_answered() {
    struct Count(Arc<Mutex<u64>>);
    impl Discard for Count {
        fn discard(
            &mut self,
            _: &GuestMemoryMmap,
            _: GuestAddress,
            len: u64,
        ) -> std::io::Result<()> {
            *self.0.lock().unwrap() += len;
            Ok(())
        }
    }
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let counted = Arc::new(Mutex::new(0));
    let dev = Arc::new(Mutex::new(
        Balloon::with_discard(Count(counted.clone())).unwrap(),
    ));
    let mut em: EventManager<Arc<Mutex<Balloon<Count>>>> = EventManager::new().unwrap();
    em.add_subscriber(dev.clone());
    dev.lock()
        .unwrap()
        .activate(activate_context(
            &mem,
            &driver.interrupt,
            &driver.queues,
            &driver.evts,
        ))
        .unwrap();
    for i in 0..100 {
        driver.add_chain(REPORTINGQ, &[(PAGES + i * PAGE, PAGE as u32, true)]);
    }
    for _ in 0..16 {
        em.run_with_timeout(0).unwrap();
    }
    assert_eq!(driver.used(REPORTINGQ).len(), 100);
    assert_eq!(*counted.lock().unwrap(), 100 * PAGE);
    assert_eq!(dev.lock().unwrap().stats().reports, 100);
}

#[test]
fn a_reset_drops_the_queues_and_a_new_activation_works() {
    let mem = guest_memory();
    let mut s = Setup::new();
    let first = Driver::new(&mem);
    s.start(&first);
    assert!(s.dev.lock().unwrap().reset());
    assert!(!s.dev.lock().unwrap().is_activated());
    s.pump();
    let mut second = Driver::new(&mem);
    s.start(&second);
    dirty(&mem, PAGES, 1);
    second.add_chain(REPORTINGQ, &[(PAGES, PAGE as u32, true)]);
    s.pump();
    assert!(zeroed(&mem, PAGES, 1));
    assert_eq!(s.stats().reports, 1);
}

#[test]
fn a_driver_with_other_than_three_queues_is_refused() {
    let mem = guest_memory();
    let driver = Driver::new(&mem);
    let mut dev = Balloon::new().unwrap();
    let err = dev
        .activate(activate_context(
            &mem,
            &driver.interrupt,
            &driver.queues[..2],
            &driver.evts[..2],
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ActivateError::QueueCount {
                expected: 3,
                got: 2
            }
        ),
        "{err}"
    );
    assert!(!dev.is_activated());
}
