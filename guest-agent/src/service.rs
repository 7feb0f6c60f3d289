//! The agent API's ttrpc edge: each handler calls a plain function and
//! maps its typed error to a ttrpc status here, and only here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use husk_protocol::agent::{
    health_response::Status, ConfigureNetworkRequest, ContainerRequest, ContainerStatsResponse,
    CreateContainerRequest, CreateContainerResponse, Empty, ExecProcessRequest,
    ExecProcessResponse, GuestDetailsResponse, HealthResponse, ListProcessesResponse, OomEvent,
    ProcessRequest, ResizeTtyRequest, ShutdownRequest, SignalProcessRequest,
    UpdateContainerRequest, VersionRequest, VersionResponse, WaitProcessResponse,
};
use husk_protocol::agent_ttrpc::Agent;
use husk_protocol::API_VERSION;
use ttrpc::{Code, TtrpcContext};

use crate::container::cgroup::CgroupError;
use crate::container::spawn::SpawnError;
use crate::container::{
    ContainerOpError, Containers, CreateContainerError, ExecProcessError, LookupError,
    OomEventError, ProcessOpError, StartProcessError,
};
use crate::network::ConfigureNetworkError;

/// How long the agent lets its Shutdown reply travel before the guest ends.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

/// The agent API.
pub struct AgentService {
    in_guest: bool,
    containers: Arc<Containers>,
}

impl AgentService {
    /// The service; `in_guest` decides whether Shutdown resets the guest
    /// or ends the host process, and whether ConfigureNetwork may touch
    /// the network at all.
    pub fn new(in_guest: bool, containers: Arc<Containers>) -> Self {
        Self {
            in_guest,
            containers,
        }
    }
}

/// The version reply; a caller of another API version is logged, and
/// refuses the agent on its side.
fn version(req: &VersionRequest) -> VersionResponse {
    if req.api_version != API_VERSION {
        log::warn!(
            "caller speaks API version {}, the agent {API_VERSION}",
            req.api_version
        );
    }
    VersionResponse {
        api_version: API_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// Ends the guest (or the host process) shortly after the reply is sent.
fn schedule_shutdown(in_guest: bool) {
    log::info!("shutdown requested");
    std::thread::spawn(move || {
        std::thread::sleep(SHUTDOWN_GRACE);
        if in_guest {
            crate::init::end_guest();
        }
        std::process::exit(0);
    });
}

/// The call's deadline (ttrpc carries the client's timeout).
fn deadline(ctx: &TtrpcContext) -> Option<Instant> {
    u64::try_from(ctx.timeout_nano)
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Instant::now() + Duration::from_nanos(n))
}

/// The ttrpc code of an error.
trait RpcCode: std::error::Error {
    fn code(&self) -> Code;
}

/// An error and its sources as one message, with its code.
fn status<E: RpcCode>(e: E) -> ttrpc::Error {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    log::debug!("call failed: {msg}");
    ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
}

fn cgroup_code(e: &CgroupError) -> Code {
    match e {
        CgroupError::Unavailable { .. } => Code::FAILED_PRECONDITION,
        CgroupError::Limit { .. } => Code::INVALID_ARGUMENT,
        CgroupError::FreezeTimeout { .. } => Code::DEADLINE_EXCEEDED,
        CgroupError::Io { .. } => Code::INTERNAL,
    }
}

fn spawn_code(e: &SpawnError) -> Code {
    match e {
        // The helper names what in the spec could not be carried out.
        SpawnError::Failed(_) => Code::FAILED_PRECONDITION,
        _ => Code::INTERNAL,
    }
}

impl RpcCode for LookupError {
    fn code(&self) -> Code {
        Code::NOT_FOUND
    }
}

impl RpcCode for CreateContainerError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidId(_) | Self::Spec(_) => Code::INVALID_ARGUMENT,
            Self::Exists(_) => Code::ALREADY_EXISTS,
            Self::Cgroup(e) => cgroup_code(e),
            Self::Io(..) => Code::INTERNAL,
            Self::Setup(e) => spawn_code(e),
        }
    }
}

