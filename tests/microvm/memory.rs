//! Guest memory and the host: what a container frees inside its microVM
//! goes back to the host (the guest's free page reporting to the VMM's
//! virtio-balloon), seen from the host as the VMM's resident guest RAM.

use std::path::Path;
use std::time::Duration;

use husk_tests::bundle::busybox_bundle;
use husk_tests::cli::Runtime;
use husk_tests::wait_until;

/// The VMM process under a container's monitor.
fn vmm_of(monitor: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{monitor}/task/{monitor}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"vmm"))
        })
        .unwrap_or_else(|| panic!("no VMM under monitor {monitor} (children: {children:?})"))
}

/// Resident KiB of the VMM's largest mapping: the guest's RAM.
fn guest_rss_kib(vmm: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{vmm}/smaps")).unwrap();
    let (mut best_size, mut best_rss, mut size) = (0u64, 0u64, 0u64);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        match (
            fields.next(),
            fields.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("Size:"), Some(kib)) => size = kib,
            (Some("Rss:"), Some(kib)) if size > best_size => {
                best_size = size;
                best_rss = kib;
            }
            _ => {}
        }
    }
    best_rss
}

/// The guest RAM figure once two readings 3 s apart agree (the guest
/// reports what it freed about two seconds after freeing it).
fn settled_guest_rss_kib(vmm: u32) -> u64 {
    let mut last = guest_rss_kib(vmm);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(3));
        let now = guest_rss_kib(vmm);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn memory_a_container_frees_goes_back_to_the_host() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = busybox_bundle(dir.path(), &["sleep", "1000"]);
    let b = bundle.to_str().unwrap();
    rt.ok(&["run", "--detach", "--bundle", b, "c1"]);
    let monitor = rt.state("c1")["pid"].as_u64().unwrap() as u32;
    let vmm = vmm_of(monitor);
    let booted = settled_guest_rss_kib(vmm);

    // 48 MiB in the container's /dev/shm (a tmpfs in the guest).
    rt.ok(&[
        "exec",
        "c1",
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=48",
    ]);
    let filled = guest_rss_kib(vmm);
    assert!(
        filled >= booted + 40 * 1024,
        "filling 48 MiB in the guest made its RAM resident on the host: {booted} → {filled} KiB"
    );
    rt.ok(&["exec", "c1", "rm", "/dev/shm/fill"]);
    let mut freed = filled;
    let back = wait_until(Duration::from_secs(60), || {
        freed = guest_rss_kib(vmm);
        freed <= booted + 8 * 1024
    });
    assert!(
        back,
        "the 48 MiB the container freed did not go back to the host: booted {booted} KiB, \
         filled {filled} KiB, 60 s after freeing {freed} KiB"
    );
    eprintln!("guest RAM resident: booted {booted} KiB, filled {filled} KiB, freed {freed} KiB");
    assert!(
        Path::new(&format!("/proc/{vmm}")).exists(),
        "the VMM is still up"
    );
    rt.ok(&["delete", "--force", "c1"]);
    rt.assert_clean();
}
