//! A bounded byte ring for data on its way to a slow host stream.
//!
//! Empty until first needed, then grown in powers of two up to its bound,
//! and kept: a connection whose host side is sometimes slow does not
//! allocate per packet.

use std::io;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{VolatileSlice, WriteVolatile};

use super::stream::io_error;

const MIN_CAPACITY: usize = 4096;

/// A FIFO of bytes holding at most `max` of them.
#[derive(Debug)]
pub struct RingBuf {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    max: usize,
}

impl RingBuf {
    /// An empty ring that will hold up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            len: 0,
            max,
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left before the bound.
    pub fn free(&self) -> usize {
        self.max - self.len
    }

    /// Bytes currently allocated.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn reserve(&mut self, extra: usize) {
        let needed = self.len + extra;
        if needed <= self.buf.len() {
            return;
        }
        let cap = needed.next_power_of_two().max(MIN_CAPACITY).min(self.max);
        let mut grown = vec![0u8; cap];
        let (a, b) = self.segments();
        grown[..a.len()].copy_from_slice(a);
        grown[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = grown;
        self.head = 0;
    }

    fn segments(&self) -> (&[u8], &[u8]) {
        let cap = self.buf.len();
        if self.len == 0 {
            return (&[], &[]);
        }
        let first = self.len.min(cap - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    /// Appends all of `data`, or nothing if it does not fit.
    pub fn push<B: BitmapSlice>(&mut self, data: &VolatileSlice<'_, B>) -> bool {
        let n = data.len();
        if n > self.free() {
            return false;
        }
        if n == 0 {
            return true;
        }
        self.reserve(n);
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap;
        let first = n.min(cap - tail);
        data.copy_to(&mut self.buf[tail..tail + first]);
        if first < n {
            // `first..n` is in bounds of `data`: n == data.len().
            if let Ok(rest) = data.offset(first) {
                rest.copy_to(&mut self.buf[..n - first]);
            }
        }
        self.len += n;
        true
    }

    /// Appends all of `data`, or nothing if it does not fit.
    #[cfg(test)]
    pub fn push_bytes(&mut self, data: &[u8]) -> bool {
        let mut copy = [0u8; 64];
        let mut done = 0;
        if data.len() > self.free() {
            return false;
        }
        while done < data.len() {
            let n = (data.len() - done).min(copy.len());
            copy[..n].copy_from_slice(&data[done..done + n]);
            let slice = VolatileSlice::from(&mut copy[..n]);
            self.push(&slice);
            done += n;
        }
        true
    }

    /// Writes held bytes to `out` until the ring is empty or `out` would
    /// block. Returns how many bytes left the ring; other write errors are
    /// returned as they are (the bytes written before stay written).
    pub fn write_to<W: WriteVolatile>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let cap = self.buf.len();
            let seg = self.len.min(cap - self.head);
            let slice = VolatileSlice::from(&mut self.buf[self.head..self.head + seg]);
            match out.write_volatile(&slice).map_err(io_error) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head = (self.head + n) % cap;
                    self.len -= n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.len == 0 {
            self.head = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::VolatileMemoryError;

    /// Accepts at most `room` bytes, then would block.
    struct Sink {
        out: Vec<u8>,
        room: usize,
    }

    impl WriteVolatile for Sink {
        fn write_volatile<B: BitmapSlice>(
            &mut self,
            buf: &VolatileSlice<B>,
        ) -> Result<usize, VolatileMemoryError> {
            if self.room == 0 {
                return Err(VolatileMemoryError::IOError(
                    io::ErrorKind::WouldBlock.into(),
                ));
            }
            let n = buf.len().min(self.room);
            let mut tmp = vec![0u8; n];
            buf.copy_to(&mut tmp[..]);
            self.out.extend_from_slice(&tmp);
            self.room -= n;
            Ok(n)
        }
    }

    fn bytes(range: std::ops::Range<u32>) -> Vec<u8> {
        range.map(|i| i as u8).collect()
    }

    #[test]
    fn fifo_across_the_wrap_and_bounded() {
        let mut r = RingBuf::new(8192);
        assert_eq!(r.capacity(), 0);
        let data = bytes(0..3000);
        assert!(r.push_bytes(&data));
        assert_eq!(r.capacity(), 4096);
        let mut sink = Sink {
            out: Vec::new(),
            room: 2500,
        };
        assert_eq!(r.write_to(&mut sink).unwrap(), 2500);
        assert_eq!(r.len(), 500);
        // Wraps around the end of the 4 KiB buffer without growing.
        let more = bytes(3000..6000);
        assert!(r.push_bytes(&more));
        assert_eq!(r.capacity(), 4096);
        // Grows (and linearises) past 4 KiB, never past the bound.
        let big = bytes(6000..8000);
        assert!(r.push_bytes(&big));
        assert_eq!(r.capacity(), 8192);
        assert_eq!(r.len(), 5500);
        assert!(!r.push_bytes(&bytes(0..2693)), "over the bound");
        assert_eq!(r.len(), 5500, "a refused push leaves the ring as it was");
        sink.room = usize::MAX;
        assert_eq!(r.write_to(&mut sink).unwrap(), 5500);
        assert!(r.is_empty());
        assert_eq!(sink.out, bytes(0..8000));
    }

    #[test]
    fn volatile_push_and_write_errors() {
        let mut r = RingBuf::new(16);
        let mut src = *b"0123456789abcdefXYZ";
        assert!(!r.push(&VolatileSlice::from(&mut src[..])));
        assert!(r.push(&VolatileSlice::from(&mut src[..16])));
        assert_eq!(r.free(), 0);
        struct Broken;
        impl WriteVolatile for Broken {
            fn write_volatile<B: BitmapSlice>(
                &mut self,
                _buf: &VolatileSlice<B>,
            ) -> Result<usize, VolatileMemoryError> {
                Err(VolatileMemoryError::IOError(
                    io::ErrorKind::BrokenPipe.into(),
                ))
            }
        }
        assert_eq!(
            r.write_to(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert_eq!(r.len(), 16);
    }
}
