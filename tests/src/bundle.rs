//! OCI bundles for tests, built from the host's static busybox (Debian's
//! busybox-static): no registry, no image tools.

use std::path::{Path, PathBuf};

/// Makes `dir/rootfs` ([`crate::busybox_rootfs`])
/// and `dir/config.json` running `args`; returns `dir`.
pub fn busybox_bundle(dir: &Path, args: &[&str]) -> PathBuf {
    crate::busybox_rootfs(&dir.join("rootfs")).expect("build a busybox rootfs");
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
