//! Shared helpers of husk's end-to-end tests: where the built artefacts
//! are, running `husk`, and checking that nothing was left behind.

pub mod bundle;
pub mod cli;
pub mod containerd;
pub mod host_cgroup;
pub mod image;
pub mod netns;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one client call (husk, ctr, docker, podman) may take: past it
/// the test fails naming the call and what was running, instead of the
/// whole suite stalling until the test host's timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The `husk` binary: `$HUSK_BIN`, else the one next to this test binary's
/// target directory (built by `cargo build -p husk-runtime` first).
pub fn husk_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUSK_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/husk
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("husk");
    assert!(
        bin.exists(),
        "{bin:?} is missing: build it first (cargo build -p husk-runtime) or set HUSK_BIN"
    );
    bin
}

/// The `husk-agent` binary for running the agent as a host process:
/// `$HUSK_AGENT_BIN`, else next to `husk` (built by `cargo build -p husk-agent`).
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUSK_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let bin = husk_bin().with_file_name("husk-agent");
    assert!(
        bin.exists(),
        "{bin:?} is missing: build it first (cargo build -p husk-agent) or set HUSK_AGENT_BIN"
    );
    bin
}

/// The build cache (`$HUSK_CACHE_DIR` or `~/.cache/husk`).
pub fn cache_dir() -> PathBuf {
    husk::config::cache_dir()
}

/// A built artefact in the cache, with a clear failure when it is missing.
pub fn cached(name: &str) -> PathBuf {
    let path = cache_dir().join(name);
    assert!(
        path.exists(),
        "{path:?} is missing: run scripts/setup.sh --no-check first"
    );
    path
}

/// The guest kernel.
pub fn kernel() -> PathBuf {
    cached("vmlinux")
}

/// The agent initramfs.
pub fn initramfs() -> PathBuf {
    cached("husk-initramfs.cpio")
}

/// Runs `husk` with `args` and returns its output.
pub fn husk(args: &[&str]) -> Output {
    let mut cmd = Command::new(husk_bin());
    cmd.args(args);
    output_within(&mut cmd, None, CALL_TIMEOUT, String::new)
}

/// Runs `cmd` to its end with `stdin` written to it (else /dev/null), its
/// stdout and stderr in files (a process it leaves running, such as a
/// container's monitor, holds no pipe this would wait on). Past `limit` it
/// kills `cmd` and panics with its output so far, `context()` and the
/// processes and microVM consoles still running.
pub fn output_within(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    context: impl FnOnce() -> String,
) -> Output {
    let files = tempfile::tempdir().expect("a temp dir for a call's output");
    let (out, err) = (files.path().join("out"), files.path().join("err"));
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input)
            .unwrap_or_else(|e| panic!("stdin of {what}: {e}"));
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let running = running_processes();
            let _ = child.kill();
            let status = child.wait().unwrap();
            let partial = Output {
                status,
                stdout: std::fs::read(&out).unwrap_or_default(),
                stderr: std::fs::read(&err).unwrap_or_default(),
            };
            panic!(
                "{what} took over {limit:?}: {}\n{}\n--- still running\n{running}",
                describe(&partial),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Every process with its state and wait channel, and the end of the
/// console log of each running microVM: what a hang report needs.
pub fn running_processes() -> String {
    let ps = Command::new("ps")
        .args(["-eo", "pid,ppid,stat,etimes,wchan:24,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ps: {e}"));
    let mut report: String = ps
        .lines()
        .filter(|l| !l.trim_end().ends_with(']'))
        .map(|l| format!("{}\n", l.chars().take(200).collect::<String>()))
        .collect();
    // A VMM's console log lies in its own mount namespace: read it through
    // the VMM's root, once per log.
    let mut consoles = std::collections::BTreeMap::new();
    for proc_dir in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for fd in std::fs::read_dir(proc_dir.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.file_name().is_some_and(|n| n == "console.log") {
                    let relative = target.strip_prefix("/").unwrap_or(&target).to_path_buf();
                    consoles
                        .entry(target)
                        .or_insert_with(|| proc_dir.path().join("root").join(relative));
                }
            }
        }
    }
    for (console, through_root) in consoles {
        let text = std::fs::read_to_string(&through_root).unwrap_or_default();
        report.push_str(&format!(
            "--- {}\n{}\n",
            console.display(),
            last_lines(&text, 15)
        ));
    }
    report
}

/// Stdout and stderr of an output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Pids of live `husk` processes whose command line contains `needle`.
pub fn husk_processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("husk") && cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// `Ok` if `cond` holds, else the failure `what` describes.
pub fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// The last `lines` lines of `text`.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A command's stdout, as text.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this host's `/dev/kvm` can boot a Linux guest (hardware
/// virtualization, not PVM).
pub fn host_runs_linux_guests() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .split_whitespace()
        .any(|flag| flag == "vmx" || flag == "svm");
    hw && !Path::new("/sys/module/kvm_pvm").exists()
}

/// The host's static busybox (Debian's busybox-static), for container
/// rootfs fixtures.
pub fn static_busybox() -> PathBuf {
    let bin = PathBuf::from("/bin/busybox");
    assert!(
        bin.exists(),
        "{bin:?} is missing: install busybox-static (apt-get install busybox-static)"
    );
    bin
}

/// Makes a minimal container rootfs at `rootfs`: the static busybox as
/// `/bin/busybox` with every applet as a symlink to it, the usual empty
/// directories, and `/etc/passwd` and `/etc/group` with root, `app`
/// (1001:1002, also in `wheel`) and nobody.
pub fn busybox_rootfs(rootfs: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    for dir in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app",
    ] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let busybox = rootfs.join("bin/busybox");
    std::fs::copy(static_busybox(), &busybox)?;
    // Ask the original, not the fresh copy: a child another test thread
    // forks meanwhile may still hold the copy open for writing (ETXTBSY).
    let list = Command::new(static_busybox()).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", link)?;
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1002:\nnogroup:x:65534:\n",
    )?;
    Ok(())
}
