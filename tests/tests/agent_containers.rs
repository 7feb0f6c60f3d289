//! Containers through the guest agent running as a host process (root):
//! namespaces, pivot_root, mounts, stdio streams, tty, signals, wait and
//! exec, against a busybox rootfs and configs made from runc's default
//! spec. Cgroup features (limits, pause/resume, stats) need cgroup v2 with
//! controllers, which hybrid hosts do not offer: those tests say so and
//! skip, the microVM suite covers them.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcStdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use husk_protocol::agent::{
    ContainerRequest, CreateContainerRequest, ExecProcessRequest, ProcessRequest, ResizeTtyRequest,
    SignalProcessRequest, Stdio, UpdateContainerRequest, WaitProcessResponse,
};
use husk_protocol::agent_ttrpc::AgentClient;
use husk_tests::{agent_bin, busybox_rootfs, wait_until};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxResourcesBuilder, MountBuilder, RootBuilder, Spec, UserBuilder,
};
use ttrpc::Code;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent serving a Unix socket in a temp dir; removes its containers
/// and ends with the test.
struct HostAgent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    client: AgentClient,
    created: Mutex<Vec<String>>,
}

fn start_agent() -> HostAgent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new(agent_bin())
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::null())
        .stderr(log)
        .spawn()
        .expect("start husk-agent");
    // The socket file appears at bind(), before listen(): retry connecting.
    let mut stream = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            stream = UnixStream::connect(&socket).ok();
            stream.is_some() && UnixStream::connect(dir.path().join("agent.sock.stdio")).is_ok()
        }),
        "the agent did not listen on {socket:?}"
    );
    let stream = stream.unwrap();
    let client = AgentClient::new(ttrpc::Client::new(stream.into_raw_fd()).unwrap());
    HostAgent {
        child,
        dir,
        socket,
        client,
        created: Mutex::default(),
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(CALL_TIMEOUT.as_nanos() as i64)
}

/// The status code and message of a failed call.
fn rpc_error(e: ttrpc::Error) -> (Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

fn stdio(stdin: bool, stdout: bool, stderr: bool, terminal: bool) -> Stdio {
    Stdio {
        stdin,
        stdout,
        stderr,
        terminal,
        ..Default::default()
    }
}

impl HostAgent {
    fn create_json(&self, id: &str, json: Vec<u8>, stdio: Stdio) -> ttrpc::Result<u32> {
        let req = CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        let r = self.client.create_container(ctx(), &req)?;
        self.created.lock().unwrap().push(id.to_string());
        Ok(r.pid)
    }

    fn create(&self, id: &str, spec: &Spec, stdio: Stdio) -> ttrpc::Result<u32> {
        self.create_json(id, serde_json::to_vec(spec).unwrap(), stdio)
    }

    fn start(&self, id: &str) -> ttrpc::Result<()> {
        let req = ContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.client.start_container(ctx(), &req).map(drop)
    }

    fn wait(&self, id: &str, exec: &str) -> WaitProcessResponse {
        let req = ProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.client.wait_process(ctx(), &req).expect("WaitProcess")
    }

    fn signal(&self, id: &str, exec: &str, signal: i32, all: bool) -> ttrpc::Result<()> {
        let req = SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            signal: signal as u32,
            all,
            ..Default::default()
        };
        self.client.signal_process(ctx(), &req).map(drop)
    }

    fn exec(
        &self,
        id: &str,
        exec: &str,
        process: &oci_spec::runtime::Process,
        stdio: Stdio,
    ) -> ttrpc::Result<u32> {
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process_json: serde_json::to_vec(process).unwrap(),
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.client.exec_process(ctx(), &req).map(|r| r.pid)
    }

    fn remove(&self, id: &str) -> ttrpc::Result<()> {
        let req = ContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.client.remove_container(ctx(), &req)?;
        self.created.lock().unwrap().retain(|c| c != id);
        Ok(())
    }

    /// Opens a stdio stream; returns it and the agent's reply line.
    fn try_stream(&self, id: &str, exec: &str, kind: &str) -> (UnixStream, String) {
        let mut s = UnixStream::connect(self.dir.path().join("agent.sock.stdio")).unwrap();
        s.write_all(format!("STDIO {id} {exec} {kind}\n").as_bytes())
            .unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        (s, String::from_utf8_lossy(&line).into_owned())
    }

    fn stream(&self, id: &str, exec: &str, kind: &str) -> UnixStream {
        let (s, reply) = self.try_stream(id, exec, kind);
        assert_eq!(reply, "OK", "STDIO {id} {exec} {kind}");
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap());
        for id in created {
            let _ = self.remove(&id);
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ({:?})\n{}", self.socket, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bundle: a busybox rootfs in a temp dir.
struct Bundle {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
}

fn bundle() -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    Bundle { dir, rootfs }
}

/// runc's default spec on `rootfs`, running `sh -c script`.
fn spec(rootfs: &Path, script: &str) -> Spec {
    let mut spec = Spec::default();
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(true)
            .build()
            .unwrap(),
    ));
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec!["sh".into(), "-c".into(), script.into()]));
    spec.set_process(Some(p));
    spec
}

