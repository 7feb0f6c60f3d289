//! OCI bundles for tests, built from the host's static busybox (Debian's
//! busybox-static): no registry, no image tools.

use std::path::{Path, PathBuf};

/// Applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "true", "false", "sleep", "id", "env", "pwd", "hostname", "ls", "mount",
    "stty", "touch", "grep", "wc", "dd", "head", "ps", "kill", "test", "printf", "uname",
];

/// Makes `dir/rootfs` (busybox and its applets, /etc/passwd and group)
/// and `dir/config.json` running `args`; returns `dir`.
pub fn busybox_bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy /bin/busybox (apt-get install busybox-static)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    write_config(dir, args, |_| {});
    dir.to_path_buf()
}

/// Writes `dir/config.json`: runc's default spec running `args`, not on a
/// terminal, changed by `edit` (a serde_json value).
pub fn write_config(dir: &Path, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) {
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"]["readonly"] = serde_json::json!(false);
    edit(&mut spec);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
}
