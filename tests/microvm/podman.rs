//! podman (Debian's 4.3, through conmon) with husk as its OCI runtime, end
//! to end: `podman --runtime <husk>` with a configuration and a store of
//! its own in a temp dir, and a local image imported from a busybox-static
//! rootfs (there is no registry). Containers run in the foreground and
//! detached, with a terminal and without, each in its own microVM.
//!
//! podman is slow in the emulated test host (every container boots a
//! guest), so each test makes few podman calls, each with a long timeout.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use husk_tests::{
    busybox_rootfs, describe, host_cgroup, husk, husk_bin, husk_processes_with, output_within,
    wait_until, CALL_TIMEOUT,
};

/// How long the cleanup after a container ends (conmon's exit command,
/// `podman container cleanup`, which runs `husk delete`) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The image every test imports.
const IMAGE: &str = "localhost/husk-busybox:test";
/// husk's default `--root`: podman passes none.
const HUSK_DEFAULT_ROOT: &str = "/run/husk";

/// podman with everything of its own under one temp dir.
struct Podman {
    dir: tempfile::TempDir,
    /// graphroot and runroot, on a tmpfs of ours where the temp dir is on
    /// overlayfs (as the test host's /tmp is): overlay does not stack.
    storage: PathBuf,
    storage_mounted: bool,
    calls: Cell<u32>,
}

