//! A container image built locally from the busybox rootfs (there is no
//! registry here), written as one archive that is both an OCI image layout
//! (`index.json`, for `ctr image import`) and a docker archive
//! (`manifest.json`, for `docker load` and `podman load`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::busybox_rootfs;

/// `sha256:<hex>` of a file, and its size.
fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let out = Command::new("sha256sum").arg(path).output()?;
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if !out.status.success() || hex.len() != 64 {
        return Err(std::io::Error::other(format!("sha256sum {path:?} failed")));
    }
    Ok((format!("sha256:{hex}"), fs::metadata(path)?.len()))
}

/// Moves `file` into `layout/blobs/sha256/` under its digest.
fn add_blob(layout: &Path, file: &Path) -> std::io::Result<(String, u64)> {
    let (digest, size) = digest(file)?;
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::rename(file, blobs.join(&digest["sha256:".len()..]))?;
    Ok((digest, size))
}

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Writes an image archive named `name` (e.g. `docker.io/library/husk-busybox:latest`)
/// whose single layer is the busybox rootfs, in `dir`; returns its path.
pub fn busybox_image_archive(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    busybox_image_archive_with(dir, name, &[])
}

/// [`busybox_image_archive`] whose image runs `entrypoint` (none: `sh`),
/// e.g. a pod's pause image that sleeps forever. One archive per `dir`.
pub fn busybox_image_archive_with(
    dir: &Path,
    name: &str,
    entrypoint: &[&str],
) -> std::io::Result<PathBuf> {
    let rootfs = dir.join("image-rootfs");
    busybox_rootfs(&rootfs)?;
    let layout = dir.join("image-layout");
    fs::create_dir_all(&layout)?;
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let (layer_digest, layer_size) = add_blob(&layout, &layer)?;
    let process = if entrypoint.is_empty() {
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"})
    } else {
        serde_json::json!({"Env": ["PATH=/bin"], "Entrypoint": entrypoint, "WorkingDir": "/"})
    };
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config_file = dir.join("config.json");
    fs::write(&config_file, serde_json::to_vec(&config)?)?;
    let (config_digest, config_size) = add_blob(&layout, &config_file)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let manifest_file = dir.join("manifest");
    fs::write(&manifest_file, serde_json::to_vec(&manifest)?)?;
    let (manifest_digest, manifest_size) = add_blob(&layout, &manifest_file)?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": tag}}],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let blob = |d: &str| format!("blobs/sha256/{}", &d["sha256:".len()..]);
    let short_name = name.strip_prefix("docker.io/library/").unwrap_or(name);
    let docker = serde_json::json!([{
        "Config": blob(&config_digest),
        "RepoTags": [short_name],
        "Layers": [blob(&layer_digest)],
    }]);
    fs::write(layout.join("manifest.json"), serde_json::to_vec(&docker)?)?;
    let archive = dir.join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_an_oci_layout_and_a_docker_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = busybox_image_archive(dir.path(), "docker.io/library/t:1").unwrap();
        if let Some(keep) = std::env::var_os("HUSK_IMAGE_OUT") {
            fs::copy(&archive, keep).unwrap();
        }
        let list = Command::new("tar")
            .arg("-tf")
            .arg(&archive)
            .output()
            .unwrap();
        let list = String::from_utf8(list.stdout).unwrap();
        for entry in ["./index.json", "./oci-layout", "./manifest.json"] {
            assert!(list.lines().any(|l| l == entry), "{entry} missing:\n{list}");
        }
        let layout = dir.path().join("image-layout");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/library/t:1"
        );
        let digest = m["digest"].as_str().unwrap();
        let manifest = layout.join("blobs/sha256").join(&digest[7..]);
        assert_eq!(super::digest(&manifest).unwrap().0, digest);
        let docker: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(docker[0]["RepoTags"][0], "t:1");
        let config = layout.join(docker[0]["Config"].as_str().unwrap());
        let config: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    }

    #[test]
    fn an_entrypoint_replaces_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        busybox_image_archive_with(dir.path(), "p:1", &["sleep", "9"]).unwrap();
        let layout = dir.path().join("image-layout");
        let docker: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("manifest.json")).unwrap()).unwrap();
        let config = layout.join(docker[0]["Config"].as_str().unwrap());
        let config: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["sleep", "9"])
        );
        assert!(config["config"].get("Cmd").is_none());
    }
}
