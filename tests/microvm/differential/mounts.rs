//! The mount table the process sees, with bind mounts from the bundle (a
//! host directory read-write, a host file read-only) and a tmpfs with
//! options, compared after the rules in [`normalise`]; and what was
//! written through the read-write bind, seen on the host after each run.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{case_bundle, drop_kernel_line, report, where_it_ran, Runtime};
use husk_tests::describe;

/// What the container does: says which masked and read-only paths its
/// kernel has (`exists P`), prints its mountinfo (`mnt ...`), writes
/// through the read-write bind, fails to write the read-only file, and
/// shows the tmpfs's mode.
const SCRIPT: &str = r#"for p in $PATHS; do [ -e $p ] && echo "exists $p"; done
sed 's/^/mnt /' /proc/self/mountinfo
echo "written by the container" > /vol/out
echo more >> /etc/host-file 2>/dev/null && echo file-writable || echo file-readonly
cat /etc/host-file
stat -c 'scratch %a' /scratch"#;

/// The spec's masked and read-only paths, as a shell word list.
fn special_paths(spec: &Value) -> Vec<String> {
    ["maskedPaths", "readonlyPaths"]
        .iter()
        .flat_map(|k| spec["linux"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

/// One mountinfo line, split into what the rules look at.
struct MountLine<'a> {
    device: &'a str,
    root: &'a str,
    point: &'a str,
    options: &'a str,
    optional: Vec<&'a str>,
    fstype: &'a str,
    source: &'a str,
    super_options: &'a str,
}

fn parse(line: &str) -> Option<MountLine<'_>> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    if left.len() < 6 || right.len() < 3 {
        return None;
    }
    Some(MountLine {
        device: left[2],
        root: left[3],
        point: left[4],
        options: left[5],
        optional: left[6..].to_vec(),
        fstype: right[0],
        source: right[1],
        super_options: right[2],
    })
}

/// Whether the runc side's host mounts cgroups the v1 (or hybrid) way:
/// a tmpfs at /sys/fs/cgroup with a mount per controller.
fn host_cgroup_v1() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// The mountinfo lines of one side, normalised. The rules:
///
/// 1. Mount ids, parent ids and `major:minor` are dropped: they count the
///    mounts and devices of each kernel, and the guest kernel is another
///    kernel.
/// 2. The host's files (the rootfs and every bind-mount source, the mounts
///    on the device of `/`) keep their mount point and per-mount options
///    (`ro`, `nosuid`, `nodev`, `noexec`, atime flags), but their root
///    within the filesystem, fs type, source and super options become
///    `<host files>`: runc mounts the host's filesystem itself, husk reaches
///    it over virtio-fs, where the root is a path inside the shared
///    directory and the type is `virtiofs`.
/// 3. Only when runc's host mounts cgroups v1 or hybrid (not here in the
///    guest, which has cgroup2 only): the tmpfs runc puts at
///    /sys/fs/cgroup and the one mount per v1 controller under it become one
///    `/sys/fs/cgroup cgroup` line with the controllers' per-mount options,
///    and husk's cgroup2 line the same: runc follows the host's cgroup
///    layout, husk the guest's. The options must still match; on a host with
///    cgroup2 only the rule does not apply and the type is compared too.
/// 4. `inode64` is dropped from tmpfs super options: the kernel shows it
///    only when built with CONFIG_TMPFS_INODE64 (Debian's kernels under
///    runc are, husk's small guest kernel is not). It is the width of
///    inode numbers, which no mount option in the spec sets.
/// 5. The super options of the sysfs at /sys: sysfs has one superblock per
///    network namespace. runc gives the container a new one, so its sysfs
///    superblock is made read-only; husk's container uses the guest's
///    network (the VM is the sandbox), whose sysfs the agent mounted
///    read-write. The per-mount `ro`, which is what stops the container
///    writing, is still compared.
/// 6. A masked or read-only path of the spec that only one kernel has
///    (`exists` printed by one side only) has its line dropped: nothing is
///    mounted over a path that does not exist, under runc as under husk.
///    The guest kernel is built small (no /proc/kcore, /proc/keys, ...).
///
/// Everything else must match exactly: mount points and their order,
/// per-mount options, propagation, and the fs type, source and super
/// options of proc, tmpfs, devpts and mqueue mounts (sysfs's but for rule
/// 5, cgroup's but for rule 3).
pub(super) fn normalise(out: &str, in_both: &HashSet<&str>, special: &[String]) -> String {
    let lines: Vec<MountLine> = out
        .lines()
        .filter_map(|l| l.strip_prefix("mnt "))
        .filter_map(parse)
        .collect();
    let host_device = lines.iter().find(|m| m.point == "/").map(|m| m.device);
    let cgroup_rule = host_cgroup_v1();
    let mut seen_cgroup = false;
    let mut normalised = String::new();
    for m in &lines {
        if special.iter().any(|p| p == m.point) && !in_both.contains(m.point) {
            continue;
        }
        let in_cgroup = m.point == "/sys/fs/cgroup" || m.point.starts_with("/sys/fs/cgroup/");
        if cgroup_rule && in_cgroup {
            if m.fstype == "cgroup" || m.fstype == "cgroup2" {
                if !seen_cgroup {
                    normalised.push_str(&format!("/sys/fs/cgroup {} cgroup\n", m.options));
                    seen_cgroup = true;
                }
                continue;
            }
            if m.point == "/sys/fs/cgroup" && m.fstype == "tmpfs" {
                continue;
            }
        }
        let optional = m.optional.join(" ");
        let super_options = match (m.fstype, m.point) {
            ("tmpfs", _) => m
                .super_options
                .split(',')
                .filter(|o| *o != "inode64")
                .collect::<Vec<_>>()
                .join(","),
            ("sysfs", "/sys") => "<per network namespace>".to_string(),
            _ => m.super_options.to_string(),
        };
        if Some(m.device) == host_device {
            normalised.push_str(&format!(
                "{} {} {optional} - <host files>\n",
                m.point, m.options
            ));
        } else {
            normalised.push_str(&format!(
                "{} {} {} {optional} - {} {} {}\n",
                m.root, m.point, m.options, m.fstype, m.source, super_options
            ));
        }
    }
    normalised
}

