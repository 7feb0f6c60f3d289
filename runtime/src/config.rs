//! The husk configuration file, `/etc/husk/config.toml`.
//!
//! Its path can be overridden with `HUSK_CONFIG` (and, for the shim, its
//! `ConfigPath` option). A missing file at the default path means built-in
//! defaults; a missing file at a path the user named is an error, and so
//! is any unknown key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration is read from unless overridden.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/husk/config.toml";
/// Environment variable naming another configuration file.
pub const CONFIG_ENV: &str = "HUSK_CONFIG";
/// Environment variable naming the build cache (default `~/.cache/husk`).
pub const CACHE_DIR_ENV: &str = "HUSK_CACHE_DIR";

/// The husk configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HuskConfig {
    /// Guest kernel (vmlinux with a PVH note).
    pub kernel: PathBuf,
    /// Guest initramfs holding the agent as `/init`.
    pub initramfs: PathBuf,
    /// vCPUs of a microVM when nothing asks for more.
    pub default_vcpus: u8,
    /// Guest memory of a microVM when nothing asks for more, in MiB.
    pub default_memory_mib: u32,
    /// Verbose guest kernel log on the console log.
    pub debug_console: bool,
    /// Apply the VMM's seccomp filters.
    pub seccomp: bool,
    /// Where sandboxes keep their sockets and logs.
    pub state_dir: PathBuf,
    /// Log level of husk's own processes (`error` … `trace`).
    pub log_level: String,
}

impl Default for HuskConfig {
    fn default() -> Self {
        let cache = cache_dir();
        Self {
            kernel: cache.join("vmlinux"),
            initramfs: cache.join("husk-initramfs.cpio"),
            default_vcpus: 1,
            default_memory_mib: 128,
            debug_console: false,
            seccomp: true,
            state_dir: PathBuf::from("/run/husk"),
            log_level: "info".into(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file could not be read.
    #[error("cannot read husk config {path:?}")]
    Read {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid (syntax, unknown key, wrong type).
    #[error("husk config {path:?} is not valid")]
    Parse {
        /// Its path.
        path: PathBuf,
        /// The parser's error, naming the key.
        #[source]
        source: toml::de::Error,
    },
}

/// The build cache: `$HUSK_CACHE_DIR`, else `$HOME/.cache/husk`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/husk")
}

impl HuskConfig {
    /// Loads the configuration: `explicit`, else `$HUSK_CONFIG`, else the
    /// default path (whose absence means defaults).
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), LoadConfigError> {
        let named = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        let path = match named {
            Some(path) => path,
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !default.exists() {
                    return Ok((Self::default(), None));
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| LoadConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = Self::from_toml(&text).map_err(|source| LoadConfigError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok((config, Some(path)))
    }

    /// A VM of `vcpus` and `memory_mib` booting the configured kernel and
    /// initramfs, its console kept (the sandbox sends it to a log).
    pub fn vm_config(&self, vcpus: u8, memory_mib: u32) -> crate::vmm::VmConfig {
        crate::vmm::VmConfig {
            vcpus,
            memory_mib,
            kernel: self.kernel.clone(),
            initramfs: Some(self.initramfs.clone()),
            cmdline: String::new(),
            verbose_boot: self.debug_console,
            console: crate::vmm::ConsoleConfig::Stdout,
            vsock: None,
            seccomp: self.seccomp,
            fs: None,
            net: Vec::new(),
        }
    }

    /// Parses the TOML text of a configuration.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_fail() {
        let c = HuskConfig::from_toml("default_vcpus = 2\nkernel = \"/k\"\n").unwrap();
        assert_eq!(c.default_vcpus, 2);
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.default_memory_mib, 128);
        let err = HuskConfig::from_toml("kernal = \"/k\"\n").unwrap_err();
        assert!(err.to_string().contains("kernal"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist() {
        let err = HuskConfig::load(Some(Path::new("/nonexistent/husk.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/husk.toml"));
    }
}