impl Podman {
    /// Writes the configuration (the settings this kind of host needs:
    /// ulimits within the hard limit, no network namespace, cgroupfs,
    /// events to a file; the overlay driver from the first call on) and
    /// imports the busybox image. With `json_log`, podman treats husk as
    /// it treats runc: it passes `--log-format=json --log FILE` and reads
    /// husk's errors from there instead of from its stderr.
    fn new(json_log: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("husk-podman-")
            .tempdir()
            .unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let storage_mounted = on_overlayfs(&storage);
        if storage_mounted {
            nix::mount::mount(
                Some("husk-podman"),
                &storage,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("mode=0700"),
            )
            .unwrap_or_else(|e| panic!("mount a tmpfs on {storage:?}: {e}"));
        }
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let q = |p: &Path| format!("{:?}", p.to_str().unwrap());
        // podman knows a runtime by its file name.
        let json_runtimes = if json_log {
            format!("{:?}", husk_bin().file_name().unwrap().to_str().unwrap())
        } else {
            String::new()
        };
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 netns = \"none\"\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = {}\n\
                 tmp_dir = {}\n\
                 runtime_supports_json = [{json_runtimes}]\n",
                q(&dir.path().join("events.log")),
                q(&tmp.join("libpod")),
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = {}\nrunroot = {}\n",
                q(&storage.join("graph")),
                q(&storage.join("run")),
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        let podman = Self {
            dir,
            storage,
            storage_mounted,
            calls: Cell::new(0),
        };
        podman.import_busybox();
        podman
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `podman import` of a tarball of the busybox-static rootfs.
    fn import_busybox(&self) {
        let rootfs = self.path("rootfs");
        busybox_rootfs(&rootfs).expect("build a busybox rootfs");
        let tarball = self.path("rootfs.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(tar.status.success(), "tar: {}", describe(&tar));
        self.ok(&["import", tarball.to_str().unwrap(), IMAGE]);
    }

    /// `podman --runtime <husk> ARGS`, its output in files (a detached
    /// container's conmon must not hold a pipe we wait on), killed after
    /// [`CALL_TIMEOUT`].
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new("podman");
        command
            .arg("--runtime")
            .arg(husk_bin())
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("TMPDIR", self.path("tmp"));
        output_within(&mut command, None, CALL_TIMEOUT, String::new)
    }

    /// [`Podman::run`], which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh `--cidfile` path: podman writes the container's id (husk's
    /// container id too) there.
    fn cidfile(&self) -> PathBuf {
        let n = self.calls.get();
        self.calls.set(n + 1);
        self.path(&format!("cid-{n}"))
    }

    /// Nothing of these containers is left, once podman's cleanup ran: no
    /// conmon, no husk monitor or VMM, no state in husk's root (podman
    /// passes no `--root`, so it is husk's default), and podman knows of
    /// no container.
    fn assert_nothing_left(&self, ids: &[String]) {
        let left = || -> Vec<u32> {
            ids.iter()
                .flat_map(|id| husk_processes_with(id))
                .collect::<Vec<_>>()
        };
        assert!(
            wait_until(CLEANUP_TIMEOUT, || left().is_empty()),
            "processes left: {:?}",
            left()
                .iter()
                .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default())
                .collect::<Vec<_>>()
        );
        let list = husk(&["list", "--quiet"]);
        assert!(list.status.success(), "husk list: {}", describe(&list));
        let listed = String::from_utf8_lossy(&list.stdout);
        for id in ids {
            assert!(
                !listed.lines().any(|l| l.trim() == id),
                "husk still lists {id}: {}",
                describe(&list)
            );
            let state = Path::new(HUSK_DEFAULT_ROOT).join(id);
            assert!(!state.exists(), "{state:?} is left");
        }
        let ps = self.ok(&["ps", "--all", "--quiet"]);
        assert!(ps.trim().is_empty(), "podman still has containers: {ps}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Do not leave microVMs running for the next test.
            let _ = Command::new("podman")
                .args(["--runtime", husk_bin().to_str().unwrap()])
                .args(["rm", "--all", "--force", "--time", "0"])
                .env("CONTAINERS_CONF", self.path("containers.conf"))
                .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
                .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
                .env("TMPDIR", self.path("tmp"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if self.storage_mounted {
            // Detached: anything podman still has mounted below goes with it.
            let _ = nix::mount::umount2(&self.storage, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether `path` is on overlayfs.
fn on_overlayfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The id podman wrote to a `--cidfile`.
fn read_cid(path: &Path) -> String {
    let id = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no container id in {path:?}: {e}"))
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "not a container id: {id:?}");
    id
}

/// Output lines without a terminal's carriage returns.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

#[test]
fn podman_runs_in_the_foreground_in_a_microvm_with_the_exit_code() {
    let podman = Podman::new(false);
    let mut ids = Vec::new();

    let cid = podman.cidfile();
    let out = podman.ok(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        IMAGE,
        "echo",
        "hi",
    ]);
    assert_eq!(out, "hi\n");
    ids.push(read_cid(&cid));

    // The container's kernel is the guest's, not the test host's.
    let cid = podman.cidfile();
    let out = podman.run(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        IMAGE,
        "sh",
        "-c",
        "uname -r; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let guest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(guest.starts_with("6.12."), "guest kernel {guest:?}");
    assert_ne!(guest, host.trim(), "the container saw the host's kernel");
    ids.push(read_cid(&cid));

    ids.push(a_missing_command_is_127(&podman));
    ids.push(a_process_over_its_memory_limit_is_oom_killed(&podman));

    podman.assert_nothing_left(&ids);
}

/// `--memory` is the guest's limit; a process over it is killed there
/// (137). podman reports `OOMKilled` from conmon, which watches the
/// container's host cgroup (`libpod_parent/libpod-ID`, where husk's
/// monitor runs and raises the guest's OOM): the same as for the same
/// container under runc (podman 4.3 on the hybrid test host says false
/// for both). The host cgroup is gone after `podman rm`. Returns the id.
fn a_process_over_its_memory_limit_is_oom_killed(podman: &Podman) -> String {
    let over_limit = |runtime: Option<&str>, name: &str| {
        let mut args = Vec::new();
        if let Some(runtime) = runtime {
            args.extend(["--runtime", runtime]);
        }
        args.extend(["run", "--memory", "32m", "--name", name, IMAGE]);
        args.extend(["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]);
        let out = podman.run(&args);
        assert_eq!(out.status.code(), Some(137), "{name}: {}", describe(&out));
        let state = podman.ok(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}} {{.State.OOMKilled}}",
            name,
        ]);
        let id = podman.ok(&["inspect", "--format", "{{.Id}}", name]);
        podman.ok(&["rm", name]);
        (state.trim().to_string(), id.trim().to_string())
    };
    let (under_runc, _) = over_limit(Some("/usr/bin/runc"), "oom-runc");
    let (under_husk, id) = over_limit(None, "oom-husk");
    assert_eq!(under_husk, under_runc, "podman inspect: husk vs runc");
    let left = host_cgroup::named(&format!("libpod-{id}"));
    assert!(left.is_empty(), "host cgroups left: {left:?}");
    id
}

/// A command that is not in the image: podman's 127 (it recognises the
/// reason husk gives), and the agent's reason as one readable chain.
/// Returns the container's id.
fn a_missing_command_is_127(podman: &Podman) -> String {
    let cid = podman.cidfile();
    let out = podman.run(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        IMAGE,
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"/nonexistent\": No such file or directory"),
        "{}",
        describe(&out)
    );
    assert!(
        !stderr.contains("Status {") && stderr.matches("agent call").count() == 1,
        "the reason is not one clean chain: {}",
        describe(&out)
    );
    read_cid(&cid)
}

#[test]
fn podman_runs_with_a_terminal_and_without() {
    // Here podman passes runc's JSON log flags to every husk call.
    let podman = Podman::new(true);
    let mut ids = Vec::new();

    let cid = podman.cidfile();
    let out = podman.ok(&[
        "run",
        "--rm",
        "-t",
        "--cidfile",
        cid.to_str().unwrap(),
        IMAGE,
        "sh",
        "-c",
        "tty; echo in-tty",
    ]);
    let got = lines(&out);
    assert!(
        got.len() == 2 && got[0].starts_with("/dev/pts/") && got[1] == "in-tty",
        "{out:?}"
    );
    ids.push(read_cid(&cid));

    let cid = podman.cidfile();
    let out = podman.ok(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        IMAGE,
        "sh",
        "-c",
        "tty; echo no-tty",
    ]);
    assert_eq!(out, "not a tty\nno-tty\n");
    ids.push(read_cid(&cid));

    ids.push(a_missing_command_is_127(&podman));

    podman.assert_nothing_left(&ids);
}

#[test]
fn podman_detached_logs_exec_stop_kill_and_rm_leave_nothing() {
    let podman = Podman::new(false);

    let id = podman
        .ok(&[
            "run",
            "-d",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo started; sleep 600 & wait",
        ])
        .trim()
        .to_string();
    let mut logs = String::new();
    let started = wait_until(Duration::from_secs(120), || {
        logs = podman.ok(&["logs", &id]);
        logs.contains("started")
    });
    assert!(started, "podman logs: {logs:?}");

    let out = podman.run(&["exec", &id, "sh", "-c", "echo from-exec; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-exec\n");
    let out = podman.ok(&["exec", "-t", &id, "tty"]);
    let got = lines(&out);
    assert!(got.len() == 1 && got[0].starts_with("/dev/pts/"), "{out:?}");

    // stop: SIGTERM reaches the container's shell, which exits 0.
    podman.ok(&["stop", "--time", "120", &id]);
    let state = podman.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &id,
    ]);
    assert_eq!(state.trim(), "exited 0");
    let logs = podman.ok(&["logs", &id]);
    assert_eq!(lines(&logs), ["started", "got-term"], "{logs:?}");
    podman.ok(&["rm", &id]);

    // kill: SIGKILL, status 137.
    let killed = podman
        .ok(&["run", "-d", IMAGE, "sleep", "600"])
        .trim()
        .to_string();
    podman.ok(&["kill", &killed]);
    assert_eq!(podman.ok(&["wait", &killed]).trim(), "137");
    podman.ok(&["rm", &killed]);

    podman.assert_nothing_left(&[id, killed]);
}
