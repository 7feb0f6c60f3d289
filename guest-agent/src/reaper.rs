//! Reaping: as PID 1 the agent adopts every orphan of the guest. SIGCHLD is
//! blocked in every thread and taken synchronously by the main thread.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Owns SIGCHLD for the process.
pub struct Reaper {
    set: SigSet,
}

impl Reaper {
    /// Blocks SIGCHLD in the calling thread; threads started after this
    /// inherit the mask, so only [`Reaper::run`] receives it.
    pub fn block_sigchld() -> nix::Result<Self> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set.thread_block()?;
        Ok(Self { set })
    }

    /// Reaps children forever.
    pub fn run(self) -> ExitCode {
        loop {
            if let Err(e) = self.set.wait() {
                log::warn!("sigwait: {e}");
                continue;
            }
            reap_all();
        }
    }
}

/// Collects every child that has ended, without blocking.
fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(status) => log::debug!("reaped {status:?}"),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}
