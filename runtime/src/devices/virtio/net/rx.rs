//! The receive path: frames from the tap into the guest's receive buffers.
//!
//! A frame is read from the tap into the device's one frame buffer only
//! when the guest has at least one receive buffer, and stays there until
//! it is delivered: without `MRG_RXBUF` into one descriptor chain, with
//! it into as many chains as it takes, `num_buffers` telling the driver
//! how many. If the guest's buffers run out half-way, every chain taken
//! for the frame is handed back to the ring (the avail index goes back;
//! nothing was published) and the frame waits, with the tap unread, until
//! the guest adds buffers. The chains of a frame are published with one
//! write of the used index, so a driver polling the ring never sees part
//! of a frame.
//!
//! Malformed chains (a descriptor the device may not write, memory
//! outside the guest, more than [`MAX_CHAIN_DESCRIPTORS`] descriptors, or
//! no room at all) are given back unused with length 0. A frame that can
//! never fit (bigger than one chain without `MRG_RXBUF`, or than the whole
//! ring) is dropped and its chains reused for the next frame.

use std::io;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::device::{Net, RxState};
use super::header::{features::MRG_RXBUF, NetHeader, ETH_HLEN, NUM_BUFFERS_OFFSET, VNET_HDR_LEN};
use super::tap::TapBackend;
use crate::devices::virtio::GuestMemoryMmap;

/// Most descriptors the device follows in one chain. Linux uses at most
/// `MAX_SKB_FRAGS + 2`; the bound keeps a looping or huge indirect chain
/// from holding the event loop.
pub const MAX_CHAIN_DESCRIPTORS: usize = 64;
/// Most frames moved per event, so that one busy queue leaves room for the
/// other devices on the loop; the rest goes on at the next turn.
pub(super) const RX_BURST: usize = 256;

/// What became of the frame waiting in the frame buffer.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// In the guest's buffers.
    Delivered,
    /// Can never fit the guest's buffers: dropped.
    Dropped,
    /// The guest has too few buffers for it now: it waits.
    Wait,
}

/// Why a receive chain was given back unused.
#[derive(Debug, thiserror::Error)]
enum BadChain {
    #[error("its head is outside the ring")]
    BadHead,
    #[error("a descriptor is read-only")]
    ReadOnly,
    #[error("a descriptor is outside guest memory")]
    OutOfMemory,
    #[error("more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooLong,
    #[error("no room for the header")]
    NoRoom,
}

/// The outcome of one receive turn.
#[derive(Debug, Default)]
pub(super) struct RxTurn {
    /// Used buffers were added.
    pub(super) used: bool,
    /// The burst ran out with frames still to move.
    pub(super) more: bool,
}

impl<T: TapBackend> Net<T> {
    /// Moves frames from the tap to the guest while there are frames and
    /// buffers, at most [`RX_BURST`] of them.
    pub(super) fn process_rx(&mut self) -> RxTurn {
        let mut turn = RxTurn::default();
        let Some(active) = self.active.as_mut() else {
            return turn;
        };
        if !self.tap_configured {
            return turn;
        }
        let mergeable = self.acked_features & MRG_RXBUF != 0;
        for _ in 0..RX_BURST {
            let len = match self.rx.pending {
                Some(len) => len,
                None => {
                    // Read only into a buffer the guest has given.
                    if !self.rx.tap_readable || !has_buffers(&active.mem, &active.rx) {
                        return turn;
                    }
                    match read_frame(&mut self.tap, &mut self.rx, self.acked_features) {
                        Ok(Some(len)) => len,
                        Ok(None) => {
                            self.stats.rx_dropped += 1;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            if e.kind() != io::ErrorKind::WouldBlock {
                                log::warn!("virtio-net: tap read: {e}");
                            }
                            self.rx.tap_readable = false;
                            return turn;
                        }
                    }
                }
            };
            self.rx.pending = Some(len);
            let (delivery, used) = deliver(
                &active.mem,
                &mut active.rx,
                &mut self.rx,
                len,
                mergeable,
                &mut self.stats.bad_chains,
            );
            turn.used |= used;
            match delivery {
                Delivery::Delivered => self.stats.rx_frames += 1,
                Delivery::Dropped => self.stats.rx_dropped += 1,
                Delivery::Wait => return turn,
            }
            self.rx.pending = None;
        }
        turn.more = true;
        turn
    }
}

/// Whether the driver has made a receive buffer available.
fn has_buffers(mem: &GuestMemoryMmap, queue: &Queue) -> bool {
    queue
        .avail_idx(mem, Ordering::Acquire)
        .is_ok_and(|idx| idx.0 != queue.next_avail())
}

/// Reads one frame into the frame buffer and fits its header to the
/// driver. `Ok(None)`: a frame came but cannot be given to this driver.
fn read_frame<T: TapBackend>(
    tap: &mut T,
    rx: &mut RxState,
    acked: u64,
) -> io::Result<Option<usize>> {
    let len = tap.read_frame(&mut rx.frame)?;
    if len > rx.frame.len() || len < VNET_HDR_LEN + ETH_HLEN {
        log::debug!("virtio-net: dropping a {len}-byte frame from the tap");
        return Ok(None);
    }
    let mut raw = [0u8; VNET_HDR_LEN];
    raw.copy_from_slice(&rx.frame[..VNET_HDR_LEN]);
    let mut header = NetHeader::from_bytes(&raw);
    if let Err(e) = header.fit_rx(acked) {
        log::debug!("virtio-net: dropping a frame from the tap: {e}");
        return Ok(None);
    }
    // Without MRG_RXBUF the field says 1; with it, it is set on delivery.
    header.num_buffers = 1;
    rx.frame[..VNET_HDR_LEN].copy_from_slice(&header.to_bytes());
    Ok(Some(len))
}

