//! Pod networking: the network namespace CNI, Docker or `ip netns add`
//! prepared is what the guest sees, and its traffic goes through the
//! guest, through the `husk` CLI and through containerd's shim.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use husk_tests::bundle::{busybox_bundle, write_config};
use husk_tests::cli::Runtime;
use husk_tests::containerd::{Containerd, RUNTIME};
use husk_tests::image::busybox_image_archive;
use husk_tests::netns::{Bridge, Netns};
use husk_tests::{describe, husk_processes_with, stdout_of, wait_until};

/// What a container prints about its network: MAC, MTU, addresses,
/// routes, the permanent neighbour and DNS, in a form both runtimes print
/// alike (no interface indexes, routes sorted, no neighbour usage counts).
const SHOW_NETWORK: &str = "for i in $(ls /sys/class/net | sort); do \
       [ $i = lo ] && continue; \
       echo \"$i $(cat /sys/class/net/$i/address) mtu $(cat /sys/class/net/$i/mtu)\"; \
       ip addr show dev $i | awk '$1 == \"inet\" || ($1 == \"inet6\" && $2 !~ /^fe80/) {print \"  \" $1 \" \" $2}'; \
     done; \
     ip route | sort; ip -6 route | grep -v '^fe80\\|^multicast\\|^ff00\\|^local' | sort; \
     ip neigh show | grep PERMANENT | sed 's/ used [0-9/]* probes [0-9]*//'; \
     cat /etc/resolv.conf";

/// Sends one UDP datagram holding `payload` to `host` port `port` from
/// inside a busybox container (its nc has no UDP; a TFTP read request
/// carries the file name).
fn udp_send(payload: &str, host: &str, port: u16) -> String {
    format!("timeout 3 tftp -g -r {payload} -l /tmp/tftp.out {host} {port}; true")
}

fn b(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A busybox bundle running `args` in the network namespace `netns`, with
/// `/etc/resolv.conf` bound from a file naming 10.77.0.53, and a web root
/// `/www` holding `index.html` = `page`.
fn net_bundle(dir: &Path, netns: &Path, page: &str, args: &[&str]) -> PathBuf {
    let bundle = busybox_bundle(dir, args);
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.77.0.53\nsearch pods.test\n").unwrap();
    std::fs::create_dir_all(bundle.join("rootfs/www")).unwrap();
    std::fs::write(bundle.join("rootfs/www/index.html"), page).unwrap();
    write_config(&bundle, args, |s| {
        let ns = s["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        ns.push(serde_json::json!({"type": "network", "path": netns}));
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/etc/resolv.conf", "type": "bind",
            "source": resolv, "options": ["rbind", "ro"]
        }));
    });
    bundle
}

/// `runc run` of `bundle`, to the end.
fn runc_run(bundle: &Path, id: &str) -> Output {
    let root = tempfile::tempdir().unwrap();
    Command::new("runc")
        .arg("--root")
        .arg(root.path())
        .args(["run", "--bundle", b(bundle), id])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run runc")
}

/// GET /index.html from `addr` until it answers or `timeout` passes.
fn http_get(addr: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            Ok(reply) => return Ok(reply),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no HTTP answer from {addr} in {timeout:?}: {last}"))
}

/// The pod's namespace for the first cases: eth0 10.77.1.2/24 and
/// fd77:1::2/64, MTU 1400, default route via the host end 10.77.1.1, a
/// permanent neighbour.
fn pod_netns(tag: &str, outer: &str) -> Netns {
    let mut ns = Netns::new(tag);
    ns.veth("eth0", "10.77.1.2/24", outer, "10.77.1.1/24", 1400);
    husk_tests::netns::sh(
        "ip",
        &["addr", "add", "fd77:1::1/64", "dev", outer, "nodad"],
    );
    ns.ip(&["addr", "add", "fd77:1::2/64", "dev", "eth0", "nodad"]);
    ns.ip(&["route", "add", "default", "via", "10.77.1.1"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.77.1.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    ns
}

#[test]
fn the_guest_sees_the_pods_network_as_runc_does_and_carries_tcp_and_udp() {
    let outer = format!("hn1-{}", std::process::id());
    let ns = pod_netns("one", &outer);
    let dir = tempfile::tempdir().unwrap();
    let bundle = net_bundle(dir.path(), &ns.path(), "", &["sh", "-c", SHOW_NETWORK]);

    let runc = runc_run(&bundle, "net-runc");
    assert!(runc.status.success(), "runc: {}", describe(&runc));
    let runc_view = stdout_of(&runc);
    assert!(
        runc_view.contains("10.77.1.2/24") && runc_view.contains("mtu 1400"),
        "runc did not run in the pod's namespace: {runc_view}"
    );
    let rt = Runtime::new();
    let husk = rt.husk(&["run", "--bundle", b(&bundle), "net-husk"]);
    assert!(husk.status.success(), "husk: {}", describe(&husk));
    let husk_view = stdout_of(&husk);
    assert_eq!(
        husk_view, runc_view,
        "the guest's network differs from runc's"
    );
    rt.assert_clean();
    assert_eq!(ns.leftovers(), Vec::<String>::new());

    // Traffic: host → pod over TCP (an HTTP server in the guest), pod →
    // host over UDP, and the guest's kernel proves where it ran.
    let page = "hello from the pod";
    let dir = tempfile::tempdir().unwrap();
    let bundle = net_bundle(
        dir.path(),
        &ns.path(),
        page,
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "web"]);
    let got = http_get("10.77.1.2:8080", Duration::from_secs(60));
    let udp = UdpSocket::bind("10.77.1.1:7001").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sent = rt.husk(&[
        "exec",
        "web",
        "sh",
        "-c",
        &format!("uname -r; {}", udp_send("udp-from-pod", "10.77.1.1", 7001)),
    ]);
    let mut buf = [0u8; 512];
    let received = udp
        .recv_from(&mut buf)
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned());
    rt.husk(&["kill", "web", "KILL"]);
    wait_until(Duration::from_secs(30), || {
        rt.state("web")["status"] == "stopped"
    });
    rt.ok(&["delete", "--force", "web"]);
    let reply = got.unwrap();
    assert!(reply.contains(page), "HTTP reply: {reply}");
    assert!(sent.status.success(), "exec: {}", describe(&sent));
    assert_ne!(
        stdout_of(&sent).lines().next(),
        Some(husk_tests::netns::sh("uname", &["-r"]).trim()),
        "the exec ran on the host's kernel"
    );
    let datagram = received.expect("the pod's datagram");
    assert!(datagram.contains("udp-from-pod"), "{datagram:?}");
    rt.assert_clean();
    assert_eq!(ns.leftovers(), Vec::<String>::new());
}

