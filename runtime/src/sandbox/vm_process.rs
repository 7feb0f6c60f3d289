//! A microVM running in its own `husk vmm` process.
//!
//! The VMM runs in a child process so that a VMM crash never takes its
//! parent down, and the other way round. Everything the VM creates lives in
//! one state directory, which [`VmProcess`] removes when dropped, after
//! killing the VMM if it still runs.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use super::mount_ns::Binds;
use crate::oci::SharedBind;
use crate::vmm::config::{ConsoleConfig, NetConfig, VmConfig, VsockConfig, MAX_NICS};
use crate::vmm::console::console_log_tail;

/// How much of the console and VMM logs an error report carries.
const LOG_TAIL_BYTES: usize = 4096;

/// The descriptor number the VMM process finds its first tap at: tap `i`
/// of [`SpawnOptions::taps`] is `TAP_FD_BASE + i` there.
pub const TAP_FD_BASE: RawFd = 3;

/// The `net` entries of a VM config for NICs with these MACs and MTUs, in
/// the order of [`SpawnOptions::taps`]: NIC `i`'s tap is descriptor
/// [`TAP_FD_BASE`]` + i` in the VMM. An MTU beyond 65535 is capped there.
pub fn net_configs(nics: &[(husk_netlink::Mac, u32)]) -> Vec<NetConfig> {
    nics.iter()
        .zip(TAP_FD_BASE..)
        .map(|((mac, mtu), tap_fd)| NetConfig {
            tap_fd,
            mac: mac.0,
            mtu: u16::try_from(*mtu).unwrap_or(u16::MAX),
        })
        .collect()
}

/// Files of a sandbox's state directory.
#[derive(Debug, Clone)]
pub struct VmProcessPaths {
    /// The state directory itself.
    pub dir: PathBuf,
    /// The VMM's config.
    pub config: PathBuf,
    /// The hybrid vsock socket.
    pub vsock: PathBuf,
    /// Where the agent's "ready" connection arrives (guest connections to
    /// host port P go to `<vsock>_P`).
    pub ready: PathBuf,
    /// The guest console log.
    pub console_log: PathBuf,
    /// The VMM process's own stderr.
    pub vmm_log: PathBuf,
    /// The directory shared with the guest over virtio-fs.
    pub shared: PathBuf,
}

impl VmProcessPaths {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config: dir.join("vm.json"),
            vsock: dir.join("vsock.sock"),
            ready: dir.join(format!("vsock.sock_{}", husk_protocol::READY_VSOCK_PORT)),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
            shared: dir.join("shared"),
        }
    }
}

