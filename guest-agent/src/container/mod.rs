//! Containers: the container half of the agent API.
//!
//! Lifecycle (runc's create/start split):
//!
//! 1. CreateContainer checks the spec ([`spec`]), makes the cgroup
//!    ([`cgroup`]) and the stdio pipes ([`io`]), clones the init helper into
//!    new namespaces ([`spawn`]), moves it into the cgroup and sends it its
//!    plan ([`plan`]). The helper ([`setup`]) sets up the rootfs and the
//!    process, reports Ready, and blocks. The reply is its pid.
//! 2. The host attaches the streams the process asked for (`crate::stdio`).
//! 3. StartContainer waits for them (30 s at most), starts the pumps and
//!    tells the helper to exec.
//!
//! ExecProcess does 1–3 in one call for a process joining a container.
//! Exit statuses come from the reaper's child table; the container's
//! mounts live in its own mount namespace and go with its last process.

pub mod caps;
pub mod cgroup;
pub mod io;
mod json_path;
pub mod mounts;
pub mod oom;
pub mod plan;
pub mod resolve;
pub mod seccomp;
pub mod setup;
pub mod spawn;
pub mod spec;
pub mod user;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use husk_protocol::agent::{
    ContainerStatsResponse, CreateContainerRequest, ExecProcessRequest, ListProcessesResponse,
    ProcessInfo, ProcessRequest, ResizeTtyRequest, SignalProcessRequest, Stdio,
    UpdateContainerRequest, WaitProcessResponse,
};
use nix::errno::Errno;
use nix::sys::inotify::WatchDescriptor;
use oci_spec::runtime::LinuxResources;

use self::cgroup::{Cgroup, CgroupError, CgroupRoot};
use self::io::{AttachError, ProcessIo, StreamKind, Want};
use self::oom::OomMonitor;
use self::plan::{ExecPlan, Plan, SeccompPlan};
use self::spawn::{pidfd_signal, spawn_helper, Helper, SpawnError, SpawnNs};
use self::spec::SpecError;
use crate::reaper::{Children, ExitCell, ExitStatus};
use crate::stdio::StdioRequest;

/// How long Start/Exec wait for the host to attach the streams.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long removal waits for the processes to end.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long pause/resume wait for the freezer.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams connected for an exec that does not exist yet, per container.
const MAX_PARKED: usize = 64;
/// Exited and waited-for execs kept per container (for late waits).
const KEEP_EXITED_EXECS: usize = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The container or process a request names does not exist.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No such container.
    #[error("container_id: no container {0:?}")]
    Container(String),
    /// No such exec.
    #[error("exec_id: container {0:?} has no exec {1:?}")]
    Exec(String, String),
}

