//! The device through real virtio queues in guest memory and the real
//! event loop; the test plays the guest driver and, through a fake tap or
//! a real one in a private network namespace, the host.

use std::os::fd::AsRawFd;
use std::sync::Mutex;

use event_manager::{EventManager, SubscriberOps};
use vm_memory::Bytes;

use super::*;
use crate::devices::virtio::net::header::features::*;
use crate::devices::virtio::net::header::{
    NetHeader, F_DATA_VALID, F_NEEDS_CSUM, GSO_TCPV4, MAX_PACKET_LEN,
};
use crate::devices::virtio::net::tap::Tap;
use crate::devices::virtio::net::testing::{
    eth_frame, guest_memory, packet, Driver, FakeTap, FakeTapHandle, NetnsTap, UsedEntry,
};
use crate::devices::virtio::{test_utils, VIRTIO_F_VERSION_1};

const MAC_ADDR: [u8; 6] = [0x02, 0x68, 0x75, 0x73, 0x6b, 0x01];
/// No offloads, one chain per frame.
const PLAIN: u64 = VIRTIO_F_VERSION_1 | MAC | MTU | STATUS;
/// No offloads, mergeable receive buffers.
const MERGEABLE: u64 = PLAIN | MRG_RXBUF;
const QSIZE: u16 = 256;

type Em<T> = EventManager<Arc<Mutex<Net<T>>>>;

struct Setup<T: TapBackend> {
    dev: Arc<Mutex<Net<T>>>,
    em: Em<T>,
}

impl<T: TapBackend + 'static> Setup<T> {
    fn new(tap: T) -> Self {
        let dev = Arc::new(Mutex::new(Net::new(tap, MAC_ADDR, 1500).unwrap()));
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.clone());
        Self { dev, em }
    }

    /// The driver negotiates `features` and sets `DRIVER_OK`.
    fn start(&mut self, driver: &Driver, features: u64) {
        {
            let mut dev = self.dev.lock().unwrap();
            dev.set_acked_features(features);
            dev.activate(driver.ctx()).unwrap();
        }
        self.pump();
    }

    /// Runs the loop until nothing is left to do.
    fn pump(&mut self) {
        for _ in 0..64 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("the event loop does not settle");
    }

    fn stats(&self) -> NetStats {
        self.dev.lock().unwrap().stats()
    }
}

fn fake() -> (Setup<FakeTap>, FakeTapHandle) {
    let (tap, handle) = FakeTap::new();
    (Setup::new(tap), handle)
}

/// Whether the device raised its interrupt since the last call.
fn irq(driver: &Driver) -> bool {
    driver.interrupt.irq_evt().read().is_ok()
}

fn header() -> NetHeader {
    NetHeader::default()
}

#[test]
fn offers_the_features_and_config_space_it_should() {
    let (s, _tap) = fake();
    let dev = s.dev.lock().unwrap();
    assert_eq!(dev.device_type(), 1);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    let f = dev.avail_features();
    for bit in [
        VIRTIO_F_VERSION_1,
        MAC,
        MTU,
        STATUS,
        CSUM,
        GUEST_CSUM,
        GUEST_TSO4,
        GUEST_TSO6,
        HOST_TSO4,
        HOST_TSO6,
        MRG_RXBUF,
    ] {
        assert_ne!(f & bit, 0, "{bit:#x} not offered");
    }
    // No UFO, ECN, control queue, multiqueue, event index, indirect.
    for bit in [6, 9, 10, 13, 14, 17, 22, 28, 29] {
        assert_eq!(f & (1 << bit), 0, "bit {bit} offered");
    }
    let mut config = [0u8; 12];
    dev.read_config(0, &mut config);
    assert_eq!(config[..6], MAC_ADDR);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 1, "one pair");
    assert_eq!(u16::from_le_bytes([config[10], config[11]]), 1500);
    let mut beyond = [0xaau8; 4];
    dev.read_config(10, &mut beyond);
    assert_eq!(beyond, [0xdc, 0x05, 0, 0]);
    dev.read_config(u64::MAX, &mut beyond);
    assert_eq!(beyond, [0; 4]);
    assert_eq!((dev.mac(), dev.mtu()), (MAC_ADDR, 1500));
    drop(dev);
    s.dev.lock().unwrap().write_config(0, &[0; 6]);
    assert_eq!(s.dev.lock().unwrap().mac(), MAC_ADDR);
}

