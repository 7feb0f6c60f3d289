//! The balloon device: registers, config space, activation and reset, and
//! the three queues' handling.

use std::io;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::virtio::{
    device_type, read_config_space, ActivateContext, ActivateError, GuestMemoryMmap, QueueEvents,
    VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

/// `VIRTIO_BALLOON_F_REPORTING` (virtio 1.2, section 5.5.3).
pub const VIRTIO_BALLOON_F_REPORTING: u64 = 1 << 5;
/// Features offered.
pub const AVAIL_FEATURES: u64 = VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING;
/// Queue sizes: inflate, deflate, reporting. Linux reports at most 32
/// runs at a time and fits its report to the ring.
pub const QUEUE_SIZES: [u16; 3] = [64, 64, 32];
/// Index of the inflate queue.
pub const INFLATEQ: usize = 0;
/// Index of the deflate queue.
pub const DEFLATEQ: usize = 1;
/// Index of the reporting queue (the third queue the driver sets up when
/// neither statistics nor free page hinting were negotiated).
pub const REPORTINGQ: usize = 2;
/// The balloon's page size: inflate and deflate buffers hold 32-bit page
/// frame numbers of 4 KiB pages.
pub const BALLOON_PAGE_SIZE: u64 = 4096;
/// Size of the config space: `num_pages`, `actual`.
const CONFIG_SIZE: usize = 8;
/// Offset of `actual`, the one field the driver writes.
const ACTUAL_OFFSET: u64 = 4;
/// Most chains served per queue and event; the rest follow on the next
/// turn of the loop.
pub(super) const BURST: usize = 64;

/// Why the balloon device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    /// The activation event fd could not be created.
    #[error("cannot create the virtio-balloon event fd")]
    EventFd(#[source] io::Error),
}

/// Gives guest pages back to the host.
pub trait Discard: Send {
    /// Releases `len` bytes of guest memory at `addr`, which the guest no
    /// longer uses; the next access reads zeros.
    fn discard(&mut self, mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> io::Result<()>;
}

/// The real [`Discard`]: `madvise(MADV_DONTNEED)` on the guest RAM mapping
/// (private and anonymous, so the pages are freed and read back as zeros).
#[derive(Debug, Default)]
pub struct MadviseDiscard;

impl Discard for MadviseDiscard {
    fn discard(&mut self, mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let slice = mem
            .get_slice(addr, len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let host = slice.ptr_guard_mut().as_ptr();
        // SAFETY: `host..host+len` lies inside one region of the guest RAM
        // mapping (get_slice checked it), which stays mapped while `mem`
        // lives. MADV_DONTNEED only drops the pages' contents; the VMM
        // holds no reference into guest memory (all its access is volatile
        // and bounds-checked), and the guest gave these pages up until the
        // device answers the request.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Counters of what the guest handed back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Reports (chains on the reporting queue) answered.
    pub reports: u64,
    /// Bytes of free memory reported and given back to the host.
    pub reported_bytes: u64,
    /// Pages the driver put in the balloon (given back too).
    pub inflated_pages: u64,
    /// Pages the driver took out of the balloon.
    pub deflated_pages: u64,
    /// Ranges or chains refused: not page-aligned, outside guest memory,
    /// on the wrong side (writable/readable), or the discard failed.
    pub refused: u64,
}

/// What activation hands the device.
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<VirtioInterrupt>,
    pub(super) queues: [Queue; 3],
    pub(super) evts: [EventFd; 3],
}

/// A virtio-balloon device that only takes free page reports.
pub struct Balloon<D: Discard = MadviseDiscard> {
    pub(super) discard: D,
    config: [u8; CONFIG_SIZE],
    acked_features: u64,
    /// Written on activation and reset; the event loop then (de)registers
    /// the queue events.
    pub(super) control_evt: EventFd,
    pub(super) active: Option<Active>,
    pub(super) queue_events: QueueEvents,
    pub(super) stats: BalloonStats,
}

impl<D: Discard> std::fmt::Debug for Balloon<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balloon")
            .field("activated", &self.active.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Balloon<MadviseDiscard> {
    /// A balloon that gives reported pages back with `madvise`.
    pub fn new() -> Result<Self, BalloonError> {
        Self::with_discard(MadviseDiscard)
    }
}

impl<D: Discard> Balloon<D> {
    /// A balloon that gives pages back through `discard`.
    pub fn with_discard(discard: D) -> Result<Self, BalloonError> {
        Ok(Self {
            discard,
            config: [0; CONFIG_SIZE],
            acked_features: 0,
            control_evt: EventFd::new(EFD_NONBLOCK).map_err(BalloonError::EventFd)?,
            active: None,
            queue_events: QueueEvents::default(),
            stats: BalloonStats::default(),
        })
    }

    /// What the guest handed back so far.
    pub fn stats(&self) -> BalloonStats {
        self.stats
    }

    /// The `actual` field the driver last wrote (pages in its balloon).
    pub fn actual_pages(&self) -> u32 {
        u32::from_le_bytes([
            self.config[4],
            self.config[5],
            self.config[6],
            self.config[7],
        ])
    }

    /// Serves up to [`BURST`] chains of queue `index`. Returns whether
    /// used buffers were added and whether the burst ran out (chains may
    /// be left).
    pub(super) fn process_queue(&mut self, index: usize) -> (bool, bool) {
        let Some(active) = self.active.as_mut() else {
            return (false, false);
        };
        let mem = &active.mem;
        let queue = &mut active.queues[index];
        let mut used = false;
        for _ in 0..BURST {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return (used, false);
            };
            let head = chain.head_index();
            for desc in chain {
                let ok = if index == REPORTINGQ {
                    report(&mut self.discard, &mut self.stats, mem, &desc)
                } else {
                    balloon_pages(&mut self.discard, &mut self.stats, mem, &desc, index)
                };
                if !ok {
                    self.stats.refused += 1;
                }
            }
            if index == REPORTINGQ {
                self.stats.reports += 1;
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                log::warn!("virtio-balloon: queue {index}: cannot return chain {head}: {e}");
            }
            used = true;
        }
        // The burst ran out: whatever is left follows on the next turn.
        (used, true)
    }

    /// Raises the interrupt after used buffers were added.
    pub(super) fn signal_used(&self) {
        if let Some(active) = &self.active {
            if let Err(e) = active.interrupt.signal_used_queue() {
                log::warn!("virtio-balloon: cannot raise the interrupt: {e}");
            }
        }
    }

    /// Takes the current activation's queue events out of service.
    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            self.queue_events.retire(active.evts);
        }
    }
}

/// One run of a free page report (device-writable): given back whole.
fn report<D: Discard>(
    discard: &mut D,
    stats: &mut BalloonStats,
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
) -> bool {
    let ok = desc.is_write_only() && give_back(discard, mem, desc.addr(), desc.len().into());
    if ok {
        stats.reported_bytes += u64::from(desc.len());
    }
    ok
}

/// One buffer of page frame numbers (driver-readable) on the inflate or
/// deflate queue; inflated pages are given back.
fn balloon_pages<D: Discard>(
    discard: &mut D,
    stats: &mut BalloonStats,
    mem: &GuestMemoryMmap,
    desc: &Descriptor,
    index: usize,
) -> bool {
    if desc.is_write_only() {
        return false;
    }
    let inflate = index == INFLATEQ;
    let (pages, ok) = page_numbers(discard, mem, desc.addr(), desc.len(), inflate);
    if inflate {
        stats.inflated_pages += pages;
    } else {
        stats.deflated_pages += pages;
    }
    ok
}

/// Gives `len` bytes at `addr` back if the range is whole pages inside
/// guest memory.
fn give_back<D: Discard>(
    discard: &mut D,
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u64,
) -> bool {
    let aligned = addr.0 % BALLOON_PAGE_SIZE == 0 && len % BALLOON_PAGE_SIZE == 0 && len > 0;
    let inside = addr
        .0
        .checked_add(len.saturating_sub(1))
        .is_some_and(|last| mem.address_in_range(addr) && mem.address_in_range(GuestAddress(last)));
    if !(aligned && inside) {
        return false;
    }
    match discard.discard(mem, addr, len) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "virtio-balloon: cannot give back {len} bytes at {:#x}: {e}",
                addr.0
            );
            false
        }
    }
}

