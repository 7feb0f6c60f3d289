//! Tap devices from `/dev/net/tun`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::types::Mac;

/// Name prefix of the taps husk makes (`husktap0`, `husktap1`…): reading a
/// pod's network leaves them out.
pub const TAP_PREFIX: &str = "husktap";

/// A tap joined to one of the pod's links, open for the VMM.
///
/// The tap is not persistent: it disappears, with its qdisc and filter,
/// when the last copy of `fd` is closed (when the VMM exits).
#[derive(Debug)]
pub struct Tap {
    /// The tap's file descriptor (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`;
    /// the kernel's default vnet header size, 10, until the VMM sets
    /// another with `TUNSETVNETHDRSZ`).
    pub fd: OwnedFd,
    /// The tap's name (`husktap0`).
    pub name: String,
    /// The pod's link it is joined to (`eth0`).
    pub link: String,
    /// The link's MAC, for the guest's NIC.
    pub mac: Mac,
    /// The link's MTU, which the tap has too.
    pub mtu: u32,
}

/// Creating a tap failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateTapError {
    /// `/dev/net/tun` could not be opened.
    #[error("opening /dev/net/tun")]
    OpenTun(#[source] io::Error),
    /// The name does not fit in `IFNAMSIZ`.
    #[error("tap name {0:?} is longer than 15 bytes")]
    NameTooLong(String),
    /// `TUNSETIFF` refused.
    #[error("creating the tap with TUNSETIFF")]
    SetIff(#[source] io::Error),
}

/// Creates a non-persistent tap named `name` in the calling thread's
/// network namespace, with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`.
pub(crate) fn create_tap(name: &str) -> Result<OwnedFd, CreateTapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun") // std opens with O_CLOEXEC
        .map_err(CreateTapError::OpenTun)?;
    // SAFETY: ifreq is plain old data (bytes, integers, pointers in a
    // union); all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(CreateTapError::NameTooLong(name.to_owned()));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which
    // `request` is and outlives the call; `file` is an open tun device.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if result < 0 {
        return Err(CreateTapError::SetIff(io::Error::last_os_error()));
    }
    Ok(file.into())
}
