//! The VMM's configuration: inert data, checked before anything is built.
//!
//! `husk vmm` reads it as JSON; `husk boot`, `husk check` and later the
//! sandbox code fill it in. Unknown fields are errors.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most vCPUs a microVM may have.
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory a Linux guest with the agent boots in.
pub const MIN_MEMORY_MIB: u32 = 32;
/// Most guest memory a microVM may have (also capped by host memory).
pub const MAX_MEMORY_MIB: u32 = 256 * 1024;
/// Lowest CID a guest may have (0–2 are reserved by vsock).
pub const MIN_GUEST_CID: u64 = 3;
/// Most network cards a microVM may have.
pub const MAX_NICS: usize = 8;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub enum ConsoleConfig {
    /// Discarded.
    Off,
    /// The VMM's standard output (and standard input to the guest).
    Stdout,
    /// A log file, rotated once at `max_bytes` (the older part is kept as
    /// `<path>.1`), so it never holds more than twice that.
    Log {
        /// Path of the log.
        path: PathBuf,
        /// Size at which the log is rotated once.
        #[serde(default = "default_console_log_bytes")]
        max_bytes: u64,
    },
}

fn default_console_log_bytes() -> u64 {
    512 * 1024
}

/// The vsock device and its host-side Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id.
    pub guest_cid: u64,
    /// Unix socket the host connects to (`CONNECT <port>`); guest
    /// connections to host port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

/// The virtio-fs device: a host directory the guest mounts by tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The tag the guest mounts (`mount -t virtiofs TAG DIR`, or
    /// `rootfstype=virtiofs root=TAG`): 1 to 36 bytes, no NUL or newline.
    pub tag: String,
    /// The host directory the guest sees; an existing directory.
    pub shared_dir: PathBuf,
}

/// A virtio-net device and the tap behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The tap's file descriptor number in the VMM process, inherited
    /// from whoever started it: opened with `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`, in the pod's network namespace. The VMM never opens
    /// taps itself.
    pub tap_fd: i32,
    /// The guest NIC's MAC address, `"aa:bb:cc:dd:ee:ff"` in JSON: a
    /// unicast address.
    #[serde(with = "mac_address")]
    pub mac: [u8; 6],
    /// The guest NIC's MTU (at least 68; normally the tap's own).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn default_mtu() -> u16 {
    1500
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex digits in either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Serde for a MAC address as its usual text.
mod mac_address {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_mac(mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        super::parse_mac(&text).ok_or_else(|| {
            de::Error::invalid_value(
                de::Unexpected::Str(&text),
                &"a MAC address aa:bb:cc:dd:ee:ff",
            )
        })
    }
}

/// Everything the VMM needs to build and run one microVM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest kernel: an ELF `vmlinux` with a PVH entry note.
    pub kernel: PathBuf,
    /// Initramfs (cpio newc, optionally gzip-compressed).
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// Arguments appended to the kernel command line husk builds.
    #[serde(default)]
    pub cmdline: String,
    /// Boot with a verbose kernel log (no `quiet`).
    #[serde(default)]
    pub verbose_boot: bool,
    /// Where the serial console goes.
    #[serde(default = "default_console")]
    pub console: ConsoleConfig,
    /// The vsock device, if any.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// The virtio-fs device, if any.
    #[serde(default)]
    pub fs: Option<FsConfig>,
    /// The network cards, at most [`MAX_NICS`]; the guest names them
    /// `eth0`, `eth1`, … in this order.
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// Apply the seccomp filters (off only for debugging).
    #[serde(default = "default_true")]
    pub seccomp: bool,
}

fn default_console() -> ConsoleConfig {
    ConsoleConfig::Off
}

fn default_true() -> bool {
    true
}

