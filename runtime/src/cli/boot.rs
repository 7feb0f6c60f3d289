//! `husk boot`: boot any kernel in the foreground, for debugging and
//! benchmarks. The console is this terminal unless told otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use husk::vmm::{run_vm, ConsoleConfig, FsConfig, VmConfig, VmExit, VsockConfig};

/// Arguments of `husk boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// Kernel (vmlinux ELF with a PVH note).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initramfs (cpio newc, optionally gzip).
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u32,
    /// Console: `stdout`, `off`, or `log:PATH`.
    #[arg(long, default_value = "stdout", value_parser = parse_console)]
    pub console: ConsoleConfig,
    /// Expose a vsock device on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub vsock: Option<PathBuf>,
    /// Guest CID of the vsock device.
    #[arg(long, default_value_t = 3)]
    pub cid: u64,
    /// Share this host directory with the guest over virtio-fs. To boot
    /// from it without an initramfs: `--cmdline "rootfstype=virtiofs
    /// root=TAG rw init=/init"` (without `init=` the kernel looks for
    /// /sbin/init).
    #[arg(long, value_name = "PATH")]
    pub shared_dir: Option<PathBuf>,
    /// Tag the guest mounts the shared directory by.
    #[arg(
        long,
        value_name = "TAG",
        default_value = "husk",
        requires = "shared_dir"
    )]
    pub fs_tag: String,
    /// Verbose kernel log (no `quiet`).
    #[arg(long)]
    pub verbose: bool,
    /// Run without seccomp filters (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
}

fn parse_console(s: &str) -> Result<ConsoleConfig, String> {
    match s {
        "stdout" => Ok(ConsoleConfig::Stdout),
        "off" => Ok(ConsoleConfig::Off),
        _ => match s.strip_prefix("log:") {
            Some(path) if !path.is_empty() => Ok(ConsoleConfig::Log {
                path: path.into(),
                max_bytes: 512 * 1024,
            }),
            _ => Err(format!("{s:?}: expected stdout, off or log:PATH")),
        },
    }
}

/// Boots the kernel and waits for the guest to end.
pub fn run(args: BootArgs) -> anyhow::Result<ExitCode> {
    let config = VmConfig {
        vcpus: args.vcpus,
        memory_mib: args.memory,
        kernel: args.kernel,
        initramfs: args.initramfs,
        cmdline: args.cmdline,
        verbose_boot: args.verbose,
        console: args.console,
        vsock: args.vsock.map(|uds_path| VsockConfig {
            guest_cid: args.cid,
            uds_path,
        }),
        fs: args.shared_dir.map(|shared_dir| FsConfig {
            tag: args.fs_tag,
            shared_dir,
        }),
        net: Vec::new(),
        seccomp: !args.no_seccomp,
    };
    let exit = run_vm(&config)?;
    match &exit {
        VmExit::GuestReset => {}
        VmExit::TripleFault => eprintln!("husk boot: the guest triple-faulted"),
        VmExit::VcpuError(reason) => eprintln!("husk boot: {reason}"),
    }
    Ok(super::exit_code(exit.exit_code()))
}
