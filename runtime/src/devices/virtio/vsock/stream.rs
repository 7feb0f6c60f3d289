//! The host side of vsock connections, behind narrow traits so that the
//! connection state machine runs on Unix sockets in the VMM and on
//! in-memory streams in tests.

use std::ffi::OsString;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use vm_memory::{ReadVolatile, VolatileMemoryError, WriteVolatile};

/// One host-side byte stream of a connection. Reads and writes go straight
/// between the stream and guest memory; both must never block.
pub trait HostStream: ReadVolatile + WriteVolatile {
    /// Closes the write direction: the host reads EOF after what was sent.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl HostStream for UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Opens host streams for guest-initiated connections.
pub trait Backend {
    /// The streams it opens.
    type Stream: HostStream;
    /// Connects, without blocking, to whatever serves host port `port`.
    fn connect(&mut self, port: u32) -> io::Result<Self::Stream>;
}

/// Guest connections to host port P go to the Unix socket `<prefix>_<P>`.
#[derive(Debug)]
pub struct UdsBackend {
    prefix: PathBuf,
}

impl UdsBackend {
    /// A backend for the device socket at `uds_path`.
    pub fn new(uds_path: &Path) -> Self {
        Self {
            prefix: uds_path.to_path_buf(),
        }
    }

    /// The socket path for host port `port`.
    pub fn path_for(&self, port: u32) -> PathBuf {
        let mut p = OsString::from(self.prefix.as_os_str());
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }
}

impl Backend for UdsBackend {
    type Stream = UnixStream;

    fn connect(&mut self, port: u32) -> io::Result<UnixStream> {
        let addr = UnixAddr::new(&self.path_for(port)).map_err(io::Error::from)?;
        // Non-blocking from the start: a listener with a full backlog
        // answers EAGAIN instead of stalling the event loop.
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        connect(fd.as_raw_fd(), &addr)?;
        Ok(UnixStream::from(fd))
    }
}

/// The I/O error inside a volatile-memory error.
pub fn io_error(e: VolatileMemoryError) -> io::Error {
    match e {
        VolatileMemoryError::IOError(e) => e,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn guest_connections_reach_the_port_socket() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("v.sock");
        let mut backend = UdsBackend::new(&base);
        assert_eq!(backend.path_for(1024), dir.path().join("v.sock_1024"));

        let err = backend.connect(1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        let listener = UnixListener::bind(backend.path_for(1024)).unwrap();
        let mut ours = backend.connect(1024).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        theirs.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        ours.set_nonblocking(false).unwrap();
        ours.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        ours.shutdown_write().unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn an_overlong_path_is_an_error_not_a_panic() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert!(UdsBackend::new(&long).connect(1).is_err());
    }
}
