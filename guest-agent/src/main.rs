//! `husk-agent`: PID 1 of a husk microVM.
//!
//! Started by the kernel from the initramfs as `/init`, it mounts what the
//! guest needs, reaps orphans, and serves the agent API (ttrpc) on vsock
//! port 1024. For fast tests it also runs as an ordinary host process
//! serving a Unix socket: `husk-agent --listen unix:///path/agent.sock`.

mod guest_info;
mod init;
mod logger;
mod reaper;
mod service;

use std::process::ExitCode;
use std::sync::Arc;

use husk_protocol::agent_ttrpc::create_agent;
use husk_protocol::AGENT_VSOCK_PORT;

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// PID 1 of the guest, listening on vsock.
    Guest,
    /// A host process listening on `addr` (a ttrpc address, `unix://…`).
    Host { addr: String },
}

fn parse_args(args: &[String], pid: u32) -> Result<Mode, String> {
    match args {
        [] if pid == 1 => Ok(Mode::Guest),
        [] => Err("not PID 1: pass --listen unix:///PATH to run on the host".into()),
        [flag, addr] if flag == "--listen" && addr.starts_with("unix://") => {
            Ok(Mode::Host { addr: addr.clone() })
        }
        [flag, addr] if flag == "--listen" => {
            Err(format!("--listen {addr:?}: expected unix:///PATH"))
        }
        // The kernel passes unknown command-line words on to init.
        _ if pid == 1 => Ok(Mode::Guest),
        _ => Err(format!(
            "unexpected arguments {args:?}; usage: husk-agent [--listen unix:///PATH]"
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse_args(&args, std::process::id()) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("husk-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let in_guest = mode == Mode::Guest;
    logger::init(in_guest);
    init::install_panic_hook(in_guest);
    if in_guest {
        if let Err(e) = init::setup_guest() {
            // Nothing works without the base mounts: say so and reset.
            init::fatal(&format!("guest setup failed: {e}"));
        }
    }
    // Block SIGCHLD before any thread starts, so only the reaper sees it.
    let reaper = match reaper::Reaper::block_sigchld() {
        Ok(r) => r,
        Err(e) => init::fatal(&format!("cannot block SIGCHLD: {e}")),
    };
    let addr = match &mode {
        Mode::Guest => format!("vsock://-1:{AGENT_VSOCK_PORT}"),
        Mode::Host { addr } => addr.clone(),
    };
    let service = Arc::new(service::AgentService::new(in_guest));
    let server = ttrpc::Server::new()
        .bind(&addr)
        .map(|s| s.register_service(create_agent(service)));
    let mut server = match server {
        Ok(s) => s,
        Err(e) => init::fatal(&format!("cannot listen on {addr}: {e}")),
    };
    if let Err(e) = server.start() {
        init::fatal(&format!("cannot start the ttrpc server on {addr}: {e}"));
    }
    init::announce_ready(in_guest, &addr);
    reaper.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pid_1_is_the_guest_and_others_need_a_unix_address() {
        assert_eq!(parse_args(&[], 1), Ok(Mode::Guest));
        assert_eq!(parse_args(&s(&["quiet"]), 1), Ok(Mode::Guest));
        assert!(parse_args(&[], 42).is_err());
        assert_eq!(
            parse_args(&s(&["--listen", "unix:///tmp/a.sock"]), 42),
            Ok(Mode::Host {
                addr: "unix:///tmp/a.sock".into()
            })
        );
        assert!(parse_args(&s(&["--listen", "vsock://3:1"]), 42)
            .unwrap_err()
            .contains("unix:///PATH"));
        assert!(parse_args(&s(&["--frob"]), 42).is_err());
    }
}
