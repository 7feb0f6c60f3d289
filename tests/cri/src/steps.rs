//! The calls the scenarios are made of, each printed as a step with its
//! time, and the checks between them.

use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, PodSandboxConfig, PodSandboxStatusRequest,
    PodSandboxStatusResponse, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

use crate::client::{CallError, Cri};

/// Why a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A CRI call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The runtime answered, but not as it should have.
    #[error("{0}")]
    Check(String),
}

/// Fails with `what()` unless `cond`.
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), StepError> {
    if cond {
        Ok(())
    } else {
        Err(StepError::Check(what()))
    }
}

/// Prints `name` and how long `since` it took.
pub fn done(name: &str, since: Instant) {
    println!("step: {name}: ok ({:.1} s)", since.elapsed().as_secs_f64());
}

/// A client with the step helpers.
pub struct Steps<'a> {
    /// The CRI client.
    pub cri: &'a Cri,
    /// The runtime handler pods ask for.
    pub handler: String,
}

impl Steps<'_> {
    /// RunPodSandbox with the handler; the pod's id.
    pub async fn run_pod(&self, config: &PodSandboxConfig) -> Result<String, StepError> {
        let t = Instant::now();
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: self.handler.clone(),
        };
        let id = self
            .cri
            .call("RunPodSandbox", self.cri.rt().run_pod_sandbox(req))
            .await?
            .pod_sandbox_id;
        done(&format!("RunPodSandbox (handler {}) {id}", self.handler), t);
        Ok(id)
    }

    /// PodSandboxStatus, verbose.
    pub async fn pod_status(&self, id: &str) -> Result<PodSandboxStatusResponse, StepError> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        Ok(self
            .cri
            .call("PodSandboxStatus", self.cri.rt().pod_sandbox_status(req))
            .await?)
    }

    /// CreateContainer then StartContainer; the container's id.
    pub async fn create_and_start(&self, req: CreateContainerRequest) -> Result<String, StepError> {
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let t = Instant::now();
        let id = self
            .cri
            .call("CreateContainer", self.cri.rt().create_container(req))
            .await?
            .container_id;
        done(&format!("CreateContainer {name} {id}"), t);
        let t = Instant::now();
        let req = StartContainerRequest {
            container_id: id.clone(),
        };
        self.cri
            .call("StartContainer", self.cri.rt().start_container(req))
            .await?;
        done(&format!("StartContainer {name}"), t);
        Ok(id)
    }

    /// ContainerStatus, verbose.
    pub async fn status(&self, id: &str) -> Result<ContainerStatusResponse, StepError> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        Ok(self
            .cri
            .call("ContainerStatus", self.cri.rt().container_status(req))
            .await?)
    }

    /// The container's state, exit code and reason.
    pub async fn state(&self, id: &str) -> Result<(ContainerState, i32, String), StepError> {
        let status = self.status(id).await?.status.unwrap_or_default();
        Ok((status.state(), status.exit_code, status.reason))
    }

    /// Polls until the container is in `state` (or `within` passes).
    pub async fn wait_state(
        &self,
        id: &str,
        state: ContainerState,
        within: Duration,
    ) -> Result<(i32, String), StepError> {
        let start = Instant::now();
        loop {
            let (now, code, reason) = self.state(id).await?;
            if now == state {
                return Ok((code, reason));
            }
            ensure(start.elapsed() < within, || {
                format!(
                    "container {id} is {} after {within:?}, not {}",
                    now.as_str_name(),
                    state.as_str_name()
                )
            })?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// ExecSync `cmd` in the container.
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, StepError> {
        let t = Instant::now();
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: self.cri.timeout().as_secs() as i64,
        };
        let out = self
            .cri
            .call("ExecSync", self.cri.rt().exec_sync(req))
            .await?;
        done(&format!("ExecSync {cmd:?} (exit {})", out.exit_code), t);
        Ok(out)
    }

    /// ExecSync that must exit 0; its stdout, trimmed.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> Result<String, StepError> {
        let out = self.exec(id, cmd).await?;
        ensure(out.exit_code == 0, || {
            format!(
                "ExecSync {cmd:?} in {id}: exit {}, stderr {:?}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// StopContainer with a grace period of `grace`; then RemoveContainer.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), StepError> {
        let t = Instant::now();
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace.as_secs() as i64,
        };
        self.cri
            .call("StopContainer", self.cri.rt().stop_container(req))
            .await?;
        done(&format!("StopContainer {id}"), t);
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove(&self, id: &str) -> Result<(), StepError> {
        let t = Instant::now();
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.cri
            .call("RemoveContainer", self.cri.rt().remove_container(req))
            .await?;
        done(&format!("RemoveContainer {id}"), t);
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox (which removes any container
    /// left in it).
    pub async fn end_pod(&self, id: &str) -> Result<(), StepError> {
        let t = Instant::now();
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.cri
            .call("StopPodSandbox", self.cri.rt().stop_pod_sandbox(req))
            .await?;
        done(&format!("StopPodSandbox {id}"), t);
        let t = Instant::now();
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.cri
            .call("RemovePodSandbox", self.cri.rt().remove_pod_sandbox(req))
            .await?;
        done(&format!("RemovePodSandbox {id}"), t);
        Ok(())
    }
}
