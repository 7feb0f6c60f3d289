//! A CRI client as kubelet holds one: the runtime and image services of
//! CRI v1 over gRPC on containerd's Unix socket, every call bounded in
//! time and named in its error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The runtime answered with an error.
    #[error("{call}: {}: {}", .status.code(), .status.message())]
    Status {
        /// The CRI method.
        call: &'static str,
        /// What the runtime said.
        status: tonic::Status,
    },
    /// No answer in time.
    #[error("{call}: no answer in {timeout:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// How long it was given.
        timeout: Duration,
    },
}

/// Why the CRI socket could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the CRI socket {socket:?}")]
pub struct ConnectError {
    socket: PathBuf,
    #[source]
    source: tonic::transport::Error,
}

/// Both CRI services on one channel.
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    timeout: Duration,
}

impl Cri {
    /// Connects to the CRI endpoint at `socket`; each later call may take
    /// up to `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, ConnectError> {
        let path = socket.to_path_buf();
        // The URI is a placeholder: the connector dials the socket.
        let channel =
            Endpoint::from_static("http://[::1]:1")
                .connect_timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| ConnectError {
                    socket: socket.to_path_buf(),
                    source,
                })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout,
        })
    }

    /// The runtime service (RunPodSandbox, CreateContainer, ExecSync, …);
    /// a handle on the shared channel.
    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The image service (ImageStatus, …).
    pub fn img(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one call (named `call` in errors), bounded by the timeout.
    pub async fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CallError::Status { call, status }),
            Err(_) => Err(CallError::Timeout {
                call,
                timeout: self.timeout,
            }),
        }
    }
}
