//! Pod ↔ host networking through the CLI, husk against runc on the same
//! bundle and the same veth setup, interleaved:
//!
//! - TCP throughput with iperf3 (Debian's `/usr/bin/iperf3`, copied into
//!   the bundle's rootfs with its libraries), host → pod and pod → host
//!   (`-R`), from iperf3's own JSON report on the host side;
//! - request/response latency: the bench connects to a busybox
//!   `nc -ll -e cat` echo server in the container and times round trips of
//!   small messages over one TCP connection with the host's monotonic clock.
//!
//! Each round makes its own network namespace with a veth pair (`eth0` in
//! it, the other end in the root namespace of the host the runtimes run
//! on, both with addresses of a private /24 nothing else uses), runs the
//! container in it with `run --detach`, measures, stops the container and
//! removes the namespace and the link, also when a step fails. No traffic
//! leaves that veth pair.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Args;

use crate::machine::Machine;
use crate::procs::run_cli;
use crate::stats::Summary;
use crate::workloads::boot::show;
use crate::workloads::containers::{make_bundle, Place, Tools};
use crate::workloads::in_container::{
    copy_with_libs, edit_spec, figure, inside_command, link_applets, no_budget, not_measured,
    run_inside, runtime, shell_line, CommonArgs, Detached, InsideCommon, Naming, Outer, Schedule,
};
use crate::workloads::{interleave, Budget, Section, Side, Unit};

/// Arguments of `husk-bench network`.
#[derive(Args)]
pub struct NetworkArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds of each iperf3 test [default: 10; smoke: 2].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Round trips of the request/response test per round [default: 2000; smoke: 100].
    #[arg(long)]
    pub round_trips: Option<usize>,
}

/// Arguments of `husk-bench network-inside`.
#[derive(Args)]
pub struct NetworkInsideArgs {
    #[command(flatten)]
    common: InsideCommon,
    #[arg(long)]
    seconds: u64,
    #[arg(long)]
    round_trips: usize,
}

/// How much traffic a round makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetPlan {
    /// The rounds.
    pub sched: Schedule,
    /// Seconds of each iperf3 test.
    pub seconds: u64,
    /// Round trips of the latency test.
    pub round_trips: usize,
}

/// The iperf3 both the host side and the container run (Debian's iperf3).
const IPERF3: &str = "/usr/bin/iperf3";
/// iperf3's port in the container.
const IPERF_PORT: u16 = 5201;
/// The echo server's port in the container.
const ECHO_PORT: u16 = 5202;
/// Bytes of one request (and of its echoed reply).
const MESSAGE: usize = 64;
/// Round trips not recorded at the start of each connection.
const RR_WARMUP: usize = 10;

/// `husk-bench network`.
pub fn run(args: NetworkArgs) -> anyhow::Result<ExitCode> {
    let outer = Outer::new(&args.common)?;
    let smoke = args.common.smoke;
    let plan = NetPlan {
        sched: outer.sched,
        seconds: args.seconds.unwrap_or(if smoke { 2 } else { 10 }),
        round_trips: args.round_trips.unwrap_or(if smoke { 100 } else { 2000 }),
    };
    let inside = inside_command(
        "network-inside",
        plan.sched,
        &outer.tools,
        vec![
            "--seconds".into(),
            plan.seconds.to_string().into(),
            "--round-trips".into(),
            plan.round_trips.to_string().into(),
        ],
    );
    let rounds = 2 * (plan.sched.warmup + plan.sched.runs) as u64;
    let host_timeout = 600 + rounds * (plan.sched.timeout.as_secs() / 2 + 2 * plan.seconds + 60);
    outer.run(
        Naming {
            name: "network",
            report_title: "husk network benchmark: pod ↔ host TCP against runc",
            section_title: "Pod network",
        },
        inside,
        host_timeout,
        |tools, work, machine, place| vec![measure(tools, work, machine, place, plan)],
    )
}

