//! The task service containerd calls: each request translated into husk's
//! terms at this edge and handed to the pod, each answer translated back.

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::types::task::ProcessInfo;
use husk_protocol::agent::ContainerStatsResponse;

use crate::error::TaskError;
use crate::pod::mounts::RootfsMount;
use crate::pod::process::Phase;
use crate::pod::{CreateRequest, Pod};
use crate::stdio::StdioPaths;

/// containerd's type URL of cgroup v2 metrics.
const METRICS_V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";
/// The runtime options type CRI passes (`ConfigPath`).
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// The task service of one shim (one pod).
pub struct TaskService {
    pod: Arc<Pod>,
}

impl TaskService {
    /// The service for `pod`.
    pub fn new(pod: Arc<Pod>) -> Self {
        Self { pod }
    }
}

/// The `config_path` of CRI's runtime options (field 2 of
/// `runtimeoptions.v1.Options`), if the options are of that type.
fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, TaskError> {
    let Some(any) = options.filter(|a| a.type_url.ends_with(RUNTIME_OPTIONS_TYPE)) else {
        return Ok(None);
    };
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        TaskError::Invalid(format!("runtime options: {e}"))
    };
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut path = None;
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        if tag == (2 << 3 | 2) {
            path = Some(input.read_string().map_err(bad)?);
        } else {
            let wire = containerd_shim_protos::protobuf::rt::WireType::new(tag & 7)
                .ok_or_else(|| TaskError::Invalid("runtime options: bad wire type".into()))?;
            input.skip_field(wire).map_err(bad)?;
        }
    }
    Ok(path.filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// cgroup v2 metrics as containerd reads them.
fn metrics(stats: &ContainerStatsResponse) -> Metrics {
    let mut m = Metrics::new();
    m.pids = Some(PidsStat {
        current: stats.pids_current,
        limit: stats.pids_limit,
        ..Default::default()
    })
    .into();
    m.cpu = Some(CPUStat {
        usage_usec: stats.cpu_usage_usec,
        user_usec: stats.cpu_user_usec,
        system_usec: stats.cpu_system_usec,
        ..Default::default()
    })
    .into();
    m.memory = Some(MemoryStat {
        usage: stats.memory_usage_bytes,
        usage_limit: stats.memory_limit_bytes,
        ..Default::default()
    })
    .into();
    m.io = Some(IOStat {
        usage: vec![IOEntry {
            rbytes: stats.io_read_bytes,
            wbytes: stats.io_write_bytes,
            ..Default::default()
        }],
        ..Default::default()
    })
    .into();
    m.memory_events = Some(MemoryEvents {
        oom_kill: stats.oom_kills,
        ..Default::default()
    })
    .into();
    m
}

impl Task for TaskService {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Invalid("husk does not restore checkpoints".into()).into());
        }
        let rootfs = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fstype: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let create = CreateRequest {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs,
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            config_path: config_path(req.options.as_ref())?,
        };
        let pid = self.pod.create(create)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = self.pod.start(&req.id, &req.exec_id)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let (container, process) = self.pod.process(&req.id, &req.exec_id)?;
        let status = match process.phase() {
            Phase::Created => Status::CREATED,
            Phase::Running if req.exec_id.is_empty() && container.paused() => Status::PAUSED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        };
        let exit = process.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: container.bundle.clone(),
            pid: self.pod.task_pid(),
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let (pid, exit) = self.pod.delete(&req.id, &req.exec_id)?;
        Ok(DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let processes = self
            .pod
            .pids(&req.id)?
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.pod.set_paused(&req.id, true)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.pod.set_paused(&req.id, false)?;
        Ok(Empty::new())
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.pod.kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| TaskError::Invalid(format!("exec {}: no process spec", req.exec_id)))?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.pod.add_exec(&req.id, &req.exec_id, stdio, spec)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.pod
            .resize(&req.id, &req.exec_id, req.height, req.width)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            self.pod.close_stdin(&req.id, &req.exec_id)?;
        }
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| TaskError::Invalid(format!("update {}: no resources", req.id)))?;
        self.pod.update(&req.id, resources)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let (_, process) = self.pod.process(&req.id, &req.exec_id)?;
        let exit = process.wait();
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.pod.stats(&req.id)?;
        let any = Any {
            type_url: METRICS_V2_TYPE.to_string(),
            value: metrics(&stats)
                .write_to_bytes()
                .map_err(|e| TaskError::Invalid(format!("metrics: {e}")))?,
            ..Default::default()
        };
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, _req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.pod.task_pid(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        self.pod.shutdown(req.now);
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_runtime_options_name_the_config_file() {
        // field 1 (type_url) = "x", field 2 (config_path) = "/etc/h.toml"
        let mut value = vec![0x0a, 1, b'x', 0x12, 11];
        value.extend_from_slice(b"/etc/h.toml");
        let any = Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/h.toml"))
        );
        let other = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..Default::default()
        };
        assert_eq!(config_path(Some(&other)).unwrap(), None);
        let broken = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 40, b'a'],
            ..Default::default()
        };
        assert!(config_path(Some(&broken)).is_err());
    }

    #[test]
    fn stats_become_cgroup_v2_metrics() {
        let stats = ContainerStatsResponse {
            cpu_usage_usec: 5,
            memory_usage_bytes: 4096,
            memory_limit_bytes: 8192,
            pids_current: 2,
            oom_kills: 1,
            ..Default::default()
        };
        let m = metrics(&stats);
        assert_eq!(m.cpu.usage_usec, 5);
        assert_eq!((m.memory.usage, m.memory.usage_limit), (4096, 8192));
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.memory_events.oom_kill, 1);
    }
}
