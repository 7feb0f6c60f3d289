//! Building a microVM: one linear recipe from a [`VmConfig`] to a [`Vm`]
//! whose vCPUs are ready to run.
//!
//! The order matters and is the same every time: KVM and the VM, guest
//! memory, the kernel and initramfs, the devices (which decide the kernel
//! command line), the boot structures, then the vCPUs.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64 as arch;
use crate::arch::x86_64::layout;
use crate::devices::bus::{Bus, BusInsertError};
use crate::devices::legacy::i8042::{I8042, I8042_PORT_BASE, I8042_PORT_LEN};
use crate::devices::legacy::serial::{SerialConsole, COM1_PORT_BASE, COM1_PORT_LEN};
use crate::devices::virtio::balloon::{self, Balloon, BalloonError};
use crate::devices::virtio::fs::{Fs, FsError, FsWorker};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::{Net, NetError, Tap};
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{GuestMemoryMmap, VirtioDevice, VirtioInterrupt};
use crate::vmm::config::{ConsoleConfig, VmConfig};
use crate::vmm::console::open_console;
use crate::vmm::vcpu::VcpuEvent;

/// The event loop of the VMM thread.
pub type VmmEventManager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Kernel command line husk always passes. `reboot=k` makes a guest
/// reboot reset through the i8042, which ends the VMM; `panic=-1` turns a
/// guest panic into an immediate reboot, so a broken guest never hangs.
const BASE_CMDLINE: &str =
    "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off nomodule i8042.noaux tsc=reliable";
/// Room for the kernel command line.
const CMDLINE_CAPACITY: usize = layout::CMDLINE_MAX_SIZE;