#[test]
fn refuses_an_mtu_below_the_ipv4_minimum() {
    let (tap, _) = FakeTap::new();
    assert!(matches!(
        Net::new(tap, MAC_ADDR, 67),
        Err(NetError::Mtu(67))
    ));
}

#[test]
fn activation_sets_the_tap_offloads_the_guest_negotiated() {
    let (mut s, tap) = fake();
    // Creation: the 12-byte header, no offloads.
    assert_eq!(tap.state().vnet_hdr_size, Some(12));
    assert_eq!(tap.state().offloads, [0]);

    let mem = guest_memory();
    let driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN | GUEST_CSUM | GUEST_TSO4 | HOST_TSO6 | CSUM);
    assert_eq!(
        tap.state().offloads,
        [0, libc::TUN_F_CSUM | libc::TUN_F_TSO4]
    );
    assert!(s.dev.lock().unwrap().reset());
    s.pump();

    let driver = Driver::new(&mem, QSIZE);
    s.start(&driver, MERGEABLE);
    assert_eq!(tap.state().offloads.last(), Some(&0));

    assert!(s.dev.lock().unwrap().reset());
    let driver = Driver::new(&mem, QSIZE);
    s.start(&driver, AVAIL_FEATURES_FOR_TEST);
    assert_eq!(
        tap.state().offloads.last(),
        Some(&(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6))
    );
    // Features the device never offered are not taken.
    s.dev.lock().unwrap().set_acked_features(u64::MAX);
    assert_eq!(
        s.dev.lock().unwrap().acked_features,
        AVAIL_FEATURES_FOR_TEST
    );
}

const AVAIL_FEATURES_FOR_TEST: u64 = crate::devices::virtio::net::header::AVAIL_FEATURES;

#[test]
fn transmits_a_frame_in_one_descriptor() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    let frame = eth_frame(60, 1);
    // The guest's num_buffers is cleared on the way.
    let hdr = NetHeader {
        num_buffers: 7,
        ..header()
    };
    let head = driver.send(&[&packet(hdr, &frame)]);
    s.pump();
    assert_eq!(tap.take_written(), [packet(header(), &frame)]);
    assert_eq!(driver.used(TXQ), [UsedEntry { head, len: 0 }]);
    assert!(irq(&driver));
    assert_eq!(s.stats().tx_frames, 1);
}

#[test]
fn transmits_a_frame_split_over_descriptors_with_its_header_kept() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN | CSUM | HOST_TSO4);
    let frame = eth_frame(3000, 2);
    let hdr = NetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let whole = packet(hdr, &frame);
    // The header itself in two pieces, the frame in three, one empty.
    let parts: Vec<&[u8]> = vec![
        &whole[..5],
        &whole[5..12],
        &whole[12..100],
        &whole[100..100],
        &whole[100..2000],
        &whole[2000..],
    ];
    driver.send(&parts);
    // Header and frame in one descriptor, then a second frame.
    driver.send(&[&whole]);
    s.pump();
    assert_eq!(tap.take_written(), [whole.clone(), whole]);
    assert_eq!(driver.used(TXQ).len(), 2);
}

#[test]
fn drops_transmit_headers_asking_for_what_was_not_negotiated() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN | CSUM);
    let frame = eth_frame(100, 3);
    let tso = NetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        gso_size: 1000,
        ..header()
    };
    let udp = NetHeader {
        gso_type: 3,
        ..header()
    };
    let valid = NetHeader {
        flags: F_DATA_VALID,
        ..header()
    };
    for hdr in [tso, udp, valid] {
        driver.send(&[&packet(hdr, &frame)]);
    }
    let csum = NetHeader {
        flags: F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..header()
    };
    driver.send(&[&packet(csum, &frame)]);
    s.pump();
    assert_eq!(tap.take_written(), [packet(csum, &frame)]);
    assert_eq!(driver.used(TXQ).len(), 4);
    let stats = s.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (1, 3));
}

