//! OCI seccomp profiles, compiled with seccompiler in the agent and
//! installed by the helper right before (or, without no_new_privileges,
//! before the user switch of) the exec.
//!
//! A seccompiler filter has one action on match and one on mismatch, while
//! an OCI profile gives each rule its own action. The profile is compiled
//! into a small stack of filters, relying on the kernel running every
//! installed filter and keeping the most severe verdict:
//!
//! - one filter per non-allow rule action A: A when a rule with action A
//!   matches, allow otherwise;
//! - unless the default action is allow, one filter for the default: allow
//!   when any rule matches, the default action otherwise.
//!
//! So a call gets the most severe action among the rules it matches, or the
//! default when it matches none. (libseccomp picks one rule when several
//! match; profiles in the wild do not depend on which.)
//!
//! Supported: actions allow, errno (with errnoRet), kill (thread),
//! kill_process, trap, trace, log; every argument comparison; the flags
//! log and spec_allow. Refused: notify (no listener), and arguments above
//! index 5. Syscall names this architecture does not have are skipped, as
//! runc and libseccomp do. Only the native architecture is allowed: a call
//! from another ABI (x86 compat, x32) kills the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::plan::{BpfInsn, SeccompPlan};
use super::spec::SpecError;

const FIELD: &str = "linux.seccomp";
/// The errno an errno or trace action without errnoRet returns (runc's).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

fn native_arch() -> Result<TargetArch, SpecError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        SpecError::new(
            FIELD,
            format!("seccomp is not supported on {}", std::env::consts::ARCH),
        )
    })
}

/// The system call number of `name` on this architecture, from
/// seccompiler's table (looked up once per name and remembered).
pub fn syscall_number(name: &str) -> Option<i64> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<i64>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(nr) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return *nr;
    }
    let nr = probe_syscall_number(name);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), nr);
    nr
}

/// Compiles a one-rule filter naming `name` with seccompiler's JSON
/// frontend (the only public door to its syscall table) and reads the
/// number back from the comparison after the syscall-number load.
fn probe_syscall_number(name: &str) -> Option<i64> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).ok()?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let json = format!(
        r#"{{"p":{{"mismatch_action":"allow","match_action":"kill_process","filter":[{{"syscall":"{name}"}}]}}}}"#
    );
    let mut map = seccompiler::compile_from_json(json.as_bytes(), arch).ok()?;
    let prog = map.remove("p")?;
    // BPF_LD|BPF_W|BPF_ABS of offset 0 (seccomp_data.nr), then BPF_JMP|BPF_JEQ|BPF_K.
    let load = prog.iter().position(|i| i.code == 0x20 && i.k == 0)?;
    let cmp = prog[load + 1..].iter().find(|i| i.code == 0x15)?;
    Some(i64::from(cmp.k))
}

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
) -> Result<SeccompAction, SpecError> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(DEFAULT_ERRNO)),
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActNotify => {
            return Err(SpecError::new(
                field,
                "SCMP_ACT_NOTIFY (a seccomp listener) is not supported",
            ))
        }
    })
}

fn operator(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (SeccompCmpOp, u64) {
    use LinuxSeccompOperator as O;
    match op {
        O::ScmpCmpNe => (SeccompCmpOp::Ne, value),
        O::ScmpCmpLt => (SeccompCmpOp::Lt, value),
        O::ScmpCmpLe => (SeccompCmpOp::Le, value),
        O::ScmpCmpEq => (SeccompCmpOp::Eq, value),
        O::ScmpCmpGe => (SeccompCmpOp::Ge, value),
        O::ScmpCmpGt => (SeccompCmpOp::Gt, value),
        // libseccomp: (arg & value) == valueTwo.
        O::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(value), value_two.unwrap_or(0)),
    }
}

/// Where a syscall's rules of one action accumulate: `None` once one rule
/// matches unconditionally (an empty seccompiler chain).
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rule(chains: &mut Chains, nr: i64, rule: Option<SeccompRule>) {
    let entry = chains.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(rules), Some(rule)) => rules.push(rule),
        (Some(_), None) => *entry = None,
        (None, _) => {}
    }
}

fn into_rules(chains: Chains) -> BTreeMap<i64, Vec<SeccompRule>> {
    chains
        .into_iter()
        .map(|(nr, c)| (nr, c.unwrap_or_default()))
        .collect()
}

fn severity(a: &SeccompAction) -> u8 {
    match a {
        SeccompAction::KillProcess => 0,
        SeccompAction::KillThread => 1,
        SeccompAction::Trap => 2,
        SeccompAction::Errno(_) => 3,
        SeccompAction::Trace(_) => 5,
        SeccompAction::Log => 6,
        SeccompAction::Allow => 7,
    }
}

