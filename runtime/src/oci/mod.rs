//! OCI bundles on the host, and the spec the guest agent gets.
//!
//! A bundle is a directory with `config.json` and (usually) `rootfs/`.
//! The guest reaches the host's files only through the sandbox's shared
//! directory (virtio-fs), so [`GuestLayout`] decides where the rootfs and
//! each bind-mount source appear there, and [`guest_spec`] rewrites the
//! spec's paths to those guest paths.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Where the guest agent mounts the sandbox's shared directory.
pub const GUEST_SHARED_DIR: &str = "/run/husk/shared";
/// The virtio-fs tag of the shared directory.
pub const SHARED_FS_TAG: &str = "husk";

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadBundleError {
    /// The bundle directory is not there.
    #[error("bundle {0:?} is not a directory")]
    NotADirectory(PathBuf),
    /// `config.json` could not be read.
    #[error("cannot read {path:?}")]
    Read {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a valid runtime spec.
    #[error("{path:?} is not a valid OCI runtime spec")]
    Parse {
        /// Its path.
        path: PathBuf,
        /// The parser's error (names the field, line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A required field is missing.
    #[error("{path:?}: {field} is required")]
    Missing {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// `root.path` does not name a directory.
    #[error("{path:?}: root.path {root:?} is not a directory")]
    Rootfs {
        /// The config file.
        path: PathBuf,
        /// The resolved rootfs path.
        root: PathBuf,
    },
    /// A bind mount's source is missing.
    #[error("{path:?}: mounts[{index}] ({destination:?}): source {source_path:?} does not exist")]
    MountSource {
        /// The config file.
        path: PathBuf,
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: PathBuf,
        /// The missing source.
        source_path: PathBuf,
    },
    /// `ociVersion` is not a 1.x runtime-spec version.
    #[error(
        "{path:?}: ociVersion {version:?} is not supported: husk runs runtime-spec 1.x bundles"
    )]
    Version {
        /// The config file.
        path: PathBuf,
        /// The version it names.
        version: String,
    },
    /// The spec has no network namespace: the host's network.
    #[error(
        "{path:?}: linux.namespaces has no \"network\" entry, which would give the container \
         the host's network: husk never gives a microVM the host's network; add \
         {{\"type\": \"network\"}} for a network of its own, or its \"path\" for one prepared \
         by CNI or `ip netns add`"
    )]
    HostNetwork {
        /// The config file.
        path: PathBuf,
    },
    /// A mount destination is not an absolute, normal path.
    #[error("{path:?}: mounts[{index}].destination {destination:?} must be absolute without '..'")]
    MountDestination {
        /// The config file.
        path: PathBuf,
        /// Index in `mounts`.
        index: usize,
        /// The destination.
        destination: PathBuf,
    },
}

/// A loaded and checked bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// Its `config.json`.
    pub spec: Spec,
    /// The rootfs directory on the host (absolute).
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Loads `dir/config.json` and checks what husk relies on.
    pub fn load(dir: &Path) -> Result<Self, LoadBundleError> {
        let dir = std::fs::canonicalize(dir)
            .map_err(|_| LoadBundleError::NotADirectory(dir.to_path_buf()))?;
        if !dir.is_dir() {
            return Err(LoadBundleError::NotADirectory(dir));
        }
        let path = dir.join("config.json");
        let text = std::fs::read(&path).map_err(|source| LoadBundleError::Read {
            path: path.clone(),
            source,
        })?;
        let spec: Spec =
            serde_json::from_slice(&text).map_err(|source| LoadBundleError::Parse {
                path: path.clone(),
                source,
            })?;
        let missing = |field| LoadBundleError::Missing {
            path: path.clone(),
            field,
        };
        let version = spec.version();
        let mut parts = version.split('.');
        let is_1x = parts.next() == Some("1")
            && parts
                .next()
                .is_some_and(|minor| minor.parse::<u32>().is_ok());
        if !is_1x {
            return Err(LoadBundleError::Version {
                path,
                version: version.clone(),
            });
        }
        let root = spec.root().as_ref().ok_or_else(|| missing("root"))?;
        let process = spec.process().as_ref().ok_or_else(|| missing("process"))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(missing("process.args"));
        }
        let rootfs = dir.join(root.path());
        if !rootfs.is_dir() {
            return Err(LoadBundleError::Rootfs { path, root: rootfs });
        }
        for (index, m) in spec.mounts().iter().flatten().enumerate() {
            if !is_clean_absolute(m.destination()) {
                return Err(LoadBundleError::MountDestination {
                    path,
                    index,
                    destination: m.destination().clone(),
                });
            }
            if let Some(source) = bind_source(m) {
                let source = dir.join(source);
                if source.symlink_metadata().is_err() {
                    return Err(LoadBundleError::MountSource {
                        path,
                        index,
                        destination: m.destination().clone(),
                        source_path: source,
                    });
                }
            }
        }
        let own_network = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        if !own_network {
            return Err(LoadBundleError::HostNetwork { path });
        }
        Ok(Self { dir, spec, rootfs })
    }

    /// The network namespace the spec names by path (prepared by CNI,
    /// Docker or `ip netns add`), whose links the guest takes over; `None`
    /// for a new, empty one.
    pub fn network_namespace(&self) -> Option<&Path> {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
            .and_then(|n| n.path().as_deref())
    }

    /// Whether the container's process wants a terminal.
    pub fn terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }
}

