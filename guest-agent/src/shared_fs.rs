//! The sandbox's shared directory: the virtio-fs tag `husk`, which holds
//! the containers' rootfs and bind-mount sources, mounted at
//! `/run/husk/shared` when the VMM offers it.

use std::path::Path;

use nix::mount::{mount, MsFlags};

/// The tag the host gives the shared directory.
pub const SHARED_TAG: &str = "husk";
/// Where the guest mounts it (the host rewrites spec paths to it).
pub const SHARED_DIR: &str = "/run/husk/shared";

/// Why the shared directory could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountSharedError {
    /// The mount point could not be made.
    #[error("cannot create {SHARED_DIR}")]
    MountPoint(#[source] std::io::Error),
    /// The mount failed.
    #[error("cannot mount virtio-fs tag {SHARED_TAG} on {SHARED_DIR}")]
    Mount(#[source] nix::Error),
}

/// The virtio-fs tags the kernel found (`/sys/fs/virtiofs/*/tag`).
pub fn virtiofs_tags(sysfs: &Path) -> Vec<String> {
    std::fs::read_dir(sysfs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("tag")).ok())
        .map(|t| t.trim().to_string())
        .collect()
}

/// Mounts the shared directory if the VMM offers it; returns whether it did.
pub fn mount_shared_dir() -> Result<bool, MountSharedError> {
    if !virtiofs_tags(Path::new("/sys/fs/virtiofs"))
        .iter()
        .any(|t| t == SHARED_TAG)
    {
        log::info!("no virtio-fs tag {SHARED_TAG}: no shared directory");
        return Ok(false);
    }
    std::fs::create_dir_all(SHARED_DIR).map_err(MountSharedError::MountPoint)?;
    mount(
        Some(SHARED_TAG),
        SHARED_DIR,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(MountSharedError::Mount)?;
    log::info!("shared directory mounted on {SHARED_DIR}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tags_sysfs_lists() {
        let sys = tempfile::tempdir().unwrap();
        for (n, tag) in [("0", "husk\n"), ("1", "other\n")] {
            std::fs::create_dir(sys.path().join(n)).unwrap();
            std::fs::write(sys.path().join(n).join("tag"), tag).unwrap();
        }
        let mut tags = virtiofs_tags(sys.path());
        tags.sort();
        assert_eq!(tags, ["husk", "other"]);
        assert!(virtiofs_tags(Path::new("/nonexistent")).is_empty());
    }
}
