//! Bad input to the VMM: each case is refused before anything is created,
//! with an error naming the problem, and leaves no process or file behind.
//! None of these needs a bootable guest, so they run on any host.

use std::path::Path;

use husk_tests::{describe, husk, husk_processes_with};

/// A kernel that is a real ELF file (this test binary): good enough to get
/// past the format check to the check under test.
fn elf_file() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

fn boot(dir: &Path, extra: &[&str]) -> std::process::Output {
    let sock = dir.join("v.sock");
    let mut args = vec![
        "boot",
        "--console",
        "off",
        "--vsock",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    husk(&args)
}

fn assert_refused(out: &std::process::Output, needle: &str, dir: &Path) {
    assert!(!out.status.success(), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(needle),
        "error should mention {needle:?}\n{}",
        describe(out)
    );
    assert!(
        !dir.join("v.sock").exists(),
        "the vsock socket was left behind"
    );
    let marker = dir.to_str().unwrap();
    assert!(
        husk_processes_with(marker).is_empty(),
        "a husk process was left behind"
    );
}

#[test]
fn missing_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let out = boot(dir.path(), &["--kernel", "/nonexistent/vmlinux"]);
    assert_refused(&out, "/nonexistent/vmlinux", dir.path());
}

#[test]
fn corrupt_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("vmlinux");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let out = boot(dir.path(), &["--kernel", junk.to_str().unwrap()]);
    assert_refused(&out, "is not an ELF vmlinux", dir.path());
}

#[test]
fn truncated_elf_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("vmlinux");
    let elf = std::fs::read(elf_file()).unwrap();
    std::fs::write(&truncated, &elf[..200]).unwrap();
    let out = boot(dir.path(), &["--kernel", truncated.to_str().unwrap()]);
    assert_refused(&out, "cannot load kernel", dir.path());
}

#[test]
fn initramfs_that_is_not_cpio() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("initrd");
    std::fs::write(&junk, b"PK\x03\x04 a zip file").unwrap();
    let kernel = elf_file();
    let out = boot(
        dir.path(),
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initramfs",
            junk.to_str().unwrap(),
        ],
    );
    assert_refused(&out, "is not a cpio newc archive", dir.path());
}

#[test]
fn zero_and_absurd_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = elf_file();
    let k = kernel.to_str().unwrap();
    for (flags, needle) in [
        (["--memory", "0"], "memory_mib = 0"),
        (["--memory", "4000000"], "memory_mib = 4000000"),
        (["--vcpus", "0"], "vcpus = 0"),
        (["--vcpus", "255"], "vcpus = 255"),
    ] {
        let mut args = vec!["--kernel", k];
        args.extend_from_slice(&flags);
        let out = boot(dir.path(), &args);
        assert_refused(&out, needle, dir.path());
    }
}

#[test]
fn vsock_socket_path_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("taken.sock");
    std::fs::write(&taken, b"").unwrap();
    let kernel = elf_file();
    let out = husk(&[
        "boot",
        "--console",
        "off",
        "--kernel",
        kernel.to_str().unwrap(),
        "--vsock",
        taken.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"", "the file was touched");
}

#[test]
fn unknown_vm_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        r#"{"vcpus":1,"memory_mib":128,"kernel":"/k","kernal_args":"x"}"#,
    )
    .unwrap();
    let out = husk(&["vmm", "--config", config.to_str().unwrap()]);
    assert_refused(&out, "kernal_args", dir.path());
}

#[test]
fn unknown_husk_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "default_vcpu = 2\n").unwrap();
    let out = husk(&["--config", config.to_str().unwrap(), "check"]);
    assert_refused(&out, "default_vcpu", dir.path());
}
