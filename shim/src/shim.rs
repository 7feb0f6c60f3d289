//! The shim binary's verbs as containerd runs them: `start` (find or
//! start the pod's shim and print its address), `delete` (clean up after
//! a shim that died) and serving the task service.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, ExitSignal, Flags, Shim, StartOpts};
use husk::config::HuskConfig;

use crate::events::{now, Events};
use crate::grouping::Role;
use crate::pod::{Pod, PodDir, VM_DIED_STATUS};
use crate::service::TaskService;

/// How long in-flight requests may take once the shim was told to exit.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The annotations of the bundle in `dir` (containerd runs `start` and
/// `delete` in the bundle directory); none if it cannot be read.
fn bundle_annotations(dir: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read(dir.join("config.json")) else {
        return HashMap::new();
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("annotations").cloned())
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default()
}

/// One shim process.
pub struct HuskShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl Shim for HuskShim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // Every container of a pod is grouped under its sandbox's id, so
        // they all reach the same shim (and VM); a running shim's address
        // is found by that name.
        let annotations = bundle_annotations(Path::new("."));
        let role = Role::of(&annotations);
        let pod_id = role.pod_id(&opts.id).to_string();
        let (_, address) = containerd_shim::spawn(opts, &pod_id, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let annotations = bundle_annotations(Path::new("."));
        let role = Role::of(&annotations);
        // Only a pod's sandbox owns its directory; a member leaves nothing
        // of its own once the shim is gone.
        if role == Role::Sandbox {
            let state_dir = HuskConfig::load(None)
                .map(|(c, _)| c.state_dir)
                .unwrap_or_else(|_| HuskConfig::default().state_dir);
            PodDir::new(&state_dir, &self.namespace, &self.id).clean_up();
        }
        Ok(DeleteResponse {
            pid: 0,
            exit_status: VM_DIED_STATUS,
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        // Nothing is left to serve: a request still blocked (a Wait nobody
        // will collect) must not keep the shim alive.
        std::thread::spawn(|| {
            std::thread::sleep(EXIT_GRACE);
            log::warn!("requests still pending {EXIT_GRACE:?} after shutdown; exiting");
            std::process::exit(0);
        });
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let events = Events::start(publisher, self.namespace.clone());
        let pod = Pod::new(&self.namespace, events, Arc::clone(&self.exit));
        TaskService::new(Arc::new(pod))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_come_from_the_bundle_config() {
        let dir = tempfile::tempdir().unwrap();
        assert!(bundle_annotations(dir.path()).is_empty());
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"p1"}}"#,
        )
        .unwrap();
        let role = Role::of(&bundle_annotations(dir.path()));
        assert_eq!(role.pod_id("c1"), "p1");
    }
}
