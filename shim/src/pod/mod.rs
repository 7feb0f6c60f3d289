//! A pod: one microVM and the containers running in it.
//!
//! The first container created (the sandbox: the pause container under
//! Kubernetes, or a lone `ctr run` container) boots the VM; containers
//! that name it as their sandbox join it; deleting the last one shuts
//! the VM down and removes the pod's state directory.

pub mod annotations;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod vm;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::ExitSignal;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use husk::config::HuskConfig;
use husk::container::sizing::vm_size;
use husk::container::state::{process_alive, process_start_time};
use husk::oci::{guest_spec_under, Bundle, GuestLayout};
use husk::sandbox::{JoinedNetwork, NetworkRecord};
use husk_protocol::agent::{ContainerStatsResponse, ProcessInfo};

use crate::error::TaskError;
use crate::events::{now, Event, Events};
use crate::grouping::Role;
use crate::stdio::{Bridge, StdioPaths};
use mounts::{ContainerMounts, RootfsMount};
use process::{Exit, Phase, Process};
use vm::Vm;

/// Exit status of a process whose VM died under it (as if SIGKILLed).
pub const VM_DIED_STATUS: u32 = 128 + libc::SIGKILL as u32;
/// How often the VMM is checked for having ended under the pod.
const VM_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Exit status of a process that could not be started.
const START_FAILED_STATUS: u32 = 255;

/// What containerd asks to create, in husk's terms.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The container id.
    pub id: String,
    /// Its bundle.
    pub bundle: PathBuf,
    /// The snapshotter's mounts for its rootfs (none: the bundle's own).
    pub rootfs: Vec<RootfsMount>,
    /// containerd's FIFOs.
    pub stdio: StdioPaths,
    /// The husk configuration file named in the runtime options.
    pub config_path: Option<PathBuf>,
}

/// A container of the pod.
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its bundle directory.
    pub bundle: String,
    /// Its init process.
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    mounts: Mutex<Option<ContainerMounts>>,
    paused: AtomicBool,
    oom_events: AtomicU64,
}