/// `husk-bench network-inside`.
pub fn run_inside_cmd(args: NetworkInsideArgs) -> anyhow::Result<ExitCode> {
    let plan = NetPlan {
        sched: args.common.schedule(),
        seconds: args.seconds,
        round_trips: args.round_trips,
    };
    let tools = args.common.tools();
    run_inside("network", |work, machine, place| {
        vec![measure(&tools, work, machine, place, plan)]
    })
}

/// A network namespace with a veth pair, removed with its host link when
/// dropped (also half made).
struct PodNet {
    name: String,
    host_link: String,
    /// The pod end's address.
    pod_addr: String,
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The `ip` commands that make round `n`'s namespace `name`: a veth pair
/// whose `eth0` end is in it with 10.213.N.2/24 and whose `host` end is
/// here with 10.213.N.1/24, both up, loopback up too.
fn setup_commands(name: &str, host: &str, n: usize) -> Vec<Vec<String>> {
    let subnet = format!("10.213.{}", n % 250 + 1);
    let v = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    vec![
        v(&format!("netns add {name}")),
        v(&format!("-n {name} link set lo up")),
        v(&format!(
            "link add {host} type veth peer name eth0 netns {name}"
        )),
        v(&format!("addr add {subnet}.1/24 dev {host}")),
        v(&format!("link set {host} up")),
        v(&format!("-n {name} addr add {subnet}.2/24 dev eth0")),
        v(&format!("-n {name} link set eth0 up")),
    ]
}

impl PodNet {
    fn new(n: usize) -> Result<Self, String> {
        let subnet = format!("10.213.{}.0/24", n % 250 + 1);
        let used = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "to", &subnet])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !used.stdout.is_empty() {
            // Not ours: nothing is made, and nothing of it removed.
            return Err(format!(
                "{subnet} is already in use here: {}",
                String::from_utf8_lossy(&used.stdout).trim()
            ));
        }
        let pid = std::process::id();
        let me = Self {
            name: format!("husk-bench-{pid}-{n}"),
            host_link: format!("hbn{}-{n}", pid % 100_000),
            pod_addr: format!("10.213.{}.2", n % 250 + 1),
        };
        for cmd in setup_commands(&me.name, &me.host_link, n) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            ip(&args)?;
        }
        Ok(me)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("husk-bench: {e}");
        }
    }
}

/// What one round measured.
#[derive(Clone, Copy, Debug)]
struct NetRun {
    to_pod_gbps: f64,
    from_pod_gbps: f64,
    rtt_median_us: f64,
}

/// The receiver's throughput in Gbit/s from iperf3's `-J` report, or
/// the error iperf3 reported.
pub fn parse_iperf3(json: &str) -> Result<f64, String> {
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| format!("iperf3's report is not JSON ({e}): {}", first_chars(json)))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3's report has no end.sum_received.bits_per_second".to_string())
}

fn first_chars(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The client command line: `iperf3 -c ADDR -p PORT -t S -J [-R]`.
fn iperf3_client(addr: &str, seconds: u64, reverse: bool) -> Command {
    let mut c = Command::new(IPERF3);
    c.args(["-c", addr, "-p", &IPERF_PORT.to_string()])
        .args(["-t", &seconds.to_string(), "-J"]);
    if reverse {
        c.arg("-R");
    }
    c
}

/// The container's command: iperf3's server in the background, the
/// echo server in front.
fn server_args() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{IPERF3} -s -p {IPERF_PORT} & exec nc -ll -p {ECHO_PORT} -e /bin/cat"),
    ]
}

