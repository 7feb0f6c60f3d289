//! A pod's shared namespaces in the guest.
//!
//! containerd's CRI plugin makes each container of a pod join the
//! sandbox's IPC and UTS namespaces (and its pid namespace when the pod
//! shares one) by the path `/proc/<sandbox task pid>/ns/<kind>`. Under
//! husk that pid is the VMM's, on the host; the namespaces to join are
//! those of the sandbox's init in the guest, so such paths are rewritten
//! to its guest pid before the spec reaches the agent.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::TaskError;

/// Points every namespace path of the form `/proc/<vmm_pid>/ns/<kind>` at
/// the sandbox's init in the guest (`sandbox_pid`; none: there is no
/// sandbox to join, which is refused). Other paths are left as they are.
pub fn join_sandbox(
    spec: &mut Spec,
    vmm_pid: u32,
    sandbox_pid: Option<u32>,
) -> Result<(), TaskError> {
    let Some(namespaces) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    else {
        return Ok(());
    };
    for ns in namespaces.iter_mut() {
        let Some(kind) = ns.path().as_deref().and_then(|p| of_process(p, vmm_pid)) else {
            continue;
        };
        let pid = sandbox_pid.ok_or_else(|| {
            TaskError::Invalid(format!(
                "namespace path {:?} names the pod's sandbox, which has no process in the guest",
                ns.path()
            ))
        })?;
        ns.set_path(Some(PathBuf::from(format!("/proc/{pid}/ns/{kind}"))));
    }
    Ok(())
}

/// The namespace kind of `/proc/<pid>/ns/<kind>`, if `path` is that.
fn of_process(path: &Path, pid: u32) -> Option<String> {
    let rest = path.strip_prefix(format!("/proc/{pid}/ns")).ok()?;
    let kind = rest.to_str()?;
    (!kind.is_empty() && !kind.contains('/')).then(|| kind.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":{namespaces}}}}}"#
        ))
        .unwrap()
    }

    fn paths(spec: &Spec) -> Vec<Option<PathBuf>> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.path().clone())
            .collect()
    }

    #[test]
    fn the_sandbox_task_pid_becomes_the_sandbox_guest_pid() {
        let mut s = spec(
            r#"[{"type":"ipc","path":"/proc/4242/ns/ipc"},{"type":"uts","path":"/proc/4242/ns/uts"},
                {"type":"pid"},{"type":"mount"},{"type":"cgroup","path":"/proc/42/ns/cgroup"}]"#,
        );
        join_sandbox(&mut s, 4242, Some(7)).unwrap();
        assert_eq!(
            paths(&s),
            [
                Some(PathBuf::from("/proc/7/ns/ipc")),
                Some(PathBuf::from("/proc/7/ns/uts")),
                None,
                None,
                Some(PathBuf::from("/proc/42/ns/cgroup")),
            ]
        );
    }

    #[test]
    fn without_a_sandbox_process_joining_it_is_refused() {
        let mut s = spec(r#"[{"type":"ipc","path":"/proc/4242/ns/ipc"}]"#);
        let e = join_sandbox(&mut s, 4242, None).unwrap_err();
        assert!(e.to_string().contains("/proc/4242/ns/ipc"), "{e}");
        let mut alone = spec(r#"[{"type":"ipc"}]"#);
        join_sandbox(&mut alone, 4242, None).unwrap();
        let mut none: Spec = serde_json::from_str(r#"{"ociVersion":"1.0.2"}"#).unwrap();
        join_sandbox(&mut none, 4242, None).unwrap();
    }

    #[test]
    fn only_namespace_files_of_that_pid_match() {
        assert_eq!(
            of_process(Path::new("/proc/12/ns/net"), 12).as_deref(),
            Some("net")
        );
        assert_eq!(of_process(Path::new("/proc/123/ns/net"), 12), None);
        assert_eq!(of_process(Path::new("/proc/12/ns"), 12), None);
        assert_eq!(of_process(Path::new("/proc/12/ns/a/b"), 12), None);
        assert_eq!(of_process(Path::new("/var/run/netns/x"), 12), None);
    }
}
