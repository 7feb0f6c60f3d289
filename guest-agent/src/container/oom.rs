//! OOM events: every container cgroup's memory.events is watched with
//! inotify (the kernel signals a modification when a counter changes);
//! when its oom_kill count grows, the container's id is queued for
//! GetOomEvent.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Events kept for GetOomEvent callers.
const MAX_QUEUED: usize = 1024;

/// A watched cgroup.
struct Watched {
    id: String,
    dir: PathBuf,
    last: u64,
}

#[derive(Default)]
struct State {
    watched: HashMap<WatchDescriptor, Watched>,
    queue: VecDeque<String>,
}

/// The OOM watcher; cheap to share.
pub struct OomMonitor {
    state: Mutex<State>,
    arrived: Condvar,
    inotify: Mutex<Option<Arc<Inotify>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OomMonitor {
    /// A monitor; its thread starts with the first watched cgroup.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            arrived: Condvar::new(),
            inotify: Mutex::new(None),
        })
    }

    fn inotify(self: &Arc<Self>) -> std::io::Result<Arc<Inotify>> {
        let mut slot = lock(&self.inotify);
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let ino = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let (me, i) = (self.clone(), ino.clone());
        std::thread::Builder::new()
            .name("oom-events".into())
            .spawn(move || me.run(&i))?;
        *slot = Some(ino.clone());
        Ok(ino)
    }

    /// Watches the cgroup at `dir` for container `id`; returns the
    /// watch to pass to [`OomMonitor::unwatch`].
    pub fn watch(self: &Arc<Self>, id: &str, dir: PathBuf) -> std::io::Result<WatchDescriptor> {
        let ino = self.inotify()?;
        let wd = ino.add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY)?;
        let last = super::cgroup::oom_kills_in(&dir);
        lock(&self.state).watched.insert(
            wd,
            Watched {
                id: id.to_string(),
                dir,
                last,
            },
        );
        Ok(wd)
    }

    /// Stops watching (the container is gone).
    pub fn unwatch(&self, wd: WatchDescriptor) {
        lock(&self.state).watched.remove(&wd);
        if let Some(ino) = lock(&self.inotify).as_ref() {
            let _ = ino.rm_watch(wd);
        }
    }

    fn run(&self, ino: &Inotify) {
        loop {
            let events = match ino.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("inotify: {e}; OOM events stop");
                    return;
                }
            };
            let mut st = lock(&self.state);
            for ev in events {
                let Some(w) = st.watched.get_mut(&ev.wd) else {
                    continue;
                };
                let now = super::cgroup::oom_kills_in(&w.dir);
                if now > w.last {
                    w.last = now;
                    let id = w.id.clone();
                    log::info!("container {id}: OOM kill");
                    if st.queue.len() >= MAX_QUEUED {
                        // Nobody asks: keep the newest.
                        st.queue.pop_front();
                    }
                    st.queue.push_back(id);
                    self.arrived.notify_all();
                }
            }
        }
    }

    /// The next OOM event's container id, waiting until `deadline`.
    pub fn next(&self, deadline: Option<Instant>) -> Option<String> {
        let mut st = lock(&self.state);
        loop {
            if let Some(id) = st.queue.pop_front() {
                return Some(id);
            }
            st = match deadline {
                None => self.arrived.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.arrived
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_growing_oom_kill_count_is_an_event() {
        // A plain file stands in for memory.events: inotify sees writes to it.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        let m = OomMonitor::new();
        let wd = m.watch("c1", dir.clone()).unwrap();
        let soon = || Some(Instant::now() + Duration::from_millis(300));
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 0\n").unwrap();
        assert_eq!(m.next(soon()), None, "oom without a kill is no event");
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(
            m.next(Some(Instant::now() + Duration::from_secs(5)))
                .as_deref(),
            Some("c1")
        );
        m.unwatch(wd);
        std::fs::write(dir.join("memory.events"), "oom 2\noom_kill 2\n").unwrap();
        assert_eq!(m.next(soon()), None);
    }
}
