//! The host side of the agent API: the hybrid-vsock handshake and a typed
//! ttrpc client.
//!
//! A host process reaches the guest agent through the VMM's vsock Unix
//! socket: it connects, writes `CONNECT <port>\n`, and reads `OK <port>\n`
//! once the guest accepted. The bytes after that line belong to the guest,
//! so the reply is read one byte at a time before the socket is handed to
//! ttrpc.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_protocol::agent::{
    ContainerRequest, ContainerStatsResponse, CreateContainerRequest, Empty, ExecProcessRequest,
    GuestDetailsResponse, HealthResponse, ListProcessesResponse, OomEvent, ProcessRequest,
    ResizeTtyRequest, ShutdownRequest, SignalProcessRequest, Stdio, UpdateContainerRequest,
    VersionRequest, WaitProcessResponse,
};
use husk_protocol::agent_ttrpc::AgentClient as TtrpcAgentClient;
use husk_protocol::API_VERSION;

mod network;

pub use network::configure_network_request;

/// Longest handshake reply accepted (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 32;
/// Longest answer to a stdio stream header (`ERR <why>` carries a reason).
const MAX_STDIO_ANSWER: usize = 1024;
/// Timeout of each agent call unless the caller sets another.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the hybrid-vsock handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectAgentError {
    /// The VMM's socket is not there or refuses connections.
    #[error("cannot connect to the VMM's vsock socket {path:?}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The handshake could not be written or read.
    #[error("vsock handshake on {path:?}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VMM closed the connection: nobody listens on that guest port (yet).
    #[error("guest port {port} refused the connection (is the agent up?)")]
    Refused {
        /// The guest port.
        port: u32,
    },
    /// The VMM answered something other than `OK <port>`.
    #[error("unexpected vsock handshake reply {0:?}")]
    BadReply(String),
}

/// Connects to guest `port` through the hybrid-vsock socket at `path`.
/// `timeout` bounds the handshake; the returned stream has no timeout.
pub fn connect_hybrid_vsock(
    path: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, ConnectAgentError> {
    let io_err = |source| ConnectAgentError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ConnectAgentError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io_err)?;
    let reply = read_reply_line(&mut stream, MAX_REPLY).map_err(|e| match e {
        ReplyError::Io(source) => io_err(source),
        ReplyError::Closed => ConnectAgentError::Refused { port },
        ReplyError::Bad(line) => ConnectAgentError::BadReply(line),
    })?;
    parse_ok_reply(&reply).ok_or(ConnectAgentError::BadReply(reply))?;
    stream.set_read_timeout(None).map_err(io_err)?;
    stream.set_write_timeout(None).map_err(io_err)?;
    Ok(stream)
}

enum ReplyError {
    Io(std::io::Error),
    Closed,
    Bad(String),
}

/// Reads up to and including `\n`, one byte at a time.
fn read_reply_line(stream: &mut impl Read, max: usize) -> Result<String, ReplyError> {
    let mut line = Vec::with_capacity(max.min(64));
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => return Err(ReplyError::Closed),
            Ok(0) => return Err(ReplyError::Bad(String::from_utf8_lossy(&line).into_owned())),
            Ok(_) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > max {
                    return Err(ReplyError::Bad(String::from_utf8_lossy(&line).into_owned()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ReplyError::Closed)
            }
            Err(e) => return Err(ReplyError::Io(e)),
        }
    }
}

/// The host port of an `OK <port>` reply.
fn parse_ok_reply(line: &str) -> Option<u32> {
    line.strip_prefix("OK ")?.parse().ok()
}

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// The ttrpc client could not be set up on the connection.
    #[error("cannot start the agent client")]
    Client(#[source] ttrpc::Error),
    /// The call failed or the agent answered with an error.
    #[error("agent call {call}")]
    Call {
        /// The method.
        call: &'static str,
        /// The agent's refusal or ttrpc's own failure.
        #[source]
        source: CallFailure,
    },
    /// The agent speaks another API version.
    #[error(
        "the guest agent speaks API version {agent} (agent {agent_version}), this husk speaks {API_VERSION}: \
         rebuild the initramfs with this husk (scripts/setup.sh)"
    )]
    ApiMismatch {
        /// The agent's API version.
        agent: u32,
        /// The agent's build version.
        agent_version: String,
    },
}

