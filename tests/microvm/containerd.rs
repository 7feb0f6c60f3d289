//! containerd drives husk through `containerd-shim-husk-v2`: `ctr` against
//! a real containerd started for the suite, with an image built locally.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use husk_tests::containerd::{shim_pids, Containerd, RUNTIME};
use husk_tests::image::busybox_image_archive;
use husk_tests::{check, describe, husk_processes_with, stdout_of as stdout, wait_until};

const IMAGE: &str = "docker.io/library/husk-busybox:latest";

/// One case: it may leave nothing behind once it returns.
type Case = fn(&Containerd) -> Result<(), String>;

/// `ctr ARGS`, which must succeed.
fn ctr_ok(c: &Containerd, args: &[&str]) -> Result<Output, String> {
    let out = c.run(args);
    check(out.status.success(), || {
        format!("ctr {args:?}: {}", describe(&out))
    })?;
    Ok(out)
}

/// `ctr run --rm --runtime husk IMAGE ID ARGS…` with `extra` flags.
fn run_rm(c: &Containerd, id: &str, extra: &[&str], args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
    all.extend_from_slice(extra);
    all.push(IMAGE);
    all.push(id);
    all.extend_from_slice(args);
    c.run(&all)
}

/// `ctr run -d`: a detached container whose task must start.
fn run_detached(c: &Containerd, id: &str, extra: &[&str], args: &[&str]) -> Result<(), String> {
    let mut all = vec!["run", "-d", "--runtime", RUNTIME];
    all.extend_from_slice(extra);
    all.push(IMAGE);
    all.push(id);
    all.extend_from_slice(args);
    let out = c.run(&all);
    check(out.status.success(), || {
        format!("ctr run -d {id}: {}", describe(&out))
    })
}

/// The STATUS and PID of a task in `ctr task ls`.
fn task(c: &Containerd, id: &str) -> Option<(String, u32)> {
    let out = c.run(&["task", "ls"]);
    stdout(&out).lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(id)).then(|| {
            let pid = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            (words.next().unwrap_or_default().to_string(), pid)
        })
    })
}

fn wait_status(c: &Containerd, id: &str, status: &str) -> Result<(), String> {
    let reached = wait_until(Duration::from_secs(60), || {
        task(c, id).is_some_and(|(s, _)| s == status)
    });
    check(reached, || {
        format!("task {id} never became {status}: {:?}", task(c, id))
    })
}

/// Kills, then removes a task and its container.
fn remove(c: &Containerd, id: &str) {
    let _ = c.run(&["task", "kill", "-s", "SIGKILL", id]);
    wait_until(Duration::from_secs(60), || {
        task(c, id).is_none_or(|(s, _)| s == "STOPPED")
    });
    let _ = c.run(&["task", "rm", id]);
    let _ = c.run(&["container", "rm", id]);
}

fn a_bind_mount_both_ways(c: &Containerd) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("in"), "from-host\n").map_err(|e| e.to_string())?;
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        dir.path().display()
    );
    let out = run_rm(
        c,
        "c-bind",
        &["--mount", &mount],
        &["sh", "-c", "cat /data/in; echo from-guest > /data/out"],
    );
    check(stdout(&out).contains("from-host"), || {
        format!("bind in: {}", describe(&out))
    })?;
    let back = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    check(back == "from-guest\n", || format!("bind out: {back:?}"))
}

fn exit_code_and_output(c: &Containerd) -> Result<(), String> {
    let out = run_rm(
        c,
        "c-exit",
        &[],
        &["sh", "-c", "echo out; echo err >&2; uname -r; exit 3"],
    );
    let text = stdout(&out);
    check(out.status.code() == Some(3), || {
        format!("exit: {}", describe(&out))
    })?;
    check(text.contains("out\n") && text.contains("6.12"), || {
        format!("not husk's guest output: {}", describe(&out))
    })?;
    check(String::from_utf8_lossy(&out.stderr).contains("err"), || {
        format!("stderr lost: {}", describe(&out))
    })
}

fn stdin_reaches_the_process(c: &Containerd) -> Result<(), String> {
    let mut child = c
        .ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "c-stdin",
            "sh",
            "-c",
            "read x; echo got:$x",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    // ctr never closes stdin at EOF: the process reads one line and ends.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    drop(stdin);
    check(stdout(&out).contains("got:hello"), || describe(&out))
}