fn read_all(mut s: UnixStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Runs `script` as a container's init with stdout and stderr; returns
/// (stdout, stderr, wait reply).
fn run(agent: &HostAgent, id: &str, spec: &Spec) -> (String, String, WaitProcessResponse) {
    agent
        .create(id, spec, stdio(false, true, true, false))
        .expect("CreateContainer");
    let out = agent.stream(id, "-", "stdout");
    let err = agent.stream(id, "-", "stderr");
    agent.start(id).expect("StartContainer");
    let out = std::thread::spawn(move || read_all(out));
    let err = std::thread::spawn(move || read_all(err));
    let status = agent.wait(id, "");
    let r = (out.join().unwrap(), err.join().unwrap(), status);
    agent.remove(id).expect("RemoveContainer");
    r
}

fn process(args: &[&str]) -> oci_spec::runtime::Process {
    let mut p = Spec::default().process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}

/// Mount points of this (the host's) mount namespace.
fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn stdout_stderr_and_exit_codes() {
    let agent = start_agent();
    let b = bundle();
    let (out, err, st) = run(
        &agent,
        "codes",
        &spec(&b.rootfs, "echo out; echo err >&2; exit 3"),
    );
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!((st.exit_status, st.signal, st.oom_killed), (3, 0, false));
    let (out, _, st) = run(&agent, "zero", &spec(&b.rootfs, "echo fine"));
    assert_eq!((out.as_str(), st.exit_status), ("fine\n", 0));
}

#[test]
fn output_is_complete_when_wait_returns() {
    let agent = start_agent();
    let b = bundle();
    let (out, _, st) = run(&agent, "big", &spec(&b.rootfs, "seq 1 200000"));
    assert_eq!(st.exit_status, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 200_000);
    assert_eq!(lines.last(), Some(&"200000"));
}

#[test]
fn stdin_reaches_cat_with_eof_and_close_stdin_ends_it() {
    let agent = start_agent();
    let b = bundle();
    let mut s = spec(&b.rootfs, "");
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["cat".into()]));
    s.set_process(Some(p));
    agent
        .create("cat", &s, stdio(true, true, false, false))
        .unwrap();
    let mut input = agent.stream("cat", "-", "stdin");
    let output = agent.stream("cat", "-", "stdout");
    agent.start("cat").unwrap();
    input.write_all(b"hello\nworld\n").unwrap();
    input.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(output), "hello\nworld\n");
    assert_eq!(agent.wait("cat", "").exit_status, 0);
    agent.remove("cat").unwrap();

    // CloseStdin: EOF even though the host keeps its stream open.
    agent
        .create("cat2", &s, stdio(true, true, false, false))
        .unwrap();
    let _input = agent.stream("cat2", "-", "stdin");
    let output = agent.stream("cat2", "-", "stdout");
    agent.start("cat2").unwrap();
    let req = ProcessRequest {
        container_id: "cat2".into(),
        ..Default::default()
    };
    agent.client.close_stdin(ctx(), &req).unwrap();
    assert_eq!(read_all(output), "");
    assert_eq!(agent.wait("cat2", "").exit_status, 0);
}

