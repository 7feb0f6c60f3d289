//! What the host shows of a pod: its microVM is one `husk vmm` process.

use std::path::Path;

/// Pids of the `husk vmm` processes on this host (argv[0] named `husk`,
/// argv[1] `vmm`).
pub fn vmm_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            is_vmm(&cmdline).then_some(pid)
        })
        .collect()
}

/// Whether a NUL-separated command line is husk's VMM.
fn is_vmm(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(std::str::from_utf8(argv0).unwrap_or_default()).file_name();
    name.is_some_and(|n| n == "husk") && args.next() == Some(b"vmm".as_slice())
}

/// Whether `pid` is still a process.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `GET path` over HTTP/1.0 from `addr` (`IP:PORT`), retried for up to
/// 30 s while the server comes up; the whole reply.
pub fn http_get(addr: &str, path: &str) -> Result<String, crate::steps::StepError> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let target: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| crate::steps::StepError::Check(format!("address {addr:?}: {e}")))?;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let timeout = std::time::Duration::from_secs(5);
            let mut s = std::net::TcpStream::connect_timeout(&target, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            Ok(reply) => return Ok(reply),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(crate::steps::StepError::Check(format!(
                    "no HTTP answer from {addr}: {e}"
                )))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(300)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_husk_vmm_command_lines_are_vmms() {
        assert!(is_vmm(b"/opt/husk/husk\0vmm\0--config\0x\0"));
        assert!(is_vmm(b"husk\0vmm\0"));
        assert!(!is_vmm(b"/usr/bin/husk\0run\0vmm\0"));
        assert!(!is_vmm(b"/usr/bin/containerd-shim-husk-v2\0vmm\0"));
        assert!(!is_vmm(b""));
    }

    #[test]
    fn this_process_is_alive_and_not_a_vmm() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!vmm_pids().contains(&me));
    }
}