#[test]
fn pods_reach_each_other_and_two_interfaces_keep_their_own_mtu() {
    let pid = std::process::id();
    let bridge = Bridge::new(&format!("hbr-{pid}"), "10.77.2.1/24");
    let mut a = Netns::new("pa");
    a.veth("eth0", "10.77.2.2/24", &format!("hpa-{pid}"), "", 1500);
    bridge.attach(&format!("hpa-{pid}"));
    let mut c = Netns::new("pc");
    c.veth("eth0", "10.77.2.3/24", &format!("hpc-{pid}"), "", 1500);
    bridge.attach(&format!("hpc-{pid}"));
    // The second pod also has a second interface with a smaller MTU.
    c.veth(
        "eth1",
        "10.77.3.2/24",
        &format!("hpd-{pid}"),
        "10.77.3.1/24",
        1280,
    );

    let rt = Runtime::new();
    let dir_a = tempfile::tempdir().unwrap();
    let page = "served by pod a";
    let web = net_bundle(
        dir_a.path(),
        &a.path(),
        page,
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    rt.ok(&["run", "--detach", "--bundle", b(&web), "pod-a"]);
    let dir_c = tempfile::tempdir().unwrap();
    let client = net_bundle(
        dir_c.path(),
        &c.path(),
        "",
        &[
            "sh",
            "-c",
            "cat /sys/class/net/eth0/mtu /sys/class/net/eth1/mtu; ip addr show dev eth1 | grep 'inet '; \
             for i in $(seq 1 60); do \
               printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.77.2.2 8080 && exit 0; sleep 1; \
             done; exit 1",
        ],
    );
    let out = rt.husk(&["run", "--bundle", b(&client), "pod-c"]);
    rt.husk(&["delete", "--force", "pod-a"]);
    assert!(out.status.success(), "pod c: {}", describe(&out));
    let text = stdout_of(&out);
    assert!(text.starts_with("1500\n1280\n"), "MTUs: {text}");
    assert!(text.contains("inet 10.77.3.2/24"), "eth1: {text}");
    assert!(
        text.contains(page),
        "pod a's page through the bridge: {text}"
    );
    rt.assert_clean();
    assert_eq!(a.leftovers(), Vec::<String>::new());
    assert_eq!(c.leftovers(), Vec::<String>::new());
}

#[test]
fn a_crashed_vmm_or_monitor_leaves_no_redirect_behind() {
    let outer = format!("hn3-{}", std::process::id());
    let ns = pod_netns("crash", &outer);
    let dir = tempfile::tempdir().unwrap();
    let bundle = net_bundle(dir.path(), &ns.path(), "", &["sleep", "600"]);
    let rt = Runtime::new();
    let root = rt.root.path().to_str().unwrap().to_string();
    let vmm_of = |id: &str| {
        husk_processes_with(&format!("{root}/{id}/"))
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\0vmm\0"))
            })
    };

    // The VMM dies: its monitor sees the VM go and parts the network.
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "v"]);
    assert!(!ns.leftovers().is_empty(), "no redirect while it runs");
    let vmm = vmm_of("v").expect("the container's VMM");
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(30), || ns.leftovers().is_empty()),
        "left after the VMM died: {:?}",
        ns.leftovers()
    );
    rt.ok(&["delete", "--force", "v"]);

    // The monitor dies (its VMM with it): `delete` parts the network.
    rt.ok(&["run", "--detach", "--bundle", b(&bundle), "m"]);
    let monitor = rt.state("m")["pid"].as_i64().unwrap() as i32;
    // SAFETY: as above.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(30), || vmm_of("m").is_none()));
    rt.ok(&["delete", "--force", "m"]);
    assert_eq!(ns.leftovers(), Vec::<String>::new());
    rt.assert_clean();
}