#[test]
fn the_process_sees_its_env_cwd_user_and_hostname() {
    let agent = start_agent();
    let b = bundle();
    let mut s = spec(
        &b.rootfs,
        "echo $FOO; pwd; id -u; id -g; id -G; hostname; echo $HOME; umask; \
         cat /proc/sys/kernel/domainname /proc/self/oom_score_adj; ulimit -n",
    );
    s.set_hostname(Some("box1".into()));
    let mut linux = s.linux().clone().unwrap();
    linux.set_sysctl(Some(
        [("kernel.domainname".to_string(), "example.org".to_string())].into(),
    ));
    s.set_linux(Some(linux));
    let mut p = s.process().clone().unwrap();
    let mut env = p.env().clone().unwrap();
    env.push("FOO=bar".into());
    p.set_env(Some(env));
    p.set_cwd("/work/here".into());
    p.set_oom_score_adj(Some(500));
    p.set_rlimits(Some(vec![oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .soft(333u64)
        .hard(444u64)
        .build()
        .unwrap()]));
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1000u32)
            .additional_gids(vec![5u32])
            .umask(0o027u32)
            .build()
            .unwrap(),
    );
    s.set_process(Some(p));
    let (out, err, st) = run(&agent, "who", &s);
    assert_eq!(st.exit_status, 0, "{err}");
    assert_eq!(
        out,
        "bar\n/work/here\n1000\n1000\n1000 5\nbox1\n/\n0027\nexample.org\n500\n333\n"
    );
    // A user name is looked up in the container's /etc/passwd and /etc/group.
    let mut s = spec(&b.rootfs, "id -u; id -g; id -G; echo $HOME");
    let mut p = s.process().clone().unwrap();
    p.set_user(UserBuilder::default().username("app").build().unwrap());
    s.set_process(Some(p));
    let (out, err, st) = run(&agent, "who2", &s);
    assert_eq!(st.exit_status, 0, "{err}");
    assert_eq!(out, "1001\n1002\n1002 10\n/home/app\n");
}

#[test]
fn the_rootfs_is_read_only_and_the_process_is_confined() {
    let agent = start_agent();
    let b = bundle();
    let script = "touch /x 2>&1; echo rc=$?; touch /dev/shm/y && echo shm-ok; \
                  [ -s /proc/kcore ] || echo kcore-masked; \
                  (echo x > /proc/sys/kernel/domainname) 2>/dev/null || echo proc-sys-ro; \
                  cat /proc/1/cmdline | tr '\\0' ' '; echo; \
                  cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs)'";
    let (out, _, st) = run(&agent, "ro", &spec(&b.rootfs, script));
    assert_eq!(st.exit_status, 0);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(out.contains("shm-ok"), "{out}");
    assert!(out.contains("kcore-masked"), "{out}");
    assert!(out.contains("proc-sys-ro"), "{out}");
    // PID 1 of its own pid namespace is the container's init.
    assert!(out.contains("sh -c touch /x"), "{out}");
    // AUDIT_WRITE, KILL, NET_BIND_SERVICE only, and no_new_privs.
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(!b.rootfs.join("x").exists());
}

