//! Test fixtures: throwaway network namespaces built and inspected with
//! `ip` and `tc` (tests only; the crate itself never shells out).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace `husk-nl-test-<pid>-<n>`, deleted on drop (also
/// when the test panics).
pub(crate) struct TestNetns {
    name: String,
    path: PathBuf,
}

impl TestNetns {
    pub(crate) fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "husk-netlink's tests build network namespaces and need root"
        );
        let name = format!(
            "husk-nl-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let path = PathBuf::from(format!("/var/run/netns/{name}"));
        Self { name, path }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n <name> <args>`, which must succeed; its stdout.
    pub(crate) fn ip(&self, args: &str) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend(args.split_whitespace());
        run("ip", &full)
    }

    /// `ip netns exec <name> tc <args>`, which must succeed; its stdout.
    pub(crate) fn tc(&self, args: &str) -> String {
        let mut full = vec!["netns", "exec", &self.name, "tc"];
        full.extend(args.split_whitespace());
        run("ip", &full)
    }

    /// Whether link `name` exists here.
    pub(crate) fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", name])
            .output()
            .expect("running ip")
            .status
            .success()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair: `a_name` (with `a_mac`) in `a`, `b_name` (with `b_mac`) in
/// `b`.
pub(crate) fn veth_pair(
    a: &TestNetns,
    a_name: &str,
    a_mac: &str,
    b: &TestNetns,
    b_name: &str,
    b_mac: &str,
) {
    run(
        "ip",
        &[
            "link",
            "add",
            "name",
            a_name,
            "address",
            a_mac,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "address",
            b_mac,
            "netns",
            b.name(),
        ],
    );
}

/// Runs `program args`, panics with its stderr unless it succeeds, and
/// returns its stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The pod's MAC on `eth0`.
pub(crate) const POD_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x99, 0x02];
/// The peer's MAC on `veth0`.
pub(crate) const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x99, 0x01];

/// A pod namespace as a CNI bridge plugin would leave it, and the peer
/// namespace at the other end of its veth:
///
/// - pod `eth0` (02:00:00:00:99:02, MTU 1400): 10.99.0.2/24,
///   fd00:99::2/64; default routes via 10.99.0.1 and fd00:99::1;
///   10.200.0.0/16 via 10.99.0.1 metric 100; a permanent neighbour
///   10.99.0.1 → 02:00:00:00:99:01.
/// - peer `veth0` (02:00:00:00:99:01, MTU 1400): 10.99.0.1/24,
///   fd00:99::1/64.
pub(crate) fn pod_and_peer() -> (TestNetns, TestNetns) {
    let pod = TestNetns::new();
    let peer = TestNetns::new();
    veth_pair(
        &pod,
        "eth0",
        "02:00:00:00:99:02",
        &peer,
        "veth0",
        "02:00:00:00:99:01",
    );
    for (netns, link, v4, v6) in [
        (&pod, "eth0", "10.99.0.2/24", "fd00:99::2/64"),
        (&peer, "veth0", "10.99.0.1/24", "fd00:99::1/64"),
    ] {
        netns.ip(&format!("link set dev {link} mtu 1400"));
        netns.ip(&format!("addr add {v4} dev {link}"));
        netns.ip(&format!("addr add {v6} dev {link} nodad"));
        netns.ip(&format!("link set dev {link} up"));
        netns.ip("link set dev lo up");
    }
    pod.ip("route add default via 10.99.0.1 dev eth0");
    pod.ip("route add 10.200.0.0/16 via 10.99.0.1 dev eth0 metric 100");
    pod.ip("-6 route add default via fd00:99::1 dev eth0");
    pod.ip("neigh add 10.99.0.1 lladdr 02:00:00:00:99:01 dev eth0 nud permanent");
    (pod, peer)
}
