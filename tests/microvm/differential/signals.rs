//! Signals from outside: a container made with `create` and `start`
//! traps SIGTERM and SIGUSR1 and says when it gets them, each sent with
//! `<runtime> kill <id> SIG`; then `kill <id> KILL`, and the process that
//! stands for the container ends with 137 as its waiting parent sees it.
//!
//! That parent is this test: it becomes a child subreaper, as a
//! containerd shim does, so the process `create` leaves behind (runc: the
//! container's init; husk: its monitor) is reparented to it and can be
//! waited for.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{case_bundle, compare, drop_kernel_line, report, Runtime};
use husk_tests::{describe, wait_until};

/// Traps print a line each; `wait` returns when a trapped signal comes.
const SCRIPT: &str = "trap 'echo got TERM' TERM; trap 'echo got USR1' USR1; echo ready; \
                      while :; do sleep 1000 & wait $!; kill $! 2>/dev/null; done";

/// The slow emulated host: a boot and a signal round trip take seconds.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `args` and returns its output, its stdio in files (a `create`
/// leaves a process behind that keeps them open).
fn run_to_files(command: &mut Command, dir: &Path, tag: &str) -> Output {
    let (out, err) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    let status = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .expect("run the runtime");
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// A step that must succeed.
fn step(runtime: Runtime, root: &Path, dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = run_to_files(&mut runtime.cmd(root, args), dir, args[0]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?} failed\n{}",
            runtime.name(),
            describe(&out)
        ))
    }
}

/// The status a shell would report: the code, or 128 + the signal.
fn shell_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Waits (as its subreaper) for `pid` to end.
fn wait_for(runtime: Runtime, pid: i32) -> Result<WaitStatus, String> {
    let mut ended = Err(format!("{}: pid {pid} did not end", runtime.name()));
    wait_until(TIMEOUT, || {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(status) => ended = Ok(status),
            Err(e) => {
                ended = Err(format!(
                    "{}: cannot wait for pid {pid}: {e}",
                    runtime.name()
                ))
            }
        }
        true
    });
    ended
}

/// create, start, TERM, USR1, KILL under one runtime: the container's
/// stdout and stderr, and the waited status (as a shell reports it).
fn signal_run(runtime: Runtime, bundle: &Path, root: &Path) -> Result<Output, String> {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let id = "signals";
    let create = run_to_files(
        runtime
            .cmd(root, &["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id),
        dir.path(),
        "create",
    );
    if !create.status.success() {
        return Err(format!(
            "{} create failed\n{}",
            runtime.name(),
            describe(&create)
        ));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("{}: no pid file: {e}", runtime.name()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: bad pid file: {e}", runtime.name()))?;
    // The container's output goes where create's went.
    let stdout = || std::fs::read_to_string(dir.path().join("create.out")).unwrap_or_default();
    let ended = (|| {
        step(runtime, root, dir.path(), &["start", id])?;
        let mut wanted = "ready";
        for (signal, line) in [("TERM", "got TERM"), ("USR1", "got USR1")] {
            if !wait_until(TIMEOUT, || stdout().contains(wanted)) {
                return Err(format!(
                    "{}: never printed {wanted:?}: {:?}",
                    runtime.name(),
                    stdout()
                ));
            }
            step(runtime, root, dir.path(), &["kill", id, signal])?;
            wanted = line;
        }
        if !wait_until(TIMEOUT, || stdout().contains(wanted)) {
            return Err(format!(
                "{}: USR1 not delivered: {:?}",
                runtime.name(),
                stdout()
            ));
        }
        step(runtime, root, dir.path(), &["kill", id, "KILL"])?;
        wait_for(runtime, pid)
    })();
    let _ = run_to_files(
        &mut runtime.cmd(root, &["delete", "--force", id]),
        dir.path(),
        "delete",
    );
    let status = ended?;
    let code = shell_status(status)
        .ok_or_else(|| format!("{}: pid {pid} ended oddly: {status:?}", runtime.name()))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(Output {
        status: std::process::ExitStatus::from_raw(code << 8),
        stdout: stdout().into_bytes(),
        stderr: std::fs::read(dir.path().join("create.err")).unwrap_or_default(),
    })
}

#[test]
fn signals_from_kill_reach_a_started_container() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only.
    let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    let dir = tempfile::tempdir().unwrap();
    let bundle = case_bundle(dir.path(), SCRIPT, &[], |_| {});
    let root = tempfile::tempdir().unwrap();
    let runc = signal_run(Runtime::Runc, &bundle, root.path());
    let husk = signal_run(Runtime::Husk, &bundle, root.path());
    let result = match (runc, husk) {
        (Ok(runc), Ok(husk)) => {
            compare("signals", &runc, &husk, &[drop_kernel_line]).and_then(|()| {
                match husk.status.code() {
                    Some(137) => Ok(()),
                    other => Err(format!("signals: ended with {other:?}, not 137")),
                }
            })
        }
        (runc, husk) => Err([runc.err(), husk.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")),
    };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    report(&result.err().into_iter().collect::<Vec<_>>(), 1);
}
