//! In-memory host streams and a scripted backend for the state machine
//! tests, and helpers to build guest packets.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::rc::Rc;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

use super::packet::{op, Header, HOST_CID, TYPE_STREAM};
use super::stream::{Backend, HostStream};

pub const GUEST_CID: u64 = 3;

/// What the host side of a [`MockStream`] did and will do.
#[derive(Debug)]
pub struct MockState {
    /// Bytes the host has written, for the device to read.
    pub input: VecDeque<u8>,
    /// The host shut its write side: reads return EOF once `input` is empty.
    pub eof: bool,
    /// Bytes the device has written.
    pub output: Vec<u8>,
    /// How many more bytes the host takes before writes would block.
    pub room: usize,
    /// Writes fail with this.
    pub write_error: Option<io::ErrorKind>,
    /// Reads fail with this.
    pub read_error: Option<io::ErrorKind>,
    /// The device shut its write side.
    pub write_shut: bool,
    /// Read calls made.
    pub reads: usize,
}

/// A host stream whose other end the test holds.
#[derive(Debug, Clone)]
pub struct MockStream(pub Rc<RefCell<MockState>>);

impl Default for MockStream {
    fn default() -> Self {
        Self(Rc::new(RefCell::new(MockState {
            input: VecDeque::new(),
            eof: false,
            output: Vec::new(),
            room: usize::MAX,
            write_error: None,
            read_error: None,
            write_shut: false,
            reads: 0,
        })))
    }
}

impl MockStream {
    pub fn feed(&self, bytes: &[u8]) {
        self.0.borrow_mut().input.extend(bytes);
    }

    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().output)
    }

    pub fn state(&self) -> std::cell::RefMut<'_, MockState> {
        self.0.borrow_mut()
    }
}

fn err(kind: io::ErrorKind) -> VolatileMemoryError {
    VolatileMemoryError::IOError(kind.into())
}

impl ReadVolatile for MockStream {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut s = self.0.borrow_mut();
        s.reads += 1;
        if let Some(kind) = s.read_error {
            return Err(err(kind));
        }
        if s.input.is_empty() {
            return if s.eof {
                Ok(0)
            } else {
                Err(err(io::ErrorKind::WouldBlock))
            };
        }
        let n = buf.len().min(s.input.len());
        let bytes: Vec<u8> = s.input.drain(..n).collect();
        buf.copy_from(&bytes);
        Ok(n)
    }
}

impl WriteVolatile for MockStream {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut s = self.0.borrow_mut();
        if let Some(kind) = s.write_error {
            return Err(err(kind));
        }
        if s.write_shut {
            return Err(err(io::ErrorKind::BrokenPipe));
        }
        if s.room == 0 {
            return Err(err(io::ErrorKind::WouldBlock));
        }
        let n = buf.len().min(s.room);
        let mut bytes = vec![0u8; n];
        buf.copy_to(&mut bytes[..]);
        s.output.extend_from_slice(&bytes);
        s.room -= n;
        Ok(n)
    }
}

impl HostStream for MockStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.borrow_mut().write_shut = true;
        Ok(())
    }
}

/// Serves the ports it was given streams for; refuses the others.
#[derive(Debug, Default)]
pub struct MockBackend {
    pub listeners: HashMap<u32, VecDeque<MockStream>>,
    pub attempts: Vec<u32>,
}

impl MockBackend {
    /// Lets the next guest connection to `port` reach a new stream, and
    /// returns the test's handle to it.
    pub fn listen(&mut self, port: u32) -> MockStream {
        let s = MockStream::default();
        self.listeners.entry(port).or_default().push_back(s.clone());
        s
    }
}

impl Backend for MockBackend {
    type Stream = MockStream;

    fn connect(&mut self, port: u32) -> io::Result<MockStream> {
        self.attempts.push(port);
        self.listeners
            .get_mut(&port)
            .and_then(|q| q.pop_front())
            .ok_or_else(|| io::ErrorKind::ConnectionRefused.into())
    }
}

/// A guest packet header from guest port `src` to host port `dst`, with
/// 64 KiB of credit and nothing consumed.
pub fn guest_hdr(op: u16, src: u32, dst: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: src,
        dst_port: dst,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

/// An `OP_RW` header for `len` bytes.
pub fn rw_hdr(src: u32, dst: u32, len: usize) -> Header {
    Header {
        len: len as u32,
        ..guest_hdr(op::RW, src, dst)
    }
}

/// `data` as a slice the state machine can take (a stand-in for guest
/// memory).
pub fn slice(data: &mut [u8]) -> VolatileSlice<'_, ()> {
    VolatileSlice::from(data)
}