/// One iperf3 test, retried while the server is not listening yet.
fn throughput(addr: &str, plan: NetPlan, ready_by: Instant, reverse: bool) -> Result<f64, String> {
    loop {
        let mut c = iperf3_client(addr, plan.seconds, reverse);
        let outcome = run_cli(&mut c, plan.sched.timeout, None)
            .and_then(|ran| parse_iperf3(json_part(&ran.output)));
        match outcome {
            Ok(gbps) => return Ok(gbps),
            Err(e) if e.contains("unable to connect") && Instant::now() < ready_by => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The JSON object in a command's output (from the first `{` on).
fn json_part(output: &str) -> &str {
    output.find('{').map_or(output, |i| &output[i..])
}

/// Connects to the echo server, retrying until `ready_by`; `n` timed
/// round trips of [`MESSAGE`] bytes after [`RR_WARMUP`] untimed ones.
fn round_trips(addr: SocketAddr, n: usize, ready_by: Instant) -> Result<Vec<f64>, String> {
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= ready_by => {
                return Err(format!("cannot connect to the echo server {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let io = |e: std::io::Error| format!("echo server {addr}: {e}");
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let request = [0x5au8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(n);
    for i in 0..RR_WARMUP + n {
        let began = Instant::now();
        stream.write_all(&request).map_err(io)?;
        stream.read_exact(&mut reply).map_err(io)?;
        let took = began.elapsed();
        if reply != request {
            return Err(format!("echo server {addr} answered other bytes"));
        }
        if i >= RR_WARMUP {
            samples.push(took.as_secs_f64() * 1e6);
        }
    }
    Ok(samples)
}

/// One round of one side: namespace, container, the three tests, clean-up.
fn net_round(
    tools: &Tools,
    side: Side,
    state: &Path,
    bundle: &Path,
    n: usize,
    plan: NetPlan,
) -> Result<NetRun, String> {
    let net = PodNet::new(n)?;
    let path = net.path();
    edit_spec(bundle, |s| {
        if let Some(ns) = s["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
            ns.push(serde_json::json!({"type": "network", "path": path}));
        }
    })?;
    let id = format!("hb-net-{}-{n}", side.name());
    // Dropped before `net`: the container goes first, then its namespace.
    let container = Detached::start(tools, side, state, bundle, id, plan.sched.timeout)?;
    let ready_by = Instant::now() + plan.sched.timeout;
    let to_pod = throughput(&net.pod_addr, plan, ready_by, false)?;
    let from_pod = throughput(&net.pod_addr, plan, ready_by, true)?;
    let addr: SocketAddr = format!("{}:{ECHO_PORT}", net.pod_addr)
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    let rtts = round_trips(addr, plan.round_trips, ready_by)?;
    drop(container);
    drop(net);
    let rtt = Summary::of(&rtts).ok_or("no round trips")?;
    Ok(NetRun {
        to_pod_gbps: to_pod,
        from_pod_gbps: from_pod,
        rtt_median_us: rtt.median,
    })
}

/// The bundle: busybox, iperf3 with its libraries, the two servers.
fn net_bundle(tools: &Tools, dir: &Path) -> Result<(), String> {
    let args = server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    make_bundle(&tools.runc, dir, &args)?;
    link_applets(&dir.join("rootfs"), &["nc"])?;
    copy_with_libs(Path::new(IPERF3), &dir.join("rootfs"))
        .map_err(|e| format!("{e} (apt-get install iperf3)"))?;
    Ok(())
}

/// husk vs runc: TCP throughput both ways and round-trip latency.
pub fn measure(
    tools: &Tools,
    work: &Path,
    machine: &Machine,
    place: &Place,
    plan: NetPlan,
) -> Section {
    let title = format!("Pod network: TCP pod ↔ host, husk vs runc — {}", place.name);
    let bundle = work.join("bundle-net");
    let state = work.join("state");
    if let Err(why) = net_bundle(tools, &bundle) {
        return not_measured(title, machine, plan.sched, why);
    }
    let mut n = 0usize;
    let runs = interleave(
        "network",
        plan.sched.warmup,
        plan.sched.runs,
        |side, _| {
            n += 1;
            net_round(tools, side, &state, &bundle, n, plan)
        },
        |r| {
            format!(
                "host→pod {:.2} Gbit/s, pod→host {:.2} Gbit/s, round trip {:.0} µs",
                r.to_pod_gbps, r.from_pod_gbps, r.rtt_median_us
            )
        },
    );
    let pick = |v: &[NetRun], f: fn(&NetRun) -> f64| v.iter().map(f).collect::<Vec<_>>();
    let tput_budget = if place.emulated {
        Budget::NotApplicable("emulated".into())
    } else {
        Budget::RatioAtLeast(0.7)
    };
    let figures = vec![
        figure(
            "net.tcp.to_pod",
            "TCP host → pod (iperf3, receiver's figure)",
            place,
            Unit::Gbps,
            pick(&runs.husk, |r| r.to_pod_gbps),
            pick(&runs.peer, |r| r.to_pod_gbps),
            tput_budget.clone(),
        ),
        figure(
            "net.tcp.from_pod",
            "TCP pod → host (iperf3 -R, receiver's figure)",
            place,
            Unit::Gbps,
            pick(&runs.husk, |r| r.from_pod_gbps),
            pick(&runs.peer, |r| r.from_pod_gbps),
            tput_budget,
        ),
        figure(
            "net.rr.rtt",
            &format!("TCP request/response: median round trip of {MESSAGE} B"),
            place,
            Unit::Micros,
            pick(&runs.husk, |r| r.rtt_median_us),
            pick(&runs.peer, |r| r.rtt_median_us),
            no_budget(place),
        ),
    ];
    let mut notes = runs.failures.clone();
    notes.push(format!(
        "Each round makes a network namespace with a veth pair: `eth0` inside (10.213.N.2/24), \
         the other end in the root namespace of the host the runtimes run on (10.213.N.1/24); \
         the bundle names the namespace by path, so runc runs the container in it and husk joins \
         `eth0` to its VM's tap with tc redirects. The container runs `iperf3 -s` and a busybox \
         `nc -ll -e cat` echo server; the host side runs `iperf3 -c` for {} s each way (iperf3's \
         receiver figure, from its JSON report) and {} timed round trips of {MESSAGE} bytes over \
         one TCP connection (TCP_NODELAY, after {RR_WARMUP} untimed ones), timed with the host's \
         monotonic clock; a round's figure is their median. The namespace and link are removed \
         after each round.",
        plan.seconds, plan.round_trips
    ));
    notes.push(
        "Throughput: higher is better, husk/runc below 1 means husk is slower; round trips: \
         lower is better. Under runc the path is veth only; under husk it is veth → tc mirred → tap → virtio-net \
         → the guest's TCP stack. The budget is husk/runc ≥ 0.7 for throughput (issue 6)."
            .into(),
    );
    if place.emulated {
        notes.push(
            "Emulated test host: every packet under husk crosses a nested guest on a CPU ~12–17× \
             slower than the host's, and iperf3 on both ends shares the test host's one CPU; the \
             throughput ratio is decided by emulation (n/a (emulated)), recorded all the same."
                .into(),
        );
    }
    let mut husk_client = iperf3_client("POD", plan.seconds, false);
    husk_client.arg("[-R]");
    Section {
        title,
        machine: machine.clone(),
        warmup: plan.sched.warmup,
        runs: plan.sched.runs,
        figures,
        notes,
        commands: vec![
            (
                "husk".into(),
                show(&{
                    let mut c = runtime(tools, Side::Husk, &state);
                    c.args(["run", "--detach", "--bundle"])
                        .arg(&bundle)
                        .arg("ID");
                    c
                }),
            ),
            (
                "runc".into(),
                show(&{
                    let mut c = runtime(tools, Side::Peer, &state);
                    c.args(["run", "--detach", "--bundle"])
                        .arg(&bundle)
                        .arg("ID");
                    c
                }),
            ),
            ("container".into(), shell_line(&server_args())),
            ("host side".into(), show(&husk_client)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_reports_are_read_or_their_error_named() {
        let ok = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":16028754863.1},
            "sum_received":{"bytes":1998061568,"bits_per_second":15968667594.4,"sender":true}}}"#;
        assert!((parse_iperf3(ok).unwrap() - 15.9686675944).abs() < 1e-9);
        let refused = r#"{"start":{"connected":[]},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        assert_eq!(
            parse_iperf3(refused).unwrap_err(),
            "iperf3: unable to connect to server: Connection refused"
        );
        assert!(parse_iperf3(r#"{"end":{}}"#)
            .unwrap_err()
            .contains("sum_received"));
        assert!(parse_iperf3("iperf3: oops")
            .unwrap_err()
            .contains("not JSON"));
        assert_eq!(json_part("warning: x\n{\"a\":1}"), "{\"a\":1}");
    }

    #[test]
    fn throughput_figures_travel_and_are_judged_as_at_least() {
        use crate::machine::KvmKind;
        let place = Place {
            name: "here".into(),
            emulated: false,
        };
        let section = Section {
            title: "net".into(),
            machine: Machine {
                cores: 2,
                memory_mib: 1,
                kernel: "k".into(),
                cpu: "c".into(),
                kvm: KvmKind::Hardware,
            },
            warmup: 0,
            runs: 2,
            figures: vec![
                figure(
                    "a",
                    "to pod",
                    &place,
                    Unit::Gbps,
                    vec![8.0, 8.0],
                    vec![10.0, 10.0],
                    Budget::RatioAtLeast(0.7),
                ),
                figure(
                    "b",
                    "rtt",
                    &place,
                    Unit::Micros,
                    vec![50.0],
                    vec![20.0],
                    no_budget(&place),
                ),
                figure(
                    "c",
                    "io",
                    &place,
                    Unit::MiBps,
                    vec![1.0],
                    vec![2.0],
                    Budget::RatioAtLeast(0.9),
                ),
                figure(
                    "d",
                    "ops",
                    &place,
                    Unit::OpsPerSec,
                    vec![1.0],
                    vec![2.0],
                    no_budget(&place),
                ),
            ],
            notes: Vec::new(),
            commands: Vec::new(),
        };
        let text = crate::wire::encode(&section).join("\n");
        assert_eq!(crate::wire::decode(&text).unwrap(), section);
        let report = crate::report::Report {
            title: "t".into(),
            when: "w".into(),
            provenance: Vec::new(),
            sections: vec![section],
        };
        let md = crate::report::markdown(&report, "x.svg");
        assert!(
            md.contains("| 8.00 Gbit/s | 8.00 Gbit/s | runc | 10.0 Gbit/s | 10.0 Gbit/s | 0.80 | husk/peer ≥ 0.70 | yes |"),
            "{md}"
        );
        assert!(md.contains("| 50.0 µs |"), "{md}");
        assert!(md.contains("| 0.50 | husk/peer ≥ 0.90 | **no** |"), "{md}");
        assert!(md.contains("| 1.00 op/s |"), "{md}");
    }

    #[test]
    fn command_lines_and_namespace_setup() {
        assert_eq!(
            show(&iperf3_client("10.213.1.2", 10, true)),
            "/usr/bin/iperf3 -c 10.213.1.2 -p 5201 -t 10 -J -R"
        );
        assert_eq!(
            server_args()[2],
            "/usr/bin/iperf3 -s -p 5201 & exec nc -ll -p 5202 -e /bin/cat"
        );
        assert_eq!(
            shell_line(&["sh".into(), "-c".into(), "echo 'a' & b".into()]),
            r"sh -c 'echo '\''a'\'' & b'"
        );
        let cmds = setup_commands("ns1", "hbn1-3", 3);
        let joined: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "netns add ns1",
                "-n ns1 link set lo up",
                "link add hbn1-3 type veth peer name eth0 netns ns1",
                "addr add 10.213.4.1/24 dev hbn1-3",
                "link set hbn1-3 up",
                "-n ns1 addr add 10.213.4.2/24 dev eth0",
                "-n ns1 link set eth0 up",
            ]
        );
        let tools = Tools {
            husk: "husk".into(),
            runc: "runc".into(),
        };
        let cmd = inside_command(
            "network-inside",
            Schedule {
                warmup: 0,
                runs: 1,
                timeout: Duration::from_secs(9),
            },
            &tools,
            vec!["--seconds".into(), "2".into()],
        );
        let cmd: Vec<String> = cmd.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            cmd.join(" "),
            "network-inside --runs 1 --warmup 0 --timeout 9 --husk husk --runc runc --seconds 2"
        );
    }
}
