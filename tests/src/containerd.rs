//! A real containerd (Debian's), started for one test suite with all its
//! state in a temporary directory, and `ctr` pointed at it. The husk shim
//! is found on containerd's `PATH`, next to the `husk` binary under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::{
    describe, husk_bin, initramfs, kernel, last_lines, output_within, wait_until, CALL_TIMEOUT,
};

/// The shim's binary name, as containerd derives it from the runtime name.
pub const SHIM_BIN: &str = "containerd-shim-husk-v2";
/// The runtime name.
pub const RUNTIME: &str = "io.containerd.husk.v2";

/// A running containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Mutex<Child>,
    /// Its gRPC socket.
    pub address: PathBuf,
    /// The husk configuration the shim reads (`HUSK_CONFIG`).
    pub husk_config: PathBuf,
    /// The husk state directory (pods live under `pods/`).
    pub husk_state: PathBuf,
    /// containerd runs with a private `/var/lib` (see [`Containerd::start_cri`]).
    private_var_lib: bool,
    /// Where its `containerd`, `ctr` and runc shim are; `PATH` if `None`
    /// (Debian 12's 1.6).
    bin_dir: Option<PathBuf>,
}

impl Containerd {
    /// Starts containerd with `extra` appended to its config (e.g. the CRI
    /// plugin's settings; without it the CRI plugin is disabled).
    pub fn start(extra: Option<&str>) -> Self {
        Self::start_in(extra, false, None)
    }

    /// [`Containerd::start`] with containerd 2 (Debian 14's, unpacked under
    /// the cache by `scripts/fetch-debian-package.sh`) and its `ctr`.
    pub fn start_2() -> Self {
        let bin_dir = crate::cached("containerd-2/usr/bin");
        assert!(
            bin_dir.join("containerd").exists(),
            "{bin_dir:?} has no containerd: run scripts/setup.sh"
        );
        Self::start_in(None, false, Some(bin_dir))
    }

    /// [`Containerd::start`] with the CRI plugin's `settings`, and
    /// containerd in a mount namespace of its own whose `/var/lib` is an
    /// empty tmpfs: CNI keeps its result cache in `/var/lib/cni`, a path
    /// no setting moves, which the test host's read-only root cannot
    /// create (and the host's own stays untouched).
    pub fn start_cri(settings: &str) -> Self {
        Self::start_in(Some(settings), true, None)
    }

    fn start_in(extra: Option<&str>, private_var_lib: bool, bin_dir: Option<PathBuf>) -> Self {
        let shim = husk_bin().with_file_name(SHIM_BIN);
        assert!(
            shim.exists(),
            "{shim:?} is missing: build it first (cargo build -p husk-shim)"
        );
        // /run: a tmpfs in the test host, where overlayfs can make layers.
        let dir = tempfile::Builder::new()
            .prefix("husk-containerd.")
            .tempdir_in("/run")
            .expect("temp dir under /run");
        let d = dir.path();
        let address = d.join("containerd.sock");
        let husk_state = d.join("husk");
        let husk_config = d.join("husk.toml");
        std::fs::write(
            &husk_config,
            format!(
                "kernel = {:?}\ninitramfs = {:?}\nstate_dir = {:?}\n",
                kernel(),
                initramfs(),
                husk_state
            ),
        )
        .unwrap();
        let disabled = if extra.is_some() {
            ""
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        };
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n{disabled}\
             [grpc]\n  address = {address:?}\n[ttrpc]\n  address = \"{address}.ttrpc\"\n{extra}\n",
            root = d.join("root"),
            state = d.join("state"),
            address = address.display().to_string(),
            extra = extra.unwrap_or(""),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = spawn_containerd(d, &husk_config, private_var_lib, bin_dir.as_deref());
        let me = Self {
            dir,
            child: Mutex::new(child),
            address,
            husk_config,
            husk_state,
            private_var_lib,
            bin_dir,
        };
        me.wait_up();
        me
    }

