//! Containers in microVMs through the runc-compatible `husk` CLI.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use husk_tests::bundle::{busybox_bundle, write_config};
use husk_tests::cli::Runtime;
use husk_tests::{describe, host_cgroup, wait_until};

fn bundle(args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = busybox_bundle(dir.path(), args);
    (dir, path)
}

fn b(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn run_prints_to_stdout_and_stderr_and_returns_the_exit_code() {
    let rt = Runtime::new();
    let (_d, bundle) = bundle(&["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    let out = rt.husk(&["run", "--bundle", b(&bundle), "c1"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "to-out\n",
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-err\n"),
        "{}",
        describe(&out)
    );
    rt.assert_clean();
}

#[test]
fn stdin_reaches_the_process_and_its_eof_too() {
    let rt = Runtime::new();
    let (_d, bundle) = bundle(&["sh", "-c", "wc -c"]);
    let mut child = rt
        .cmd(&["run", "--bundle", b(&bundle), "c1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&[b'x'; 100_000]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "100000",
        "{}",
        describe(&out)
    );
    rt.assert_clean();
}

#[test]
fn create_start_state_kill_delete() {
    let rt = Runtime::new();
    let (dir, bundle) = bundle(&["sleep", "1000"]);
    let pid_file = dir.path().join("pid");
    let out = rt.husk(&[
        "create",
        "--bundle",
        b(&bundle),
        "--pid-file",
        b(&pid_file),
        "c1",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let state = rt.state("c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], "c1");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(state["pid"], pid, "{state}");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the monitor is not running"
    );

    rt.ok(&["start", "c1"]);
    assert_eq!(rt.state("c1")["status"], "running");
    let out = rt.husk(&["start", "c1"]);
    assert!(!out.status.success(), "a second start must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is running"),
        "{}",
        describe(&out)
    );

    let out = rt.ok(&["ps", "--format", "json", "c1"]);
    let pids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");

    let out = rt.husk(&["delete", "c1"]);
    assert!(
        !out.status.success(),
        "deleting a running container needs --force"
    );

    rt.ok(&["kill", "c1", "KILL"]);
    assert!(
        wait_until(Duration::from_secs(60), || rt.state("c1")["status"]
            == "stopped"),
        "not stopped after SIGKILL: {}",
        rt.state("c1")
    );
    rt.ok(&["delete", "c1"]);
    rt.assert_clean();
}

#[test]
fn delete_force_takes_a_running_container_and_its_vm_down() {
    let rt = Runtime::new();
    let (_d, bundle) = bundle(&["sleep", "1000"]);
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "c1"]);
    assert_eq!(rt.state("c1")["status"], "running");
    let list = rt.husk(&["list", "--quiet"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "c1");
    rt.ok(&["delete", "--force", "c1"]);
    rt.assert_clean();
}

#[test]
fn the_process_sees_its_spec() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &[]);
    write_config(
        &bundle,
        &[
            "sh",
            "-c",
            "echo $FOO; pwd; id -u; id -g; hostname; cat /data/hello",
        ],
        |spec| {
            spec["process"]["env"] = serde_json::json!(["PATH=/bin", "FOO=bar baz"]);
            spec["process"]["cwd"] = serde_json::json!("/tmp");
            spec["process"]["user"] = serde_json::json!({"uid": 65534, "gid": 65534});
            spec["hostname"] = serde_json::json!("inside");
            let volume = bundle_volume(dir.path());
            spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": volume, "options": ["rbind", "ro"]
        }));
        },
    );
    let out = rt.ok(&["run", "--bundle", b(&bundle), "c1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bar baz\n/tmp\n65534\n65534\ninside\nfrom the host\n",
        "{}",
        describe(&out)
    );
    rt.assert_clean();
}

fn bundle_volume(dir: &Path) -> String {
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("hello"), "from the host\n").unwrap();
    volume.to_string_lossy().into_owned()
}

#[test]
fn a_bad_bundle_is_a_clear_error_and_leaves_nothing() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &["true"]);
    std::fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
    )
    .unwrap();
    let out = rt.husk(&["create", "--bundle", b(&bundle), "c1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("process is required"),
        "{}",
        describe(&out)
    );
    let out = rt.husk(&["create", "--bundle", "/nonexistent/bundle", "c1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bundle"),
        "{}",
        describe(&out)
    );
    let out = rt.husk(&["create", "--bundle", b(&bundle), "../escape"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not valid"),
        "{}",
        describe(&out)
    );
    // The host's network (no network namespace) is refused, naming the way out.
    write_config(&bundle, &["true"], |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "network");
    });
    let out = rt.husk(&["create", "--bundle", b(&bundle), "c3"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("host's network"),
        "{}",
        describe(&out)
    );
    // A spec the agent refuses fails inside the VM: still nothing left.
    write_config(&bundle, &["true"], |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
    });
    let out = rt.husk(&["create", "--bundle", b(&bundle), "c2"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespace"),
        "{}",
        describe(&out)
    );
    rt.assert_clean();
}

