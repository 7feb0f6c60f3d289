//! ConfigureNetwork against the agent run as a host process over a Unix
//! socket: it checks the request like the guest's agent, then refuses to
//! touch the host's network.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk::agent::{AgentCallError, AgentClient};
use husk_netlink::{Interface, IpNet, Mac, PodNetwork, Route};

/// The agent as a host process, killed when dropped.
struct HostAgent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostAgent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_husk-agent"))
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start husk-agent");
        let agent = Self {
            child,
            socket,
            _dir: dir,
        };
        // The socket file appears at bind(), before listen(): wait for a
        // connection to be accepted.
        let start = Instant::now();
        while UnixStream::connect(&agent.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the agent did not listen on {:?}",
                agent.socket
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(UnixStream::connect(&self.socket).unwrap()).unwrap()
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str) -> PodNetwork {
    PodNetwork {
        interfaces: vec![Interface {
            name: name.into(),
            mac: Mac([0x02, 0x42, 0x0a, 0x58, 0x00, 0x05]),
            mtu: 1500,
            addresses: vec![IpNet {
                addr: "10.88.0.5".parse().unwrap(),
                prefix_len: 16,
            }],
        }],
        routes: vec![Route {
            destination: None,
            gateway: Some("10.88.0.1".parse().unwrap()),
            source: None,
            device: name.into(),
            scope: 0,
            metric: 0,
        }],
        neighbours: vec![],
    }
}

/// The agent's status code and the whole message the host reports.
fn refusal(e: AgentCallError) -> (Option<ttrpc::Code>, String) {
    let message = husk_protocol::error_chain(&e);
    match e {
        AgentCallError::Call { call, source } => {
            assert_eq!(call, "ConfigureNetwork");
            (source.code(), message)
        }
        other => panic!("not a refused call: {other}"),
    }
}

#[test]
fn a_host_process_agent_refuses_to_configure_the_network() {
    let agent = HostAgent::start();
    let client = agent.client();
    let (code, message) = refusal(client.configure_network(&pod("eth0")).unwrap_err());
    assert_eq!(code, Some(ttrpc::Code::FAILED_PRECONDITION));
    assert_eq!(
        message,
        "agent call ConfigureNetwork: the agent runs as a host process: it does not \
         configure networks (that would reconfigure the host's own)"
    );
    // The agent still serves afterwards.
    client.version().unwrap();
}

#[test]
fn a_bad_request_is_refused_by_field_before_host_mode() {
    let agent = HostAgent::start();
    let (code, message) = refusal(
        agent
            .client()
            .configure_network(&pod("a-very-long-name"))
            .unwrap_err(),
    );
    assert_eq!(code, Some(ttrpc::Code::INVALID_ARGUMENT));
    assert_eq!(
        message,
        "agent call ConfigureNetwork: interfaces[0].name: \"a-very-long-name\" is 16 bytes, \
         longer than 15"
    );
}