#[test]
fn a_symlink_out_of_the_rootfs_as_mount_destination_stays_inside() {
    let agent = start_agent();
    let b = bundle();
    // The image's /escape points at a real directory outside the rootfs.
    let outside = b.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, b.rootfs.join("escape")).unwrap();
    let data = b.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("marker"), "inside\n").unwrap();
    let mut s = spec(
        &b.rootfs,
        "cat /escape/marker; ls -d \"$(readlink /escape)\"",
    );
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/escape")
            .typ("bind")
            .source(&data)
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    agent
        .create("escape", &s, stdio(false, true, true, false))
        .unwrap();
    // Created, not started: the mount exists in the container only.
    assert!(
        !host_mounts().contains(outside.to_str().unwrap()),
        "mounted on the host"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "touched outside the rootfs"
    );
    let out = agent.stream("escape", "-", "stdout");
    let err = agent.stream("escape", "-", "stderr");
    agent.start("escape").unwrap();
    let out = read_all(out);
    let err = read_all(err);
    assert_eq!(agent.wait("escape", "").exit_status, 0, "{err}");
    assert_eq!(out, format!("inside\n{}\n", outside.display()));
    // The destination was made inside the rootfs.
    let inside = b.rootfs.join(outside.strip_prefix("/").unwrap());
    assert!(inside.is_dir(), "{inside:?}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    agent.remove("escape").unwrap();
    assert!(!host_mounts().contains(b.rootfs.to_str().unwrap()));
}

#[test]
fn sigterm_and_sigkill_are_delivered() {
    let agent = start_agent();
    let b = bundle();
    let none = stdio(false, false, false, false);
    // SIGKILL ends an init: 128 + 9.
    agent
        .create("kill", &spec(&b.rootfs, "sleep 100"), none.clone())
        .unwrap();
    agent.start("kill").unwrap();
    agent.signal("kill", "", libc::SIGKILL, false).unwrap();
    let st = agent.wait("kill", "");
    assert_eq!((st.exit_status, st.signal, st.oom_killed), (137, 9, false));
    // Signalling it again: it has exited.
    let (code, _) = rpc_error(agent.signal("kill", "", libc::SIGTERM, false).unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);
    agent.remove("kill").unwrap();

    // An init that handles SIGTERM gets it.
    let s = spec(
        &b.rootfs,
        "trap 'exit 42' TERM; while :; do sleep 0.05; done",
    );
    agent.create("term", &s, none.clone()).unwrap();
    agent.start("term").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    agent.signal("term", "", libc::SIGTERM, false).unwrap();
    assert_eq!(agent.wait("term", "").exit_status, 42);
    agent.remove("term").unwrap();

    // SIGTERM ends an exec'd sleep (not a pid 1): 128 + 15.
    agent
        .create("execterm", &spec(&b.rootfs, "sleep 100"), none.clone())
        .unwrap();
    agent.start("execterm").unwrap();
    agent
        .exec("execterm", "s", &process(&["sleep", "100"]), none)
        .unwrap();
    agent.signal("execterm", "s", libc::SIGTERM, false).unwrap();
    let st = agent.wait("execterm", "s");
    assert_eq!((st.exit_status, st.signal), (143, 15));
    // `all` reaches every process of the container.
    agent.signal("execterm", "", libc::SIGKILL, true).unwrap();
    assert_eq!(agent.wait("execterm", "").exit_status, 137);
}