#[test]
fn drops_hostile_transmit_chains_and_carries_on() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    let good = packet(header(), &eth_frame(60, 4));
    let buf = driver.alloc(good.len() as u32);
    mem.write_slice(&good, GuestAddress(buf)).unwrap();
    let len = good.len() as u32;
    let end = crate::devices::virtio::net::testing::GUEST_MEM_SIZE;

    let hostile: Vec<Vec<(u64, u32, bool)>> = vec![
        // Write-only where the device must read.
        vec![(buf, len, true)],
        vec![(buf, 12, false), (buf + 12, len - 12, true)],
        // Outside guest memory, and across its end.
        vec![(end + 0x1000, len, false)],
        vec![(buf, 12, false), (end - 10, 100, false)],
        vec![(u64::MAX - 4, 12, false)],
        // Too short for a header; a header and no Ethernet header.
        vec![(buf, 11, false)],
        vec![(buf, 20, false)],
        // Absurd lengths.
        vec![(buf, u32::MAX, false)],
        vec![(buf, (MAX_PACKET_LEN + 1) as u32, false)],
        // More descriptors than a frame ever needs.
        (0..70).map(|i| (buf + i, 1, false)).collect(),
    ];
    for chain in &hostile {
        driver.add_chain(TXQ, chain);
    }
    // A chain whose descriptor is its own next.
    driver.add_looping_chain(TXQ, buf, 1, false);
    driver.send(&[&good]);
    s.pump();
    assert_eq!(tap.take_written(), [good]);
    let used = driver.used(TXQ);
    assert_eq!(used.len(), hostile.len() + 2);
    assert!(used.iter().all(|u| u.len == 0));
    let stats = s.stats();
    assert_eq!(stats.tx_dropped, hostile.len() as u64 + 1);
    assert_eq!(stats.tx_frames, 1);
}

#[test]
fn a_full_tap_stalls_the_transmit_queue_until_it_drains() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    tap.set_full(true);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| packet(header(), &eth_frame(80, i)))
        .collect();
    for f in &frames {
        driver.send(&[f]);
    }
    s.pump();
    assert!(tap.take_written().is_empty());
    assert!(driver.used(TXQ).is_empty());
    assert!(s.dev.lock().unwrap().tx_stalled);

    tap.set_full(false);
    s.pump();
    assert_eq!(tap.take_written(), frames);
    assert_eq!(driver.used(TXQ).len(), 3);

    // A tap that refuses a frame (EIO while down) loses it; the queue goes on.
    tap.state().write_error = Some(std::io::ErrorKind::Other);
    driver.send(&[&frames[0]]);
    s.pump();
    assert_eq!(driver.used(TXQ).len(), 1);
    assert_eq!(s.stats().tx_dropped, 1);
}

/// The header the device gives the guest for a plain frame.
fn rx_header(num_buffers: u16) -> NetHeader {
    NetHeader {
        num_buffers,
        ..header()
    }
}

#[test]
fn receives_a_frame_into_one_chain() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    let (head, addrs) = driver.offer_rx(&[1526]);
    driver.notify(RXQ);
    s.pump();
    assert!(!irq(&driver));

    let frame = eth_frame(1514, 5);
    // Whatever the tap leaves in num_buffers, the guest sees 1.
    let from_tap = NetHeader {
        num_buffers: 0x5555,
        ..header()
    };
    tap.feed(packet(from_tap, &frame));
    s.pump();
    let len = 12 + frame.len();
    assert_eq!(
        driver.used(RXQ),
        [UsedEntry {
            head,
            len: len as u32
        }]
    );
    assert_eq!(driver.read(addrs[0], len), packet(rx_header(1), &frame));
    assert!(irq(&driver));
    assert_eq!(s.stats().rx_frames, 1);
}

#[test]
fn receives_into_a_chain_of_small_descriptors() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    // The header across two descriptors, the frame across the rest.
    let sizes = [4, 8, 100, 0, 1000, 4096];
    let (head, addrs) = driver.offer_rx(&sizes);
    driver.notify(RXQ);
    let frame = eth_frame(1500, 6);
    tap.feed(packet(header(), &frame));
    s.pump();
    let expected = packet(rx_header(1), &frame);
    assert_eq!(
        driver.used(RXQ),
        [UsedEntry {
            head,
            len: expected.len() as u32
        }]
    );
    let mut got = Vec::new();
    let mut left = expected.len();
    for (addr, size) in addrs.iter().zip(sizes) {
        let n = left.min(size as usize);
        got.extend(driver.read(*addr, n));
        left -= n;
    }
    assert_eq!(got, expected);
}