/// How one agent call failed. An agent that answered with an error status
/// is reported by its message alone (it is the whole story, and it reaches
/// users: podman and containerd print it); a transport failure is ttrpc's.
#[derive(Debug)]
pub struct CallFailure(pub ttrpc::Error);

impl CallFailure {
    /// The status code, if the agent answered.
    pub fn code(&self) -> Option<ttrpc::Code> {
        match &self.0 {
            ttrpc::Error::RpcStatus(s) => Some(s.code()),
            _ => None,
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ttrpc::Error::RpcStatus(s) if s.message().is_empty() => {
                write!(f, "the agent answered {:?}", s.code())
            }
            ttrpc::Error::RpcStatus(s) => f.write_str(s.message()),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for CallFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            ttrpc::Error::RpcStatus(_) => None,
            other => other.source(),
        }
    }
}

/// The agent's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentVersion {
    /// API version.
    pub api: u32,
    /// Build version of the agent.
    pub agent: String,
}

impl fmt::Display for AgentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (API {})", self.agent, self.api)
    }
}

/// A connected agent. Clones share the connection; calls from several
/// threads run concurrently.
#[derive(Clone)]
pub struct AgentClient {
    client: TtrpcAgentClient,
    timeout: Duration,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AgentClient {
    /// A client over a connected stream (from [`connect_hybrid_vsock`], or
    /// a Unix socket of an agent running as a host process).
    pub fn new(stream: UnixStream) -> Result<Self, AgentCallError> {
        let client = ttrpc::Client::new(stream.into_raw_fd()).map_err(AgentCallError::Client)?;
        Ok(Self {
            client: TtrpcAgentClient::new(client),
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Sets the timeout of each call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn ctx(&self) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(self.timeout.as_nanos().min(i64::MAX as u128) as i64)
    }

    /// Asks the agent's version and refuses an agent of another API.
    pub fn version(&self) -> Result<AgentVersion, AgentCallError> {
        let req = VersionRequest {
            api_version: API_VERSION,
            ..Default::default()
        };
        let resp =
            self.client
                .version(self.ctx(), &req)
                .map_err(|source| AgentCallError::Call {
                    call: "Version",
                    source: CallFailure(source),
                })?;
        if resp.api_version != API_VERSION {
            return Err(AgentCallError::ApiMismatch {
                agent: resp.api_version,
                agent_version: resp.agent_version,
            });
        }
        Ok(AgentVersion {
            api: resp.api_version,
            agent: resp.agent_version,
        })
    }

    /// Liveness check.
    pub fn health(&self) -> Result<HealthResponse, AgentCallError> {
        self.client
            .health(self.ctx(), &Empty::new())
            .map_err(|source| AgentCallError::Call {
                call: "Health",
                source: CallFailure(source),
            })
    }

    /// What the guest looks like.
    pub fn guest_details(&self) -> Result<GuestDetailsResponse, AgentCallError> {
        self.client
            .guest_details(self.ctx(), &Empty::new())
            .map_err(|source| AgentCallError::Call {
                call: "GuestDetails",
                source: CallFailure(source),
            })
    }

    /// Asks the guest to end. The agent answers before it resets the
    /// guest; the VMM process exits soon after.
    pub fn shutdown(&self) -> Result<(), AgentCallError> {
        self.client
            .shutdown(self.ctx(), &ShutdownRequest::new())
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "Shutdown",
                source: CallFailure(source),
            })
    }
}

/// Timeout of calls that block until something happens in the guest.
const BLOCKING_CALL_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn container(id: &str) -> ContainerRequest {
    ContainerRequest {
        container_id: id.to_string(),
        ..Default::default()
    }
}

fn process(id: &str, exec_id: &str) -> ProcessRequest {
    ProcessRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        ..Default::default()
    }
}