/// A path that is absolute and has no `..` or `.` components.
fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The source of a bind mount, if `m` is one.
fn bind_source(m: &oci_spec::runtime::Mount) -> Option<&Path> {
    let by_type = m.typ().as_deref() == Some("bind");
    let by_option = m
        .options()
        .iter()
        .flatten()
        .any(|o| o == "bind" || o == "rbind");
    if by_type || by_option {
        m.source().as_deref()
    } else {
        None
    }
}

/// One host path made visible inside the shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBind {
    /// The host path (directory or file).
    pub source: PathBuf,
    /// Path relative to the shared directory.
    pub target: PathBuf,
    /// Bound read-only on the host too, so not even a hostile guest
    /// kernel can write through virtio-fs.
    pub readonly: bool,
}

/// Where a bundle's files appear in the shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// The binds to make in the shared directory, rootfs first.
    pub binds: Vec<SharedBind>,
}

impl GuestLayout {
    /// The layout for a bundle alone in its VM: `rootfs` and `mounts/<index>`.
    pub fn for_bundle(bundle: &Bundle) -> Self {
        Self::for_bundle_under(bundle, Path::new(""))
    }

    /// The layout for one bundle of several sharing a VM: `rootfs` and
    /// `mounts/<index>` under `prefix` (relative to the shared directory).
    pub fn for_bundle_under(bundle: &Bundle, prefix: &Path) -> Self {
        let root_readonly = bundle
            .spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        let mut binds = vec![SharedBind {
            source: bundle.rootfs.clone(),
            target: prefix.join("rootfs"),
            readonly: root_readonly,
        }];
        for (index, m) in bundle.spec.mounts().iter().flatten().enumerate() {
            if let Some(source) = bind_source(m) {
                binds.push(SharedBind {
                    source: bundle.dir.join(source),
                    target: prefix.join(format!("mounts/{index}")),
                    readonly: m.options().iter().flatten().any(|o| o == "ro"),
                });
            }
        }
        Self { binds }
    }
}

/// The spec the agent gets: guest paths for the rootfs and bind sources,
/// no network namespace (the guest's network is the pod's) and no hooks
/// (the host runs them).
pub fn guest_spec(bundle: &Bundle) -> Spec {
    guest_spec_under(bundle, Path::new(""))
}

/// [`guest_spec`] for a bundle laid out by [`GuestLayout::for_bundle_under`].
pub fn guest_spec_under(bundle: &Bundle, prefix: &Path) -> Spec {
    let mut spec = bundle.spec.clone();
    let shared = Path::new(GUEST_SHARED_DIR).join(prefix);
    if let Some(root) = spec.root_mut() {
        root.set_path(shared.join("rootfs"));
    }
    if let Some(mounts) = spec.mounts_mut() {
        for (index, m) in mounts.iter_mut().enumerate() {
            if bind_source(m).is_some() {
                m.set_source(Some(shared.join(format!("mounts/{index}"))));
            }
        }
    }
    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces_mut() {
            namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
        }
        if let Some(resources) = linux.resources_mut() {
            drop_unset_zeros(resources);
        }
    }
    // Hooks run on the host (`container::hooks`), never in the guest.
    spec.set_hooks(None);
    spec
}

/// Docker writes `cpu.shares` and `blockIO.weight` as 0 when they are not
/// set, and runc reads 0 there as "not set": so does the guest.
fn drop_unset_zeros(resources: &mut oci_spec::runtime::LinuxResources) {
    if let Some(cpu) = resources.cpu_mut() {
        if cpu.shares() == Some(0) {
            cpu.set_shares(None);
        }
    }
    if let Some(block_io) = resources.block_io_mut() {
        if block_io.weight() == Some(0) {
            block_io.set_weight(None);
        }
    }
}

/// Why a container id was refused.
#[derive(Debug, thiserror::Error)]
#[error("container id {0:?} is not valid: use 1-1024 of [A-Za-z0-9_.+-], not starting with '.'")]
pub struct ContainerIdError(pub String);