/// Everything but the mount lines and `exists` lines, which
/// [`normalise`] handles.
fn the_rest(out: &str) -> String {
    drop_kernel_line(out)
        .lines()
        .filter(|l| !l.starts_with("mnt ") && !l.starts_with("exists "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn existing(out: &str) -> HashSet<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("exists "))
        .collect()
}

#[test]
fn mounts_agree_after_the_written_rules() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let host_file = dir.path().join("host-file");
    std::fs::write(&host_file, "from the host\n").unwrap();
    let mut special = Vec::new();
    let bundle = case_bundle(&dir.path().join("bundle"), "", &[], |s| {
        special = special_paths(s);
        let script = format!("PATHS='{}'\n{SCRIPT}", special.join(" "));
        s["process"]["args"][2] = json!(format!("{KERNEL}; {script}", KERNEL = super::KERNEL_LINE));
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/vol", "type": "bind",
            "source": volume, "options": ["rbind", "rw"]}));
        mounts.push(json!({"destination": "/etc/host-file", "type": "bind",
            "source": host_file, "options": ["bind", "ro", "nosuid"]}));
        mounts.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1770"]}),
        );
    });
    let root = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let mut failures = Vec::new();
    for runtime in [Runtime::Runc, Runtime::Husk] {
        let out = runtime.run(&bundle, root.path(), "mounts");
        let written = std::fs::read_to_string(volume.join("out")).unwrap_or_default();
        if written != "written by the container\n" {
            failures.push(format!(
                "{}: the host sees {written:?} in the read-write bind\n{}",
                runtime.name(),
                describe(&out)
            ));
        }
        let _ = std::fs::remove_file(volume.join("out"));
        let host_text = std::fs::read_to_string(&host_file).unwrap();
        if host_text != "from the host\n" {
            failures.push(format!(
                "{}: the read-only file changed on the host: {host_text:?}",
                runtime.name()
            ));
        }
        outputs.push(out);
    }
    let (runc, husk) = (&outputs[0], &outputs[1]);
    if let Err(e) = where_it_ran("mounts", runc, husk) {
        failures.push(e);
    } else {
        let (runc_out, husk_out) = (
            String::from_utf8_lossy(&runc.stdout),
            String::from_utf8_lossy(&husk.stdout),
        );
        let in_both: HashSet<&str> = existing(&runc_out)
            .intersection(&existing(&husk_out))
            .copied()
            .collect();
        let runc_table = normalise(&runc_out, &in_both, &special);
        let husk_table = normalise(&husk_out, &in_both, &special);
        let same = runc.status.code() == husk.status.code()
            && runc_table == husk_table
            && the_rest(&runc_out) == the_rest(&husk_out)
            && runc.stderr == husk.stderr;
        if same {
            eprintln!(
                "mounts: same under runc and husk after the rules ({} mounts, exit {:?})",
                husk_table.lines().count(),
                husk.status.code()
            );
        } else {
            failures.push(format!(
                "mounts: runc and husk differ\n--- runc, normalised\n{runc_table}\n--- husk, normalised\n{husk_table}\n--- runc\n{}\n--- husk\n{}",
                describe(runc),
                describe(husk)
            ));
        }
    }
    report(&failures, 1);
}