impl AgentClient {
    fn blocking_ctx(&self) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(BLOCKING_CALL_TIMEOUT.as_nanos() as i64)
    }

    /// Creates a container from its OCI spec (guest paths); returns the
    /// init's guest pid. Its stdio streams must be attached before start.
    pub fn create_container(
        &self,
        id: &str,
        oci_spec_json: Vec<u8>,
        stdio: Stdio,
    ) -> Result<u32, AgentCallError> {
        let req = CreateContainerRequest {
            container_id: id.to_string(),
            oci_spec_json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.client
            .create_container(self.ctx(), &req)
            .map(|r| r.pid)
            .map_err(|source| AgentCallError::Call {
                call: "CreateContainer",
                source: CallFailure(source),
            })
    }

    /// Starts a created container's init.
    pub fn start_container(&self, id: &str) -> Result<(), AgentCallError> {
        self.client
            .start_container(self.ctx(), &container(id))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "StartContainer",
                source: CallFailure(source),
            })
    }

    /// Removes a container (what is left of it is killed).
    pub fn remove_container(&self, id: &str) -> Result<(), AgentCallError> {
        self.client
            .remove_container(self.ctx(), &container(id))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "RemoveContainer",
                source: CallFailure(source),
            })
    }

    /// Runs another process in a container; returns its guest pid.
    pub fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
        stdio: Stdio,
    ) -> Result<u32, AgentCallError> {
        let req = ExecProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            process_json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.client
            .exec_process(self.ctx(), &req)
            .map(|r| r.pid)
            .map_err(|source| AgentCallError::Call {
                call: "ExecProcess",
                source: CallFailure(source),
            })
    }

    /// Sends `signal` to a process (`exec_id` empty: the init), or to
    /// every process of the container.
    pub fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentCallError> {
        let req = SignalProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.client
            .signal_process(self.ctx(), &req)
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "SignalProcess",
                source: CallFailure(source),
            })
    }

    /// Waits until a process ends.
    pub fn wait_process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<WaitProcessResponse, AgentCallError> {
        self.client
            .wait_process(self.blocking_ctx(), &process(id, exec_id))
            .map_err(|source| AgentCallError::Call {
                call: "WaitProcess",
                source: CallFailure(source),
            })
    }

    /// The container's processes.
    pub fn list_processes(&self, id: &str) -> Result<ListProcessesResponse, AgentCallError> {
        self.client
            .list_processes(self.ctx(), &container(id))
            .map_err(|source| AgentCallError::Call {
                call: "ListProcesses",
                source: CallFailure(source),
            })
    }

    /// The container's cgroup statistics.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStatsResponse, AgentCallError> {
        self.client
            .container_stats(self.ctx(), &container(id))
            .map_err(|source| AgentCallError::Call {
                call: "ContainerStats",
                source: CallFailure(source),
            })
    }

    /// Sets a process's terminal size.
    pub fn resize_tty(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), AgentCallError> {
        let req = ResizeTtyRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            rows,
            cols,
            ..Default::default()
        };
        self.client
            .resize_tty(self.ctx(), &req)
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "ResizeTty",
                source: CallFailure(source),
            })
    }

    /// Closes a process's stdin.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), AgentCallError> {
        self.client
            .close_stdin(self.ctx(), &process(id, exec_id))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "CloseStdin",
                source: CallFailure(source),
            })
    }

    /// Changes a container's resources (an OCI `linux.resources` object).
    pub fn update_container(
        &self,
        id: &str,
        resources_json: Vec<u8>,
    ) -> Result<(), AgentCallError> {
        let req = UpdateContainerRequest {
            container_id: id.to_string(),
            resources_json,
            ..Default::default()
        };
        self.client
            .update_container(self.ctx(), &req)
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "UpdateContainer",
                source: CallFailure(source),
            })
    }

    /// Freezes a container.
    pub fn pause_container(&self, id: &str) -> Result<(), AgentCallError> {
        self.client
            .pause_container(self.ctx(), &container(id))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "PauseContainer",
                source: CallFailure(source),
            })
    }

    /// Thaws a container.
    pub fn resume_container(&self, id: &str) -> Result<(), AgentCallError> {
        self.client
            .resume_container(self.ctx(), &container(id))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "ResumeContainer",
                source: CallFailure(source),
            })
    }

    /// Waits for the next OOM kill in the guest.
    pub fn get_oom_event(&self) -> Result<OomEvent, AgentCallError> {
        self.client
            .get_oom_event(self.blocking_ctx(), &Empty::new())
            .map_err(|source| AgentCallError::Call {
                call: "GetOomEvent",
                source: CallFailure(source),
            })
    }

    /// Reproduces the pod's network in the guest: its NICs get the pod's
    /// interface names, MTUs and addresses, and its routes and neighbours.
    pub fn configure_network(
        &self,
        network: &husk_netlink::PodNetwork,
    ) -> Result<(), AgentCallError> {
        self.client
            .configure_network(self.ctx(), &configure_network_request(network))
            .map(|_| ())
            .map_err(|source| AgentCallError::Call {
                call: "ConfigureNetwork",
                source: CallFailure(source),
            })
    }
}