#[test]
fn exec_into_a_running_container() {
    let agent = start_agent();
    let b = bundle();
    let mut s = spec(&b.rootfs, "sleep 100");
    s.set_hostname(Some("host-x".into()));
    let init_pid = agent
        .create("ex", &s, stdio(false, false, false, false))
        .unwrap();
    agent.start("ex").unwrap();
    // Streams connected before ExecProcess wait for it.
    let out = agent.stream("ex", "e1", "stdout");
    let err = agent.stream("ex", "e1", "stderr");
    let p = process(&[
        "sh",
        "-c",
        "echo pid=$$; hostname; tr '\\0' ' ' </proc/1/cmdline; echo; echo oops >&2; exit 7",
    ]);
    let pid = agent
        .exec("ex", "e1", &p, stdio(false, true, true, false))
        .unwrap();
    assert!(pid > 1 && pid != init_pid);
    let out = read_all(out);
    assert_eq!(read_all(err), "oops\n");
    let st = agent.wait("ex", "e1");
    assert_eq!(st.exit_status, 7);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let inner_pid: u32 = lines[0].strip_prefix("pid=").unwrap().parse().unwrap();
    assert!(
        inner_pid > 1 && inner_pid < 100,
        "pid in the container's namespace: {out}"
    );
    assert_eq!(lines[1], "host-x");
    assert_eq!(lines[2], "sleep 100 ");
    // Streams connected while ExecProcess waits work too; stdin included.
    let agent = &agent;
    std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            agent.exec(
                "ex",
                "e2",
                &process(&["cat"]),
                stdio(true, true, false, false),
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        let mut input = agent.stream("ex", "e2", "stdin");
        let out = agent.stream("ex", "e2", "stdout");
        t.join().unwrap().unwrap();
        input.write_all(b"via exec\n").unwrap();
        drop(input);
        assert_eq!(read_all(out), "via exec\n");
        assert_eq!(agent.wait("ex", "e2").exit_status, 0);
    });
    // A duplicate live exec id is refused, a bad process named.
    agent
        .exec(
            "ex",
            "e3",
            &process(&["sleep", "100"]),
            stdio(false, false, false, false),
        )
        .unwrap();
    let (code, _) = rpc_error(
        agent
            .exec(
                "ex",
                "e3",
                &process(&["true"]),
                stdio(false, false, false, false),
            )
            .unwrap_err(),
    );
    assert_eq!(code, Code::ALREADY_EXISTS);
    let (code, msg) = rpc_error(
        agent
            .exec(
                "ex",
                "e4",
                &process(&["no-such-cmd"]),
                stdio(false, false, false, false),
            )
            .unwrap_err(),
    );
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(
        msg.contains("process.args[0]") && msg.contains("no-such-cmd"),
        "{msg}"
    );
}

/// Reads from a tty stream until `want` shows up.
fn read_until(s: &mut UnixStream, want: &str) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while !String::from_utf8_lossy(&got).contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_terminal_with_resize() {
    let agent = start_agent();
    let b = bundle();
    let mut s = spec(&b.rootfs, "tty; stty size; read line; stty size; exit 5");
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    p.set_console_size(Some(
        oci_spec::runtime::BoxBuilder::default()
            .height(24u64)
            .width(80u64)
            .build()
            .unwrap(),
    ));
    s.set_process(Some(p));
    agent
        .create("tty", &s, stdio(false, false, false, true))
        .unwrap();
    // Only the tty stream belongs to a terminal process.
    let (_s, reply) = agent.try_stream("tty", "-", "stdout");
    assert!(
        reply.starts_with("ERR ") && reply.contains("stdout"),
        "{reply}"
    );
    let mut t = agent.stream("tty", "-", "tty");
    agent.start("tty").unwrap();
    let first = read_until(&mut t, "24 80");
    assert!(first.contains("/dev/pts/0"), "{first}");
    let req = ResizeTtyRequest {
        container_id: "tty".into(),
        rows: 40,
        cols: 100,
        ..Default::default()
    };
    agent.client.resize_tty(ctx(), &req).unwrap();
    t.write_all(b"\n").unwrap();
    read_until(&mut t, "40 100");
    assert_eq!(agent.wait("tty", "").exit_status, 5);
    // A terminal for an exec, too.
    agent
        .create(
            "tty2",
            &spec(&b.rootfs, "sleep 100"),
            stdio(false, false, false, false),
        )
        .unwrap();
    agent.start("tty2").unwrap();
    let mut p = process(&["sh", "-c", "tty; stty size"]);
    p.set_terminal(Some(true));
    p.set_console_size(Some(
        oci_spec::runtime::BoxBuilder::default()
            .height(10u64)
            .width(20u64)
            .build()
            .unwrap(),
    ));
    let mut t = agent.stream("tty2", "x", "tty");
    agent
        .exec("tty2", "x", &p, stdio(false, false, false, true))
        .unwrap();
    let out = read_until(&mut t, "10 20");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert_eq!(agent.wait("tty2", "x").exit_status, 0);
    // ResizeTty without a terminal is refused.
    let req = ResizeTtyRequest {
        container_id: "tty2".into(),
        rows: 1,
        cols: 1,
        ..Default::default()
    };
    assert_eq!(
        rpc_error(agent.client.resize_tty(ctx(), &req).unwrap_err()).0,
        Code::FAILED_PRECONDITION
    );
}