fn a_terminal(c: &Containerd) -> Result<(), String> {
    // ctr -t needs a terminal of its own: script(1) gives it one.
    let command = format!(
        "ctr --address {} run --rm -t --runtime {RUNTIME} {IMAGE} c-tty sh -c 'tty; stty size'",
        c.address.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    check(stdout(&out).contains("/dev/pts/"), || describe(&out))
}

fn exec_pause_metrics_kill(c: &Containerd) -> Result<(), String> {
    let id = "c-long";
    run_detached(c, id, &[], &["sleep", "600"])?;
    let result = (|| {
        wait_status(c, id, "RUNNING")?;
        let (_, pid) = task(c, id).unwrap_or_default();
        check(husk_processes_with("vmm").contains(&pid), || {
            format!("task pid {pid} is not the pod's VMM")
        })?;
        let out = c.run(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            id,
            "sh",
            "-c",
            "echo in-exec; exit 5",
        ]);
        check(
            out.status.code() == Some(5) && stdout(&out).contains("in-exec"),
            || format!("exec: {}", describe(&out)),
        )?;
        ctr_ok(c, &["task", "pause", id])?;
        wait_status(c, id, "PAUSED")?;
        ctr_ok(c, &["task", "resume", id])?;
        wait_status(c, id, "RUNNING")?;
        let out = c.run(&["task", "metrics", id]);
        check(stdout(&out).contains("pids.current"), || {
            format!("metrics: {}", describe(&out))
        })?;
        let out = c.run(&["task", "ps", id]);
        check(
            out.status.success() && stdout(&out).lines().count() >= 2,
            || format!("ps: {}", describe(&out)),
        )?;
        ctr_ok(c, &["task", "kill", "-s", "SIGKILL", id])?;
        wait_status(c, id, "STOPPED")
    })();
    remove(c, id);
    result
}

