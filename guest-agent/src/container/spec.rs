//! The OCI spec, parsed and checked, then turned into a plan for the
//! helper. Everything a container can get wrong is found here, before any
//! process, mount or cgroup exists, and named by its field.

use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{
    IOPriorityClass, LinuxDeviceType, LinuxNamespaceType, LinuxPersonalityDomain, LinuxResources,
    Process, Spec,
};

use super::caps::{plan_caps, rlimit_resource};
use super::mounts::{binds_dev, default_devices, plan_mount, rootfs_propagation};
use super::plan::{ContainerPlan, DevicePlan, NsJoin, ProcessPlan, RlimitPlan, SeccompPlan};
use super::seccomp::plan_seccomp;

/// A field of the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field, e.g. `process.user.uid` (empty: the document).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl SpecError {
    /// A new error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error inside `outer` (a request field).
    pub fn within(self, outer: &str) -> Self {
        let field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}: {}", self.field)
        };
        Self { field, ..self }
    }
}

/// Deserializes `bytes` (JSON of a `T`), naming the bad field on failure.
pub fn from_json<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> Result<T, SpecError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(bytes);
        let (field, reason) = super::json_path::describe(&text, &e);
        SpecError::new(field, reason)
    })
}

/// A container, checked and converted.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// What the helper does.
    pub plan: ContainerPlan,
    /// `linux.resources`.
    pub resources: Option<LinuxResources>,
    /// `linux.namespaces` pid entry with a path: join it instead of a new one.
    pub join_pid_ns: Option<PathBuf>,
    /// `process.consoleSize` as (rows, cols).
    pub console_size: Option<(u16, u16)>,
    /// Namespaces an exec joins besides the pid namespace (CLONE_NEW* bits).
    pub exec_namespaces: i32,
}

/// An exec's process, checked and converted.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// What the helper does.
    pub plan: ProcessPlan,
    /// `consoleSize` as (rows, cols).
    pub console_size: Option<(u16, u16)>,
}

fn no_nul(field: &str, s: &str) -> Result<(), SpecError> {
    if s.contains('\0') {
        return Err(SpecError::new(field, "contains a NUL byte"));
    }
    Ok(())
}

fn absolute(field: &str, p: &Path) -> Result<(), SpecError> {
    if !p.is_absolute() {
        return Err(SpecError::new(
            field,
            format!("{p:?} is not an absolute path"),
        ));
    }
    no_nul(field, &p.to_string_lossy())
}

