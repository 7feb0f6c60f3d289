//! Reaping: as PID 1 the agent adopts every orphan of the guest. SIGCHLD is
//! blocked in every thread and taken synchronously by the main thread,
//! which collects every ended child and hands the exit statuses of the
//! agent's own children (container processes) to their waiters.
//!
//! A child is registered in [`Children`] while the table is locked around
//! the `clone` that makes it, so the reaper can never collect a child the
//! table does not know yet: the reaper takes the same lock to look it up.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal.
    pub fn shell_status(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(sig) => 128 + sig,
        }
    }

    /// The signal that ended it, 0 if it exited.
    pub fn signal(self) -> i32 {
        match self {
            Self::Exited(_) => 0,
            Self::Signaled(sig) => sig,
        }
    }
}

/// Where one child's exit status lands; waiters block on it.
#[derive(Debug, Default)]
pub struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    ended: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExitCell {
    /// The status, if the child has ended.
    pub fn get(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    /// Whether the child has ended.
    pub fn has_exited(&self) -> bool {
        self.get().is_some()
    }

    /// Blocks until the child ends or `deadline` passes (`None` when it passed).
    pub fn wait(&self, deadline: Option<Instant>) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        loop {
            if let Some(s) = *status {
                return Some(s);
            }
            status = match deadline {
                None => self.ended.wait(status).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.ended
                        .wait_timeout(status, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    fn set(&self, s: ExitStatus) {
        *lock(&self.status) = Some(s);
        self.ended.notify_all();
    }
}

/// The agent's own live children, by pid.
#[derive(Debug, Default)]
pub struct Children {
    live: Mutex<HashMap<i32, Arc<ExitCell>>>,
}

impl Children {
    /// Runs `spawn` (which makes one child and returns its pid) with the
    /// table locked, and registers the child before the reaper can see it.
    pub fn spawn<E>(
        &self,
        spawn: impl FnOnce() -> Result<i32, E>,
    ) -> Result<(i32, Arc<ExitCell>), E> {
        let mut live = lock(&self.live);
        let pid = spawn()?;
        let cell = Arc::new(ExitCell::default());
        live.insert(pid, cell.clone());
        Ok((pid, cell))
    }

    /// Records that `pid` ended; false if it is not one of ours (an orphan).
    fn reaped(&self, pid: i32, status: ExitStatus) -> bool {
        let cell = lock(&self.live).remove(&pid);
        match cell {
            Some(cell) => {
                cell.set(status);
                true
            }
            None => false,
        }
    }
}

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

    /// Reaps children forever, handing statuses of registered ones over.
    pub fn run(self, children: Arc<Children>) -> ExitCode {
        loop {
            // Reap first: a child may have ended before SIGCHLD was blocked
            // in a thread that spawned it.
            reap_all(&children);
            if let Err(e) = self.set.wait() {
                log::warn!("sigwait: {e}");
            }
        }
    }
}

/// Collects every child that has ended, without blocking.
fn reap_all(children: &Children) {
    loop {
        let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _core)) => (pid, ExitStatus::Signaled(sig as i32)),
            Ok(other) => {
                log::debug!("waitpid: {other:?}");
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        };
        if children.reaped(pid.as_raw(), status) {
            log::debug!("child {pid} ended: {status:?}");
        } else {
            log::debug!("reaped orphan {pid}: {status:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shell_status_follows_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(3).shell_status(), 3);
        assert_eq!(ExitStatus::Signaled(9).shell_status(), 137);
        assert_eq!(ExitStatus::Signaled(15).signal(), 15);
        assert_eq!(ExitStatus::Exited(0).signal(), 0);
    }

    #[test]
    fn registered_children_get_their_status_and_orphans_do_not() {
        let children = Children::default();
        let (pid, cell) = children.spawn(|| Ok::<_, ()>(4242)).unwrap();
        assert_eq!(pid, 4242);
        assert_eq!(
            cell.wait(Some(Instant::now() + Duration::from_millis(10))),
            None
        );
        assert!(!children.reaped(4343, ExitStatus::Exited(0)));
        assert!(children.reaped(4242, ExitStatus::Signaled(9)));
        assert_eq!(cell.wait(None), Some(ExitStatus::Signaled(9)));
        // The pid is forgotten once reaped: a later process may reuse it.
        assert!(!children.reaped(4242, ExitStatus::Exited(0)));
    }

    #[test]
    fn a_waiter_wakes_when_the_status_arrives() {
        let children = Arc::new(Children::default());
        let (_, cell) = children.spawn(|| Ok::<_, ()>(7)).unwrap();
        let c = children.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.reaped(7, ExitStatus::Exited(5));
        });
        assert_eq!(cell.wait(None), Some(ExitStatus::Exited(5)));
        t.join().unwrap();
    }
}