#[test]
fn list_processes() {
    let agent = start_agent();
    let b = bundle();
    let init = agent
        .create(
            "ps",
            &spec(&b.rootfs, "sleep 100 & sleep 101"),
            stdio(false, false, false, false),
        )
        .unwrap();
    agent.start("ps").unwrap();
    let req = ContainerRequest {
        container_id: "ps".into(),
        ..Default::default()
    };
    let mut list = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            list = agent.client.list_processes(ctx(), &req).unwrap().processes;
            list.iter()
                .filter(|p| p.args.first().map(String::as_str) == Some("sleep"))
                .count()
                == 2
        }),
        "{list:?}"
    );
    assert!(list.iter().any(|p| p.pid == init), "{list:?}");
    assert!(list.iter().any(|p| p.args == ["sleep", "100"]), "{list:?}");
}

/// Whether the agent has container cgroups (false on hybrid hosts).
fn skip_without_cgroup2(agent: &HostAgent, id: &str) -> bool {
    let req = ContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    match agent.client.pause_container(ctx(), &req) {
        Ok(_) => {
            agent.client.resume_container(ctx(), &req).unwrap();
            false
        }
        Err(e) => {
            let (code, msg) = rpc_error(e);
            assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
            assert!(msg.contains("cgroup v2"), "{msg}");
            eprintln!("skipped: no cgroup v2 with controllers for host-process containers here ({msg}); the microVM suite covers it");
            true
        }
    }
}

#[test]
fn pause_and_resume() {
    let agent = start_agent();
    let b = bundle();
    agent
        .create(
            "pz",
            &spec(&b.rootfs, "while :; do echo tick; sleep 0.05; done"),
            stdio(false, true, false, false),
        )
        .unwrap();
    let mut out = agent.stream("pz", "-", "stdout");
    agent.start("pz").unwrap();
    read_until(&mut out, "tick");
    if skip_without_cgroup2(&agent, "pz") {
        return;
    }
    let req = ContainerRequest {
        container_id: "pz".into(),
        ..Default::default()
    };
    agent.client.pause_container(ctx(), &req).unwrap();
    // Drain what was written before the freeze, then nothing comes.
    std::thread::sleep(Duration::from_millis(100));
    out.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while out.read(&mut buf).is_ok_and(|n| n > 0) {}
    std::thread::sleep(Duration::from_millis(300));
    assert!(out.read(&mut buf).is_err(), "output while paused");
    agent.client.resume_container(ctx(), &req).unwrap();
    read_until(&mut out, "tick");
    let stats = agent.client.container_stats(ctx(), &req).unwrap();
    assert!(
        stats.pids_current >= 1 && stats.memory_usage_bytes > 0,
        "{stats:?}"
    );
}

#[test]
fn limits_without_cgroup2_are_refused_clearly() {
    let agent = start_agent();
    let b = bundle();
    let mut s = spec(&b.rootfs, "true");
    let mut linux = s.linux().clone().unwrap();
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    ));
    s.set_linux(Some(linux));
    match agent.create("lim", &s, stdio(false, false, false, false)) {
        Ok(_) => {
            eprintln!("this host has cgroup v2 with controllers: limits are applied");
            let req = UpdateContainerRequest {
                container_id: "lim".into(),
                resources_json: br#"{"pids":{"limit":50}}"#.to_vec(),
                ..Default::default()
            };
            agent.client.update_container(ctx(), &req).unwrap();
        }
        Err(e) => {
            let (code, msg) = rpc_error(e);
            assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
            assert!(
                msg.contains("linux.resources") && msg.contains("cgroup v2"),
                "{msg}"
            );
            eprintln!("skipped applying limits: {msg}");
        }
    }
}

/// Children of the agent process (its live container processes).
fn agent_children(agent: &HostAgent) -> Vec<u32> {
    let me = agent.child.id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == me).then(|| e.file_name().to_string_lossy().parse().ok())?
        })
        .collect()
}

