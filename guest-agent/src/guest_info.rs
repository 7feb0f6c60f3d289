//! What the guest looks like, read from /proc and /sys. The parsers are
//! plain functions over text so they are tested on any host.

use husk_protocol::agent::GuestDetailsResponse;

/// Number of CPUs in a sysfs CPU list such as `0-3,5,7-8`.
pub fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// The first field of `/proc/uptime`.
pub fn uptime_seconds(uptime: &str) -> Option<f64> {
    uptime.split_whitespace().next()?.parse().ok()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Collects the guest's details.
pub fn guest_details() -> GuestDetailsResponse {
    let meminfo = read("/proc/meminfo");
    GuestDetailsResponse {
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
        vcpus_online: count_cpu_list(&read("/sys/devices/system/cpu/online")).unwrap_or(0),
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0),
        uptime_seconds: uptime_seconds(&read("/proc/uptime")).unwrap_or(0.0),
        cgroup_controllers: read("/sys/fs/cgroup/cgroup.controllers")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list(""), Some(0));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn reads_meminfo_fields() {
        let m = "MemTotal:         123456 kB\nMemFree: 1 kB\nMemAvailable:      1000 kB\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(123456 * 1024));
        assert_eq!(meminfo_bytes(m, "MemAvailable"), Some(1000 * 1024));
        assert_eq!(meminfo_bytes(m, "Mem"), None);
        assert_eq!(meminfo_bytes(m, "SwapTotal"), None);
    }

    #[test]
    fn reads_uptime() {
        assert_eq!(uptime_seconds("12.50 3.00\n"), Some(12.5));
        assert_eq!(uptime_seconds(""), None);
    }

    #[test]
    fn details_of_this_host_are_sane() {
        let d = guest_details();
        assert!(d.vcpus_online >= 1);
        assert!(d.memory_total_bytes > 0);
        assert!(!d.kernel_release.is_empty());
    }
}
