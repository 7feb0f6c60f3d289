//! Test helpers every virtio device's tests use: the driver's activation
//! and running one test again in a child process under a seccomp filter.

use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateContext, GuestMemoryMmap, VirtioInterrupt};

/// What the transport hands a device at `DRIVER_OK`, from mock queues.
pub fn activate_context(
    mem: &GuestMemoryMmap,
    interrupt: &Arc<VirtioInterrupt>,
    queues: &[MockSplitQueue<'_, GuestMemoryMmap>],
    evts: &[EventFd],
) -> ActivateContext {
    ActivateContext {
        mem: mem.clone(),
        interrupt: interrupt.clone(),
        queues: queues
            .iter()
            .map(|q| q.create_queue::<Queue>().unwrap())
            .collect(),
        queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
    }
}

/// A seccomp filter kills the whole process on a forbidden call, so a
/// test that applies one runs again, alone, in a child. In the parent
/// this runs the child (`test` is the test's full path), asserts it
/// passed and returns `None`; in the child it returns the scratch
/// directory the parent made, named by `env`.
pub fn rerun_in_child(test: &str, env: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Some(PathBuf::from(dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir.path())
        // Capturing a backtrace needs calls the filters forbid.
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    None
}
