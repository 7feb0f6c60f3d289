//! One process of a task (a container's init, or an exec): its phase, its
//! stdio and its exit, which `Wait` callers block on.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::stdio::{Bridge, StdioPaths};

/// How long output may take to drain after the process ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Made, not started.
    Created,
    /// Started and not yet ended.
    Running,
    /// Ended.
    Stopped,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When.
    pub at: Timestamp,
}

struct Inner {
    phase: Phase,
    exit: Option<Exit>,
    bridge: Option<Bridge>,
}

/// A process of a task.
pub struct Process {
    /// The container.
    pub container_id: String,
    /// The exec id (empty for the init).
    pub exec_id: String,
    /// containerd's stdio for it.
    pub stdio: StdioPaths,
    /// For an exec: the OCI process, as JSON.
    pub spec_json: Vec<u8>,
    inner: Mutex<Inner>,
    ended: Condvar,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("container_id", &self.container_id)
            .field("exec_id", &self.exec_id)
            .field("phase", &self.phase())
            .finish()
    }
}

impl Process {
    /// A created process.
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths, spec_json: Vec<u8>) -> Self {
        Self {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            spec_json,
            inner: Mutex::new(Inner {
                phase: Phase::Created,
                exit: None,
                bridge: None,
            }),
            ended: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What containerd calls this process in messages.
    pub fn name(&self) -> String {
        if self.exec_id.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("exec {} of {}", self.exec_id, self.container_id)
        }
    }

    /// Its phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Its exit, once ended.
    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit.clone()
    }

    /// Keeps the stdio bridge until the process ends.
    pub fn set_bridge(&self, bridge: Bridge) {
        self.lock().bridge = Some(bridge);
    }

    /// Ends its input (CloseIO).
    pub fn close_stdin(&self) {
        if let Some(bridge) = self.lock().bridge.as_ref() {
            bridge.close_stdin();
        }
    }

    /// Marks it started.
    pub fn set_running(&self) {
        let mut inner = self.lock();
        if inner.phase == Phase::Created {
            inner.phase = Phase::Running;
        }
    }

    /// Records its exit once its output drained; false if it had already
    /// ended (the first exit wins).
    pub fn record_exit(&self, status: u32, at: Timestamp) -> bool {
        let bridge = self.lock().bridge.take();
        if let Some(bridge) = bridge {
            bridge.finish(DRAIN_TIMEOUT);
        }
        let mut inner = self.lock();
        if inner.exit.is_some() {
            return false;
        }
        inner.phase = Phase::Stopped;
        inner.exit = Some(Exit { status, at });
        self.ended.notify_all();
        true
    }

    /// Blocks until it ended.
    pub fn wait(&self) -> Exit {
        let mut inner = self.lock();
        loop {
            if let Some(exit) = inner.exit.clone() {
                return exit;
            }
            inner = self.ended.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn waiters_get_the_first_exit() {
        let p = Arc::new(Process::new("c", "", StdioPaths::default(), Vec::new()));
        assert_eq!(p.phase(), Phase::Created);
        p.set_running();
        let waiter = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.wait().status)
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(p.record_exit(3, Timestamp::default()));
        assert!(!p.record_exit(137, Timestamp::default()));
        assert_eq!(waiter.join().unwrap(), 3);
        assert_eq!(p.phase(), Phase::Stopped);
        assert_eq!(p.exit().unwrap().status, 3);
    }
}
