//! Which pod a container belongs to, from the annotations container
//! managers put in its spec: the pod's shim (and VM) is shared by every
//! container naming the same sandbox.

use std::collections::HashMap;

/// containerd CRI: `sandbox` or `container`.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// containerd CRI: the sandbox a container belongs to.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI-O: `sandbox` or `container`.
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
/// CRI-O: the sandbox a container belongs to.
const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";

/// A container's place in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It starts the pod (the pause container, or a lone container).
    Sandbox,
    /// It joins the pod `sandbox_id`.
    Member {
        /// The pod's sandbox container id.
        sandbox_id: String,
    },
}

impl Role {
    /// The role named by `annotations` (no annotations: a pod of its own).
    pub fn of(annotations: &HashMap<String, String>) -> Self {
        for (kind, sandbox) in [
            (CRI_CONTAINER_TYPE, CRI_SANDBOX_ID),
            (CRIO_CONTAINER_TYPE, CRIO_SANDBOX_ID),
        ] {
            if annotations.get(kind).map(String::as_str) == Some("container") {
                if let Some(id) = annotations.get(sandbox).filter(|id| !id.is_empty()) {
                    return Role::Member {
                        sandbox_id: id.clone(),
                    };
                }
            }
        }
        Role::Sandbox
    }

    /// The pod id: the sandbox container's id.
    pub fn pod_id<'a>(&'a self, container_id: &'a str) -> &'a str {
        match self {
            Role::Sandbox => container_id,
            Role::Member { sandbox_id } => sandbox_id,
        }
    }
}

/// Annotations from pairs, for tests.
#[cfg(test)]
pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_and_crio_members_join_their_sandbox() {
        let cri = map(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "pod1")]);
        assert_eq!(Role::of(&cri).pod_id("c1"), "pod1");
        let crio = map(&[
            (CRIO_CONTAINER_TYPE, "container"),
            (CRIO_SANDBOX_ID, "pod2"),
        ]);
        assert_eq!(Role::of(&crio).pod_id("c1"), "pod2");
    }

    #[test]
    fn sandboxes_and_lone_containers_are_their_own_pod() {
        let sandbox = map(&[(CRI_CONTAINER_TYPE, "sandbox"), (CRI_SANDBOX_ID, "s1")]);
        assert_eq!(Role::of(&sandbox), Role::Sandbox);
        assert_eq!(Role::of(&HashMap::new()).pod_id("c1"), "c1");
        let no_id = map(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "")]);
        assert_eq!(Role::of(&no_id), Role::Sandbox);
    }
}
