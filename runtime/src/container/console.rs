//! `--console-socket`, as runc does it: a pty is made on the host, its
//! master goes to the caller over the Unix socket (SCM_RIGHTS), and the
//! monitor keeps the slave, bridged to the guest pty over vsock.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::pty::openpty;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// Why the console could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleSocketError {
    /// No pty.
    #[error("cannot open a pty")]
    Openpty(#[source] nix::Error),
    /// The slave's line discipline could not be set.
    #[error("cannot set the pty to raw mode")]
    Raw(#[source] nix::Error),
    /// The console socket did not take the connection.
    #[error("cannot connect to the console socket {0:?}")]
    Connect(PathBuf, #[source] std::io::Error),
    /// The master could not be sent.
    #[error("cannot send the pty master over {0:?}")]
    Send(PathBuf, #[source] nix::Error),
}

/// Makes a pty, sends its master to `socket`, returns the slave in raw
/// mode (the guest's pty does the line discipline; doing it twice would
/// echo twice).
pub fn send_console(socket: &Path) -> Result<OwnedFd, ConsoleSocketError> {
    let pty = openpty(None, None).map_err(ConsoleSocketError::Openpty)?;
    let mut attrs = tcgetattr(&pty.slave).map_err(ConsoleSocketError::Raw)?;
    cfmakeraw(&mut attrs);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &attrs).map_err(ConsoleSocketError::Raw)?;
    let conn = UnixStream::connect(socket)
        .map_err(|e| ConsoleSocketError::Connect(socket.to_path_buf(), e))?;
    let fds = [pty.master.as_raw_fd()];
    // runc sends the pty's name as the message body.
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| ConsoleSocketError::Send(socket.to_path_buf(), e))?;
    Ok(pty.slave)
}

/// The other end of [`send_console`], as containerd's runc shim and
/// conmon run it: accepts one connection and takes the descriptor it sends.
pub fn receive_console(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the descriptor was just received and is ours alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other(
        "no descriptor came over the console socket",
    ))
}

/// Makes `tty` the controlling terminal of this process (a session
/// leader), so window-size changes on the master arrive as SIGWINCH.
pub fn take_controlling_terminal(tty: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY with an integer argument on a descriptor we own.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's size as (rows, cols).
pub fn window_size(tty: &OwnedFd) -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((u32::from(ws.ws_row), u32::from(ws.ws_col)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn sends_a_pty_master_like_runc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let receiver = std::thread::spawn(move || receive_console(&listener));
        let slave = send_console(&path).unwrap();
        assert!(window_size(&slave).is_none(), "a fresh pty has no size");
        let master = receiver
            .join()
            .unwrap()
            .expect("a descriptor on the socket");
        assert!(
            nix::unistd::isatty(master.as_raw_fd()).unwrap(),
            "not a pty master"
        );
        let err = send_console(Path::new("/nonexistent/c.sock")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.sock"));
    }
}