/// Why a [`VmConfig`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// The config could not be read.
    #[error("cannot read the VM config")]
    Read(#[source] std::io::Error),
    /// The config is not valid JSON of the right shape.
    #[error("VM config is not valid")]
    Parse(#[source] serde_json::Error),
    /// `vcpus` is out of range.
    #[error("vcpus = {0}: must be between 1 and {MAX_VCPUS}")]
    Vcpus(u8),
    /// `memory_mib` is out of range.
    #[error("memory_mib = {got}: must be between {MIN_MEMORY_MIB} and {max} MiB")]
    Memory {
        /// Requested size.
        got: u32,
        /// Largest size allowed on this host.
        max: u64,
    },
    /// A file the VM needs is missing or unreadable.
    #[error("{what} {path:?} cannot be opened")]
    File {
        /// Which file (kernel, initramfs).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs is neither cpio newc nor gzip.
    #[error("initramfs {0:?} is not a cpio newc archive (plain or gzip-compressed)")]
    InitramfsFormat(PathBuf),
    /// The kernel is not an ELF file.
    #[error("kernel {0:?} is not an ELF vmlinux (husk boots vmlinux through its PVH entry)")]
    KernelFormat(PathBuf),
    /// The vsock socket path is already taken.
    #[error("vsock socket {0:?} already exists")]
    VsockPathExists(PathBuf),
    /// The guest CID is reserved.
    #[error("vsock guest_cid = {0}: CIDs below {MIN_GUEST_CID} and 4294967295 (any) are reserved")]
    GuestCid(u64),
    /// The virtio-fs tag does not fit the device.
    #[error("fs tag = {0:?}: must be 1 to {max} bytes without NUL or newline", max = crate::devices::virtio::fs::TAG_MAX_LEN)]
    FsTag(String),
    /// The virtio-fs shared directory is not a directory.
    #[error("fs shared_dir {0:?} is not a directory")]
    FsSharedDir(PathBuf),
    /// The extra command line holds a NUL byte.
    #[error("cmdline holds a NUL byte")]
    CmdlineNul,
    /// Too many network cards.
    #[error("net: {0} NICs, at most {MAX_NICS}")]
    NetCount(usize),
    /// A NIC's `tap_fd` is not a tap the device can use.
    #[error("net[{index}].tap_fd = {fd}")]
    NetTapFd {
        /// Which NIC.
        index: usize,
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        #[source]
        source: crate::devices::virtio::net::TapFdError,
    },
    /// Two NICs name the same `tap_fd`.
    #[error("net[{index}].tap_fd = {fd} is already the tap of net[{first}]")]
    NetTapFdShared {
        /// The later NIC.
        index: usize,
        /// The descriptor number.
        fd: i32,
        /// The earlier NIC.
        first: usize,
    },
    /// A NIC's MAC is multicast, broadcast or all zeros.
    #[error("net[{index}].mac = {mac}: must be a unicast address, not all zeros")]
    NetMac {
        /// Which NIC.
        index: usize,
        /// The address.
        mac: String,
    },
    /// Two NICs have the same MAC.
    #[error("net[{index}].mac = {mac} is already the MAC of net[{first}]")]
    NetMacShared {
        /// The later NIC.
        index: usize,
        /// The address.
        mac: String,
        /// The earlier NIC.
        first: usize,
    },
    /// A NIC's MTU is below what a guest accepts.
    #[error("net[{index}].mtu = {mtu}: must be at least {min}", min = crate::devices::virtio::net::MIN_MTU)]
    NetMtu {
        /// Which NIC.
        index: usize,
        /// The MTU.
        mtu: u16,
    },
}

impl VmConfig {
    /// Parses a JSON config; unknown fields are errors.
    pub fn from_json(json: &str) -> Result<Self, VmConfigError> {
        serde_json::from_str(json).map_err(VmConfigError::Parse)
    }

    /// Reads a JSON config from a file.
    pub fn from_file(path: &Path) -> Result<Self, VmConfigError> {
        let json = std::fs::read_to_string(path).map_err(VmConfigError::Read)?;
        Self::from_json(&json)
    }

    /// Checks every field against the host, before anything is created.
    pub fn validate(&self) -> Result<(), VmConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(VmConfigError::Vcpus(self.vcpus));
        }
        let max = host_memory_mib().min(u64::from(MAX_MEMORY_MIB));
        if self.memory_mib < MIN_MEMORY_MIB || u64::from(self.memory_mib) > max {
            return Err(VmConfigError::Memory {
                got: self.memory_mib,
                max,
            });
        }
        let magic = read_magic("kernel", &self.kernel)?;
        if magic[..4] != *b"\x7fELF" {
            return Err(VmConfigError::KernelFormat(self.kernel.clone()));
        }
        if let Some(initramfs) = &self.initramfs {
            let magic = read_magic("initramfs", initramfs)?;
            let cpio = magic.starts_with(b"07070");
            let gzip = magic.starts_with(&[0x1f, 0x8b]);
            if !cpio && !gzip {
                return Err(VmConfigError::InitramfsFormat(initramfs.clone()));
            }
        }
        if self.cmdline.contains('\0') {
            return Err(VmConfigError::CmdlineNul);
        }
        if let Some(vsock) = &self.vsock {
            if vsock.guest_cid < MIN_GUEST_CID || vsock.guest_cid >= u64::from(u32::MAX) {
                return Err(VmConfigError::GuestCid(vsock.guest_cid));
            }
            if vsock.uds_path.symlink_metadata().is_ok() {
                return Err(VmConfigError::VsockPathExists(vsock.uds_path.clone()));
            }
        }
        if let Some(fs) = &self.fs {
            if !crate::devices::virtio::fs::validate_tag(&fs.tag) {
                return Err(VmConfigError::FsTag(fs.tag.clone()));
            }
            let meta = std::fs::metadata(&fs.shared_dir).map_err(|source| VmConfigError::File {
                what: "fs shared_dir",
                path: fs.shared_dir.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(VmConfigError::FsSharedDir(fs.shared_dir.clone()));
            }
        }
        self.validate_net()
    }

    /// Checks the NICs: their number, each MAC and MTU, and that each
    /// `tap_fd` is a tap of its own (opened with `IFF_VNET_HDR`).
    fn validate_net(&self) -> Result<(), VmConfigError> {
        if self.net.len() > MAX_NICS {
            return Err(VmConfigError::NetCount(self.net.len()));
        }
        for (index, nic) in self.net.iter().enumerate() {
            let mac = || format_mac(&nic.mac);
            if nic.mac[0] & 1 != 0 || nic.mac == [0; 6] {
                return Err(VmConfigError::NetMac { index, mac: mac() });
            }
            if nic.mtu < crate::devices::virtio::net::MIN_MTU {
                return Err(VmConfigError::NetMtu {
                    index,
                    mtu: nic.mtu,
                });
            }
            let earlier = &self.net[..index];
            if let Some(first) = earlier.iter().position(|n| n.mac == nic.mac) {
                return Err(VmConfigError::NetMacShared {
                    index,
                    mac: mac(),
                    first,
                });
            }
            if let Some(first) = earlier.iter().position(|n| n.tap_fd == nic.tap_fd) {
                return Err(VmConfigError::NetTapFdShared {
                    index,
                    fd: nic.tap_fd,
                    first,
                });
            }
            crate::devices::virtio::net::check_tap_fd(nic.tap_fd).map_err(|source| {
                VmConfigError::NetTapFd {
                    index,
                    fd: nic.tap_fd,
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Reads the first six bytes of a file (zero-padded if shorter).
fn read_magic(what: &'static str, path: &Path) -> Result<[u8; 6], VmConfigError> {
    let file_err = |source| VmConfigError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(file_err)?;
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]).map_err(file_err)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(magic)
}

/// Host memory in MiB (a guest can never have more).
fn host_memory_mib() -> u64 {
    // SAFETY: sysconf only reads system values.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page_size <= 0 {
        return u64::from(MAX_MEMORY_MIB);
    }
    (pages as u64).saturating_mul(page_size as u64) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn config(kernel: &Path) -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 128,
            kernel: kernel.to_path_buf(),
            initramfs: None,
            cmdline: String::new(),
            verbose_boot: false,
            console: ConsoleConfig::Off,
            vsock: None,
            fs: None,
            net: Vec::new(),
            seccomp: true,
        }
    }

    #[test]
    fn accepts_a_sane_config_and_round_trips_json() {
        let kernel = file_with(b"\x7fELF\x02\x01");
        let initramfs = file_with(b"070701...");
        let mut c = config(kernel.path());
        c.initramfs = Some(initramfs.path().to_path_buf());
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(VmConfig::from_json(&json).unwrap(), c);
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = VmConfig::from_json(r#"{"vcpus":1,"memory_mib":128,"kernel":"/k","bogus":1}"#)
            .unwrap_err();
        assert!(format!("{:?}", err).contains("bogus"), "{err:?}");
    }

    #[test]
    fn rejects_bad_sizes_files_and_formats() {
        let kernel = file_with(b"\x7fELF\x02\x01");
        let mut c = config(kernel.path());
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(VmConfigError::Vcpus(0))));
        c.vcpus = 200;
        assert!(matches!(c.validate(), Err(VmConfigError::Vcpus(200))));
        c.vcpus = 1;
        c.memory_mib = 0;
        assert!(matches!(c.validate(), Err(VmConfigError::Memory { .. })));
        c.memory_mib = u32::MAX;
        assert!(matches!(c.validate(), Err(VmConfigError::Memory { .. })));
        c.memory_mib = 128;

        let text = file_with(b"hello world");
        let mut bad_kernel = config(text.path());
        assert!(matches!(
            bad_kernel.validate(),
            Err(VmConfigError::KernelFormat(_))
        ));
        bad_kernel.kernel = PathBuf::from("/nonexistent/vmlinux");
        let err = bad_kernel.validate().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");

        c.initramfs = Some(text.path().to_path_buf());
        assert!(matches!(
            c.validate(),
            Err(VmConfigError::InitramfsFormat(_))
        ));
        c.initramfs = None;

        let taken = file_with(b"");
        c.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: taken.path().to_path_buf(),
        });
        assert!(matches!(
            c.validate(),
            Err(VmConfigError::VsockPathExists(_))
        ));
        c.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: PathBuf::from("/nonexistent/v.sock"),
        });
        assert!(matches!(c.validate(), Err(VmConfigError::GuestCid(2))));
    }

    #[test]
    fn checks_the_fs_tag_and_shared_dir() {
        let kernel = file_with(b"\x7fELF\x02\x01");
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(kernel.path());
        let fs = |tag: &str, shared_dir: &Path| {
            Some(FsConfig {
                tag: tag.into(),
                shared_dir: shared_dir.to_path_buf(),
            })
        };
        c.fs = fs("husk", dir.path());
        c.validate().unwrap();
        c.fs = fs(&"t".repeat(36), dir.path());
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(VmConfig::from_json(&json).unwrap(), c);

        for tag in ["", "a\0b", "a\nb", &"t".repeat(37)] {
            c.fs = fs(tag, dir.path());
            let err = c.validate().unwrap_err();
            assert!(matches!(err, VmConfigError::FsTag(_)), "{tag:?}: {err}");
            assert!(err.to_string().contains("fs tag"), "{err}");
        }
        let missing = dir.path().join("missing");
        c.fs = fs("husk", &missing);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, VmConfigError::File { .. }), "{err}");
        assert!(err.to_string().contains("shared_dir"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        c.fs = fs("husk", kernel.path());
        let err = c.validate().unwrap_err();
        assert!(matches!(err, VmConfigError::FsSharedDir(_)), "{err}");

        let err = VmConfig::from_json(
            r#"{"vcpus":1,"memory_mib":128,"kernel":"/k","fs":{"tag":"a","shared_dir":"/","cache":1}}"#,
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("cache"), "{err:?}");
    }

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn nic(tap_fd: i32, mac: [u8; 6]) -> NetConfig {
        NetConfig {
            tap_fd,
            mac,
            mtu: 1500,
        }
    }

    #[test]
    fn macs_are_text_in_json() {
        assert_eq!(format_mac(&MAC), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02"), Some(MAC));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "02-42-ac-11-00-02",
            "zz:42:ac:11:00:02",
            "+2:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
        let json = serde_json::to_string(&nic(3, MAC)).unwrap();
        assert_eq!(json, r#"{"tap_fd":3,"mac":"02:42:ac:11:00:02","mtu":1500}"#);
        let base = r#"{"vcpus":1,"memory_mib":128,"kernel":"/k","#;
        let c = VmConfig::from_json(&format!(
            r#"{base}"net":[{{"tap_fd":3,"mac":"02:42:ac:11:00:02"}}]}}"#
        ))
        .unwrap();
        assert_eq!(c.net, [nic(3, MAC)]);
        assert!(VmConfig::from_json(&format!("{base}\"kernel2\":1}}")).is_err());
        for bad in [
            r#"[{"tap_fd":3,"mac":"02:42:ac:11:00"}]"#,
            r#"[{"tap_fd":3,"mac":[2,66,172,17,0,2]}]"#,
            r#"[{"tap_fd":3,"mac":"02:42:ac:11:00:02","queues":2}]"#,
            r#"[{"mac":"02:42:ac:11:00:02"}]"#,
        ] {
            let json = format!(r#"{base}"net":{bad}}}"#);
            assert!(VmConfig::from_json(&json).is_err(), "{bad}");
        }
        // No NICs unless asked for.
        let c = VmConfig::from_json(r#"{"vcpus":1,"memory_mib":128,"kernel":"/k"}"#).unwrap();
        assert!(c.net.is_empty());
    }

    #[test]
    fn checks_each_nic_and_names_the_field() {
        use std::os::fd::AsRawFd;

        use crate::devices::virtio::net::testing::NetnsTap;
        use crate::devices::virtio::net::TapFdError;

        let kernel = file_with(b"\x7fELF\x02\x01");
        let mut c = config(kernel.path());
        let expect = |c: &VmConfig, what: &str| {
            let err = c.validate().unwrap_err();
            let chain = crate::error_chain(&err);
            assert!(chain.contains(what), "{chain}");
            err
        };

        // Numbers that are no tap.
        c.net = vec![nic(-1, MAC)];
        let err = expect(&c, "net[0].tap_fd = -1: not an open file descriptor");
        assert!(matches!(
            err,
            VmConfigError::NetTapFd {
                source: TapFdError::NotOpen(_),
                ..
            }
        ));
        let (r, _w) = nix::unistd::pipe().unwrap();
        c.net = vec![nic(r.as_raw_fd(), MAC)];
        let err = expect(&c, "not a tap");
        assert!(matches!(err, VmConfigError::NetTapFd { index: 0, .. }));

        // Addresses, MTUs and counts are checked before the descriptors.
        c.net = vec![nic(-1, [0x03, 0, 0, 0, 0, 1])];
        expect(
            &c,
            "net[0].mac = 03:00:00:00:00:01: must be a unicast address",
        );
        c.net = vec![nic(-1, [0xff; 6])];
        assert!(matches!(c.validate(), Err(VmConfigError::NetMac { .. })));
        c.net = vec![nic(-1, [0; 6])];
        assert!(matches!(c.validate(), Err(VmConfigError::NetMac { .. })));
        c.net = vec![NetConfig {
            mtu: 67,
            ..nic(-1, MAC)
        }];
        expect(&c, "net[0].mtu = 67: must be at least 68");
        c.net = (0..9)
            .map(|i| nic(100 + i, [2, 0, 0, 0, 0, i as u8]))
            .collect();
        expect(&c, "net: 9 NICs, at most 8");

        let Some(tap) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)
        else {
            return;
        };
        let Some(plain) = NetnsTap::create(libc::IFF_TAP | libc::IFF_NO_PI) else {
            return;
        };
        let fd = tap.tap.as_raw_fd();
        c.net = vec![nic(fd, MAC)];
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(VmConfig::from_json(&json).unwrap(), c);

        c.net = vec![nic(plain.tap.as_raw_fd(), MAC)];
        expect(&c, "needs IFF_TAP | IFF_NO_PI | IFF_VNET_HDR");
        c.net = vec![nic(fd, MAC), nic(fd, [2, 0, 0, 0, 0, 9])];
        expect(
            &c,
            &format!("net[1].tap_fd = {fd} is already the tap of net[0]"),
        );
        c.net = vec![nic(fd, MAC), nic(-1, MAC)];
        expect(
            &c,
            "net[1].mac = 02:42:ac:11:00:02 is already the MAC of net[0]",
        );
    }
}