#[test]
fn exec_runs_more_processes_in_the_container() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &[]);
    write_config(&bundle, &["sleep", "1000"], |spec| {
        spec["hostname"] = serde_json::json!("exec-host");
    });
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "c1"]);

    // Foreground: its output, its exit status, the container's namespaces.
    let out = rt.husk(&["exec", "c1", "sh", "-c", "hostname; echo err >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exec-host\n",
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err"),
        "{}",
        describe(&out)
    );

    // --process, as containerd's runc shim passes it, with env and cwd.
    let process = dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"args":["sh","-c","echo $X; pwd"],"cwd":"/tmp","env":["PATH=/bin","X=from-process"],"user":{"uid":0,"gid":0}}"#,
    )
    .unwrap();
    let out = rt.ok(&["exec", "--process", b(&process), "c1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-process\n/tmp\n",
        "{}",
        describe(&out)
    );

    // Detached: a pid file, and the process shows in ps.
    let pid_file = dir.path().join("exec.pid");
    let out = rt.husk(&[
        "exec",
        "--detach",
        "--pid-file",
        b(&pid_file),
        "c1",
        "sleep",
        "500",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "nothing stands for the detached exec"
    );
    let out = rt.husk(&["ps", "--format", "json", "c1"]);
    let pids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");

    let out = rt.husk(&["exec", "c1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give the command"),
        "{}",
        describe(&out)
    );
    let out = rt.husk(&["exec", "nope", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        describe(&out)
    );

    rt.ok(&["delete", "--force", "c1"]);
    // The detached exec's stand-in ends with the container.
    assert!(
        wait_until(Duration::from_secs(30), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the detached exec outlived its container"
    );
    rt.assert_clean();
}

#[test]
fn pause_resume_update_and_events_reach_the_guest_cgroup() {
    let rt = Runtime::new();
    let (_d, bundle) = bundle(&["sleep", "1000"]);
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "c1"]);

    rt.ok(&["update", "--memory", "67108864", "--pids-limit", "50", "c1"]);
    let out = rt.ok(&["events", "--stats", "c1"]);
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(
        event["data"]["memory"]["usage"]["limit"], 67_108_864,
        "{event}"
    );
    assert_eq!(event["data"]["pids"]["limit"], 50, "{event}");
    assert_eq!(event["data"]["pids"]["current"], 1, "{event}");

    rt.ok(&["pause", "c1"]);
    assert_eq!(rt.state("c1")["status"], "paused");
    rt.ok(&["resume", "c1"]);
    assert_eq!(rt.state("c1")["status"], "running");

    let out = rt.husk(&["update", "c1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to update"),
        "{}",
        describe(&out)
    );
    rt.ok(&["delete", "--force", "c1"]);
    rt.assert_clean();
}

#[test]
fn a_terminal_goes_to_the_console_socket_with_its_size() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &[]);
    write_config(
        &bundle,
        &[
            "sh",
            "-c",
            "sleep 2; stty size; read line; echo got:$line; exit 4",
        ],
        |spec| {
            spec["process"]["terminal"] = serde_json::json!(true);
        },
    );
    let socket = dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || husk::container::console::receive_console(&listener));
    let out = rt.husk(&[
        "create",
        "--console-socket",
        b(&socket),
        "--bundle",
        b(&bundle),
        "c1",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let master = receiver.join().unwrap().expect("the pty master");
    let ws = libc::winsize {
        ws_row: 30,
        ws_col: 90,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    let resized = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(resized, 0);
    rt.ok(&["start", "c1"]);
    let mut tty = std::fs::File::from(master);
    tty.write_all(b"hello\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("got:hello")
        && std::time::Instant::now() < deadline
    {
        match tty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        seen.contains("30 90"),
        "the guest pty did not get the size: {seen:?}"
    );
    assert!(
        seen.contains("got:hello"),
        "input did not reach the process: {seen:?}"
    );
    assert!(
        wait_until(Duration::from_secs(60), || rt.state("c1")["status"]
            == "stopped"),
        "{}",
        rt.state("c1")
    );
    rt.ok(&["delete", "c1"]);
    rt.assert_clean();
}

/// The OOM also reaches the host: the container's host cgroup (its
/// `linux.cgroupsPath`, where the monitor runs) counts one OOM kill, which
/// is what Docker's runc shim and conmon watch.
#[test]
fn a_container_over_its_memory_limit_is_oom_killed_and_state_says_so() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &[]);
    let parent = format!("/husk-test-{}", std::process::id());
    let cgroups_path = format!("{parent}/c1");
    // dd's one 96 MiB buffer, filled by a single read, against a 24 MiB
    // limit (the guest has 128 MiB, no swap). One allocation that runs no
    // code while it grows: a process that keeps executing as it nears its
    // limit makes the kernel reclaim and refault its own text over
    // virtio-fs, which the emulated test host can stretch to many minutes
    // before the OOM killer is allowed to act.
    write_config(
        &bundle,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=96M count=1 && echo survived",
        ],
        |spec| {
            spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 25_165_824});
            spec["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path);
        },
    );
    let out = rt.husk(&["run", "--keep", "--bundle", b(&bundle), "c1"]);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "{}",
        describe(&out)
    );
    let state = rt.state("c1");
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["oomKilled"], true, "{state}");
    let memory = host_cgroup::memory_dir(&cgroups_path);
    assert_eq!(host_cgroup::oom_kills(&memory), Some(1), "{memory:?}");
    rt.ok(&["delete", "c1"]);
    rt.assert_clean();
    assert!(!memory.exists(), "{memory:?} left after delete");
    assert!(
        host_cgroup::named("c1").is_empty(),
        "{:?}",
        host_cgroup::named("c1")
    );

    // A container that stays under its limit is not reported OOM-killed.
    let cgroups_path = format!("{parent}/c2");
    write_config(&bundle, &["true"], |spec| {
        spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 25_165_824});
        spec["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path);
    });
    rt.ok(&["run", "--keep", "--bundle", b(&bundle), "c2"]);
    assert_eq!(rt.state("c2")["oomKilled"], false);
    let memory = host_cgroup::memory_dir(&cgroups_path);
    assert_eq!(host_cgroup::oom_kills(&memory), Some(0), "{memory:?}");
    rt.ok(&["delete", "c2"]);
    rt.assert_clean();
    assert!(!memory.exists(), "{memory:?} left after delete");
    for parent in host_cgroup::named(parent.trim_start_matches('/')) {
        std::fs::remove_dir(&parent).unwrap();
    }
}

