//! The guest agent as a host process over a Unix socket: the same ttrpc
//! service the microVM serves on vsock, reached without a VM.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use husk::agent::AgentClient;
use husk_tests::{agent_bin, wait_until};

struct HostAgent {
    child: Child,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

fn start_agent() -> HostAgent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let child = Command::new(agent_bin())
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start husk-agent");
    // The socket file appears at bind(), before listen(): wait for a connection.
    assert!(
        wait_until(Duration::from_secs(10), || UnixStream::connect(&socket)
            .is_ok()),
        "the agent did not listen on {socket:?}"
    );
    HostAgent {
        child,
        _dir: dir,
        socket,
    }
}

fn connect(socket: &Path) -> AgentClient {
    AgentClient::new(UnixStream::connect(socket).unwrap()).unwrap()
}

#[test]
fn answers_version_health_and_details_then_shuts_down() {
    let mut agent = start_agent();
    let client = connect(&agent.socket);
    let version = client.version().unwrap();
    assert_eq!(version.api, husk_protocol::API_VERSION);
    assert_eq!(version.agent, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        client.health().unwrap().status.enum_value(),
        Ok(husk_protocol::agent::health_response::Status::SERVING)
    );
    let details = client.guest_details().unwrap();
    assert!(details.vcpus_online >= 1, "{details:?}");
    assert!(details.memory_total_bytes > 0, "{details:?}");
    assert_eq!(details.boot_id.len(), 36, "{details:?}");

    // A second client is served alongside the first.
    let second = connect(&agent.socket);
    second.version().unwrap();

    client.shutdown().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "the agent did not exit after Shutdown"
    );
    assert!(agent.child.wait().unwrap().success());
}

#[test]
fn refuses_to_run_on_the_host_without_a_unix_address() {
    let out = Command::new(agent_bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen unix:///PATH"));
    let out = Command::new(agent_bin())
        .args(["--listen", "vsock://3:1024"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected unix:///PATH"));
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
