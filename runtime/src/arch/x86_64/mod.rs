//! x86_64: memory layout, boot structures (PVH start info, MP table) and
//! per-vCPU state (CPUID, MSRs, registers, local APIC).

pub mod cpuid;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod pvh;
pub mod regs;

use kvm_bindings::{kvm_pit_config, CpuId, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

pub use cpuid::{offer_tsc_deadline, CpuidError};
pub use interrupts::LapicError;
pub use mptable::MptableError;
pub use msr::MsrError;
pub use pvh::PvhError;
pub use regs::RegsError;

use layout::*;

/// The RAM ranges of a guest with `mem_size` bytes: one below the MMIO
/// gap, and the rest above 4 GiB.
pub fn arch_memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_size - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// Why VM-wide setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupVmError {
    /// A KVM ioctl failed.
    #[error("KVM: {what}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Sets up what KVM needs before vCPUs exist: the TSS and identity map
/// (used on Intel), the in-kernel interrupt controllers and the PIT.
pub fn setup_vm(vm: &VmFd) -> Result<(), SetupVmError> {
    let err = |what| move |source| SetupVmError::Kvm { what, source };
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(err("set the TSS address"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(err("set the identity map address"))?;
    vm.create_irq_chip()
        .map_err(err("create the interrupt controllers"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(err("create the PIT"))?;
    Ok(())
}

/// The initramfs does not fit below the MMIO gap above the kernel area.
#[derive(Debug, thiserror::Error)]
#[error("an initramfs of {size} bytes does not fit in low guest memory")]
pub struct InitramfsPlaceError {
    /// Its size.
    pub size: usize,
}

/// Where the initramfs goes: page-aligned, at the top of low RAM.
pub fn initramfs_load_addr(
    mem: &GuestMemoryMmap<()>,
    size: usize,
) -> Result<GuestAddress, InitramfsPlaceError> {
    let low_end = mem
        .iter()
        .find(|r| r.start_addr().0 == 0)
        .map(|r| r.len().min(MMIO_GAP_START))
        .unwrap_or(0);
    let addr = low_end
        .checked_sub(size as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= HIMEM_START)
        .ok_or(InitramfsPlaceError { size })?;
    Ok(GuestAddress(addr))
}

/// Why the boot structures could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureSystemError {
    /// The MP table.
    #[error("MP table")]
    Mptable(#[source] MptableError),
    /// The PVH start info.
    #[error("PVH start info")]
    Pvh(#[source] PvhError),
}

/// Writes the MP table and the PVH start info (with the memory map and the
/// initramfs as module 0); returns the start info's address for `rbx`.
pub fn configure_system(
    mem: &GuestMemoryMmap<()>,
    cmdline_addr: GuestAddress,
    initramfs: Option<(GuestAddress, usize)>,
    num_cpus: u8,
) -> Result<GuestAddress, ConfigureSystemError> {
    mptable::setup_mptable(mem, num_cpus).map_err(ConfigureSystemError::Mptable)?;
    pvh::write_start_info(mem, cmdline_addr, initramfs).map_err(ConfigureSystemError::Pvh)
}

/// Why a vCPU could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupVcpuError {
    /// CPUID.
    #[error("CPUID")]
    Cpuid(#[source] CpuidError),
    /// Model-specific registers.
    #[error("MSRs")]
    Msrs(#[source] MsrError),
    /// General, segment and FPU registers.
    #[error("registers")]
    Regs(#[source] RegsError),
    /// The local APIC.
    #[error("local APIC")]
    Lapic(#[source] LapicError),
}

/// Puts a vCPU in the PVH entry state: CPUID for its place in the
/// topology, boot MSRs, 32-bit protected mode at `entry` with `rbx`
/// pointing at `start_info`, and LINT0/LINT1 wired as on a PC.
pub fn setup_vcpu(
    supported_cpuid: &CpuId,
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap<()>,
    vcpu_id: u8,
    num_cpus: u8,
    entry: GuestAddress,
    start_info: GuestAddress,
) -> Result<(), SetupVcpuError> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::patch_cpuid(&mut cpuid, vcpu_id, num_cpus);
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| SetupVcpuError::Cpuid(CpuidError(e)))?;
    msr::setup_msrs(vcpu).map_err(SetupVcpuError::Msrs)?;
    regs::setup_regs(vcpu, entry, start_info).map_err(SetupVcpuError::Regs)?;
    regs::setup_sregs(mem, vcpu).map_err(SetupVcpuError::Regs)?;
    regs::setup_fpu(vcpu).map_err(SetupVcpuError::Regs)?;
    interrupts::set_lint(vcpu).map_err(SetupVcpuError::Lapic)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_regions_split_at_the_gap() {
        assert_eq!(
            arch_memory_regions(128 << 20),
            vec![(GuestAddress(0), 128 << 20)]
        );
        assert_eq!(
            arch_memory_regions(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START as usize)]
        );
        assert_eq!(
            arch_memory_regions(4 << 30),
            vec![
                (GuestAddress(0), MMIO_GAP_START as usize),
                (GuestAddress(MMIO_GAP_END), (1 << 30) as usize)
            ]
        );
    }

    #[test]
    fn initramfs_goes_to_the_top_of_low_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&arch_memory_regions(64 << 20)).unwrap();
        let addr = initramfs_load_addr(&mem, 0x1801).unwrap();
        assert_eq!(addr.0, (64 << 20) - 0x2000);
        assert!(initramfs_load_addr(&mem, 64 << 20).is_err());
    }
}
