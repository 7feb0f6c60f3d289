//! The transport driven through a whole negotiation, with a dummy device.

use super::*;
use crate::devices::virtio::ActivateError;
use vm_memory::GuestAddress;

#[derive(Default)]
struct Dummy {
    acked: u64,
    activated: Option<usize>,
    config: [u8; 8],
    resets: u32,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | 1
    }
    fn set_acked_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = *self.config.get(offset as usize + i).unwrap_or(&0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.activated = Some(ctx.queues.len());
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.activated.is_some()
    }
    fn reset(&mut self) -> bool {
        self.resets += 1;
        self.activated = None;
        true
    }
}

fn transport() -> (MmioTransport, Arc<Mutex<Dummy>>) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(Dummy::default()));
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(mem, dev.clone(), Arc::new(VirtioInterrupt::new(irq))).unwrap();
    (t, dev)
}

fn r(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn setup_queues(t: &mut MmioTransport) {
    for (q, base) in [(0u32, 0x1000u32), (1, 0x4000)] {
        w(t, reg::QUEUE_SEL, q);
        assert_eq!(r(t, reg::QUEUE_NUM_MAX), 16);
        w(t, reg::QUEUE_NUM, 16);
        w(t, reg::QUEUE_DESC_LOW, base);
        w(t, reg::QUEUE_DESC_HIGH, 0);
        w(t, reg::QUEUE_DRIVER_LOW, base + 0x1000);
        w(t, reg::QUEUE_DEVICE_LOW, base + 0x2000);
        w(t, reg::QUEUE_READY, 1);
        assert_eq!(r(t, reg::QUEUE_READY), 1);
    }
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    w(t, reg::STATUS, ACKNOWLEDGE);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(t, reg::DRIVER_FEATURES_SEL, 0);
    w(t, reg::DRIVER_FEATURES, features as u32);
    w(t, reg::DRIVER_FEATURES_SEL, 1);
    w(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

#[test]
fn identifies_itself() {
    let (mut t, _) = transport();
    assert_eq!(r(&mut t, reg::MAGIC), MAGIC);
    assert_eq!(r(&mut t, reg::VERSION), 2);
    assert_eq!(r(&mut t, reg::DEVICE_ID), 42);
    assert_eq!(r(&mut t, reg::VENDOR_ID), VENDOR_ID);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
    assert_eq!(r(&mut t, reg::SHM_LEN_LOW), u32::MAX);
}

#[test]
fn full_negotiation_activates_the_device_and_reset_undoes_it() {
    let (mut t, dev) = transport();
    negotiate(&mut t, VIRTIO_F_VERSION_1 | 1);
    assert_eq!(r(&mut t, reg::STATUS) & FEATURES_OK, FEATURES_OK);
    assert_eq!(dev.lock().unwrap().acked, VIRTIO_F_VERSION_1 | 1);
    setup_queues(&mut t);
    w(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(dev.lock().unwrap().activated, Some(2));
    assert_eq!(r(&mut t, reg::STATUS) & DEVICE_NEEDS_RESET, 0);

    // Queue registers are frozen after DRIVER_OK.
    w(&mut t, reg::QUEUE_SEL, 0);
    w(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 1);

    w(&mut t, reg::STATUS, 0);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(dev.lock().unwrap().resets, 1);
    assert!(!dev.lock().unwrap().is_activated());
}

#[test]
fn refuses_features_not_offered_or_without_version_1() {
    for features in [1u64, VIRTIO_F_VERSION_1 | 2] {
        let (mut t, dev) = transport();
        negotiate(&mut t, features);
        assert_eq!(r(&mut t, reg::STATUS) & FEATURES_OK, 0, "{features:#x}");
        assert_eq!(dev.lock().unwrap().acked, 0);
    }
}

#[test]
fn out_of_order_status_and_queue_writes_are_ignored() {
    let (mut t, dev) = transport();
    w(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(r(&mut t, reg::STATUS), 0);
    // Queue setup before FEATURES_OK does nothing.
    w(&mut t, reg::QUEUE_NUM, 8);
    w(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
    // Selecting a queue that does not exist reads as absent.
    w(&mut t, reg::QUEUE_SEL, 7);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
    // DRIVER_OK with invalid (unset) queues: the device is not activated.
    w(&mut t, reg::QUEUE_SEL, 0);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    w(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert!(dev.lock().unwrap().activated.is_none());
    assert_ne!(r(&mut t, reg::STATUS) & DEVICE_NEEDS_RESET, 0);
}

#[test]
fn odd_widths_and_unknown_registers_never_panic() {
    let (mut t, _) = transport();
    let mut two = [0xffu8; 2];
    t.read(reg::MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    t.write(reg::STATUS, &[1, 0]);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    for offset in (0..0x100).step_by(4) {
        let _ = r(&mut t, offset);
        w(&mut t, offset, 0xdead_beef);
    }
    w(&mut t, reg::QUEUE_NOTIFY, 99);
}

#[test]
fn config_space_and_notifications_and_interrupts() {
    let (mut t, _) = transport();
    t.write(CONFIG_SPACE_OFFSET + 2, &[7, 8]);
    let mut b = [0u8; 4];
    t.read(CONFIG_SPACE_OFFSET, &mut b);
    assert_eq!(b, [0, 0, 7, 8]);
    w(&mut t, reg::QUEUE_NOTIFY, 1);
    assert_eq!(t.queue_evts()[1].read().unwrap(), 1);
    t.interrupt().signal_used_queue().unwrap();
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 1);
    w(&mut t, reg::INTERRUPT_ACK, 1);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
}
