//! The virtio-net header as plain data, the feature bits, and the rules
//! that tie them together: which offloads a header may ask for given what
//! the driver negotiated, and which `TUN_F_*` offloads the tap may use.
//!
//! With `VIRTIO_F_VERSION_1` the header is always `struct
//! virtio_net_hdr_v1` (virtio 1.2, section 5.1.6): 12 bytes, little
//! endian, `num_buffers` included whether or not `MRG_RXBUF` was
//! negotiated. A tap with `TUNSETVNETHDRSZ` 12 reads and writes the same
//! layout (it ignores `num_buffers` on write and skips it on read), so a
//! frame crosses between the two with its header in place.

use virtio_bindings::virtio_net as vn;

use crate::devices::virtio::VIRTIO_F_VERSION_1;

/// Size of the virtio-net header in use (`struct virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;
/// Size of an Ethernet header: the shortest frame either way.
pub const ETH_HLEN: usize = 14;
/// Size of an 802.1Q tag.
const VLAN_HLEN: usize = 4;
/// Largest IP packet, which is also the largest a GSO frame carries.
const MAX_IP_PACKET: usize = 65535;
/// Largest Ethernet frame either way: a 64 KiB IP packet (a GSO frame)
/// behind an Ethernet header and a VLAN tag.
pub const MAX_FRAME_LEN: usize = MAX_IP_PACKET + ETH_HLEN + VLAN_HLEN;
/// Largest packet on a queue or the tap: the header and the largest frame.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Offset of `num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;

/// virtio-net feature bits (virtio 1.2, section 5.1.3), as masks.
pub mod features {
    use super::vn;

    /// The driver may leave checksums to the device (host side).
    pub const CSUM: u64 = 1 << vn::VIRTIO_NET_F_CSUM;
    /// The driver takes frames with partial or unchecked checksums.
    pub const GUEST_CSUM: u64 = 1 << vn::VIRTIO_NET_F_GUEST_CSUM;
    /// The config space carries the device MTU.
    pub const MTU: u64 = 1 << vn::VIRTIO_NET_F_MTU;
    /// The config space carries the MAC address.
    pub const MAC: u64 = 1 << vn::VIRTIO_NET_F_MAC;
    /// The driver takes TCP/IPv4 GSO frames.
    pub const GUEST_TSO4: u64 = 1 << vn::VIRTIO_NET_F_GUEST_TSO4;
    /// The driver takes TCP/IPv6 GSO frames.
    pub const GUEST_TSO6: u64 = 1 << vn::VIRTIO_NET_F_GUEST_TSO6;
    /// The device takes TCP/IPv4 GSO frames.
    pub const HOST_TSO4: u64 = 1 << vn::VIRTIO_NET_F_HOST_TSO4;
    /// The device takes TCP/IPv6 GSO frames.
    pub const HOST_TSO6: u64 = 1 << vn::VIRTIO_NET_F_HOST_TSO6;
    /// A received frame may span several receive buffers.
    pub const MRG_RXBUF: u64 = 1 << vn::VIRTIO_NET_F_MRG_RXBUF;
    /// The config space carries the link status.
    pub const STATUS: u64 = 1 << vn::VIRTIO_NET_F_STATUS;
}
use features::*;

/// Everything the device offers. Not offered: UFO, USO and ECN (the
/// guest segments those itself), the control queue, multiqueue, event
/// index and indirect descriptors.
pub const AVAIL_FEATURES: u64 = VIRTIO_F_VERSION_1
    | CSUM
    | GUEST_CSUM
    | MTU
    | MAC
    | GUEST_TSO4
    | GUEST_TSO6
    | HOST_TSO4
    | HOST_TSO6
    | MRG_RXBUF
    | STATUS;

/// `flags`: the checksum from `csum_start` on is still to be computed.
pub const F_NEEDS_CSUM: u8 = vn::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// `flags`: the checksum was already checked (receive only).
pub const F_DATA_VALID: u8 = vn::VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = vn::VIRTIO_NET_HDR_GSO_NONE as u8;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = vn::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = vn::VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// `struct virtio_net_hdr_v1`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHeader {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, with bit 7 for ECN.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Payload size of each segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// How many receive buffers the frame spans.
    pub num_buffers: u16,
}

/// Why a header cannot pass with the features the driver negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Flags the negotiated features do not allow.
    #[error("header flags {0:#x} not allowed by the negotiated features")]
    Flags(u8),
    /// A GSO type the negotiated features do not allow.
    #[error("GSO type {0:#x} not negotiated")]
    GsoType(u8),
}

impl NetHeader {
    /// Decodes a header (little endian).
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(NUM_BUFFERS_OFFSET),
        }
    }

    /// Encodes the header (little endian).
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        let fields = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&field.to_le_bytes());
        }
        b
    }

    /// Checks a header the driver sent against what it negotiated: a
    /// partial checksum only with `CSUM`, GSO only of a negotiated
    /// `HOST_TSO*` kind (no ECN, no UDP), nothing the driver must not set.
    /// The kernel checks the offsets and sizes when the tap takes the
    /// frame.
    pub fn check_tx(&self, acked: u64) -> Result<(), HeaderError> {
        let allowed_flags = if acked & CSUM != 0 { F_NEEDS_CSUM } else { 0 };
        if self.flags & !allowed_flags != 0 {
            return Err(HeaderError::Flags(self.flags));
        }
        match self.gso_type {
            GSO_NONE => Ok(()),
            GSO_TCPV4 if acked & HOST_TSO4 != 0 => Ok(()),
            GSO_TCPV6 if acked & HOST_TSO6 != 0 => Ok(()),
            other => Err(HeaderError::GsoType(other)),
        }
    }

    /// Fits a header the tap produced to what the driver negotiated:
    /// without `GUEST_CSUM` the flags are cleared (a checked checksum is
    /// only a hint) and a partial checksum is refused; GSO only of a
    /// negotiated `GUEST_TSO*` kind. The tap's offloads normally keep
    /// everything else away; frames it queued under an earlier
    /// negotiation can still come through after a reset.
    pub fn fit_rx(&mut self, acked: u64) -> Result<(), HeaderError> {
        let csum = acked & GUEST_CSUM != 0;
        if csum {
            self.flags &= F_NEEDS_CSUM | F_DATA_VALID;
        } else if self.flags & F_NEEDS_CSUM != 0 {
            return Err(HeaderError::Flags(self.flags));
        } else {
            self.flags = 0;
        }
        match self.gso_type {
            GSO_NONE => Ok(()),
            GSO_TCPV4 if csum && acked & GUEST_TSO4 != 0 => Ok(()),
            GSO_TCPV6 if csum && acked & GUEST_TSO6 != 0 => Ok(()),
            other => Err(HeaderError::GsoType(other)),
        }
    }
}