impl Container {
    /// Whether it is frozen.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// Files of a pod's state directory.
#[derive(Debug, Clone)]
pub struct PodDir {
    /// `<state_dir>/pods/<namespace>/<pod dir name>`.
    pub dir: PathBuf,
}

/// Longest pod id that names its directory as is. Longer ones (CRI's
/// sandbox ids are 64 hex digits) are shortened, or the VMM's socket
/// under the directory outgrows a Unix socket address (108 bytes).
const POD_DIR_NAME_MAX: usize = 32;

/// The directory name of pod `pod_id`: the id, or for a long id its first
/// 12 characters and a 64-bit FNV-1a hash of all of it. The hash is fixed
/// by its definition, so a later `shim delete` finds the same directory.
fn pod_dir_name(pod_id: &str) -> String {
    if pod_id.len() <= POD_DIR_NAME_MAX {
        return pod_id.to_string();
    }
    let head: String = pod_id.chars().take(12).collect();
    format!("{head}-{:016x}", fnv1a(pod_id.as_bytes()))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PodDir {
    /// The pod directory of `pod_id` in containerd namespace `namespace`.
    pub fn new(state_dir: &Path, namespace: &str, pod_id: &str) -> Self {
        Self {
            dir: state_dir
                .join("pods")
                .join(namespace)
                .join(pod_dir_name(pod_id)),
        }
    }

    /// The VMM's own state directory.
    pub fn vm(&self) -> PathBuf {
        self.dir.join("vm")
    }

    /// The directory shared with the guest.
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// The VMM's pid and start time, for cleanup after a shim died.
    pub fn vmm_pid(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }

    /// The pod network joined to the VM ([`NetworkRecord`] as JSON), for
    /// cleanup after a shim died.
    pub fn network(&self) -> PathBuf {
        self.dir.join("network.json")
    }

    /// Kills a VMM left by a dead shim and removes the directory. Nothing
    /// is mounted in the host's namespace, so only empty mount points are
    /// left under `shared`.
    pub fn clean_up(&self) {
        if let Ok(text) = fs::read_to_string(self.vmm_pid()) {
            let mut words = text.split_whitespace().map(str::parse::<i64>);
            if let (Some(Ok(pid)), Some(Ok(start))) = (words.next(), words.next()) {
                let pid = pid as i32;
                if process_alive(pid, start as u64) {
                    log::warn!("killing VMM {pid} left by a dead shim");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Ok(text) = fs::read(self.network()) {
            match serde_json::from_slice::<NetworkRecord>(&text) {
                Ok(record) => record.part(),
                Err(e) => log::warn!("cannot read {:?}: {e}", self.network()),
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {:?}: {e}", self.dir);
            }
        }
    }
}

/// The pod this shim serves.
pub struct Pod {
    namespace: String,
    events: Events,
    exit: Arc<ExitSignal>,
    vm: Mutex<Option<Arc<Vm>>>,
    dir: Mutex<Option<PodDir>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<()>,
    /// The guest pid of the sandbox's init (the pod's first container),
    /// whose namespaces the pod's other containers join.
    sandbox_pid: Mutex<Option<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pod {
    /// An empty pod in containerd namespace `namespace`.
    pub fn new(namespace: &str, events: Events, exit: Arc<ExitSignal>) -> Self {
        Self {
            namespace: namespace.to_string(),
            events,
            exit,
            vm: Mutex::new(None),
            dir: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(()),
            sandbox_pid: Mutex::new(None),
        }
    }

    /// The running VM.
    pub fn vm(&self) -> Result<Arc<Vm>, TaskError> {
        lock(&self.vm).clone().ok_or(TaskError::NoVm)
    }

    /// A container.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, TaskError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NoContainer(id.to_string()))
    }

    /// A process: the init (`exec_id` empty) or an exec.
    pub fn process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(Arc<Container>, Arc<Process>), TaskError> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            let init = Arc::clone(&c.init);
            return Ok((c, init));
        }
        let p = lock(&c.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| TaskError::NoExec {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })?;
        Ok((c, p))
    }

    /// The pid containerd sees for every task: the VMM's.
    pub fn task_pid(&self) -> u32 {
        lock(&self.vm).as_ref().map_or(0, |vm| vm.pid)
    }

    /// Creates a container; the pod's first boots the VM. Returns the pid.
    pub fn create(self: &Arc<Self>, req: CreateRequest) -> Result<u32, TaskError> {
        let _one_at_a_time = lock(&self.creating);
        husk::oci::validate_container_id(&req.id).map_err(|e| TaskError::Invalid(e.to_string()))?;
        if lock(&self.containers).contains_key(&req.id) {
            return Err(TaskError::Exists(format!("container {}", req.id)));
        }
        let bundle = Bundle::load(&req.bundle)?;
        let annotations = bundle.spec.annotations().clone().unwrap_or_default();
        let booted_here = if lock(&self.vm).is_none() {
            if let Role::Member { sandbox_id } = Role::of(&annotations) {
                return Err(TaskError::Invalid(format!(
                    "container {} names sandbox {sandbox_id}, which does not exist in this shim",
                    req.id
                )));
            }
            let (config, _) = HuskConfig::load(req.config_path.as_deref())?;
            let config = annotations::apply(&config, &annotations)?;
            self.boot(&config, &req.id, &bundle)?;
            true
        } else {
            // Per-pod settings belong to the sandbox; still refuse typos.
            annotations::apply(&HuskConfig::default(), &annotations)?;
            self.vm()?.check_network_unchanged()?;
            false
        };
        let created = self.create_in_vm(&req, &bundle);
        if created.is_err() && booted_here {
            self.end_vm();
        }
        created
    }

    /// Boots the pod VM sized for the sandbox's spec.
    fn boot(
        self: &Arc<Self>,
        config: &HuskConfig,
        pod_id: &str,
        bundle: &Bundle,
    ) -> Result<(), TaskError> {
        let dir = PodDir::new(&config.state_dir, &self.namespace, pod_id);
        let io = |what: &str, path: &Path| {
            let what = format!("{what} {path:?}");
            move |source| TaskError::Io { what, source }
        };
        fs::create_dir_all(dir.shared()).map_err(io("create", &dir.shared()))?;
        let (vcpus, memory_mib) = vm_size(config, &bundle.spec);
        let network = match bundle.network_namespace().map(JoinedNetwork::join) {
            None => None,
            Some(Ok(joined)) => {
                // Recorded first, so a `shim delete` after a crash parts it.
                let json = serde_json::to_vec(joined.record()).expect("record serializes");
                fs::write(dir.network(), json).map_err(io("write", &dir.network()))?;
                Some(joined)
            }
            Some(Err(e)) => {
                dir.clean_up();
                return Err(e.into());
            }
        };
        let vm = match Vm::boot(config, vcpus, memory_mib, &dir.vm(), &dir.shared(), network) {
            Ok(vm) => Arc::new(vm),
            Err(e) => {
                dir.clean_up();
                return Err(e);
            }
        };
        let start = process_start_time(vm.pid as i32).unwrap_or(0);
        if let Err(e) = fs::write(dir.vmm_pid(), format!("{} {start}\n", vm.pid)) {
            log::warn!("cannot record the VMM pid: {e}");
        }
        *lock(&self.dir) = Some(dir);
        *lock(&self.vm) = Some(Arc::clone(&vm));
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map(drop)
                .map_err(|source| TaskError::Io {
                    what: format!("start the {name} thread"),
                    source,
                })
        };
        let (pod, watched) = (Arc::clone(self), Arc::clone(&vm));
        spawn(
            "oom-events",
            Box::new(move || pod.forward_oom_events(&watched)),
        )?;
        let pod = Arc::clone(self);
        spawn("vm-watch", Box::new(move || pod.watch_vm(&vm)))?;
        Ok(())
    }

    /// Notices a VMM that ended under the pod (killed, crashed): every
    /// process not yet ended exits with 137 at once, rather than when a
    /// call to the lost agent gives up.
    fn watch_vm(&self, vm: &Arc<Vm>) {
        while vm.alive() {
            std::thread::sleep(VM_WATCH_INTERVAL);
            let current = lock(&self.vm).as_ref().is_some_and(|v| Arc::ptr_eq(v, vm));
            if !current {
                return;
            }
        }
        if !lock(&self.vm).as_ref().is_some_and(|v| Arc::ptr_eq(v, vm)) {
            return;
        }
        log::error!("the pod's VMM ended under its containers\n{}", vm.logs());
        let containers: Vec<_> = lock(&self.containers).values().cloned().collect();
        for c in containers {
            let execs: Vec<_> = lock(&c.execs).values().cloned().collect();
            for p in std::iter::once(Arc::clone(&c.init)).chain(execs) {
                if p.phase() == Phase::Stopped {
                    continue;
                }
                let at = now();
                if p.record_exit(VM_DIED_STATUS, at.clone()) {
                    self.publish_exit(&p, vm.pid, VM_DIED_STATUS, at);
                }
            }
        }
    }

    /// Publishes a process's exit.
    fn publish_exit(&self, process: &Process, pid: u32, status: u32, at: Timestamp) {
        self.events.publish(Event::Exit {
            container_id: process.container_id.clone(),
            id: if process.exec_id.is_empty() {
                process.container_id.clone()
            } else {
                process.exec_id.clone()
            },
            pid,
            status,
            at,
        });
    }

    /// Mounts the container's files and creates it in the guest.
    fn create_in_vm(&self, req: &CreateRequest, bundle: &Bundle) -> Result<u32, TaskError> {
        let vm = self.vm()?;
        let shared = lock(&self.dir)
            .as_ref()
            .map(PodDir::shared)
            .ok_or(TaskError::NoVm)?;
        let prefix = Path::new(&req.id);
        let mut spec = guest_spec_under(bundle, prefix);
        let sandbox_pid = *lock(&self.sandbox_pid);
        namespaces::join_sandbox(&mut spec, vm.pid, sandbox_pid)?;
        let spec = serde_json::to_vec(&spec).expect("spec serializes");
        let layout = GuestLayout::for_bundle_under(bundle, prefix);
        let mounts = ContainerMounts::mount(&shared, &req.id, &req.rootfs, &layout.binds)?;
        let guest_pid = vm
            .client
            .create_container(&req.id, spec, req.stdio.wanted())?;
        if sandbox_pid.is_none() {
            *lock(&self.sandbox_pid) = Some(guest_pid);
        }
        let bridge = match Bridge::attach(&vm.vsock, &req.id, "", &req.stdio) {
            Ok(b) => b,
            Err(e) => {
                let _ = vm.client.remove_container(&req.id);
                return Err(e);
            }
        };
        let init = Arc::new(Process::new(&req.id, "", req.stdio.clone(), Vec::new()));
        init.set_bridge(bridge);
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            init,
            execs: Mutex::new(HashMap::new()),
            mounts: Mutex::new(Some(mounts)),
            paused: AtomicBool::new(false),
            oom_events: AtomicU64::new(0),
        });
        lock(&self.containers).insert(req.id.clone(), container);
        self.events.publish(Event::Create {
            container_id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            io: (
                req.stdio.stdin.clone(),
                req.stdio.stdout.clone(),
                req.stdio.stderr.clone(),
                req.stdio.terminal,
            ),
            pid: vm.pid,
        });
        log::info!("container {} created in the pod VM", req.id);
        Ok(vm.pid)
    }