/// Checks and converts a process object. `prefix` is `process.` inside a
/// spec and empty for an exec's `process_json`; `terminal` is what the
/// request's `Stdio` asked for.
pub fn plan_process(
    prefix: &str,
    p: &Process,
    terminal: bool,
    seccomp: Option<SeccompPlan>,
    cap_last_cap: u8,
) -> Result<ProcessConfig, SpecError> {
    let f = |name: &str| format!("{prefix}{name}");
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::new(f("args"), "empty: nothing to run"));
    }
    for (i, a) in args.iter().enumerate() {
        no_nul(&f(&format!("args[{i}]")), a)?;
    }
    let env = p.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        no_nul(&f(&format!("env[{i}]")), e)?;
    }
    absolute(&f("cwd"), p.cwd())?;
    if p.terminal().unwrap_or(false) != terminal {
        return Err(SpecError::new(
            f("terminal"),
            format!(
                "is {} but the request's stdio.terminal is {terminal}",
                p.terminal().unwrap_or(false)
            ),
        ));
    }
    let user = p.user();
    if let Some(name) = user.username() {
        no_nul(&f("user.username"), name)?;
        if name.is_empty() || name.contains(':') || name.contains('\n') {
            return Err(SpecError::new(
                f("user.username"),
                format!("{name:?} is not a user name"),
            ));
        }
    }
    let umask = user.umask().unwrap_or(0o022);
    if umask > 0o777 {
        return Err(SpecError::new(
            f("user.umask"),
            format!("{umask:#o} is above 0777"),
        ));
    }
    let mut rlimits: Vec<RlimitPlan> = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let field = f(&format!("rlimits[{i}]"));
        let resource = rlimit_resource(r.typ());
        if rlimits.iter().any(|x| x.resource == resource) {
            return Err(SpecError::new(field, format!("{} is set twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(SpecError::new(
                field,
                format!(
                    "soft limit {} is above the hard limit {}",
                    r.soft(),
                    r.hard()
                ),
            ));
        }
        rlimits.push(RlimitPlan {
            field,
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let caps = p
        .capabilities()
        .as_ref()
        .map(|c| plan_caps(prefix, c, cap_last_cap))
        .transpose()?;
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::new(
                f("oomScoreAdj"),
                format!("{adj} is outside -1000..1000"),
            ));
        }
    }
    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty()) {
        log::debug!("{prefix}apparmorProfile {profile:?} ignored: the guest has no AppArmor");
    }
    if let Some(label) = p.selinux_label().as_deref().filter(|s| !s.is_empty()) {
        log::debug!("{prefix}selinuxLabel {label:?} ignored: the guest has no SELinux");
    }
    if p.scheduler().is_some() {
        return Err(SpecError::new(
            f("scheduler"),
            "scheduling policies are not supported",
        ));
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(SpecError::new(f("execCPUAffinity"), "is not supported"));
    }
    let io_priority = match p.io_priority() {
        None => None,
        Some(io) => {
            let class = match io.class() {
                IOPriorityClass::IoprioClassRt => 1,
                IOPriorityClass::IoprioClassBe => 2,
                IOPriorityClass::IoprioClassIdle => 3,
            };
            if !(0..=7).contains(&io.priority()) {
                return Err(SpecError::new(
                    f("ioPriority.priority"),
                    format!("{} is outside 0..7", io.priority()),
                ));
            }
            Some((class << 13) | io.priority() as i32)
        }
    };
    let console_size = p.console_size().map(|b| {
        (
            b.height().min(u64::from(u16::MAX)) as u16,
            b.width().min(u64::from(u16::MAX)) as u16,
        )
    });
    Ok(ProcessConfig {
        plan: ProcessPlan {
            args,
            env,
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            username: user.username().clone(),
            umask,
            rlimits,
            caps,
            cap_last_cap,
            no_new_privileges: p.no_new_privileges().unwrap_or(false),
            seccomp,
            oom_score_adj: p.oom_score_adj(),
            io_priority,
            personality: None,
            terminal,
        },
        console_size,
    })
}

/// Whether `key` is a sysctl name (`net.ipv4.ip_forward` or with `/`).
fn sysctl_path(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !key.split(['.', '/']).any(|p| p.is_empty() || p == "..");
    ok.then(|| key.replace('.', "/"))
}

