//! The stdio listener: vsock port `STDIO_VSOCK_PORT` in the guest, the Unix
//! socket `<agent socket>.stdio` on the host. Each connection is one stream
//! of one process, opened with
//!
//! ```text
//! STDIO <container_id> <exec_id> <stdin|stdout|stderr|tty>\n
//! ```
//!
//! (`-` as exec_id names the container's init) and answered `OK\n` or
//! `ERR <why>\n`; after that it carries raw bytes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

use crate::container::io::StreamKind;
use crate::container::Containers;

/// Longest STDIO line accepted.
const MAX_LINE: usize = 512;
/// How long a connection may take to send its line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed STDIO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioRequest {
    /// The container.
    pub container_id: String,
    /// The exec, `None` for the init.
    pub exec_id: Option<String>,
    /// Which stream.
    pub kind: StreamKind,
}

/// Parses `STDIO <container_id> <exec_id> <kind>` (without the newline).
pub fn parse_line(line: &str) -> Result<StdioRequest, String> {
    let words: Vec<&str> = line.split(' ').collect();
    let [verb, container_id, exec_id, kind] = words.as_slice() else {
        return Err("expected `STDIO <container_id> <exec_id> <stdin|stdout|stderr|tty>`".into());
    };
    if *verb != "STDIO" {
        return Err(format!("unknown verb {verb:?}"));
    }
    if container_id.is_empty() || exec_id.is_empty() {
        return Err("empty id".into());
    }
    let kind = match *kind {
        "stdin" => StreamKind::Stdin,
        "stdout" => StreamKind::Stdout,
        "stderr" => StreamKind::Stderr,
        "tty" => StreamKind::Tty,
        other => return Err(format!("unknown stream {other:?}")),
    };
    Ok(StdioRequest {
        container_id: container_id.to_string(),
        exec_id: (*exec_id != "-").then(|| exec_id.to_string()),
        kind,
    })
}

/// Reads up to and including `\n`, one byte at a time (the bytes after
/// it belong to the stream).
fn read_line(stream: &mut impl Read) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b) {
            Ok(0) => return Err("connection closed before the STDIO line ended".into()),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                line.push(b[0]);
                if line.len() > MAX_LINE {
                    return Err(format!("STDIO line longer than {MAX_LINE} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the STDIO line: {e}")),
        }
    }
    String::from_utf8(line).map_err(|_| "STDIO line is not UTF-8".into())
}

/// Where the listener listens.
pub enum StdioAddr {
    /// A vsock port of the guest.
    Vsock(u32),
    /// A Unix socket path (host-process mode).
    Unix(PathBuf),
}

/// Binds the listener and serves it on a thread.
pub fn serve(addr: StdioAddr, containers: Arc<Containers>) -> std::io::Result<()> {
    let vsock = matches!(addr, StdioAddr::Vsock(_));
    let listener: OwnedFd = match addr {
        StdioAddr::Vsock(port) => {
            let fd = socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
            listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
            fd
        }
        StdioAddr::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path)?.into()
        }
    };
    std::thread::Builder::new()
        .name("stdio-accept".into())
        .spawn(move || accept_loop(listener, vsock, containers))?;
    Ok(())
}

/// Whether a vsock peer is the host (streams come from the host only).
fn from_host(fd: &OwnedFd) -> bool {
    match nix::sys::socket::getpeername::<VsockAddr>(fd.as_raw_fd()) {
        Ok(addr) => addr.cid() == libc::VMADDR_CID_HOST,
        Err(_) => false,
    }
}

fn accept_loop(listener: OwnedFd, vsock: bool, containers: Arc<Containers>) {
    loop {
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this fd.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
            Err(e) => {
                log::warn!("stdio accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if vsock && !from_host(&fd) {
            log::warn!("stdio: refused a connection that is not from the host");
            continue;
        }
        let c = containers.clone();
        let r = std::thread::Builder::new()
            .name("stdio-handshake".into())
            .stack_size(128 * 1024)
            .spawn(move || handshake(fd, &c));
        if let Err(e) = r {
            log::warn!("stdio: cannot start a handshake thread: {e}");
        }
    }
}

fn set_timeouts(fd: &impl AsFd, t: Option<Duration>) {
    use nix::sys::socket::{setsockopt, sockopt};
    let tv = match t {
        Some(t) => nix::sys::time::TimeVal::new(t.as_secs() as i64, 0),
        None => nix::sys::time::TimeVal::new(0, 0),
    };
    let _ = setsockopt(fd, sockopt::ReceiveTimeout, &tv);
    let _ = setsockopt(fd, sockopt::SendTimeout, &tv);
}

fn handshake(fd: OwnedFd, containers: &Containers) {
    set_timeouts(&fd, Some(LINE_TIMEOUT));
    let mut file = std::fs::File::from(fd);
    let outcome = read_line(&mut file).and_then(|line| parse_line(&line));
    let req = match outcome {
        Ok(r) => r,
        Err(why) => {
            log::debug!("stdio: refused: {why}");
            let _ = file.write_all(format!("ERR {why}\n").as_bytes());
            return;
        }
    };
    // The pumps must never see the line timeout.
    set_timeouts(&file, None);
    let dup = match file.try_clone() {
        Ok(d) => OwnedFd::from(d),
        Err(e) => {
            let _ = file.write_all(format!("ERR dup: {e}\n").as_bytes());
            return;
        }
    };
    // `OK` is written while the stream is attached, before any pump can
    // write the process's bytes to it.
    let ack = || (&file).write_all(b"OK\n");
    match containers.attach_stream(&req, dup, &ack) {
        Ok(()) => log::debug!("stdio: attached {req:?}"),
        Err(why) => {
            log::debug!("stdio: refused {req:?}: {why}");
            let _ = file.write_all(format!("ERR {why}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stdio_lines() {
        assert_eq!(
            parse_line("STDIO c1 - stdout").unwrap(),
            StdioRequest {
                container_id: "c1".into(),
                exec_id: None,
                kind: StreamKind::Stdout
            }
        );
        let r = parse_line("STDIO c1 e7 tty").unwrap();
        assert_eq!(r.exec_id.as_deref(), Some("e7"));
        assert_eq!(r.kind, StreamKind::Tty);
        assert_eq!(
            parse_line("STDIO c1 - stdin").unwrap().kind,
            StreamKind::Stdin
        );
        assert_eq!(
            parse_line("STDIO c1 - stderr").unwrap().kind,
            StreamKind::Stderr
        );
        assert!(parse_line("STDIO c1 - stdwhat")
            .unwrap_err()
            .contains("unknown stream"));
        assert!(parse_line("CONNECT 1024").is_err());
        assert!(parse_line("STDIO c1 stdout").is_err());
        assert!(parse_line("STDIO  - stdout").unwrap_err().contains("empty"));
        assert!(parse_line("STDIO c1 - stdout extra").is_err());
        assert!(parse_line("stdio c1 - stdout")
            .unwrap_err()
            .contains("verb"));
    }

    #[test]
    fn lines_end_at_newline_and_are_bounded() {
        let mut input: &[u8] = b"STDIO a - stdin\nrest";
        assert_eq!(read_line(&mut input).unwrap(), "STDIO a - stdin");
        assert_eq!(input, b"rest");
        let long = vec![b'x'; 600];
        assert!(read_line(&mut long.as_slice())
            .unwrap_err()
            .contains("longer"));
        assert!(read_line(&mut &b"STDIO"[..])
            .unwrap_err()
            .contains("closed"));
    }
}