#[test]
fn receives_into_mergeable_buffers_with_num_buffers() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, MERGEABLE);
    let mut bufs = Vec::new();
    for _ in 0..8 {
        bufs.push(driver.offer_rx(&[1536]));
    }
    driver.notify(RXQ);
    let big = eth_frame(4000, 7);
    let small = eth_frame(60, 8);
    tap.feed(packet(header(), &big));
    tap.feed(packet(header(), &small));
    s.pump();

    let used = driver.used(RXQ);
    let big_len = 12 + big.len();
    assert_eq!(
        used,
        [
            UsedEntry {
                head: bufs[0].0,
                len: 1536
            },
            UsedEntry {
                head: bufs[1].0,
                len: 1536
            },
            UsedEntry {
                head: bufs[2].0,
                len: (big_len - 2 * 1536) as u32
            },
            UsedEntry {
                head: bufs[3].0,
                len: 72
            },
        ]
    );
    let mut got = Vec::new();
    for (entry, (_, addrs)) in used[..3].iter().zip(&bufs) {
        got.extend(driver.read(addrs[0], entry.len as usize));
    }
    assert_eq!(got, packet(rx_header(3), &big));
    assert_eq!(driver.read(bufs[3].1[0], 72), packet(rx_header(1), &small));
    assert_eq!(s.stats().rx_frames, 2);
}

#[test]
fn a_frame_waits_for_buffers_without_the_tap_being_read() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, MERGEABLE);
    let frames: Vec<Vec<u8>> = vec![eth_frame(3000, 9), eth_frame(100, 10)];
    for f in &frames {
        tap.feed(packet(header(), f));
    }
    s.pump();
    // No buffers: the tap is not even read, and nothing spins.
    assert_eq!(tap.state().reads, 0);
    assert_eq!(tap.state().incoming.len(), 2);

    // One buffer is not enough for the first frame: it is read and waits,
    // with nothing published.
    let first = driver.offer_rx(&[2048]);
    driver.notify(RXQ);
    s.pump();
    assert_eq!(tap.state().reads, 1);
    assert!(driver.used(RXQ).is_empty());
    assert!(!irq(&driver));
    s.pump();
    assert_eq!(tap.state().reads, 1, "a waiting frame keeps the tap unread");

    // More buffers: both frames go, in order.
    let second = driver.offer_rx(&[2048]);
    let third = driver.offer_rx(&[2048]);
    driver.notify(RXQ);
    s.pump();
    let used = driver.used(RXQ);
    assert_eq!(
        used,
        [
            UsedEntry {
                head: first.0,
                len: 2048
            },
            UsedEntry {
                head: second.0,
                len: 3012 - 2048
            },
            UsedEntry {
                head: third.0,
                len: 112
            },
        ]
    );
    assert_eq!(
        driver.read(third.1[0], 112),
        packet(rx_header(1), &frames[1])
    );
    assert!(irq(&driver));
    assert_eq!(tap.state().incoming.len(), 0);
}

#[test]
fn a_frame_too_big_for_the_guest_is_dropped_and_the_buffer_reused() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    let (head, addrs) = driver.offer_rx(&[1526]);
    driver.notify(RXQ);
    let small = eth_frame(64, 11);
    tap.feed(packet(header(), &eth_frame(4000, 12)));
    // Longer than any frame: the tap truncates it, the device drops it.
    tap.feed(vec![0u8; MAX_PACKET_LEN + 100]);
    tap.feed(packet(header(), &small));
    s.pump();
    assert_eq!(driver.used(RXQ), [UsedEntry { head, len: 76 }]);
    assert_eq!(driver.read(addrs[0], 76), packet(rx_header(1), &small));
    assert_eq!(s.stats().rx_dropped, 2);

    // Mergeable, but the whole ring cannot hold it.
    let (mut s, tap) = fake();
    let mut driver = Driver::with_sizes(&mem, [4, QSIZE]);
    s.start(&driver, MERGEABLE);
    for _ in 0..4 {
        driver.offer_rx(&[1000]);
    }
    driver.notify(RXQ);
    tap.feed(packet(header(), &eth_frame(5000, 13)));
    tap.feed(packet(header(), &small));
    s.pump();
    let used = driver.used(RXQ);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 76);
    assert_eq!(s.stats().rx_dropped, 1);
}

#[test]
fn received_headers_are_fitted_to_the_guest() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    let a = driver.offer_rx(&[1526]);
    driver.notify(RXQ);
    let frame = eth_frame(200, 14);
    // A GSO frame for a guest that did not negotiate GUEST_TSO4 (queued
    // under an earlier negotiation), then a checked-checksum hint.
    let gso = NetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        gso_size: 100,
        ..header()
    };
    tap.feed(packet(gso, &frame));
    let hint = NetHeader {
        flags: F_DATA_VALID,
        ..header()
    };
    tap.feed(packet(hint, &frame));
    s.pump();
    assert_eq!(driver.used(RXQ).len(), 1);
    assert_eq!(driver.read(a.1[0], 212), packet(rx_header(1), &frame));
    assert_eq!(s.stats().rx_dropped, 1);
}

