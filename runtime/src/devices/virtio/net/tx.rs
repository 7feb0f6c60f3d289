//! The transmit path: frames from the guest's transmit chains to the tap.
//!
//! Each chain is one frame: the 12-byte header, then the Ethernet frame,
//! in any split over readable descriptors. The header is copied out of
//! guest memory once, checked against the negotiated features, and that
//! copy is what the tap gets (the guest cannot change it after the
//! check); the frame itself goes to the tap with one `writev` straight
//! from guest memory. A chain that is malformed (a descriptor the device
//! may only write, memory outside the guest, shorter than a header and an
//! Ethernet header, longer than [`MAX_PACKET_LEN`], too many pieces) or
//! whose header asks for offloads that were not negotiated is dropped and
//! given back; the next one goes on. A full tap stalls the queue until
//! the tap is writable again.

use std::io;

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemory, VolatileSlice};

use super::device::Net;
use super::header::{NetHeader, ETH_HLEN, MAX_PACKET_LEN, VNET_HDR_LEN};
use super::rx::MAX_CHAIN_DESCRIPTORS;
use super::tap::{TapBackend, MAX_TX_SLICES};
use crate::devices::virtio::GuestMemoryMmap;

/// Most frames sent per event (see [`super::rx::RX_BURST`]).
pub(super) const TX_BURST: usize = 256;

/// Why a transmit chain was dropped.
#[derive(Debug, thiserror::Error)]
enum BadFrame {
    #[error("a descriptor is write-only")]
    WriteOnly,
    #[error("a descriptor is outside guest memory")]
    OutOfMemory,
    #[error("more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    #[error("more than {MAX_TX_SLICES} pieces of guest memory")]
    TooManyPieces,
    #[error("longer than {MAX_PACKET_LEN} bytes")]
    TooLong,
    #[error("shorter than a virtio-net and an Ethernet header")]
    TooShort,
    #[error("header: {0}")]
    Header(super::header::HeaderError),
    #[error("the tap refused it: {0}")]
    Refused(io::Error),
}

/// What became of one transmit chain.
enum TxOutcome {
    /// The tap took the frame.
    Sent,
    /// The frame was dropped.
    Dropped(BadFrame),
    /// The tap is full: the chain waits.
    TapFull,
}

/// The outcome of one transmit turn.
#[derive(Debug, Default)]
pub(super) struct TxTurn {
    /// Used buffers were added.
    pub(super) used: bool,
    /// The burst ran out with chains still waiting.
    pub(super) more: bool,
}

impl<T: TapBackend> Net<T> {
    /// Sends what the transmit queue holds to the tap, at most
    /// [`TX_BURST`] frames, until the queue is empty or the tap full.
    pub(super) fn process_tx(&mut self) -> TxTurn {
        let mut turn = TxTurn::default();
        let Some(active) = self.active.as_mut() else {
            return turn;
        };
        self.tx_stalled = false;
        for _ in 0..TX_BURST {
            let Some(chain) = active.tx.pop_descriptor_chain(&active.mem) else {
                return turn;
            };
            let head = chain.head_index();
            match send_chain(&mut self.tap, &active.mem, chain, self.acked_features) {
                TxOutcome::Sent => self.stats.tx_frames += 1,
                TxOutcome::Dropped(why) => {
                    log::debug!("virtio-net: dropping transmit chain {head}: {why}");
                    self.stats.tx_dropped += 1;
                }
                TxOutcome::TapFull => {
                    active.tx.go_to_previous_position();
                    self.tx_stalled = true;
                    return turn;
                }
            }
            // A head outside the ring names no chain to give back.
            if head < active.tx.size() {
                if let Err(e) = active.tx.add_used(&active.mem, head, 0) {
                    log::warn!("virtio-net: transmit used ring: {e}");
                }
                turn.used = true;
            }
        }
        turn.more = true;
        turn
    }
}

/// Checks one chain and writes its frame to the tap.
fn send_chain<T: TapBackend>(
    tap: &mut T,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    acked: u64,
) -> TxOutcome {
    let mut empty = [0u8; 0];
    let mut body = [VolatileSlice::from(&mut empty[..]); MAX_TX_SLICES];
    let mut pieces = 0;
    let mut header = [0u8; VNET_HDR_LEN];
    let mut header_len = 0;
    let mut total = 0usize;
    for (count, desc) in chain.enumerate() {
        if count == MAX_CHAIN_DESCRIPTORS {
            return TxOutcome::Dropped(BadFrame::TooManyDescriptors);
        }
        if desc.is_write_only() {
            return TxOutcome::Dropped(BadFrame::WriteOnly);
        }
        let mut len = desc.len() as usize;
        total += len;
        if total > MAX_PACKET_LEN {
            return TxOutcome::Dropped(BadFrame::TooLong);
        }
        let mut addr = desc.addr();
        if header_len < VNET_HDR_LEN {
            let n = len.min(VNET_HDR_LEN - header_len);
            if mem
                .read_slice(&mut header[header_len..header_len + n], addr)
                .is_err()
            {
                return TxOutcome::Dropped(BadFrame::OutOfMemory);
            }
            header_len += n;
            len -= n;
            match addr.checked_add(n as u64) {
                Some(next) => addr = next,
                None => return TxOutcome::Dropped(BadFrame::OutOfMemory),
            }
        }
        for slice in mem.get_slices(addr, len) {
            let Ok(slice) = slice else {
                return TxOutcome::Dropped(BadFrame::OutOfMemory);
            };
            let Some(slot) = body.get_mut(pieces) else {
                return TxOutcome::Dropped(BadFrame::TooManyPieces);
            };
            *slot = slice;
            pieces += 1;
        }
    }
    if total < VNET_HDR_LEN + ETH_HLEN {
        return TxOutcome::Dropped(BadFrame::TooShort);
    }
    let mut checked = NetHeader::from_bytes(&header);
    if let Err(e) = checked.check_tx(acked) {
        return TxOutcome::Dropped(BadFrame::Header(e));
    }
    // Unused on transmit; the tap ignores it anyway.
    checked.num_buffers = 0;
    loop {
        match tap.write_frame(&checked.to_bytes(), &body[..pieces]) {
            Ok(_) => return TxOutcome::Sent,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TxOutcome::TapFull,
            // EIO while the tap is down, EINVAL for a header the kernel
            // refuses: the frame is lost, the queue goes on.
            Err(e) => return TxOutcome::Dropped(BadFrame::Refused(e)),
        }
    }
}
