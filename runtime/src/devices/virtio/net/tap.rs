//! The host end of a virtio-net device: a tap file descriptor, behind the
//! narrow [`TapBackend`] trait so that tests can stand in for it.
//!
//! The VMM never opens a tap or enters a network namespace: whoever
//! starts it opens the tap (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, in the
//! pod's namespace) and lets the VMM inherit the descriptor.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vm_memory::VolatileSlice;

use super::header::VNET_HDR_LEN;

/// Most guest-memory pieces one transmitted frame may come in (the
/// header aside). Linux sends at most `MAX_SKB_FRAGS + 2` (19 by default).
pub const MAX_TX_SLICES: usize = 64;

/// The `ifr_flags` a tap for the device must have.
const REQUIRED_FLAGS: i32 = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
/// The device-type bits of `ifr_flags` (`TUN_TYPE_MASK`).
const TYPE_MASK: i32 = 0x000f;

/// The host end of a virtio-net device.
///
/// Frames cross it with their virtio-net header first, as a tap with
/// `IFF_VNET_HDR` and a 12-byte header size reads and writes them. Reads
/// and writes never block: "nothing now" is `ErrorKind::WouldBlock`. The
/// event loop watches the fd for readability and writability.
pub trait TapBackend: AsRawFd + Send {
    /// Reads one frame into `buf`. Returns the frame's whole length, which
    /// is more than `buf.len()` if the frame did not fit (the rest is lost).
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame: `header`, then `body` in order (guest memory, at
    /// most [`MAX_TX_SLICES`] pieces). Returns the bytes written.
    fn write_frame(
        &mut self,
        header: &[u8; VNET_HDR_LEN],
        body: &[VolatileSlice<'_>],
    ) -> io::Result<usize>;
    /// `TUNSETVNETHDRSZ`: the size of the header in front of each frame.
    fn set_vnet_hdr_size(&mut self, size: usize) -> io::Result<()>;
    /// `TUNSETOFFLOAD`: what the tap may hand over (`TUN_F_*`): partial
    /// checksums, TSO frames.
    fn set_offloads(&mut self, flags: u32) -> io::Result<()>;
}

/// Why a file descriptor cannot be the tap of a virtio-net device.
#[derive(Debug, thiserror::Error)]
pub enum TapFdError {
    /// The number is not an open file descriptor.
    #[error("not an open file descriptor")]
    NotOpen(#[source] io::Error),
    /// `TUNGETIFF` failed: not a tun/tap device, or one not attached to an
    /// interface.
    #[error("not a tap (TUNGETIFF failed)")]
    NotTap(#[source] io::Error),
    /// A tun device, or a tap opened without `IFF_NO_PI` or `IFF_VNET_HDR`.
    #[error("opened with flags {0:#x}; needs IFF_TAP | IFF_NO_PI | IFF_VNET_HDR")]
    Flags(i32),
    /// The descriptor could not be duplicated or made non-blocking.
    #[error("cannot take the tap over")]
    Take(#[source] io::Error),
}

/// `struct ifreq` as far as TUNSETIFF and TUNGETIFF use it: the name and
/// the flags, padded to the kernel's 40 bytes.
#[repr(C)]
pub(crate) struct IfReq {
    /// Interface name, NUL-terminated.
    pub(crate) name: [u8; libc::IFNAMSIZ],
    /// `IFF_*` flags.
    pub(crate) flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    /// An all-zero request for interface `name` (truncated to 15 bytes).
    pub(crate) fn new(name: &str, flags: libc::c_short) -> Self {
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        let len = name.len().min(libc::IFNAMSIZ - 1);
        req.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        req
    }
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// The `ifr_flags` of the tun/tap device behind `fd` (`TUNGETIFF`).
fn tun_flags(fd: RawFd) -> io::Result<i32> {
    let mut req = IfReq::new("", 0);
    // SAFETY: TUNGETIFF writes one `struct ifreq` (40 bytes, the size of
    // `req`) to the pointer; on another kind of file the ioctl fails or
    // writes at most the 4 bytes its number declares.
    let rc = unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i32::from(req.flags) & 0xffff)
}

/// Checks that `fd` is an open tap the device can use: `TUNGETIFF`
/// succeeds and the tap was opened with `IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`.
pub fn check_tap_fd(fd: RawFd) -> Result<(), TapFdError> {
    // SAFETY: F_GETFD takes no pointer; any number is fine to ask about.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(TapFdError::NotOpen(io::Error::last_os_error()));
    }
    let flags = tun_flags(fd).map_err(TapFdError::NotTap)?;
    if flags & REQUIRED_FLAGS != REQUIRED_FLAGS || flags & TYPE_MASK != libc::IFF_TAP {
        return Err(TapFdError::Flags(flags));
    }
    Ok(())
}

/// A tap file descriptor, non-blocking, that the device owns.
#[derive(Debug)]
pub struct Tap {
    file: File,
}

impl Tap {
    /// Takes over a tap the process inherited as descriptor number `fd`:
    /// checks it ([`check_tap_fd`]), then owns a close-on-exec duplicate
    /// of it, made non-blocking. The inherited number stays open until
    /// the process ends; both name the same tap, which goes away with the
    /// VMM process.
    pub fn from_inherited(fd: RawFd) -> Result<Self, TapFdError> {
        check_tap_fd(fd)?;
        // SAFETY: F_DUPFD_CLOEXEC takes no pointer; `fd` was just checked.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(TapFdError::Take(io::Error::last_os_error()));
        }
        // SAFETY: `dup` is a new descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        Self::from_checked(owned)
    }

    /// Takes over `fd`, which must be a tap ([`check_tap_fd`]), and makes
    /// it non-blocking.
    pub fn new(fd: OwnedFd) -> Result<Self, TapFdError> {
        check_tap_fd(fd.as_raw_fd())?;
        Self::from_checked(fd)
    }

    fn from_checked(fd: OwnedFd) -> Result<Self, TapFdError> {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL and F_SETFL take no pointers.
        let set = unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            flags >= 0 && libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
        };
        if !set {
            return Err(TapFdError::Take(io::Error::last_os_error()));
        }
        Ok(Self {
            file: File::from(fd),
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl TapBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    fn write_frame(
        &mut self,
        header: &[u8; VNET_HDR_LEN],
        body: &[VolatileSlice<'_>],
    ) -> io::Result<usize> {
        if body.len() > MAX_TX_SLICES {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // The guards keep the guest memory pointers valid until writev
        // returns.
        let guards: [_; MAX_TX_SLICES] =
            std::array::from_fn(|i| body.get(i).map(|s| s.ptr_guard()));
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_TX_SLICES + 1];
        iovecs[0] = libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        };
        for (iov, guard) in iovecs[1..].iter_mut().zip(guards.iter().flatten()) {
            *iov = libc::iovec {
                iov_base: guard.as_ptr() as *mut libc::c_void,
                iov_len: guard.len(),
            };
        }
        let count = body.len() + 1;
        // SAFETY: the first `count` iovecs point at `header` and at guest
        // memory that `body` borrows (mapped for as long as the borrow
        // lasts), each with its own length; writev only reads them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iovecs.as_ptr(), count as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn set_vnet_hdr_size(&mut self, size: usize) -> io::Result<()> {
        let size = libc::c_int::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value, no pointer.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