#[test]
fn hostile_receive_chains_are_given_back_and_the_frame_goes_on() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, MERGEABLE);
    let end = crate::devices::virtio::net::testing::GUEST_MEM_SIZE;
    let buf = driver.alloc(4096);
    let read_only = driver.add_chain(RXQ, &[(buf, 2048, false)]);
    let outside = driver.add_chain(RXQ, &[(end + 0x1000, 2048, true)]);
    let too_small = driver.add_chain(RXQ, &[(buf, 8, true)]);
    let empty = driver.add_chain(RXQ, &[(buf, 0, true)]);
    let long: Vec<_> = (0..70).map(|i| (buf + 8 * i, 8, true)).collect();
    let too_long = driver.add_chain(RXQ, &long);
    let looping = driver.add_looping_chain(RXQ, buf, 8, true);
    // A head outside the ring names no chain: it is skipped, not used.
    driver.offer(RXQ, QSIZE + 3);
    let (good1, addrs1) = driver.offer_rx(&[1024]);
    // Half-way through the frame: given back after the frame's chains.
    let half_way = driver.add_chain(RXQ, &[(buf, 1024, false), (buf, 1024, true)]);
    let (good2, addrs2) = driver.offer_rx(&[4096]);
    driver.notify(RXQ);
    let frame = eth_frame(1500, 15);
    tap.feed(packet(header(), &frame));
    s.pump();

    let used = driver.used(RXQ);
    let broken = |head| UsedEntry { head, len: 0 };
    assert_eq!(
        used,
        [
            broken(read_only),
            broken(outside),
            broken(too_small),
            broken(empty),
            broken(too_long),
            broken(looping),
            UsedEntry {
                head: good1,
                len: 1024
            },
            UsedEntry {
                head: good2,
                len: 1512 - 1024
            },
            broken(half_way),
        ]
    );
    let mut got = driver.read(addrs1[0], 1024);
    got.extend(driver.read(addrs2[0], 1512 - 1024));
    assert_eq!(got, packet(rx_header(2), &frame));
    assert_eq!(s.stats().bad_chains, 8);
    assert_eq!(s.stats().rx_frames, 1);
}

#[test]
fn no_interrupt_while_the_driver_polls() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN);
    driver.suppress_interrupts(RXQ, true);
    driver.offer_rx(&[1526]);
    driver.offer_rx(&[1526]);
    driver.notify(RXQ);
    tap.feed(packet(header(), &eth_frame(100, 16)));
    s.pump();
    assert_eq!(driver.used(RXQ).len(), 1);
    assert!(!irq(&driver));
    driver.suppress_interrupts(RXQ, false);
    tap.feed(packet(header(), &eth_frame(100, 17)));
    s.pump();
    assert_eq!(driver.used(RXQ).len(), 1);
    assert!(irq(&driver));
}

#[test]
fn reset_drops_the_queues_and_the_device_comes_back() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, MERGEABLE);
    // A frame waits for buffers when the reset comes.
    driver.offer_rx(&[1000]);
    driver.notify(RXQ);
    tap.feed(packet(header(), &eth_frame(3000, 18)));
    s.pump();
    assert!(s.dev.lock().unwrap().rx.pending.is_some());

    assert!(s.dev.lock().unwrap().reset());
    assert!(!s.dev.lock().unwrap().is_activated());
    s.pump();
    assert!(s.dev.lock().unwrap().rx.pending.is_none());
    // The old queue events are off the loop.
    driver.notify(RXQ);
    driver.notify(TXQ);
    s.pump();
    assert!(driver.used(RXQ).is_empty());

    // The driver starts over with fresh queues and other features.
    let mut driver = Driver::new(&mem, QSIZE);
    s.start(&driver, PLAIN | GUEST_CSUM);
    assert_eq!(tap.state().offloads.last(), Some(&libc::TUN_F_CSUM));
    let (head, addrs) = driver.offer_rx(&[1526]);
    driver.notify(RXQ);
    let frame = eth_frame(100, 19);
    tap.feed(packet(header(), &frame));
    let tx = packet(header(), &eth_frame(60, 20));
    driver.send(&[&tx]);
    s.pump();
    assert_eq!(driver.used(RXQ), [UsedEntry { head, len: 112 }]);
    assert_eq!(driver.read(addrs[0], 112), packet(rx_header(1), &frame));
    assert_eq!(tap.take_written(), [tx]);
}