/// Why a VMM process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnVmError {
    /// The state directory exists already or cannot be made.
    #[error("cannot create the sandbox state directory {path:?}")]
    StateDir {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VM config could not be written.
    #[error("cannot write the VM config {path:?}")]
    WriteConfig {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shared directory's binds could not be prepared.
    #[error("shared directory")]
    Binds(#[source] super::mount_ns::PrepareBindsError),
    /// The socket for the agent's ready connection could not be made.
    #[error("cannot listen on {path:?} for the agent")]
    ReadySocket {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// More taps than a VM may have NICs.
    #[error("{0} taps; a VM has at most {MAX_NICS} NICs")]
    TooManyTaps(usize),
    /// The config's `net` does not match the taps: one entry per tap, tap
    /// `i` at descriptor `TAP_FD_BASE + i` ([`net_configs`]).
    #[error(
        "the VM config's net ({nics} NICs) does not match the {taps} taps given (see net_configs)"
    )]
    NetTaps {
        /// Entries in the config's `net`.
        nics: usize,
        /// Taps in the options.
        taps: usize,
    },
    /// A tap could not be kept from other processes the parent starts.
    #[error("cannot mark a tap close-on-exec")]
    TapCloexec(#[source] std::io::Error),
    /// The VMM process could not be started.
    #[error("cannot start the VMM {program:?}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to start a VMM process beyond its config.
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// Host paths to bind into the shared directory, in the VMM's own
    /// mount namespace.
    pub binds: Vec<SharedBind>,
    /// Kill the VMM when the process that spawned it dies.
    pub die_with_parent: bool,
    /// Taps for the VM's NICs (opened with `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`), at most [`MAX_NICS`]. Tap `i` is descriptor
    /// [`TAP_FD_BASE`]` + i` in the VMM process; the config's `net` must
    /// say so ([`net_configs`]). Dropping these after the spawn leaves the
    /// VMM the only holder, so each tap goes away with it.
    pub taps: Vec<OwnedFd>,
}

/// A running VMM process and its state directory.
#[derive(Debug)]
pub struct VmProcess {
    child: Option<Child>,
    paths: VmProcessPaths,
    started: Instant,
    /// Listens for the agent's ready connection until it has come.
    ready: Option<UnixListener>,
}

impl VmProcess {
    /// Starts `husk_bin vmm` for `config` with its sockets and logs in a
    /// new state directory `dir`. The config's console and vsock are set
    /// to files in `dir`.
    pub fn spawn(
        husk_bin: &Path,
        config: VmConfig,
        dir: &Path,
        guest_cid: u64,
    ) -> Result<Self, SpawnVmError> {
        Self::spawn_with(husk_bin, config, dir, guest_cid, &SpawnOptions::default())
    }

    /// [`VmProcess::spawn`] with binds into the shared directory (made in
    /// the VMM's own mount namespace), the VMM's lifetime tied to ours,
    /// and taps for its NICs (the config's `net` from [`net_configs`]).
    /// The VMM gets its own copies of the taps: drop `options` once this
    /// returns, so that each tap lives only as long as the VMM.
    pub fn spawn_with(
        husk_bin: &Path,
        mut config: VmConfig,
        dir: &Path,
        guest_cid: u64,
        options: &SpawnOptions,
    ) -> Result<Self, SpawnVmError> {
        let paths = VmProcessPaths::new(dir);
        let numbered = config
            .net
            .iter()
            .map(|nic| nic.tap_fd)
            .eq(TAP_FD_BASE..TAP_FD_BASE + options.taps.len() as RawFd);
        if !numbered {
            return Err(SpawnVmError::NetTaps {
                nics: config.net.len(),
                taps: options.taps.len(),
            });
        }
        let taps = TapFds::new(&options.taps)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|source| SpawnVmError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        // From here on, dropping `process` removes the directory.
        let mut process = Self {
            child: None,
            paths: paths.clone(),
            started: Instant::now(),
            ready: None,
        };
        if config.console != ConsoleConfig::Off {
            config.console = ConsoleConfig::Log {
                path: paths.console_log.clone(),
                max_bytes: 512 * 1024,
            };
        }
        config.vsock = Some(VsockConfig {
            guest_cid,
            uds_path: paths.vsock.clone(),
        });
        let json = serde_json::to_vec_pretty(&config).expect("VmConfig serializes");
        fs::write(&paths.config, json).map_err(|source| SpawnVmError::WriteConfig {
            path: paths.config.clone(),
            source,
        })?;
        let vmm_log = File::create(&paths.vmm_log).map_err(|source| SpawnVmError::WriteConfig {
            path: paths.vmm_log.clone(),
            source,
        })?;
        if !options.binds.is_empty() {
            fs::create_dir_all(&paths.shared).map_err(|source| SpawnVmError::StateDir {
                path: paths.shared.clone(),
                source,
            })?;
        }
        let binds = Binds::prepare(&paths.shared, &options.binds).map_err(SpawnVmError::Binds)?;
        // Bound before the VMM starts, so the agent's connection always
        // finds it.
        let ready = UnixListener::bind(&paths.ready)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| SpawnVmError::ReadySocket {
                path: paths.ready.clone(),
                source,
            })?;
        process.ready = Some(ready);
        let die_with_parent = options.die_with_parent;
        let mut command = Command::new(husk_bin);
        command
            .arg("vmm")
            .arg("--config")
            .arg(&paths.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log);
        let setup = move || child_setup(die_with_parent, &binds, &taps);
        // SAFETY: `child_setup` makes only raw system calls (prctl,
        // unshare, mount, fcntl, dup2) on data prepared before fork; it
        // allocates nothing.
        unsafe { command.pre_exec(setup) };
        process.started = Instant::now();
        let child = command.spawn().map_err(|source| SpawnVmError::Spawn {
            program: husk_bin.to_path_buf(),
            source,
        })?;
        process.child = Some(child);
        Ok(process)
    }

    /// The state directory's files.
    pub fn paths(&self) -> &VmProcessPaths {
        &self.paths
    }

    /// The listener for the agent's ready connection, until it has come.
    pub fn ready_listener(&self) -> Option<&UnixListener> {
        self.ready.as_ref()
    }

    /// Closes the ready listener: the agent has said it is ready.
    pub fn agent_is_ready(&mut self) {
        self.ready = None;
        let _ = fs::remove_file(&self.paths.ready);
    }

    /// When the VMM process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The VMM's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The VMM's exit status if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the VMM to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end of the console log and of the VMM's own log, for reports.
    pub fn logs(&self) -> String {
        let console = console_log_tail(&self.paths.console_log, LOG_TAIL_BYTES);
        let vmm = console_log_tail(&self.paths.vmm_log, LOG_TAIL_BYTES);
        let mut out = String::new();
        if !vmm.trim().is_empty() {
            out.push_str("--- VMM log\n");
            out.push_str(vmm.trim_end());
            out.push('\n');
        }
        if !console.trim().is_empty() {
            out.push_str("--- guest console\n");
            out.push_str(console.trim_end());
            out.push('\n');
        }
        out
    }

    /// Kills the VMM if it still runs and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The raw numbers of the taps to hand the VMM, fixed-size so that the
/// child can place them without allocating.
#[derive(Debug, Clone, Copy)]
struct TapFds {
    fds: [RawFd; MAX_NICS],
    count: usize,
}

impl TapFds {
    /// Notes the taps' numbers and marks them close-on-exec here, so that
    /// no other process the parent starts keeps a tap alive (the VMM gets
    /// its own copies, placed by [`TapFds::place`]).
    fn new(taps: &[OwnedFd]) -> Result<Self, SpawnVmError> {
        if taps.len() > MAX_NICS {
            return Err(SpawnVmError::TooManyTaps(taps.len()));
        }
        let mut fds = [-1; MAX_NICS];
        for (slot, tap) in fds.iter_mut().zip(taps) {
            // SAFETY: F_SETFD takes an integer; the fd is ours.
            if unsafe { libc::fcntl(tap.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(SpawnVmError::TapCloexec(std::io::Error::last_os_error()));
            }
            *slot = tap.as_raw_fd();
        }
        Ok(Self {
            fds,
            count: taps.len(),
        })
    }

    /// In the child: puts tap `i` at `TAP_FD_BASE + i`, inherited across
    /// exec. Every tap first gets a close-on-exec copy above the target
    /// range, so that placing one never overwrites another still to be
    /// placed; `dup2` from the copy then makes the target, which does not
    /// inherit close-on-exec. The copies and the originals close at exec.
    /// Whatever else the child had at a target number (all of it
    /// close-on-exec) is closed in the child only; if that was the
    /// standard library's exec-error pipe, a failed exec shows as the VMM
    /// ending at once instead of as a spawn error.
    fn place(&self) -> std::io::Result<()> {
        let above = TAP_FD_BASE + self.count as RawFd;
        let mut copies = [-1; MAX_NICS];
        for (copy, &fd) in copies.iter_mut().zip(&self.fds[..self.count]) {
            // SAFETY: fcntl with integer arguments only.
            *copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
            if *copy < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for (target, &copy) in (TAP_FD_BASE..).zip(&copies[..self.count]) {
            // SAFETY: dup2 with integer arguments only.
            if unsafe { libc::dup2(copy, target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Runs in the VMM child between fork and exec.
fn child_setup(die_with_parent: bool, binds: &Binds, taps: &TapFds) -> std::io::Result<()> {
    if die_with_parent {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if !binds.is_empty() {
        binds.apply()?;
    }
    taps.place()
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = fs::remove_dir_all(&self.paths.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {:?}: {e}", self.paths.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mac(last: u8) -> husk_netlink::Mac {
        husk_netlink::Mac([2, 0, 0, 0, 0, last])
    }

    /// The pipe's inode, as `/proc/<pid>/fd` shows it: `pipe:[N]`.
    fn pipe_name(fd: &OwnedFd) -> String {
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .display()
            .to_string()
    }

    fn vm_config() -> VmConfig {
        VmConfig::from_json(r#"{"vcpus":1,"memory_mib":128,"kernel":"/k"}"#).unwrap()
    }

    #[test]
    fn net_configs_number_the_taps_from_the_base() {
        let nets = net_configs(&[(mac(1), 1500), (mac(2), 9000), (mac(3), 70_000)]);
        let got: Vec<_> = nets.iter().map(|n| (n.tap_fd, n.mac[5], n.mtu)).collect();
        assert_eq!(
            got,
            [
                (TAP_FD_BASE, 1, 1500),
                (TAP_FD_BASE + 1, 2, 9000),
                (TAP_FD_BASE + 2, 3, u16::MAX)
            ]
        );
        assert!(net_configs(&[]).is_empty());
    }

    #[test]
    fn taps_land_at_their_numbers_in_the_child_even_from_inside_the_range() {
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..3).map(|_| nix::unistd::pipe().unwrap()).collect();
        // SAFETY: the child only makes raw system calls before `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                // Tap 0 sits where tap 1 goes and the other way round, tap 2
                // at its own place: placing one must not lose another.
                let wanted = [TAP_FD_BASE + 1, TAP_FD_BASE, TAP_FD_BASE + 2];
                let mut moved = [0; 3];
                for (i, (r, _)) in pipes.iter().enumerate() {
                    // SAFETY: fcntl with integer arguments only.
                    moved[i] = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 50) };
                }
                for (i, &fd) in moved.iter().enumerate() {
                    // SAFETY: dup3 with integer arguments only.
                    unsafe { libc::dup3(fd, wanted[i], libc::O_CLOEXEC) };
                }
                let mut taps = TapFds {
                    fds: [-1; MAX_NICS],
                    count: 3,
                };
                taps.fds[..3].copy_from_slice(&wanted);
                let ok = taps.place().is_ok()
                    && (0..3).all(|i| {
                        let target = TAP_FD_BASE + i as RawFd;
                        let mut a: libc::stat = unsafe_zeroed();
                        let mut b: libc::stat = unsafe_zeroed();
                        // SAFETY: fstat writes one `struct stat`; F_GETFD
                        // takes no pointer.
                        unsafe {
                            libc::fstat(target, &mut a) == 0
                                && libc::fstat(moved[i], &mut b) == 0
                                && a.st_ino == b.st_ino
                                && libc::fcntl(target, libc::F_GETFD) == 0
                        }
                    });
                // SAFETY: ends the child without running destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "{status:#x}"
                );
            }
            _ => panic!("fork failed"),
        }
    }

    fn unsafe_zeroed() -> libc::stat {
        // SAFETY: `struct stat` is plain integers; all zeros is valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn the_vmm_gets_exactly_its_taps_and_nothing_else_of_them() {
        let scratch = tempfile::tempdir().unwrap();
        let out = scratch.path().join("fds");
        // A stand-in VMM: records what all its fds are and what 3 and 4
        // are, then exits.
        let script = scratch.path().join("fake-husk");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 for fd in /proc/$$/fd/*; do readlink \"$fd\"; done > {out}.all\n\
                 readlink /proc/$$/fd/3 /proc/$$/fd/4 > {out}.tmp\n\
                 mv {out}.tmp {out}\n",
                out = out.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..2).map(|_| pipe()).collect();
        let names: Vec<String> = pipes.iter().map(|(r, _)| pipe_name(r)).collect();
        let mut config = vm_config();
        config.net = net_configs(&[(mac(1), 1500), (mac(2), 1500)]);
        let (taps, _writers): (Vec<OwnedFd>, Vec<OwnedFd>) = pipes.into_iter().unzip();
        let options = SpawnOptions {
            taps,
            ..SpawnOptions::default()
        };
        let dir = scratch.path().join("vm");
        let mut vm = VmProcess::spawn_with(&script, config, &dir, 3, &options).unwrap();
        drop(options);
        assert!(vm.wait_timeout(Duration::from_secs(10)).is_some());
        let got = fs::read_to_string(&out).unwrap();
        assert_eq!(got.lines().collect::<Vec<_>>(), names);
        // Fds 3 and 4 only: no copies, no originals.
        let all = fs::read_to_string(format!("{}.all", out.display())).unwrap();
        let taps = all.lines().filter(|l| names.iter().any(|n| n == l));
        assert_eq!(taps.count(), 2, "{all}");
    }

    #[test]
    fn refuses_taps_the_config_does_not_number() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("vm");
        let (r, _w) = nix::unistd::pipe().unwrap();
        let options = SpawnOptions {
            taps: vec![r],
            ..SpawnOptions::default()
        };
        let bin = Path::new("/nonexistent/husk");
        let err = VmProcess::spawn_with(bin, vm_config(), &dir, 3, &options).unwrap_err();
        assert!(
            matches!(err, SpawnVmError::NetTaps { nics: 0, taps: 1 }),
            "{err}"
        );
        let mut config = vm_config();
        config.net = net_configs(&[(mac(1), 1500)]);
        config.net[0].tap_fd = 7;
        let err = VmProcess::spawn_with(bin, config, &dir, 3, &options).unwrap_err();
        assert!(matches!(err, SpawnVmError::NetTaps { .. }), "{err}");
        assert!(!dir.exists());

        let taps: Vec<OwnedFd> = (0..9).map(|_| nix::unistd::pipe().unwrap().0).collect();
        let mut config = vm_config();
        config.net = net_configs(&[(mac(1), 1500); 9]);
        let options = SpawnOptions {
            taps,
            ..SpawnOptions::default()
        };
        let err = VmProcess::spawn_with(bin, config, &dir, 3, &options).unwrap_err();
        assert!(matches!(err, SpawnVmError::TooManyTaps(9)), "{err}");
    }
}
