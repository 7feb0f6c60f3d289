//! virtio-fs end to end: our kernel boots with no initramfs and a host
//! directory, served by the VMM's in-process virtio-fs, as its root file
//! system; its `/init` (busybox sh) reads what the host put there, writes,
//! and works the tree over, while the host checks the VMM's capabilities.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use husk::vmm::capabilities::{CapSet, FS_WORKER};
use husk_tests::{husk_bin, kernel};

/// The emulated test host is slow: boot, 64 MiB each way, and margin.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Size of the file the guest reads, and of the one it writes.
const BIG_MIB: usize = 64;
const FROM_HOST: &str = "put there by the host";

/// The guest's `/init`. Markers on the console tell the host where it is;
/// it waits for the host's `/go` before rebooting, so the host can look
/// at the running VMM.
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
b=/bin/busybox
$b echo "HUSK-FS-MARKER: init runs from virtio-fs"
$b echo "HUSK-FS-READ: $($b cat /from-host.txt)"
$b echo "written by the guest" > /from-guest.txt
$b mount -t devtmpfs dev /dev
$b mount -t proc proc /proc
$b echo "HUSK-FS-READ-START"
$b dd if=/big.bin of=/dev/null bs=1048576 2>/dev/null
$b echo "HUSK-FS-READ-END"
$b echo "HUSK-FS-WRITE-START"
$b dd if=/dev/zero of=/out.bin bs=1048576 count={BIG_MIB} 2>/dev/null
$b sync
$b echo "HUSK-FS-WRITE-END"
$b mkdir /d
$b echo abcdef > /d/f
$b chmod 640 /d/f
$b chown 1000:1000 /d/f
$b touch /d/f
$b truncate -s 3 /d/f
$b ln -s f /d/link
$b ln /d/f /d/hard
$b mv /d/hard /d/moved
$b rm /d/moved
$b mkfifo /d/fifo
$b rm /d/fifo
$b fallocate -l 8192 /d/alloc
$b mkdir /d/empty
$b rmdir /d/empty
$b ls -la /d > /d/listing
$b readlink /d/link >> /d/listing
$b df / > /dev/null && $b echo "HUSK-FS-OPS-OK"
$b echo "HUSK-FS-READY"
while [ ! -e /go ]; do $b usleep 100000; done
$b echo "HUSK-FS-DONE"
$b reboot -f
"#
    )
}

/// Kills the VMM if the test fails half-way.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Console lines with the time they arrived.
fn lines(out: impl Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx
                .send((Instant::now(), line.trim_end().to_string()))
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Collects console lines until one starts with `marker`; returns the
/// time it arrived and the line.
fn wait_for(
    rx: &Receiver<(Instant, String)>,
    seen: &mut Vec<String>,
    marker: &str,
    deadline: Instant,
) -> (Instant, String) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                seen.push(line.clone());
                if line.starts_with(marker) {
                    return (at, line);
                }
            }
            Err(_) => panic!(
                "no {marker:?} on the console\n--- console\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn mask(status: &str, field: &str) -> u64 {
    u64::from_str_radix(&status_field(status, field), 16)
        .unwrap_or_else(|_| panic!("no {field} in\n{status}"))
}

/// The virtio-fs worker keeps its set in every set but the inheritable
/// one; every other thread keeps nothing; all run under seccomp.
fn assert_capabilities(pid: u32) {
    // SAFETY: geteuid only reads the process's credentials.
    let root = unsafe { libc::geteuid() } == 0;
    let fs_caps = CapSet::of(FS_WORKER).bits();
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("VMM tasks") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let name = status_field(&status, "Name:");
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{name}: no seccomp");
        assert_eq!(mask(&status, "CapInh:"), 0, "{name}\n{status}");
        assert_eq!(mask(&status, "CapAmb:"), 0, "{name}\n{status}");
        if root {
            let want = if name == "husk-fs" { fs_caps } else { 0 };
            for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
                assert_eq!(mask(&status, field), want, "{name} {field}\n{status}");
            }
        }
        names.push(name);
    }
    names.sort();
    assert!(
        names.iter().any(|n| n == "husk-fs") && names.iter().any(|n| n.starts_with("husk-vcpu")),
        "threads: {names:?}"
    );
}

