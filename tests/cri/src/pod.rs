//! The pod scenario: a pod with the husk handler, two containers started
//! in it, ExecSync in both, proof that they share one microVM, container
//! logs, stats and updates through CRI, then stop and remove.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerState, ContainerStatsRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxState, UpdateContainerResourcesRequest,
};

use crate::host;
use crate::specs::{self, info_pid};
use crate::steps::{done, ensure, StepError, Steps};

/// A container that ends at once on SIGTERM (so a stop is graceful).
const GRACEFUL: &str =
    "trap 'echo stopping; exit 0' TERM; echo started-a; while :; do sleep 1; done";
/// A container with no SIGTERM handler: a stop ends it by SIGTERM or,
/// where its pid 1 ignores that (runc's), by SIGKILL after the grace period.
const STUBBORN: &str = "echo started-b; exec sleep 100000";

/// The memory limit set on container b through UpdateContainerResources.
const UPDATED_LIMIT: i64 = 64 << 20;

/// Runs the scenario; on failure the pod is still stopped and removed.
pub async fn run(steps: &Steps<'_>, image: &str, log_dir: &Path) -> Result<(), StepError> {
    let config = specs::pod("husk-e2e", log_dir);
    let pod = steps.run_pod(&config).await?;
    let result = in_pod(steps, &pod, &config, image, log_dir).await;
    if result.is_err() {
        let _ = steps.end_pod(&pod).await;
    }
    result?;
    after_removal(steps).await
}

async fn in_pod(
    steps: &Steps<'_>,
    pod: &str,
    config: &k8s_cri::v1::PodSandboxConfig,
    image: &str,
    log_dir: &Path,
) -> Result<(), StepError> {
    let status = steps.pod_status(pod).await?;
    let state = status.status.as_ref().map(|s| s.state());
    ensure(state == Some(PodSandboxState::SandboxReady), || {
        format!("pod {pod} is {state:?}, not ready")
    })?;
    let pod_pid = info_pid(&status.info);
    let a = steps
        .create_and_start(specs::container(pod, config, "a", image, GRACEFUL, 0))
        .await?;
    let b = steps
        .create_and_start(specs::container(pod, config, "b", image, STUBBORN, 0))
        .await?;
    for id in [&a, &b] {
        steps
            .wait_state(id, ContainerState::ContainerRunning, steps.cri.timeout())
            .await?;
    }

    // One VM: the same guest boot id in both, one VMM on the host, and it
    // is the pid containerd holds for the pod and both containers.
    let boot_a = steps
        .exec_ok(&a, &["cat", "/proc/sys/kernel/random/boot_id"])
        .await?;
    let boot_b = steps
        .exec_ok(&b, &["cat", "/proc/sys/kernel/random/boot_id"])
        .await?;
    ensure(boot_a.len() == 36 && boot_a == boot_b, || {
        format!("boot ids differ: a {boot_a:?}, b {boot_b:?}")
    })?;
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    ensure(host_boot.trim() != boot_a, || {
        "the containers see the host's kernel, not a guest's".into()
    })?;
    let kernel = steps.exec_ok(&a, &["uname", "-r"]).await?;
    println!("guest kernel {kernel}, boot id {boot_a}");
    let a_pid = info_pid(&steps.status(&a).await?.info);
    let b_pid = info_pid(&steps.status(&b).await?.info);
    let vmms = host::vmm_pids();
    ensure(
        vmms.len() == 1
            && pod_pid.is_some()
            && [pod_pid, a_pid, b_pid].iter().all(|p| *p == Some(vmms[0])),
        || format!("not one VMM: VMMs {vmms:?}, pids pod {pod_pid:?}, a {a_pid:?}, b {b_pid:?}"),
    )?;
    let vmm = vmms[0];
    println!("one VMM, pid {vmm}, for the pod and both containers");

    // Pod-wide IPC and hostname, as kubelet expects of a pod.
    let ipc_a = steps
        .exec_ok(&a, &["readlink", "/proc/self/ns/ipc"])
        .await?;
    let ipc_b = steps
        .exec_ok(&b, &["readlink", "/proc/self/ns/ipc"])
        .await?;
    ensure(ipc_a == ipc_b, || {
        format!("the containers do not share the pod's IPC namespace: {ipc_a} vs {ipc_b}")
    })?;
    let hostname = steps.exec_ok(&b, &["hostname"]).await?;
    ensure(hostname == config.hostname, || {
        format!("hostname {hostname:?}, the pod's is {:?}", config.hostname)
    })?;

    // The pod's network is CNI's: the address containerd reports is on
    // the guest's eth0, and the host reaches a server in the pod there.
    let pod_ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    let addrs = steps
        .exec_ok(&a, &["sh", "-c", "ip addr show dev eth0"])
        .await?;
    ensure(
        !pod_ip.is_empty() && addrs.contains(&format!("inet {pod_ip}/")),
        || format!("the pod's IP {pod_ip:?} is not on the guest's eth0: {addrs}"),
    )?;
    steps
        .exec_ok(&a, &["httpd", "-p", "8080", "-h", "/etc"])
        .await?;
    let reply = host::http_get(&format!("{pod_ip}:8080"), "/hostname")?;
    ensure(
        reply.starts_with("HTTP/1.") && reply.contains(&config.hostname),
        || format!("HTTP from the pod at {pod_ip}: {reply:?}"),
    )?;
    println!("pod IP {pod_ip} on the guest's eth0, reachable from the host");

    // A failing exec reports its code and stderr.
    let out = steps
        .exec(&b, &["sh", "-c", "echo to-stderr >&2; exit 3"])
        .await?;
    ensure(
        out.exit_code == 3 && String::from_utf8_lossy(&out.stderr).contains("to-stderr"),
        || format!("exec exit {}, stderr {:?}", out.exit_code, out.stderr),
    )?;

    // The containers' output reached their CRI log files.
    let log_a = log_dir
        .join(&config.metadata.as_ref().unwrap().name)
        .join("a.log");
    let logged = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log_a).is_ok_and(|l| l.contains(" stdout F started-a"))
    })
    .await;
    ensure(logged, || {
        format!(
            "{log_a:?} lacks a's output: {:?}",
            std::fs::read_to_string(&log_a)
        )
    })?;

    stats_and_update(steps, &a, &b).await?;

    // Stop: a ends on SIGTERM through its trap; b by a signal.
    let init = steps.exec_ok(&b, &["cat", "/proc/1/comm"]).await?;
    println!("b: its pid namespace's pid 1 is {init:?}");
    steps.stop(&a, Duration::from_secs(30)).await?;
    let (code, _) = steps
        .wait_state(&a, ContainerState::ContainerExited, Duration::from_secs(30))
        .await?;
    ensure(code == 0, || format!("a exited {code} on SIGTERM, not 0"))?;
    steps.stop(&b, Duration::from_secs(2)).await?;
    let (code, _) = steps
        .wait_state(&b, ContainerState::ContainerExited, Duration::from_secs(30))
        .await?;
    // runc's pid 1 ignores SIGTERM without a handler, so it ends by the
    // SIGKILL after the grace period (137); husk's guest delivers the
    // SIGTERM (143).
    ensure(code == 137 || code == 143, || {
        format!("b exited {code}, not by SIGKILL (137) or SIGTERM (143)")
    })?;
    println!("b exited {code} on StopContainer");
    let log_a = std::fs::read_to_string(&log_a).unwrap_or_default();
    ensure(log_a.contains(" stdout F stopping"), || {
        format!("a's trap did not log: {log_a:?}")
    })?;
    steps.remove(&a).await?;
    steps.remove(&b).await?;
    ensure(host::alive(vmm), || {
        "the pod VM ended with its containers, before the pod".into()
    })?;
    steps.end_pod(pod).await?;
    let t = Instant::now();
    let ended = wait_for(Duration::from_secs(60), || !host::alive(vmm)).await;
    ensure(ended, || {
        format!("VMM {vmm} still runs after RemovePodSandbox")
    })?;
    done("the pod's VMM ended", t);
    Ok(())
}