/// Reads the 32-bit page frame numbers of an inflate or deflate buffer,
/// giving each page back when `inflate`. Returns the pages read and
/// whether the whole buffer was good.
fn page_numbers<D: Discard>(
    discard: &mut D,
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u32,
    inflate: bool,
) -> (u64, bool) {
    if len % 4 != 0 {
        return (0, false);
    }
    let mut pages = 0;
    let mut ok = true;
    for i in 0..u64::from(len / 4) {
        let Some(at) = addr.checked_add(i * 4) else {
            return (pages, false);
        };
        let Ok(pfn) = mem.read_obj::<u32>(at) else {
            return (pages, false);
        };
        let page = GuestAddress(u64::from(u32::from_le(pfn)) * BALLOON_PAGE_SIZE);
        if inflate && !give_back(discard, mem, page, BALLOON_PAGE_SIZE) {
            ok = false;
            continue;
        }
        pages += 1;
    }
    (pages, ok)
}

impl<D: Discard> VirtioDevice for Balloon<D> {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        AVAIL_FEATURES
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & AVAIL_FEATURES;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let end = offset.checked_add(data.len() as u64);
        if offset < ACTUAL_OFFSET || end.is_none_or(|end| end > CONFIG_SIZE as u64) {
            log::warn!(
                "virtio-balloon: guest wrote {} bytes of read-only config at {offset:#x}",
                data.len()
            );
            return;
        }
        let at = offset as usize;
        self.config[at..at + data.len()].copy_from_slice(data);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let (queues, evts) = ctx.take_queues::<3>()?;
        self.retire();
        self.active = Some(Active {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            queues,
            evts,
        });
        self.control_evt.write(1).map_err(ActivateError::EventFd)
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The queues are dropped; the event loop takes their events off
    /// epoll when `control_evt` wakes it. Pages already given back stay
    /// given back.
    fn reset(&mut self) -> bool {
        self.retire();
        self.acked_features = 0;
        self.config = [0; CONFIG_SIZE];
        if let Err(e) = self.control_evt.write(1) {
            log::warn!("virtio-balloon: reset: cannot wake the event loop: {e}");
        }
        true
    }
}
