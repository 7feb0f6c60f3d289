//! The OOM scenario: a container that exceeds its memory limit is
//! reported by CRI as exited with reason `OOMKilled`.

use std::path::Path;

use k8s_cri::v1::ContainerState;

use crate::specs;
use crate::steps::{ensure, StepError, Steps};

/// The container's memory limit.
const LIMIT: i64 = 32 << 20;
/// One allocation three times the limit, by the container's own process
/// (a shell around it would survive the kill of its child).
const HOG: &str = "exec dd if=/dev/zero of=/dev/null bs=96M count=1";

/// Runs the scenario; the pod is stopped and removed whatever happens.
pub async fn run(steps: &Steps<'_>, image: &str, log_dir: &Path) -> Result<(), StepError> {
    let config = specs::pod("husk-oom", log_dir);
    let pod = steps.run_pod(&config).await?;
    let result = async {
        let c = steps
            .create_and_start(specs::container(&pod, &config, "hog", image, HOG, LIMIT))
            .await?;
        let (code, reason) = steps
            .wait_state(&c, ContainerState::ContainerExited, steps.cri.timeout())
            .await?;
        println!("hog exited {code}, reason {reason:?}");
        ensure(code == 137 && reason == "OOMKilled", || {
            format!("hog exited {code} with reason {reason:?}, not 137 OOMKilled")
        })?;
        steps.remove(&c).await
    }
    .await;
    let ended = steps.end_pod(&pod).await;
    result.and(ended)
}