#[test]
fn a_bad_spec_is_refused_clearly_and_leaves_nothing() {
    let agent = start_agent();
    let b = bundle();
    let none = stdio(false, false, false, false);
    let (code, msg) = rpc_error(
        agent
            .create_json("bad", b"{\"root\": ".to_vec(), none.clone())
            .unwrap_err(),
    );
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("oci_spec_json: "), "{msg}");

    let mut v = serde_json::to_value(spec(&b.rootfs, "true")).unwrap();
    v["process"]["user"]["uid"] = serde_json::json!("root");
    let (code, msg) = rpc_error(
        agent
            .create_json("bad", serde_json::to_vec_pretty(&v).unwrap(), none.clone())
            .unwrap_err(),
    );
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(
        msg.starts_with("oci_spec_json: process.user.uid: invalid type"),
        "{msg}"
    );

    let mut s = spec(&b.rootfs, "true");
    let mut p = s.process().clone().unwrap();
    p.set_cwd("relative".into());
    s.set_process(Some(p));
    let (code, msg) = rpc_error(agent.create("bad", &s, none.clone()).unwrap_err());
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.contains("process.cwd"), "{msg}");

    // Valid JSON, but the helper cannot carry it out: a missing bind source.
    let mut s = spec(&b.rootfs, "true");
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/nonexistent/husk-test")
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let (code, msg) = rpc_error(agent.create("bad", &s, none.clone()).unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("mounts[7].source"), "{msg}");
    // Nothing left: no process, no mount, and the id is free again.
    assert!(
        wait_until(Duration::from_secs(5), || agent_children(&agent).is_empty()),
        "{:?}",
        agent_children(&agent)
    );
    assert!(!host_mounts().contains(b.rootfs.to_str().unwrap()));
    let (code, _) = rpc_error(agent.start("bad").unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);

    // An executable that is not there fails at create, not later.
    let mut s = spec(&b.rootfs, "");
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/nope".into()]));
    s.set_process(Some(p));
    let (code, msg) = rpc_error(agent.create("bad", &s, none.clone()).unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(
        msg.contains("process.args[0]") && msg.contains("/bin/nope"),
        "{msg}"
    );

    // A user namespace is refused for now.
    let mut s = spec(&b.rootfs, "true");
    let mut linux = s.linux().clone().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    ns.push(
        oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(oci_spec::runtime::LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(ns));
    s.set_linux(Some(linux));
    let (_, msg) = rpc_error(agent.create("bad", &s, none.clone()).unwrap_err());
    assert!(msg.contains("user namespaces are not supported"), "{msg}");

    // And the same id works with a good spec.
    let (out, _, st) = run(&agent, "bad", &spec(&b.rootfs, "echo ok"));
    assert_eq!((out.as_str(), st.exit_status), ("ok\n", 0));
    assert!(wait_until(Duration::from_secs(5), || agent_children(
        &agent
    )
    .is_empty()));
}

#[test]
fn stdio_lines_are_checked() {
    let agent = start_agent();
    let b = bundle();
    let (_s, reply) = agent.try_stream("ghost", "-", "stdout");
    assert!(
        reply.starts_with("ERR ") && reply.contains("ghost"),
        "{reply}"
    );
    agent
        .create(
            "st",
            &spec(&b.rootfs, "echo hi"),
            stdio(false, true, false, false),
        )
        .unwrap();
    let (_s, reply) = agent.try_stream("st", "-", "stderr");
    assert!(
        reply.starts_with("ERR ") && reply.contains("stderr"),
        "{reply}"
    );
    let (_s, reply) = agent.try_stream("st", "-", "bogus");
    assert!(reply.starts_with("ERR "), "{reply}");
    let out = agent.stream("st", "-", "stdout");
    let (_s, reply) = agent.try_stream("st", "-", "stdout");
    assert!(reply.contains("attached already"), "{reply}");
    agent.start("st").unwrap();
    assert_eq!(read_all(out), "hi\n");
    assert_eq!(agent.wait("st", "").exit_status, 0);
    // A second start is refused.
    assert_eq!(
        rpc_error(agent.start("st").unwrap_err()).0,
        Code::FAILED_PRECONDITION
    );
}

#[test]
fn start_waits_for_the_streams_and_remove_kills() {
    let agent = start_agent();
    let b = bundle();
    agent
        .create(
            "late",
            &spec(&b.rootfs, "echo late"),
            stdio(false, true, false, false),
        )
        .unwrap();
    let agent = &agent;
    std::thread::scope(|sc| {
        let t = sc.spawn(|| agent.start("late"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.is_finished(), "start did not wait for stdout");
        let out = agent.stream("late", "-", "stdout");
        t.join().unwrap().unwrap();
        assert_eq!(read_all(out), "late\n");
    });
    assert_eq!(agent.wait("late", "").exit_status, 0);

    // RemoveContainer kills a running container and forgets it.
    let pid = agent
        .create(
            "rm",
            &spec(&b.rootfs, "sleep 100"),
            stdio(false, false, false, false),
        )
        .unwrap();
    agent.start("rm").unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    agent.remove("rm").unwrap();
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{pid}"
    ))
    .exists()));
    assert_eq!(rpc_error(agent.start("rm").unwrap_err()).0, Code::NOT_FOUND);
}