/// Checks and converts a container spec. `terminal` is the request's
/// `stdio.terminal`.
pub fn plan_container(
    spec: &Spec,
    terminal: bool,
    cap_last_cap: u8,
) -> Result<ContainerConfig, SpecError> {
    if !spec.version().starts_with("1.") {
        log::debug!("ociVersion {:?}: read as a 1.x spec", spec.version());
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::new("root", "missing"))?;
    absolute("root.path", root.path())?;
    if spec.uid_mappings().is_some() || spec.gid_mappings().is_some() {
        return Err(SpecError::new(
            "uidMappings",
            "user namespaces are not supported yet",
        ));
    }
    if spec.hooks().is_some() {
        log::debug!("hooks ignored: they are the host runtime's business");
    }
    for (field, name) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if let Some(n) = name {
            no_nul(field, n)?;
            if n.len() > 64 {
                return Err(SpecError::new(
                    field,
                    format!("{} bytes is longer than 64", n.len()),
                ));
            }
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    // Namespaces: pid, mount, ipc and uts are always new unless joined by
    // path; the network is the guest's.
    let mut join_namespaces = Vec::new();
    let mut join_pid_ns = None;
    let mut new_cgroup_ns = false;
    let mut exec_namespaces =
        (CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC).bits();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        let path = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = path {
            absolute(&format!("{field}.path"), p)?;
        }
        let nstype = match ns.typ() {
            LinuxNamespaceType::User => {
                return Err(SpecError::new(
                    field,
                    "user namespaces are not supported yet",
                ))
            }
            LinuxNamespaceType::Time => {
                return Err(SpecError::new(field, "time namespaces are not supported"))
            }
            LinuxNamespaceType::Network => {
                log::debug!(
                    "{field}: network namespace ignored: containers use the guest's network"
                );
                continue;
            }
            LinuxNamespaceType::Mount if path.is_some() => {
                return Err(SpecError::new(
                    format!("{field}.path"),
                    "joining an existing mount namespace is not supported",
                ))
            }
            LinuxNamespaceType::Mount => continue,
            LinuxNamespaceType::Pid => {
                join_pid_ns = path.cloned();
                continue;
            }
            LinuxNamespaceType::Cgroup => {
                exec_namespaces |= CloneFlags::CLONE_NEWCGROUP.bits();
                if path.is_none() {
                    new_cgroup_ns = true;
                    continue;
                }
                CloneFlags::CLONE_NEWCGROUP
            }
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        };
        if let Some(p) = path {
            join_namespaces.push(NsJoin {
                nstype: nstype.bits(),
                path: p.clone(),
                field,
            });
        }
    }
    if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
        return Err(SpecError::new(
            "linux.uidMappings",
            "user namespaces are not supported yet",
        ));
    }
    if linux.intel_rdt().is_some() {
        return Err(SpecError::new("linux.intelRdt", "is not supported"));
    }
    if linux.memory_policy().is_some() {
        return Err(SpecError::new("linux.memoryPolicy", "is not supported"));
    }
    if linux.time_offsets().is_some() {
        return Err(SpecError::new(
            "linux.timeOffsets",
            "time namespaces are not supported",
        ));
    }
    if linux.net_devices().is_some() {
        log::debug!("linux.netDevices ignored: containers use the guest's network");
    }
    if let Some(p) = linux.cgroups_path() {
        log::debug!("linux.cgroupsPath {p:?} ignored: containers live under husk/<id>");
    }
    if linux.mount_label().is_some() {
        log::debug!("linux.mountLabel ignored: the guest has no SELinux");
    }
    let personality = match linux.personality() {
        None => None,
        Some(p) => {
            if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(SpecError::new(
                    "linux.personality.flags",
                    "personality flags are not supported",
                ));
            }
            Some(match p.domain() {
                LinuxPersonalityDomain::PerLinux => 0,
                LinuxPersonalityDomain::PerLinux32 => 0x0008,
            })
        }
    };
    let mut sysctls = Vec::new();
    let mut keys: Vec<_> = linux.sysctl().iter().flatten().collect();
    keys.sort();
    for (key, value) in keys {
        let field = format!("linux.sysctl.{key}");
        let path =
            sysctl_path(key).ok_or_else(|| SpecError::new(&field, "is not a sysctl name"))?;
        no_nul(&field, value)?;
        sysctls.push((path, value.clone()));
    }
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        absolute(&format!("{field}.path"), d.path())?;
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(SpecError::new(
                    format!("{field}.type"),
                    "\"a\" is not a device type",
                ))
            }
        };
        let num = |v: i64, what: &str| {
            u64::try_from(v)
                .map_err(|_| SpecError::new(format!("{field}.{what}"), format!("{v} is negative")))
        };
        devices.push(DevicePlan {
            path: d.path().clone(),
            kind,
            major: num(d.major(), "major")?,
            minor: num(d.minor(), "minor")?,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
            field,
        });
    }
    let mut masked_paths = Vec::new();
    for (i, p) in linux.masked_paths().iter().flatten().enumerate() {
        absolute(&format!("linux.maskedPaths[{i}]"), Path::new(p))?;
        masked_paths.push(p.clone());
    }
    let mut readonly_paths = Vec::new();
    for (i, p) in linux.readonly_paths().iter().flatten().enumerate() {
        absolute(&format!("linux.readonlyPaths[{i}]"), Path::new(p))?;
        readonly_paths.push(p.clone());
    }
    let (initial_propagation, final_propagation) =
        rootfs_propagation(linux.rootfs_propagation().as_deref())?;
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| plan_mount(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let seccomp = linux.seccomp().as_ref().map(plan_seccomp).transpose()?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::new("process", "missing: nothing to run"))?;
    let mut process = plan_process("process.", process, terminal, seccomp, cap_last_cap)?;
    process.plan.personality = personality;
    if let Some(res) = linux.resources() {
        super::cgroup::check_resources("linux.resources", res)?;
    }
    let default_devs = !binds_dev(&mounts);
    Ok(ContainerConfig {
        plan: ContainerPlan {
            rootfs: root.path().clone(),
            root_readonly: root.readonly().unwrap_or(false),
            initial_propagation,
            final_propagation,
            mounts,
            default_devices: default_devs,
            devices: if default_devs {
                default_devices().into_iter().chain(devices).collect()
            } else {
                devices
            },
            hostname: spec.hostname().clone(),
            domainname: spec.domainname().clone(),
            sysctls,
            masked_paths,
            readonly_paths,
            join_namespaces,
            new_cgroup_ns,
            process: process.plan,
        },
        resources: linux.resources().clone(),
        join_pid_ns,
        console_size: process.console_size,
        exec_namespaces,
    })
}

