//! The agent API's ttrpc edge: each handler calls a plain function and
//! maps its result to the wire.

use std::time::Duration;

use husk_protocol::agent::{
    health_response::Status, Empty, GuestDetailsResponse, HealthResponse, ShutdownRequest,
    VersionRequest, VersionResponse,
};
use husk_protocol::agent_ttrpc::Agent;
use husk_protocol::API_VERSION;
use ttrpc::TtrpcContext;

/// How long the agent lets its Shutdown reply travel before the guest ends.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

/// The agent API.
pub struct AgentService {
    in_guest: bool,
}

impl AgentService {
    /// The service; `in_guest` decides whether Shutdown resets the guest
    /// or ends the host process.
    pub fn new(in_guest: bool) -> Self {
        Self { in_guest }
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
}
