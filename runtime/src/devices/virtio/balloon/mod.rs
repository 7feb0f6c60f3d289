//! virtio-balloon, for free page reporting only.
//!
//! A pod's guest touches memory while it boots (the initramfs image the
//! VMM wrote, the kernel's init sections, the boot allocations of the
//! agent) and frees much of it; without help those pages stay resident on
//! the host for the pod's whole life. With `VIRTIO_BALLOON_F_REPORTING`
//! the guest's page allocator hands runs of free pages of at least
//! [`REPORTING_ORDER`] to the device, which gives them back to the host
//! (`madvise(MADV_DONTNEED)` on the anonymous guest RAM mapping: the next
//! guest access faults in a zero page) and returns the buffers. The guest
//! does not touch a run until the device has answered.
//!
//! The balloon itself is never inflated: `num_pages` stays 0. A driver
//! that inflates anyway has those pages discarded the same way (they are
//! its to give); deflation needs nothing from the host. Features offered:
//! `VERSION_1` and `REPORTING`; no statistics queue, no free page hinting,
//! no page poisoning, so the queues are inflate, deflate and reporting.
//!
//! [`Balloon`] is plain state behind a mutex: the transport activates and
//! resets it on a vCPU thread, the VMM thread's event loop serves its
//! queues. How memory goes back to the host is a [`Discard`], so the tests
//! check every queue's handling against real guest memory without KVM.

mod device;
mod event_handler;

pub use device::{Balloon, BalloonError, BalloonStats, Discard, MadviseDiscard};

/// Smallest run of free pages the guest reports, as a page order
/// (8: 1 MiB), set through the kernel command line. Linux's default is the
/// pageblock order, which is 4 MiB in a guest kernel without huge pages:
/// too coarse for a guest whose free memory after boot is in smaller
/// pieces.
pub const REPORTING_ORDER: u32 = 8;

/// The kernel command-line parameter that sets [`REPORTING_ORDER`].
pub fn reporting_order_param() -> String {
    format!("page_reporting.page_reporting_order={REPORTING_ORDER}")
}

#[cfg(test)]
mod tests;
