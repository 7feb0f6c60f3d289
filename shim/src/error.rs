//! Errors of the task service, and how containerd receives them: a gRPC
//! status whose code containerd maps to its own error kinds (not found,
//! already exists, failed precondition, invalid argument).

use husk::agent::{AgentCallError, AttachStdioError};
use husk::config::LoadConfigError;
use husk::oci::LoadBundleError;
use husk::sandbox::{JoinNetworkError, SpawnVmError, WaitAgentError};
use ttrpc::Code;

use crate::pod::annotations::AnnotationError;
use crate::pod::mounts::MountError;
use crate::stdio::OpenStdioError;

/// Why a task request failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such container in this pod.
    #[error("container {0} not found in this pod")]
    NoContainer(String),
    /// No such exec process.
    #[error("exec {exec_id} not found in container {container_id}")]
    NoExec {
        /// The container.
        container_id: String,
        /// The exec id.
        exec_id: String,
    },
    /// The process has already ended.
    #[error("{0}: process already finished")]
    Finished(String),
    /// The pod's `io.husk.*` annotations.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The id is taken.
    #[error("{0} already exists")]
    Exists(String),
    /// The request does not fit the process's state.
    #[error("{what}: {why}")]
    State {
        /// The process.
        what: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A request field is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The pod's VM is gone.
    #[error("the pod's microVM is not running")]
    NoVm,
    /// The husk configuration.
    #[error(transparent)]
    Config(#[from] LoadConfigError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] LoadBundleError),
    /// The rootfs or a bind mount.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// containerd's stdio FIFOs.
    #[error(transparent)]
    Stdio(#[from] OpenStdioError),
    /// The pod's network namespace could not be joined.
    #[error(transparent)]
    Network(#[from] JoinNetworkError),
    /// The microVM did not start.
    #[error("cannot start the microVM")]
    Spawn(#[from] SpawnVmError),
    /// The agent was not reached.
    #[error(transparent)]
    Agent(#[from] WaitAgentError),
    /// The agent refused.
    #[error(transparent)]
    Call(#[from] AgentCallError),
    /// A stdio stream could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachStdioError),
    /// Host I/O.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl TaskError {
    /// The gRPC code containerd maps to its error kind.
    fn code(&self) -> Code {
        match self {
            TaskError::NoContainer(_) | TaskError::NoExec { .. } | TaskError::Finished(_) => {
                Code::NOT_FOUND
            }
            TaskError::Exists(_) => Code::ALREADY_EXISTS,
            TaskError::State { .. } | TaskError::NoVm => Code::FAILED_PRECONDITION,
            TaskError::Invalid(_)
            | TaskError::Bundle(_)
            | TaskError::Config(_)
            | TaskError::Annotation(_)
            | TaskError::Network(JoinNetworkError::Read(_)) => Code::INVALID_ARGUMENT,
            TaskError::Network(JoinNetworkError::AddedLater { .. }) => Code::FAILED_PRECONDITION,
            _ => Code::INTERNAL,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        let message = husk::error_chain(&e);
        log::warn!("{message}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_gets_the_kind_and_the_whole_chain() {
        let e: ttrpc::Error = TaskError::NoContainer("c1".into()).into();
        let ttrpc::Error::RpcStatus(status) = e else {
            panic!("not a status")
        };
        assert_eq!(status.code(), Code::NOT_FOUND);
        assert!(status.message().contains("c1"));
        let io = TaskError::Io {
            what: "open /x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(io) else {
            panic!("not a status")
        };
        assert_eq!(status.code(), Code::INTERNAL);
        assert!(status.message().contains("open /x"), "{}", status.message());
        assert!(
            status.message().contains("No such file"),
            "{}",
            status.message()
        );
    }
}
