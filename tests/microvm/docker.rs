//! Docker with Debian's engine (docker.io 20.10) and husk as a runtime
//! registered by path: dockerd's containerd drives the `husk` CLI through
//! containerd-shim-runc-v2, one microVM per container. dockerd runs with
//! everything of its own under one directory in /run (overlay2 needs a
//! tmpfs under it, and the test host's root is read-only), and the client
//! used is Debian's `/usr/bin/docker`, not whatever `docker` is first on
//! `PATH`.
//!
//! One test with named cases; after each, nothing of its containers may be
//! left: no husk monitor or VMM, no state under the root dockerd passes to
//! husk, no container in `docker ps -a`.
//!
//! A second test runs another private dockerd, with Docker's default
//! bridge network, inside a network namespace the test makes (so its
//! bridge, veths and proxies stay there): Docker's `prestart` hook moves
//! the container's veth into the namespace husk's monitor made, husk joins
//! it to the guest, and a port published with `-p` serves a page from the
//! microVM.
//!
//! A third runs Docker 26 (Debian 13's engine, fetched by
//! `scripts/fetch-debian-package.sh`) on the suite's own containerd, which
//! takes `--runtime io.containerd.husk.v2` to the husk shim directly.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use husk_tests::image::busybox_image_archive;
use husk_tests::{
    check, describe, host_cgroup, husk_bin, husk_processes_with, initramfs, kernel, output_within,
    stdout_of as stdout, wait_until, CALL_TIMEOUT,
};

/// Debian's client; another `docker` may come first on `PATH`.
const DOCKER: &str = "/usr/bin/docker";
/// Debian's engine.
const DOCKERD: &str = "/usr/sbin/dockerd";
/// The image `docker load` makes of the archive.
const IMAGE: &str = "husk-busybox:latest";
/// The runtime name in daemon.json.
const RUNTIME: &str = "husk";
/// How long the cleanup after a container ends may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The host port the bridge test publishes (inside its own namespace).
const PUBLISHED_PORT: u16 = 18080;

/// A private dockerd.
struct Docker {
    dir: tempfile::TempDir,
    daemon: Child,
    calls: std::cell::Cell<u32>,
}

/// Which engine a private dockerd is.
enum Engine {
    /// Debian's 20.10, with husk registered by path (the runc shim's path).
    Debian,
    /// Docker 26 (`scripts/fetch-debian-package.sh`) on the suite's own
    /// containerd, which takes `--runtime io.containerd.husk.v2` to the
    /// husk shim found on that containerd's `PATH`.
    WithShim {
        /// The containerd's socket.
        containerd: PathBuf,
    },
}

/// Docker 26's dockerd, as `scripts/setup.sh` fetches it.
fn dockerd_26() -> PathBuf {
    let dockerd = husk_tests::cached("docker-engine/usr/sbin/dockerd");
    assert!(
        dockerd.exists(),
        "{dockerd:?} is missing: run scripts/fetch-debian-package.sh"
    );
    dockerd
}