/// Why CreateContainer failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateContainerError {
    /// The id is unusable.
    #[error("container_id: {0}")]
    InvalidId(String),
    /// The id is taken.
    #[error("container_id: container {0:?} exists already")]
    Exists(String),
    /// The spec is wrong.
    #[error("{0}")]
    Spec(SpecError),
    /// Its cgroup could not be made or set.
    #[error("cgroup")]
    Cgroup(#[from] CgroupError),
    /// The stdio pipes or a namespace path could not be opened.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The init process could not be made or set up.
    #[error("setting up the container")]
    Setup(#[from] SpawnError),
}

/// Why StartContainer (or the start half of ExecProcess) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartProcessError {
    /// Unknown container.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Not in the created state.
    #[error("container {0:?} is {1}, not created")]
    State(String, &'static str),
    /// The host did not attach every stream in time.
    #[error("stdio: the {} stream(s) were not attached within {secs} s", .missing.join(", "))]
    StreamsMissing {
        /// The missing streams.
        missing: Vec<&'static str>,
        /// The timeout.
        secs: u64,
    },
    /// The exec failed.
    #[error("starting the process")]
    Exec(#[source] SpawnError),
}

/// Why ExecProcess failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecProcessError {
    /// Unknown container.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The exec id is unusable.
    #[error("exec_id: {0}")]
    InvalidId(String),
    /// The exec id is taken by a live process.
    #[error("exec_id: {0:?} is running already")]
    Exists(String),
    /// The container's init has ended.
    #[error("container {0:?} has stopped")]
    Stopped(String),
    /// The process spec is wrong.
    #[error("{0}")]
    Spec(SpecError),
    /// The stdio pipes could not be made.
    #[error("stdio pipes")]
    Io(#[source] std::io::Error),
    /// Its cgroup could not be joined.
    #[error("cgroup")]
    Cgroup(#[from] CgroupError),
    /// The process could not be made or set up.
    #[error("setting up the process")]
    Setup(#[from] SpawnError),
    /// It could not be started.
    #[error(transparent)]
    Start(#[from] StartProcessError),
}

/// Why a request on a process (signal, wait, tty, stdin) failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessOpError {
    /// Unknown container or exec.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The process has ended.
    #[error("the process has exited")]
    Exited,
    /// The process has no terminal.
    #[error("the process has no terminal")]
    NoTerminal,
    /// The deadline passed.
    #[error("{0} did not finish before the call's deadline")]
    Deadline(&'static str),
    /// A system call failed.
    #[error("{0}")]
    Sys(&'static str, #[source] Errno),
    /// A cgroup step failed.
    #[error("cgroup")]
    Cgroup(#[from] CgroupError),
}

/// Why a request on a container's cgroup or state failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerOpError {
    /// Unknown container.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The resources are wrong.
    #[error("{0}")]
    Spec(SpecError),
    /// The cgroup failed or is missing.
    #[error("cgroup")]
    Cgroup(#[from] CgroupError),
    /// The processes did not end in time.
    #[error("container {0:?}: its processes did not end within {1} s of SIGKILL")]
    Stuck(String, u64),
    /// Reading /proc failed.
    #[error("{0}")]
    Proc(String, #[source] std::io::Error),
}

/// Why a stream could not be attached (the ERR of a STDIO line).
#[derive(Debug, thiserror::Error)]
pub enum AttachStreamError {
    /// Unknown container.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The process refused it.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// Too many streams wait for execs that do not exist.
    #[error("too many streams wait for execs that do not exist yet")]
    TooManyParked,
}

/// Why GetOomEvent returned without an event.
#[derive(Debug, thiserror::Error)]
pub enum OomEventError {
    /// The deadline passed.
    #[error("no OOM event before the call's deadline")]
    Deadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
}

/// A process of a container (its init or an exec).
struct Process {
    name: String,
    pid: i32,
    pidfd: OwnedFd,
    exit: Arc<ExitCell>,
    io: ProcessIo,
    /// Until started.
    helper: Mutex<Option<Helper>>,
    /// memory.events oom_kill when it started.
    oom_baseline: u64,
    /// A WaitProcess got its status.
    waited: AtomicBool,
}

/// A stream that connected before its exec existed.
struct Parked {
    kind: StreamKind,
    fd: OwnedFd,
    since: Instant,
}

struct Container {
    id: String,
    init: Arc<Process>,
    state: Mutex<State>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    parked: Mutex<HashMap<String, Vec<Parked>>>,
    cgroup: Option<Cgroup>,
    oom_watch: Option<WatchDescriptor>,
    exec_namespaces: i32,
    seccomp: Option<SeccompPlan>,
    /// `/proc/<init>/ns/pid` of the init, to find its processes without a cgroup.
    pid_ns: String,
}

/// Every container of the guest.
pub struct Containers {
    map: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
    children: Arc<Children>,
    cgroups: CgroupRoot,
    oom: Arc<OomMonitor>,
    cap_last_cap: u8,
}

fn want(s: Option<&Stdio>) -> Want {
    s.map(|s| Want {
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
    })
    .unwrap_or_default()
}

/// Checks a container or exec id: no separators, no whitespace.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    if id.len() > 256 {
        return Err(format!("{} bytes is longer than 256", id.len()));
    }
    if id == "-" || id == "." || id == ".." {
        return Err(format!("{id:?} is reserved"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-+@:".contains(&b))
    {
        return Err(format!("{id:?} may only hold letters, digits and _.-+@:"));
    }
    Ok(())
}

/// Frees a reserved id on every way out of create.
struct Reservation<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}

/// What a failed create must undo.
#[derive(Default)]
struct Undo {
    cgroup: Option<Cgroup>,
    watch: Option<WatchDescriptor>,
    helper: Option<Helper>,
}

/// The pids of the processes whose pid namespace is `ns`.
fn pids_in_ns(ns: &str) -> Result<Vec<i32>, std::io::Error> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns) {
            out.push(pid);
        }
    }
    Ok(out)
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether a process that ended with `status` counts as OOM-killed, given
/// the OOM kills in its container's cgroup since it started. The container
/// (its init) does if the OOM killer ended any of its processes, as runc's
/// OOM event makes Docker and Kubernetes report: `sh -c 'hog; …'` whose hog
/// was killed is OOMKilled though sh exits 137 itself. An exec'd process
/// only if it was killed by SIGKILL itself.
fn oom_killed(init: bool, status: ExitStatus, kills_since_start: u64) -> bool {
    kills_since_start > 0 && (init || status == ExitStatus::Signaled(libc::SIGKILL))
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<Arc<Process>, LookupError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| LookupError::Exec(self.id.clone(), exec_id.to_string()))
    }

    fn pids(&self) -> Result<Vec<i32>, ContainerOpError> {
        match &self.cgroup {
            Some(cg) => Ok(cg.procs()?),
            None => {
                pids_in_ns(&self.pid_ns).map_err(|e| ContainerOpError::Proc("read /proc".into(), e))
            }
        }
    }

    fn signal_all(&self, sig: i32) -> Result<(), ContainerOpError> {
        if let Some(cg) = &self.cgroup {
            return Ok(cg.signal_all(sig)?);
        }
        for pid in self.pids()? {
            // SAFETY: kill with plain integers.
            unsafe { libc::kill(pid, sig) };
        }
        Ok(())
    }

    fn cgroup(&self, cgroups: &CgroupRoot, what: &str) -> Result<&Cgroup, CgroupError> {
        self.cgroup
            .as_ref()
            .ok_or_else(|| cgroups.unavailable(what))
    }

    fn oom_kills(&self) -> u64 {
        self.cgroup.as_ref().map(Cgroup::oom_kills).unwrap_or(0)
    }
}

impl Containers {
    /// No containers yet; `cgroup_root` is where their cgroups go.
    pub fn new(children: Arc<Children>, cgroup_root: &std::path::Path) -> Self {
        Self {
            map: Mutex::default(),
            creating: Mutex::default(),
            children,
            cgroups: CgroupRoot::detect(cgroup_root),
            oom: OomMonitor::new(),
            cap_last_cap: caps::cap_last_cap(),
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, LookupError> {
        lock(&self.map)
            .get(id)
            .cloned()
            .ok_or_else(|| LookupError::Container(id.to_string()))
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>, CreateContainerError> {
        check_id(id).map_err(CreateContainerError::InvalidId)?;
        let map = lock(&self.map);
        let mut creating = lock(&self.creating);
        if map.contains_key(id) || !creating.insert(id.to_string()) {
            return Err(CreateContainerError::Exists(id.to_string()));
        }
        Ok(Reservation {
            set: &self.creating,
            id: id.to_string(),
        })
    }

    /// CreateContainer: returns the init's pid.
    pub fn create(&self, req: &CreateContainerRequest) -> Result<u32, CreateContainerError> {
        let id = req.container_id.as_str();
        let _reservation = self.reserve(id)?;
        let want = want(req.stdio.as_ref());
        let config = spec::parse_container(&req.oci_spec_json, want.terminal, self.cap_last_cap)
            .map_err(|e| CreateContainerError::Spec(e.within("oci_spec_json")))?;
        if config.resources.as_ref().is_some_and(cgroup::has_limits) && !self.cgroups.usable() {
            return Err(self.cgroups.unavailable("linux.resources").into());
        }
        let mut undo = Undo::default();
        let made = self.create_steps(id, want, config, &mut undo);
        match made {
            Ok(c) => {
                let pid = c.init.pid as u32;
                log::info!("container {id}: created, init pid {pid}");
                lock(&self.map).insert(id.to_string(), Arc::new(c));
                Ok(pid)
            }
            Err(e) => {
                log::info!("container {id}: create failed: {e}");
                if let Some(h) = undo.helper.take() {
                    h.kill();
                }
                if let Some(w) = undo.watch.take() {
                    self.oom.unwatch(w);
                }
                if let Some(cg) = undo.cgroup.take() {
                    if let Err(e) = cg.remove(REMOVE_TIMEOUT) {
                        log::warn!("container {id}: {e}");
                    }
                }
                Err(e)
            }
        }
    }

    fn create_steps(
        &self,
        id: &str,
        want: Want,
        config: spec::ContainerConfig,
        undo: &mut Undo,
    ) -> Result<Container, CreateContainerError> {
        let cg = self.cgroups.create(id)?;
        undo.cgroup = cg.clone();
        if let (Some(cg), Some(res)) = (&cg, &config.resources) {
            cg.apply("linux.resources", res)?;
        }
        if let Some(cg) = &cg {
            match self.oom.watch(id, cg.path().to_path_buf()) {
                Ok(w) => undo.watch = Some(w),
                Err(e) => log::warn!("container {id}: no OOM events: {e}"),
            }
        }
        let (io, child) =
            ProcessIo::new(want).map_err(|e| CreateContainerError::Io("stdio pipes".into(), e))?;
        let join_pid = config
            .join_pid_ns
            .as_ref()
            .map(|p| {
                std::fs::File::open(p).map(OwnedFd::from).map_err(|e| {
                    CreateContainerError::Io(format!("linux.namespaces: pid namespace {p:?}"), e)
                })
            })
            .transpose()?;
        let helper = spawn_helper(
            &self.children,
            SpawnNs::Container {
                join_pid: join_pid.as_ref(),
            },
            child.fds(),
        )?;
        drop(child);
        let (pid, exit, pidfd) = (helper.pid, helper.exit.clone(), helper.pidfd.try_clone());
        let helper = &*undo.helper.insert(helper);
        let pidfd = pidfd.map_err(|e| CreateContainerError::Io("dup the pidfd".into(), e))?;
        if let Some(cg) = &cg {
            cg.add(pid)?;
        }
        helper.send_plan(&Plan::Container(Box::new(config.plan.clone())))?;
        if let Some(master) = helper.wait_ready()? {
            io.set_master(master, config.console_size);
        }
        let pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .map(|l| l.to_string_lossy().into_owned())
            .map_err(|e| CreateContainerError::Io("read the init's pid namespace".into(), e))?;
        let oom_baseline = cg.as_ref().map(Cgroup::oom_kills).unwrap_or(0);
        let helper = undo.helper.take();
        let watch = undo.watch.take();
        undo.cgroup = None;
        Ok(Container {
            id: id.to_string(),
            init: Arc::new(Process {
                name: format!("{id} init"),
                pid,
                pidfd,
                exit,
                io,
                helper: Mutex::new(helper),
                oom_baseline,
                waited: AtomicBool::new(false),
            }),
            state: Mutex::new(State::Created),
            execs: Mutex::default(),
            parked: Mutex::default(),
            cgroup: cg,
            oom_watch: watch,
            exec_namespaces: config.exec_namespaces,
            seccomp: config.plan.process.seccomp.clone(),
            pid_ns,
        })
    }

    /// Waits for the streams, starts the pumps, lets the process exec.
    fn start_process(p: &Process, deadline: Option<Instant>) -> Result<(), StartProcessError> {
        let limit = Instant::now() + STREAM_TIMEOUT;
        let deadline = deadline.map_or(limit, |d| d.min(limit));
        p.io.wait_attached(deadline)
            .map_err(|missing| StartProcessError::StreamsMissing {
                missing,
                secs: STREAM_TIMEOUT.as_secs(),
            })?;
        let Some(helper) = lock(&p.helper).take() else {
            return Err(StartProcessError::Exec(SpawnError::Failed(
                "started already".into(),
            )));
        };
        p.io.start(&p.name);
        helper.start().map_err(|e| {
            helper.kill();
            StartProcessError::Exec(e)
        })
    }

    /// StartContainer.
    pub fn start(&self, id: &str, deadline: Option<Instant>) -> Result<(), StartProcessError> {
        let c = self.get(id)?;
        let mut state = lock(&c.state);
        if c.init.exit.has_exited() {
            return Err(StartProcessError::State(id.to_string(), "stopped"));
        }
        if *state != State::Created {
            return Err(StartProcessError::State(id.to_string(), "running"));
        }
        Self::start_process(&c.init, deadline)?;
        *state = State::Running;
        log::info!("container {id}: started");
        Ok(())
    }

    /// ExecProcess: returns the pid.
    pub fn exec(
        &self,
        req: &ExecProcessRequest,
        deadline: Option<Instant>,
    ) -> Result<u32, ExecProcessError> {
        let c = self.get(&req.container_id)?;
        let exec_id = req.exec_id.as_str();
        check_id(exec_id).map_err(ExecProcessError::InvalidId)?;
        if c.init.exit.has_exited() {
            return Err(ExecProcessError::Stopped(c.id.clone()));
        }
        if lock(&c.execs)
            .get(exec_id)
            .is_some_and(|p| !p.exit.has_exited())
        {
            return Err(ExecProcessError::Exists(exec_id.to_string()));
        }
        let want = want(req.stdio.as_ref());
        let config = spec::parse_exec_process(
            &req.process_json,
            want.terminal,
            c.seccomp.clone(),
            self.cap_last_cap,
        )
        .map_err(|e| ExecProcessError::Spec(e.within("process_json")))?;
        let (io, child) = ProcessIo::new(want).map_err(ExecProcessError::Io)?;
        let helper = spawn_helper(
            &self.children,
            SpawnNs::Exec {
                init_pidfd: &c.init.pidfd,
            },
            child.fds(),
        )
        .map_err(|e| match e {
            SpawnError::Prepare(_, ref io) if io.raw_os_error() == Some(libc::ESRCH) => {
                ExecProcessError::Stopped(c.id.clone())
            }
            SpawnError::Clone(Errno::ENOMEM) if c.init.exit.has_exited() => {
                ExecProcessError::Stopped(c.id.clone())
            }
            e => e.into(),
        })?;
        drop(child);
        let ready = (|| {
            if let Some(cg) = &c.cgroup {
                cg.add(helper.pid)?;
            }
            helper.send_plan(&Plan::Exec(Box::new(ExecPlan {
                namespaces: c.exec_namespaces,
                process: config.plan.clone(),
            })))?;
            Ok::<_, ExecProcessError>(helper.wait_ready()?)
        })();
        let master = match ready {
            Ok(m) => m,
            Err(e) => {
                helper.kill();
                return Err(e);
            }
        };
        if let Some(m) = master {
            io.set_master(m, config.console_size);
        }
        let pidfd = match helper.pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                helper.kill();
                return Err(ExecProcessError::Io(e));
            }
        };
        let p = Arc::new(Process {
            name: format!("{} exec {exec_id}", c.id),
            pid: helper.pid,
            pidfd,
            exit: helper.exit.clone(),
            io,
            helper: Mutex::new(Some(helper)),
            oom_baseline: c.oom_kills(),
            waited: AtomicBool::new(false),
        });
        // Parked before execs, as in attach_stream: a stream is either
        // parked before this or finds the exec after it.
        let parked = {
            let mut parked = lock(&c.parked);
            let mut execs = lock(&c.execs);
            prune_execs(&mut execs);
            if let Some(old) = execs.insert(exec_id.to_string(), p.clone()) {
                // An exited exec of the same id: its streams go.
                old.io.shutdown();
            }
            parked.remove(exec_id).unwrap_or_default()
        };
        for parked in parked {
            if let Err(e) = p.io.attach(parked.kind, parked.fd, &|| Ok(())) {
                log::debug!(
                    "{}: parked {} stream dropped: {e}",
                    p.name,
                    parked.kind.name()
                );
            }
        }
        if let Err(e) = Self::start_process(&p, deadline) {
            if let Some(h) = lock(&p.helper).take() {
                h.kill();
            }
            lock(&c.execs).remove(exec_id);
            return Err(e.into());
        }
        log::info!("{}: started, pid {}", p.name, p.pid);
        Ok(p.pid as u32)
    }

    /// SignalProcess.
    pub fn signal(&self, req: &SignalProcessRequest) -> Result<(), ProcessOpError> {
        let c = self.get(&req.container_id)?;
        let sig = i32::try_from(req.signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| {
                ProcessOpError::Invalid(format!("signal: {} is not a signal number", req.signal))
            })?;
        if req.all {
            return c.signal_all(sig).map_err(|e| match e {
                ContainerOpError::Cgroup(e) => ProcessOpError::Cgroup(e),
                other => ProcessOpError::Invalid(other.to_string()),
            });
        }
        let p = c.process(&req.exec_id)?;
        if p.exit.has_exited() {
            return Err(ProcessOpError::Exited);
        }
        match pidfd_signal(p.pidfd.as_fd(), sig) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(ProcessOpError::Exited),
            Err(e) => Err(ProcessOpError::Sys("pidfd_send_signal", e)),
        }
    }

    /// WaitProcess: blocks until the process ended and its output is out.
    pub fn wait(
        &self,
        req: &ProcessRequest,
        deadline: Option<Instant>,
    ) -> Result<WaitProcessResponse, ProcessOpError> {
        let c = self.get(&req.container_id)?;
        let p = c.process(&req.exec_id)?;
        let status = p
            .exit
            .wait(deadline)
            .ok_or(ProcessOpError::Deadline("the process"))?;
        if !p.io.wait_output(deadline) {
            return Err(ProcessOpError::Deadline("forwarding its output"));
        }
        p.waited.store(true, Ordering::SeqCst);
        let oom_killed = oom_killed(
            req.exec_id.is_empty(),
            status,
            c.oom_kills().saturating_sub(p.oom_baseline),
        );
        Ok(WaitProcessResponse {
            exit_status: status.shell_status(),
            signal: status.signal() as u32,
            oom_killed,
            ..Default::default()
        })
    }

    /// ListProcesses.
    pub fn list(&self, id: &str) -> Result<ListProcessesResponse, ContainerOpError> {
        let c = self.get(id)?;
        let mut pids = c.pids()?;
        pids.sort_unstable();
        Ok(ListProcessesResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    args: cmdline(pid),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// ContainerStats.
    pub fn stats(&self, id: &str) -> Result<ContainerStatsResponse, ContainerOpError> {
        let c = self.get(id)?;
        let s = c.cgroup(&self.cgroups, "ContainerStats")?.stats();
        Ok(ContainerStatsResponse {
            cpu_usage_usec: s.cpu_usage_usec,
            cpu_user_usec: s.cpu_user_usec,
            cpu_system_usec: s.cpu_system_usec,
            memory_usage_bytes: s.memory_usage,
            memory_limit_bytes: s.memory_limit,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            oom_kills: s.oom_kills,
            ..Default::default()
        })
    }

    /// ResizeTty.
    pub fn resize_tty(&self, req: &ResizeTtyRequest) -> Result<(), ProcessOpError> {
        let p = self.get(&req.container_id)?.process(&req.exec_id)?;
        let dim = |v: u32, f: &str| {
            u16::try_from(v)
                .map_err(|_| ProcessOpError::Invalid(format!("{f}: {v} is above 65535")))
        };
        let (rows, cols) = (dim(req.rows, "rows")?, dim(req.cols, "cols")?);
        match p.io.resize(rows, cols) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ProcessOpError::NoTerminal),
            Err(e) => Err(ProcessOpError::Sys("TIOCSWINSZ", e)),
        }
    }

    /// CloseStdin.
    pub fn close_stdin(&self, req: &ProcessRequest) -> Result<(), ProcessOpError> {
        let p = self.get(&req.container_id)?.process(&req.exec_id)?;
        p.io.close_stdin();
        Ok(())
    }

    /// UpdateContainer.
    pub fn update(&self, req: &UpdateContainerRequest) -> Result<(), ContainerOpError> {
        let c = self.get(&req.container_id)?;
        let res: LinuxResources = spec::from_json(&req.resources_json)
            .map_err(|e| ContainerOpError::Spec(e.within("resources_json")))?;
        cgroup::check_resources("resources_json", &res).map_err(ContainerOpError::Spec)?;
        if !cgroup::has_limits(&res) {
            return Ok(());
        }
        c.cgroup(&self.cgroups, "UpdateContainer")?
            .apply("resources_json", &res)?;
        Ok(())
    }

    /// PauseContainer / ResumeContainer.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<(), ContainerOpError> {
        let c = self.get(id)?;
        let what = if frozen {
            "PauseContainer"
        } else {
            "ResumeContainer"
        };
        c.cgroup(&self.cgroups, what)?
            .freeze(frozen, FREEZE_TIMEOUT)?;
        Ok(())
    }

    /// RemoveContainer: kills what is left and forgets the container.
    pub fn remove(&self, id: &str) -> Result<(), ContainerOpError> {
        let c = self.get(id)?;
        let execs: Vec<Arc<Process>> = lock(&c.execs).values().cloned().collect();
        let all: Vec<&Arc<Process>> = std::iter::once(&c.init).chain(execs.iter()).collect();
        for p in &all {
            if !p.exit.has_exited() {
                let _ = pidfd_signal(p.pidfd.as_fd(), libc::SIGKILL);
            }
        }
        if let Err(e) = c.signal_all(libc::SIGKILL) {
            log::debug!("container {id}: kill all: {e}");
        }
        if let Some(cg) = &c.cgroup {
            // Frozen processes die only once thawed on older kernels.
            let _ = std::fs::write(cg.path().join("cgroup.freeze"), "0");
        }
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        for p in &all {
            if p.exit.wait(Some(deadline)).is_none() {
                return Err(ContainerOpError::Stuck(
                    id.to_string(),
                    REMOVE_TIMEOUT.as_secs(),
                ));
            }
            p.io.shutdown();
        }
        if let Some(w) = c.oom_watch {
            self.oom.unwatch(w);
        }
        if let Some(cg) = &c.cgroup {
            cg.remove(REMOVE_TIMEOUT)?;
        }
        lock(&self.map).remove(id);
        log::info!("container {id}: removed");
        Ok(())
    }

    /// GetOomEvent: the id of the next container with an OOM kill.
    pub fn oom_event(&self, deadline: Option<Instant>) -> Result<String, OomEventError> {
        self.oom.next(deadline).ok_or(OomEventError::Deadline)
    }

    /// Attaches a host stream (the stdio listener's call); `ack` writes OK.
    pub fn attach_stream(
        &self,
        req: &StdioRequest,
        fd: OwnedFd,
        ack: &dyn Fn() -> std::io::Result<()>,
    ) -> Result<(), AttachStreamError> {
        let c = self.get(&req.container_id)?;
        let Some(exec_id) = &req.exec_id else {
            return Ok(c.init.io.attach(req.kind, fd, ack)?);
        };
        let mut parked = lock(&c.parked);
        let live = lock(&c.execs)
            .get(exec_id)
            .filter(|p| !p.exit.has_exited())
            .cloned();
        if let Some(p) = live {
            return Ok(p.io.attach(req.kind, fd, ack)?);
        }
        // The host may connect an exec's streams before ExecProcess: keep
        // them until it comes (or STREAM_TIMEOUT passes).
        for list in parked.values_mut() {
            list.retain(|p| p.since.elapsed() < STREAM_TIMEOUT);
        }
        parked.retain(|_, l| !l.is_empty());
        if parked.values().map(Vec::len).sum::<usize>() >= MAX_PARKED {
            return Err(AttachStreamError::TooManyParked);
        }
        let list = parked.entry(exec_id.clone()).or_default();
        if list.iter().any(|p| p.kind == req.kind) {
            return Err(AttachError::Duplicate(req.kind.name()).into());
        }
        ack().map_err(AttachError::Ack)?;
        list.push(Parked {
            kind: req.kind,
            fd,
            since: Instant::now(),
        });
        Ok(())
    }
}

/// Forgets the oldest exited, waited-for execs beyond the keep limit.
fn prune_execs(execs: &mut HashMap<String, Arc<Process>>) {
    let done: Vec<String> = execs
        .iter()
        .filter(|(_, p)| p.exit.has_exited() && p.waited.load(Ordering::SeqCst))
        .map(|(k, _)| k.clone())
        .collect();
    if done.len() > KEEP_EXITED_EXECS {
        let mut done: Vec<(i32, String)> = done.into_iter().map(|k| (execs[&k].pid, k)).collect();
        done.sort();
        for (_, k) in done.iter().take(done.len() - KEEP_EXITED_EXECS) {
            if let Some(p) = execs.remove(k) {
                p.io.shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("c1").is_ok());
        assert!(check_id("abc_DEF-1.2+x@y:z").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("-").is_err());
        assert!(check_id("..").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id("a b").is_err());
        assert!(check_id(&"x".repeat(300)).is_err());
    }

    #[test]
    fn a_container_is_oom_killed_when_any_of_its_processes_was() {
        let killed = ExitStatus::Signaled(libc::SIGKILL);
        // init itself, or a child of the shell that exits 137 after it.
        assert!(oom_killed(true, killed, 1));
        assert!(oom_killed(true, ExitStatus::Exited(137), 1));
        // no OOM kill in the cgroup since it started: a plain SIGKILL.
        assert!(!oom_killed(true, killed, 0));
        // an exec'd process only when the OOM killer took it.
        assert!(oom_killed(false, killed, 2));
        assert!(!oom_killed(false, ExitStatus::Exited(0), 2));
    }

    #[test]
    fn stdio_defaults_to_nothing() {
        assert_eq!(want(None), Want::default());
        let s = Stdio {
            stdout: true,
            terminal: true,
            ..Default::default()
        };
        assert!(want(Some(&s)).terminal);
    }
}
