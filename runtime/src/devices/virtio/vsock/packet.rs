//! The virtio-vsock packet header as plain data (virtio 1.2, section 5.10.6).
//!
//! The device copies every header out of guest memory once (virtio-vsock's
//! `VsockPacket` does) and works on this copy, so a guest rewriting the
//! header behind our back changes nothing.

use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;

/// Size of a packet header on the wire.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;

/// The host's context id.
pub const HOST_CID: u64 = 2;

/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type husk serves.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// The sender will not receive and/or send any more.
    pub const SHUTDOWN: u16 = 4;
    /// Stream data.
    pub const RW: u16 = 5;
    /// The sender's receive credit changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for the receiver's credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `OP_SHUTDOWN` flags.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
    /// Both directions.
    pub const BOTH: u32 = RCV | SEND;
}

/// A packet header, in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags ([`shutdown`] for `OP_SHUTDOWN`).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever.
    pub fwd_cnt: u32,
}

impl Header {
    /// The header as it goes on the wire (little endian, packed).
    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parses a header from its wire form.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header of a packet parsed from a descriptor chain.
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Self {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// The `OP_RST` the host sends in answer to `self` (a guest packet):
    /// addresses swapped, same socket type, no credit.
    pub fn rst_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: self.type_,
            op: op::RST,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_round_trips_and_matches_virtio_vsock() {
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 0x1122_3344,
            dst_port: 1024,
            len: 17,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0xa5,
            buf_alloc: 1 << 18,
            fwd_cnt: 0xdead_beef,
        };
        let mut bytes = h.to_bytes();
        assert_eq!(Header::from_bytes(&bytes), h);

        // virtio-vsock reads the same fields from the same bytes.
        // SAFETY: `bytes` outlives `pkt`, and nothing else touches it meanwhile.
        let mut pkt = unsafe { VsockPacket::new(&mut bytes, None) }.unwrap();
        pkt.set_header_from_raw(&h.to_bytes()).unwrap();
        assert_eq!(Header::from_packet(&pkt), h);
    }

    #[test]
    fn rst_reply_swaps_addresses() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 5,
            dst_port: 6,
            type_: 2,
            op: op::REQUEST,
            buf_alloc: 9,
            ..Header::default()
        };
        let r = h.rst_reply();
        assert_eq!((r.src_cid, r.dst_cid, r.src_port, r.dst_port), (2, 3, 6, 5));
        assert_eq!((r.op, r.type_, r.buf_alloc, r.len), (op::RST, 2, 0, 0));
    }
}