/// Which stream of a process a stdio connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioStream {
    /// Host to process.
    Stdin,
    /// Process to host.
    Stdout,
    /// Process to host.
    Stderr,
    /// Both ways, a pty in the guest.
    Tty,
}

impl StdioStream {
    fn name(self) -> &'static str {
        match self {
            StdioStream::Stdin => "stdin",
            StdioStream::Stdout => "stdout",
            StdioStream::Stderr => "stderr",
            StdioStream::Tty => "tty",
        }
    }
}

/// Why a stdio stream could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachStdioError {
    /// The vsock connection to the agent's stdio port failed.
    #[error("cannot reach the agent's stdio port")]
    Connect(#[source] ConnectAgentError),
    /// The stream header could not be sent or its answer read.
    #[error("stdio stream header")]
    Io(#[source] std::io::Error),
    /// The agent refused the stream.
    #[error("the agent refused the {stream} stream of {container_id}/{exec_id}: {why}")]
    Refused {
        /// The container.
        container_id: String,
        /// The process (`-` for the init).
        exec_id: String,
        /// The stream.
        stream: &'static str,
        /// The agent's reason.
        why: String,
    },
}

/// The `STDIO` header line of a stream (`exec_id` empty: the init, `-`).
pub fn stdio_header(container_id: &str, exec_id: &str, stream: StdioStream) -> String {
    let exec_id = if exec_id.is_empty() { "-" } else { exec_id };
    format!("STDIO {container_id} {exec_id} {}\n", stream.name())
}

/// Opens one stdio stream of a process through the VMM's hybrid-vsock
/// socket; after it returns, the stream carries the process's bytes.
pub fn attach_stdio(
    vsock_path: &Path,
    container_id: &str,
    exec_id: &str,
    stream: StdioStream,
    timeout: Duration,
) -> Result<UnixStream, AttachStdioError> {
    let mut conn = connect_hybrid_vsock(vsock_path, husk_protocol::STDIO_VSOCK_PORT, timeout)
        .map_err(AttachStdioError::Connect)?;
    conn.set_read_timeout(Some(timeout))
        .map_err(AttachStdioError::Io)?;
    conn.write_all(stdio_header(container_id, exec_id, stream).as_bytes())
        .map_err(AttachStdioError::Io)?;
    let refused = |why: String| AttachStdioError::Refused {
        container_id: container_id.to_string(),
        exec_id: if exec_id.is_empty() {
            "-".into()
        } else {
            exec_id.to_string()
        },
        stream: stream.name(),
        why,
    };
    let answer = match read_reply_line(&mut conn, MAX_STDIO_ANSWER) {
        Ok(line) => line,
        Err(ReplyError::Io(e)) => return Err(AttachStdioError::Io(e)),
        Err(ReplyError::Closed) => return Err(refused("the agent closed the stream".into())),
        Err(ReplyError::Bad(line)) => return Err(refused(format!("unexpected answer {line:?}"))),
    };
    match answer.as_str() {
        "OK" => {}
        other => {
            return Err(refused(
                other.strip_prefix("ERR ").unwrap_or(other).to_string(),
            ))
        }
    }
    conn.set_read_timeout(None).map_err(AttachStdioError::Io)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_the_agents_message() {
        let refused = AgentCallError::Call {
            call: "CreateContainer",
            source: CallFailure(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::FAILED_PRECONDITION,
                "process.args[0]: \"/x\": No such file or directory",
            ))),
        };
        assert_eq!(
            crate::error_chain(&refused),
            "agent call CreateContainer: process.args[0]: \"/x\": No such file or directory"
        );
        let AgentCallError::Call { source, .. } = &refused else {
            unreachable!()
        };
        assert_eq!(source.code(), Some(ttrpc::Code::FAILED_PRECONDITION));
        let bare = CallFailure(ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::NOT_FOUND,
            "",
        )));
        assert_eq!(bare.to_string(), "the agent answered NOT_FOUND");
        let lost = CallFailure(ttrpc::Error::RemoteClosed);
        assert_eq!(lost.code(), None);
        assert_eq!(lost.to_string(), "ttrpc err: remote stream closed");
    }

    #[test]
    fn stdio_headers_name_the_init_as_a_dash() {
        assert_eq!(
            stdio_header("c1", "", StdioStream::Stdout),
            "STDIO c1 - stdout\n"
        );
        assert_eq!(
            stdio_header("c1", "e2", StdioStream::Tty),
            "STDIO c1 e2 tty\n"
        );
    }

    #[test]
    fn parses_the_ok_reply() {
        assert_eq!(parse_ok_reply("OK 1073741824"), Some(1 << 30));
        assert_eq!(parse_ok_reply("OK"), None);
        assert_eq!(parse_ok_reply("ok 5"), None);
        assert_eq!(parse_ok_reply("OK -1"), None);
    }

    #[test]
    fn reads_exactly_one_line_and_leaves_the_rest() {
        let mut input: &[u8] = b"OK 7\nguest bytes";
        assert_eq!(
            read_reply_line(&mut input, MAX_REPLY).ok(),
            Some("OK 7".to_string())
        );
        assert_eq!(input, b"guest bytes");
    }

    #[test]
    fn a_closed_or_overlong_reply_is_an_error() {
        let mut empty: &[u8] = b"";
        assert!(matches!(
            read_reply_line(&mut empty, MAX_REPLY),
            Err(ReplyError::Closed)
        ));
        let mut partial: &[u8] = b"OK 1";
        assert!(matches!(
            read_reply_line(&mut partial, MAX_REPLY),
            Err(ReplyError::Bad(_))
        ));
        let long = vec![b'x'; 100];
        assert!(matches!(
            read_reply_line(&mut long.as_slice(), MAX_REPLY),
            Err(ReplyError::Bad(_))
        ));
    }

    #[test]
    fn a_missing_socket_names_its_path() {
        let err = connect_hybrid_vsock(
            Path::new("/nonexistent/v.sock"),
            1024,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/v.sock"), "{err}");
    }

    #[test]
    fn a_refused_port_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"CONNECT 1024\n");
            // Closing without OK: the guest refused.
        });
        let err = connect_hybrid_vsock(&path, 1024, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, ConnectAgentError::Refused { port: 1024 }),
            "{err}"
        );
    }
}