fn mib_per_s(start: Instant, end: Instant) -> f64 {
    BIG_MIB as f64 / end.duration_since(start).as_secs_f64()
}

#[test]
fn a_virtiofs_root_boots_reads_and_writes_the_shared_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for sub in ["bin", "dev", "proc"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    let init = root.join("init");
    std::fs::write(&init, init_script()).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("from-host.txt"), FROM_HOST).unwrap();
    let big: Vec<u8> = (0..BIG_MIB << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    drop(big);

    let started = Instant::now();
    let mut child = Command::new(husk_bin())
        .args(["boot", "--kernel"])
        .arg(kernel())
        .args(["--memory", "256", "--console", "stdout", "--shared-dir"])
        .arg(&root)
        .args(["--cmdline", "rootfstype=virtiofs root=husk rw init=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn husk boot");
    let console = lines(child.stdout.take().unwrap());
    let errors = lines(child.stderr.take().unwrap());
    let pid = child.id();
    let mut vmm = Vmm(child);
    let deadline = started + TIMEOUT;
    let mut seen = Vec::new();

    wait_for(&console, &mut seen, "HUSK-FS-MARKER", deadline);
    let booted = started.elapsed();
    let (_, read) = wait_for(&console, &mut seen, "HUSK-FS-READ:", deadline);
    assert_eq!(read, format!("HUSK-FS-READ: {FROM_HOST}"));
    let (read_start, _) = wait_for(&console, &mut seen, "HUSK-FS-READ-START", deadline);
    let (read_end, _) = wait_for(&console, &mut seen, "HUSK-FS-READ-END", deadline);
    let (write_start, _) = wait_for(&console, &mut seen, "HUSK-FS-WRITE-START", deadline);
    let (write_end, _) = wait_for(&console, &mut seen, "HUSK-FS-WRITE-END", deadline);
    wait_for(&console, &mut seen, "HUSK-FS-OPS-OK", deadline);
    wait_for(&console, &mut seen, "HUSK-FS-READY", deadline);

    assert_capabilities(pid);
    std::fs::write(root.join("go"), b"").unwrap();
    wait_for(&console, &mut seen, "HUSK-FS-DONE", deadline);
    let status = loop {
        if let Some(status) = vmm.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the guest did not reset");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr: Vec<String> = errors.try_iter().map(|(_, l)| l).collect();
    assert!(
        status.success(),
        "husk boot: {status}\n--- console\n{}\n--- stderr\n{}",
        seen.join("\n"),
        stderr.join("\n")
    );

    // What the guest wrote is on the host.
    let written = std::fs::read_to_string(root.join("from-guest.txt")).unwrap();
    assert_eq!(written, "written by the guest\n");
    assert_eq!(
        std::fs::metadata(root.join("out.bin")).unwrap().len(),
        (BIG_MIB as u64) << 20
    );
    let d = root.join("d");
    let f = std::fs::metadata(d.join("f")).unwrap();
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"abc");
    assert_eq!(f.permissions().mode() & 0o7777, 0o640);
    assert_eq!((f.uid(), f.gid()), (1000, 1000));
    assert_eq!(std::fs::read_link(d.join("link")).unwrap(), Path::new("f"));
    assert_eq!(std::fs::metadata(d.join("alloc")).unwrap().len(), 8192);
    for gone in ["moved", "hard", "fifo", "empty"] {
        assert!(!d.join(gone).exists(), "{gone} is still there");
    }
    let listing = std::fs::read_to_string(d.join("listing")).unwrap();
    assert!(listing.contains("link -> f"), "{listing}");

    // Figures from the emulated test host: compare only within one run.
    eprintln!(
        "virtio-fs (emulated host): booted to /init in {:.1} s; \
         sequential read {:.1} MiB/s, write {:.1} MiB/s ({BIG_MIB} MiB, dd bs=1M)",
        booted.as_secs_f64(),
        mib_per_s(read_start, read_end),
        mib_per_s(write_start, write_end),
    );
}