/// The issue's bad-input list through the CLI: each a clear error naming
/// what is wrong, and nothing left (no monitor, no VMM, no state).
#[test]
fn every_kind_of_bad_input_is_named_and_leaves_nothing() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &["true"]);
    let refused = |what: &str, needle: &str, out: &Output| {
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(needle),
            "{what}: expected an error naming {needle:?}: {}",
            describe(out)
        );
    };
    let create = |id: &str| rt.husk(&["create", "--bundle", b(&bundle), id]);

    std::fs::write(bundle.join("config.json"), "{ not json").unwrap();
    refused("not JSON", "not a valid OCI runtime spec", &create("c1"));
    write_config(&bundle, &["true"], |s| {
        s["ociVersion"] = serde_json::json!("2.0.0")
    });
    refused("OCI version", "ociVersion \"2.0.0\"", &create("c1"));
    write_config(&bundle, &["true"], |s| {
        s["root"]["path"] = serde_json::json!("no-rootfs")
    });
    refused("missing rootfs", "root.path", &create("c1"));
    write_config(&bundle, &[], |_| {});
    refused("empty args", "process.args", &create("c1"));
    write_config(&bundle, &["true"], |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]}
        ));
    });
    refused("mount source", "/nonexistent/src", &create("c1"));
    // Found only inside the guest, after the VM booted: still nothing left.
    write_config(&bundle, &["true"], |s| {
        s["process"]["user"] = serde_json::json!({"uid": 0, "gid": 0, "username": "ghost"});
    });
    refused("unknown user name", "ghost", &create("c1"));
    write_config(&bundle, &["true"], |s| {
        s["linux"]["cgroupsPath"] = serde_json::json!("/husk-test/../../escape");
    });
    refused("cgroup path", "linux.cgroupsPath", &create("c1"));
    rt.assert_clean();
    // A container whose creation fails in the guest leaves no host cgroup.
    let parent = format!("husk-test-bad-{}", std::process::id());
    write_config(&bundle, &["true"], |s| {
        s["process"]["user"] = serde_json::json!({"uid": 0, "gid": 0, "username": "ghost"});
        s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{parent}/c1"));
    });
    refused("unknown user name, with a cgroup", "ghost", &create("c1"));
    rt.assert_clean();
    assert!(
        host_cgroup::named("c1").is_empty(),
        "{:?}",
        host_cgroup::named("c1")
    );

    // The monitor (the container's pid) runs in the named host cgroup.
    write_config(&bundle, &["sleep", "600"], |s| {
        s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{parent}/c-dup"));
    });
    let out = create("c-dup");
    assert!(out.status.success(), "{}", describe(&out));
    let pid = rt.state("c-dup")["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        host_cgroup::of_process(pid).as_deref(),
        Some(format!("/{parent}/c-dup").as_str())
    );
    refused("duplicate id", "already exists", &create("c-dup"));
    rt.ok(&["start", "c-dup"]);
    refused("start twice", "cannot start", &rt.husk(&["start", "c-dup"]));
    refused("delete running", "--force", &rt.husk(&["delete", "c-dup"]));
    rt.ok(&["delete", "--force", "c-dup"]);
    rt.assert_clean();
    assert!(
        host_cgroup::named("c-dup").is_empty(),
        "{:?}",
        host_cgroup::named("c-dup")
    );
    for dir in host_cgroup::named(&parent) {
        std::fs::remove_dir(&dir).unwrap();
    }
}
