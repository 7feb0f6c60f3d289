//! The host-side lines of `husk check`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::Probe;

/// `/dev/kvm` opens, speaks API 12, and creates a VM.
pub fn kvm() -> Probe {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| {
        format!("cannot open /dev/kvm ({e}): load kvm_intel or kvm_amd and run husk as root (or in the kvm group)")
    })?;
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(
            "/dev/kvm does not answer KVM ioctls (it is not the KVM device): \
             load kvm_intel or kvm_amd and let udev create /dev/kvm"
                .into(),
        );
    }
    if version != 12 {
        return Err(format!(
            "/dev/kvm speaks KVM API {version}, husk needs 12: update the host kernel"
        ));
    }
    kvm.create_vm().map_err(|e| {
        format!("/dev/kvm cannot create a VM ({e}): is another hypervisor holding VT-x/AMD-V?")
    })?;
    Ok("/dev/kvm, API 12".into())
}

/// The CPU virtualizes for real (not PVM, not without VT-x/AMD-V).
pub fn linux_guests() -> Probe {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is PVM (software virtualization, /sys/module/kvm_pvm): it cannot boot Linux guests; \
             use a host with VT-x/AMD-V, or run husk inside tests/kvm-host for testing"
            .into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo.split_whitespace().collect();
    if flags.contains(&"vmx") {
        Ok("Intel VT-x".into())
    } else if flags.contains(&"svm") {
        Ok("AMD-V".into())
    } else {
        Err("the CPU shows neither vmx nor svm: enable virtualization in the firmware (or nested virtualization \
             for this VM), or run husk inside tests/kvm-host for testing"
            .into())
    }
}

/// `/dev/net/tun` opens (pod networking uses taps).
pub fn tun() -> Probe {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(|_| String::new())
        .map_err(|e| format!("cannot open /dev/net/tun ({e}): load the tun module (modprobe tun)"))
}

/// A new network namespace can be made (in a child, so ours is untouched).
pub fn network_namespaces() -> Probe {
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain system calls in the child.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if rc == 0 { 0 } else { 1 }) }
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(String::new())
            } else {
                Err("cannot create a network namespace: run as root with CAP_SYS_ADMIN and a kernel with CONFIG_NET_NS".into())
            }
        }
        _ => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
    }
}

/// Which cgroup hierarchy the host has.
pub fn cgroups() -> Probe {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || !fields[1].starts_with("/sys/fs/cgroup") {
            continue;
        }
        match fields[2] {
            "cgroup2" => v2 = Some(fields[1].to_string()),
            "cgroup" => v1.push(fields[1].trim_start_matches("/sys/fs/cgroup/").to_string()),
            _ => {}
        }
    }
    match (v1.is_empty(), v2) {
        (true, Some(at)) => Ok(format!("v2 at {at}")),
        (false, Some(at)) => Ok(format!("hybrid: v1 {} + v2 at {at}", v1.join(","))),
        (false, None) => Ok(format!("v1 {}", v1.join(","))),
        (true, None) => {
            Err("no cgroup file system is mounted under /sys/fs/cgroup: mount cgroup2 there".into())
        }
    }
}

/// A guest file exists and starts with the magic it must have.
pub fn guest_file(path: &Path, magic: &[u8], how_to_build: &str, source: &str) -> Probe {
    let mut head = vec![0u8; magic.len()];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut head));
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(format!(
            "{path:?} ({source}) is too short to be one; {how_to_build}"
        )),
        Err(e) => Err(format!("{path:?} ({source}): {e}; {how_to_build}")),
        Ok(()) if head != magic => Err(format!(
            "{path:?} ({source}) has the wrong format; {how_to_build}"
        )),
        Ok(()) => Ok(format!("{}", path.display())),
    }
}