/// Parses and checks a container spec (`oci_spec_json`).
pub fn parse_container(
    json: &[u8],
    terminal: bool,
    cap_last_cap: u8,
) -> Result<ContainerConfig, SpecError> {
    let spec: Spec = from_json(json)?;
    plan_container(&spec, terminal, cap_last_cap)
}

/// Parses and checks an exec's process (`process_json`); it gets the
/// container's seccomp filters.
pub fn parse_exec_process(
    json: &[u8],
    terminal: bool,
    seccomp: Option<SeccompPlan>,
    cap_last_cap: u8,
) -> Result<ProcessConfig, SpecError> {
    let p: Process = from_json(json)?;
    plan_process("", &p, terminal, seccomp, cap_last_cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceBuilder, ProcessBuilder, RootBuilder};

    fn default_spec() -> Spec {
        let mut spec = Spec::default();
        spec.set_root(Some(
            RootBuilder::default()
                .path("/run/c1/rootfs")
                .readonly(true)
                .build()
                .unwrap(),
        ));
        spec
    }

    fn json(spec: &Spec) -> Vec<u8> {
        serde_json::to_vec(spec).unwrap()
    }

    #[test]
    fn runcs_default_spec_is_accepted() {
        let c = parse_container(&json(&default_spec()), false, 40).unwrap();
        let p = &c.plan;
        assert_eq!(p.rootfs, Path::new("/run/c1/rootfs"));
        assert!(p.root_readonly);
        assert_eq!(p.mounts.len(), 7);
        assert!(p.default_devices);
        assert_eq!(p.devices.len(), 6);
        assert_eq!(p.hostname.as_deref(), Some("youki"));
        assert!(p.new_cgroup_ns);
        assert!(p.join_namespaces.is_empty());
        assert!(c.join_pid_ns.is_none());
        assert_eq!(p.process.args, vec!["sh"]);
        assert!(p.process.no_new_privileges);
        assert_eq!(p.process.umask, 0o022);
        assert_eq!(p.process.rlimits.len(), 1);
        assert!(p.masked_paths.contains(&"/proc/kcore".to_string()));
        assert!(c.exec_namespaces & libc::CLONE_NEWCGROUP != 0);
    }

    #[test]
    fn bad_json_names_the_field() {
        let mut v: serde_json::Value = serde_json::from_slice(&json(&default_spec())).unwrap();
        v["process"]["user"]["uid"] = serde_json::json!(-1);
        let e = parse_container(&serde_json::to_vec_pretty(&v).unwrap(), false, 40).unwrap_err();
        assert_eq!(e.field, "process.user.uid");
        let e = parse_container(b"{\"root\": 5}", false, 40).unwrap_err();
        assert_eq!(e.field, "root");
        let e = parse_container(b"not json", false, 40).unwrap_err();
        assert_eq!(e.field, "");
        assert_eq!(e.within("oci_spec_json").field, "oci_spec_json");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let check = |f: &dyn Fn(&mut Spec), field: &str| {
            let mut s = default_spec();
            f(&mut s);
            let e = parse_container(&json(&s), false, 40).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        };
        check(
            &|s| {
                s.set_root(None);
            },
            "root",
        );
        check(
            &|s| {
                s.set_root(Some(RootBuilder::default().path("rootfs").build().unwrap()));
            },
            "root.path",
        );
        check(
            &|s| {
                s.set_process(None);
            },
            "process",
        );
        check(
            &|s| {
                s.set_process(Some(
                    ProcessBuilder::default()
                        .args(Vec::<String>::new())
                        .cwd("/")
                        .build()
                        .unwrap(),
                ));
            },
            "process.args",
        );
        check(
            &|s| {
                s.set_process(Some(
                    ProcessBuilder::default()
                        .args(vec!["sh".to_string()])
                        .cwd("tmp")
                        .build()
                        .unwrap(),
                ));
            },
            "process.cwd",
        );
        check(
            &|s| {
                let mut l = s.linux().clone().unwrap();
                let mut ns = l.namespaces().clone().unwrap();
                ns.push(
                    LinuxNamespaceBuilder::default()
                        .typ(LinuxNamespaceType::User)
                        .build()
                        .unwrap(),
                );
                l.set_namespaces(Some(ns));
                s.set_linux(Some(l));
            },
            "linux.namespaces[6]",
        );
        check(
            &|s| {
                let mut l = s.linux().clone().unwrap();
                l.set_sysctl(Some([("net/../x".to_string(), "1".to_string())].into()));
                s.set_linux(Some(l));
            },
            "linux.sysctl.net/../x",
        );
        check(
            &|s| {
                let mut p = s.process().clone().unwrap();
                p.set_terminal(Some(true));
                s.set_process(Some(p));
            },
            "process.terminal",
        );
    }

    #[test]
    fn network_namespace_paths_are_ignored_and_others_joined() {
        let mut s = default_spec();
        let mut l = s.linux().clone().unwrap();
        l.set_namespaces(Some(vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/var/run/netns/x")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Ipc)
                .path("/proc/7/ns/ipc")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .path("/proc/7/ns/pid")
                .build()
                .unwrap(),
        ]));
        s.set_linux(Some(l));
        let c = parse_container(&json(&s), false, 40).unwrap();
        assert_eq!(c.join_pid_ns.as_deref(), Some(Path::new("/proc/7/ns/pid")));
        assert_eq!(c.plan.join_namespaces.len(), 1);
        assert_eq!(c.plan.join_namespaces[0].nstype, libc::CLONE_NEWIPC);
        assert!(!c.plan.new_cgroup_ns);
    }

    #[test]
    fn sysctl_names() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").as_deref(),
            Some("net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("kernel/msgmax").as_deref(),
            Some("kernel/msgmax")
        );
        assert!(sysctl_path("").is_none());
        assert!(sysctl_path("a..b").is_none());
        assert!(sysctl_path("/etc/passwd").is_none());
        assert!(sysctl_path("a b").is_none());
    }

    #[test]
    fn exec_process_json() {
        let p = parse_exec_process(
            br#"{"args":["sh","-c","true"],"cwd":"/","user":{"uid":1000,"gid":1000,"additionalGids":[5]},"env":["A=1"],"terminal":true,"consoleSize":{"height":24,"width":80}}"#,
            true,
            None,
            40,
        )
        .unwrap();
        assert_eq!(p.plan.uid, 1000);
        assert_eq!(p.plan.additional_gids, vec![5]);
        assert_eq!(p.console_size, Some((24, 80)));
        assert!(p.plan.caps.is_none());
        let e =
            parse_exec_process(br#"{"args":[],"cwd":"/","user":{}}"#, false, None, 40).unwrap_err();
        assert_eq!(e.field, "args");
        let e = parse_exec_process(
            br#"{"args":["x"],"cwd":"/","user":{},"oomScoreAdj":5000}"#,
            false,
            None,
            40,
        )
        .unwrap_err();
        assert_eq!(e.field, "oomScoreAdj");
        let e = parse_exec_process(
            br#"{"args":["x"],"cwd":"/","user":{},"rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}"#,
            false,
            None,
            40,
        )
        .unwrap_err();
        assert_eq!(e.field, "rlimits[0]");
    }
}
