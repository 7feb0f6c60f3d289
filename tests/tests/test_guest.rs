//! The VMM on this host's own `/dev/kvm` with the tiny test guest: PVH
//! boot, the serial console, a virtio-mmio device's registers, the i8042
//! reset, and seccomp — fast, and on any KVM, even one that cannot boot
//! Linux.

use std::path::PathBuf;
use std::process::Command;

use husk_tests::{describe, husk, workspace_root};

fn build_test_guest(dir: &std::path::Path) -> PathBuf {
    let out = Command::new(workspace_root().join("tests/test-guest/build.sh"))
        .arg(dir)
        .output()
        .expect("run tests/test-guest/build.sh");
    assert!(out.status.success(), "{}", describe(&out));
    let path = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(path.lines().last().unwrap())
}

#[test]
fn boots_checks_the_vsock_device_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let guest = build_test_guest(dir.path());
    let sock = dir.path().join("v.sock");
    let started = std::time::Instant::now();
    let out = husk(&[
        "boot",
        "--kernel",
        guest.to_str().unwrap(),
        "--cmdline",
        "devid=19",
        "--vsock",
        sock.to_str().unwrap(),
    ]);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout.contains("husk-test-guest: boot ok"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("husk-test-guest: all checks passed"),
        "{}",
        describe(&out)
    );
    assert!(!sock.exists(), "the vsock socket was left behind");
    eprintln!("tiny guest: launch to exit in {elapsed:?}");
}

#[test]
fn a_wrong_device_id_is_reported_by_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let guest = build_test_guest(dir.path());
    let sock = dir.path().join("v.sock");
    let out = husk(&[
        "boot",
        "--kernel",
        guest.to_str().unwrap(),
        "--cmdline",
        "devid=26",
        "--vsock",
        sock.to_str().unwrap(),
    ]);
    // The guest reset normally, after reporting the failed check.
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("husk-test-guest: FAIL 5"),
        "{}",
        describe(&out)
    );
}

#[test]
fn without_a_device_the_guest_skips_the_device_checks() {
    let dir = tempfile::tempdir().unwrap();
    let guest = build_test_guest(dir.path());
    let log = dir.path().join("console.log");
    let console = format!("log:{}", log.display());
    let out = husk(&[
        "boot",
        "--kernel",
        guest.to_str().unwrap(),
        "--console",
        &console,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        out.stdout.is_empty(),
        "console went to stdout: {}",
        describe(&out)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("all checks passed"), "{logged}");
}