fn compile(
    rules: Chains,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<Vec<BpfInsn>, SpecError> {
    let bad = |e: seccompiler::BackendError| SpecError::new(FIELD, format!("cannot compile: {e}"));
    let filter = SeccompFilter::new(into_rules(rules), mismatch, matched, arch).map_err(bad)?;
    let prog: BpfProgram = filter.try_into().map_err(bad)?;
    Ok(prog
        .iter()
        .map(|i| BpfInsn {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// Converts `linux.seccomp` into filters.
pub fn plan_seccomp(s: &LinuxSeccomp) -> Result<SeccompPlan, SpecError> {
    let arch = native_arch()?;
    if s.listener_path().is_some() {
        return Err(SpecError::new(
            format!("{FIELD}.listenerPath"),
            "seccomp listeners (SCMP_ACT_NOTIFY) are not supported",
        ));
    }
    let mut flags = 0u32;
    for (i, f) in s.flags().iter().flatten().enumerate() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
            }
            // The helper is single-threaded: tsync has nothing to sync.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SpecError::new(
                    format!("{FIELD}.flags[{i}]"),
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a listener, which is not supported",
                ))
            }
        };
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        &format!("{FIELD}.defaultAction"),
    )?;
    // Every rule, by action (in first-seen order), and all of them for the
    // default filter.
    let mut by_action: Vec<(SeccompAction, Chains)> = Vec::new();
    let mut any: Chains = BTreeMap::new();
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("{FIELD}.syscalls[{i}]");
        let act = action(sc.action(), sc.errno_ret(), &format!("{field}.action"))?;
        let mut conds = Vec::new();
        for (j, a) in sc.args().iter().flatten().enumerate() {
            let index = u8::try_from(a.index())
                .ok()
                .filter(|i| *i <= 5)
                .ok_or_else(|| {
                    SpecError::new(
                        format!("{field}.args[{j}].index"),
                        format!("{} is above 5", a.index()),
                    )
                })?;
            let (op, value) = operator(a.op(), a.value(), a.value_two());
            let c = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| SpecError::new(format!("{field}.args[{j}]"), e.to_string()))?;
            conds.push(c);
        }
        let rule = if conds.is_empty() {
            None
        } else {
            Some(
                SeccompRule::new(conds)
                    .map_err(|e| SpecError::new(field.clone(), e.to_string()))?,
            )
        };
        let slot = match by_action.iter().position(|(a, _)| *a == act) {
            Some(p) => p,
            None => {
                by_action.push((act.clone(), BTreeMap::new()));
                by_action.len() - 1
            }
        };
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else {
                log::debug!("{field}: no system call {name:?} on this architecture; skipped");
                continue;
            };
            add_rule(&mut by_action[slot].1, nr, rule.clone());
            add_rule(&mut any, nr, rule.clone());
        }
    }
    let mut filters = Vec::new();
    // The most severe verdicts first (the kernel does not care about the
    // order for different actions; for equal ones the last installed wins).
    by_action.sort_by_key(|(a, _)| std::cmp::Reverse(severity(a)));
    for (act, chains) in by_action {
        if act == SeccompAction::Allow || chains.is_empty() {
            continue;
        }
        filters.push(compile(chains, SeccompAction::Allow, act, arch)?);
    }
    if default != SeccompAction::Allow {
        if any.is_empty() {
            // No rule at all: everything gets the default action.
            filters.push(compile(
                BTreeMap::new(),
                default,
                SeccompAction::Allow,
                arch,
            )?);
        } else {
            filters.push(compile(any, default, SeccompAction::Allow, arch)?);
        }
    }
    Ok(SeccompPlan { filters, flags })
}

/// Installs the filters on the calling thread (needs no_new_privs or
/// CAP_SYS_ADMIN; seccompiler's own installer always sets no_new_privs,
/// which the spec may not want).
pub fn install(plan: &SeccompPlan) -> std::io::Result<()> {
    for f in &plan.filters {
        let insns: Vec<libc::sock_filter> = f
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let prog = libc::sock_fprog {
            len: insns.len() as u16,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points at insns, alive for the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                plan.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_resolve_to_this_architectures_numbers() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read));
        assert_eq!(syscall_number("close"), Some(libc::SYS_close));
        assert_eq!(syscall_number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(syscall_number("openat"), Some(libc::SYS_openat));
        assert_eq!(syscall_number("no_such_call"), None);
        assert_eq!(syscall_number("bad\"name"), None);
    }

    #[test]
    fn an_allow_list_with_an_errno_rule() {
        let p = plan_seccomp(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[
                  {"names":["read","write","exit_group","_llseek"],"action":"SCMP_ACT_ALLOW"},
                  {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                   "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                  {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                   "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                  {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        ))
        .unwrap();
        // ENOSYS for clone3, then the default filter.
        assert_eq!(p.filters.len(), 2);
        assert_eq!(p.flags, 0);
        let ret = |f: &Vec<BpfInsn>| -> Vec<u32> {
            f.iter().filter(|i| i.code == 0x06).map(|i| i.k).collect()
        };
        assert!(ret(&p.filters[0]).contains(&(libc::SECCOMP_RET_ERRNO | 38)));
        assert!(ret(&p.filters[1]).contains(&(libc::SECCOMP_RET_ERRNO | 1)));
        assert!(ret(&p.filters[1]).contains(&libc::SECCOMP_RET_ALLOW));
    }

    #[test]
    fn a_block_list_needs_no_default_filter() {
        let p = plan_seccomp(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["mount"],"action":"SCMP_ACT_KILL_PROCESS"},
                            {"names":["umount2"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert_eq!(p.filters.len(), 2);
        assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_LOG as u32);
    }

    #[test]
    fn unsupported_parts_are_refused_by_field() {
        let e = plan_seccomp(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.field, "linux.seccomp.syscalls[0].action");
        let e = plan_seccomp(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
                "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.field, "linux.seccomp.syscalls[0].args[0].index");
        let e = plan_seccomp(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)).unwrap_err();
        assert_eq!(e.field, "linux.seccomp.defaultAction");
    }

    #[test]
    fn an_errno_filter_runs_in_a_child() {
        // Install "getppid fails with EPERM, the rest is allowed" in a
        // forked child and check the verdict there.
        let p = plan_seccomp(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        ))
        .unwrap();
        // SAFETY: the child only makes raw system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = install(&p).is_ok();
                // SAFETY: a plain system call.
                let r = unsafe { libc::syscall(libc::SYS_getppid) };
                let e = std::io::Error::last_os_error().raw_os_error();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe {
                    libc::_exit(if ok && r == -1 && e == Some(libc::EPERM) {
                        0
                    } else {
                        1
                    })
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