/// Checks a container id as runc does (it names a directory).
pub fn validate_container_id(id: &str) -> Result<(), ContainerIdError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ContainerIdError(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> (tempfile::TempDir, Result<Bundle, LoadBundleError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let b = Bundle::load(dir.path());
        (dir, b)
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"terminal":true},
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/data","type":"bind","source":"rootfs","options":["rbind","ro"]}],
        "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/x"}]}}"#;

    #[test]
    fn loads_a_bundle_and_rewrites_paths_for_the_guest() {
        let (dir, b) = bundle_with(GOOD);
        let b = b.unwrap();
        assert!(b.terminal());
        let layout = GuestLayout::for_bundle(&b);
        assert_eq!(layout.binds.len(), 2);
        assert_eq!(layout.binds[0].target, PathBuf::from("rootfs"));
        assert_eq!(layout.binds[1].target, PathBuf::from("mounts/1"));
        assert!(layout.binds[0].readonly && layout.binds[1].readonly);
        assert_eq!(
            layout.binds[1].source,
            std::fs::canonicalize(dir.path()).unwrap().join("rootfs")
        );
        let spec = guest_spec(&b);
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/run/husk/shared/rootfs")
        );
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/husk/shared/mounts/1"))
        );
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert_eq!(ns.len(), 1, "the network namespace is the guest's");
    }

    #[test]
    fn dockers_zero_shares_and_weight_mean_unset_and_others_stay() {
        let with = |resources: &str| {
            let config = GOOD.replace(
                r#""linux":{"#,
                &format!(r#""linux":{{"resources":{resources},"#),
            );
            let (_dir, b) = bundle_with(&config);
            guest_spec(&b.unwrap())
                .linux()
                .clone()
                .unwrap()
                .resources()
                .clone()
                .unwrap()
        };
        let zero = with(r#"{"cpu":{"shares":0,"quota":50000},"blockIO":{"weight":0}}"#);
        let cpu = zero.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), None);
        assert_eq!(cpu.quota(), Some(50000));
        assert_eq!(zero.block_io().clone().unwrap().weight(), None);
        let set = with(r#"{"cpu":{"shares":512},"blockIO":{"weight":300}}"#);
        assert_eq!(set.cpu().clone().unwrap().shares(), Some(512));
        assert_eq!(set.block_io().clone().unwrap().weight(), Some(300));
    }

    #[test]
    fn bundles_sharing_a_vm_are_laid_out_under_their_prefix() {
        let (_dir, b) = bundle_with(GOOD);
        let b = b.unwrap();
        let layout = GuestLayout::for_bundle_under(&b, Path::new("c2"));
        assert_eq!(layout.binds[0].target, PathBuf::from("c2/rootfs"));
        assert_eq!(layout.binds[1].target, PathBuf::from("c2/mounts/1"));
        let spec = guest_spec_under(&b, Path::new("c2"));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/run/husk/shared/c2/rootfs")
        );
        assert_eq!(
            spec.mounts().as_ref().unwrap()[1].source().as_deref(),
            Some(Path::new("/run/husk/shared/c2/mounts/1"))
        );
    }

    #[test]
    fn only_runtime_spec_1x_bundles_are_run() {
        for version in ["2.0.0", "0.9", "x", ""] {
            let (_d, b) = bundle_with(&GOOD.replace("1.0.2", version));
            let e = b.unwrap_err().to_string();
            assert!(e.contains(&format!("ociVersion {version:?}")), "{e}");
        }
        for version in ["1.0.0", "1.1.0", "1.2.0-rc.1"] {
            let (_d, b) = bundle_with(&GOOD.replace("1.0.2", version));
            b.unwrap();
        }
    }

    #[test]
    fn the_hosts_network_is_refused_with_the_alternative() {
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#,
        );
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains("host's network") && e.contains("ip netns add"),
            "{e}"
        );
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
        );
        assert!(matches!(b, Err(LoadBundleError::HostNetwork { .. })));
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"network"}]}}"#,
        );
        assert_eq!(b.unwrap().network_namespace(), None);
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/pod"}]}}"#,
        );
        assert_eq!(
            b.unwrap().network_namespace(),
            Some(Path::new("/var/run/netns/pod"))
        );
    }

    #[test]
    fn bad_bundles_name_what_is_wrong() {
        let (_d, b) = bundle_with("{");
        assert!(matches!(b, Err(LoadBundleError::Parse { .. })));
        let (_d, b) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#);
        assert!(b.unwrap_err().to_string().contains("process is required"));
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
        );
        assert!(b.unwrap_err().to_string().contains("root.path"));
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
        );
        assert!(b.unwrap_err().to_string().contains("process.args"));
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}},
            "mounts":[{"destination":"/x","type":"bind","source":"/nonexistent/src"}]}"#,
        );
        assert!(b.unwrap_err().to_string().contains("/nonexistent/src"));
        let (_d, b) = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["a"],"cwd":"/","user":{"uid":0,"gid":0}},
            "mounts":[{"destination":"/x/../etc","type":"tmpfs","source":"tmpfs"}]}"#,
        );
        assert!(b.unwrap_err().to_string().contains("mounts[0].destination"));
        assert!(matches!(
            Bundle::load(Path::new("/nonexistent/b")),
            Err(LoadBundleError::NotADirectory(_))
        ));
    }

    #[test]
    fn container_ids_follow_runc() {
        for ok in ["a", "abc-1_2.3+4", &"x".repeat(1024)] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "../x", &"x".repeat(1025)] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
    }
}