    /// Starts a container's init or an exec.
    pub fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let (container, process) = self.process(id, exec_id)?;
        if process.phase() != Phase::Created {
            return Err(TaskError::State {
                what: process.name(),
                why: "already started",
            });
        }
        let vm = self.vm()?;
        if let Err(e) = self.start_in_vm(&vm, &process) {
            // Whoever waits for it (ctr waits before it starts) is told.
            process.record_exit(START_FAILED_STATUS, now());
            return Err(e);
        }
        process.set_running();
        self.watch(&vm, container, Arc::clone(&process));
        self.events.publish(if exec_id.is_empty() {
            Event::Start {
                container_id: id.to_string(),
                pid: vm.pid,
            }
        } else {
            Event::ExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid: vm.pid,
            }
        });
        Ok(vm.pid)
    }

    /// Starts the init, or execs the process (its streams are attached
    /// first: the agent's ExecProcess waits for them).
    fn start_in_vm(&self, vm: &Vm, process: &Process) -> Result<(), TaskError> {
        let (id, exec_id) = (&process.container_id, &process.exec_id);
        if exec_id.is_empty() {
            vm.client.start_container(id)?;
            return Ok(());
        }
        process.set_bridge(Bridge::attach(&vm.vsock, id, exec_id, &process.stdio)?);
        vm.client.exec_process(
            id,
            exec_id,
            process.spec_json.clone(),
            process.stdio.wanted(),
        )?;
        Ok(())
    }

    /// Waits in a thread for the process to end, then records and
    /// publishes its exit (137 if the VM died under it).
    fn watch(self: &Arc<Self>, vm: &Arc<Vm>, container: Arc<Container>, process: Arc<Process>) {
        let pod = Arc::clone(self);
        let vm = Arc::clone(vm);
        std::thread::spawn(move || {
            let status = match vm
                .client
                .wait_process(&process.container_id, &process.exec_id)
            {
                Ok(w) => {
                    if w.oom_killed && container.oom_events.load(Ordering::SeqCst) == 0 {
                        pod.report_oom(&container);
                    }
                    w.exit_status as u32
                }
                Err(e) => {
                    log::error!(
                        "{}: lost the agent while waiting ({e}); the VM died\n{}",
                        process.name(),
                        vm.logs()
                    );
                    VM_DIED_STATUS
                }
            };
            let at = now();
            if process.record_exit(status, at.clone()) {
                log::info!("{} exited with {status}", process.name());
                pod.publish_exit(&process, vm.pid, status, at);
            }
        });
    }

    /// Publishes an OOM event for `container`.
    fn report_oom(&self, container: &Container) {
        container.oom_events.fetch_add(1, Ordering::SeqCst);
        self.events.publish(Event::Oom {
            container_id: container.id.clone(),
        });
    }

    /// Passes the guest's OOM events on until the VM ends.
    fn forward_oom_events(&self, vm: &Vm) {
        loop {
            match vm.client.get_oom_event() {
                Ok(event) => {
                    let container = lock(&self.containers).get(&event.container_id).cloned();
                    if let Some(c) = container {
                        self.report_oom(&c);
                    }
                }
                Err(_) if !vm.alive() => return,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Registers an exec process (started by `start`).
    pub fn add_exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        spec_json: Vec<u8>,
    ) -> Result<(), TaskError> {
        let container = self.container(id)?;
        if container.init.phase() == Phase::Stopped {
            return Err(TaskError::State {
                what: container.init.name(),
                why: "has stopped: cannot exec in it",
            });
        }
        if exec_id.is_empty() {
            return Err(TaskError::Invalid("exec id is empty".into()));
        }
        let mut execs = lock(&container.execs);
        if execs.contains_key(exec_id) {
            return Err(TaskError::Exists(format!("exec {exec_id} in {id}")));
        }
        execs.insert(
            exec_id.to_string(),
            Arc::new(Process::new(id, exec_id, stdio, spec_json)),
        );
        self.events.publish(Event::ExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    /// Signals a process (or, with `all`, every process of the container).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), TaskError> {
        let (_, process) = self.process(id, exec_id)?;
        if process.phase() == Phase::Stopped {
            return Err(TaskError::Finished(process.name()));
        }
        let vm = self.vm()?;
        vm.client.signal_process(id, exec_id, signal, all)?;
        Ok(())
    }

    /// Deletes an ended (or never started) process; deleting a
    /// container's init removes the container, and the last container's
    /// removal ends the VM.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit), TaskError> {
        let (container, process) = self.process(id, exec_id)?;
        if process.phase() == Phase::Running {
            return Err(TaskError::State {
                what: process.name(),
                why: "is running: kill it first",
            });
        }
        let exit = process.exit().unwrap_or(Exit {
            status: VM_DIED_STATUS,
            at: now(),
        });
        let pid = self.task_pid();
        if !exec_id.is_empty() {
            lock(&container.execs).remove(exec_id);
            return Ok((pid, exit));
        }
        if let Ok(vm) = self.vm() {
            if vm.alive() {
                if let Err(e) = vm.client.remove_container(id) {
                    log::warn!("container {id}: the agent could not remove it: {e}");
                }
            }
        }
        // Execs never started (or still waited for) end with the container.
        for exec in lock(&container.execs).drain().map(|(_, p)| p) {
            exec.record_exit(VM_DIED_STATUS, now());
        }
        if let Some(mut mounts) = lock(&container.mounts).take() {
            mounts.unmount();
        }
        let last = {
            let mut containers = lock(&self.containers);
            containers.remove(id);
            containers.is_empty()
        };
        self.events.publish(Event::Delete {
            container_id: id.to_string(),
            pid,
            status: exit.status,
            at: exit.at.clone(),
        });
        if last {
            self.end_vm();
        }
        Ok((pid, exit))
    }

    /// Shuts the VM down and removes the pod's state directory.
    fn end_vm(&self) {
        *lock(&self.sandbox_pid) = None;
        let vm = lock(&self.vm).take();
        if let Some(vm) = vm {
            vm.shut_down();
        }
        if let Some(dir) = lock(&self.dir).take() {
            // Every container's mounts are gone: only empty directories
            // and the VMM's files remain.
            let _ = fs::remove_file(dir.vmm_pid());
            let _ = fs::remove_dir(dir.shared());
            if let Err(e) = fs::remove_dir(&dir.dir) {
                log::warn!("cannot remove the pod directory {:?}: {e}", dir.dir);
            }
        }
    }

    /// Freezes (`true`) or thaws a container.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), TaskError> {
        let container = self.container(id)?;
        let vm = self.vm()?;
        if paused {
            vm.client.pause_container(id)?;
        } else {
            vm.client.resume_container(id)?;
        }
        container.paused.store(paused, Ordering::SeqCst);
        self.events.publish(if paused {
            Event::Paused {
                container_id: id.to_string(),
            }
        } else {
            Event::Resumed {
                container_id: id.to_string(),
            }
        });
        Ok(())
    }

    /// The container's processes in the guest.
    pub fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>, TaskError> {
        self.container(id)?;
        Ok(self.vm()?.client.list_processes(id)?.processes)
    }

    /// The container's cgroup statistics in the guest.
    pub fn stats(&self, id: &str) -> Result<ContainerStatsResponse, TaskError> {
        self.container(id)?;
        Ok(self.vm()?.client.container_stats(id)?)
    }

    /// Applies new resources (OCI LinuxResources, JSON) to a container.
    pub fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), TaskError> {
        self.container(id)?;
        self.vm()?.client.update_container(id, resources_json)?;
        Ok(())
    }

    /// Resizes a process's guest pty.
    pub fn resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> Result<(), TaskError> {
        self.process(id, exec_id)?;
        self.vm()?.client.resize_tty(id, exec_id, rows, cols)?;
        Ok(())
    }

    /// Ends a process's input.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        let (_, process) = self.process(id, exec_id)?;
        process.close_stdin();
        if process.phase() == Phase::Running {
            self.vm()?.client.close_stdin(id, exec_id)?;
        }
        Ok(())
    }

    /// Ends the shim if no container is left (or `now`).
    pub fn shutdown(&self, now: bool) {
        if now || lock(&self.containers).is_empty() {
            self.end_vm();
            self.exit.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> (Arc<Pod>, std::sync::mpsc::Receiver<Event>) {
        let (sink, events) = std::sync::mpsc::channel();
        let pod = Pod::new(
            "ns",
            Events::to_channel(sink),
            Arc::new(ExitSignal::default()),
        );
        (Arc::new(pod), events)
    }

    fn bundle(annotations: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
                "process":{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
                "linux":{{"namespaces":[{{"type":"network"}}]}},
                "annotations":{annotations}}}"#
            ),
        )
        .unwrap();
        dir
    }

    fn request(id: &str, bundle: &Path) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            bundle: bundle.to_path_buf(),
            rootfs: Vec::new(),
            stdio: StdioPaths::default(),
            config_path: None,
        }
    }

    #[test]
    fn long_pod_ids_get_short_stable_directory_names() {
        assert_eq!(pod_dir_name("pod-a"), "pod-a");
        let cri = "b36b7d92092286bd44e780ecfe36f17912999a6f8d4ab41c3304ca530b2b96dd";
        let name = pod_dir_name(cri);
        assert_eq!(name, pod_dir_name(cri), "stable");
        assert!(
            name.starts_with("b36b7d920922-") && name.len() == 29,
            "{name}"
        );
        let other = "b36b7d92092286bd44e780ecfe36f17912999a6f8d4ab41c3304ca530b2b96de";
        assert_ne!(pod_dir_name(other), name);
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let dir = PodDir::new(Path::new("/run/husk-containerd.abcdef/husk"), "k8s.io", cri);
        let socket = dir.vm().join("vsock.sock");
        assert!(socket.as_os_str().len() < 108, "{socket:?}");
    }

    #[test]
    fn a_member_of_a_missing_sandbox_is_refused_and_nothing_is_made() {
        let (pod, events) = pod();
        let b = bundle(
            r#"{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"gone"}"#,
        );
        let e = pod.create(request("c1", b.path())).unwrap_err();
        assert!(e.to_string().contains("sandbox gone"), "{e}");
        assert!(pod.vm().is_err());
        assert!(events.try_recv().is_err(), "no event for a refused create");
    }

    #[test]
    fn bad_ids_annotations_and_bundles_are_refused_before_any_vm() {
        let (pod, _events) = pod();
        let b = bundle(r#"{"io.husk.vcpu":"2"}"#);
        let e = pod.create(request("c1", b.path())).unwrap_err();
        assert!(e.to_string().contains("io.husk.vcpu"), "{e}");
        let e = pod.create(request("../x", b.path())).unwrap_err();
        assert!(e.to_string().contains("../x"), "{e}");
        let e = pod
            .create(request("c2", Path::new("/nonexistent/bundle")))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/bundle"), "{e}");
        assert!(pod.vm().is_err());
    }

    #[test]
    fn requests_for_unknown_tasks_are_not_found() {
        let (pod, _events) = pod();
        assert!(matches!(
            pod.delete("nope", ""),
            Err(TaskError::NoContainer(_))
        ));
        assert!(matches!(
            pod.kill("nope", "", 9, false),
            Err(TaskError::NoContainer(_))
        ));
        assert!(matches!(
            pod.start("nope", "e1"),
            Err(TaskError::NoContainer(_))
        ));
    }
}