impl RpcCode for StartProcessError {
    fn code(&self) -> Code {
        match self {
            Self::Lookup(_) => Code::NOT_FOUND,
            Self::State(..) => Code::FAILED_PRECONDITION,
            Self::StreamsMissing { .. } => Code::DEADLINE_EXCEEDED,
            Self::Exec(e) => spawn_code(e),
        }
    }
}

impl RpcCode for ExecProcessError {
    fn code(&self) -> Code {
        match self {
            Self::Lookup(_) => Code::NOT_FOUND,
            Self::InvalidId(_) | Self::Spec(_) => Code::INVALID_ARGUMENT,
            Self::Exists(_) => Code::ALREADY_EXISTS,
            Self::Stopped(_) => Code::FAILED_PRECONDITION,
            Self::Io(_) => Code::INTERNAL,
            Self::Cgroup(e) => cgroup_code(e),
            Self::Setup(e) => spawn_code(e),
            Self::Start(e) => e.code(),
        }
    }
}

impl RpcCode for ProcessOpError {
    fn code(&self) -> Code {
        match self {
            Self::Lookup(_) | Self::Exited => Code::NOT_FOUND,
            Self::Invalid(_) => Code::INVALID_ARGUMENT,
            Self::NoTerminal => Code::FAILED_PRECONDITION,
            Self::Deadline(_) => Code::DEADLINE_EXCEEDED,
            Self::Sys(..) => Code::INTERNAL,
            Self::Cgroup(e) => cgroup_code(e),
        }
    }
}

impl RpcCode for ContainerOpError {
    fn code(&self) -> Code {
        match self {
            Self::Lookup(_) => Code::NOT_FOUND,
            Self::Spec(_) => Code::INVALID_ARGUMENT,
            Self::Cgroup(e) => cgroup_code(e),
            Self::Stuck(..) | Self::Proc(..) => Code::INTERNAL,
        }
    }
}

impl RpcCode for OomEventError {
    fn code(&self) -> Code {
        Code::DEADLINE_EXCEEDED
    }
}

impl RpcCode for ConfigureNetworkError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::INVALID_ARGUMENT,
            Self::HostMode => Code::FAILED_PRECONDITION,
            Self::Apply(_) => Code::INTERNAL,
        }
    }
}

fn create(
    c: &Containers,
    req: &CreateContainerRequest,
) -> Result<CreateContainerResponse, CreateContainerError> {
    let pid = c.create(req)?;
    Ok(CreateContainerResponse {
        pid,
        ..Default::default()
    })
}

fn exec(
    c: &Containers,
    req: &ExecProcessRequest,
    d: Option<Instant>,
) -> Result<ExecProcessResponse, ExecProcessError> {
    let pid = c.exec(req, d)?;
    Ok(ExecProcessResponse {
        pid,
        ..Default::default()
    })
}

fn oom_event(c: &Containers, d: Option<Instant>) -> Result<OomEvent, OomEventError> {
    let container_id = c.oom_event(d)?;
    Ok(OomEvent {
        container_id,
        ..Default::default()
    })
}

impl Agent for AgentService {
    fn version(&self, _ctx: &TtrpcContext, req: VersionRequest) -> ttrpc::Result<VersionResponse> {
        Ok(version(&req))
    }

    fn health(&self, _ctx: &TtrpcContext, _req: Empty) -> ttrpc::Result<HealthResponse> {
        Ok(HealthResponse {
            status: Status::SERVING.into(),
            ..Default::default()
        })
    }

    fn guest_details(
        &self,
        _ctx: &TtrpcContext,
        _req: Empty,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        Ok(crate::guest_info::guest_details())
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        schedule_shutdown(self.in_guest);
        Ok(Empty::new())
    }

    fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        create(&self.containers, &req).map_err(status)
    }

    fn start_container(&self, ctx: &TtrpcContext, req: ContainerRequest) -> ttrpc::Result<Empty> {
        self.containers
            .start(&req.container_id, deadline(ctx))
            .map_err(status)?;
        Ok(Empty::new())
    }

    fn remove_container(&self, _ctx: &TtrpcContext, req: ContainerRequest) -> ttrpc::Result<Empty> {
        self.containers.remove(&req.container_id).map_err(status)?;
        Ok(Empty::new())
    }

    fn exec_process(
        &self,
        ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        exec(&self.containers, &req, deadline(ctx)).map_err(status)
    }

    fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers.signal(&req).map_err(status)?;
        Ok(Empty::new())
    }

    fn wait_process(
        &self,
        ctx: &TtrpcContext,
        req: ProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        self.containers.wait(&req, deadline(ctx)).map_err(status)
    }

    fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        self.containers.list(&req.container_id).map_err(status)
    }

    fn container_stats(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<ContainerStatsResponse> {
        self.containers.stats(&req.container_id).map_err(status)
    }

    fn resize_tty(&self, _ctx: &TtrpcContext, req: ResizeTtyRequest) -> ttrpc::Result<Empty> {
        self.containers.resize_tty(&req).map_err(status)?;
        Ok(Empty::new())
    }

    fn close_stdin(&self, _ctx: &TtrpcContext, req: ProcessRequest) -> ttrpc::Result<Empty> {
        self.containers.close_stdin(&req).map_err(status)?;
        Ok(Empty::new())
    }

    fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.containers.update(&req).map_err(status)?;
        Ok(Empty::new())
    }

    fn pause_container(&self, _ctx: &TtrpcContext, req: ContainerRequest) -> ttrpc::Result<Empty> {
        self.containers
            .freeze(&req.container_id, true)
            .map_err(status)?;
        Ok(Empty::new())
    }

    fn resume_container(&self, _ctx: &TtrpcContext, req: ContainerRequest) -> ttrpc::Result<Empty> {
        self.containers
            .freeze(&req.container_id, false)
            .map_err(status)?;
        Ok(Empty::new())
    }

    fn get_oom_event(&self, ctx: &TtrpcContext, _req: Empty) -> ttrpc::Result<OomEvent> {
        oom_event(&self.containers, deadline(ctx)).map_err(status)
    }

    fn configure_network(
        &self,
        _ctx: &TtrpcContext,
        req: ConfigureNetworkRequest,
    ) -> ttrpc::Result<Empty> {
        crate::network::configure_network(self.in_guest, &req).map_err(status)?;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_reports_this_api() {
        let v = version(&VersionRequest {
            api_version: 99,
            ..Default::default()
        });
        assert_eq!(v.api_version, API_VERSION);
        assert!(!v.agent_version.is_empty());
    }

    #[test]
    fn statuses_carry_the_code_and_the_whole_chain() {
        let e = CreateContainerError::Spec(crate::container::spec::SpecError::new(
            "oci_spec_json: process.args",
            "empty",
        ));
        match status(e) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::INVALID_ARGUMENT);
                assert_eq!(s.message(), "oci_spec_json: process.args: empty");
            }
            other => panic!("{other:?}"),
        }
        let e = ProcessOpError::Lookup(LookupError::Container("x".into()));
        match status(e) {
            ttrpc::Error::RpcStatus(s) => assert_eq!(s.code(), Code::NOT_FOUND),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_network_the_guest_cannot_apply_is_reported_with_its_cause() {
        let e = ConfigureNetworkError::Apply(husk_netlink::ApplyError::NoLinkWithMac {
            mac: husk_netlink::Mac([2, 0, 0, 0, 0, 1]),
            interface: "eth0".into(),
        });
        match status(e) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::INTERNAL);
                let (outer, cause) = s.message().split_once(": ").unwrap();
                assert_eq!(outer, "cannot configure the guest's network");
                assert!(cause.starts_with("no link has MAC "), "{cause}");
                assert!(cause.ends_with("interface eth0 of the pod has"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
    }
}
