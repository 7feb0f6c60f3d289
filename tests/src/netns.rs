//! Network namespaces for tests, made and inspected with `ip` and `tc`
//! (test fixtures only; husk itself speaks netlink). Each is removed with
//! its links when dropped.

use std::path::PathBuf;
use std::process::Command;

/// Runs `program args`, which must succeed; returns its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        crate::describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`/var/run/netns/NAME`).
pub struct Netns {
    /// Its name.
    pub name: String,
    /// Host-side links made for it, deleted with it.
    host_links: Vec<String>,
}

impl Netns {
    /// A new namespace `husk-t-<tag>-<pid>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!("husk-t-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh("ip", &["netns", "add", &name]);
        let ns = Self {
            name,
            host_links: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its path, as an OCI spec names it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip ARGS` inside it.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// `tc ARGS` inside it.
    pub fn tc(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("tc", &all)
    }

    /// A veth pair: `inner` inside with `inner_addr` (CIDR), `outer` on the
    /// host with `outer_addr` (CIDR, or empty for none, e.g. when it joins
    /// a bridge), both up with `mtu`.
    pub fn veth(&mut self, inner: &str, inner_addr: &str, outer: &str, outer_addr: &str, mtu: u32) {
        let _ = Command::new("ip").args(["link", "del", outer]).output();
        let mtu = mtu.to_string();
        sh(
            "ip",
            &[
                "link", "add", outer, "mtu", &mtu, "type", "veth", "peer", "name", inner, "mtu",
                &mtu, "netns", &self.name,
            ],
        );
        self.host_links.push(outer.to_string());
        if !outer_addr.is_empty() {
            sh("ip", &["addr", "add", outer_addr, "dev", outer]);
        }
        sh("ip", &["link", "set", outer, "up"]);
        if !inner_addr.is_empty() {
            self.ip(&["addr", "add", inner_addr, "dev", inner]);
        }
        self.ip(&["link", "set", inner, "up"]);
    }

    /// The qdiscs and links inside, for leftover checks: any `ingress`
    /// qdisc or husk tap still there.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .tc(&["qdisc", "show"])
            .lines()
            .filter(|l| l.contains("ingress"))
            .map(|l| format!("qdisc: {l}"))
            .collect();
        left.extend(
            self.ip(&["-o", "link", "show"])
                .lines()
                .filter(|l| l.contains("husktap"))
                .map(|l| format!("link: {l}")),
        );
        left
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A host bridge with an address, removed when dropped.
pub struct Bridge {
    /// Its name.
    pub name: String,
}

impl Bridge {
    /// Bridge `name` with `addr` (CIDR), up.
    pub fn new(name: &str, addr: &str) -> Self {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        sh("ip", &["link", "add", name, "type", "bridge"]);
        sh("ip", &["addr", "add", addr, "dev", name]);
        sh("ip", &["link", "set", name, "up"]);
        Self {
            name: name.to_string(),
        }
    }

    /// Puts host link `link` on the bridge.
    pub fn attach(&self, link: &str) {
        sh("ip", &["link", "set", link, "master", &self.name]);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}