#[cfg(test)]
mod rules {
    use super::*;

    const SPECIAL: &[&str] = &["/proc/kcore", "/proc/sys"];

    fn special() -> Vec<String> {
        SPECIAL.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_go_and_host_files_are_folded() {
        let out = "mnt 65 43 254:0 /tmp/b/rootfs / rw,relatime - ext4 /dev/vda rw,discard\n\
                   mnt 66 65 0:40 / /proc rw,relatime - proc proc rw\n\
                   mnt 82 65 254:0 /tmp/vol /vol rw,relatime - ext4 /dev/vda rw,discard\n";
        let both = HashSet::new();
        assert_eq!(
            normalise(out, &both, &special()),
            "/ rw,relatime  - <host files>\n/ /proc rw,relatime  - proc proc rw\n/vol rw,relatime  - <host files>\n"
        );
    }

    #[test]
    fn a_special_path_only_one_kernel_has_is_dropped() {
        let out = "mnt 1 0 0:1 / / rw - virtiofs husk rw\n\
                   mnt 2 1 0:2 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw\n\
                   mnt 3 1 0:3 /sys /proc/sys ro,relatime - proc proc rw\n";
        let both: HashSet<&str> = ["/proc/sys"].into();
        let table = normalise(out, &both, &special());
        assert!(!table.contains("/proc/kcore"), "{table}");
        assert!(table.contains("/sys /proc/sys ro,relatime"), "{table}");
    }

    #[test]
    fn inode64_and_the_sysfs_superblock_are_the_only_super_options_dropped() {
        let both = HashSet::new();
        let runc = "mnt 1 0 0:9 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k,inode64\n\
                    mnt 2 0 0:8 / /sys ro,nosuid - sysfs sysfs ro\n";
        let husk = "mnt 5 3 0:12 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k\n\
                    mnt 6 3 0:14 / /sys ro,nosuid - sysfs sysfs rw\n";
        assert_eq!(
            normalise(runc, &both, &special()),
            normalise(husk, &both, &special())
        );
        let other = "mnt 5 3 0:12 / /dev/shm rw,nosuid - tmpfs shm rw,size=1024k\n\
                     mnt 6 3 0:14 / /sys rw,nosuid - sysfs sysfs rw\n";
        assert_ne!(
            normalise(runc, &both, &special()),
            normalise(other, &both, &special())
        );
    }

    #[test]
    fn options_of_kernel_filesystems_still_count() {
        let a = "mnt 1 0 0:9 / /dev/shm rw,nosuid,nodev - tmpfs shm rw,size=65536k\n";
        let b = "mnt 7 3 0:12 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k\n";
        let both = HashSet::new();
        assert_ne!(
            normalise(a, &both, &special()),
            normalise(b, &both, &special())
        );
    }
}