/// ContainerStats for a, and UpdateContainerResources on b seen in b's
/// cgroup in the guest.
async fn stats_and_update(steps: &Steps<'_>, a: &str, b: &str) -> Result<(), StepError> {
    let t = Instant::now();
    let req = ContainerStatsRequest {
        container_id: a.to_string(),
    };
    let stats = steps
        .cri
        .call("ContainerStats", steps.cri.rt().container_stats(req))
        .await?
        .stats
        .unwrap_or_default();
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    ensure(memory > 0, || {
        format!(
            "ContainerStats of a shows no memory in use: {:?}",
            stats.memory
        )
    })?;
    done(&format!("ContainerStats a (working set {memory} B)"), t);
    let t = Instant::now();
    let req = UpdateContainerResourcesRequest {
        container_id: b.to_string(),
        linux: Some(k8s_cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: UPDATED_LIMIT,
            ..Default::default()
        }),
        ..Default::default()
    };
    steps
        .cri
        .call(
            "UpdateContainerResources",
            steps.cri.rt().update_container_resources(req),
        )
        .await?;
    done("UpdateContainerResources b (memory limit 64 MiB)", t);
    // Without a cgroup namespace (containerd 1.6 asks for one only on
    // cgroup v2 hosts) /sys/fs/cgroup is the guest's whole hierarchy: the
    // container's cgroup is the path /proc/self/cgroup names.
    let max = steps
        .exec_ok(
            b,
            &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max",
            ],
        )
        .await?;
    ensure(max == UPDATED_LIMIT.to_string(), || {
        format!("b's memory.max is {max}, not {UPDATED_LIMIT}")
    })
}

/// After the pod is removed: CRI lists none of this scenario's objects.
async fn after_removal(steps: &Steps<'_>) -> Result<(), StepError> {
    let pods = steps
        .cri
        .call(
            "ListPodSandbox",
            steps
                .cri
                .rt()
                .list_pod_sandbox(ListPodSandboxRequest::default()),
        )
        .await?
        .items;
    let containers = steps
        .cri
        .call(
            "ListContainers",
            steps
                .cri
                .rt()
                .list_containers(ListContainersRequest::default()),
        )
        .await?
        .containers;
    ensure(pods.is_empty() && containers.is_empty(), || {
        format!(
            "left after removal: pods {:?}, containers {:?}",
            pods.iter().map(|p| &p.id).collect::<Vec<_>>(),
            containers.iter().map(|c| &c.id).collect::<Vec<_>>()
        )
    })
}

/// Polls `cond` every 100 ms for up to `within`.
pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}