/// A network namespace the test made (`ip netns add`), deleted when dropped.
struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Adds `husk-test-<what>-<pid>`, its loopback up.
    fn add(what: &str) -> Self {
        let name = format!("husk-test-{what}-{}", std::process::id());
        // One left by an earlier run of this process id.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let added = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(added.is_ok_and(|s| s.success()), "ip netns add {name}");
        let up = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "lo up in {name}");
        Self { name }
    }

    /// Its path.
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The names of its veth links.
    fn veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", "type", "veth"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().to_string())
            .collect()
    }

    /// `GET /` from `127.0.0.1:port` inside the namespace (on a thread
    /// that enters it): the response, or why there was none.
    fn http_get(&self, port: u16) -> Result<String, String> {
        let netns = self.path();
        std::thread::spawn(move || -> Result<String, String> {
            let file = std::fs::File::open(&netns).map_err(|e| format!("{netns:?}: {e}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {netns:?}: {e}"))?;
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut stream =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(10))
                    .map_err(|e| format!("connect {address}: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .map_err(|e| format!("send: {e}"))?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .map_err(|e| format!("receive: {e}"))?;
            Ok(response)
        })
        .join()
        .expect("the HTTP thread")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Docker {
    /// Writes daemon.json (husk registered by path, with its configuration
    /// as a runtime argument), starts dockerd without networking of its own
    /// and loads the busybox image.
    fn start() -> Self {
        Self::start_in(None, &Engine::Debian)
    }

    /// [`Docker::start`]; in `netns`, with Docker's default bridge network
    /// (its iptables rules left out: the userland proxy publishes ports);
    /// `engine` says which dockerd, and how it reaches husk.
    fn start_in(netns: Option<&TestNetns>, engine: &Engine) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("husk-docker.")
            .tempdir_in("/run")
            .expect("temp dir under /run");
        let d = dir.path();
        std::fs::create_dir(d.join("home")).unwrap();
        let husk_config = d.join("husk.toml");
        std::fs::write(
            &husk_config,
            format!(
                "kernel = {:?}\ninitramfs = {:?}\nstate_dir = {:?}\n",
                kernel(),
                initramfs(),
                d.join("husk")
            ),
        )
        .unwrap();
        let (dockerd, daemon_json) = match engine {
            Engine::Debian => (
                PathBuf::from(DOCKERD),
                serde_json::json!({
                    // The default is under /etc/docker, read-only in the test host.
                    "deprecated-key-path": d.join("key.json"),
                    "runtimes": { RUNTIME: {
                        "path": husk_bin(),
                        "runtimeArgs": ["--config", husk_config],
                    }},
                }),
            ),
            Engine::WithShim { containerd } => (
                dockerd_26(),
                serde_json::json!({ "containerd": containerd }),
            ),
        };
        std::fs::write(d.join("daemon.json"), daemon_json.to_string()).unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`, which hides the cgroup mounts.
        let mut daemon = match netns {
            Some(netns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", netns.path().display()))
                    .arg(&dockerd);
                c
            }
            None => Command::new(&dockerd),
        };
        let networking: &[&str] = match netns {
            Some(_) => &["--iptables=false", "--ip-masq=false", "--ip-forward=false"],
            None => &[
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--bridge=none",
            ],
        };
        let daemon = daemon
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(networking)
            .env("HOME", d.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd (apt-get install docker.io)");
        let docker = Self {
            dir,
            daemon,
            calls: std::cell::Cell::new(0),
        };
        let up = wait_until(Duration::from_secs(120), || {
            docker
                .command(&["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "dockerd did not come up:\n{}", docker.log());
        let archive = busybox_image_archive(docker.dir.path(), IMAGE).expect("image archive");
        let loaded = docker.ok(&["load", "--input", archive.to_str().unwrap()]);
        assert!(loaded.contains(IMAGE), "docker load: {loaded}");
        docker
    }

    /// dockerd's log.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The root dockerd's runc shim passes husk (`--root`).
    fn husk_root(&self) -> PathBuf {
        self.dir.path().join("exec/runtime-runc/moby")
    }

    /// `docker -H … ARGS` with its own HOME (the client writes config there).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("DOCKER_CONFIG", self.dir.path().join("home/.docker"));
        c
    }

    /// The client's command line for a shell (`script -c`).
    fn shell_line(&self, args: &[&str]) -> String {
        let mut line = format!(
            "HOME={0}/home DOCKER_CONFIG={0}/home/.docker {DOCKER} -H unix://{0}/docker.sock",
            self.dir.path().display()
        );
        for a in args {
            line.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        }
        line
    }

    /// Runs `command` with `stdin` written to it and closed, up to
    /// [`CALL_TIMEOUT`].
    fn run_command(&self, mut command: Command, what: &str, stdin: Option<&[u8]>) -> Output {
        output_within(&mut command, stdin, CALL_TIMEOUT, || {
            format!("{what}\n--- dockerd\n{}", self.log())
        })
    }

    /// `docker ARGS`, no stdin.
    fn run(&self, args: &[&str]) -> Output {
        self.run_command(self.command(args), &format!("docker {args:?}"), None)
    }

    /// [`Docker::run`], which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "docker {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh `--cidfile` path.
    fn cidfile(&self) -> PathBuf {
        let n = self.calls.get();
        self.calls.set(n + 1);
        self.dir.path().join(format!("cid-{n}"))
    }

    /// `docker run --runtime husk --network none FLAGS IMAGE ARGS`.
    fn run_args<'a>(flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        run_args_with(RUNTIME, flags, args)
    }

    /// Nothing of the containers `ids` is left once docker has cleaned up.
    fn check_nothing_left(&self, ids: &[String]) -> Result<(), String> {
        let left = || -> Vec<u32> { ids.iter().flat_map(|id| husk_processes_with(id)).collect() };
        let gone = wait_until(CLEANUP_TIMEOUT, || left().is_empty());
        check(gone, || {
            format!(
                "husk processes left: {:?}",
                left()
                    .iter()
                    .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default())
                    .collect::<Vec<_>>()
            )
        })?;
        let entries = || -> Vec<PathBuf> {
            std::fs::read_dir(self.husk_root())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let empty = wait_until(CLEANUP_TIMEOUT, || entries().is_empty());
        check(empty, || format!("left under husk's root: {:?}", entries()))?;
        let ps = self.run(&["ps", "--all", "--quiet"]);
        check(ps.status.success() && ps.stdout.is_empty(), || {
            format!("docker still has containers: {}", describe(&ps))
        })
    }
}

impl Docker {
    /// Runs `cases`; after each, nothing of its containers may be left
    /// ([`Docker::check_nothing_left`] and `also_clean`). Returns the
    /// failures, each named.
    fn run_cases(
        &self,
        what: &str,
        cases: &[(&str, Case)],
        also_clean: impl Fn() -> Result<(), String>,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for (name, case) in cases {
            let started = Instant::now();
            let result = case(self)
                .and_then(|ids| self.check_nothing_left(&ids))
                .and_then(|()| also_clean());
            eprintln!(
                "{what} case {name:?}: {:?} in {:?}",
                result.is_ok(),
                started.elapsed()
            );
            if let Err(e) = result {
                failures.push(format!("{name}: {e}"));
                // Leave nothing to the next case.
                let ps = self.run(&["ps", "--all", "--quiet"]);
                for id in stdout(&ps).split_whitespace() {
                    let _ = self.run(&["rm", "--force", id]);
                }
            }
        }
        failures
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ps = self.run(&["ps", "--all", "--quiet"]);
            for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
                let _ = self.run(&["rm", "--force", id]);
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !wait_until(Duration::from_secs(60), || {
            self.daemon.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        // overlay2 mounts if dockerd died half way.
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(self.dir.path().join("data"))
            .stderr(Stdio::null())
            .status();
    }
}

/// The id docker wrote to a `--cidfile`.
fn read_cid(path: &Path) -> Result<String, String> {
    let id = std::fs::read_to_string(path)
        .map_err(|e| format!("no container id in {path:?}: {e}"))?
        .trim()
        .to_string();
    check(id.len() == 64, || format!("not a container id: {id:?}"))?;
    Ok(id)
}

/// Output lines without a terminal's carriage returns.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

/// One case: returns the ids of the containers it ran.
type Case = fn(&Docker) -> Result<Vec<String>, String>;

fn foreground_exit_code_and_guest_kernel(d: &Docker) -> Result<Vec<String>, String> {
    let cid = d.cidfile();
    let out = d.run(&Docker::run_args(
        &["--rm", "--cidfile", cid.to_str().unwrap()],
        &["sh", "-c", "uname -r; echo err >&2; exit 3"],
    ));
    let id = read_cid(&cid)?;
    check(out.status.code() == Some(3), || {
        format!("exit: {}", describe(&out))
    })?;
    let guest = stdout(&out).trim().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    check(guest.starts_with("6.12.") && guest != host.trim(), || {
        format!("not the guest's kernel: {}", describe(&out))
    })?;
    check(String::from_utf8_lossy(&out.stderr).contains("err"), || {
        format!("stderr lost: {}", describe(&out))
    })?;
    Ok(vec![id])
}

fn stdin_reaches_the_process(d: &Docker) -> Result<Vec<String>, String> {
    let cid = d.cidfile();
    let args = Docker::run_args(
        &["--rm", "-i", "--cidfile", cid.to_str().unwrap()],
        &["sh", "-c", "read x; echo got:$x; cat; echo eof"],
    );
    let out = d.run_command(d.command(&args), "docker run -i", Some(b"hello\nmore\n"));
    let id = read_cid(&cid)?;
    check(out.status.success(), || {
        format!("docker run -i: {}", describe(&out))
    })?;
    check(stdout(&out) == "got:hello\nmore\neof\n", || {
        format!("stdin, or its end, did not arrive: {}", describe(&out))
    })?;
    Ok(vec![id])
}

fn a_terminal(d: &Docker) -> Result<Vec<String>, String> {
    let cid = d.cidfile();
    let args = Docker::run_args(
        &["--rm", "-t", "--cidfile", cid.to_str().unwrap()],
        &["sh", "-c", "tty; echo in-tty; exit 5"],
    );
    // script(1) gives the client a terminal; -e passes the exit status on.
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c"])
        .arg(d.shell_line(&args))
        .arg("/dev/null");
    let out = d.run_command(script, "script docker run -t", None);
    let id = read_cid(&cid)?;
    check(out.status.code() == Some(5), || {
        format!("docker run -t: {}", describe(&out))
    })?;
    let text = stdout(&out);
    let got = lines(&text);
    check(
        got.len() == 2 && got[0].starts_with("/dev/pts/") && got[1] == "in-tty",
        || format!("not a terminal: {}", describe(&out)),
    )?;
    Ok(vec![id])
}

fn detached_logs_exec_stop_kill_rm(d: &Docker) -> Result<Vec<String>, String> {
    let id = d
        .ok(&Docker::run_args(
            &["-d"],
            &[
                "sh",
                "-c",
                "trap 'echo got-term; exit 0' TERM; echo started; sleep 600 & wait",
            ],
        ))
        .trim()
        .to_string();
    let mut logs = String::new();
    let started = wait_until(Duration::from_secs(120), || {
        logs = d.ok(&["logs", &id]);
        logs.contains("started")
    });
    check(started, || format!("docker logs: {logs:?}"))?;
    let state = d.husk_root().join(&id).join("state.json");
    check(state.exists(), || format!("{state:?} is not there"))?;

    let out = d.run(&["exec", &id, "sh", "-c", "echo from-exec; exit 4"]);
    check(out.status.code() == Some(4), || {
        format!("docker exec: {}", describe(&out))
    })?;
    check(stdout(&out) == "from-exec\n", || {
        format!("docker exec output: {}", describe(&out))
    })?;

    let out = d.run(&["exec", "-t", &id, "tty"]);
    let text = stdout(&out);
    let got = lines(&text);
    check(
        out.status.success() && got.len() == 1 && got[0].starts_with("/dev/pts/"),
        || format!("docker exec -t: {}", describe(&out)),
    )?;

    // stop: SIGTERM reaches the container's shell, which exits 0.
    d.ok(&["stop", "--time", "120", &id]);
    let inspect = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &id,
    ]);
    check(inspect.trim() == "exited 0", || {
        format!("after stop: {inspect}")
    })?;
    let logs = d.ok(&["logs", &id]);
    check(lines(&logs) == ["started", "got-term"], || {
        format!("docker logs: {logs:?}")
    })?;
    d.ok(&["rm", &id]);

    // kill: SIGKILL, status 137.
    let killed = d
        .ok(&Docker::run_args(&["-d"], &["sleep", "600"]))
        .trim()
        .to_string();
    d.ok(&["kill", &killed]);
    let status = d.ok(&["wait", &killed]);
    check(status.trim() == "137", || {
        format!("docker wait after kill: {status}")
    })?;
    d.ok(&["rm", &killed]);
    Ok(vec![id, killed])
}

/// A process that exceeds its `--memory` is killed by the guest's OOM
/// killer: the container ends with 137 and `State.OOMKilled` is true.
/// Docker 20.10's runc shim learns of it from the host cgroup Docker names
/// (`docker/ID`), where husk's monitor runs and raises the guest's OOM;
/// that cgroup is gone after `docker rm`.
fn memory_limit_oom(d: &Docker) -> Result<Vec<String>, String> {
    memory_limit_oom_with(d, RUNTIME)
}

/// [`memory_limit_oom`] with `runtime`.
fn memory_limit_oom_with(d: &Docker, runtime: &str) -> Result<Vec<String>, String> {
    let cid = d.cidfile();
    let out = d.run(&run_args_with(
        runtime,
        &[
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            "--cidfile",
            cid.to_str().unwrap(),
        ],
        // One 96 MiB buffer filled by a single read: no code runs while it
        // grows (see the CLI's OOM test).
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    ));
    let id = read_cid(&cid)?;
    check(out.status.code() == Some(137), || {
        format!("not killed: {}", describe(&out))
    })?;
    let state = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}",
        &id,
    ]);
    check(state.trim() == "exited 137 true", || {
        format!("docker inspect: {state}")
    })?;
    d.ok(&["rm", &id]);
    let left = host_cgroup::named(&id);
    check(left.is_empty(), || format!("host cgroups left: {left:?}"))?;
    Ok(vec![id])
}

/// `docker run -p` with the default bridge: the page the microVM serves
/// (its `ip addr` of eth0) comes through the published port, and shows the
/// address Docker gave the container.
fn bridge_network_and_published_port(d: &Docker, netns: &TestNetns) -> Result<Vec<String>, String> {
    let publish = format!("{PUBLISHED_PORT}:8080");
    let id = d
        .ok(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "-p",
            &publish,
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && ip -4 addr show dev eth0 > /www/index.html && \
             exec httpd -f -p 8080 -h /www",
        ])
        .trim()
        .to_string();
    let ip = d
        .ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", &id])
        .trim()
        .to_string();
    check(ip.parse::<std::net::Ipv4Addr>().is_ok(), || {
        format!("no bridge address in docker inspect: {ip:?}")
    })?;
    let mut last = String::new();
    let served = wait_until(Duration::from_secs(120), || {
        last = netns
            .http_get(PUBLISHED_PORT)
            .unwrap_or_else(|e| format!("(no response: {e})"));
        last.starts_with("HTTP/1.") && last.contains(" 200 ")
    });
    check(served, || {
        format!(
            "GET 127.0.0.1:{PUBLISHED_PORT} in {}: {last}\n--- docker logs\n{}",
            netns.name,
            describe(&d.run(&["logs", &id]))
        )
    })?;
    check(last.contains(&format!("inet {ip}/")), || {
        format!("the guest's eth0 has not Docker's address {ip}: {last}")
    })?;
    d.ok(&["rm", "--force", &id]);
    Ok(vec![id])
}

#[test]
fn docker_bridge_network_publishes_a_port_of_a_microvm() {
    let netns = TestNetns::add("docker");
    let docker = Docker::start_in(Some(&netns), &Engine::Debian);
    let started = Instant::now();
    let result = bridge_network_and_published_port(&docker, &netns)
        .and_then(|ids| docker.check_nothing_left(&ids))
        .and_then(|()| {
            // The container's veth (and the redirects on its end) went
            // with the namespace husk's monitor made.
            let gone = wait_until(CLEANUP_TIMEOUT, || netns.veths().is_empty());
            check(gone, || format!("veths left: {:?}", netns.veths()))
        });
    eprintln!(
        "docker bridge case: {:?} in {:?}",
        result.is_ok(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!(
            "bridge network and published port: {e}\n--- dockerd log (tail)\n{}",
            tail(&docker.log(), 6000)
        );
    }
}

#[test]
fn docker_with_debians_engine_runs_containers_in_microvms_through_the_husk_cli() {
    let docker = Docker::start();
    let cases: &[(&str, Case)] = &[
        (
            "foreground exit code and guest kernel",
            foreground_exit_code_and_guest_kernel,
        ),
        ("stdin reaches the process", stdin_reaches_the_process),
        ("a terminal", a_terminal),
        (
            "detached: logs, exec, stop, kill, rm",
            detached_logs_exec_stop_kill_rm,
        ),
        ("a process over its memory limit", memory_limit_oom),
    ];
    let failures = docker.run_cases("docker", cases, || Ok(()));
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\n--- dockerd log (tail)\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&docker.log(), 6000)
    );
    // dockerd and its containerd end with the suite.
    let dir = docker.dir.path().to_path_buf();
    drop(docker);
    let needle = dir.to_string_lossy().into_owned();
    let ended = wait_until(Duration::from_secs(30), || {
        husk_processes_with(&needle).is_empty()
    });
    assert!(
        ended,
        "dockerd or its containerd still runs: {:?}",
        husk_processes_with(&needle)
    );
}

/// The last `n` bytes of `text` (at a char boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The shim's runtime name, which Docker 23 and later take as it is.
const SHIM_RUNTIME: &str = husk_tests::containerd::RUNTIME;

/// `docker run --runtime io.containerd.husk.v2 --network none FLAGS IMAGE ARGS`.
fn shim_run_args<'a>(flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    run_args_with(SHIM_RUNTIME, flags, args)
}

/// `docker run --runtime RUNTIME --network none FLAGS IMAGE ARGS`.
fn run_args_with<'a>(runtime: &'a str, flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run", "--runtime", runtime, "--network", "none"];
    all.extend_from_slice(flags);
    all.push(IMAGE);
    all.extend_from_slice(args);
    all
}

/// Through the shim: the exit code, and the guest's kernel.
fn shim_foreground_exit_code_and_guest_kernel(d: &Docker) -> Result<Vec<String>, String> {
    let cid = d.cidfile();
    let out = d.run(&shim_run_args(
        &["--cidfile", cid.to_str().unwrap()],
        &["sh", "-c", "uname -r; exit 3"],
    ));
    let id = read_cid(&cid)?;
    check(out.status.code() == Some(3), || {
        format!("exit code: {}", describe(&out))
    })?;
    let guest = stdout(&out).trim().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    check(guest.starts_with("6.12.") && guest != host.trim(), || {
        format!("not the guest's kernel: {guest:?} (host {host:?})")
    })?;
    d.ok(&["rm", &id]);
    Ok(vec![id])
}

/// Through the shim: a detached container, `exec` into its microVM, and
/// `kill`: 137.
fn shim_detached_exec_and_kill(d: &Docker) -> Result<Vec<String>, String> {
    let id = d
        .ok(&shim_run_args(&["--detach"], &["sleep", "600"]))
        .trim()
        .to_string();
    let exec = d.ok(&["exec", &id, "sh", "-c", "echo in $(uname -r)"]);
    check(exec.trim().starts_with("in 6.12."), || {
        format!("docker exec: {exec:?}")
    })?;
    d.ok(&["kill", &id]);
    let status = d.ok(&["wait", &id]);
    check(status.trim() == "137", || format!("docker wait: {status}"))?;
    d.ok(&["rm", &id]);
    Ok(vec![id])
}

/// Through the shim: a process over `--memory` ends with 137 and
/// `State.OOMKilled` (the shim publishes the guest's OOM).
fn shim_memory_limit_oom(d: &Docker) -> Result<Vec<String>, String> {
    memory_limit_oom_with(d, SHIM_RUNTIME)
}

/// Docker 23 and later take `--runtime io.containerd.husk.v2` straight to
/// the husk shim, with nothing in daemon.json: Docker 26 (Debian 13's
/// engine) on the suite's containerd, one microVM per container, and
/// after each case no shim, VMM, mount or pod directory left.
#[test]
fn docker_26_runs_containers_in_microvms_through_the_husk_shim() {
    let containerd = husk_tests::containerd::Containerd::start(None);
    let docker = Docker::start_in(
        None,
        &Engine::WithShim {
            containerd: containerd.address.clone(),
        },
    );
    let cases: &[(&str, Case)] = &[
        (
            "foreground exit code and guest kernel",
            shim_foreground_exit_code_and_guest_kernel,
        ),
        ("detached: exec, kill, rm", shim_detached_exec_and_kill),
        ("a process over its memory limit", shim_memory_limit_oom),
    ];
    let failures = docker.run_cases("docker 26", cases, || {
        let left = containerd.pod_leftovers("moby", CLEANUP_TIMEOUT);
        check(left.is_empty(), || format!("left: {left:?}"))
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\n--- dockerd log (tail)\n{}\n--- containerd log (tail)\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&docker.log(), 6000),
        tail(&containerd.log(), 6000)
    );
}
