//! `husk-agent`: PID 1 of a husk microVM.
//!
//! Started by the kernel from the initramfs as `/init`, it mounts what the
//! guest needs, reaps orphans, and serves the agent API (ttrpc) on vsock
//! port 1024 and process stdio streams on port 1025. For fast tests it
//! also runs as an ordinary host process serving Unix sockets:
//! `husk-agent --listen unix:///path/agent.sock [--cgroup-root PATH]`
//! (stdio streams on `/path/agent.sock.stdio`).
//!
//! `husk-agent --container-init` is the agent binary re-executed as the
//! helper that becomes a container's process (see `container::setup`).

mod container;
mod guest_info;
mod init;
mod logger;
mod network;
mod reaper;
mod service;
mod shared_fs;
mod stdio;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use husk_protocol::agent_ttrpc::create_agent;
use husk_protocol::{AGENT_VSOCK_PORT, STDIO_VSOCK_PORT};

/// The default cgroup v2 mount.
const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// PID 1 of the guest, listening on vsock.
    Guest,
    /// A host process listening on `addr` (a ttrpc address, `unix://…`).
    Host { addr: String },
}

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    mode: Mode,
    cgroup_root: PathBuf,
}

const USAGE: &str = "usage: husk-agent [--listen unix:///PATH] [--cgroup-root PATH]";

fn parse_args(args: &[String], pid: u32) -> Result<Args, String> {
    let mut listen = None;
    let mut cgroup_root = PathBuf::from(DEFAULT_CGROUP_ROOT);
    let mut it = args.iter();
    let mut unknown = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => {
                let addr = it.next().ok_or("--listen needs an address: unix:///PATH")?;
                if !addr.starts_with("unix://") {
                    return Err(format!("--listen {addr:?}: expected unix:///PATH"));
                }
                listen = Some(addr.clone());
            }
            "--cgroup-root" => {
                let p = it.next().ok_or("--cgroup-root needs a path")?;
                cgroup_root = PathBuf::from(p);
            }
            _ => unknown = true,
        }
    }
    let mode = match listen {
        Some(addr) if !unknown => Mode::Host { addr },
        // The kernel passes unknown command-line words on to init.
        _ if pid == 1 => Mode::Guest,
        None if !unknown => {
            return Err("not PID 1: pass --listen unix:///PATH to run on the host".into())
        }
        _ => return Err(format!("unexpected arguments {args:?}; {USAGE}")),
    };
    Ok(Args { mode, cgroup_root })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The container-init helper: checked first, it is PID 1 of its own
    // pid namespace.
    if args.first().map(String::as_str) == Some(container::spawn::INIT_ARG) {
        container::setup::main();
    }
    let parsed = match parse_args(&args, std::process::id()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("husk-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let in_guest = parsed.mode == Mode::Guest;
    logger::init(in_guest);
    init::install_panic_hook(in_guest);
    if in_guest {
        if let Err(e) = init::setup_guest() {
            // Nothing works without the base mounts: say so and reset.
            init::fatal(&format!("guest setup failed: {e}"));
        }
        if let Err(e) = shared_fs::mount_shared_dir() {
            init::fatal(&husk_protocol::error_chain(&e));
        }
    }
    // Block SIGCHLD before any thread starts, so only the reaper sees it.
    let reaper = match reaper::Reaper::block_sigchld() {
        Ok(r) => r,
        Err(e) => init::fatal(&format!("cannot block SIGCHLD: {e}")),
    };
    let children = Arc::new(reaper::Children::default());
    let containers = Arc::new(container::Containers::new(
        children.clone(),
        &parsed.cgroup_root,
    ));
    let (addr, stdio_addr) = match &parsed.mode {
        Mode::Guest => (
            format!("vsock://-1:{AGENT_VSOCK_PORT}"),
            stdio::StdioAddr::Vsock(STDIO_VSOCK_PORT),
        ),
        Mode::Host { addr } => {
            let path = addr.trim_start_matches("unix://");
            (
                addr.clone(),
                stdio::StdioAddr::Unix(PathBuf::from(format!("{path}.stdio"))),
            )
        }
    };
    if let Err(e) = stdio::serve(stdio_addr, containers.clone()) {
        init::fatal(&format!("cannot listen for stdio streams: {e}"));
    }
    let service = Arc::new(service::AgentService::new(in_guest, containers));
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
    reaper.run(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn host(addr: &str, root: &str) -> Args {
        Args {
            mode: Mode::Host { addr: addr.into() },
            cgroup_root: PathBuf::from(root),
        }
    }

    #[test]
    fn pid_1_is_the_guest_and_others_need_a_unix_address() {
        assert_eq!(parse_args(&[], 1).unwrap().mode, Mode::Guest);
        assert_eq!(parse_args(&s(&["quiet"]), 1).unwrap().mode, Mode::Guest);
        assert!(parse_args(&[], 42).is_err());
        assert_eq!(
            parse_args(&s(&["--listen", "unix:///tmp/a.sock"]), 42),
            Ok(host("unix:///tmp/a.sock", DEFAULT_CGROUP_ROOT))
        );
        assert!(parse_args(&s(&["--listen", "vsock://3:1"]), 42)
            .unwrap_err()
            .contains("unix:///PATH"));
        assert!(parse_args(&s(&["--frob"]), 42).is_err());
        assert!(parse_args(&s(&["--listen"]), 42).is_err());
    }

    #[test]
    fn the_cgroup_root_can_be_moved() {
        assert_eq!(
            parse_args(&s(&["--cgroup-root", "/x", "--listen", "unix:///a"]), 42),
            Ok(host("unix:///a", "/x"))
        );
        assert!(parse_args(&s(&["--listen", "unix:///a", "--cgroup-root"]), 42).is_err());
    }
}