/// The `TUNSETOFFLOAD` flags for a driver's features: what the tap may
/// hand the device. Partial checksums only if the driver takes them, and
/// TSO only on top of that (the kernel ignores TSO without checksum
/// offload too).
pub fn tap_offloads(acked: u64) -> u32 {
    if acked & GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if acked & GUEST_TSO4 != 0 {
        flags |= libc::TUN_F_TSO4;
    }
    if acked & GUEST_TSO6 != 0 {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_little_endian() {
        let h = NetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 0x0102,
            gso_size: 1448,
            csum_start: 54,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.to_bytes();
        assert_eq!(b[2..4], [0x02, 0x01]);
        assert_eq!(b[10..12], [3, 0]);
        assert_eq!(NetHeader::from_bytes(&b), h);
    }

    #[test]
    fn offloads_follow_the_guest_features() {
        assert_eq!(tap_offloads(0), 0);
        // TSO without checksum offload means nothing.
        assert_eq!(tap_offloads(GUEST_TSO4 | GUEST_TSO6), 0);
        assert_eq!(tap_offloads(GUEST_CSUM), libc::TUN_F_CSUM);
        assert_eq!(
            tap_offloads(GUEST_CSUM | GUEST_TSO4),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4
        );
        assert_eq!(
            tap_offloads(AVAIL_FEATURES),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
        // Host-side features change nothing the tap hands us.
        assert_eq!(tap_offloads(CSUM | HOST_TSO4 | HOST_TSO6 | MRG_RXBUF), 0);
    }

    #[test]
    fn tx_headers_ask_only_for_what_was_negotiated() {
        let plain = NetHeader::default();
        assert_eq!(plain.check_tx(0), Ok(()));
        let csum = NetHeader {
            flags: F_NEEDS_CSUM,
            ..plain
        };
        assert_eq!(csum.check_tx(0), Err(HeaderError::Flags(F_NEEDS_CSUM)));
        assert_eq!(csum.check_tx(CSUM), Ok(()));
        let valid = NetHeader {
            flags: F_DATA_VALID,
            ..plain
        };
        assert!(valid.check_tx(CSUM).is_err());
        let tso4 = NetHeader {
            gso_type: GSO_TCPV4,
            ..csum
        };
        assert_eq!(tso4.check_tx(CSUM), Err(HeaderError::GsoType(GSO_TCPV4)));
        assert_eq!(tso4.check_tx(CSUM | HOST_TSO4), Ok(()));
        let tso6 = NetHeader {
            gso_type: GSO_TCPV6,
            ..csum
        };
        assert!(tso6.check_tx(CSUM | HOST_TSO4).is_err());
        assert_eq!(tso6.check_tx(CSUM | HOST_TSO6), Ok(()));
        for gso_type in [3, 5, GSO_TCPV4 | 0x80, 0xff] {
            let h = NetHeader { gso_type, ..csum };
            assert!(h.check_tx(AVAIL_FEATURES).is_err(), "{gso_type:#x}");
        }
    }

    fn fitted(mut h: NetHeader, acked: u64) -> Result<NetHeader, HeaderError> {
        h.fit_rx(acked).map(|()| h)
    }

    #[test]
    fn rx_headers_are_fitted_or_refused() {
        let valid = NetHeader {
            flags: F_DATA_VALID | 0x40,
            ..NetHeader::default()
        };
        assert_eq!(fitted(valid, GUEST_CSUM).unwrap().flags, F_DATA_VALID);
        assert_eq!(fitted(valid, 0).unwrap().flags, 0);

        let partial = NetHeader {
            flags: F_NEEDS_CSUM,
            ..NetHeader::default()
        };
        assert_eq!(fitted(partial, 0), Err(HeaderError::Flags(F_NEEDS_CSUM)));
        assert_eq!(fitted(partial, GUEST_CSUM), Ok(partial));

        let tso4 = NetHeader {
            gso_type: GSO_TCPV4,
            ..partial
        };
        assert!(fitted(tso4, GUEST_CSUM).is_err());
        assert!(fitted(tso4, GUEST_TSO4).is_err());
        assert_eq!(fitted(tso4, GUEST_CSUM | GUEST_TSO4), Ok(tso4));
        let tso6 = NetHeader {
            gso_type: GSO_TCPV6,
            ..partial
        };
        assert!(fitted(tso6, GUEST_CSUM | GUEST_TSO4).is_err());
        assert_eq!(fitted(tso6, GUEST_CSUM | GUEST_TSO6), Ok(tso6));
        let udp = NetHeader {
            gso_type: 3,
            ..partial
        };
        assert_eq!(fitted(udp, AVAIL_FEATURES), Err(HeaderError::GsoType(3)));
    }
}