/// Puts the pending frame (`len` bytes of `rx.frame`) into receive
/// buffers. Returns what became of it and whether used buffers were added.
fn deliver(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    rx: &mut RxState,
    len: usize,
    mergeable: bool,
    bad_chains: &mut u64,
) -> (Delivery, bool) {
    let frame = &rx.frame[..len];
    rx.used.clear();
    rx.broken.clear();
    let mut used_any = false;
    // Chains taken for this frame and not yet published (they go back to
    // the ring if the frame has to wait), and where `num_buffers` lives.
    let mut taken: u16 = 0;
    let mut num_buffers_at = [None; 2];
    let mut offset = 0;
    let outcome = loop {
        if taken == queue.size() {
            // The whole ring cannot hold it: it never will.
            log::debug!("virtio-net: a {len}-byte frame does not fit the receive ring");
            break Delivery::Dropped;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break Delivery::Wait;
        };
        taken += 1;
        let head = chain.head_index();
        let first = rx.used.is_empty();
        let filled = if head < queue.size() {
            fill_chain(mem, chain, frame, offset, &mut num_buffers_at)
        } else {
            Err(BadChain::BadHead)
        };
        let why = match filled {
            // The header must be whole in the first buffer.
            Ok(written) if first && written < VNET_HDR_LEN => BadChain::NoRoom,
            Ok(written) => {
                rx.used.push((head, written as u32));
                offset += written;
                if offset == frame.len() {
                    break Delivery::Delivered;
                }
                if !mergeable {
                    log::debug!("virtio-net: a {len}-byte frame does not fit one receive buffer");
                    break Delivery::Dropped;
                }
                continue;
            }
            Err(why) => why,
        };
        log::debug!("virtio-net: bad receive chain {head}: {why}");
        *bad_chains += 1;
        if first {
            // Nothing of the frame comes before it: it can go back now.
            taken -= 1;
            if head < queue.size() {
                used_any |= queue.add_used(mem, head, 0).is_ok();
            }
        } else if head < queue.size() {
            // Published after the frame's own chains, which must stay
            // together in the used ring.
            rx.broken.push(head);
        }
    };
    if outcome != Delivery::Delivered {
        for _ in 0..taken {
            queue.go_to_previous_position();
        }
        return (outcome, used_any);
    }
    if mergeable {
        let buffers = rx.used.len() as u16;
        for (at, byte) in num_buffers_at.iter().zip(buffers.to_le_bytes()) {
            if let Some(addr) = at {
                let _ = mem.write_obj(byte, *addr);
            }
        }
    }
    if let Err(e) = add_used_batch(mem, queue, &rx.used, &rx.broken) {
        log::warn!("virtio-net: receive used ring: {e}");
    }
    (Delivery::Delivered, true)
}

/// Writes `frame[offset..]` into the chain's writable descriptors, as far
/// as they go, and notes the guest addresses of the header's
/// `num_buffers` bytes if they pass by. Returns the bytes written.
fn fill_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    frame: &[u8],
    offset: usize,
    num_buffers_at: &mut [Option<GuestAddress>; 2],
) -> Result<usize, BadChain> {
    let mut at = offset;
    for (count, desc) in chain.enumerate() {
        if count == MAX_CHAIN_DESCRIPTORS {
            return Err(BadChain::TooLong);
        }
        if !desc.is_write_only() {
            return Err(BadChain::ReadOnly);
        }
        let n = (desc.len() as usize).min(frame.len() - at);
        if n > 0 {
            mem.write_slice(&frame[at..at + n], desc.addr())
                .map_err(|_| BadChain::OutOfMemory)?;
            for (i, slot) in num_buffers_at.iter_mut().enumerate() {
                let byte = NUM_BUFFERS_OFFSET + i;
                if (at..at + n).contains(&byte) {
                    *slot = desc.addr().checked_add((byte - at) as u64);
                }
            }
            at += n;
        }
        if at == frame.len() {
            break;
        }
    }
    match at - offset {
        0 => Err(BadChain::NoRoom),
        written => Ok(written),
    }
}

/// Adds `frame` (head, length used) and then `broken` (heads, nothing
/// written) to the used ring, and only then publishes them all with one
/// write of the used index.
fn add_used_batch(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    frame: &[(u16, u32)],
    broken: &[u16],
) -> Result<(), vm_memory::GuestMemoryError> {
    let size = queue.size();
    let ring = GuestAddress(queue.used_ring());
    let start = queue.next_used();
    let entries = frame.iter().copied().chain(broken.iter().map(|&h| (h, 0)));
    let mut next = start;
    for (head, len) in entries {
        let slot = u64::from(next % size);
        // The used ring: flags, idx, then 8-byte (id, len) elements.
        let addr = ring
            .checked_add(4 + 8 * slot)
            .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(ring))?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, addr)?;
        next = next.wrapping_add(1);
    }
    let idx = ring
        .checked_add(2)
        .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(ring))?;
    mem.store(next.to_le(), idx, Ordering::Release)?;
    queue.set_next_used(next);
    Ok(())
}