    fn wait_up(&self) {
        let up = wait_until(Duration::from_secs(60), || {
            self.ctr(&["version"])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "containerd did not come up:\n{}", self.log());
    }

    /// Stops containerd (SIGTERM) and starts it again on the same state,
    /// as a host's service manager would; running shims are not touched.
    pub fn restart(&self) {
        self.stop();
        *self.child.lock().unwrap() = spawn_containerd(
            self.dir.path(),
            &self.husk_config,
            self.private_var_lib,
            self.bin_dir.as_deref(),
        );
        self.wait_up();
    }

    fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !wait_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ctr --address … ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary(self.bin_dir.as_deref(), "ctr"));
        c.arg("--address").arg(&self.address).args(args);
        c
    }

    /// `ctr ARGS` with no stdin, up to [`CALL_TIMEOUT`]; its output.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(&mut self.ctr(args), None, CALL_TIMEOUT, || {
            format!("--- containerd\n{}", last_lines(&self.log(), 40))
        })
    }

    /// `ctr ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "ctr {args:?}: {}", describe(&out));
        out
    }

    /// Imports an image archive.
    pub fn import(&self, archive: &Path) {
        self.ok(&["image", "import", &archive.display().to_string()]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // Snapshots may still be mounted if a test failed half way.
        let root = self.dir.path().join("root");
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&root)
            .stderr(Stdio::null())
            .status();
    }
}

/// A containerd binary: from `bin_dir`, or `PATH` if `None`.
fn binary(bin_dir: Option<&Path>, name: &str) -> PathBuf {
    match bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// Starts containerd on the config in `dir`, finding the shim on `PATH`;
/// with `private_var_lib`, over an empty `/var/lib` of its own; from
/// `bin_dir` (its runc shim on `PATH` too) if given.
fn spawn_containerd(
    dir: &Path,
    husk_config: &Path,
    private_var_lib: bool,
    bin_dir: Option<&Path>,
) -> Child {
    let shim = husk_bin().with_file_name(SHIM_BIN);
    let mut path = shim.parent().unwrap().display().to_string();
    if let Some(bin_dir) = bin_dir {
        path = format!("{path}:{}", bin_dir.display());
    }
    let path = format!("{path}:{}", std::env::var("PATH").unwrap_or_default());
    let containerd = binary(bin_dir, "containerd");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    let mut command = if private_var_lib {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"]).arg(
            "mount -t tmpfs -o mode=755 husk-var-lib /var/lib && mkdir /var/lib/cni && exec containerd \"$@\"",
        ).arg("containerd");
        c
    } else {
        Command::new(&containerd)
    };
    command
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .env("HUSK_CONFIG", husk_config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start containerd (apt-get install containerd)")
}

/// Pids of running shim processes (comm is cut to 15 characters).
pub fn shim_pids() -> Vec<u32> {
    crate::husk_processes_with(SHIM_BIN)
}

impl Containerd {
    /// What a pod may not leave once its containers are gone: shim and
    /// VMM processes, mounts of husk's state on the host, pod directories
    /// of containerd namespace `namespace`. Empty when clean.
    pub fn pod_leftovers(&self, namespace: &str, grace: Duration) -> Vec<String> {
        let mut left = Vec::new();
        let clean = wait_until(grace, || {
            shim_pids().is_empty() && crate::husk_processes_with("vmm").is_empty()
        });
        if !clean {
            left.push(format!(
                "processes: shims {:?}, VMMs {:?}",
                shim_pids(),
                crate::husk_processes_with("vmm")
            ));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let state = self.husk_state.display().to_string();
        let mounted: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&state)).collect();
        if !mounted.is_empty() {
            left.push(format!("mounts on the host: {mounted:?}"));
        }
        let pods = self.husk_state.join("pods").join(namespace);
        if let Ok(entries) = std::fs::read_dir(&pods) {
            let names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            if !names.is_empty() {
                left.push(format!("pod directories {names:?} in {pods:?}"));
            }
        }
        left
    }
}