#[test]
fn a_second_activation_replaces_the_first() {
    let (mut s, tap) = fake();
    let mem = guest_memory();
    let first = Driver::new(&mem, QSIZE);
    s.start(&first, PLAIN);
    let mut second = Driver::new(&mem, QSIZE);
    s.start(&second, PLAIN);
    let tx = packet(header(), &eth_frame(60, 21));
    second.send(&[&tx]);
    s.pump();
    assert_eq!(tap.take_written(), [tx]);
}

/// A real tap: a frame each way through the device, with the offloads
/// the driver negotiated set on the tap.
#[test]
fn passes_frames_both_ways_through_a_real_tap() {
    let Some(ns) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) else {
        return;
    };
    exchange_through_a_real_tap(ns, None);
}

/// Runs [`exchange_through_a_real_tap`] with the event loop under the VMM
/// thread's seccomp filter (activation and its ioctls included). Any call
/// outside the filter kills the process, so the work happens in a child
/// process running just this test.
#[test]
fn a_real_tap_works_under_the_vmm_seccomp_filter() {
    const CHILD: &str = "HUSK_NET_SECCOMP_CHILD";
    if test_utils::rerun_in_child(
        "devices::virtio::net::device::tests::a_real_tap_works_under_the_vmm_seccomp_filter",
        CHILD,
    )
    .is_none()
    {
        return;
    }
    let Some(ns) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) else {
        return;
    };
    let filters = crate::vmm::seccomp::compile_filters().unwrap();
    exchange_through_a_real_tap(ns, Some(&filters.vmm));
}

fn exchange_through_a_real_tap(mut ns: NetnsTap, filter: Option<&seccompiler::BpfProgram>) {
    let tap_fd = ns.tap.try_clone().unwrap();
    let mut s = Setup::new(Tap::new(tap_fd).unwrap());
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, QSIZE);
    let mut rx_bufs = Vec::new();
    for _ in 0..32 {
        rx_bufs.push(driver.offer_rx(&[2048]));
    }
    if let Some(filter) = filter {
        crate::vmm::seccomp::apply(filter).unwrap();
    }
    s.start(&driver, AVAIL_FEATURES_FOR_TEST);
    driver.notify(RXQ);

    // Guest to host: the packet socket on the tap's interface sees it.
    let out = eth_frame(200, 22);
    driver.send(&[&packet(header(), &out)]);
    let mut got = None;
    for _ in 0..200 {
        s.pump();
        got = ns.recv();
        if got.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(got.as_deref(), Some(&out[..]));
    assert_eq!(s.stats().tx_frames, 1);

    // Host to guest, among whatever the kernel sends on a new link.
    let back = eth_frame(300, 23);
    ns.send(&back);
    let mut seen = Vec::new();
    let mut found = false;
    for _ in 0..200 {
        let _ = s.em.run_with_timeout(10).unwrap();
        seen.extend(driver.used(RXQ));
        found = seen.iter().any(|u| {
            let addr = rx_bufs.iter().find(|(h, _)| *h == u.head).unwrap().1[0];
            u.len as usize == 12 + back.len() && driver.read(addr + 12, back.len()) == back
        });
        if found {
            break;
        }
    }
    assert!(found, "the guest did not get the frame; used: {seen:?}");
    assert!(s.stats().rx_frames >= 1);
}

#[test]
fn only_a_vnet_header_tap_will_do() {
    // A pipe, a closed number.
    let (r, _w) = nix::unistd::pipe().unwrap();
    assert!(matches!(Tap::new(r), Err(TapFdError::NotTap(_))));
    assert!(matches!(
        Tap::from_inherited(-1),
        Err(TapFdError::NotOpen(_))
    ));
    let Some(ns) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI) else {
        return;
    };
    let err = Tap::new(ns.tap).unwrap_err();
    assert!(matches!(err, TapFdError::Flags(_)), "{err}");

    let Some(ns) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) else {
        return;
    };
    let raw = ns.tap.as_raw_fd();
    let tap = Tap::from_inherited(raw).unwrap();
    assert_ne!(tap.as_raw_fd(), raw);
    // SAFETY: F_GETFL and F_GETFD take no pointers.
    let (fl, fd) = unsafe {
        (
            libc::fcntl(tap.as_raw_fd(), libc::F_GETFL),
            libc::fcntl(tap.as_raw_fd(), libc::F_GETFD),
        )
    };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    assert_ne!(fd & libc::FD_CLOEXEC, 0);
}