/// Why a VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildVmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    Kvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM: {what}")]
    KvmIoctl {
        /// What was being done.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// VM-wide architecture setup failed.
    #[error("VM setup")]
    SetupVm(#[source] arch::SetupVmError),
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory")]
    Memory {
        /// Requested size.
        mib: u32,
        /// The allocator's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The kernel could not be opened.
    #[error("cannot open kernel {path:?}")]
    KernelOpen {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel is not a loadable ELF.
    #[error("cannot load kernel {path:?}")]
    KernelLoad {
        /// Its path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The kernel has no PVH entry.
    #[error("kernel {0:?} has no PVH entry note (build it with CONFIG_PVH=y)")]
    NoPvhEntry(PathBuf),
    /// The initramfs could not be read.
    #[error("cannot read initramfs {path:?}")]
    InitramfsRead {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs does not fit in guest memory.
    #[error("initramfs {path:?} ({size} bytes) does not fit in guest memory")]
    InitramfsPlace {
        /// Its path.
        path: PathBuf,
        /// Its size.
        size: usize,
    },
    /// The kernel command line is too long or malformed.
    #[error("kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The command line could not be written to guest memory.
    #[error("cannot write the kernel command line to guest memory")]
    CmdlineLoad(#[source] linux_loader::loader::Error),
    /// Boot structures (MP table, PVH start info) could not be written.
    #[error("boot structures")]
    ConfigureSystem(#[source] arch::ConfigureSystemError),
    /// A vCPU could not be set up.
    #[error("vCPU {id} setup")]
    SetupVcpu {
        /// The vCPU.
        id: u8,
        /// Why.
        #[source]
        source: arch::SetupVcpuError,
    },
    /// An event fd could not be created.
    #[error("cannot create an event fd")]
    EventFd(#[source] std::io::Error),
    /// The console sink could not be opened.
    #[error("cannot open the console")]
    Console(#[source] std::io::Error),
    /// Two devices claim the same addresses.
    #[error("device layout")]
    Bus(#[source] BusInsertError),
    /// Too many virtio devices for the interrupt lines.
    #[error("too many virtio devices")]
    TooManyDevices,
    /// The vsock device could not be created.
    #[error("vsock device")]
    Vsock(#[source] crate::devices::virtio::vsock::VsockError),
    /// The virtio-fs device could not be created.
    #[error("virtio-fs device")]
    Fs(#[source] FsError),
    /// A virtio-net device could not be created.
    #[error("virtio-net device net[{index}]")]
    Net {
        /// Which NIC of the config.
        index: usize,
        /// Why.
        #[source]
        source: NetError,
    },
    /// The balloon (free page reporting) could not be created.
    #[error("virtio-balloon device")]
    Balloon(#[source] BalloonError),
    /// The virtio-mmio transport could not be created.
    #[error("virtio-mmio transport")]
    Mmio(#[source] crate::devices::virtio::mmio::MmioTransportError),
    /// The event loop could not be created.
    #[error("event loop")]
    EventManager(#[source] event_manager::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BuildVmError {
    move |source| BuildVmError::KvmIoctl { what, source }
}

/// A built microVM, ready to run.
pub struct Vm {
    /// The VM's KVM handle (kept open for the VM's lifetime).
    pub vm_fd: VmFd,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The configured vCPUs, in id order.
    pub vcpus: Vec<VcpuFd>,
    /// Port-I/O devices.
    pub pio_bus: Arc<Bus>,
    /// MMIO devices.
    pub mmio_bus: Arc<Bus>,
    /// The VMM thread's event loop, with every device subscribed.
    pub event_manager: VmmEventManager,
    /// Written when the guest resets or a vCPU stops.
    pub exit_evt: Arc<EventFd>,
    /// Why vCPUs stopped, sent before `exit_evt` is written.
    pub vcpu_events: Receiver<VcpuEvent>,
    /// Sender side of `vcpu_events`, for the vCPU threads.
    pub vcpu_event_sender: std::sync::mpsc::Sender<VcpuEvent>,
    /// The guest console.
    pub serial: Arc<Mutex<SerialConsole>>,
    /// The kernel command line the guest got.
    pub cmdline: String,
    /// The virtio-fs device's worker, not started yet: the VMM starts it
    /// with the thread's capabilities and seccomp filter
    /// ([`FsWorker::spawn`]). Until then requests wait in the queue.
    pub fs_worker: Option<FsWorker>,
}

/// Builds the VM a config describes. Call [`VmConfig::validate`] first.
///
/// Devices go on the MMIO bus in a fixed order: vsock, virtio-fs, then
/// one virtio-net device per `net` entry (the guest names them `eth0`,
/// `eth1`, … in that order), then the balloon for free page reporting. Each NIC's device owns a duplicate of the
/// tap descriptor the process inherited.
pub fn build_vm(config: &VmConfig) -> Result<Vm, BuildVmError> {
    let kvm = Kvm::new().map_err(BuildVmError::Kvm)?;
    let vm_fd = kvm.create_vm().map_err(kvm_err("create VM"))?;
    arch::setup_vm(&vm_fd).map_err(BuildVmError::SetupVm)?;

    let mem = create_guest_memory(&vm_fd, config.memory_mib)?;
    let entry = load_kernel(&mem, &config.kernel)?;
    let initramfs = match &config.initramfs {
        Some(path) => Some(load_initramfs(&mem, path)?),
        None => None,
    };

    let mut cmdline = Cmdline::new(CMDLINE_CAPACITY).map_err(BuildVmError::Cmdline)?;
    cmdline
        .insert_str(BASE_CMDLINE)
        .map_err(BuildVmError::Cmdline)?;
    if !config.verbose_boot {
        cmdline.insert_str("quiet").map_err(BuildVmError::Cmdline)?;
    }

    let mut pio_bus = Bus::new();
    let mut mmio_bus = Bus::new();
    let mut event_manager = VmmEventManager::new().map_err(BuildVmError::EventManager)?;
    let exit_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(BuildVmError::EventFd)?);

    let i8042 = I8042::new(exit_evt.try_clone().map_err(BuildVmError::EventFd)?);
    pio_bus
        .insert(Arc::new(Mutex::new(i8042)), I8042_PORT_BASE, I8042_PORT_LEN)
        .map_err(BuildVmError::Bus)?;

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(BuildVmError::EventFd)?;
    vm_fd
        .register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(kvm_err("register the serial irqfd"))?;
    let sink = open_console(&config.console).map_err(BuildVmError::Console)?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(serial_irq, sink)));
    pio_bus
        .insert(serial.clone(), COM1_PORT_BASE, COM1_PORT_LEN)
        .map_err(BuildVmError::Bus)?;
    if config.console == ConsoleConfig::Stdout {
        let input = crate::vmm::console_input::ConsoleInput::new(serial.clone());
        event_manager.add_subscriber(Arc::new(Mutex::new(input)));
    }

    let mut virtio = VirtioSlots::default();
    if let Some(vsock_config) = &config.vsock {
        let vsock = Vsock::new(vsock_config.guest_cid, vsock_config.uds_path.clone())
            .map_err(BuildVmError::Vsock)?;
        let vsock = Arc::new(Mutex::new(vsock));
        virtio.attach(&vm_fd, &mem, &mut mmio_bus, &mut cmdline, vsock.clone())?;
        event_manager.add_subscriber(vsock);
    }
    let mut fs_worker = None;
    if let Some(fs_config) = &config.fs {
        let (fs, worker) =
            Fs::new(&fs_config.tag, &fs_config.shared_dir).map_err(BuildVmError::Fs)?;
        virtio.attach(
            &vm_fd,
            &mem,
            &mut mmio_bus,
            &mut cmdline,
            Arc::new(Mutex::new(fs)),
        )?;
        fs_worker = Some(worker);
    }
    for (index, nic) in config.net.iter().enumerate() {
        let net_err = |source| BuildVmError::Net { index, source };
        let tap = Tap::from_inherited(nic.tap_fd).map_err(|e| net_err(NetError::Tap(e)))?;
        let net = Arc::new(Mutex::new(
            Net::new(tap, nic.mac, nic.mtu).map_err(net_err)?,
        ));
        virtio.attach(&vm_fd, &mem, &mut mmio_bus, &mut cmdline, net.clone())?;
        event_manager.add_subscriber(net);
    }

    // Last, so it takes no slot ahead of the NICs: free page reporting.
    let balloon = Arc::new(Mutex::new(Balloon::new().map_err(BuildVmError::Balloon)?));
    virtio.attach(&vm_fd, &mem, &mut mmio_bus, &mut cmdline, balloon.clone())?;
    event_manager.add_subscriber(balloon);
    cmdline
        .insert_str(balloon::reporting_order_param())
        .map_err(BuildVmError::Cmdline)?;

    for extra in config.cmdline.split_whitespace() {
        cmdline.insert_str(extra).map_err(BuildVmError::Cmdline)?;
    }
    linux_loader::loader::load_cmdline(&mem, GuestAddress(layout::CMDLINE_START), &cmdline)
        .map_err(BuildVmError::CmdlineLoad)?;
    let start_info = arch::configure_system(
        &mem,
        GuestAddress(layout::CMDLINE_START),
        initramfs,
        config.vcpus,
    )
    .map_err(BuildVmError::ConfigureSystem)?;

    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported CPUID"))?;
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        arch::offer_tsc_deadline(&mut cpuid);
    }
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    for id in 0..config.vcpus {
        let vcpu = vm_fd
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create vCPU"))?;
        arch::setup_vcpu(&cpuid, &vcpu, &mem, id, config.vcpus, entry, start_info)
            .map_err(|source| BuildVmError::SetupVcpu { id, source })?;
        vcpus.push(vcpu);
    }

    let (vcpu_event_sender, vcpu_events) = channel();
    Ok(Vm {
        vm_fd,
        mem,
        vcpus,
        pio_bus: Arc::new(pio_bus),
        mmio_bus: Arc::new(mmio_bus),
        event_manager,
        exit_evt,
        vcpu_events,
        vcpu_event_sender,
        serial,
        cmdline: cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        fs_worker,
    })
}

/// Allocates guest memory and hands it to KVM.
fn create_guest_memory(vm_fd: &VmFd, mib: u32) -> Result<GuestMemoryMmap, BuildVmError> {
    let regions = arch::arch_memory_regions(u64::from(mib) << 20);
    let mem = GuestMemoryMmap::from_ranges(&regions)
        .map_err(|source| BuildVmError::Memory { mib, source })?;
    for (slot, region) in mem.iter().enumerate() {
        no_huge_pages(region.as_ptr(), region.len());
        let kvm_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem` of exactly
        // `memory_size` bytes; `mem` is kept in the `Vm` next to the VM fd,
        // and the VM fd is dropped before or with it.
        unsafe { vm_fd.set_user_memory_region(kvm_region) }
            .map_err(kvm_err("register guest memory"))?;
    }
    Ok(mem)
}

/// Keeps guest RAM in 4 KiB host pages whatever the host's transparent
/// huge page policy: with huge pages a guest touching one 4 KiB page makes
/// 2 MiB resident, and the balloon's 1 MiB free-page reports split them
/// again. An idle guest on a host with THP `always`: 33.3 MiB resident
/// with them, 31.4 MiB without. A host built without THP refuses the
/// advice, which is then moot.
fn no_huge_pages(addr: *mut u8, len: u64) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    // SAFETY: `addr..addr+len` is one guest RAM region, a live anonymous
    // mapping owned by the caller's `GuestMemoryMmap`; MADV_NOHUGEPAGE
    // only changes how the kernel backs it, not its contents.
    let rc = unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) };
    if rc != 0 {
        log::debug!(
            "guest RAM: madvise(MADV_NOHUGEPAGE): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Loads the kernel ELF and returns its PVH entry point.
fn load_kernel(mem: &GuestMemoryMmap, path: &PathBuf) -> Result<GuestAddress, BuildVmError> {
    let mut file = File::open(path).map_err(|source| BuildVmError::KernelOpen {
        path: path.clone(),
        source,
    })?;
    let loaded = Elf::load(
        mem,
        None,
        &mut file,
        Some(GuestAddress(layout::HIMEM_START)),
    )
    .map_err(|source| BuildVmError::KernelLoad {
        path: path.clone(),
        source,
    })?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(entry),
        _ => Err(BuildVmError::NoPvhEntry(path.clone())),
    }
}

/// Copies the initramfs to the top of low memory.
fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &PathBuf,
) -> Result<(GuestAddress, usize), BuildVmError> {
    let read_err = |source| BuildVmError::InitramfsRead {
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(read_err)?;
    let place_err = || BuildVmError::InitramfsPlace {
        path: path.clone(),
        size: bytes.len(),
    };
    let addr = arch::initramfs_load_addr(mem, bytes.len()).map_err(|_| place_err())?;
    mem.write_slice(&bytes, addr).map_err(|_| place_err())?;
    Ok((addr, bytes.len()))
}

/// Hands out virtio-mmio windows and interrupt lines in order.
#[derive(Default)]
struct VirtioSlots {
    next: u32,
}

impl VirtioSlots {
    /// Puts `device` on the MMIO bus with its own window and interrupt,
    /// wires its irqfd and queue ioeventfds, and declares it to the kernel.
    fn attach<D: VirtioDevice + 'static>(
        &mut self,
        vm_fd: &VmFd,
        mem: &GuestMemoryMmap,
        mmio_bus: &mut Bus,
        cmdline: &mut Cmdline,
        device: Arc<Mutex<D>>,
    ) -> Result<(), BuildVmError> {
        let irq = layout::FIRST_DEVICE_IRQ + self.next;
        if irq > layout::LAST_DEVICE_IRQ {
            return Err(BuildVmError::TooManyDevices);
        }
        let base = layout::VIRTIO_MMIO_BASE + u64::from(self.next) * layout::VIRTIO_MMIO_SIZE;
        self.next += 1;

        let irq_evt = EventFd::new(EFD_NONBLOCK).map_err(BuildVmError::EventFd)?;
        vm_fd
            .register_irqfd(&irq_evt, irq)
            .map_err(kvm_err("register a virtio irqfd"))?;
        let interrupt = Arc::new(VirtioInterrupt::new(irq_evt));
        let transport =
            MmioTransport::new(mem.clone(), device, interrupt).map_err(BuildVmError::Mmio)?;
        for (index, evt) in transport.queue_evts().iter().enumerate() {
            vm_fd
                .register_ioevent(
                    evt,
                    &IoEventAddress::Mmio(base + crate::devices::virtio::mmio::QUEUE_NOTIFY_OFFSET),
                    index as u32,
                )
                .map_err(kvm_err("register a virtio queue ioeventfd"))?;
        }
        mmio_bus
            .insert(
                Arc::new(Mutex::new(transport)),
                base,
                layout::VIRTIO_MMIO_SIZE,
            )
            .map_err(BuildVmError::Bus)?;
        cmdline
            .add_virtio_mmio_device(layout::VIRTIO_MMIO_SIZE, GuestAddress(base), irq, None)
            .map_err(BuildVmError::Cmdline)
    }
}