fn oom_event_before_exit(c: &Containerd) -> Result<(), String> {
    let events_file = c.dir().join("events-oom");
    let mut events = c
        .ctr(&["events"])
        .stdout(std::fs::File::create(&events_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let out = run_rm(
        c,
        "c-oom",
        &["--memory-limit", "33554432"],
        // The container's own process exceeds the limit (a shell around
        // it would survive the kill of its child).
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let _ = events.kill();
    let _ = events.wait();
    let log = std::fs::read_to_string(&events_file).unwrap_or_default();
    check(out.status.code() == Some(137), || {
        format!("oom exit: {}", describe(&out))
    })?;
    let oom = log
        .lines()
        .position(|l| l.contains("/tasks/oom") && l.contains("c-oom"));
    let exit = log
        .lines()
        .position(|l| l.contains("/tasks/exit") && l.contains("c-oom"));
    check(matches!((oom, exit), (Some(o), Some(e)) if o < e), || {
        format!("no /tasks/oom before /tasks/exit:\n{log}")
    })
}

fn a_killed_vmm_ends_the_task(c: &Containerd) -> Result<(), String> {
    let id = "c-crash";
    run_detached(c, id, &[], &["sleep", "600"])?;
    let result = (|| {
        wait_status(c, id, "RUNNING")?;
        let (_, pid) = task(c, id).unwrap_or_default();
        check(pid > 0, || "no task pid".into())?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        wait_status(c, id, "STOPPED")?;
        let out = c.run(&["task", "rm", id]);
        check(out.status.success(), || {
            format!("task rm: {}", describe(&out))
        })
    })();
    remove(c, id);
    result
}

fn two_containers_share_one_pod_vm(c: &Containerd) -> Result<(), String> {
    let member = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod-a",
    ];
    run_detached(c, "pod-a", &[], &["sleep", "600"])?;
    let result = (|| {
        run_detached(c, "pod-b", &member, &["sleep", "600"])?;
        wait_status(c, "pod-b", "RUNNING")?;
        let boot_id = |id: &str, exec: &str| {
            let out = c.run(&[
                "task",
                "exec",
                "--exec-id",
                exec,
                id,
                "cat",
                "/proc/sys/kernel/random/boot_id",
            ]);
            stdout(&out).trim().to_string()
        };
        let (a, b) = (boot_id("pod-a", "ea"), boot_id("pod-b", "eb"));
        check(!a.is_empty() && a == b, || {
            format!("boot ids differ: {a:?} vs {b:?}")
        })?;
        let (pa, pb) = (
            task(c, "pod-a").unwrap_or_default().1,
            task(c, "pod-b").unwrap_or_default().1,
        );
        check(pa == pb && husk_processes_with("vmm").len() == 1, || {
            format!(
                "not one VMM: pids {pa} {pb}, VMMs {:?}",
                husk_processes_with("vmm")
            )
        })?;
        check(shim_pids().len() == 1, || {
            format!("shims: {:?}", shim_pids())
        })
    })();
    // Every process of the container, as CRI's StopContainer does.
    let killed = c.run(&["task", "kill", "--all", "-s", "SIGKILL", "pod-b"]);
    let result = result.and_then(|()| {
        check(killed.status.success(), || {
            format!("kill --all: {}", describe(&killed))
        })?;
        wait_status(c, "pod-b", "STOPPED")
    });
    remove(c, "pod-b");
    remove(c, "pod-a");
    result
}

fn bad_input_is_refused_clearly(c: &Containerd) -> Result<(), String> {
    let out = run_rm(c, "c-bad1", &["--annotation", "io.husk.bogus=1"], &["true"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    check(
        !out.status.success() && err.contains("io.husk.bogus"),
        || describe(&out),
    )?;
    let _ = c.run(&["container", "rm", "c-bad1"]);
    let out = run_rm(
        c,
        "c-bad2",
        &[
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=no-such-pod",
        ],
        &["true"],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    check(!out.status.success() && err.contains("no-such-pod"), || {
        describe(&out)
    })?;
    let _ = c.run(&["container", "rm", "c-bad2"]);
    let out = run_rm(c, "c-bad3", &["--net-host"], &["true"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    check(
        !out.status.success() && err.contains("host's network"),
        || describe(&out),
    )?;
    let _ = c.run(&["container", "rm", "c-bad3"]);
    Ok(())
}

fn a_killed_shim_is_cleaned_up(c: &Containerd) -> Result<(), String> {
    let id = "c-shim-crash";
    run_detached(c, id, &[], &["sleep", "600"])?;
    let result = (|| {
        wait_status(c, id, "RUNNING")?;
        let shims = shim_pids();
        check(shims.len() == 1, || format!("shims: {shims:?}"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shims[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        // containerd runs `shim delete`; the VMM died with its shim.
        let gone = wait_until(Duration::from_secs(60), || {
            husk_processes_with("vmm").is_empty() && task(c, id).is_none_or(|(s, _)| s == "STOPPED")
        });
        check(gone, || {
            format!(
                "after the shim died: task {:?}, VMMs {:?}",
                task(c, id),
                husk_processes_with("vmm")
            )
        })
    })();
    remove(c, id);
    result
}

fn pods_survive_a_containerd_restart(c: &Containerd) -> Result<(), String> {
    let id = "c-restart";
    run_detached(c, id, &[], &["sleep", "600"])?;
    let result = (|| {
        wait_status(c, id, "RUNNING")?;
        c.restart();
        wait_status(c, id, "RUNNING")?;
        let out = c.run(&[
            "task",
            "exec",
            "--exec-id",
            "after",
            id,
            "echo",
            "still-here",
        ]);
        check(stdout(&out).contains("still-here"), || {
            format!("exec after restart: {}", describe(&out))
        })
    })();
    remove(c, id);
    result
}

#[test]
fn ctr_runs_containers_through_the_husk_shim() {
    every_case(&Containerd::start(None));
}

/// containerd 2 still speaks task API v2 to a shim that announces a plain
/// address, as husk's does: the same cases, with containerd 2.1 and its
/// `ctr`.
#[test]
fn ctr_runs_containers_through_the_husk_shim_on_containerd_2() {
    every_case(&Containerd::start_2());
}

/// Runs every case on `c`; after each, nothing of its pods may be left.
fn every_case(c: &Containerd) {
    let work = tempfile::tempdir().unwrap();
    c.import(&busybox_image_archive(work.path(), IMAGE).unwrap());
    let cases: &[(&str, Case)] = &[
        ("exit code and output", exit_code_and_output),
        ("stdin", stdin_reaches_the_process),
        ("a bind mount", a_bind_mount_both_ways),
        ("terminal", a_terminal),
        ("exec, pause, metrics, kill", exec_pause_metrics_kill),
        ("OOM event before exit", oom_event_before_exit),
        ("a SIGKILLed VMM", a_killed_vmm_ends_the_task),
        (
            "two containers in one pod VM",
            two_containers_share_one_pod_vm,
        ),
        ("a SIGKILLed shim", a_killed_shim_is_cleaned_up),
        ("containerd restarted", pods_survive_a_containerd_restart),
        ("bad input", bad_input_is_refused_clearly),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        let started = std::time::Instant::now();
        let result = case(c);
        let left = c.pod_leftovers("default", Duration::from_secs(20));
        match (&result, left.is_empty()) {
            (Ok(()), true) => eprintln!("{name}: ok ({:.1} s)", started.elapsed().as_secs_f64()),
            _ => failures.push(format!(
                "{name}: {}{}",
                result.err().unwrap_or_default(),
                if left.is_empty() {
                    String::new()
                } else {
                    format!("\nleft behind: {left:?}")
                }
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\n--- containerd log (end)\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        husk_tests::last_lines(&c.log(), 60)
    );
}