#[test]
fn a_missing_netns_or_an_interface_without_address_is_refused_and_leaves_nothing() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = PathBuf::from("/var/run/netns/husk-t-no-such-netns");
    let bundle = net_bundle(dir.path(), &missing, "", &["true"]);
    let out = rt.husk(&["create", "--bundle", b(&bundle), "bad1"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("husk-t-no-such-netns"),
        "a missing netns: {}",
        describe(&out)
    );
    rt.assert_clean();

    let mut ns = Netns::new("noaddr");
    ns.veth(
        "eth0",
        "",
        &format!("hn4-{}", std::process::id()),
        "10.77.4.1/24",
        1500,
    );
    let dir = tempfile::tempdir().unwrap();
    let bundle = net_bundle(dir.path(), &ns.path(), "", &["true"]);
    let out = rt.husk(&["create", "--bundle", b(&bundle), "bad2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("eth0") && err.contains("no IP address"),
        "an interface without an address: {}",
        describe(&out)
    );
    rt.assert_clean();
    assert_eq!(ns.leftovers(), Vec::<String>::new());
}

#[test]
fn ctr_with_a_network_namespace_gives_the_pod_its_links() {
    let outer = format!("hn5-{}", std::process::id());
    let ns = pod_netns("ctr", &outer);
    let c = Containerd::start(None);
    let work = tempfile::tempdir().unwrap();
    let image = "docker.io/library/husk-net-busybox:latest";
    c.import(&busybox_image_archive(work.path(), image).unwrap());
    // A namespace that does not exist: containerd's answer names it, and
    // the shim leaves no pod behind.
    let missing = c.run(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--with-ns",
        "network:/var/run/netns/husk-t-no-such-netns",
        image,
        "net-missing",
        "true",
    ]);
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains("husk-t-no-such-netns"),
        "a missing netns through ctr: {}",
        describe(&missing)
    );
    let _ = c.run(&["container", "rm", "net-missing"]);
    let left = c.pod_leftovers("default", Duration::from_secs(20));
    assert!(left.is_empty(), "left behind by a missing netns: {left:?}");

    let with_ns = format!("network:{}", ns.path().display());
    let udp = UdpSocket::bind("10.77.1.1:7002").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let out = c.run(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        image,
        "net-ctr",
        "sh",
        "-c",
        &format!(
            "ip addr show dev eth0 | grep 'inet '; ip route | grep default; {}",
            udp_send("udp-from-ctr", "10.77.1.1", 7002)
        ),
    ]);
    assert!(out.status.success(), "ctr run: {}", describe(&out));
    let text = stdout_of(&out);
    assert!(text.contains("inet 10.77.1.2/24"), "{text}");
    assert!(text.contains("default via 10.77.1.1"), "{text}");
    let mut buf = [0u8; 512];
    let (n, _) = udp.recv_from(&mut buf).expect("the pod's datagram");
    let datagram = String::from_utf8_lossy(&buf[..n]);
    assert!(datagram.contains("udp-from-ctr"), "{datagram:?}");
    let left = c.pod_leftovers("default", Duration::from_secs(20));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(ns.leftovers(), Vec::<String>::new());

    // An interface added after the pod's VM started cannot reach it (no
    // hotplug on virtio-mmio): the next container of the pod is refused.
    let mut ns = ns;
    let sandbox = c.run(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        image,
        "net-pod",
        "sleep",
        "600",
    ]);
    assert!(sandbox.status.success(), "sandbox: {}", describe(&sandbox));
    ns.veth(
        "eth1",
        "10.77.6.2/24",
        &format!("hn6-{}", std::process::id()),
        "10.77.6.1/24",
        1500,
    );
    let member = c.run(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=net-pod",
        image,
        "net-member",
        "sleep",
        "600",
    ]);
    let refused = String::from_utf8_lossy(&member.stderr).into_owned();
    for id in ["net-member", "net-pod"] {
        let _ = c.run(&["task", "kill", "-s", "KILL", id]);
        wait_until(Duration::from_secs(60), || {
            !stdout_of(&c.run(&["task", "ls"])).contains(id)
                || stdout_of(&c.run(&["task", "ls"]))
                    .lines()
                    .any(|l| l.starts_with(id) && l.contains("STOPPED"))
        });
        let _ = c.run(&["task", "rm", id]);
        let _ = c.run(&["container", "rm", id]);
    }
    assert!(
        !member.status.success() && refused.contains("eth1") && refused.contains("hotplug"),
        "a member after eth1 was added: {}",
        describe(&member)
    );
    let left = c.pod_leftovers("default", Duration::from_secs(20));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(ns.leftovers(), Vec::<String>::new());
}
