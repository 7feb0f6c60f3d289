//! Each line of `husk check` made to FAIL once, by taking away what it
//! checks inside a private mount namespace (or, for network namespaces,
//! the privilege), and the line saying why. None boots a guest.

use std::process::{Command, Output};

use husk_tests::{describe, husk_bin};

/// Runs `husk check` after `setup` (shell) in a private mount namespace.
fn check_after(setup: &str, husk_args: &[&str]) -> Output {
    let husk = husk_bin();
    let script = format!("set -e; mount --make-rprivate /; {setup}; exec \"$0\" \"$@\"");
    Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", &script])
        .arg(&husk)
        .args(husk_args)
        .output()
        .expect("run unshare")
}

fn line(out: &Output, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name:?} line\n{}", describe(out)))
        .to_string()
}

fn assert_fails(out: &Output, name: &str, why: &str) {
    assert!(!out.status.success(), "{}", describe(out));
    let l = line(out, name);
    assert!(
        l.starts_with(&format!("{name}: FAIL: ")),
        "{l}\n{}",
        describe(out)
    );
    assert!(l.contains(why), "{name} should say {why:?}: {l}");
}

const CHECK: &[&str] = &["check", "--timeout", "1"];

#[test]
fn kvm_line_fails_without_dev_kvm() {
    let out = check_after("mount -t tmpfs none /dev", CHECK);
    assert_fails(&out, "kvm", "cannot open /dev/kvm");
    assert_fails(&out, "boot", "not tried");
}

#[test]
fn kvm_line_fails_when_dev_kvm_is_not_kvm() {
    let out = check_after("mount -t tmpfs none /dev && touch /dev/kvm", CHECK);
    assert_fails(&out, "kvm", "does not answer KVM ioctls");
}

#[test]
fn linux_guests_line_fails_without_hardware_virtualization() {
    let fake = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(fake.path(), "processor : 0\nflags : fpu sse2\n").unwrap();
    let out = check_after(
        &format!("mount --bind {} /proc/cpuinfo", fake.path().display()),
        CHECK,
    );
    // PVM is named first where it is loaded; elsewhere the missing flags.
    let l = line(&out, "linux guests");
    assert!(
        l.contains("is PVM") || l.contains("neither vmx nor svm"),
        "{l}\n{}",
        describe(&out)
    );
    assert_fails(&out, "linux guests", "tests/kvm-host");
}

#[test]
fn tun_line_fails_without_dev_net_tun() {
    let out = check_after("mount -t tmpfs none /dev/net", CHECK);
    assert_fails(&out, "tun", "cannot open /dev/net/tun");
}

#[test]
fn network_namespaces_line_fails_without_privilege() {
    let husk = husk_bin();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&husk)
        .args(CHECK)
        .env("HUSK_CACHE_DIR", "/nonexistent")
        .output()
        .expect("run setpriv");
    assert_fails(
        &out,
        "network namespaces",
        "cannot create a network namespace",
    );
}

#[test]
fn cgroups_line_fails_without_cgroup_mounts() {
    let out = check_after("umount -R -l /sys/fs/cgroup", CHECK);
    assert_fails(&out, "cgroups", "no cgroup file system");
}

#[test]
fn kernel_and_initramfs_lines_fail_for_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "kernel = \"/nonexistent/vmlinux\"\ninitramfs = \"/etc/hostname\"\n",
    )
    .unwrap();
    let out = Command::new(husk_bin())
        .arg("--config")
        .arg(&config)
        .args(CHECK)
        .output()
        .unwrap();
    assert_fails(&out, "kernel", "/nonexistent/vmlinux");
    assert_fails(&out, "initramfs", "is too short");
    assert_fails(&out, "boot", "not tried");
}
