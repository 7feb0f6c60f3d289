//! The pod and container configs the scenarios send, shaped as kubelet
//! shapes them (pod metadata, log paths, namespace options, the sandbox
//! config repeated in each CreateContainer).

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

/// The label every object of these scenarios carries.
pub const LABEL: (&str, &str) = ("io.husk.test", "cri-e2e");

fn labels() -> HashMap<String, String> {
    HashMap::from([(LABEL.0.to_string(), LABEL.1.to_string())])
}

/// A pod named `name` whose containers log under `log_dir/name`, with
/// its own network, a pod-wide IPC namespace and a pid namespace per
/// container (kubelet's defaults).
pub fn pod(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.join(name).display().to_string(),
        labels: labels(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod.into(),
                    pid: NamespaceMode::Container.into(),
                    ipc: NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container `name` of `image` running `sh -c script`, logging to
/// `name.log` in the pod's log directory; `memory_limit` in bytes
/// (0: none).
pub fn container(
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
    image: &str,
    script: &str,
    memory_limit: i64,
) -> CreateContainerRequest {
    let resources = (memory_limit > 0).then(|| LinuxContainerResources {
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    });
    CreateContainerRequest {
        pod_sandbox_id: pod_id.to_string(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            labels: labels(),
            linux: Some(LinuxContainerConfig {
                resources,
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(pod.clone()),
    }
}

/// The `pid` in the JSON `info` of a verbose status answer (containerd
/// puts the task's pid there).
pub fn info_pid(info: &HashMap<String, String>) -> Option<u32> {
    let json: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    json.get("pid")?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_comes_from_the_verbose_info() {
        let info = HashMap::from([("info".to_string(), r#"{"pid":42,"x":1}"#.to_string())]);
        assert_eq!(info_pid(&info), Some(42));
        let none = HashMap::from([("info".to_string(), r#"{"x":1}"#.to_string())]);
        assert_eq!(info_pid(&none), None);
        assert_eq!(info_pid(&HashMap::new()), None);
    }

    #[test]
    fn containers_repeat_their_pod_config_and_log_beside_it() {
        let p = pod("p1", Path::new("/logs"));
        assert_eq!(p.log_directory, "/logs/p1");
        let c = container("sb", &p, "a", "img", "true", 1 << 25);
        let config = c.config.unwrap();
        assert_eq!(config.log_path, "a.log");
        assert_eq!(config.command, ["sh", "-c", "true"]);
        let limit = config
            .linux
            .unwrap()
            .resources
            .unwrap()
            .memory_limit_in_bytes;
        assert_eq!(limit, 1 << 25);
        assert_eq!(c.sandbox_config.unwrap().hostname, "p1");
        let none = container("sb", &p, "b", "img", "true", 0).config.unwrap();
        assert!(none.linux.unwrap().resources.is_none());
    }
}
