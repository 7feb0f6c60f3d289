//! Capabilities and resource limits: the spec's names turned into numbers
//! (in the agent), and the kernel calls that apply them (in the helper).

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, PosixRlimitType};

use super::plan::CapsPlan;
use super::spec::SpecError;

/// The kernel's number of a capability.
pub fn cap_number(c: Capability) -> u8 {
    use Capability as C;
    match c {
        C::Chown => 0,
        C::DacOverride => 1,
        C::DacReadSearch => 2,
        C::Fowner => 3,
        C::Fsetid => 4,
        C::Kill => 5,
        C::Setgid => 6,
        C::Setuid => 7,
        C::Setpcap => 8,
        C::LinuxImmutable => 9,
        C::NetBindService => 10,
        C::NetBroadcast => 11,
        C::NetAdmin => 12,
        C::NetRaw => 13,
        C::IpcLock => 14,
        C::IpcOwner => 15,
        C::SysModule => 16,
        C::SysRawio => 17,
        C::SysChroot => 18,
        C::SysPtrace => 19,
        C::SysPacct => 20,
        C::SysAdmin => 21,
        C::SysBoot => 22,
        C::SysNice => 23,
        C::SysResource => 24,
        C::SysTime => 25,
        C::SysTtyConfig => 26,
        C::Mknod => 27,
        C::Lease => 28,
        C::AuditWrite => 29,
        C::AuditControl => 30,
        C::Setfcap => 31,
        C::MacOverride => 32,
        C::MacAdmin => 33,
        C::Syslog => 34,
        C::WakeAlarm => 35,
        C::BlockSuspend => 36,
        C::AuditRead => 37,
        C::Perfmon => 38,
        C::Bpf => 39,
        C::CheckpointRestore => 40,
    }
}

/// A set as a mask, keeping only capabilities the kernel knows.
fn mask(set: &Option<Capabilities>, last_cap: u8) -> u64 {
    set.iter()
        .flatten()
        .map(|c| cap_number(*c))
        .filter(|n| *n <= last_cap)
        .fold(0u64, |m, n| m | (1u64 << n))
}

fn first_cap(m: u64) -> String {
    let n = m.trailing_zeros();
    format!("capability {n}")
}

/// Converts `process.capabilities`. Effective needs permitted: the kernel
/// would refuse the set, and so does this. An ambient capability that is
/// not both permitted and inheritable cannot be raised; runc goes on
/// without it, and so does this (the default spec of `runc spec` asks for
/// ambient capabilities with no inheritable set).
pub fn plan_caps(
    prefix: &str,
    caps: &LinuxCapabilities,
    last_cap: u8,
) -> Result<CapsPlan, SpecError> {
    let mut plan = CapsPlan {
        bounding: mask(caps.bounding(), last_cap),
        effective: mask(caps.effective(), last_cap),
        permitted: mask(caps.permitted(), last_cap),
        inheritable: mask(caps.inheritable(), last_cap),
        ambient: mask(caps.ambient(), last_cap),
    };
    let field = |set: &str| format!("{prefix}capabilities.{set}");
    let extra = plan.effective & !plan.permitted;
    if extra != 0 {
        return Err(SpecError::new(
            field("effective"),
            format!("{} is not in the permitted set", first_cap(extra)),
        ));
    }
    let extra = plan.ambient & !(plan.permitted & plan.inheritable);
    if extra != 0 {
        log::debug!(
            "{}: {} and any other not both permitted and inheritable left out",
            field("ambient"),
            first_cap(extra)
        );
        plan.ambient &= !extra;
    }
    Ok(plan)
}

/// The RLIMIT_* number of a spec rlimit type.
pub fn rlimit_resource(t: PosixRlimitType) -> i32 {
    use PosixRlimitType as R;
    (match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as i32
}

/// The highest capability number of the running kernel.
pub fn cap_last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability outside `bounding` from the bounding set (needs
/// CAP_SETPCAP, so before the user switch).
pub fn apply_bounding(plan: &CapsPlan, last_cap: u8) -> std::io::Result<()> {
    for cap in 0..=last_cap {
        if plan.bounding & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets, then raises the
/// ambient ones (after the user switch, with keep-caps on).
pub fn apply_sets(plan: &CapsPlan) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: word(plan.effective, i),
        permitted: word(plan.permitted, i),
        inheritable: word(plan.inheritable, i),
    });
    // SAFETY: header and data are valid for the call; capset copies them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    for cap in 0..64u64 {
        if plan.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCapabilitiesBuilder;

    fn set(caps: &[Capability]) -> Capabilities {
        caps.iter().copied().collect()
    }

    #[test]
    fn numbers_match_the_kernel_headers() {
        assert_eq!(cap_number(Capability::Chown), 0);
        assert_eq!(cap_number(Capability::Kill), 5);
        assert_eq!(cap_number(Capability::NetBindService), 10);
        assert_eq!(cap_number(Capability::SysAdmin), 21);
        assert_eq!(cap_number(Capability::AuditWrite), 29);
        assert_eq!(cap_number(Capability::CheckpointRestore), 40);
    }

    #[test]
    fn the_default_spec_converts() {
        let p = plan_caps("process.", &LinuxCapabilities::default(), 40).unwrap();
        let want = (1 << 29) | (1 << 5) | (1 << 10);
        assert_eq!(
            p,
            CapsPlan {
                bounding: want,
                effective: want,
                permitted: want,
                inheritable: want,
                ambient: want
            }
        );
    }

    #[test]
    fn unknown_to_the_kernel_is_dropped() {
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(set(&[Capability::Bpf, Capability::Kill]))
            .build()
            .unwrap();
        assert_eq!(plan_caps("", &caps, 38).unwrap().bounding, 1 << 5);
    }

    #[test]
    fn an_effective_set_the_kernel_would_refuse_is_named() {
        let caps = LinuxCapabilitiesBuilder::default()
            .effective(set(&[Capability::Kill]))
            .permitted(set(&[]))
            .build()
            .unwrap();
        let e = plan_caps("process.", &caps, 40).unwrap_err();
        assert_eq!(e.field, "process.capabilities.effective");
        assert!(e.reason.contains("capability 5"), "{e}");
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(set(&[Capability::Kill]))
            .effective(set(&[]))
            .inheritable(set(&[]))
            .permitted(set(&[Capability::Kill]))
            .ambient(set(&[Capability::Kill]))
            .build()
            .unwrap();
        assert_eq!(plan_caps("", &caps, 40).unwrap().ambient, 0);
    }

    #[test]
    fn ambient_keeps_only_what_is_permitted_and_inheritable() {
        // `runc spec`'s default: ambient asked for, no inheritable set.
        let three = set(&[
            Capability::AuditWrite,
            Capability::Kill,
            Capability::NetBindService,
        ]);
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(three.clone())
            .effective(three.clone())
            .permitted(three.clone())
            .inheritable(set(&[Capability::Kill]))
            .ambient(three)
            .build()
            .unwrap();
        let p = plan_caps("process.", &caps, 40).unwrap();
        assert_eq!(p.ambient, 1 << 5);
        assert_eq!(p.permitted, (1 << 29) | (1 << 5) | (1 << 10));
    }

    #[test]
    fn rlimit_numbers() {
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitNofile),
            libc::RLIMIT_NOFILE as i32
        );
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitRttime),
            libc::RLIMIT_RTTIME as i32
        );
        assert_eq!(rlimit_resource(PosixRlimitType::RlimitCpu), 0);
    }

    #[test]
    fn this_kernel_knows_at_least_the_classic_caps() {
        assert!(cap_last_cap() >= 37);
    }
}
