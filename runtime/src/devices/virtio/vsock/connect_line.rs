//! The hybrid-vsock handshake on the host's Unix socket.
//!
//! A host process connects to the device's socket and writes
//! `CONNECT <port>\n`; once the guest accepts, the device answers
//! `OK <host port>\n` and the stream carries guest data from then on.

use std::io::Write as _;

/// Longest `CONNECT` line accepted, `\n` included (`CONNECT 4294967295\n`
/// is 19 bytes; the rest is room for stray spaces and a `\r`).
pub const MAX_LINE: usize = 32;

/// Longest `OK` line the device writes (`OK 4294967295\n`).
pub const MAX_OK_LINE: usize = 14;

/// Why a `CONNECT` line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    /// No `\n` within [`MAX_LINE`] bytes.
    #[error("no newline within {MAX_LINE} bytes")]
    TooLong,
    /// The line is not `CONNECT <port>`.
    #[error("not a CONNECT <port> line")]
    Malformed,
}

/// Accumulates a `CONNECT <port>\n` line fed one byte at a time, so that
/// nothing after the newline is ever taken from the stream.
#[derive(Debug, Clone)]
pub struct ConnectLine {
    buf: [u8; MAX_LINE],
    len: usize,
}

impl Default for ConnectLine {
    fn default() -> Self {
        Self {
            buf: [0; MAX_LINE],
            len: 0,
        }
    }
}

impl ConnectLine {
    /// Feeds one byte. Returns the port once the newline arrives.
    pub fn push(&mut self, byte: u8) -> Result<Option<u32>, ConnectLineError> {
        if byte == b'\n' {
            return parse(&self.buf[..self.len]).map(Some);
        }
        let slot = self
            .buf
            .get_mut(self.len)
            .ok_or(ConnectLineError::TooLong)?;
        *slot = byte;
        self.len += 1;
        // Leave room for the newline itself.
        if self.len >= MAX_LINE {
            return Err(ConnectLineError::TooLong);
        }
        Ok(None)
    }

    /// Bytes taken so far (without the newline).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Parses the line without its `\n`: `CONNECT`, one or more spaces, a
/// decimal port that fits in 32 bits, optional trailing spaces and `\r`.
fn parse(line: &[u8]) -> Result<u32, ConnectLineError> {
    let rest = line
        .strip_prefix(b"CONNECT")
        .ok_or(ConnectLineError::Malformed)?;
    let digits_at = rest
        .iter()
        .position(|b| *b != b' ')
        .ok_or(ConnectLineError::Malformed)?;
    if digits_at == 0 {
        return Err(ConnectLineError::Malformed);
    }
    let rest = &rest[digits_at..];
    let digits_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (digits, tail) = rest.split_at(digits_len);
    if digits.is_empty() || digits.len() > 10 {
        return Err(ConnectLineError::Malformed);
    }
    let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
    if tail.iter().any(|b| *b != b' ') {
        return Err(ConnectLineError::Malformed);
    }
    let mut port: u64 = 0;
    for d in digits {
        port = port * 10 + u64::from(d - b'0');
    }
    u32::try_from(port).map_err(|_| ConnectLineError::Malformed)
}

/// `OK <port>\n` in a stack buffer: the buffer and the line's length.
pub fn ok_line(port: u32) -> ([u8; MAX_OK_LINE], usize) {
    let mut buf = [0u8; MAX_OK_LINE];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // Cannot fail: the longest line fits the buffer exactly.
    let _ = writeln!(cursor, "OK {port}");
    let len = cursor.position() as usize;
    (buf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(line: &[u8]) -> Result<Option<u32>, ConnectLineError> {
        let mut p = ConnectLine::default();
        let mut last = Ok(None);
        for b in line {
            last = p.push(*b);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    #[test]
    fn good_lines() {
        assert_eq!(feed(b"CONNECT 1024\n"), Ok(Some(1024)));
        assert_eq!(feed(b"CONNECT 0\n"), Ok(Some(0)));
        assert_eq!(feed(b"CONNECT 4294967295\n"), Ok(Some(u32::MAX)));
        assert_eq!(feed(b"CONNECT   52 \r\n"), Ok(Some(52)));
        assert_eq!(feed(b"CONNECT 007\n"), Ok(Some(7)));
    }

    #[test]
    fn bad_lines() {
        for line in [
            &b"CONNECT\n"[..],
            b"CONNECT \n",
            b"CONNECT1024\n",
            b"connect 1024\n",
            b"CONNECT 4294967296\n",
            b"CONNECT 99999999999\n",
            b"CONNECT -1\n",
            b"CONNECT 12 34\n",
            b"CONNECT 12x\n",
            b"CONNECT 0x10\n",
            b"CONNECT 1\r\r\n",
            b"\n",
            b"OK 5\n",
        ] {
            assert_eq!(feed(line), Err(ConnectLineError::Malformed), "{line:?}");
        }
    }

    #[test]
    fn overlong_lines_stop_at_the_limit() {
        let mut p = ConnectLine::default();
        let mut n = 0;
        let res = loop {
            n += 1;
            match p.push(b' ') {
                Ok(None) => continue,
                other => break other,
            }
        };
        assert_eq!(res, Err(ConnectLineError::TooLong));
        assert_eq!(n, MAX_LINE);
        // A line of exactly MAX_LINE - 1 bytes plus the newline fits.
        let mut line = b"CONNECT".to_vec();
        line.resize(MAX_LINE - 3, b' ');
        line.extend_from_slice(b"42\n");
        assert_eq!(line.len(), MAX_LINE);
        assert_eq!(feed(&line), Ok(Some(42)));
    }

    #[test]
    fn partial_input_waits_for_the_newline() {
        let mut p = ConnectLine::default();
        for b in b"CONNECT 10" {
            assert_eq!(p.push(*b), Ok(None));
        }
        assert_eq!(p.len(), 10);
        assert_eq!(p.push(b'2'), Ok(None));
        assert_eq!(p.push(b'4'), Ok(None));
        assert_eq!(p.push(b'\n'), Ok(Some(1024)));
    }

    #[test]
    fn ok_lines() {
        let (buf, len) = ok_line(1 << 30);
        assert_eq!(&buf[..len], b"OK 1073741824\n");
        let (buf, len) = ok_line(u32::MAX);
        assert_eq!(&buf[..len], b"OK 4294967295\n");
        let (buf, len) = ok_line(0);
        assert_eq!(&buf[..len], b"OK 0\n");
    }
}