#[test]
fn seccomp_profiles_apply_with_and_without_no_new_privileges() {
    let agent = start_agent();
    let b = bundle();
    let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["not_a_syscall_here"], "action": "SCMP_ACT_KILL"}
        ]
    }))
    .unwrap();
    for (i, nnp) in [true, false].into_iter().enumerate() {
        let mut s = spec(&b.rootfs, "mkdir /dev/shm/d; echo rc=$?; ulimit -n");
        let mut linux = s.linux().clone().unwrap();
        linux.set_seccomp(Some(profile.clone()));
        s.set_linux(Some(linux));
        let mut p = s.process().clone().unwrap();
        p.set_no_new_privileges(Some(nnp));
        s.set_process(Some(p));
        let (out, err, st) = run(&agent, &format!("sc{i}"), &s);
        assert_eq!(st.exit_status, 0, "{err}");
        assert_eq!(out, "rc=1\n1024\n", "no_new_privileges {nnp}: {err}");
        assert!(err.contains("Operation not permitted"), "{err}");
    }
    // An exec gets the container's filters.
    let mut s = spec(&b.rootfs, "sleep 100");
    let mut linux = s.linux().clone().unwrap();
    linux.set_seccomp(Some(profile));
    s.set_linux(Some(linux));
    agent
        .create("sc-exec", &s, stdio(false, false, false, false))
        .unwrap();
    agent.start("sc-exec").unwrap();
    let err = agent.stream("sc-exec", "m", "stderr");
    agent
        .exec(
            "sc-exec",
            "m",
            &process(&["mkdir", "/dev/shm/e"]),
            stdio(false, false, true, false),
        )
        .unwrap();
    assert!(read_all(err).contains("Operation not permitted"));
    assert_eq!(agent.wait("sc-exec", "m").exit_status, 1);
}

#[test]
fn create_and_start_are_quick() {
    let agent = start_agent();
    let b = bundle();
    let s = spec(&b.rootfs, "true");
    let mut times = Vec::new();
    for i in 0..5 {
        let id = format!("q{i}");
        let t0 = Instant::now();
        agent
            .create(&id, &s, stdio(false, false, false, false))
            .unwrap();
        let t1 = Instant::now();
        agent.start(&id).unwrap();
        let t2 = Instant::now();
        assert_eq!(agent.wait(&id, "").exit_status, 0);
        let t3 = Instant::now();
        agent.remove(&id).unwrap();
        times.push((t1 - t0, t2 - t1, t3 - t2, Instant::now() - t3));
    }
    times.sort();
    let (c, s, w, r) = times[times.len() / 2];
    eprintln!("host-process container, median of 5: create {c:?}, start {s:?}, run+wait {w:?}, remove {r:?}");
    assert!(c + s < Duration::from_secs(2), "{times:?}");
}
